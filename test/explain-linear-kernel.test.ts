// Linear models and KernelSHAP: scoreline's logistic regression graph and skl2onnx-style
// LinearClassifier / LinearRegressor / Gemm / Scaler graphs are read as the margin onnxruntime
// computes, with exact contributions w_j (x_j - mean_j) that add up to the margin; a model the exact
// methods cannot read (a MatMul+Tanh net) gets KernelSHAP, exact and equal to brute-force Shapley
// values when every coalition is enumerated, exact for additive models even when sampled, and within
// its stated standard errors of the exact values when sampled on a non-additive one.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import ort from 'onnxruntime-node';
import { GraphBuilder, attr } from '../src/inference/onnx-writer.js';
import { logisticToOnnx, originalScaleCoefficients, trainLogistic } from '../src/retraining/logistic.js';
import {
  applyLink,
  explainExact,
  kernelShap,
  marginOf,
  planCoalitions,
  prepareExact,
  rankContributions,
  recogniseScore,
  scoreFromMargin,
  writeCoalitionRows,
  type CoalitionPlan,
  type Link,
  type ScoreModel,
} from '../src/explain/index.js';
import { seededRandom } from '../src/explain/index.js';
import { tanhNet } from './fixtures/explain-models.js';

function randomRows(n: number, M: number, seed: number, scale = 2): Float64Array {
  const r = seededRandom(seed);
  return new Float64Array(n * M).map(() => Math.fround((r() * 2 - 1) * scale));
}

async function session(bytes: Uint8Array) {
  return ort.InferenceSession.create(bytes);
}

async function run(
  s: ort.InferenceSession,
  rows: ArrayLike<number>,
  M: number,
  output: string,
): Promise<{ data: Float32Array; width: number }> {
  const n = rows.length / M;
  const out = await s.run({ input: new ort.Tensor('float32', Float32Array.from(rows), [n, M]) });
  const t = out[output]!;
  return { data: t.data as Float32Array, width: t.dims.length > 1 ? Number(t.dims[1]) : 1 };
}

function read(bytes: Uint8Array, M: number, output: string, column: number | null): ScoreModel {
  const r = recogniseScore(bytes, { input: 'input', inputType: 'FP32', features: M, output, column });
  if (!r.ok) throw new Error(`not recognised: ${r.reason}`);
  return r.model;
}

/** Every column as read equals onnxruntime's on random rows. */
async function agrees(bytes: Uint8Array, M: number, output: string, label: string): Promise<void> {
  const s = await session(bytes);
  const rows = randomRows(200, M, 7);
  const ref = await run(s, rows, M, output);
  await s.release();
  for (let c = 0; c < ref.width; c++) {
    const model = read(bytes, M, output, c);
    for (let i = 0; i < 200; i++) {
      const mine = scoreFromMargin(model, marginOf(model, rows.subarray(i * M, (i + 1) * M)));
      const theirs = ref.data[i * ref.width + c]!;
      assert.ok(
        Math.abs(mine - theirs) < 1e-5 * Math.max(1, Math.abs(theirs)),
        `${label} column ${c} row ${i}: read ${mine}, onnxruntime ${theirs}`,
      );
    }
  }
}

test("scoreline's logistic regression graph is read as its logit; contributions are w_j (x_j - mean_j) and add up to the margin", async () => {
  const M = 4;
  const X = randomRows(2000, M, 1, 3);
  const r = seededRandom(2);
  const y = Array.from({ length: 2000 }, (_, i) => (X[i * M]! - 0.5 * X[i * M + 1]! + 0.2 * X[i * M + 3]! + r() - 0.5 > 0 ? 1 : 0));
  const fitted = trainLogistic(X, y, { l2: 1 });
  const names = ['a', 'b', 'c', 'd'];
  const bytes = logisticToOnnx(fitted, { featureNames: names });
  await agrees(bytes, M, 'probabilities', 'logistic');
  const model = read(bytes, M, 'probabilities', 1);
  assert.equal(model.link, 'logit');
  assert.equal(model.margin.kind, 'linear');
  assert.equal(read(bytes, M, 'probabilities', 0).link, 'logit');

  const reference = X.subarray(0, 500 * M);
  const e = prepareExact(model, reference, 500, names);
  assert.equal(e.method, 'linear');
  const coef = originalScaleCoefficients(fitted);
  const means = names.map((_, j) => {
    let s = 0;
    for (let i = 0; i < 500; i++) s += reference[i * M + j]!;
    return s / 500;
  });
  const phi = new Float64Array(M);
  for (let i = 500; i < 600; i++) {
    const x = X.subarray(i * M, (i + 1) * M);
    const { base, margin } = explainExact(e, x, phi);
    for (let j = 0; j < M; j++) {
      const expected = coef.weights[j]! * (x[j]! - means[j]!);
      assert.ok(Math.abs(phi[j]! - expected) < 1e-5 * Math.max(1, Math.abs(expected)), `row ${i} feature ${j}: ${phi[j]} vs ${expected}`);
    }
    const sum = phi.reduce((s, v) => s + v, base);
    assert.ok(Math.abs(sum - margin) < 1e-12 * Math.max(1, Math.abs(margin)), `local accuracy: ${sum} vs ${margin}`);
  }
});

