// Performance metrics of a model version over a window of labelled predictions, as pure functions
// (no I/O, no state): ranking (AUC, Gini = 2 AUC - 1, KS), thresholded (confusion,
// accuracy, precision, recall, F1), probabilistic (log loss, Brier), regression (MAE, RMSE, R2,
// MAPE), DeLong's test for two correlated AUCs, and the normal CDF it needs.
//
// Conventions, chosen to equal scikit-learn on the same data except where a note says otherwise:
// - Rows: a classification row counts when its label is exactly 0 or 1 and its score is finite;
//   other rows are skipped (a monitor must never crash on one bad row), and `labelled` says how
//   many were used. Label 1 is the positive class ("bad" in credit risk).
// - Threshold: a score >= threshold is predicted positive, the convention of roc_curve's
//   thresholds. sklearn's LogisticRegression.predict is `proba > 0.5`, so it differs only for
//   scores exactly equal to the threshold.
// - Undefined values are null, never NaN: AUC/KS/Gini when a class is absent, precision with no
//   positive predictions (sklearn's zero_division would give 0), recall with no positives, F1
//   when there are neither positives nor positive predictions, everything on an empty window.
// - All functions are O(n log n) at worst: two typed-array sorts, then linear merges.

type Values = ArrayLike<number>;

export interface Confusion {
  tp: number;
  fp: number;
  tn: number;
  fn: number;
}

export interface ClassificationMetrics {
  auc: number | null;
  ks: number | null;
  gini: number | null;
  accuracy: number | null;
  precision: number | null;
  recall: number | null;
  f1: number | null;
  log_loss: number | null;
  brier: number | null;
  /** Rows used: label 0 or 1 and a finite score. */
  labelled: number;
  positives: number;
  /** Rows scored at or above the threshold: the sample precision is a share of. */
  predictedPositives: number;
}

export interface RegressionMetrics {
  mae: number | null;
  rmse: number | null;
  r2: number | null;
  mape: number | null;
  /** Rows used: both prediction and actual finite. */
  count: number;
}

export interface DeLongResult {
  aucA: number;
  aucB: number;
  /** aucA - aucB. */
  diff: number;
  /** Variance of aucA - aucB from the structural components. */
  variance: number;
  z: number;
  /** Two-sided, from the standard normal distribution. */
  pValue: number;
}

/**
 * scikit-learn's historical log_loss clip (eps=1e-15, the default up to 1.1). Since 1.2 sklearn
 * clips at the dtype's machine epsilon by default (eps="auto", 2.2e-16 for float64; the argument
 * was later deprecated and removed); the two differ only for predictions within 1e-15 of a wrong
 * 0 or 1. Pass Number.EPSILON as logLoss's eps to reproduce the newer behaviour.
 */
export const LOG_LOSS_EPS = 1e-15;

function checkLengths(a: Values, b: Values): void {
  if (a.length !== b.length) throw new RangeError(`length mismatch: ${a.length} vs ${b.length}`);
}

const usable = (score: number, label: number): boolean => (label === 0 || label === 1) && Number.isFinite(score);

const rows = (c: Confusion): number => c.tp + c.fp + c.tn + c.fn;

/** One pass for everything that does not need an order. */
function pointwise(
  scores: Values,
  labels: Values,
  threshold: number,
  eps: number,
): { confusion: Confusion; logLossSum: number; brierSum: number } {
  checkLengths(scores, labels);
  let tp = 0,
    fp = 0,
    tn = 0,
    fn = 0,
    ll = 0,
    br = 0;
  const hi = 1 - eps;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i]!;
    const y = labels[i]!;
    if (!usable(s, y)) continue;
    const p = Math.min(Math.max(s, eps), hi);
    if (y === 1) {
      if (s >= threshold) tp++;
      else fn++;
      ll -= Math.log(p);
      br += (s - 1) * (s - 1);
    } else {
      if (s >= threshold) fp++;
      else tn++;
      // log(1 - p) rather than log1p(-p): per row the same arithmetic as sklearn.
      ll -= Math.log(1 - p);
      br += s * s;
    }
  }
  return { confusion: { tp, fp, tn, fn }, logLossSum: ll, brierSum: br };
}

/** The usable scores of each class, each sorted ascending. */
function splitSorted(scores: Values, labels: Values, positives: number, negatives: number): { pos: Float64Array; neg: Float64Array } {
  const pos = new Float64Array(positives);
  const neg = new Float64Array(negatives);
  let p = 0,
    n = 0;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i]!;
    const y = labels[i]!;
    if (!usable(s, y)) continue;
    if (y === 1) pos[p++] = s;
    else neg[n++] = s;
  }
  // Typed-array sort is numeric without a comparator (and fast): the merge below needs no indices.
  pos.sort();
  neg.sort();
  return { pos, neg };
}

