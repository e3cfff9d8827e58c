// Tests for src/monitoring/metrics.ts against values computed independently of it: scikit-learn's
// documented docstring examples, hand arithmetic (shown in comments), brute-force O(n^2) pair
// counting and threshold sweeps on tie-heavy seeded data, DeLong's structural components by
// brute force, and normal-distribution values from a 150-digit BigInt evaluation of erf.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32 as rng } from './fixtures/random.js';
import {
  accuracy,
  auc,
  brier,
  classificationMetrics,
  confusion,
  delong,
  erf,
  erfc,
  f1,
  gini,
  ks,
  logLoss,
  mae,
  mape,
  normalCdf,
  precision,
  r2,
  recall,
  regressionMetrics,
  rmse,
} from '../src/monitoring/metrics.js';

function close(actual: number | null, expected: number, tol = 1e-12, what = ''): void {
  assert.ok(actual !== null, `${what}: expected ${expected}, got null`);
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: expected ${expected}, got ${actual}`);
}

/** Relative closeness, for values far below 1. */
function rel(actual: number, expected: number, tol: number, what = ''): void {
  assert.ok(Math.abs(actual - expected) <= tol * Math.abs(expected), `${what}: expected ${expected}, got ${actual}`);
}

/** Tie-heavy data: scores from a grid of `levels` values, labels leaning on the score. */
function tieHeavy(n: number, levels: number, seed: number): { s: number[]; y: number[] } {
  const r = rng(seed);
  const s: number[] = [];
  const y: number[] = [];
  for (let i = 0; i < n; i++) {
    const score = Math.floor(r() * levels) / (levels - 1);
    s.push(score);
    y.push(r() < 0.2 + 0.6 * score ? 1 : 0);
  }
  return { s, y };
}

/** AUC by its definition: over all (positive, negative) pairs, 1 if the positive scores higher, 1/2 on a tie. */
function aucByPairs(s: number[], y: number[]): number {
  let wins = 0,
    pairs = 0;
  for (let i = 0; i < s.length; i++) {
    if (y[i] !== 1) continue;
    for (let j = 0; j < s.length; j++) {
      if (y[j] !== 0) continue;
      pairs++;
      wins += s[i]! > s[j]! ? 1 : s[i] === s[j] ? 0.5 : 0;
    }
  }
  return wins / pairs;
}

/** KS by sweeping every threshold t in (distinct scores, +Infinity), predicting score >= t: max |TPR - FPR|. */
function ksBySweep(s: number[], y: number[]): number {
  const P = y.filter((v) => v === 1).length;
  const N = y.length - P;
  let best = 0;
  for (const t of [...new Set(s), Infinity]) {
    let tp = 0,
      fp = 0;
    for (let i = 0; i < s.length; i++) if (s[i]! >= t) y[i] === 1 ? tp++ : fp++;
    best = Math.max(best, Math.abs(tp / P - fp / N));
  }
  return best;
}

test("AUC, Gini and KS on scikit-learn's documented example", () => {
  // roc_auc_score docstring: y_true [0, 0, 1, 1], y_scores [0.1, 0.4, 0.35, 0.8] -> 0.75.
  // roc_curve docstring, same data: tpr [0, .5, .5, 1, 1], fpr [0, 0, .5, .5, 1] -> max(tpr - fpr) = 0.5.
  const s = [0.1, 0.4, 0.35, 0.8];
  const y = [0, 0, 1, 1];
  close(auc(s, y), 0.75, 1e-15);
  close(gini(s, y), 0.5, 1e-15);
  close(ks(s, y), 0.5, 1e-15);
});

test('ties count one half and a tie group moves together', () => {
  // Positives 0.5 and 0.8 against negatives 0.2 and 0.5: 0.5 beats 0.2 (1), ties 0.5 (1/2); 0.8 beats both (2). 3.5 / 4.
  close(auc([0.2, 0.5, 0.5, 0.8], [0, 0, 1, 1]), 0.875, 1e-15);
  // Thresholds 0.8: TPR 1/2, FPR 0; 0.5 (the tie moves together): TPR 1, FPR 1/2. KS = 1/2.
  close(ks([0.2, 0.5, 0.5, 0.8], [0, 0, 1, 1]), 0.5, 1e-15);
  // Everything tied: no separation at all.
  close(auc([0.3, 0.3, 0.3, 0.3], [0, 1, 0, 1]), 0.5, 1e-15);
  close(ks([0.3, 0.3, 0.3, 0.3], [0, 1, 0, 1]), 0, 1e-15);
  // -0 and +0 are the same score.
  close(auc([-0, 0], [0, 1]), 0.5, 1e-15);
  // Perfect and inverted rankings; KS is |CDF_bad - CDF_good|, so an inverted model shows its separation.
  close(auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]), 1, 1e-15);
  close(auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]), 0, 1e-15);
  close(gini([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]), -1, 1e-15);
  close(ks([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]), 1, 1e-15);
});

test('AUC and KS equal pair counting and a threshold sweep on tie-heavy data', () => {
  for (let trial = 0; trial < 60; trial++) {
    const { s, y } = tieHeavy(20 + trial * 7, 2 + (trial % 9), 1000 + trial);
    if (!y.includes(0) || !y.includes(1)) continue;
    close(auc(s, y), aucByPairs(s, y), 1e-12, `auc trial ${trial}`);
    close(ks(s, y), ksBySweep(s, y), 1e-12, `ks trial ${trial}`);
    const m = classificationMetrics(Float32Array.from(s), Uint8Array.from(y));
    // Float32 storage changes the grid values but not their order or ties.
    close(m.auc, aucByPairs(s, y), 1e-12, `classificationMetrics auc ${trial}`);
    close(m.ks, ksBySweep(s, y), 1e-12, `classificationMetrics ks ${trial}`);
    close(m.gini, 2 * aucByPairs(s, y) - 1, 1e-12);
  }
});

test('one-class and empty windows give null, never NaN', () => {
  for (const y of [
    [0, 0, 0],
    [1, 1, 1],
  ]) {
    const s = [0.2, 0.6, 0.9];
    assert.equal(auc(s, y), null);
    assert.equal(ks(s, y), null);
    assert.equal(gini(s, y), null);
    const m = classificationMetrics(s, y);
    assert.equal(m.auc, null);
    assert.equal(m.ks, null);
    assert.equal(m.gini, null);
    assert.equal(m.labelled, 3);
    assert.equal(m.positives, y[0] === 1 ? 3 : 0);
    assert.ok(m.log_loss !== null && Number.isFinite(m.log_loss));
  }
  const empty = classificationMetrics([], []);
  assert.deepEqual(empty, {
    auc: null,
    ks: null,
    gini: null,
    accuracy: null,
    precision: null,
    recall: null,
    f1: null,
    log_loss: null,
    brier: null,
    labelled: 0,
    positives: 0,
    predictedPositives: 0,
  });
});

test('rows with a label other than 0/1 or a non-finite score are skipped and not counted', () => {
  const m = classificationMetrics([0.1, 0.4, NaN, 0.35, 0.8, 0.7, Infinity], [0, 0, 1, 1, 1, 2, 0]);
  assert.equal(m.labelled, 4);
  assert.equal(m.positives, 2);
  close(m.auc, 0.75, 1e-15);
  assert.throws(() => classificationMetrics([0.1, 0.2], [0]), RangeError);
});

test('confusion uses score >= threshold; precision, recall and F1 by hand', () => {
  // 0.5 >= 0.5 -> positive (tp); 0.49 -> tn; 0.51 -> fp; 0.2 -> fn.
  const c = confusion([0.5, 0.49, 0.51, 0.2], [1, 0, 0, 1], 0.5);
  assert.deepEqual(c, { tp: 1, fp: 1, tn: 1, fn: 1 });
  assert.equal(accuracy(c), 0.5);
  assert.equal(precision(c), 0.5);
  assert.equal(recall(c), 0.5);
  assert.equal(f1(c), 0.5);
  // tp 2, fp 1, fn 2, tn 1: precision 2/3, recall 1/2, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7.
  const m = classificationMetrics([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [1, 1, 0, 1, 1, 0], 0.5);
  close(m.precision, 2 / 3, 1e-15);
  close(m.recall, 0.5, 1e-15);
  close(m.f1, 4 / 7, 1e-15);
  close(m.accuracy, 3 / 6, 1e-15);
  assert.equal(m.predictedPositives, 3);
  // A higher threshold moves 0.7 and 0.8 to negative: tp 1, fp 0, fn 3, tn 2.
  assert.deepEqual(confusion([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [1, 1, 0, 1, 1, 0], 0.85), { tp: 1, fp: 0, tn: 2, fn: 3 });
});

test('precision, recall and F1 edge cases', () => {
  // Positives but nothing predicted positive: precision undefined, recall 0, F1 0 (2tp + fp + fn = 2).
  let m = classificationMetrics([0.1, 0.1], [1, 0]);
  assert.equal(m.precision, null);
  assert.equal(m.recall, 0);
  assert.equal(m.f1, 0);
  // Positive predictions but no positives: precision 0, recall undefined, F1 0.
  m = classificationMetrics([0.9, 0.1], [0, 0]);
  assert.equal(m.precision, 0);
  assert.equal(m.recall, null);
  assert.equal(m.f1, 0);
  // Neither: only accuracy is defined.
  m = classificationMetrics([0.1, 0.2], [0, 0]);
  assert.equal(m.precision, null);
  assert.equal(m.recall, null);
  assert.equal(m.f1, null);
  assert.equal(m.accuracy, 1);
  assert.equal(accuracy({ tp: 0, fp: 0, tn: 0, fn: 0 }), null);
});

test("log loss and Brier score by hand and from scikit-learn's docs", () => {
  // log_loss docstring: ["spam", "ham", "ham", "spam"] with P(spam) = [.9, .1, .2, .65] -> 0.21616...
  // = -(ln .9 + ln .9 + ln .8 + ln .65) / 4 = (0.1053605157 * 2 + 0.2231435513 + 0.4307829161) / 4.
  close(logLoss([0.9, 0.1, 0.2, 0.65], [1, 0, 0, 1]), 0.21616187468057912, 1e-15);
  // brier_score_loss docstring: y [0, 1, 1, 0], p [.1, .9, .8, .3] -> (.01 + .01 + .04 + .09) / 4 = 0.0375.
  close(brier([0.1, 0.9, 0.8, 0.3], [0, 1, 1, 0]), 0.0375, 1e-15);
  // Clipping at eps = 1e-15: p = 0 for a positive costs -ln(1e-15) = 34.538776394910684; p = 1 for a
  // negative costs -ln(1 - fl(1 - 1e-15)) = -ln(9.992007221626409e-16) = 34.53957599234088.
  close(logLoss([0], [1]), 34.538776394910684, 1e-15);
  close(logLoss([1], [0]), 34.53957599234088, 1e-15);
  close(logLoss([0, 1], [1, 0]), (34.538776394910684 + 34.53957599234088) / 2, 1e-15);
  // A caller can choose float64 machine epsilon, sklearn >= 1.2's default clip: -ln(2^-52) = 36.04365338911715.
  close(logLoss([0], [1], Number.EPSILON), 36.04365338911715, 1e-15);
  const m = classificationMetrics([0.9, 0.1, 0.2, 0.65], [1, 0, 0, 1]);
  close(m.log_loss, 0.21616187468057912, 1e-15);
  // (0.1^2 + 0.1^2 + 0.2^2 + 0.35^2) / 4 = (0.01 + 0.01 + 0.04 + 0.1225) / 4 = 0.045625.
  close(m.brier, 0.045625, 1e-15);
});

test("regression metrics by hand and from scikit-learn's docs", () => {
  // Docstrings: y_true [3, -0.5, 2, 7], y_pred [2.5, 0.0, 2, 8]. MAE 0.5; MSE 0.375; R2 = 1 - 1.5 / 29.1875 (mean 2.875);
  // MAPE = (0.5/3 + 0.5/0.5 + 0 + 1/7) / 4 = 55/168 = 0.32738...
  const pred = [2.5, 0.0, 2, 8];
  const y = [3, -0.5, 2, 7];
  const m = regressionMetrics(pred, y);
  close(m.mae, 0.5, 1e-15);
  close(m.rmse, Math.sqrt(0.375), 1e-15);
  close(m.r2, 0.9486081370449679, 1e-15);
  close(m.mape, 55 / 168, 1e-15);
  assert.equal(m.count, 4);
  close(mae(pred, y), 0.5, 1e-15);
  close(rmse(pred, y), 0.6123724356957945, 1e-15);
  close(r2(pred, y), 0.9486081370449679, 1e-15);
  close(mape(pred, y), 0.3273809523809524, 1e-15);
  // An actual of 0 is left out of MAPE only; non-finite rows are left out of everything.
  const z = regressionMetrics([...pred, 1, NaN], [...y, 0, 4]);
  close(z.mape, 55 / 168, 1e-15);
  close(z.mae, (0.5 * 4 + 1) / 5, 1e-15);
  assert.equal(z.count, 5);
  assert.equal(regressionMetrics([1, 2], [0, 0]).mape, null);
  // Constant actuals: R2 undefined, even where the mean of equal values rounds (0.1 * 3 / 3).
  assert.equal(regressionMetrics([0.1, 0.2, 0.3], [0.1, 0.1, 0.1]).r2, null);
  assert.deepEqual(regressionMetrics([], []), { mae: null, rmse: null, r2: null, mape: null, count: 0 });
});

test('erf, erfc and the normal CDF against 150-digit reference values', () => {
  // Computed with the Maclaurin series in BigInt fixed point (150 digits), then rounded to double.
  close(erf(0.5), 0.5204998778130465, 2e-16);
  close(erf(1), 0.8427007929497149, 2e-16);
  close(erf(2), 0.9953222650189527, 2e-16);
  close(erf(-1), -0.8427007929497149, 2e-16);
  close(erfc(0.5), 0.4795001221869535, 2e-16);
  rel(erfc(3), 2.209049699858544e-5, 1e-14);
  rel(erfc(5), 1.537459794428035e-12, 1e-14);
  rel(erfc(10), 2.088487583762545e-45, 1e-14);
  close(erfc(-2), 2 - 0.004677734981047266, 1e-15);
  assert.equal(normalCdf(0), 0.5);
  close(normalCdf(1), 0.8413447460685429, 2e-16);
  rel(normalCdf(-1), 0.15865525393145705, 1e-15);
  close(normalCdf(1.959963984540054), 0.975, 2e-16);
  rel(normalCdf(-1.959963984540054), 0.025000000000000012, 1e-14);
  rel(normalCdf(-3), 0.0013498980316300946, 1e-14);
  rel(normalCdf(-6), 9.86587645037698e-10, 1e-13);
  rel(normalCdf(-8), 6.220960574271784e-16, 1e-13);
  assert.ok(Number.isNaN(erf(NaN)));
});

test('the normal CDF agrees with Simpson integration of the density', () => {
  // A different algorithm: Phi(z) = 1/2 + integral_0^z phi(t) dt, composite Simpson with 20,000 intervals.
  const phi = (t: number): number => Math.exp(-0.5 * t * t) / Math.sqrt(2 * Math.PI);
  for (const z of [0.1, 0.5, 1.3, 2.2, 3.7, 5]) {
    const n = 20000;
    const h = z / n;
    let s = phi(0) + phi(z);
    for (let i = 1; i < n; i++) s += (i % 2 === 1 ? 4 : 2) * phi(i * h);
    close(normalCdf(z), 0.5 + (s * h) / 3, 1e-14, `Phi(${z})`);
  }
});

test('DeLong on a hand-computed example', () => {
  // Positives A [.9, .6], B [.8, .3]; negatives A [.7, .1], B [.5, .4].
  // V10 (share of negatives a positive outranks): A [1, .5], B [1, 0]. V01 (share of positives above a negative): A [.5, 1], B [.5, .5].
  // AUC A .75, B .5. Var(V10A - V10B) over [0, .5] = .125; Var(V01A - V01B) over [0, .5] = .125.
  // Variance = .125/2 + .125/2 = .125; z = .25 / sqrt(.125) = 1/sqrt(2); p = 2 (1 - Phi(1/sqrt 2)) = erfc(1/2).
  const r = delong([0.9, 0.6, 0.7, 0.1], [0.8, 0.3, 0.5, 0.4], [1, 1, 0, 0]);
  assert.ok(r !== null);
  close(r.aucA, 0.75, 1e-15);
  close(r.aucB, 0.5, 1e-15);
  close(r.diff, 0.25, 1e-15);
  close(r.variance, 0.125, 1e-15);
  close(r.z, Math.SQRT1_2, 1e-15);
  close(r.pValue, 0.4795001221869535, 1e-15);
});

test('DeLong equals brute-force structural components on tie-heavy data', () => {
  for (let trial = 0; trial < 12; trial++) {
    const { s: a, y } = tieHeavy(60 + 10 * trial, 6, 50 + trial);
    const r = rng(900 + trial);
    // Model B: A plus noise on a coarse grid, so ties within and across models remain.
    const b = a.map((v) => Math.round((v + (r() - 0.5) * 0.6) * 4) / 4);
    const pos = y.flatMap((v, i) => (v === 1 ? [i] : []));
    const neg = y.flatMap((v, i) => (v === 0 ? [i] : []));
    const psiOf = (x: number, z: number): number => (x > z ? 1 : x === z ? 0.5 : 0);
    const v10 = (s: number[]): number[] => pos.map((i) => neg.reduce((t, j) => t + psiOf(s[i]!, s[j]!), 0) / neg.length);
    const v01 = (s: number[]): number[] => neg.map((j) => pos.reduce((t, i) => t + psiOf(s[i]!, s[j]!), 0) / pos.length);
    const mean = (x: number[]): number => x.reduce((t, v) => t + v, 0) / x.length;
    const cov = (x: number[], w: number[]): number => {
      const mx = mean(x),
        mw = mean(w);
      return x.reduce((t, v, k) => t + (v - mx) * (w[k]! - mw), 0) / (x.length - 1);
    };
    const [a10, b10, a01, b01] = [v10(a), v10(b), v01(a), v01(b)];
    const s10 = cov(a10, a10) + cov(b10, b10) - 2 * cov(a10, b10);
    const s01 = cov(a01, a01) + cov(b01, b01) - 2 * cov(a01, b01);
    const variance = s10 / pos.length + s01 / neg.length;
    const diff = mean(a10) - mean(b10);
    const z = diff / Math.sqrt(variance);
    const got = delong(a, b, y);
    assert.ok(got !== null);
    close(got.aucA, aucByPairs(a, y), 1e-12, 'aucA');
    close(got.aucB, aucByPairs(b, y), 1e-12, 'aucB');
    close(got.variance, variance, 1e-12, 'variance');
    close(got.z, z, 1e-10, 'z');
    close(got.pValue, 2 * normalCdf(-Math.abs(z)), 1e-10, 'p');
  }
});

test('DeLong degenerate cases', () => {
  // The same scores twice: no difference and no variance.
  const same = delong([0.1, 0.4, 0.35, 0.8], [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]);
  assert.deepEqual(same, { aucA: 0.75, aucB: 0.75, diff: 0, variance: 0, z: 0, pValue: 1 });
  // One positive: the covariance of the structural components is undefined.
  assert.equal(delong([0.1, 0.4, 0.8], [0.2, 0.3, 0.9], [0, 0, 1]), null);
});
