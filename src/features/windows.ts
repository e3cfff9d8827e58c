// Sliding-window aggregation for realtime features: the bucket math shared by the in-process
// WindowStore (below) and the Redis store (one hash per series, a field per bucket), the compact
// encodings of a bucket, and the rule that decides which buckets a window reads.
//
// Time is cut into epoch-aligned buckets of a width chosen per window (window / 60, whole seconds,
// at least 1 s), so every replica agrees on bucket boundaries. Each bucket keeps
// {count, sum, min, max} of the values of the events that fell in it.
//
// Boundary rule: a window of length W read at time `now` covers [now - W, now]. It includes every
// bucket [start, start + width) that overlaps that interval: start + width > now - W and
// start <= now. The oldest, partially covered bucket is included whole, so a read may count events
// up to one bucket width older than now - W: windows are exact to one bucket width. Events of an
// accepted future timestamp (within the skew) that land in a bucket starting after `now` are not
// read until that bucket begins; those in the bucket containing `now` are read at once.
//
// Hybrid features read with a lower bound `sinceMs` (the offline value's timestamp): the lower
// edge becomes max(now - W, sinceMs) under the same overlap rule, so events up to one bucket width
// before sinceMs may be counted again on top of the offline value.

export type Aggregation = 'count' | 'sum' | 'mean' | 'min' | 'max';
export const AGGREGATIONS: readonly Aggregation[] = ['count', 'sum', 'mean', 'min', 'max'];

export const BUCKETS_PER_WINDOW = 60;
export const MIN_BUCKET_MS = 1000;
/** Default tolerance for event timestamps ahead of this process's clock. */
export const DEFAULT_MAX_FUTURE_SKEW_MS = 5000;

/** window / 60 rounded down to whole seconds, at least 1 s: 5m -> 5 s, 1h -> 1 min, 24h -> 24 min, 90d -> 36 h. */
export function bucketWidthMs(windowMs: number): number {
  return Math.max(MIN_BUCKET_MS, Math.floor(windowMs / BUCKETS_PER_WINDOW / 1000) * 1000);
}

/** Start of the bucket of width `widthMs` that contains `timestampMs`. */
export const bucketStart = (timestampMs: number, widthMs: number): number => Math.floor(timestampMs / widthMs) * widthMs;

/** Start of the bucket that holds `timestampMs` in the series of a window of `windowMs`. */
export const bucketOf = (timestampMs: number, windowMs: number): number => bucketStart(timestampMs, bucketWidthMs(windowMs));

/** How long a bucket can still be read by a window of `windowMs` (e.g. a Redis key's expiry). */
export const retentionMs = (windowMs: number): number => windowMs + bucketWidthMs(windowMs);

/** The boundary rule above, for one bucket. `lowerMs` is now - window (or the hybrid lower edge). */
export const bucketIncluded = (startMs: number, widthMs: number, nowMs: number, lowerMs: number): boolean =>
  startMs + widthMs > lowerMs && startMs <= nowMs;

// ---- one bucket ---------------------------------------------------------------------------

export interface Aggregate {
  count: number;
  sum: number;
  min: number;
  max: number;
}

export const emptyAggregate = (): Aggregate => ({ count: 0, sum: 0, min: Infinity, max: -Infinity });

export function addValue(a: Aggregate, value: number): void {
  a.count += 1;
  a.sum += value;
  if (value < a.min) a.min = value;
  if (value > a.max) a.max = value;
}

export function mergeAggregate(into: Aggregate, from: Aggregate): void {
  into.count += from.count;
  into.sum += from.sum;
  if (from.min < into.min) into.min = from.min;
  if (from.max > into.max) into.max = from.max;
}

/** `count,sum,min,max` in JavaScript's shortest round-trip number form (readable by Lua's tonumber). */
export const encodeAggregate = (a: Aggregate): string => `${a.count},${a.sum},${a.min},${a.max}`;

/** Inverse of encodeAggregate; null for anything malformed. */
export function decodeAggregate(text: string): Aggregate | null {
  const parts = text.split(',');
  if (parts.length !== 4) return null;
  const count = Number(parts[0]);
  const sum = Number(parts[1]);
  const min = Number(parts[2]);
  const max = Number(parts[3]);
  if (!Number.isSafeInteger(count) || count < 1 || !Number.isFinite(sum) || !(min <= max)) return null;
  if (!Number.isFinite(min) || !Number.isFinite(max) || parts.some((p) => p.trim() === '')) return null;
  return { count, sum, min, max };
}

/** A bucket's start as a hash field: seconds since the epoch in base 36 (widths are whole seconds). */
export const encodeBucketField = (startMs: number): string => Math.floor(startMs / 1000).toString(36);

export function decodeBucketField(field: string): number | null {
  if (!/^[0-9a-z]{1,10}$/.test(field)) return null;
  return parseInt(field, 36) * 1000;
}

// ---- a window over buckets ------------------------------------------------------------------

