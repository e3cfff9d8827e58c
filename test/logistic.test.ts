// Tests for the logistic regression trainer and its ONNX export: closed-form and optimality
// checks, recovery of known coefficients on seeded data, and agreement between predictProba and
// the exported graph run by the real onnxruntime-node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import {
  logisticToOnnx,
  originalScaleCoefficients,
  predictProba,
  sigmoid,
  trainLogistic,
  type LogisticModel,
} from '../src/retraining/logistic.js';
import { CREDIT_FEATURES, Random, featureVector, generateCreditData } from '../examples/credit-data.js';

const { onnx } = onnxProto;

/** n rows of three features on very different scales, labels from known raw-scale coefficients. */
function syntheticSet(n: number, seed: number, weights: number[], intercept: number): { X: Float64Array; y: Uint8Array } {
  const rng = new Random(seed);
  const X = new Float64Array(n * 3);
  const y = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const row = [50 + 10 * rng.normal(), rng.normal(), 5 * rng.uniform()];
    X.set(row, i * 3);
    const eta = intercept + row.reduce((s, v, j) => s + weights[j]! * v, 0);
    y[i] = rng.uniform() < sigmoid(eta) ? 1 : 0;
  }
  return { X, y };
}

test('closed form: one binary feature, no penalty, gives the log-odds of each group', () => {
  // x = 0: 1 in 4 positive; x = 1: 3 in 4 positive.
  const X: number[][] = [];
  const y: number[] = [];
  for (let r = 0; r < 100; r++) {
    X.push([0], [1]);
    y.push(r % 4 === 0 ? 1 : 0, r % 4 === 0 ? 0 : 1);
  }
  const model = trainLogistic(X, y, { l2: 0 });
  assert.equal(model.converged, true);
  assert.deepEqual(model.mean, [0.5]);
  assert.deepEqual(model.std, [0.5]);
  const raw = originalScaleCoefficients(model);
  assert.ok(Math.abs(raw.intercept - Math.log(1 / 3)) < 1e-9, `intercept ${raw.intercept}`);
  assert.ok(Math.abs(raw.weights[0]! - 2 * Math.log(3)) < 1e-9, `weight ${raw.weights[0]}`);
  assert.ok(Math.abs(predictProba(model, [0]) - 0.25) < 1e-12);
  assert.ok(Math.abs(predictProba(model, [1]) - 0.75) < 1e-12);
});

test('recovers known coefficients on a seeded synthetic set', () => {
  const truth = { weights: [0.05, -1.0, 0.6], intercept: -3.5 };
  const { X, y } = syntheticSet(40_000, 11, truth.weights, truth.intercept);
  const model = trainLogistic(X, y, { l2: 1e-6 });
  assert.equal(model.converged, true);
  assert.ok(model.iterations <= 10, `iterations ${model.iterations}`);
  const fitted = originalScaleCoefficients(model);
  fitted.weights.forEach((w, j) => {
    const tolerance = 0.08 * Math.abs(truth.weights[j]!) + 0.01;
    assert.ok(Math.abs(w - truth.weights[j]!) < tolerance, `weight ${j}: ${w} vs ${truth.weights[j]}`);
  });
  assert.ok(Math.abs(fitted.intercept - truth.intercept) < 0.3, `intercept ${fitted.intercept}`);
  // Standardisation is the population mean / deviation of each column.
  assert.ok(Math.abs(model.mean[0]! - 50) < 0.3 && Math.abs(model.std[0]! - 10) < 0.2);
  assert.ok(Math.abs(model.std[2]! - 5 / Math.sqrt(12)) < 0.03);
});

test('the fit satisfies the penalised optimality conditions (intercept unpenalised)', () => {
  const { X, y } = syntheticSet(3_000, 5, [0.08, 0.7, -0.4], -4);
  const l2 = 25;
  const model = trainLogistic(X, y, { l2 });
  const gradient = [0, 0, 0, 0];
  for (let i = 0; i < y.length; i++) {
    const row = X.subarray(i * 3, i * 3 + 3);
    const residual = predictProba(model, row) - y[i]!;
    gradient[0]! += residual;
    for (let j = 0; j < 3; j++) gradient[j + 1]! += (residual * (row[j]! - model.mean[j]!)) / model.std[j]!;
  }
  assert.ok(Math.abs(gradient[0]!) < 1e-6, `intercept gradient ${gradient[0]}`);
  for (let j = 0; j < 3; j++) {
    const total = gradient[j + 1]! + l2 * model.weights[j]!;
    assert.ok(Math.abs(total) < 1e-6, `weight ${j} gradient ${total}`);
    assert.ok(Math.abs(gradient[j + 1]!) > 1e-3, 'the penalty must matter for this test to mean anything');
  }
});

