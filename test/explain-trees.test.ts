// Tree ensembles: the explainer's reading of ONNX-ML TreeEnsemble nodes gives onnxruntime's outputs
// on random rows (every supported layout, branch mode, missing values, thresholds hit exactly), and
// TreeSHAP equals brute-force Shapley values (every subset of features, with the same path-dependent
// expectation over covers) and is locally accurate.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import ort from 'onnxruntime-node';
import { fitTrees, treeMargin, treesToOnnx } from '../src/retraining/trees.js';
import {
  marginOf,
  prepareTreeShap,
  recogniseScore,
  scoreFromMargin,
  takesYes,
  treeShap,
  type ScoreModel,
  type ShapTree,
  type TreeModel,
  type TreeShapModel,
} from '../src/explain/index.js';
import { seededRandom } from '../src/explain/index.js';
import { ensembleBytes, gridRows, type EnsembleSpec } from './fixtures/explain-models.js';

async function runOrt(
  bytes: Uint8Array,
  rows: Float64Array,
  features: number,
  output: string,
  type: 'FP32' | 'FP64' = 'FP32',
): Promise<{ data: Float32Array; width: number }> {
  const session = await ort.InferenceSession.create(bytes);
  const n = rows.length / features;
  const tensor =
    type === 'FP32'
      ? new ort.Tensor('float32', Float32Array.from(rows), [n, features])
      : new ort.Tensor('float64', Float64Array.from(rows), [n, features]);
  const out = await session.run({ input: tensor });
  await session.release();
  const t = out[output]!;
  return { data: t.data as Float32Array, width: t.dims.length > 1 ? Number(t.dims[1]) : 1 };
}

function recognised(bytes: Uint8Array, features: number, output: string, column: number, type: 'FP32' | 'FP64' = 'FP32'): ScoreModel {
  const r = recogniseScore(bytes, { input: 'input', inputType: type, features, output, column });
  if (!r.ok) throw new Error(`not recognised: ${r.reason}`);
  return r.model;
}

/** Every column of the output, as the explainer reads it, equals onnxruntime's on every row. */
async function agreesWithOrt(spec: EnsembleSpec, output: string, nanShare = 0): Promise<void> {
  const bytes = ensembleBytes(spec);
  const M = spec.features;
  const type = spec.inputType === 'FP64' ? 'FP64' : 'FP32';
  // Float inputs are float32 by the time the model sees them.
  const rows = gridRows(400, M, spec.seed + 1, nanShare).map((v) => (type === 'FP32' ? Math.fround(v) : v));
  const ref = await runOrt(bytes, rows, M, output, type);
  for (let c = 0; c < ref.width; c++) {
    const model = recognised(bytes, M, output, c, type);
    for (let i = 0; i < rows.length / M; i++) {
      const x = rows.subarray(i * M, (i + 1) * M);
      const mine = scoreFromMargin(model, marginOf(model, x));
      const theirs = ref.data[i * ref.width + c]!;
      assert.ok(
        Math.abs(mine - theirs) <= 2e-5 * Math.max(1, Math.abs(theirs)),
        `${JSON.stringify({ ...spec, modes: undefined })} column ${c} row ${i}: explainer ${mine}, onnxruntime ${theirs}`,
      );
    }
  }
}

test('TreeEnsemble reading equals onnxruntime: scoreline GBDT, binary with one weight class (mixed, positive), two weight classes, multi-class', async () => {
  const base = { trees: 12, depth: 3, features: 5 };
  await agreesWithOrt(
    { kind: 'classifier', ...base, seed: 1, outputs: 2, weightIds: [0], postTransform: 'LOGISTIC', baseValues: [-0.7] },
    'probabilities',
  );
  await agreesWithOrt({ kind: 'classifier', ...base, seed: 2, outputs: 2, weightIds: [0], postTransform: 'NONE' }, 'probabilities');
  await agreesWithOrt(
    { kind: 'classifier', ...base, seed: 3, outputs: 2, weightIds: [0], postTransform: 'LOGISTIC', positive: true },
    'probabilities',
  );
  await agreesWithOrt({ kind: 'classifier', ...base, seed: 4, outputs: 2, postTransform: 'NONE', positive: true }, 'probabilities');
  await agreesWithOrt(
    { kind: 'classifier', ...base, seed: 5, outputs: 2, postTransform: 'LOGISTIC', baseValues: [0.3, -0.2] },
    'probabilities',
  );
  await agreesWithOrt(
    { kind: 'classifier', ...base, seed: 6, outputs: 3, postTransform: 'LOGISTIC', baseValues: [0.1, 0.2, -0.4] },
    'probabilities',
  );
  await agreesWithOrt({ kind: 'classifier', ...base, seed: 7, outputs: 3, postTransform: 'NONE', shuffleIds: true }, 'probabilities');
});