/**
 * AUC and KS in one merge of the two sorted classes, one distinct score value (tie group) at a
 * time, so a tie group moves together as in sklearn's roc_curve. Null when a class is absent.
 */
function rankStats(pos: Float64Array, neg: Float64Array): { auc: number; ks: number } | null {
  const P = pos.length;
  const N = neg.length;
  if (P === 0 || N === 0) return null;
  let i = 0,
    j = 0;
  // 2 x Mann-Whitney U: integer arithmetic, exact while below 2^53.
  let twiceU = 0;
  // max |P * negBelowOrAt - N * posBelowOrAt|, i.e. max |CDF_good - CDF_bad| scaled by P * N.
  let ksScaled = 0;
  while (i < P || j < N) {
    const v = j >= N || (i < P && pos[i]! <= neg[j]!) ? pos[i]! : neg[j]!;
    const posBelow = i;
    const negBelow = j;
    while (i < P && pos[i] === v) i++;
    while (j < N && neg[j] === v) j++;
    twiceU += (i - posBelow) * (2 * negBelow + (j - negBelow));
    const d = Math.abs(P * j - N * i);
    if (d > ksScaled) ksScaled = d;
  }
  return { auc: twiceU / (2 * P * N), ks: ksScaled / (P * N) };
}

function rankStatsOf(scores: Values, labels: Values): { auc: number; ks: number } | null {
  const { confusion: c } = pointwise(scores, labels, 0.5, LOG_LOSS_EPS);
  const { pos, neg } = splitSorted(scores, labels, c.tp + c.fn, c.fp + c.tn);
  return rankStats(pos, neg);
}

/** ROC AUC = P(score of a positive > score of a negative) + P(tie) / 2. Null if a class is absent. */
export function auc(scores: Values, labels: Values): number | null {
  return rankStatsOf(scores, labels)?.auc ?? null;
}

/** 2 * AUC - 1. */
export function gini(scores: Values, labels: Values): number | null {
  const a = auc(scores, labels);
  return a === null ? null : 2 * a - 1;
}

/**
 * Kolmogorov-Smirnov: max over thresholds of |CDF_bad - CDF_good|. Equals max(TPR - FPR) over
 * roc_curve's points whenever positives score higher (the usual case); for an inverted model it
 * reports the size of the separation, as scipy's two-sided ks_2samp does.
 */
export function ks(scores: Values, labels: Values): number | null {
  return rankStatsOf(scores, labels)?.ks ?? null;
}

/** Counts with `score >= threshold` predicted positive. */
export function confusion(scores: Values, labels: Values, threshold = 0.5): Confusion {
  return pointwise(scores, labels, threshold, LOG_LOSS_EPS).confusion;
}

export function accuracy(c: Confusion): number | null {
  return rows(c) === 0 ? null : (c.tp + c.tn) / rows(c);
}

/** tp / (tp + fp); null when nothing is predicted positive. */
export function precision(c: Confusion): number | null {
  return c.tp + c.fp === 0 ? null : c.tp / (c.tp + c.fp);
}

/** tp / (tp + fn); null when there are no positives. */
export function recall(c: Confusion): number | null {
  return c.tp + c.fn === 0 ? null : c.tp / (c.tp + c.fn);
}

/**
 * 2tp / (2tp + fp + fn), the harmonic mean of precision and recall where both exist and 0 when
 * tp = 0 (sklearn's value); null only with neither positives nor positive predictions.
 */
export function f1(c: Confusion): number | null {
  const d = 2 * c.tp + c.fp + c.fn;
  return d === 0 ? null : (2 * c.tp) / d;
}

/** Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps]. Null on no rows. */
export function logLoss(scores: Values, labels: Values, eps = LOG_LOSS_EPS): number | null {
  const { confusion: c, logLossSum } = pointwise(scores, labels, 0.5, eps);
  return rows(c) === 0 ? null : logLossSum / rows(c);
}

/** Mean squared difference between score and label (no clipping, as sklearn). Null on no rows. */
export function brier(scores: Values, labels: Values): number | null {
  const { confusion: c, brierSum } = pointwise(scores, labels, 0.5, LOG_LOSS_EPS);
  return rows(c) === 0 ? null : brierSum / rows(c);
}

/** Every classification metric of a window in two passes and two sorts. */
export function classificationMetrics(scores: Values, labels: Values, threshold = 0.5): ClassificationMetrics {
  const { confusion: c, logLossSum, brierSum } = pointwise(scores, labels, threshold, LOG_LOSS_EPS);
  const positives = c.tp + c.fn;
  const labelled = positives + c.fp + c.tn;
  const { pos, neg } = splitSorted(scores, labels, positives, labelled - positives);
  const r = rankStats(pos, neg);
  return {
    auc: r === null ? null : r.auc,
    ks: r === null ? null : r.ks,
    gini: r === null ? null : 2 * r.auc - 1,
    accuracy: accuracy(c),
    precision: precision(c),
    recall: recall(c),
    f1: f1(c),
    log_loss: labelled === 0 ? null : logLossSum / labelled,
    brier: labelled === 0 ? null : brierSum / labelled,
    labelled,
    positives,
    predictedPositives: c.tp + c.fp,
  };
}

