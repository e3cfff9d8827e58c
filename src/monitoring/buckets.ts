// Windowed statistics of one model version: requests, errors, latency (HDR), predictions (count,
// mean, spread, score bins) and drift counters for the score and every input feature. A request
// or prediction touches only the current minute's bucket (constant work); when a minute closes it
// is merged into its hour and into "all". Windows (1h, 24h, 7d, all) are merged on demand.

import { createHash } from 'node:crypto';
import { HdrHistogram, type HdrJSON } from './hdr.js';
import {
  band,
  CategoricalDriftCounter,
  driftCounter,
  EDGE_QUANTILES,
  NumericDriftCounter,
  type DriftBaseline,
  type DriftCounterJSON,
  type NumericBaseline,
  type PsiBand,
} from './drift.js';
import { INSUFFICIENT, psiMinCount } from './sample-size.js';

export type Window = 'all' | '1h' | '24h' | '7d';
export const WINDOWS: readonly Window[] = ['all', '1h', '24h', '7d'];
const MINUTE = 60_000;
const HOUR = 3_600_000;

/** The frozen reference of a version, from its reference data. */
export interface Baselines {
  readonly score: NumericBaseline | null;
  readonly features: readonly { readonly name: string; readonly baseline: DriftBaseline }[];
  readonly referenceAuc: number | null;
  readonly rows: number;
}

type Counter = NumericDriftCounter | CategoricalDriftCounter;

/** Without a reference, scores are still binned (at fixed deciles of [0, 1]) for the distribution chart. */
const FIXED_SCORE_BASELINE: NumericBaseline = { kind: 'numeric', edges: [...EDGE_QUANTILES], refShares: new Array(10).fill(0.1) };

/** The latency histogram of a bucket (microseconds, 2 significant digits): merged views and history use the same shape. */
export function histogram(): HdrHistogram {
  return new HdrHistogram(120_000_000, 2);
}

/** A bucket as another replica reads it back (JSON): every count, sum and histogram, nothing derived. */
export interface BucketJSON {
  requests: number;
  errors: number;
  latency: HdrJSON;
  predictions: number;
  /** Predictions of the positive class (score at or above the threshold; classifiers only). */
  positives: number;
  scoreSum: number;
  scoreSq: number;
  /** null while no finite score was recorded. */
  scoreMin: number | null;
  scoreMax: number | null;
  score: DriftCounterJSON;
  features: DriftCounterJSON[];
}

/**
 * What buckets must share to be merged: the same score edges and feature baselines. Replicas that
 * froze the same reference get the same key, and a bucket kept under another reference is never
 * added to this one's.
 */
export function baselinesKey(b: Baselines | null): string {
  const shape = { score: b?.score ?? FIXED_SCORE_BASELINE, features: (b?.features ?? []).map((f) => [f.name, f.baseline]) };
  return createHash('sha256').update(JSON.stringify(shape)).digest('hex').slice(0, 32);
}

export class Bucket {
  requests = 0;
  errors = 0;
  readonly latency = histogram();
  predictions = 0;
  positives = 0;
  scoreSum = 0;
  scoreSq = 0;
  scoreMin = Infinity;
  scoreMax = -Infinity;
  readonly score: NumericDriftCounter;
  readonly features: Counter[];

  constructor(b: Baselines | null) {
    this.score = driftCounter(b?.score ?? FIXED_SCORE_BASELINE);
    this.features = (b?.features ?? []).map((f) => driftCounter(f.baseline));
  }

  merge(o: Bucket): void {
    this.requests += o.requests;
    this.errors += o.errors;
    if (o.latency.totalCount > 0) this.latency.add(o.latency);
    this.predictions += o.predictions;
    this.positives += o.positives;
    this.scoreSum += o.scoreSum;
    this.scoreSq += o.scoreSq;
    if (o.scoreMin < this.scoreMin) this.scoreMin = o.scoreMin;
    if (o.scoreMax > this.scoreMax) this.scoreMax = o.scoreMax;
    this.score.merge(o.score as never);
    for (let i = 0; i < this.features.length; i++) (this.features[i] as NumericDriftCounter).merge(o.features[i] as never);
  }

  toJSON(): BucketJSON {
    return {
      requests: this.requests,
      errors: this.errors,
      latency: this.latency.toJSON(),
      predictions: this.predictions,
      positives: this.positives,
      scoreSum: this.scoreSum,
      scoreSq: this.scoreSq,
      scoreMin: Number.isFinite(this.scoreMin) ? this.scoreMin : null,
      scoreMax: Number.isFinite(this.scoreMax) ? this.scoreMax : null,
      score: this.score.toJSON(),
      features: this.features.map((f) => f.toJSON()),
    };
  }