test('skl2onnx-style LinearClassifier (two rows, LOGISTIC, then Normalizer L1), one-row LinearClassifier, LinearRegressor, Gemm and Scaler read as onnxruntime computes them', async () => {
  const M = 3;
  const w = [0.5, -1.25, 2];
  const b = 0.3;
  const ml = { domain: 'ai.onnx.ml' };
  {
    const g = new GraphBuilder('sk_logistic');
    g.input('input', 'FP32', [-1, M]);
    g.node(
      'LinearClassifier',
      ['input'],
      ['label', 'raw'],
      {
        coefficients: attr.floats([...w.map((v) => -v), ...w]),
        intercepts: attr.floats([-b, b]),
        classlabels_ints: attr.ints([0, 1]),
        post_transform: attr.string('LOGISTIC'),
        multi_class: attr.int(0),
      },
      ml,
    );
    g.node('Normalizer', ['raw'], ['probabilities'], { norm: attr.string('L1') }, ml);
    g.output('label', 'INT64', [-1]);
    g.output('probabilities', 'FP32', [-1, 2]);
    const bytes = g.toModelBytes({ domainOpsets: { 'ai.onnx.ml': 1 } });
    await agrees(bytes, M, 'probabilities', 'LinearClassifier+Normalizer');
    const m = read(bytes, M, 'probabilities', null);
    assert.equal(m.link, 'logit');
    assert.equal(m.source, 'LinearClassifier');
  }
  for (const post of ['LOGISTIC', 'NONE']) {
    const g = new GraphBuilder('one_row');
    g.input('input', 'FP32', [-1, M]);
    g.node(
      'LinearClassifier',
      ['input'],
      ['label', 'scores'],
      {
        coefficients: attr.floats(w),
        intercepts: attr.floats([b]),
        classlabels_ints: attr.ints([0, 1]),
        post_transform: attr.string(post),
      },
      ml,
    );
    g.output('label', 'INT64', [-1]);
    g.output('scores', 'FP32', [-1, 2]);
    await agrees(g.toModelBytes({ domainOpsets: { 'ai.onnx.ml': 1 } }), M, 'scores', `one-row LinearClassifier ${post}`);
  }
  {
    const g = new GraphBuilder('regressors');
    g.input('input', 'FP32', [-1, M]);
    g.node('Scaler', ['input'], ['scaled'], { offset: attr.floats([1, 0, -1]), scale: attr.floats([0.5, 2, 1]) }, ml);
    g.node('LinearRegressor', ['scaled'], ['y'], { coefficients: attr.floats(w), intercepts: attr.floats([b]), targets: attr.int(1) }, ml);
    g.initializer('B', 'FP32', [M, 2], Float32Array.of(1, 0.5, -2, 0.25, 0.75, 3));
    g.initializer('C', 'FP32', [2], Float32Array.of(0.1, -0.2));
    g.node('Gemm', ['input', 'B', 'C'], ['gemm'], { alpha: attr.float(1.5), beta: attr.float(2) });
    g.output('y', 'FP32', [-1, 1]);
    g.output('gemm', 'FP32', [-1, 2]);
    const bytes = g.toModelBytes({ domainOpsets: { 'ai.onnx.ml': 1 } });
    await agrees(bytes, M, 'y', 'Scaler+LinearRegressor');
    await agrees(bytes, M, 'gemm', 'Gemm');
  }
});

