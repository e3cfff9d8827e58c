// What a deployment watches while traffic moves: per version, the requests, errors, latency and
// scores seen since the current step began (canary) or since the shadow started, and the decisions
// drawn from them: canary analysis and shadow agreement.
//
// Canary analysis judges the canary against what it should be, never against the stable version's
// scores: a better model of another family is expected to score differently. Each check speaks
// only when its sample is large enough for the statistic, and until every check can speak the
// verdict is `insufficient_data`:
// - error_rate: a one-sided exact binomial test of "the canary's error rate is at most stable's +
//   maxErrorRateIncrease" (p < ERROR_ALPHA fails at once, however few requests: a canary failing
//   every request is rolled back after a handful). Passing needs minRequests and an observed rate
//   within the limit.
// - p99_latency: the limit is stable's p99 x maxP99Factor + p99SlackMs (stable needs MIN_P99_SAMPLES
//   successful requests, so that its p99 is a p99 and not its maximum). A canary no slower than
//   stable exceeds it no more often than stable does, so the check compares the two versions'
//   counts of slow observations: given K in all, the canary's share of them is binomial with its
//   share of the observations (stable's count is taken as at least 1% of its own, what the limit
//   allows it). The observation is the batch (its slowest request), not the request: the requests of
//   one batch share its fate, so counting them one by one would turn one pause of a busy machine
//   into twenty "independent" slow canary requests. A pause slows both versions, which this
//   conditional test discounts and a test against a fixed 1% would not. Comparing the two p99s
//   directly would not do either: on a canary of 150 requests p99 is its second-largest latency,
//   while stable's comes from many more, so chance alone rolls back a good canary about one time in
//   ten. p < ERROR_ALPHA fails; p >= 0.05 passes (with minRequests); in between the check waits.
// - score_psi: the canary's live scores against its own frozen drift reference (the rows scored when
//   the version was registered or retrained). Under no shift, n * PSI is about chi-square with 9
//   degrees of freedom (for n live scores against a reference of m rows, (1/n + 1/m)^-1 * PSI), so
//   the check waits for the n at which PSI > maxScorePsi by chance alone has probability below
//   1e-4 (psiMinSample). A canary without a reference has no score check, and the answer says so.

import { band, binIndex, frozenEdges, psi, shares } from '../monitoring/drift.js';
import { LatencyRecorder } from '../monitoring/latency.js';

/** Uniform sample of up to `size` values (Vitter's algorithm R), so memory stays fixed. */
export class Reservoir {
  readonly values: number[] = [];
  seen = 0;
  constructor(private readonly size = 5000) {}
  add(v: number): void {
    this.seen++;
    if (this.values.length < this.size) this.values.push(v);
    else {
      const j = Math.floor(Math.random() * this.seen);
      if (j < this.size) this.values[j] = v;
    }
  }
}

export class StepStats {
  requests = 0;
  errors = 0;
  /** Every successful request's latency. */
  readonly latency = new LatencyRecorder();
  /**
   * One latency per batch: the slowest request of each. Requests that ride in one batch share its
   * fate (a slow run, a pause of the thread that ran it), so for the latency test a batch is one
   * observation, not as many as it has requests.
   */
  private readonly units = new LatencyRecorder();
  private unit: object | null = null;
  private unitMax = 0;
  readonly scores = new Reservoir();
  readonly since = Date.now();

  /** One answered request; `batch` identifies the batch it rode in (its result), when there was one. */
  record(status: number, ms: number, score: number | null, batch?: object): void {
    this.requests++;
    if (status >= 500 || status === 429) this.errors++;
    else {
      this.latency.recordMicros(ms * 1000);
      if (batch === undefined) this.units.recordMicros(ms * 1000);
      else if (batch === this.unit) this.unitMax = Math.max(this.unitMax, ms);
      else {
        this.closeUnit();
        this.unit = batch;
        this.unitMax = ms;
      }
    }
    if (score !== null && Number.isFinite(score)) this.scores.add(score);
  }

  private closeUnit(): void {
    if (this.unit !== null) this.units.recordMicros(this.unitMax * 1000);
    this.unit = null;
  }

  /** Per-batch latencies so far (the open batch included). */
  batches(): LatencyRecorder {
    this.closeUnit();
    return this.units;
  }
}

/** 0.9999 quantile of chi-square with 9 degrees of freedom (10 bins). */
const CHI2_9_Q9999 = 33.72;
/** Significance of the error-rate test. */
export const ERROR_ALPHA = 0.001;
/** Successful requests each side needs before p99 latencies are compared. */
export const MIN_P99_SAMPLES = 100;
/** The latency test passes at p >= this (no sign of a slower canary); between it and ERROR_ALPHA it waits. */
const LATENCY_PASS_P = 0.05;

