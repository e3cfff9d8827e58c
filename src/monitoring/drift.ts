// Drift of a model version's scores and input features against a frozen reference, as
// pure functions plus small streaming counters: type-7 quantiles, the 9 frozen
// decile edges, bin assignment, PSI (CSI is the same per feature) and its band, numeric and
// categorical baselines that round-trip through JSON, and counters with constant work per
// observation that merge, so a window can be kept as per-minute counters and summed.
//
// Conventions:
// - Missing: null, undefined, and any non-finite number (NaN, +-Infinity) for numeric values;
//   null, undefined, NaN and the empty string (an empty CSV cell) for categorical values. Missing
//   values never enter bins or edges; counters report them as a missing rate instead.
// - Shares are over non-missing values only; PSI raises shares below 1e-4 to 1e-4, with no
//   renormalisation, so an empty bin on either side contributes a finite term.
// - Bands: psi < 0.1 stable, 0.1 <= psi <= 0.25 watch, psi > 0.25 significant (both 0.1 and 0.25
//   are watch, matching the alert defaults "PSI > 0.25 critical, 0.1-0.25 warning").

export type PsiBand = 'stable' | 'watch' | 'significant';

/** The quantile levels of the frozen edges, as the doubles nearest 0.1, ..., 0.9 (numpy's [0.1, ..., 0.9]). */
export const EDGE_QUANTILES: readonly number[] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
export const NUMERIC_BINS = EDGE_QUANTILES.length + 1;
export const PSI_FLOOR = 1e-4;

export interface NumericBaseline {
  kind: 'numeric';
  /** 9 nondecreasing edges; bin i holds values with exactly i edges <= value. */
  edges: number[];
  /** 10 shares of the reference's non-missing values. */
  refShares: number[];
}

export interface CategoricalBaseline {
  kind: 'categorical';
  /** Categories seen in the reference, sorted; bin i is categories[i]. */
  categories: string[];
  /** categories.length + 1 shares; the last is "other" (a category the reference never had), 0 in the reference unless capped. */
  refShares: number[];
}

export type DriftBaseline = NumericBaseline | CategoricalBaseline;

export type CategoricalValue = string | number | boolean | null | undefined;

/**
 * Hyndman-Fan type 7 quantile (numpy's default "linear") of ascending values: h = (n - 1) p,
 * interpolated between the neighbours with numpy's lerp (from the upper neighbour when the
 * fraction is >= 0.5): numpy's arithmetic, so edges should match np.quantile's to the last bit (not
 * checked against numpy here: no Python in this environment). NaN for an empty array.
 */
export function quantileType7(sorted: ArrayLike<number>, p: number): number {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`quantile level must be in [0, 1], got ${p}`);
  const n = sorted.length;
  if (n === 0) return NaN;
  const h = (n - 1) * p;
  const lo = Math.floor(h);
  if (lo >= n - 1) return sorted[n - 1]!;
  const g = h - lo;
  const a = sorted[lo]!;
  const b = sorted[lo + 1]!;
  const d = b - a;
  return g >= 0.5 ? b - d * (1 - g) : a + d * g;
}

/** The finite values, sorted ascending. */
function finiteSorted(values: ArrayLike<number | null | undefined>): Float64Array {
  const out = new Float64Array(values.length);
  let n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isFinite(v)) out[n++] = v as number;
  }
  return out.subarray(0, n).sort();
}

/**
 * The 9 frozen edges: type-7 quantiles at 0.1..0.9 of the finite reference values. With few
 * distinct values edges repeat (one value: all 9 equal, so everything below it is bin 0 and
 * everything at or above it bin 9); repeated edges simply leave some bins empty. Throws when the
 * reference has no finite value: there is nothing to freeze.
 */
export function frozenEdges(referenceValues: ArrayLike<number | null | undefined>): number[] {
  const sorted = finiteSorted(referenceValues);
  if (sorted.length === 0) throw new RangeError('cannot freeze drift bins: the reference has no finite values');
  return EDGE_QUANTILES.map((p) => quantileType7(sorted, p));
}

/** Number of edges <= value (0..edges.length). NaN gives 0: route missing values before binning. */
export function binIndex(edges: ArrayLike<number>, value: number): number {
  let i = 0;
  while (i < edges.length && edges[i]! <= value) i++;
  return i;
}

/** counts / total; all zeros when the total is 0. */
export function shares(counts: ArrayLike<number>): number[] {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i]!;
  return Array.from(counts, (c) => (total === 0 ? 0 : c / total));
}

