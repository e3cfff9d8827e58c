// Tests for the gradient-boosted trees trainer and its ONNX export: it learns a known signal
// (AUC close to the true probabilities'), is deterministic, and the exported TreeEnsembleClassifier
// run by the real onnxruntime-node gives the trainer's own probabilities.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { fitTrees, treeProba, treesToOnnx } from '../src/retraining/trees.js';
import { auc } from '../src/monitoring/metrics.js';
import { CREDIT_FEATURES, featureVector, generateCreditData, trueDefaultLogit } from '../examples/credit-data.js';

function creditSet(n: number, seed: number) {
  const rows = generateCreditData({ n, seed });
  const X = new Float64Array(n * CREDIT_FEATURES.length);
  rows.forEach((r, i) => {
    X.set(featureVector(r), i * CREDIT_FEATURES.length);
  });
  return { rows, X, y: Float64Array.from(rows, (r) => r.default) };
}

test('the tree trainer learns a known signal: out-of-sample AUC within 0.03 of the true probabilities', () => {
  const train = creditSet(20_000, 3);
  const test_ = creditSet(10_000, 4);
  const model = fitTrees(train.X, train.y, { trees: 100, depth: 3, learningRate: 0.1 });
  assert.equal(model.trees.length, 100);
  const p = CREDIT_FEATURES.length;
  const scores = Float64Array.from(test_.rows, (_, i) => treeProba(model, test_.X.subarray(i * p, (i + 1) * p)));
  const truth = Float64Array.from(test_.rows, (r) => trueDefaultLogit(r));
  const got = auc(scores, test_.y)!;
  const best = auc(truth, test_.y)!;
  assert.ok(got > best - 0.03, `trees AUC ${got} vs true-probability AUC ${best}`);
  assert.ok(got > 0.6, `trees AUC ${got}`);
  // Deterministic: the same data and options give the same bytes.
  const again = fitTrees(train.X, train.y, { trees: 100, depth: 3, learningRate: 0.1 });
  assert.deepEqual(treesToOnnx(again, { featureNames: CREDIT_FEATURES }), treesToOnnx(model, { featureNames: CREDIT_FEATURES }));
});

test('the exported TreeEnsembleClassifier gives the trainer probabilities in onnxruntime', async () => {
  const train = creditSet(5_000, 5);
  const model = fitTrees(train.X, train.y, { trees: 40, depth: 3 });
  const session = await ort.InferenceSession.create(treesToOnnx(model, { featureNames: CREDIT_FEATURES }));
  const p = CREDIT_FEATURES.length;
  const n = 500;
  const input = Float32Array.from(train.X.subarray(0, n * p));
  const out = await session.run({ input: new ort.Tensor('float32', input, [n, p]) });
  const probs = out.probabilities!.data as Float32Array;
  const labels = out.label!.data as BigInt64Array;
  assert.deepEqual(out.probabilities!.dims, [n, 2]);
  for (let i = 0; i < n; i++) {
    const expected = treeProba(model, input.subarray(i * p, (i + 1) * p));
    assert.ok(Math.abs(probs[i * 2 + 1]! - expected) < 1e-5, `row ${i}: onnxruntime ${probs[i * 2 + 1]} vs ${expected}`);
    assert.ok(Math.abs(probs[i * 2]! + probs[i * 2 + 1]! - 1) < 1e-6);
    assert.equal(labels[i], expected > 0.5 ? 1n : 0n);
  }
  await session.release();
});