/**
 * The smallest current sample at which PSI (10 bins) against a reference of `referenceRows` values
 * exceeds `limit` by sampling noise alone with probability below 1e-4; Infinity when the reference
 * itself is too small for that limit.
 */
export function psiMinSample(limit: number, referenceRows: number): number {
  const room = limit - CHI2_9_Q9999 / referenceRows;
  return room <= 0 ? Infinity : Math.ceil(CHI2_9_Q9999 / room);
}

/**
 * P(X >= k) for X ~ Binomial(n, p): the one-sided p-value of k errors in n requests when the true
 * rate is p. Summed from k upward in log space; 1 when k is at or below the mean (never significant).
 */
export function binomialUpperTail(k: number, n: number, p: number): number {
  if (k <= 0) return 1;
  if (k > n) return 0;
  if (p <= 0) return 0;
  if (p >= 1) return 1;
  if (k <= n * p) return 1;
  const lp = Math.log(p);
  const lq = Math.log1p(-p);
  // log C(n, k) via lgamma-free recurrence is O(k); use the log-gamma approximation instead.
  let term = logChoose(n, k) + k * lp + (n - k) * lq;
  let sum = 0;
  for (let i = k; i <= n; i++) {
    const t = Math.exp(term);
    sum += t;
    if (t < sum * 1e-15) break;
    // term(i+1) / term(i) = (n - i) / (i + 1) * p / q
    term += Math.log((n - i) / (i + 1)) + lp - lq;
  }
  return Math.min(1, sum);
}

function logChoose(n: number, k: number): number {
  return logGamma(n + 1) - logGamma(k + 1) - logGamma(n - k + 1);
}

/** Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 relative for x > 0. */
function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  x -= 1;
  let a = c[0]!;
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i]! / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** A version's expected score distribution: the bins frozen from its reference rows. */
export interface ScoreReference {
  readonly edges: readonly number[];
  readonly refShares: readonly number[];
  /** Reference rows the bins came from. */
  readonly rows: number;
}

/** PSI of `current` values in the reference's frozen bins. */
export function psiAgainst(reference: ScoreReference, current: readonly number[]): number {
  const counts = new Array<number>(reference.refShares.length).fill(0);
  for (const x of current) counts[binIndex(reference.edges, x)]!++;
  return psi(reference.refShares, shares(counts));
}

/** PSI between two samples with the first one's decile edges, or null below the minimum sample for `limit`. */
export function samplePsi(reference: readonly number[], current: readonly number[], limit = 0.25): number | null {
  if (current.length < psiMinSample(limit, reference.length)) return null;
  const edges = frozenEdges(reference);
  const count = (xs: readonly number[]) => {
    const c = new Array<number>(10).fill(0);
    for (const x of xs) c[binIndex(edges, x)]!++;
    return c;
  };
  return psi(shares(count(reference)), shares(count(current)));
}

export interface AnalysisPolicy {
  /** Requests each side needs before a passing verdict. */
  minRequests: number;
  /** Canary error rate may exceed stable's by at most this (absolute). */
  maxErrorRateIncrease: number;
  /** Canary p99 may be at most factor x stable p99 + slack ms. */
  maxP99Factor: number;
  p99SlackMs: number;
  /** PSI of the canary's live scores against its own reference above this fails. */
  maxScorePsi: number;
}

export const DEFAULT_POLICY: AnalysisPolicy = {
  minRequests: 50,
  maxErrorRateIncrease: 0.01,
  maxP99Factor: 1.5,
  p99SlackMs: 5,
  maxScorePsi: 0.25,
};

export interface Check {
  readonly name: 'error_rate' | 'p99_latency' | 'score_psi';
  readonly canary: number | null;
  /** What the canary is compared with: stable's rate or p99; for score_psi null (the reference is the canary's own). */
  readonly stable: number | null;
  readonly limit: number | null;
  /** Observations behind the canary's figure, and how many the check needs before it may speak. */
  readonly n: number;
  readonly needed: number;
  /** pass, fail, or not yet judged (insufficient data) / not judged at all (unavailable). */
  readonly result: 'pass' | 'fail' | 'insufficient_data' | 'unavailable';
  /** The binomial test's p-value (error_rate, p99_latency). */
  readonly pValue?: number;
  /** p99_latency: canary batches slower than the limit, of `batches`. */
  readonly above?: number;
  readonly batches?: number;
  /** Why a check is unavailable or waiting. */
  readonly note?: string;
}

export interface Analysis {
  readonly verdict: 'pass' | 'fail' | 'insufficient_data';
  readonly checks: readonly Check[];
  readonly canaryRequests: number;
  readonly stableRequests: number;
  readonly at: string;
}