/** sum (cur - ref) ln(cur / ref), each share raised to at least 1e-4, no renormalisation. */
export function psi(refShares: ArrayLike<number>, curShares: ArrayLike<number>): number {
  if (refShares.length !== curShares.length)
    throw new RangeError(`psi: ${refShares.length} reference bins vs ${curShares.length} current bins`);
  let s = 0;
  for (let i = 0; i < refShares.length; i++) {
    const r = Math.max(refShares[i]!, PSI_FLOOR);
    const c = Math.max(curShares[i]!, PSI_FLOOR);
    s += (c - r) * Math.log(c / r);
  }
  return s;
}

/** < 0.1 stable, [0.1, 0.25] watch, > 0.25 significant; null for null or NaN. */
export function band(value: number | null): PsiBand | null {
  if (value === null || Number.isNaN(value)) return null;
  return value < 0.1 ? 'stable' : value <= 0.25 ? 'watch' : 'significant';
}

// ---- baselines --------------------------------------------------------------------------------

export function numericBaseline(referenceValues: ArrayLike<number | null | undefined>): NumericBaseline {
  const edges = frozenEdges(referenceValues);
  const counts = new Float64Array(NUMERIC_BINS);
  for (let i = 0; i < referenceValues.length; i++) {
    const v = referenceValues[i];
    if (Number.isFinite(v)) counts[binIndex(edges, v as number)]!++;
  }
  return { kind: 'numeric', edges, refShares: shares(counts) };
}

/** The category key of a value, or null when it is missing. */
function categoryOf(value: CategoricalValue): string | null {
  if (value === null || value === undefined || value === '') return null;
  if (typeof value === 'number' && Number.isNaN(value)) return null;
  return typeof value === 'string' ? value : String(value);
}

export interface CategoricalBaselineOptions {
  /**
   * Keep at most this many categories, the most frequent (ties by name); the rest of the
   * reference goes to "other". Default: every category seen.
   */
  maxCategories?: number;
}

/** Categories are compared as strings (1 and "1" are the same category). */
export function categoricalBaseline(
  referenceValues: ArrayLike<CategoricalValue>,
  opts: CategoricalBaselineOptions = {},
): CategoricalBaseline {
  const freq = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < referenceValues.length; i++) {
    const k = categoryOf(referenceValues[i]);
    if (k === null) continue;
    freq.set(k, (freq.get(k) ?? 0) + 1);
    total++;
  }
  const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  let categories = [...freq.keys()];
  const max = opts.maxCategories ?? Infinity;
  if (categories.length > max) {
    categories = categories.sort((a, b) => freq.get(b)! - freq.get(a)! || byName(a, b)).slice(0, max);
  }
  categories.sort(byName);
  const kept = categories.reduce((s, c) => s + freq.get(c)!, 0);
  const counts = [...categories.map((c) => freq.get(c)!), total - kept];
  return { kind: 'categorical', categories, refShares: shares(counts) };
}

function isNumberArray(v: unknown, length?: number): v is number[] {
  return Array.isArray(v) && (length === undefined || v.length === length) && v.every((x) => typeof x === 'number' && Number.isFinite(x));
}

/** Validates a baseline read back from JSON (JSON.stringify of a baseline is the other direction). */
export function parseBaseline(json: unknown): DriftBaseline {
  const o = (typeof json === 'string' ? JSON.parse(json) : json) as Record<string, unknown> | null;
  if (o !== null && typeof o === 'object' && o.kind === 'numeric') {
    const { edges, refShares } = o;
    if (
      isNumberArray(edges, EDGE_QUANTILES.length) &&
      isNumberArray(refShares, NUMERIC_BINS) &&
      edges.every((e, i) => i === 0 || edges[i - 1]! <= e)
    ) {
      return { kind: 'numeric', edges: [...edges], refShares: [...refShares] };
    }
    throw new TypeError('numeric baseline needs 9 nondecreasing finite edges and 10 finite refShares');
  }
  if (o !== null && typeof o === 'object' && o.kind === 'categorical') {
    const { categories, refShares } = o;
    if (
      Array.isArray(categories) &&
      categories.every((c) => typeof c === 'string') &&
      new Set(categories).size === categories.length &&
      isNumberArray(refShares, categories.length + 1)
    ) {
      return { kind: 'categorical', categories: [...(categories as string[])], refShares: [...refShares] };
    }
    throw new TypeError('categorical baseline needs distinct string categories and categories.length + 1 finite refShares');
  }
  throw new TypeError('drift baseline must have kind "numeric" or "categorical"');
}

// ---- streaming counters -----------------------------------------------------------------------

export interface DriftCounterJSON {
  counts: number[];
  missing: number;
}

