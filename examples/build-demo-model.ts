// Builds the bundled demo model repository entry `examples/models/credit-default`: generates
// seeded credit applications, trains the logistic regression on the earliest 20,000, keeps the
// latest 5,000 as the out-of-time reference set, and writes model.onnx, reference.csv and
// model.yaml. Deterministic: running it twice gives byte-identical files. `npm run demo:model`.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { logisticToOnnx, predictProba, trainLogistic, type LogisticModel } from '../src/retraining/index.js';
import { CREDIT_FEATURES, featureVector, generateCreditData, toCsv } from './credit-data.js';

export const DEMO_MODEL_NAME = 'credit-default';
export const DEMO_MODEL_VERSION = 1;
export const DEMO_SEED = 20240101;
export const TRAIN_ROWS = 20_000;
export const HELD_OUT_ROWS = 5_000;
export const DEMO_L2 = 1.0;

/**
 * Area under the ROC curve as the Mann-Whitney statistic: the probability that a random positive
 * scores above a random negative, ties counted one half (equals scikit-learn's roc_auc_score).
 */
export function rocAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  if (labels.length !== n) throw new RangeError(`rocAuc: ${n} scores but ${labels.length} labels`);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(scores[i])) throw new RangeError(`rocAuc: score ${i} is NaN`);
    if (labels[i] !== 0 && labels[i] !== 1) throw new RangeError(`rocAuc: label ${i} is ${labels[i]}, expected 0 or 1`);
  }
  // `order` is a permutation of 0..n-1, so every scores[...] / labels[...] read below is in range.
  order.sort((a, b) => scores[a]! - scores[b]!);
  let positives = 0;
  let positiveRankSum = 0;
  for (let start = 0; start < n; ) {
    let end = start;
    while (end + 1 < n && scores[order[end + 1]!] === scores[order[start]!]) end++;
    const averageRank = (start + end) / 2 + 1; // 1-based ranks; a tie group shares its mean rank
    for (let k = start; k <= end; k++) {
      if (labels[order[k]!] === 1) {
        positives++;
        positiveRankSum += averageRank;
      }
    }
    start = end + 1;
  }
  const negatives = n - positives;
  if (positives === 0 || negatives === 0) throw new RangeError('rocAuc: needs at least one positive and one negative label');
  return (positiveRankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

export function demoModelYaml(): string {
  return [
    '# written by npm run demo:model',
    `features: [${CREDIT_FEATURES.join(', ')}]`,
    'reference: reference.csv',
    'label: default',
    'task: classification',
    'threshold: 0.5',
    'score: { output: probabilities, index: 1 }',
    'batching: { maxBatchSize: 64, maxQueueDelayMicros: 200 }',
    '# Entity scoring (POST /v1/score): the loan terms come with the request, every other column',
    '# is the feature of the same name in examples/features/features.yaml.',
    'bindings: { duration_months: request.duration_months, amount: request.amount }',
    '',
  ].join('\n');
}

export interface DemoModelReport {
  model: LogisticModel;
  trainAuc: number;
  heldOutAuc: number;
  /** Paths written, keyed by role. */
  files: { model: string; reference: string; config: string };
  modelBytes: number;
}

/** Writes the demo model into `repositoryDir/credit-default/`. */
export async function buildDemoModel(repositoryDir: string): Promise<DemoModelReport> {
  const rows = generateCreditData({ n: TRAIN_ROWS + HELD_OUT_ROWS, seed: DEMO_SEED });
  const train = rows.slice(0, TRAIN_ROWS);
  const heldOut = rows.slice(TRAIN_ROWS);
  const model = trainLogistic(
    train.map(featureVector),
    train.map((r) => r.default),
    { l2: DEMO_L2 },
  );
  if (!model.converged) throw new Error(`logistic regression did not converge in ${model.iterations} iterations`);
  const auc = (set: typeof rows): number =>
    rocAuc(
      set.map((r) => predictProba(model, featureVector(r))),
      set.map((r) => r.default),
    );

  const onnx = logisticToOnnx(model, { featureNames: CREDIT_FEATURES, name: 'credit_default' });
  const modelDir = join(repositoryDir, DEMO_MODEL_NAME);
  const files = {
    model: join(modelDir, String(DEMO_MODEL_VERSION), 'model.onnx'),
    reference: join(modelDir, 'reference.csv'),
    config: join(modelDir, 'model.yaml'),
  };
  await mkdir(dirname(files.model), { recursive: true });
  await writeFile(files.model, onnx);
  await writeFile(files.reference, toCsv(heldOut, [...CREDIT_FEATURES, 'default']));
  await writeFile(files.config, demoModelYaml());
  return { model, trainAuc: auc(train), heldOutAuc: auc(heldOut), files, modelBytes: onnx.length };
}

async function main(): Promise<void> {
  // dist/examples/build-demo-model.js -> <repo>/examples/models
  const repositoryDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'models');
  const report = await buildDemoModel(repositoryDir);
  console.log(`trained on ${TRAIN_ROWS} rows (seed ${DEMO_SEED}, l2 ${DEMO_L2}): ${report.model.iterations} Newton iterations`);
  console.log(`training AUC  ${report.trainAuc.toFixed(4)}`);
  console.log(`held-out AUC  ${report.heldOutAuc.toFixed(4)}  (latest ${HELD_OUT_ROWS} applications, out of time)`);
  console.log(`wrote ${report.files.model} (${report.modelBytes} bytes)`);
  console.log(`wrote ${report.files.reference}`);
  console.log(`wrote ${report.files.config}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  });
}