test('TreeEnsemble reading equals onnxruntime: regressors (SUM, AVERAGE, several targets), every branch mode, missing values, double and cast inputs', async () => {
  const base = { trees: 10, depth: 4, features: 4 };
  const modes = ['BRANCH_LEQ', 'BRANCH_LT', 'BRANCH_GTE', 'BRANCH_GT', 'BRANCH_EQ', 'BRANCH_NEQ'];
  await agreesWithOrt({ kind: 'regressor', ...base, seed: 11, outputs: 1, baseValues: [2.5] }, 'variable');
  await agreesWithOrt({ kind: 'regressor', ...base, seed: 12, outputs: 1, aggregate: 'AVERAGE', baseValues: [0.5] }, 'variable');
  await agreesWithOrt({ kind: 'regressor', ...base, seed: 13, outputs: 2, baseValues: [1, -1], postTransform: 'LOGISTIC' }, 'variable');
  await agreesWithOrt({ kind: 'regressor', ...base, seed: 14, outputs: 1, modes, missingTrue: 0.5 }, 'variable', 0.2);
  await agreesWithOrt(
    { kind: 'classifier', ...base, seed: 15, outputs: 2, weightIds: [0], postTransform: 'LOGISTIC', modes, missingTrue: 0.5 },
    'probabilities',
    0.2,
  );
  await agreesWithOrt({ kind: 'regressor', ...base, seed: 16, outputs: 1, modes, missingTrue: 0.3, inputType: 'FP64' }, 'variable', 0.1);
  await agreesWithOrt({ kind: 'regressor', ...base, seed: 17, outputs: 1, modes, inputType: 'FP64', castToFloat: true }, 'variable');
});

test('MIN and MAX aggregation, and softmax, are not read as additive (KernelSHAP explains them)', () => {
  for (const spec of [
    { kind: 'regressor', trees: 3, depth: 2, features: 3, seed: 21, outputs: 1, aggregate: 'MIN' },
    { kind: 'regressor', trees: 3, depth: 2, features: 3, seed: 22, outputs: 1, aggregate: 'MAX' },
    { kind: 'classifier', trees: 3, depth: 2, features: 3, seed: 23, outputs: 3, postTransform: 'SOFTMAX' },
  ] as EnsembleSpec[]) {
    const r = recogniseScore(ensembleBytes(spec), {
      input: 'input',
      inputType: 'FP32',
      features: 3,
      output: spec.kind === 'classifier' ? 'probabilities' : 'variable',
      column: 0,
    });
    assert.equal(r.ok, false, JSON.stringify(spec));
    assert.match((r as { reason: string }).reason, /aggregate_function (MIN|MAX) is not additive|SOFTMAX is not applied per column/);
  }
});

/** Brute force: v(S) = base + sum of each tree's expectation with features outside S averaged by cover shares. */
function bruteForce(e: TreeShapModel, x: ArrayLike<number>): Float64Array {
  const M = e.features;
  const model: TreeModel = e.model;
  const cond = (t: ShapTree, share: Float64Array, n: number, S: number): number => {
    const f = t.feature[n]!;
    if (f < 0) return t.value[n]!;
    if ((S >> f) & 1) {
      const v = model.roundInput ? Math.fround(x[f]!) : x[f]!;
      return cond(t, share, takesYes(t, n, v) ? t.yes[n]! : t.no[n]!, S);
    }
    return share[t.yes[n]!]! * cond(t, share, t.yes[n]!, S) + share[t.no[n]!]! * cond(t, share, t.no[n]!, S);
  };
  const v = (S: number) => model.trees.reduce((s, t, i) => s + cond(t, e.shares[i]!, 0, S), model.base);
  const fact = (n: number): number => (n <= 1 ? 1 : n * fact(n - 1));
  const phi = new Float64Array(M);
  for (let i = 0; i < M; i++) {
    for (let S = 0; S < 1 << M; S++) {
      if ((S >> i) & 1) continue;
      let size = 0;
      for (let j = 0; j < M; j++) size += (S >> j) & 1;
      phi[i]! += ((fact(size) * fact(M - size - 1)) / fact(M)) * (v(S | (1 << i)) - v(S));
    }
  }
  return phi;
}

