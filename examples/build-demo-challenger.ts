// Builds the demo's second version of `credit-default`, the challenger the README deploys as a
// canary: the same logistic regression retrained on later applications (2026, after the champion's
// 2024-2025 data), where recent card activity and existing loans weigh more in the true risk and
// incomes and amounts have moved a little. Writes `examples/credit-default-v2/model.onnx` and
// `recent.csv` (the latest 5,000 of those applications with their label: the version's drift
// reference and a hold-out on which it beats version 1). Kept outside the model repository so that
// `npm start` serves version 1 alone and registering this file makes version 2, as a user's would.
// Deterministic; run by `npm run demo:model`.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { logisticToOnnx, predictProba, trainLogistic, type LogisticModel } from '../src/retraining/index.js';
import { DEMO_L2, DEMO_SEED, HELD_OUT_ROWS, rocAuc, TRAIN_ROWS } from './build-demo-model.js';
import { CREDIT_FEATURES, featureVector, generateCreditData, toCsv, type CreditApplication } from './credit-data.js';

export const CHALLENGER_DIR = 'credit-default-v2';
/** The later data: a year after the champion's, with the risk itself moved (concept) and mild covariate drift. */
export const LATER_DATA = { seed: DEMO_SEED + 1, start: '2026-01-01', end: '2026-06-30', concept: 1.0, drift: 0.2 } as const;

export interface ChallengerReport {
  model: LogisticModel;
  /** AUC on recent.csv of this model and of the version-1 model (trained as build-demo-model does). */
  recentAuc: number;
  championRecentAuc: number;
  files: { model: string; recent: string };
  modelBytes: number;
}

export function laterApplications(): CreditApplication[] {
  return generateCreditData({ n: TRAIN_ROWS + HELD_OUT_ROWS, ...LATER_DATA });
}

/** Writes the challenger into `dir` (model.onnx, recent.csv). */
export async function buildDemoChallenger(dir: string): Promise<ChallengerReport> {
  const rows = laterApplications();
  const train = rows.slice(0, TRAIN_ROWS);
  const recent = rows.slice(TRAIN_ROWS);
  const model = trainLogistic(
    train.map(featureVector),
    train.map((r) => r.default),
    { l2: DEMO_L2 },
  );
  if (!model.converged) throw new Error(`logistic regression did not converge in ${model.iterations} iterations`);
  const old = generateCreditData({ n: TRAIN_ROWS + HELD_OUT_ROWS, seed: DEMO_SEED }).slice(0, TRAIN_ROWS);
  const champion = trainLogistic(
    old.map(featureVector),
    old.map((r) => r.default),
    { l2: DEMO_L2 },
  );
  const auc = (m: LogisticModel) =>
    rocAuc(
      recent.map((r) => predictProba(m, featureVector(r))),
      recent.map((r) => r.default),
    );
  const onnx = logisticToOnnx(model, { featureNames: CREDIT_FEATURES, name: 'credit_default' });
  const files = { model: join(dir, 'model.onnx'), recent: join(dir, 'recent.csv') };
  await mkdir(dir, { recursive: true });
  await writeFile(files.model, onnx);
  await writeFile(files.recent, toCsv(recent, [...CREDIT_FEATURES, 'default']));
  return { model, recentAuc: auc(model), championRecentAuc: auc(champion), files, modelBytes: onnx.length };
}

async function main(): Promise<void> {
  // dist/examples/build-demo-challenger.js -> <repo>/examples/credit-default-v2
  const dir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', CHALLENGER_DIR);
  const r = await buildDemoChallenger(dir);
  console.log(`challenger trained on ${TRAIN_ROWS} applications of ${LATER_DATA.start}..${LATER_DATA.end} (seed ${LATER_DATA.seed})`);
  console.log(`recent AUC  ${r.recentAuc.toFixed(4)} (version 1 on the same rows: ${r.championRecentAuc.toFixed(4)})`);
  console.log(`wrote ${r.files.model} (${r.modelBytes} bytes)`);
  console.log(`wrote ${r.files.recent}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 1;
  });
}