// ---- regression -------------------------------------------------------------------------------

/**
 * MAE, RMSE, R2, MAPE of predictions against actuals. Note the argument order (pred, actual),
 * the reverse of sklearn's (y_true, y_pred). Rows where either value is not finite are skipped.
 * - R2 = 1 - SS_res / SS_tot; null when all actuals are equal (sklearn returns 1.0 or 0.0 there).
 * - MAPE is a fraction, not a percentage, as sklearn's. Rows with actual == 0 are ignored (null
 *   when none remain); sklearn instead divides by max(|y|, machine eps), which makes such rows
 *   dominate with ~1e16 terms. For every non-zero actual the denominator is max(|y|, eps) exactly
 *   as sklearn's, so the two agree whenever no actual is 0.
 */
export function regressionMetrics(pred: Values, actual: Values): RegressionMetrics {
  checkLengths(pred, actual);
  let n = 0,
    sumY = 0,
    absErr = 0,
    sqErr = 0,
    pctErr = 0,
    pctN = 0;
  let minY = Infinity,
    maxY = -Infinity;
  for (let i = 0; i < pred.length; i++) {
    const p = pred[i]!;
    const y = actual[i]!;
    if (!Number.isFinite(p) || !Number.isFinite(y)) continue;
    const e = Math.abs(y - p);
    n++;
    sumY += y;
    absErr += e;
    sqErr += e * e;
    if (y !== 0) {
      pctErr += e / Math.max(Math.abs(y), Number.EPSILON);
      pctN++;
    }
    if (y < minY) minY = y;
    if (y > maxY) maxY = y;
  }
  if (n === 0) return { mae: null, rmse: null, r2: null, mape: null, count: 0 };
  let r2: number | null = null;
  // min === max rather than SS_tot === 0: the mean of equal values can round away from them.
  if (minY !== maxY) {
    const mean = sumY / n;
    let ssTot = 0;
    for (let i = 0; i < pred.length; i++) {
      const p = pred[i]!;
      const y = actual[i]!;
      if (Number.isFinite(p) && Number.isFinite(y)) ssTot += (y - mean) * (y - mean);
    }
    r2 = 1 - sqErr / ssTot;
  }
  return { mae: absErr / n, rmse: Math.sqrt(sqErr / n), r2, mape: pctN === 0 ? null : pctErr / pctN, count: n };
}

export const mae = (pred: Values, actual: Values): number | null => regressionMetrics(pred, actual).mae;
export const rmse = (pred: Values, actual: Values): number | null => regressionMetrics(pred, actual).rmse;
export const r2 = (pred: Values, actual: Values): number | null => regressionMetrics(pred, actual).r2;
export const mape = (pred: Values, actual: Values): number | null => regressionMetrics(pred, actual).mape;

// ---- DeLong -----------------------------------------------------------------------------------

/** Number of elements < x (or <= x) in an ascending array, by bisection. */
function countBelow(sorted: Float64Array, x: number, orEqual: boolean): number {
  let lo = 0,
    hi = sorted.length;
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    if (sorted[m]! < x || (orEqual && sorted[m] === x)) lo = m + 1;
    else hi = m;
  }
  return lo;
}

/**
 * Structural components of one model (DeLong et al. 1988): for each positive, the share of
 * negatives it outranks (ties 1/2); for each negative, the share of positives that outrank it.
 */
function components(pos: Float64Array, neg: Float64Array): { v10: Float64Array; v01: Float64Array } {
  const sp = Float64Array.from(pos).sort();
  const sn = Float64Array.from(neg).sort();
  const P = pos.length;
  const N = neg.length;
  const v10 = new Float64Array(P);
  const v01 = new Float64Array(N);
  for (let i = 0; i < P; i++) {
    const below = countBelow(sn, pos[i]!, false);
    v10[i] = (below + 0.5 * (countBelow(sn, pos[i]!, true) - below)) / N;
  }
  for (let j = 0; j < N; j++) {
    const atOrBelow = countBelow(sp, neg[j]!, true);
    v01[j] = (P - atOrBelow + 0.5 * (atOrBelow - countBelow(sp, neg[j]!, false))) / P;
  }
  return { v10, v01 };
}