  /**
   * Adds a bucket another replica stored under the same baselines (baselinesKey). Anything that
   * does not fit (another shape, a bad number) throws before a count is changed.
   */
  mergeJSON(json: unknown, b: Baselines | null): void {
    const o = json as Partial<BucketJSON> | null;
    const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
    if (
      o === null ||
      typeof o !== 'object' ||
      !num(o.requests) ||
      !num(o.errors) ||
      !num(o.predictions) ||
      !num(o.positives) ||
      !num(o.scoreSum) ||
      !num(o.scoreSq) ||
      !(o.scoreMin === null || num(o.scoreMin)) ||
      !(o.scoreMax === null || num(o.scoreMax)) ||
      !Array.isArray(o.features) ||
      o.features.length !== this.features.length
    )
      throw new TypeError('not a monitoring bucket of this reference');
    const other = new Bucket(b);
    other.latency.addJSON(o.latency);
    (other as { score: NumericDriftCounter }).score = NumericDriftCounter.fromJSON(this.score.baseline, o.score);
    const features = other.features;
    for (let i = 0; i < features.length; i++) {
      const f = features[i]!;
      features[i] =
        f instanceof CategoricalDriftCounter
          ? CategoricalDriftCounter.fromJSON(f.baseline, o.features[i])
          : NumericDriftCounter.fromJSON((f as NumericDriftCounter).baseline, o.features[i]);
    }
    other.requests = o.requests!;
    other.errors = o.errors!;
    other.predictions = o.predictions!;
    other.positives = o.positives!;
    other.scoreSum = o.scoreSum!;
    other.scoreSq = o.scoreSq!;
    other.scoreMin = o.scoreMin ?? Infinity;
    other.scoreMax = o.scoreMax ?? -Infinity;
    this.merge(other);
  }
}

export type DriftBand = PsiBand | typeof INSUFFICIENT;

/**
 * One PSI with its sample: `n` current (non-missing) values in the window, `min_n` the values it
 * needs (null: the reference is too small for any number to be enough). Below min_n the band is
 * insufficient_data whatever the PSI; band null means there is no reference to compare with.
 */
export interface DriftFigure {
  psi: number | null;
  band: DriftBand | null;
  n: number;
  min_n: number | null;
}

export interface DriftView {
  score: DriftFigure;
  features: Record<string, DriftFigure & { missing_rate: number | null }>;
}

/** Whether a drift figure may be acted on: a reference, a value, and at least its minimum sample. */
export const driftSpeaks = (f: DriftFigure): boolean => f.psi !== null && f.band !== null && f.band !== INSUFFICIENT;

export class WindowedStats {
  private minute: Bucket;
  private minuteStart: number;
  private hour: Bucket;
  private hourStart: number;
  private readonly minutes: { start: number; bucket: Bucket }[] = [];
  private readonly hours: { start: number; bucket: Bucket }[] = [];
  private readonly all: Bucket;
  /** A classifier's decision threshold: predictions at or above it count as the positive class (null: regression). */
  threshold: number | null = null;
  /** Called with each closed minute (history points, sharing with other replicas). */
  onMinute: ((start: number, minute: Bucket) => void) | null = null;
  /** Called with each closed hour (sharing with other replicas). */
  onHour: ((start: number, hour: Bucket) => void) | null = null;
  /** Per feature: whether its baseline is categorical (its values come as category indices). */
  private readonly categorical: readonly boolean[];
  private refKey: string | null = null;

  private frozen: Baselines | null;

  constructor(baselines: Baselines | null, now = Date.now()) {
    this.frozen = baselines;
    this.categorical = (baselines?.features ?? []).map((f) => f.baseline.kind === 'categorical');
    this.minute = new Bucket(baselines);
    this.hour = new Bucket(baselines);
    this.all = new Bucket(baselines);
    this.minuteStart = now - (now % MINUTE);
    this.hourStart = now - (now % HOUR);
  }

  /** The bucket requests and predictions go to now (rotating when a minute has passed). */
  current(now: number): Bucket {
    if (now >= this.minuteStart + MINUTE) this.rotate(now);
    return this.minute;
  }

