// What a deployment watches while traffic moves: per version, the requests, errors, latency and
// scores seen since the current step began (canary) or since the shadow started, and the decisions
// drawn from them: canary analysis (error rate, p99 latency, PSI between the score distributions)
// and shadow agreement (mean absolute difference, PSI between primary and shadow scores).

import { band, frozenEdges, binIndex, psi, shares } from '../monitoring/drift.js';
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
  readonly latency = new LatencyRecorder();
  readonly scores = new Reservoir();
  readonly since = Date.now();

  record(status: number, ms: number, score: number | null): void {
    this.requests++;
    if (status >= 500 || status === 429) this.errors++;
    else this.latency.recordMicros(ms * 1000);
    if (score !== null && Number.isFinite(score)) this.scores.add(score);
  }
}

/** PSI of `current` against `reference` with the reference's decile edges (DESIGN.md section 5). */
export function samplePsi(reference: readonly number[], current: readonly number[]): number | null {
  if (reference.length < 10 || current.length < 10) return null;
  const edges = frozenEdges(reference);
  const count = (xs: readonly number[]) => {
    const c = new Array<number>(10).fill(0);
    for (const x of xs) c[binIndex(edges, x)]!++;
    return c;
  };
  return psi(shares(count(reference)), shares(count(current)));
}

export interface AnalysisPolicy {
  /** Requests each side needs before a verdict. */
  minRequests: number;
  /** Canary error rate may exceed stable's by at most this (absolute). */
  maxErrorRateIncrease: number;
  /** Canary p99 may be at most factor x stable p99 + slack ms. */
  maxP99Factor: number;
  p99SlackMs: number;
  /** PSI between canary and stable scores above this fails. */
  maxScorePsi: number;
}

export const DEFAULT_POLICY: AnalysisPolicy = { minRequests: 50, maxErrorRateIncrease: 0.01, maxP99Factor: 1.5, p99SlackMs: 5, maxScorePsi: 0.25 };

export interface Check {
  readonly name: 'error_rate' | 'p99_latency' | 'score_psi';
  readonly canary: number | null;
  readonly stable: number | null;
  readonly limit: number | null;
  readonly pass: boolean;
}

export interface Analysis {
  readonly verdict: 'pass' | 'fail' | 'insufficient_data';
  readonly checks: readonly Check[];
  readonly canaryRequests: number;
  readonly stableRequests: number;
  readonly at: string;
}

export function analyzeCanary(canary: StepStats, stable: StepStats, policy: AnalysisPolicy = DEFAULT_POLICY): Analysis {
  const at = new Date().toISOString();
  const base = { canaryRequests: canary.requests, stableRequests: stable.requests, at };
  const rate = (s: StepStats) => (s.requests === 0 ? null : s.errors / s.requests);
  const cr = rate(canary);
  const sr = rate(stable) ?? 0;
  // Errors decide even on thin traffic: a canary failing half its requests should not wait.
  const errorLimit = sr + policy.maxErrorRateIncrease;
  const errorCheck: Check = { name: 'error_rate', canary: cr, stable: sr, limit: errorLimit, pass: cr === null || cr <= errorLimit };
  if (canary.requests >= 10 && !errorCheck.pass) return { verdict: 'fail', checks: [errorCheck], ...base };
  if (canary.requests < policy.minRequests || stable.requests < policy.minRequests) {
    return { verdict: 'insufficient_data', checks: [errorCheck], ...base };
  }
  const cp = canary.latency.snapshot().p99_ms;
  const sp = stable.latency.snapshot().p99_ms;
  const p99Limit = sp === null ? null : sp * policy.maxP99Factor + policy.p99SlackMs;
  const latencyCheck: Check = { name: 'p99_latency', canary: cp, stable: sp, limit: p99Limit, pass: cp === null || p99Limit === null || cp <= p99Limit };
  const drift = samplePsi(stable.scores.values, canary.scores.values);
  const psiCheck: Check = { name: 'score_psi', canary: drift, stable: null, limit: policy.maxScorePsi, pass: drift === null || drift <= policy.maxScorePsi };
  const checks = [errorCheck, latencyCheck, psiCheck];
  return { verdict: checks.every((c) => c.pass) ? 'pass' : 'fail', checks, ...base };
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
      band: band(p),
      shadow_errors: this.shadowErrors,
    };
  }
}
