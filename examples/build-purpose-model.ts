// Builds the demo model repository entry `examples/models/credit-purpose`: the demo's credit
// applications with a categorical loan `purpose` (car, education, ...), served as a string. The
// model has two inputs, the ten numeric features (FP32 [-1, 10]) and `purpose` (BYTES [-1, 1]); the
// purpose goes through an ai.onnx.ml LabelEncoder (string -> its term of the log-odds) inside the
// graph, so a client sends "business" as it is, with no one-hot encoding of its own. Trained as a
// logistic regression on the numeric features plus the one-hot purpose, and exported exactly: the
// one-hot terms of a standardised column k are w_k (x_k - m_k) / s_k, so category c adds w_c / s_c
// and the intercept absorbs -sum_k w_k m_k / s_k (a purpose the model never saw adds nothing).
// Deterministic. `node dist/examples/build-purpose-model.js` (part of `npm run demo:model`).
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { GraphBuilder, attr } from '../src/inference/onnx-writer.js';
import { addClassifierOutputs, predictProba, trainLogistic, type LogisticModel } from '../src/retraining/index.js';
import { DEMO_L2, DEMO_SEED, HELD_OUT_ROWS, rocAuc, TRAIN_ROWS } from './build-demo-model.js';
import { CREDIT_FEATURES, featureVector, generateCreditData, Random, type CreditApplication } from './credit-data.js';

export const PURPOSE_MODEL_NAME = 'credit-purpose';
export const PURPOSES = ['business', 'car', 'education', 'furniture', 'repairs', 'vacation'] as const;
export type Purpose = (typeof PURPOSES)[number];

/** P(purpose | no default) and P(purpose | default): business and vacation loans default more often. */
const PURPOSE_GIVEN: Record<0 | 1, readonly number[]> = {
  0: [0.08, 0.3, 0.15, 0.25, 0.14, 0.08],
  1: [0.22, 0.2, 0.1, 0.2, 0.1, 0.18],
};

export interface PurposeApplication extends CreditApplication {
  purpose: Purpose;
}

/**
 * A purpose for each application, drawn given its (already drawn) default label from a generator
 * of its own, so the numeric columns and labels are exactly those of the demo data.
 */
export function withPurposes(rows: readonly CreditApplication[], seed: number): PurposeApplication[] {
  const rng = new Random(seed ^ 0x5eed);
  return rows.map((r) => {
    const u = rng.uniform();
    const probs = PURPOSE_GIVEN[r.default];
    let k = 0;
    for (let acc = probs[0]!; k < probs.length - 1 && u >= acc; acc += probs[++k]!);
    return { ...r, purpose: PURPOSES[k]! };
  });
}

/** The numeric features, then the one-hot purpose (in PURPOSES order): the trainer's design row. */
export function designRow(r: PurposeApplication): number[] {
  return [...featureVector(r), ...PURPOSES.map((p) => (r.purpose === p ? 1 : 0))];
}

export interface PurposeTerms {
  /** The numeric part: a logistic model on the ten features, its intercept including the purpose's constant. */
  numeric: LogisticModel;
  /** Log-odds added by each purpose. */
  purpose: Record<Purpose, number>;
}

/** The fitted model on [numeric, one-hot] split into the numeric model and one log-odds term per purpose. */
export function splitTerms(model: LogisticModel): PurposeTerms {
  const p = CREDIT_FEATURES.length;
  let constant = 0;
  const purpose = {} as Record<Purpose, number>;
  PURPOSES.forEach((c, k) => {
    const j = p + k;
    purpose[c] = model.weights[j]! / model.std[j]!;
    constant += (model.weights[j]! * model.mean[j]!) / model.std[j]!;
  });
  const numeric: LogisticModel = {
    ...model,
    mean: model.mean.slice(0, p),
    std: model.std.slice(0, p),
    weights: model.weights.slice(0, p),
    intercept: model.intercept - constant,
  };
  return { numeric, purpose };
}

/**
 * `input` FP32 [N, 10] -> standardise, MatMul, + intercept; `purpose` BYTES [N, 1] -> LabelEncoder
 * (its term, 0 for an unknown purpose); sum -> Sigmoid -> `label` INT64 [N] and `probabilities` FP32 [N, 2].
 */