  private rotate(now: number): void {
    const closed = this.minute;
    const start = this.minuteStart;
    this.hour.merge(closed);
    this.all.merge(closed);
    this.minutes.push({ start, bucket: closed });
    while (this.minutes.length > 0 && this.minutes[0]!.start < now - HOUR) this.minutes.shift();
    this.onMinute?.(start, closed);
    if (now >= this.hourStart + HOUR) {
      this.hours.push({ start: this.hourStart, bucket: this.hour });
      this.onHour?.(this.hourStart, this.hour);
      while (this.hours.length > 0 && this.hours[0]!.start < now - 7 * 24 * HOUR) this.hours.shift();
      this.hour = new Bucket(this.baselines);
      this.hourStart = now - (now % HOUR);
    }
    this.minute = new Bucket(this.baselines);
    this.minuteStart = now - (now % MINUTE);
  }

  recordRequest(now: number, error: boolean, micros: number | null): void {
    const b = this.current(now);
    b.requests++;
    if (error) b.errors++;
    if (micros !== null) b.latency.recordValue(micros < 1 ? 1 : micros);
  }

  /**
   * One scored row: its score and, when the model has named features, its input values; a
   * categorical feature's value is its index in the reference's categories (NaN: missing).
   */
  recordPrediction(now: number, score: number, row: ArrayLike<number> | null, offset: number): void {
    const b = this.current(now);
    b.predictions++;
    if (this.threshold !== null && score >= this.threshold) b.positives++;
    if (Number.isFinite(score)) {
      b.scoreSum += score;
      b.scoreSq += score * score;
      if (score < b.scoreMin) b.scoreMin = score;
      if (score > b.scoreMax) b.scoreMax = score;
    }
    b.score.add(score);
    if (row !== null) {
      const f = b.features;
      const categorical = this.categorical;
      for (let i = 0; i < f.length; i++) {
        if (categorical[i]) (f[i] as CategoricalDriftCounter).addIndex(row[offset + i]!);
        else (f[i] as NumericDriftCounter).add(row[offset + i]);
      }
    }
  }

  /** The frozen reference the windows count against. */
  get baselines(): Baselines | null {
    return this.frozen;
  }

  /**
   * Takes a reference with the same bins (the same key: another replica froze the same rows, or
   * its row count or AUC changed) without restarting the windows; false when its bins differ.
   */
  adopt(b: Baselines | null): boolean {
    if (baselinesKey(b) !== this.key) return false;
    this.frozen = b;
    return true;
  }

  /** The baselines' key (baselinesKey): buckets of other replicas are merged only under the same one. */
  get key(): string {
    if (this.refKey === null) this.refKey = baselinesKey(this.baselines);
    return this.refKey;
  }

  /**
   * The open minute and the open hour (its closed minutes and the open one merged) as they stand:
   * what a replica shares with the others, replaced at every share until they close.
   */
  open(now: number): { minute: { start: number; bucket: Bucket }; hour: { start: number; bucket: Bucket } } {
    const minute = this.current(now);
    const hour = new Bucket(this.baselines);
    hour.merge(this.hour);
    hour.merge(minute);
    return { minute: { start: this.minuteStart, bucket: minute }, hour: { start: this.hourStart, bucket: hour } };
  }

  /** The window merged into one bucket (the open minute and hour included). */
  view(window: Window, now = Date.now()): Bucket {
    this.current(now);
    const out = new Bucket(this.baselines);
    if (window === 'all') {
      out.merge(this.all);
    } else if (window === '1h') {
      for (const m of this.minutes) if (m.start >= now - HOUR) out.merge(m.bucket);
    } else {
      const span = window === '24h' ? 24 * HOUR : 7 * 24 * HOUR;
      for (const h of this.hours) if (h.start >= now - span) out.merge(h.bucket);
      out.merge(this.hour);
    }
    out.merge(this.minute);
    return out;
  }

  /** Drift of a window against the reference; `minPsi` is the effective sample a PSI needs (sample-size.ts). */
  drift(b: Bucket, minPsi: number): DriftView {
    const rows = this.baselines?.rows ?? 0;
    const figure = (c: Counter, refShares: readonly number[] | null): DriftFigure => {
      const n = c.count;
      if (refShares === null) return { psi: null, band: null, n, min_n: null };
      const psi = n > 0 ? c.psi() : null;
      const min = psiMinCount(refShares, rows, minPsi);
      return { psi, band: min === null || n < min ? INSUFFICIENT : band(psi), n, min_n: min };
    };
    const features: DriftView['features'] = {};
    (this.baselines?.features ?? []).forEach((f, i) => {
      const c = b.features[i]!;
      features[f.name] = { ...figure(c, f.baseline.refShares), missing_rate: c.count + c.missing > 0 ? c.missingRate() : null };
    });
    return { score: figure(b.score, this.baselines?.score?.refShares ?? null), features };
  }
}