/** Sample variance of a - b (denominator m - 1), from which Var(A) + Var(B) - 2 Cov(A, B) follows. */
function varianceOfDifference(a: Float64Array, b: Float64Array): number {
  const m = a.length;
  let mean = 0;
  for (let i = 0; i < m; i++) mean += a[i]! - b[i]!;
  mean /= m;
  let s = 0;
  for (let i = 0; i < m; i++) {
    const d = a[i]! - b[i]! - mean;
    s += d * d;
  }
  return s / (m - 1);
}

const meanOf = (a: Float64Array): number => a.reduce((s, v) => s + v, 0) / a.length;

/**
 * DeLong's test that two scores on the same rows have equal ROC AUC. Rows count when the label is
 * 0 or 1 and both scores are finite. Null when a class has fewer than 2 rows (the covariance of
 * the structural components is undefined). Zero variance gives z = 0 and p = 1 when the AUCs are
 * equal, else z = +-Infinity and p = 0.
 */
export function delong(scoresA: Values, scoresB: Values, labels: Values): DeLongResult | null {
  checkLengths(scoresA, labels);
  checkLengths(scoresB, labels);
  const posA: number[] = [],
    posB: number[] = [],
    negA: number[] = [],
    negB: number[] = [];
  for (let i = 0; i < labels.length; i++) {
    const a = scoresA[i]!,
      b = scoresB[i]!,
      y = labels[i]!;
    if (!usable(a, y) || !Number.isFinite(b)) continue;
    (y === 1 ? posA : negA).push(a);
    (y === 1 ? posB : negB).push(b);
  }
  const P = posA.length;
  const N = negA.length;
  if (P < 2 || N < 2) return null;
  const A = components(Float64Array.from(posA), Float64Array.from(negA));
  const B = components(Float64Array.from(posB), Float64Array.from(negB));
  const aucA = meanOf(A.v10);
  const aucB = meanOf(B.v10);
  const diff = aucA - aucB;
  const variance = varianceOfDifference(A.v10, B.v10) / P + varianceOfDifference(A.v01, B.v01) / N;
  if (!(variance > 0)) return { aucA, aucB, diff, variance: 0, z: diff === 0 ? 0 : Math.sign(diff) * Infinity, pValue: diff === 0 ? 1 : 0 };
  const z = diff / Math.sqrt(variance);
  return { aucA, aucB, diff, variance, z, pValue: erfc(Math.abs(z) / Math.SQRT2) };
}

// ---- normal distribution ----------------------------------------------------------------------

const TWO_OVER_SQRT_PI = 1.1283791670955126; // 2 / sqrt(pi)
const ONE_OVER_SQRT_PI = 0.5641895835477563; // 1 / sqrt(pi)

/** exp(-x^2) without the rounding error of forming x^2 (x = hi + lo with hi^2 exact). */
function expMinusSquare(x: number): number {
  const hi = Math.round(x * 4096) / 4096;
  const lo = x - hi;
  return Math.exp(-hi * hi) * Math.exp(-lo * (x + hi));
}

/**
 * erf(x) for |x| < 2 from the series erf(x) = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (2n+1)!!,
 * whose terms are all positive (no cancellation, unlike the Maclaurin series).
 */
function erfSeries(x: number): number {
  const x2 = 2 * x * x;
  let term = x,
    sum = x;
  for (let n = 0; n < 200; n++) {
    term *= x2 / (2 * n + 3);
    sum += term;
    if (term < 1e-17 * sum) break;
  }
  return TWO_OVER_SQRT_PI * expMinusSquare(x) * sum;
}

/**
 * erfc(x) for x >= 1 from the continued fraction
 * erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))),
 * evaluated by the modified Lentz method (under 200 terms for x >= 1); full relative precision
 * in the tail, where 1 - erf(x) would cancel.
 */
function erfcFraction(x: number): number {
  const tiny = 1e-300;
  let f = x,
    c = x,
    d = 0;
  for (let k = 1; k < 1000; k++) {
    const a = k / 2;
    d = x + a * d;
    d = 1 / (d === 0 ? tiny : d);
    c = x + a / c;
    if (c === 0) c = tiny;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return (ONE_OVER_SQRT_PI * expMinusSquare(x)) / f;
}

/** The error function; relative error about 1e-15 (checked against a 150-digit evaluation). */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  const r = ax < 2 ? erfSeries(ax) : 1 - erfcFraction(ax);
  return x < 0 ? -r : r;
}

/** 1 - erf(x), with relative accuracy about 1e-15 kept in the tails (erfc(10) ~ 2e-45, not 0). */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfc(-x);
  return x < 1 ? 1 - erfSeries(x) : erfcFraction(x);
}

/** Standard normal CDF, Phi(z) = erfc(-z / sqrt 2) / 2. */
export function normalCdf(z: number): number {
  return 0.5 * erfc(-z / Math.SQRT2);
}
