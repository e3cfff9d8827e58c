// What a deployment watches while traffic moves: per version, the requests, errors, latency and
// scores seen since the current step began (canary) or since the shadow started, and the decisions
// drawn from them: canary analysis and shadow agreement. With replicas sharing a store, each
// replica's StepStats of a step are shared and added up (StepStats.toJSON, fromJSON, add: counts and
// histograms add, scores are counted in the canary reference's bins), so the analysis judges the
// traffic of every replica exactly as if one process had served it.
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
import type { HdrJSON } from '../monitoring/hdr.js';
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

/**
 * A version's statistics of one step as a replica shares them: every count and histogram, nothing
 * derived, so that the replicas' parts add up to exactly what one process serving all of the
 * traffic would hold.
 */
export interface StepStatsJSON {
  requests: number;
  errors: number;
  latency: HdrJSON;
  units: HdrJSON;
  /** The slowest request of the batch still open, ms (null: none): a unit of its own once shared. */
  openUnitMs: number | null;
  /** Finite scores recorded. */
  scores: number;
  /** Scores counted per bin of `edges` (the version's frozen reference); null while the edges are unknown. */
  bins: { edges: number[]; counts: number[] } | null;
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
  /** Finite scores recorded. */
  scores = 0;
  /**
   * The scores as counts per bin of the version's frozen reference edges: all the score check needs,
   * exact, fixed in size, and adding up across replicas (a sample of the scores would not). Scores
   * recorded before the reference is known here are in `scores` but not in the bins.
   */
  private edges: readonly number[] | null = null;
  private bins: number[] | null = null;
  readonly since = Date.now();

  /** `edgesOf`: the version's reference edges, or null while it has none (asked again until it has). */
  constructor(private readonly edgesOf: () => readonly number[] | null = () => null) {}

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
    if (score !== null && Number.isFinite(score)) {
      this.scores++;
      if (this.bind()) this.bins![binIndex(this.edges!, score)]!++;
    }
  }

  /** Whether the score bins are set up; until then the edges are asked for at every score. */
  private bind(): boolean {
    if (this.bins !== null) return true;
    const edges = this.edgesOf();
    if (edges === null) return false;
    this.edges = edges;
    this.bins = new Array<number>(edges.length + 1).fill(0);
    return true;
  }

  /** The score counts per bin of `edges`, or null when the scores were not counted on exactly those edges. */
  scoreBins(edges: readonly number[]): readonly number[] | null {
    this.bind();
    return this.bins !== null && sameEdges(this.edges!, edges) ? this.bins : null;
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

  /** What another replica needs to add these statistics to its own exactly. */
  toJSON(): StepStatsJSON {
    return {
      requests: this.requests,
      errors: this.errors,
      latency: this.latency.toJSON(),
      units: this.units.toJSON(),
      // Shared without closing it: more requests of the batch may still come, and they belong to the same unit.
      openUnitMs: this.unit === null ? null : this.unitMax,
      scores: this.scores,
      bins: this.bins === null ? null : { edges: [...this.edges!], counts: [...this.bins] },
    };
  }

  /** Statistics another replica shared (toJSON); throws a TypeError on anything else. */
  static fromJSON(json: unknown): StepStats {
    const o = json as Partial<StepStatsJSON> | null;
    const count = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0;
    const b = o?.bins;
    const binsOk =
      b === null ||
      (typeof b === 'object' &&
        b !== undefined &&
        Array.isArray(b.edges) &&
        Array.isArray(b.counts) &&
        b.edges.every((e, i) => typeof e === 'number' && Number.isFinite(e) && (i === 0 || e >= b.edges[i - 1]!)) &&
        b.counts.length === b.edges.length + 1 &&
        b.counts.every(count));
    if (
      o === null ||
      typeof o !== 'object' ||
      !count(o.requests) ||
      !count(o.errors) ||
      o.errors > o.requests ||
      !count(o.scores) ||
      !(o.openUnitMs === null || (typeof o.openUnitMs === 'number' && o.openUnitMs >= 0)) ||
      !binsOk
    )
      throw new TypeError('not the statistics of a canary step');
    const s = new StepStats();
    s.latency.addJSON(o.latency);
    s.units.addJSON(o.units);
    if (o.openUnitMs !== null && o.openUnitMs !== undefined) s.units.recordMicros(o.openUnitMs * 1000);
    s.requests = o.requests;
    s.errors = o.errors;
    s.scores = o.scores;
    if (b !== null && b !== undefined) {
      s.edges = [...b.edges];
      s.bins = [...b.counts];
    }
    return s;
  }

  /**
   * Adds another part of the same step's traffic (another replica's, or this one's live figures):
   * counts and histograms add, an open batch counts as one unit. Score bins add only when kept on
   * the same edges as these; scores binned on others stay in `scores` and out of the bins.
   */
  add(o: StepStats): void {
    this.requests += o.requests;
    this.errors += o.errors;
    this.latency.add(o.latency);
    this.units.add(o.units);
    if (o.unit !== null) this.units.recordMicros(o.unitMax * 1000);
    this.scores += o.scores;
    if (o.bins === null) return;
    if (!this.bind()) {
      this.edges = o.edges;
      this.bins = new Array<number>(o.bins.length).fill(0);
    }
    if (!sameEdges(this.edges!, o.edges!)) return;
    for (let i = 0; i < o.bins.length; i++) this.bins![i]! += o.bins[i]!;
  }

  /** One StepStats holding every part (`edgesOf`: the edges its score bins are kept on). */
  static merged(parts: readonly StepStats[], edgesOf: () => readonly number[] | null = () => null): StepStats {
    const m = new StepStats(edgesOf);
    for (const p of parts) m.add(p);
    return m;
  }
}

function sameEdges(a: readonly number[], b: readonly number[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
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
  /** Replica processes whose traffic the statistics hold (absent in analyses recorded before replicas shared them). */
  readonly replicas?: number;
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
  if (reference === null) {
    psiCheck = {
      name: 'score_psi',
      canary: null,
      stable: null,
      limit: policy.maxScorePsi,
      n: canary.scores,
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
        n: canary.scores,
        needed: 0,
        result: 'unavailable',
        note: `the canary's reference has only ${reference.rows} rows, too few to judge PSI at ${policy.maxScorePsi}`,
      };
    } else {
      const bins = canary.scoreBins(reference.edges);
      let n = 0;
      for (const c of bins ?? []) n += c;
      const value = bins !== null && n >= needed ? psi(reference.refShares, shares(bins)) : null;
      const result: Check['result'] = value === null ? 'insufficient_data' : value <= policy.maxScorePsi ? 'pass' : 'fail';
      // Scores recorded before a replica knew the reference (or kept on other edges) are not in the sample: say so.
      const left = canary.scores - n;
      psiCheck = {
        name: 'score_psi',
        canary: value,
        stable: null,
        limit: policy.maxScorePsi,
        n,
        needed,
        result,
        ...(left > 0
          ? { note: `${left} scores are not in the sample: recorded before the reference was known, or kept on other bins` }
          : {}),
      };
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
