// KernelSHAP (Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions", 2017) for
// models the exact methods cannot read: Shapley values of v(S) = link(mean over background rows b of
// f(x_S, b_rest)) as the weighted least-squares fit of v over coalitions S with the Shapley kernel
// weight, constrained so that the contributions add up to v(all) - v(none) (local accuracy). When
// every coalition fits the budget they are all enumerated and the answer is exact for the
// background. Otherwise the coalition sizes whose every subset fits are enumerated and the rest
// sampled in complementary pairs from the kernel; the standard error of each contribution is the
// delta-method (sandwich) estimate over the sampled pairs. Sampling is seeded by the row, so the
// same row gets the same answer.

import { choleskySolve, choleskyWithRidge } from './linalg.js';

/** The coalitions to evaluate, row-major masks (1 = the feature takes the explained row's value). */
export interface CoalitionPlan {
  readonly features: number;
  readonly count: number;
  readonly masks: Uint8Array;
  /** Regression weight of each coalition; they add up to 1. */
  readonly weights: Float64Array;
  /** The last `sampled` coalitions were drawn (in complementary pairs); the others enumerated. */
  readonly sampled: number;
  /** Kernel mass of the sampled sizes (each sampled coalition weighs sampledMass / sampled). */
  readonly sampledMass: number;
  /** Every coalition enumerated: the values are exact for the background. */
  readonly exact: boolean;
}

export interface KernelOptions {
  /** Coalitions evaluated at most. Default 2M + 2048. */
  readonly maxCoalitions?: number;
  /** Seed of the coalition sampler. */
  readonly seed: number;
}

/** C(n, k) as a float (exact below 2^53). */
function choose(n: number, k: number): number {
  let c = 1;
  for (let i = 1; i <= k; i++) c = (c * (n - k + i)) / i;
  return Math.round(c);
}

/** A small deterministic generator (xorshift32); uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** FNV-1a over the float64 bits of a row: the sampler's seed for that row. */
export function rowSeed(x: ArrayLike<number>): number {
  const view = new DataView(new ArrayBuffer(8));
  let h = 0x811c9dc5;
  for (let j = 0; j < x.length; j++) {
    view.setFloat64(0, x[j]!);
    for (let b = 0; b < 8; b++) h = Math.imul(h ^ view.getUint8(b), 0x01000193) >>> 0;
  }
  return h;
}

/** The Shapley kernel's mass on coalition size k of M, normalised over k = 1..M-1. */
function sizeMass(M: number): Float64Array {
  const mass = new Float64Array(M);
  let total = 0;
  for (let k = 1; k < M; k++) total += mass[k] = (M - 1) / (k * (M - k));
  for (let k = 1; k < M; k++) mass[k]! /= total;
  return mass;
}