test('a larger l2 shrinks the weights; l2 = 0 is allowed', () => {
  const { X, y } = syntheticSet(2_000, 3, [0.05, -1.0, 0.6], -3.5);
  const norms = [0, 10, 1_000, 100_000].map((l2) => Math.hypot(...trainLogistic(X, y, { l2 }).weights));
  for (let i = 1; i < norms.length; i++) assert.ok(norms[i]! < norms[i - 1]!, `norms ${norms.join(', ')}`);
  assert.ok(norms[3]! < 0.05 * norms[0]!);
});

test('deterministic, and rows as number[][] or a row-major Float64Array give the same model', () => {
  const { X, y } = syntheticSet(1_000, 9, [0.05, -1.0, 0.6], -3.5);
  const rows = Array.from({ length: y.length }, (_, i) => Array.from(X.subarray(i * 3, i * 3 + 3)));
  const a = trainLogistic(X, y, { l2: 2 });
  const b = trainLogistic(rows, Array.from(y), { l2: 2 });
  assert.deepEqual(a, b);
  assert.deepEqual(trainLogistic(X, y, { l2: 2 }), a);
});

test('a constant feature gets std 1 and weight 0, even without a penalty', () => {
  const { X, y } = syntheticSet(1_000, 4, [0.05, -1.0, 0.6], -3.5);
  const withConstant = Array.from({ length: y.length }, (_, i) => [X[i * 3]!, 7, X[i * 3 + 1]!]);
  for (const l2 of [0, 1]) {
    const model = trainLogistic(withConstant, y, { l2 });
    assert.equal(model.std[1], 1);
    assert.equal(model.mean[1], 7);
    assert.ok(Math.abs(model.weights[1]!) < 1e-9, `weight ${model.weights[1]}`);
    assert.equal(model.converged, true);
  }
});

test('maxIter bounds the work and converged reports it', () => {
  const { X, y } = syntheticSet(1_000, 4, [0.05, -1.0, 0.6], -3.5);
  const model = trainLogistic(X, y, { maxIter: 1 });
  assert.equal(model.iterations, 1);
  assert.equal(model.converged, false);
});

test('bad training input is rejected with a clear message', () => {
  assert.throws(() => trainLogistic([[1], [2]], [0, 2]), /y\[1\] is 2; labels must be 0 or 1/);
  assert.throws(() => trainLogistic([[1], [2]], [1, 1]), /both classes/);
  assert.throws(() => trainLogistic([[1, 2], [3]], [0, 1]), /X row 1 has 1 values, expected 2/);
  assert.throws(() => trainLogistic([[1], [2], [3]], [0, 1]), /X has 3 rows but y has 2 labels/);
  assert.throws(() => trainLogistic(Float64Array.of(1, 2, 3), [0, 1]), /not a multiple of the 2 labels/);
  assert.throws(() => trainLogistic([[1], [Number.NaN]], [0, 1]), /non-finite value at row 1, column 0/);
  assert.throws(() => trainLogistic([[1], [2]], [0, 1], { l2: -1 }), /l2 must be a finite number >= 0/);
  assert.throws(() => trainLogistic([[1], [2]], [0, 1], { maxIter: 0 }), /maxIter must be a positive integer/);
  assert.throws(
    () => predictProba({ mean: [0], std: [1], weights: [1], intercept: 0, l2: 0, iterations: 0, converged: true }, [1, 2]),
    /row has 2 features, model expects 1/,
  );
});