/** Mean score over the background with each coalition's features from x, run in onnxruntime. */
function coalitionMeans(s: ort.InferenceSession, M: number, x: Float64Array, background: Float64Array, K: number) {
  return async (plan: CoalitionPlan): Promise<Float64Array> => {
    const rows = new Float32Array(plan.count * K * M);
    writeCoalitionRows(rows, 0, plan, x, background, K, 0, plan.count * K);
    const out = await run(s, rows, M, 'score');
    const means = new Float64Array(plan.count);
    for (let i = 0; i < plan.count * K; i++) means[Math.floor(i / K)]! += out.data[i]! / K;
    return means;
  };
}

async function scoresOf(s: ort.InferenceSession, rows: Float64Array, M: number): Promise<Float64Array> {
  return Float64Array.from((await run(s, rows, M, 'score')).data);
}

/** Shapley values of v(S) = link(mean over background of f(x_S, b)) by enumerating every subset. */
async function bruteForce(
  s: ort.InferenceSession,
  M: number,
  x: Float64Array,
  background: Float64Array,
  K: number,
  link: Link,
): Promise<Float64Array> {
  const subsets = 1 << M;
  const rows = new Float32Array(subsets * K * M);
  for (let S = 0; S < subsets; S++) {
    for (let b = 0; b < K; b++) for (let j = 0; j < M; j++) rows[(S * K + b) * M + j] = (S >> j) & 1 ? x[j]! : background[b * M + j]!;
  }
  const out = await run(s, rows, M, 'score');
  const v = new Float64Array(subsets);
  for (let S = 0; S < subsets; S++) {
    let m = 0;
    for (let b = 0; b < K; b++) m += out.data[S * K + b]! / K;
    v[S] = applyLink(link, m);
  }
  const fact = (n: number): number => (n <= 1 ? 1 : n * fact(n - 1));
  const phi = new Float64Array(M);
  for (let i = 0; i < M; i++) {
    for (let S = 0; S < subsets; S++) {
      if ((S >> i) & 1) continue;
      let size = 0;
      for (let j = 0; j < M; j++) size += (S >> j) & 1;
      phi[i]! += ((fact(size) * fact(M - size - 1)) / fact(M)) * (v[S | (1 << i)]! - v[S]!);
    }
  }
  return phi;
}

test('KernelSHAP on a MatMul+Tanh net: every coalition enumerated, it equals brute-force Shapley values and is locally accurate in log-odds', async () => {
  const M = 6;
  const K = 16;
  const bytes = tanhNet(M, 8, 3);
  const r = recogniseScore(bytes, { input: 'input', inputType: 'FP32', features: M, output: 'score', column: null });
  assert.equal(r.ok, false);
  assert.match((r as { reason: string }).reason, /Tanh/);
  const s = await session(bytes);
  const background = randomRows(K, M, 4);
  const bgScores = await scoresOf(s, background, M);
  const bgMean = bgScores.reduce((a, v) => a + v, 0) / K;
  const rows = randomRows(5, M, 5);
  for (let i = 0; i < 5; i++) {
    const x = rows.subarray(i * M, (i + 1) * M);
    const score = (await scoresOf(s, x, M))[0]!;
    const e = await kernelShap(M, score, bgMean, 'logit', coalitionMeans(s, M, x, background, K), { seed: 1 });
    assert.equal(e.plan.exact, true);
    assert.equal(e.plan.count, 2 ** M - 2);
    const sum = e.phi.reduce((a, v) => a + v, e.base);
    assert.ok(Math.abs(sum - e.margin) < 1e-9, `local accuracy ${sum} vs ${e.margin}`);
    assert.ok(Math.abs(e.margin - Math.log(score / (1 - score))) < 1e-9);
    const exact = await bruteForce(s, M, x, background, K, 'logit');
    for (let j = 0; j < M; j++) assert.ok(Math.abs(e.phi[j]! - exact[j]!) < 1e-6, `row ${i} feature ${j}: ${e.phi[j]} vs ${exact[j]}`);
    assert.ok(e.standardError.every((v) => v === 0));
  }
  await s.release();
});