function parseCounterJSON(json: unknown, bins: number): DriftCounterJSON {
  const o = (typeof json === 'string' ? JSON.parse(json) : json) as Record<string, unknown> | null;
  if (
    o === null ||
    typeof o !== 'object' ||
    !isNumberArray(o.counts, bins) ||
    !o.counts.every((c) => c >= 0) ||
    typeof o.missing !== 'number' ||
    !(o.missing >= 0)
  ) {
    throw new TypeError(`drift counter needs ${bins} counts and a missing count`);
  }
  return { counts: o.counts, missing: o.missing };
}

/** What both counters share: bin counts over a fixed baseline, a missing count, PSI against the reference. */
abstract class DriftCounter {
  /** Per-bin counts of non-missing values (Float64: exact to 2^53, no overflow when merging). */
  readonly counts: Float64Array;
  protected missingCount = 0;

  constructor(protected readonly refShares: readonly number[]) {
    this.counts = new Float64Array(refShares.length);
  }

  get missing(): number {
    return this.missingCount;
  }

  /** Non-missing observations. */
  get count(): number {
    let n = 0;
    for (let i = 0; i < this.counts.length; i++) n += this.counts[i]!;
    return n;
  }

  /** PSI of the observed shares against the reference; null before any non-missing value. */
  psi(): number | null {
    return this.count === 0 ? null : psi(this.refShares, shares(this.counts));
  }

  /** missing / all observations; null before any. */
  missingRate(): number | null {
    const all = this.count + this.missingCount;
    return all === 0 ? null : this.missingCount / all;
  }

  reset(): void {
    this.counts.fill(0);
    this.missingCount = 0;
  }

  toJSON(): DriftCounterJSON {
    return { counts: Array.from(this.counts), missing: this.missingCount };
  }

  protected mergeCounts(other: DriftCounter): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += other.counts[i]!;
    this.missingCount += other.missingCount;
  }

  protected load(json: DriftCounterJSON): this {
    this.counts.set(json.counts);
    this.missingCount = json.missing;
    return this;
  }
}

/** PSI/CSI of a numeric value against its frozen edges: 9 comparisons per observation, no branches. */
export class NumericDriftCounter extends DriftCounter {
  private readonly edges: Float64Array;

  constructor(readonly baseline: NumericBaseline) {
    if (baseline.edges.length !== EDGE_QUANTILES.length || baseline.refShares.length !== NUMERIC_BINS) {
      throw new RangeError(`numeric baseline needs ${EDGE_QUANTILES.length} edges and ${NUMERIC_BINS} refShares`);
    }
    super(baseline.refShares);
    this.edges = Float64Array.from(baseline.edges);
  }

  add(value: number | null | undefined): void {
    if (!Number.isFinite(value)) {
      this.missingCount++;
      return;
    }
    // The definition itself, branch-free: a loop that stops at the first edge above the value
    // mispredicts on random data and is slower (bench/monitoring-math.ts; see bench/RESULTS.md).
    const e = this.edges;
    const v = value as number;
    const i =
      +(e[0]! <= v) +
      +(e[1]! <= v) +
      +(e[2]! <= v) +
      +(e[3]! <= v) +
      +(e[4]! <= v) +
      +(e[5]! <= v) +
      +(e[6]! <= v) +
      +(e[7]! <= v) +
      +(e[8]! <= v);
    this.counts[i]!++;
  }

  /** Adds another counter's observations; both must use the same edges. */
  merge(other: NumericDriftCounter): this {
    const a = this.baseline.edges;
    const b = other.baseline.edges;
    if (a.length !== b.length || a.some((e, i) => e !== b[i])) throw new RangeError('cannot merge drift counters with different edges');
    this.mergeCounts(other);
    return this;
  }

  static fromJSON(baseline: NumericBaseline, json: unknown): NumericDriftCounter {
    return new NumericDriftCounter(baseline).load(parseCounterJSON(json, NUMERIC_BINS));
  }
}

/** PSI/CSI of a categorical value: one Map lookup per observation; unseen categories count as "other". */
export class CategoricalDriftCounter extends DriftCounter {
  private readonly index = new Map<string, number>();
  private readonly other: number;

  constructor(readonly baseline: CategoricalBaseline) {
    if (baseline.refShares.length !== baseline.categories.length + 1)
      throw new RangeError('categorical baseline needs categories.length + 1 refShares');
    super(baseline.refShares);
    baseline.categories.forEach((c, i) => {
      this.index.set(c, i);
    });
    this.other = baseline.categories.length;
  }

  add(value: CategoricalValue): void {
    const k = categoryOf(value);
    if (k === null) {
      this.missingCount++;
      return;
    }
    this.counts[this.index.get(k) ?? this.other]!++;
  }

