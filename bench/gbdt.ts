// The tree model the load benchmarks serve next to the logistic demo: a gradient-boosted
// classifier of 150 trees of depth 3 over 61 features, trained (seeded, deterministic) with the
// project's own trainer on synthetic applications whose risk depends on interactions and
// thresholds, and exported as one ONNX TreeEnsembleClassifier, the shape of a scikit-learn GBDT
// converted with skl2onnx. Written as a model repository folder with a model.yaml and a reference
// CSV, so monitoring (drift against the reference) does the same work as for the demo.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { Random } from '../examples/credit-data.js';
import { fitTrees, treesToOnnx } from '../src/retraining/index.js';

export const GBDT_FEATURES = 61;
export const GBDT_NAME = 'gbdt';

/** n rows of 61 features (row-major) and 0/1 labels from a nonlinear ground truth. */
export function gbdtData(n: number, seed: number): { X: Float64Array; y: Float64Array } {
  const rng = new Random(seed);
  const p = GBDT_FEATURES;
  const X = new Float64Array(n * p);
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < p; j++) X[i * p + j] = j % 5 === 0 ? rng.int(0, 9) : rng.normal() * (1 + (j % 7));
    const x = X.subarray(i * p, (i + 1) * p);
    const t =
      -1.5 +
      0.8 * Math.tanh(x[1]!) +
      0.5 * (x[5]! > 6 ? 1 : 0) -
      (0.3 * Math.abs(x[12]!)) / 4 +
      (0.4 * x[2]! * x[3]!) / 9 +
      0.2 * Math.sin(x[30]!);
    y[i] = rng.uniform() < 1 / (1 + Math.exp(-t)) ? 1 : 0;
  }
  return { X, y };
}

/** Writes DIR/gbdt/1/model.onnx, model.yaml and reference.csv; returns one request row. */
export function writeGbdtRepository(dir: string): number[] {
  const names = Array.from({ length: GBDT_FEATURES }, (_, j) => `f${j}`);
  const train = gbdtData(20_000, 61);
  const model = fitTrees(train.X, train.y, { trees: 150, depth: 3, learningRate: 0.1 });
  const folder = join(dir, GBDT_NAME);
  mkdirSync(join(folder, '1'), { recursive: true });
  writeFileSync(join(folder, '1', 'model.onnx'), treesToOnnx(model, { featureNames: names, name: 'gbdt_150x3' }));
  const ref = gbdtData(2_000, 62);
  const lines = [[...names, 'label'].join(',')];
  for (let i = 0; i < 2_000; i++) lines.push([...ref.X.subarray(i * GBDT_FEATURES, (i + 1) * GBDT_FEATURES), ref.y[i]].join(','));
  writeFileSync(join(folder, 'reference.csv'), `${lines.join('\n')}\n`);
  writeFileSync(
    join(folder, 'model.yaml'),
    stringify({
      features: names,
      reference: 'reference.csv',
      label: 'label',
      task: 'classification',
      score: { output: 'probabilities', index: 1 },
      batching: { maxBatchSize: 64, maxQueueDelayMicros: 200 },
    }),
  );
  const row = gbdtData(1, 63).X;
  // Two decimals: a realistic request body, not 17-digit doubles.
  return Array.from(row, (v) => Math.round(v * 100) / 100);
}