/** Which coalitions to evaluate for M features. */
export function planCoalitions(M: number, options: KernelOptions): CoalitionPlan {
  if (!(Number.isSafeInteger(M) && M >= 1)) throw new RangeError(`KernelSHAP needs at least one feature, got ${M}`);
  const budget = Math.max(2, Math.floor(options.maxCoalitions ?? 2 * M + 2048));
  if (M === 1)
    return { features: 1, count: 0, masks: new Uint8Array(0), weights: new Float64Array(0), sampled: 0, sampledMass: 0, exact: true };
  const mass = sizeMass(M);
  const masks: number[][] = [];
  const weights: number[] = [];
  const enumerate = (k: number) => {
    const w = mass[k]! / choose(M, k);
    const idx = Array.from({ length: k }, (_, i) => i);
    for (;;) {
      const mask = new Array<number>(M).fill(0);
      for (const i of idx) mask[i] = 1;
      masks.push(mask);
      weights.push(w);
      let i = k - 1;
      while (i >= 0 && idx[i] === M - k + i) i--;
      if (i < 0) return;
      idx[i]!++;
      for (let j = i + 1; j < k; j++) idx[j] = idx[j - 1]! + 1;
    }
  };
  if (M < 53 && 2 ** M - 2 <= budget) {
    for (let k = 1; k < M; k++) enumerate(k);
    return finish(M, masks, weights, 0, 0, true);
  }
  // Enumerate sizes k and M-k, smallest first, while their subsets cost no more than the budget
  // the kernel would spend on them by sampling; sample the middle sizes.
  let left = budget;
  let restMass = 1;
  let k = 1;
  while (k <= M - k) {
    const pair = k !== M - k;
    const subsets = choose(M, k) * (pair ? 2 : 1);
    const pairMass = mass[k]! + (pair ? mass[M - k]! : 0);
    if (subsets > (left * pairMass) / restMass) break;
    enumerate(k);
    if (pair) enumerate(M - k);
    left -= subsets;
    restMass -= pairMass;
    k++;
  }
  const lo = k;
  const hi = M - k;
  if (lo > hi || restMass <= 1e-12 || left < 2) return finish(M, masks, weights, 0, 0, lo > hi);
  const random = seededRandom(options.seed);
  const pairs = Math.floor(left / 2);
  // Cumulative kernel mass over the sampled sizes.
  const cumulative: number[] = [];
  let acc = 0;
  for (let s = lo; s <= hi; s++) {
    acc += mass[s]!;
    cumulative.push(acc);
  }
  const order = Array.from({ length: M }, (_, i) => i);
  for (let p = 0; p < pairs; p++) {
    const u = random() * acc;
    let s = 0;
    while (s < cumulative.length - 1 && cumulative[s]! <= u) s++;
    const size = lo + s;
    // Partial Fisher-Yates: the first `size` entries of `order` are a uniform subset.
    for (let i = 0; i < size; i++) {
      const j = i + Math.floor(random() * (M - i));
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    const mask = new Array<number>(M).fill(0);
    for (let i = 0; i < size; i++) mask[order[i]!] = 1;
    masks.push(
      mask,
      mask.map((b) => 1 - b),
    );
  }
  const sampled = pairs * 2;
  for (let i = 0; i < sampled; i++) weights.push(restMass / sampled);
  return finish(M, masks, weights, sampled, restMass, false);
}

function finish(M: number, masks: number[][], weights: number[], sampled: number, sampledMass: number, exact: boolean): CoalitionPlan {
  const flat = new Uint8Array(masks.length * M);
  masks.forEach((m, i) => {
    flat.set(m, i * M);
  });
  return { features: M, count: masks.length, masks: flat, weights: Float64Array.from(weights), sampled, sampledMass, exact };
}

export interface KernelFit {
  readonly phi: Float64Array;
  /** Standard error of each contribution from the sampled coalitions (0 when enumerated). */
  readonly standardError: Float64Array;
}

/**
 * The constrained weighted least-squares fit. `values[i]` is v(coalition i) (link applied);
 * `none` = v(no feature) and `all` = v(every feature) of the explained row.
 */
export function solveKernel(plan: CoalitionPlan, values: ArrayLike<number>, none: number, all: number): KernelFit {
  const M = plan.features;
  const delta = all - none;
  if (M === 1) return { phi: Float64Array.of(delta), standardError: new Float64Array(1) };
  const A = new Float64Array(M * M);
  const b = new Float64Array(M);
  const { masks, weights } = plan;
  for (let s = 0; s < plan.count; s++) {
    const w = weights[s]!;
    const y = values[s]! - none;
    const row = s * M;
    for (let i = 0; i < M; i++) {
      if (masks[row + i] === 0) continue;
      b[i]! += w * y;
      for (let j = 0; j <= i; j++) if (masks[row + j] === 1) A[i * M + j]! += w;
    }
  }
  for (let i = 0; i < M; i++) for (let j = i + 1; j < M; j++) A[i * M + j] = A[j * M + i]!;
  const L = choleskyWithRidge(A, M);
  const ones = new Float64Array(M).fill(1);
  const u = choleskySolve(L, M, b);
  const t = choleskySolve(L, M, ones);
  let su = 0;
  let st = 0;
  for (let i = 0; i < M; i++) {
    su += u[i]!;
    st += t[i]!;
  }
  const nu = (su - delta) / st;
  const phi = new Float64Array(M);
  for (let i = 0; i < M; i++) phi[i] = u[i]! - nu * t[i]!;
  return { phi, standardError: standardErrors(plan, values, none, phi, L, t, st) };
}

/**
 * Sandwich estimate: the sampled part of the normal equations is a mean over pairs of
 * g = mass * z (y - z.phi); to first order phi moves by C (its fluctuation), where
 * C = A^-1 - t t^T / (1^T t) keeps the contributions' sum fixed. Var(phi_j) = sum over pairs of
 * (C (g_p - mean g))_j^2 / (n (n - 1)).
 */
function standardErrors(
  plan: CoalitionPlan,
  values: ArrayLike<number>,
  none: number,
  phi: Float64Array,
  L: Float64Array,
  t: Float64Array,
  st: number,
): Float64Array {
  const M = plan.features;
  const se = new Float64Array(M);
  const pairs = plan.sampled / 2;
  if (pairs < 2) return se;
  const first = plan.count - plan.sampled;
  const g = new Float64Array(pairs * M);
  for (let p = 0; p < pairs; p++) {
    for (const s of [first + 2 * p, first + 2 * p + 1]) {
      const row = s * M;
      let fit = 0;
      for (let i = 0; i < M; i++) if (plan.masks[row + i] === 1) fit += phi[i]!;
      const r = (plan.sampledMass * (values[s]! - none - fit)) / 2;
      for (let i = 0; i < M; i++) if (plan.masks[row + i] === 1) g[p * M + i]! += r;
    }
  }
  const mean = new Float64Array(M);
  for (let p = 0; p < pairs; p++) for (let i = 0; i < M; i++) mean[i]! += g[p * M + i]! / pairs;
  const centred = new Float64Array(M);
  for (let p = 0; p < pairs; p++) {
    for (let i = 0; i < M; i++) centred[i] = g[p * M + i]! - mean[i]!;
    const a = choleskySolve(L, M, centred);
    let tc = 0;
    for (let i = 0; i < M; i++) tc += t[i]! * centred[i]!;
    for (let i = 0; i < M; i++) {
      const c = a[i]! - (t[i]! * tc) / st;
      se[i]! += c * c;
    }
  }
  for (let i = 0; i < M; i++) se[i] = Math.sqrt(se[i]! / (pairs * (pairs - 1)));
  return se;
}

/**
 * Rows [first, first + n) of the coalition design, written into `out` at `at` (row-major, M values
 * per row): row r is coalition floor(r / K) with background row r % K, taking the explained row's
 * value where the coalition's mask is 1.
 */
export function writeCoalitionRows(
  out: { [i: number]: number },
  at: number,
  plan: CoalitionPlan,
  x: ArrayLike<number>,
  background: ArrayLike<number>,
  backgroundRows: number,
  first: number,
  n: number,
): void {
  const M = plan.features;
  for (let r = 0; r < n; r++) {
    const g = first + r;
    const s = Math.floor(g / backgroundRows);
    const b = g - s * backgroundRows;
    const mask = s * M;
    const bg = b * M;
    const o = at + r * M;
    for (let j = 0; j < M; j++) out[o + j] = plan.masks[mask + j] === 1 ? x[j]! : background[bg + j]!;
  }
}

/** How the model's score becomes the explained value: itself, or its log-odds. */
export type Link = 'identity' | 'logit';

/** Probabilities are kept this far from 0 and 1 so that their log-odds stay finite. */
const LOGIT_EPSILON = 1e-7;

export function applyLink(link: Link, score: number): number {
  if (link === 'identity') return score;
  const p = Math.min(1 - LOGIT_EPSILON, Math.max(LOGIT_EPSILON, score));
  return Math.log(p / (1 - p));
}

export interface KernelExplanation extends KernelFit {
  /** link(mean score of the background): the base value. */
  readonly base: number;
  /** link(score of the row): base + sum(phi). */
  readonly margin: number;
  readonly plan: CoalitionPlan;
}

/**
 * Explains one row. `coalitionMeans` returns, per coalition of the plan, the model's mean score
 * over the background rows with the coalition's features taken from the row (it runs the model);
 * `score` is the row's own score and `backgroundMean` the background's mean score.
 */
export async function kernelShap(
  M: number,
  score: number,
  backgroundMean: number,
  link: Link,
  coalitionMeans: (plan: CoalitionPlan) => Promise<ArrayLike<number>>,
  options: KernelOptions,
): Promise<KernelExplanation> {
  const plan = planCoalitions(M, options);
  const means = plan.count === 0 ? new Float64Array(0) : await coalitionMeans(plan);
  const values = new Float64Array(plan.count);
  for (let s = 0; s < plan.count; s++) values[s] = applyLink(link, means[s]!);
  const base = applyLink(link, backgroundMean);
  const margin = applyLink(link, score);
  return { ...solveKernel(plan, values, base, margin), base, margin, plan };
}