  /**
   * A value already coded as its index in the baseline's categories (how rows of a categorical
   * input are recorded): an index beyond them is "other", NaN (or any non-index) is missing.
   */
  addIndex(index: number): void {
    if (!(index >= 0)) {
      this.missingCount++;
      return;
    }
    this.counts[index < this.other ? Math.floor(index) : this.other]!++;
  }

  /** Adds another counter's observations; both must use the same categories. */
  merge(other: CategoricalDriftCounter): this {
    const a = this.baseline.categories;
    const b = other.baseline.categories;
    if (a !== b && (a.length !== b.length || a.some((c, i) => c !== b[i])))
      throw new RangeError('cannot merge drift counters with different categories');
    this.mergeCounts(other);
    return this;
  }

  static fromJSON(baseline: CategoricalBaseline, json: unknown): CategoricalDriftCounter {
    return new CategoricalDriftCounter(baseline).load(parseCounterJSON(json, baseline.categories.length + 1));
  }
}

// ---- prediction distribution ------------------------------------------------------------------

export interface DistributionSummary {
  count: number;
  mean: number | null;
  /** Population standard deviation (ddof = 0, numpy's default). */
  std: number | null;
  min: number | null;
  p10: number | null;
  p25: number | null;
  p50: number | null;
  p75: number | null;
  p90: number | null;
  max: number | null;
  /** counts[i] holds values in [edges[i], edges[i + 1]), the last bin closed, as numpy.histogram. */
  histogram: { edges: number[]; counts: number[] };
}

export interface DistributionOptions {
  /** Equal-width bins over [min, max] (numpy.histogram(values, bins)); default 10. */
  bins?: number;
  /** Fixed ascending edges instead (e.g. the reference's), values outside them are not counted. */
  edges?: readonly number[];
}

/** Summary of finite values (non-finite ones are ignored); quantiles are type 7. */
export function distributionSummary(values: ArrayLike<number | null | undefined>, opts: DistributionOptions = {}): DistributionSummary {
  const v = finiteSorted(values);
  const n = v.length;
  if (n === 0) {
    const edges = opts.edges ? [...opts.edges] : [];
    const counts = new Array<number>(Math.max(edges.length - 1, 0)).fill(0);
    return {
      count: 0,
      mean: null,
      std: null,
      min: null,
      p10: null,
      p25: null,
      p50: null,
      p75: null,
      p90: null,
      max: null,
      histogram: { edges, counts },
    };
  }
  let sum = 0;
  for (let i = 0; i < n; i++) sum += v[i]!;
  const mean = sum / n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (v[i]! - mean) * (v[i]! - mean);
  const min = v[0]!;
  const max = v[n - 1]!;
  let edges: number[];
  if (opts.edges) {
    edges = [...opts.edges];
  } else {
    const bins = opts.bins ?? 10;
    if (!(Number.isInteger(bins) && bins > 0)) throw new RangeError(`bins must be a positive integer, got ${bins}`);
    // numpy widens a zero-width range to [x - 0.5, x + 0.5].
    const lo = min === max ? min - 0.5 : min;
    const hi = min === max ? max + 0.5 : max;
    const step = (hi - lo) / bins;
    edges = Array.from({ length: bins + 1 }, (_, i) => (i === bins ? hi : lo + i * step));
  }
  const counts = new Array<number>(Math.max(edges.length - 1, 0)).fill(0);
  const last = edges.length - 1;
  if (last >= 1) {
    for (let i = 0; i < n; i++) {
      const x = v[i]!;
      if (x < edges[0]! || x > edges[last]!) continue;
      // Last bin closed: a value equal to the top edge belongs to it.
      const b = x === edges[last] ? last - 1 : binIndex(edges, x) - 1;
      counts[b]!++;
    }
  }
  return {
    count: n,
    mean,
    std: Math.sqrt(ss / n),
    min,
    p10: quantileType7(v, 0.1),
    p25: quantileType7(v, 0.25),
    p50: quantileType7(v, 0.5),
    p75: quantileType7(v, 0.75),
    p90: quantileType7(v, 0.9),
    max,
    histogram: { edges, counts },
  };
}

/** A counter for a baseline of either kind. */
export function driftCounter(baseline: NumericBaseline): NumericDriftCounter;
export function driftCounter(baseline: CategoricalBaseline): CategoricalDriftCounter;
export function driftCounter(baseline: DriftBaseline): NumericDriftCounter | CategoricalDriftCounter;
export function driftCounter(baseline: DriftBaseline): NumericDriftCounter | CategoricalDriftCounter {
  return baseline.kind === 'numeric' ? new NumericDriftCounter(baseline) : new CategoricalDriftCounter(baseline);
}