test('KernelSHAP with sampled coalitions (13 features): exact for an additive model, within its standard errors of the exact values for a net', async () => {
  const M = 13;
  const K = 8;
  const background = randomRows(K, M, 6);
  const x = randomRows(1, M, 7);
  {
    const s = await session(tanhNet(M, 0, 8, true));
    const bgMean = (await scoresOf(s, background, M)).reduce((a, v) => a + v, 0) / K;
    const score = (await scoresOf(s, x, M))[0]!;
    const e = await kernelShap(M, score, bgMean, 'identity', coalitionMeans(s, M, x, background, K), { seed: 2 });
    assert.equal(e.plan.exact, false);
    assert.ok(e.plan.sampled > 0 && e.plan.count <= 2 * M + 2048);
    // f = sum_j g_j(x_j): phi_j = g_j(x_j) - mean_b g_j(b_j), whichever coalitions were drawn.
    for (let j = 0; j < M; j++) {
      const only = (v: Float64Array) => {
        const row = new Float64Array(M);
        row[j] = v[0]!;
        return row;
      };
      const gx = (await scoresOf(s, only(x.subarray(j, j + 1)), M))[0]! - (await scoresOf(s, new Float64Array(M), M))[0]!;
      let gb = 0;
      for (let b = 0; b < K; b++)
        gb +=
          ((await scoresOf(s, only(background.subarray(b * M + j, b * M + j + 1)), M))[0]! -
            (await scoresOf(s, new Float64Array(M), M))[0]!) /
          K;
      assert.ok(Math.abs(e.phi[j]! - (gx - gb)) < 1e-5, `feature ${j}: ${e.phi[j]} vs ${gx - gb}`);
      assert.ok(e.standardError[j]! < 1e-5, `additive: no sampling error, got ${e.standardError[j]}`);
    }
    await s.release();
  }
  {
    const s = await session(tanhNet(M, 10, 9));
    const bgMean = (await scoresOf(s, background, M)).reduce((a, v) => a + v, 0) / K;
    const score = (await scoresOf(s, x, M))[0]!;
    const means = coalitionMeans(s, M, x, background, K);
    const sampled = await kernelShap(M, score, bgMean, 'logit', means, { seed: 3 });
    const exact = await kernelShap(M, score, bgMean, 'logit', means, { seed: 3, maxCoalitions: 2 ** M });
    assert.equal(exact.plan.exact, true);
    assert.ok(Math.abs(sampled.phi.reduce((a, v) => a + v, sampled.base) - sampled.margin) < 1e-9, 'local accuracy when sampled');
    assert.ok(sampled.standardError.some((v) => v > 0));
    for (let j = 0; j < M; j++) {
      const err = Math.abs(sampled.phi[j]! - exact.phi[j]!);
      assert.ok(
        err <= 4 * sampled.standardError[j]! + 1e-6,
        `feature ${j}: sampled ${sampled.phi[j]} exact ${exact.phi[j]} (se ${sampled.standardError[j]})`,
      );
    }
    // The same row gets the same coalitions: reason codes are reproducible.
    const again = await kernelShap(M, score, bgMean, 'logit', means, { seed: 3 });
    assert.deepEqual(Array.from(again.phi), Array.from(sampled.phi));
    await s.release();
  }
});

test('plans: all coalitions up to 11 features; complementary pairs after the enumerated sizes; weights add up to 1', () => {
  const small = planCoalitions(11, { seed: 1 });
  assert.equal(small.exact, true);
  assert.equal(small.count, 2 ** 11 - 2);
  const big = planCoalitions(30, { seed: 1 });
  assert.equal(big.exact, false);
  assert.ok(big.count <= 2 * 30 + 2048);
  assert.ok(Math.abs(big.weights.reduce((a, v) => a + v, 0) - 1) < 1e-12);
  // Sizes 1 and 29 are enumerated first (30 + 30 subsets).
  const sizes = (i: number) => big.masks.subarray(i * 30, (i + 1) * 30).reduce((a, v) => a + v, 0);
  assert.equal(sizes(0), 1);
  const first = big.count - big.sampled;
  assert.ok(first >= 60);
  for (let p = first; p < big.count; p += 2) assert.equal(sizes(p) + sizes(p + 1), 30);
  assert.deepEqual(rankContributions([0.1, -0.5, 0.5, 0], 2), [1, 2]);
  assert.deepEqual(rankContributions([0.1, -0.5, 0.5, 0], null), [1, 2, 0, 3]);
});