async function creditModel(): Promise<{ model: LogisticModel; rows: number[][]; bytes: Uint8Array }> {
  const data = generateCreditData({ n: 6_000, seed: 31 });
  const train = data.slice(0, 4_000);
  const model = trainLogistic(
    train.map(featureVector),
    train.map((r) => r.default),
    { l2: 1 },
  );
  const bytes = logisticToOnnx(model, { featureNames: CREDIT_FEATURES, name: 'credit_test' });
  return { model, rows: data.slice(4_000).map(featureVector), bytes };
}

test('ONNX export matches predictProba to 1e-6 on 2,000 rows; label is probability > 0.5', async () => {
  const { model, rows, bytes } = await creditModel();
  const session = await ort.InferenceSession.create(bytes);
  assert.deepEqual(session.inputNames, ['input']);
  assert.deepEqual(session.outputNames, ['label', 'probabilities']);
  const input = new ort.Tensor('float32', Float32Array.from(rows.flat()), [rows.length, CREDIT_FEATURES.length]);
  const { label, probabilities: probabilityTensor } = await session.run({ input });
  assert.ok(label && probabilityTensor, 'the graph has both outputs');
  assert.equal(label.type, 'int64');
  assert.deepEqual(label.dims, [rows.length]);
  assert.equal(probabilityTensor.type, 'float32');
  assert.deepEqual(probabilityTensor.dims, [rows.length, 2]);
  const probabilities = probabilityTensor.data as Float32Array;
  const labels = label.data as BigInt64Array;
  let worst = 0;
  let positives = 0;
  rows.forEach((row, i) => {
    const expected = predictProba(model, row);
    // In range: the dims are [rows.length, 2] (asserted above).
    const p0 = probabilities[2 * i]!;
    const p1 = probabilities[2 * i + 1]!;
    worst = Math.max(worst, Math.abs(p1 - expected));
    assert.ok(Math.abs(p0 + p1 - 1) < 1e-6);
    assert.equal(labels[i], p1 > 0.5 ? 1n : 0n, `row ${i}: label ${labels[i]} for p1 ${p1}`);
    if (Math.abs(expected - 0.5) > 1e-6) assert.equal(labels[i], expected > 0.5 ? 1n : 0n);
    positives += Number(labels[i]);
  });
  assert.ok(worst < 1e-6, `largest difference ${worst}`);
  assert.ok(positives > 0 && positives < rows.length, `labels must not be constant (${positives} positives)`);
});

test('ONNX export carries features, standardisation and coefficients as metadata, and is deterministic', async () => {
  const { model, bytes } = await creditModel();
  assert.deepEqual((await creditModel()).bytes, bytes);
  const decoded = onnx.ModelProto.decode(bytes);
  const metadata = Object.fromEntries(decoded.metadataProps!.map((m) => [m.key, m.value]));
  assert.equal(metadata['scoreline.model_type'], 'logistic_regression');
  assert.deepEqual(JSON.parse(metadata['scoreline.features']!), [...CREDIT_FEATURES]);
  assert.deepEqual(JSON.parse(metadata['scoreline.standardisation']!), { mean: model.mean, std: model.std });
  assert.deepEqual(JSON.parse(metadata['scoreline.coefficients']!), { weights: model.weights, intercept: model.intercept });
  assert.deepEqual(JSON.parse(metadata['scoreline.training']!), { l2: 1, iterations: model.iterations, converged: true });
  assert.equal(decoded.graph!.name, 'credit_test');
  assert.deepEqual(
    decoded.graph!.node!.map((n) => n.opType),
    ['Sub', 'Div', 'MatMul', 'Add', 'Sigmoid', 'Sub', 'Concat', 'Greater', 'Cast', 'Reshape'],
  );
  const outputs = decoded.graph!.output!.map((o) => [
    o.name,
    o.type!.tensorType!.elemType,
    o.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue)),
  ]);
  assert.deepEqual(outputs, [
    ['label', onnx.TensorProto.DataType.INT64, ['N']],
    ['probabilities', onnx.TensorProto.DataType.FLOAT, ['N', 2]],
  ]);
  assert.throws(() => logisticToOnnx(model, { featureNames: ['a'] }), /featureNames has 1 names, model has 10 features/);
  assert.throws(() => logisticToOnnx(model, { featureNames: Array(10).fill('same') }), /distinct non-empty strings/);
});