/** Canary analysis: see the head of this file for what each check does and when it may speak. */
export function analyzeCanary(
  canary: StepStats,
  stable: StepStats,
  policy: AnalysisPolicy = DEFAULT_POLICY,
  reference: ScoreReference | null = null,
): Analysis {
  const at = new Date().toISOString();
  const base = { canaryRequests: canary.requests, stableRequests: stable.requests, at };

  const cr = canary.requests === 0 ? null : canary.errors / canary.requests;
  const sr = stable.requests === 0 ? 0 : stable.errors / stable.requests;
  const errorLimit = Math.min(1, sr + policy.maxErrorRateIncrease);
  const pValue = binomialUpperTail(canary.errors, canary.requests, errorLimit);
  const errorResult: Check['result'] =
    pValue < ERROR_ALPHA
      ? 'fail'
      : canary.requests < policy.minRequests || stable.requests < policy.minRequests || cr! > errorLimit
        ? 'insufficient_data'
        : 'pass';
  const errorCheck: Check = {
    name: 'error_rate',
    canary: cr,
    stable: sr,
    limit: errorLimit,
    n: canary.requests,
    needed: policy.minRequests,
    result: errorResult,
    pValue,
  };

  const cl = canary.latency.snapshot();
  const sl = stable.latency.snapshot();
  let latencyCheck: Check;
  if (sl.count < MIN_P99_SAMPLES) {
    latencyCheck = {
      name: 'p99_latency',
      canary: cl.p99_ms,
      stable: sl.p99_ms,
      limit: null,
      n: cl.count,
      needed: policy.minRequests,
      result: 'insufficient_data',
      note: `stable has ${sl.count} of the ${MIN_P99_SAMPLES} successful requests its p99 needs`,
    };
  } else {
    const limit = sl.p99_ms! * policy.maxP99Factor + policy.p99SlackMs;
    const cb = canary.batches();
    const sb = stable.batches();
    const cu = cb.snapshot().count;
    const su = sb.snapshot().count;
    const above = cb.countAboveMs(limit);
    const stableAbove = Math.max(sb.countAboveMs(limit), Math.ceil(0.01 * su));
    const p = binomialUpperTail(above, above + stableAbove, cu / Math.max(1, cu + su));
    const result: Check['result'] =
      p < ERROR_ALPHA ? 'fail' : cl.count < policy.minRequests || p < LATENCY_PASS_P ? 'insufficient_data' : 'pass';
    latencyCheck = {
      name: 'p99_latency',
      canary: cl.p99_ms,
      stable: sl.p99_ms,
      limit,
      n: cl.count,
      needed: policy.minRequests,
      result,
      pValue: p,
      above,
      batches: cu,
    };
  }

  let psiCheck: Check;
  const scores = canary.scores.values;
  if (reference === null) {
    psiCheck = {
      name: 'score_psi',
      canary: null,
      stable: null,
      limit: policy.maxScorePsi,
      n: scores.length,
      needed: 0,
      result: 'unavailable',
      note: 'the canary version has no drift reference, so its scores have no expected distribution to be judged against',
    };
  } else {
    const needed = psiMinSample(policy.maxScorePsi, reference.rows);
    if (needed === Infinity) {
      psiCheck = {
        name: 'score_psi',
        canary: null,
        stable: null,
        limit: policy.maxScorePsi,
        n: scores.length,
        needed: 0,
        result: 'unavailable',
        note: `the canary's reference has only ${reference.rows} rows, too few to judge PSI at ${policy.maxScorePsi}`,
      };
    } else {
      const value = scores.length >= needed ? psiAgainst(reference, scores) : null;
      const result: Check['result'] = value === null ? 'insufficient_data' : value <= policy.maxScorePsi ? 'pass' : 'fail';
      psiCheck = { name: 'score_psi', canary: value, stable: null, limit: policy.maxScorePsi, n: scores.length, needed, result };
    }
  }

  const checks = [errorCheck, latencyCheck, psiCheck];
  const verdict = checks.some((c) => c.result === 'fail')
    ? 'fail'
    : checks.some((c) => c.result === 'insufficient_data')
      ? 'insufficient_data'
      : 'pass';
  return { verdict, checks, ...base };
}

/** Shadow agreement: how far the shadow's scores are from the primary's on the same requests. */
export class Agreement {
  pairs = 0;
  absDiffSum = 0;
  shadowErrors = 0;
  readonly primaryScores = new Reservoir();
  readonly shadowScores = new Reservoir();

  add(primary: number, shadow: number): void {
    this.pairs++;
    this.absDiffSum += Math.abs(primary - shadow);
    this.primaryScores.add(primary);
    this.shadowScores.add(shadow);
  }

  summary() {
    const p = samplePsi(this.primaryScores.values, this.shadowScores.values);
    return {
      pairs: this.pairs,
      mean_abs_diff: this.pairs === 0 ? null : this.absDiffSum / this.pairs,
      score_psi: p,
      band: p === null ? 'insufficient_data' : band(p),
      psi_min_pairs: psiMinSample(0.25, this.primaryScores.values.length),
      shadow_errors: this.shadowErrors,
    };
  }
}
