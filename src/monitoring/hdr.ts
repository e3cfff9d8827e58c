// An HDR histogram (Gil Tene's log-linear layout: unit resolution up to 2 * 10^digits, then each
// power of two split into the same number of sub-buckets) specialised for what scoreline records:
// non-negative latencies in microseconds, lowest discernible value 1. Same buckets and the same
// percentile rule as the HdrHistogram implementations (hdr-histogram-js answers identically: see
// test/hdr.test.ts), but recording is a Math.clz32 and an array increment instead of log2/pow
// calls, which matters on the request path (two records per request); bench/monitoring-math.ts
// measures both (see bench/RESULTS.md).
// Counts are float64 (exact to 2^53, so an all-time histogram cannot overflow). Values above the
// highest trackable value are counted in the last bucket rather than thrown.

/** A histogram as stored: the indexes of non-empty sub-buckets and their counts, and the exact totals. */
export interface HdrJSON {
  at: number[];
  n: number[];
  total: number;
  sum: number;
  max: number;
  min: number | null;
}

export class HdrHistogram {
  private readonly counts: Float64Array;
  private readonly subBucketCount: number;
  private readonly halfCount: number;
  private readonly halfMag: number;
  totalCount = 0;
  /** Largest and smallest values recorded, as given. */
  maxValue = 0;
  minNonZeroValue = Number.MAX_SAFE_INTEGER;
  private sum = 0;

  constructor(
    readonly highestTrackableValue: number,
    readonly significantDigits: 1 | 2 | 3 | 4 = 3,
  ) {
    const largestUnit = 2 * 10 ** significantDigits;
    const subBucketCountMagnitude = Math.ceil(Math.log2(largestUnit));
    this.halfMag = Math.max(subBucketCountMagnitude, 1) - 1;
    this.subBucketCount = 2 ** (this.halfMag + 1);
    this.halfCount = this.subBucketCount / 2;
    // Buckets needed to reach highestTrackableValue, as HdrHistogram sizes them.
    let smallestUntrackable = this.subBucketCount;
    let buckets = 1;
    while (smallestUntrackable <= highestTrackableValue) {
      if (smallestUntrackable > Number.MAX_SAFE_INTEGER / 2) {
        buckets++;
        break;
      }
      smallestUntrackable *= 2;
      buckets++;
    }
    this.counts = new Float64Array((buckets + 1) * this.halfCount);
  }

  /** The counts-array index of a value (>= 0). */
  private indexOf(value: number): number {
    if (value < this.subBucketCount) return value < 0 ? 0 : Math.floor(value);
    let bucket: number;
    let sub: number;
    if (value < 2147483648) {
      const v = value | 0;
      bucket = 31 - Math.clz32(v) - this.halfMag;
      sub = v >>> bucket;
    } else {
      bucket = Math.floor(Math.log2(value)) - this.halfMag;
      sub = Math.floor(value / 2 ** bucket);
    }
    const i = ((bucket + 1) << this.halfMag) + (sub - this.halfCount);
    return i < this.counts.length ? i : this.counts.length - 1;
  }

  recordValue(value: number): void {
    this.counts[this.indexOf(value)]!++;
    this.totalCount++;
    this.sum += value;
    if (value > this.maxValue) this.maxValue = value;
    if (value < this.minNonZeroValue && value !== 0) this.minNonZeroValue = value;
  }

  /** The smallest value of the sub-bucket at an index. */
  private valueFromIndex(i: number): number {
    let bucket = Math.floor(i / this.halfCount) - 1;
    let sub = (i % this.halfCount) + this.halfCount;
    if (bucket < 0) {
      sub -= this.halfCount;
      bucket = 0;
    }
    return sub * 2 ** bucket;
  }

  /**
   * The value at or below which `percentile` % of the recorded values fall, reported as the highest
   * value equivalent to it (the lowest, for percentile 0); 0 when empty.
   */
  getValueAtPercentile(percentile: number): number {
    if (this.totalCount === 0) return 0;
    const p = Math.min(percentile, 100);
    const fp = (p / 100) * this.totalCount;
    // Round up, without letting a 1-ulp error of the product skip a count.
    const ulp = fp > 0 ? 2 ** (Math.floor(Math.log2(fp)) - 52) : 0;
    const target = Math.max(Math.ceil(fp - ulp), 1);
    let seen = 0;
    const counts = this.counts;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i]!;
      if (seen >= target) {
        const low = this.valueFromIndex(i);
        if (percentile === 0) return low;
        const bucket = Math.max(Math.floor(i / this.halfCount) - 1, 0);
        return low + 2 ** bucket - 1;
      }
    }
    return 0;
  }

  /** Recorded values above `value`: those in sub-buckets that start above the one `value` falls in. */
  countAbove(value: number): number {
    let n = 0;
    const counts = this.counts;
    for (let i = this.indexOf(value) + 1; i < counts.length; i++) n += counts[i]!;
    return n;
  }

  /** Exact mean of the recorded values (not bucket midpoints). */
  get mean(): number {
    return this.totalCount === 0 ? 0 : this.sum / this.totalCount;
  }

  /** Adds another histogram of the same shape. */
  add(o: HdrHistogram): void {
    if (o.counts.length !== this.counts.length || o.halfCount !== this.halfCount) throw new RangeError('histograms of different shapes');
    const a = this.counts;
    const b = o.counts;
    for (let i = 0; i < a.length; i++) if (b[i] !== 0) a[i]! += b[i]!;
    this.totalCount += o.totalCount;
    this.sum += o.sum;
    if (o.maxValue > this.maxValue) this.maxValue = o.maxValue;
    if (o.minNonZeroValue < this.minNonZeroValue) this.minNonZeroValue = o.minNonZeroValue;
  }

  /** The counts as sparse pairs with the totals: what another process needs to rebuild the histogram exactly. */
  toJSON(): HdrJSON {
    const at: number[] = [];
    const n: number[] = [];
    const c = this.counts;
    for (let i = 0; i < c.length; i++)
      if (c[i] !== 0) {
        at.push(i);
        n.push(c[i]!);
      }
    return { at, n, total: this.totalCount, sum: this.sum, max: this.maxValue, min: this.totalCount === 0 ? null : this.minNonZeroValue };
  }

  /** Adds what toJSON() of a histogram of the same shape wrote; throws on anything else, changing nothing. */
  addJSON(json: unknown): void {
    const o = json as Partial<HdrJSON> | null;
    const c = this.counts;
    const ok =
      o !== null &&
      typeof o === 'object' &&
      Array.isArray(o.at) &&
      Array.isArray(o.n) &&
      o.at.length === o.n.length &&
      o.at.every((i) => Number.isInteger(i) && i >= 0 && i < c.length) &&
      o.n.every((k) => typeof k === 'number' && k >= 0 && Number.isFinite(k)) &&
      typeof o.total === 'number' &&
      typeof o.sum === 'number' &&
      typeof o.max === 'number' &&
      (o.min === null || typeof o.min === 'number');
    if (!ok) throw new TypeError('not a histogram of this shape');
    for (let k = 0; k < o.at!.length; k++) c[o.at![k]!]! += o.n![k]!;
    this.totalCount += o.total!;
    this.sum += o.sum!;
    if (o.max! > this.maxValue) this.maxValue = o.max!;
    if (o.min !== null && o.min! < this.minNonZeroValue) this.minNonZeroValue = o.min!;
  }

  reset(): void {
    this.counts.fill(0);
    this.totalCount = 0;
    this.sum = 0;
    this.maxValue = 0;
    this.minNonZeroValue = Number.MAX_SAFE_INTEGER;
  }
}