function checkAgainstBruteForce(e: TreeShapModel, rows: Float64Array, label: string): number {
  const M = e.features;
  const phi = new Float64Array(M);
  let worst = 0;
  for (let i = 0; i < rows.length / M; i++) {
    const x = rows.subarray(i * M, (i + 1) * M);
    const margin = treeShap(e, x, phi);
    const expected = bruteForce(e, x);
    for (let j = 0; j < M; j++) {
      worst = Math.max(worst, Math.abs(phi[j]! - expected[j]!));
      assert.ok(Math.abs(phi[j]! - expected[j]!) <= 1e-5, `${label} row ${i} feature ${j}: TreeSHAP ${phi[j]}, brute force ${expected[j]}`);
    }
    const sum = phi.reduce((s, v) => s + v, e.expected);
    assert.ok(
      Math.abs(sum - margin) <= 1e-9 * Math.max(1, Math.abs(margin)),
      `${label} row ${i}: base + contributions ${sum} != margin ${margin}`,
    );
  }
  return worst;
}

test('TreeSHAP equals brute-force Shapley values on a small GBDT from fitTrees (4 features, every subset), to 1e-5, and is locally accurate', () => {
  const M = 4;
  const r = seededRandom(31);
  const n = 3000;
  const X = new Float64Array(n * M).map(() => r() * 4 - 2);
  const y = Float64Array.from({ length: n }, (_, i) =>
    X[i * M]! * X[i * M + 1]! + X[i * M + 2]! - 0.5 * X[i * M + 3]! + (r() - 0.5) > 0 ? 1 : 0,
  );
  const trees = fitTrees(X, y, { trees: 20, depth: 3, learningRate: 0.2 });
  const bytes = treesToOnnx(trees, { featureNames: ['a', 'b', 'c', 'd'] });
  const model = recognised(bytes, M, 'probabilities', 1);
  assert.equal(model.link, 'logit');
  assert.equal(model.margin.kind, 'trees');
  // The reading is the trainer's own margin (leaf values stored as float32).
  for (let i = 0; i < 50; i++) {
    const x = X.subarray(i * M, (i + 1) * M);
    assert.ok(Math.abs(marginOf(model, x) - treeMargin(trees, x)) < 1e-5);
  }
  const reference = X.subarray(0, 1000 * M);
  const e = prepareTreeShap(model.margin.kind === 'trees' ? model.margin.trees : (undefined as never), reference, 1000, M);
  // The base value is the mean margin over the reference rows covers were counted on.
  let mean = 0;
  for (let i = 0; i < 1000; i++) mean += marginOf(model, reference.subarray(i * M, (i + 1) * M)) / 1000;
  assert.ok(Math.abs(e.expected - mean) < 1e-9, `base ${e.expected} vs mean margin ${mean}`);
  const worst = checkAgainstBruteForce(e, X.subarray(1000 * M, 1100 * M), 'fitTrees');
  assert.ok(worst < 1e-9, `worst difference ${worst}`);
});

test('TreeSHAP equals brute force with repeated features on a path, every branch mode, missing values, and nodes no reference row reaches', () => {
  const M = 3;
  const spec: EnsembleSpec = {
    kind: 'regressor',
    trees: 6,
    depth: 5,
    features: M,
    seed: 41,
    outputs: 1,
    baseValues: [0.25],
    modes: ['BRANCH_LEQ', 'BRANCH_LT', 'BRANCH_GTE', 'BRANCH_GT', 'BRANCH_EQ', 'BRANCH_NEQ'],
    missingTrue: 0.5,
    aggregate: 'AVERAGE',
  };
  const model = recognised(ensembleBytes(spec), M, 'variable', 0);
  const trees = (model.margin as { trees: TreeModel }).trees;
  assert.ok(trees.trees.some((t) => t.depth >= 4));
  // Few reference rows: some nodes are never reached and split their empty cover evenly.
  const reference = gridRows(6, M, 42, 0.2).map(Math.fround);
  const e = prepareTreeShap(trees, reference, 6, M);
  assert.ok(
    e.shares.some((s) => s.some((v) => v === 0.5)),
    'some node has no cover',
  );
  assert.ok(
    e.shares.some((s) => s.some((v) => v === 0)),
    'some child gets no share',
  );
  checkAgainstBruteForce(e, gridRows(60, M, 43, 0.2).map(Math.fround), 'modes');
});