/** Folded buckets of one read; `finish` turns them into the aggregation's value. */
interface Fold {
  count: number;
  sum: number;
  min: number;
  max: number;
}

function finish(f: Fold, aggregation: Aggregation): number | null {
  switch (aggregation) {
    case 'count':
      return f.count;
    case 'sum':
      return f.sum;
    case 'mean':
      return f.count === 0 ? null : f.sum / f.count;
    case 'min':
      return f.count === 0 ? null : f.min;
    case 'max':
      return f.count === 0 ? null : f.max;
  }
}

/**
 * Aggregates the buckets of one series (written with the width of `windowMs`) that the boundary
 * rule includes. count and sum of no events are 0; mean, min and max of no events are null.
 */
export function aggregateWindow(
  buckets: Iterable<readonly [number, Aggregate]>,
  nowMs: number,
  windowMs: number,
  aggregation: Aggregation,
  sinceMs = -Infinity,
): number | null {
  const width = bucketWidthMs(windowMs);
  const lower = Math.max(nowMs - windowMs, sinceMs);
  const f: Fold = emptyAggregate();
  for (const [start, a] of buckets) if (bucketIncluded(start, width, nowMs, lower)) mergeAggregate(f, a);
  return finish(f, aggregation);
}

export type EventTimeVerdict = 'accept' | 'future' | 'expired' | 'invalid';

/**
 * What to do with an event at `tsMs`: `future` beyond now + skew (rejected: the sender's clock or
 * data is wrong, answer 400), `expired` when no registered window can read its bucket any more
 * (ignored: accepted but not stored, since it cannot change any aggregate), `invalid` when not a
 * finite number.
 */
export function classifyEventTime(tsMs: number, nowMs: number, longestWindowMs: number, maxFutureSkewMs: number): EventTimeVerdict {
  if (!Number.isFinite(tsMs)) return 'invalid';
  if (tsMs > nowMs + maxFutureSkewMs) return 'future';
  const width = bucketWidthMs(longestWindowMs);
  return bucketStart(tsMs, width) + width <= nowMs - longestWindowMs ? 'expired' : 'accept';
}

/** A series of events: the event type, or `event.field` when values of a field are aggregated. */
export const streamName = (event: string, field: string | null): string => (field ? `${event}.${field}` : event);

/** `entity:id:stream`. The stream is the part after the last ':' (stream names hold no ':'). */
export const windowKey = (entity: string, id: string, stream: string): string => `${entity}:${id}:${stream}`;

// ---- in-process store -------------------------------------------------------------------------

interface SeriesSpec {
  widthMs: number;
  /** Longest registered window that uses this width: buckets older than it are dropped. */
  windowMs: number;
}

interface Series extends SeriesSpec {
  buckets: Map<number, Aggregate>;
  /** Smallest bucket start held (Infinity when empty), so pruning only scans when it can drop something. */
  oldest: number;
}

export type AddResult = 'added' | 'future' | 'expired' | 'invalid' | 'unregistered';

function prune(s: Series, nowMs: number): void {
  const lower = nowMs - s.windowMs;
  if (!(s.oldest + s.widthMs <= lower)) return;
  let oldest = Infinity;
  for (const start of s.buckets.keys()) {
    if (start + s.widthMs <= lower) s.buckets.delete(start);
    else if (start < oldest) oldest = start;
  }
  s.oldest = oldest;
}

/**
 * Realtime windows held in this process (when no Redis is configured), with the semantics of
 * aggregateWindow(). Register every (stream, window) first; each key then holds one series per
 * distinct bucket width of its stream, pruned on every add to the buckets its longest window can
 * read: at most (window + skew) / width + 2 buckets per series, however many events arrive.
 * Keys of entities that go quiet are dropped by prune(), which the owner calls periodically.
 */
export class WindowStore {
  readonly maxFutureSkewMs: number;
  readonly #specs = new Map<string, SeriesSpec[]>();
  readonly #keys = new Map<string, Series[]>();

  readonly #stream: string | null;

  /**
   * With `stream`, the store holds that one stream and its keys are plain entity ids (no key to
   * build per read: the in-process feature store keeps one such store per entity and stream).
   */
  constructor(options: { maxFutureSkewMs?: number; stream?: string } = {}) {
    this.maxFutureSkewMs = options.maxFutureSkewMs ?? DEFAULT_MAX_FUTURE_SKEW_MS;
    this.#stream = options.stream ?? null;
  }