export function purposeModelToOnnx(terms: PurposeTerms): Uint8Array {
  const m = terms.numeric;
  const p = m.weights.length;
  const g = new GraphBuilder('credit_purpose');
  g.input('input', 'FP32', [-1, p]);
  g.input('purpose', 'BYTES', [-1, 1]);
  g.initializer('mean', 'FP32', [p], Float32Array.from(m.mean));
  g.initializer('std', 'FP32', [p], Float32Array.from(m.std));
  g.initializer('weights', 'FP32', [p, 1], Float32Array.from(m.weights));
  g.initializer('intercept', 'FP32', [1], Float32Array.of(m.intercept));
  g.node('Sub', ['input', 'mean'], ['centered']);
  g.node('Div', ['centered', 'std'], ['standardized']);
  g.node('MatMul', ['standardized', 'weights'], ['weighted_sum']);
  g.node('Add', ['weighted_sum', 'intercept'], ['numeric_logit']);
  g.node(
    'LabelEncoder',
    ['purpose'],
    ['purpose_logit'],
    {
      keys_strings: attr.strings([...PURPOSES]),
      values_floats: attr.floats(PURPOSES.map((c) => terms.purpose[c])),
      default_float: attr.float(0),
    },
    { domain: 'ai.onnx.ml' },
  );
  g.node('Add', ['numeric_logit', 'purpose_logit'], ['logit']);
  g.node('Sigmoid', ['logit'], ['p1']);
  addClassifierOutputs(g, 'p1');
  return g.toModelBytes({
    opset: 17,
    domainOpsets: { 'ai.onnx.ml': 2 },
    producer: 'scoreline',
    docString: `logistic regression on ${p} standardised features and a categorical purpose (LabelEncoder), L2 = ${m.l2}`,
    metadata: {
      'scoreline.model_type': 'logistic_regression',
      'scoreline.features': JSON.stringify([...CREDIT_FEATURES, 'purpose']),
      'scoreline.purpose_terms': JSON.stringify(terms.purpose),
    },
  });
}

/** P(default) of one application, in float64, as the ONNX graph computes it. */
export function purposeProbability(terms: PurposeTerms, r: PurposeApplication): number {
  const known = (PURPOSES as readonly string[]).includes(r.purpose);
  const base = predictProba(terms.numeric, featureVector(r));
  const logit = Math.log(base / (1 - base)) + (known ? terms.purpose[r.purpose] : 0);
  return 1 / (1 + Math.exp(-logit));
}

export function purposeModelYaml(): string {
  return [
    '# written by npm run demo:model (examples/build-purpose-model.ts)',
    '# Two inputs: the ten numeric features (input, FP32 [-1, 10]) and purpose (BYTES [-1, 1]);',
    '# the names below cover both, in input order, so v1 instances and drift (CSI) see purpose by name.',
    `features: [${[...CREDIT_FEATURES, 'purpose'].join(', ')}]`,
    'reference: reference.csv',
    'label: default',
    'task: classification',
    'threshold: 0.5',
    'score: { output: probabilities, index: 1 }',
    'batching: { maxBatchSize: 64, maxQueueDelayMicros: 200 }',
    '',
  ].join('\n');
}

export function purposeCsv(rows: readonly PurposeApplication[]): string {
  const columns = [...CREDIT_FEATURES, 'purpose', 'default'] as const;
  return `${[columns.join(','), ...rows.map((r) => columns.map((c) => String(r[c])).join(','))].join('\n')}\n`;
}

export interface PurposeModelReport {
  terms: PurposeTerms;
  trainAuc: number;
  heldOutAuc: number;
  files: { model: string; reference: string; config: string };
}

/** Writes the model into `repositoryDir/credit-purpose/`. */
export async function buildPurposeModel(repositoryDir: string): Promise<PurposeModelReport> {
  const rows = withPurposes(generateCreditData({ n: TRAIN_ROWS + HELD_OUT_ROWS, seed: DEMO_SEED }), DEMO_SEED);
  const train = rows.slice(0, TRAIN_ROWS);
  const heldOut = rows.slice(TRAIN_ROWS);
  const fitted = trainLogistic(
    train.map(designRow),
    train.map((r) => r.default),
    { l2: DEMO_L2 },
  );
  if (!fitted.converged) throw new Error(`logistic regression did not converge in ${fitted.iterations} iterations`);
  const terms = splitTerms(fitted);
  const auc = (set: readonly PurposeApplication[]) =>
    rocAuc(
      set.map((r) => purposeProbability(terms, r)),
      set.map((r) => r.default),
    );
  const dir = join(repositoryDir, PURPOSE_MODEL_NAME);
  const files = { model: join(dir, '1', 'model.onnx'), reference: join(dir, 'reference.csv'), config: join(dir, 'model.yaml') };
  await mkdir(dirname(files.model), { recursive: true });
  await writeFile(files.model, purposeModelToOnnx(terms));
  await writeFile(files.reference, purposeCsv(heldOut));
  await writeFile(files.config, purposeModelYaml());
  return { terms, trainAuc: auc(train), heldOutAuc: auc(heldOut), files };
}

async function main(): Promise<void> {
  // dist/examples/build-purpose-model.js -> <repo>/examples/models
  const repositoryDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'models');
  const report = await buildPurposeModel(repositoryDir);
  console.log(`purpose terms (log-odds): ${PURPOSES.map((c) => `${c} ${report.terms.purpose[c].toFixed(3)}`).join(', ')}`);
  console.log(`training AUC  ${report.trainAuc.toFixed(4)}`);
  console.log(`held-out AUC  ${report.heldOutAuc.toFixed(4)}  (latest ${HELD_OUT_ROWS} applications, out of time)`);
  for (const f of Object.values(report.files)) console.log(`wrote ${f}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  });
}