  #streamOf(key: string): string {
    return this.#stream ?? streamOf(key);
  }

  register(stream: string, windowMs: number): void {
    if (!(windowMs >= MIN_BUCKET_MS) || !Number.isFinite(windowMs)) throw new RangeError(`window must be >= 1000 ms, got ${windowMs}`);
    const specs = this.#specs.get(stream) ?? [];
    const widthMs = bucketWidthMs(windowMs);
    const spec = specs.find((s) => s.widthMs === widthMs);
    if (!spec) specs.push({ widthMs, windowMs });
    else if (windowMs > spec.windowMs) spec.windowMs = windowMs;
    this.#specs.set(stream, specs);
    // Series of existing keys follow a longer window from their next add on.
    for (const [key, series] of this.#keys) {
      if (this.#streamOf(key) !== stream) continue;
      for (const s of series) if (s.widthMs === widthMs) s.windowMs = Math.max(s.windowMs, windowMs);
    }
  }

  /** Adds one event of `value` (1 for plain counts) at `tsMs` to every series of the key's stream. */
  add(key: string, tsMs: number, value = 1, nowMs = Date.now()): AddResult {
    const specs = this.#specs.get(this.#streamOf(key));
    if (!specs) return 'unregistered';
    if (!Number.isFinite(value)) return 'invalid';
    let longest = 0;
    for (const s of specs) if (s.windowMs > longest) longest = s.windowMs;
    const verdict = classifyEventTime(tsMs, nowMs, longest, this.maxFutureSkewMs);
    if (verdict !== 'accept') return verdict;

    let series = this.#keys.get(key);
    if (!series) {
      series = [];
      this.#keys.set(key, series);
    }
    for (const spec of specs) {
      let s = series.find((x) => x.widthMs === spec.widthMs);
      if (!s) {
        s = { widthMs: spec.widthMs, windowMs: spec.windowMs, buckets: new Map(), oldest: Infinity };
        series.push(s);
      }
      prune(s, nowMs);
      const start = bucketStart(tsMs, s.widthMs);
      // A shorter series may already be past this event even when the longest one is not.
      if (start + s.widthMs <= nowMs - s.windowMs) continue;
      let a = s.buckets.get(start);
      if (!a) {
        a = emptyAggregate();
        s.buckets.set(start, a);
        if (start < s.oldest) s.oldest = start;
      }
      addValue(a, value);
    }
    return 'added';
  }

  /**
   * Puts back a bucket kept elsewhere (a durable copy) into the series of `widthMs`, replacing what
   * that bucket held. Buckets of widths the stream does not use are ignored (false).
   */
  restore(key: string, widthMs: number, startMs: number, a: Aggregate): boolean {
    const spec = this.#specs.get(this.#streamOf(key))?.find((x) => x.widthMs === widthMs);
    if (!spec) return false;
    let series = this.#keys.get(key);
    if (!series) {
      series = [];
      this.#keys.set(key, series);
    }
    let s = series.find((x) => x.widthMs === widthMs);
    if (!s) {
      s = { widthMs, windowMs: spec.windowMs, buckets: new Map(), oldest: Infinity };
      series.push(s);
    }
    s.buckets.set(startMs, { ...a });
    if (startMs < s.oldest) s.oldest = startMs;
    return true;
  }

  /** The aggregation over [now - window, now] (and after `sinceMs`, for hybrid features). */
  read(key: string, nowMs: number, windowMs: number, aggregation: Aggregation, sinceMs = -Infinity): number | null {
    const widthMs = bucketWidthMs(windowMs);
    const series = this.#keys.get(key);
    const f: Fold = emptyAggregate();
    // Checked only when the key has data: a key without events answers the empty aggregate cheaply.
    const s = series?.find((x) => x.widthMs === widthMs);
    if (series !== undefined && (s === undefined || s.windowMs < windowMs)) {
      throw new RangeError(`window of ${windowMs} ms is not registered for stream '${this.#streamOf(key)}'`);
    }
    if (s) {
      const lower = Math.max(nowMs - windowMs, sinceMs);
      for (const [start, a] of s.buckets) if (bucketIncluded(start, widthMs, nowMs, lower)) mergeAggregate(f, a);
    }
    return finish(f, aggregation);
  }

  /** Drops expired buckets everywhere and keys left empty; returns how many keys were dropped. */
  prune(nowMs = Date.now()): number {
    let dropped = 0;
    for (const [key, series] of this.#keys) {
      let held = 0;
      for (const s of series) {
        prune(s, nowMs);
        held += s.buckets.size;
      }
      if (held === 0) {
        this.#keys.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  get keyCount(): number {
    return this.#keys.size;
  }

  /** Buckets held for a key across its series (what bounds its memory). */
  bucketCount(key: string): number {
    let n = 0;
    for (const s of this.#keys.get(key) ?? []) n += s.buckets.size;
    return n;
  }

  /** The buckets of one series, oldest first (for tests and for copying into Redis). */
  buckets(key: string, windowMs: number): [number, Aggregate][] {
    const s = this.#keys.get(key)?.find((x) => x.widthMs === bucketWidthMs(windowMs));
    return s ? [...s.buckets].sort((a, b) => a[0] - b[0]).map(([k, a]) => [k, { ...a }]) : [];
  }
}

const streamOf = (key: string): string => key.slice(key.lastIndexOf(':') + 1);
