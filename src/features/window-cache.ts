// Realtime window series of a shared store (Redis), held in the native L1 cache next to the stored
// groups, so that a request whose groups and windows are all cached needs no round trip.
//
// A snapshot is the buckets of one series (entity id, stream, bucket width) as the store held them
// when it was read, stamped with that time. Windows are aggregated from it at request time, so
// buckets age out of a window exactly as in the store. What a snapshot can miss is events written
// after it was read: those this replica writes are applied to it as soon as the store acknowledges
// them; those other replicas write are seen when the snapshot expires (the L1 TTL) and is read again.
// A write whose outcome is unknown (timed out) or that the store reports as a duplicate drops the
// snapshot instead, since it cannot tell whether the event is already in it.
//
// Layout (little-endian f64 throughout, so a snapshot is read through one Float64Array):
//   [0] format (1)   [1] epoch ms when the store was read   [2] bucket count n
//   then n x (bucket start ms, count, sum, min, max), in no particular order

import type { NativeCache } from './native-cache.js';
import type { StreamSpec } from './plan.js';
import type { EventRecord } from './store.js';
import { bucketIncluded, bucketStart, bucketWidthMs, retentionMs, type Aggregate, type Aggregation } from './windows.js';

const FORMAT = 1;
const HEADER = 3;
const STRIDE = 5;

/** The L1 key of a series snapshot; group keys end in `:v<version>`, these in `@<width>`. */
export const seriesCacheKey = (entity: string, id: string, stream: string, widthMs: number): string =>
  `${entity}:${id}:${stream}@${widthMs}`;

/** Snapshot bytes of buckets read at `readAt` (epoch ms). */
export function encodeSnapshot(buckets: readonly (readonly [number, Aggregate])[], readAt: number): Uint8Array {
  const f = new Float64Array(HEADER + STRIDE * buckets.length);
  f[0] = FORMAT;
  f[1] = readAt;
  f[2] = buckets.length;
  let at = HEADER;
  for (const [start, a] of buckets) {
    f[at] = start;
    f[at + 1] = a.count;
    f[at + 2] = a.sum;
    f[at + 3] = a.min;
    f[at + 4] = a.max;
    at += STRIDE;
  }
  return new Uint8Array(f.buffer);
}

/** A Float64Array over snapshot bytes (copied when not 8-byte aligned); null when malformed. */
export function snapshotView(bytes: Uint8Array): Float64Array | null {
  if (bytes.byteLength < 8 * HEADER || bytes.byteLength % 8 !== 0) return null;
  const f =
    (bytes.byteOffset & 7) === 0
      ? new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8)
      : new Float64Array(bytes.slice().buffer);
  if (f[0] !== FORMAT || f.length !== HEADER + STRIDE * f[2]!) return null;
  return f;
}

/**
 * Whether `length` bytes at f64 index `at` of `f` (a view of a shared read buffer) hold a snapshot;
 * one is then read in place with `at`.
 */
export function snapshotAtValid(f: Float64Array, at: number, length: number): boolean {
  return length >= 8 * HEADER && length % 8 === 0 && f[at] === FORMAT && length / 8 === HEADER + STRIDE * f[at + 2]!;
}

/** When the store was read (epoch ms); `at`: where the snapshot starts in `f`. */
export const snapshotReadAt = (f: Float64Array, at = 0): number => f[at + 1]!;

/**
 * The aggregation over [now - window, now] (after `sinceMs` for hybrids) under the boundary rule
 * of windows.ts; the same answer aggregateWindow() gives for the buckets the snapshot holds.
 */
export function aggregateSnapshot(
  f: Float64Array,
  nowMs: number,
  windowMs: number,
  aggregation: Aggregation,
  sinceMs = -Infinity,
  at0 = 0,
): number | null {
  const width = bucketWidthMs(windowMs);
  const lower = Math.max(nowMs - windowMs, sinceMs);
  let count = 0;
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  const end = at0 + HEADER + STRIDE * f[at0 + 2]!;
  for (let at = at0 + HEADER; at < end; at += STRIDE) {
    if (!bucketIncluded(f[at]!, width, nowMs, lower)) continue;
    count += f[at + 1]!;
    sum += f[at + 2]!;
    if (f[at + 3]! < min) min = f[at + 3]!;
    if (f[at + 4]! > max) max = f[at + 4]!;
  }
  switch (aggregation) {
    case 'count':
      return count;
    case 'sum':
      return sum;
    case 'mean':
      return count === 0 ? null : sum / count;
    case 'min':
      return count === 0 ? null : min;
    case 'max':
      return count === 0 ? null : max;
  }
}

/**
 * A snapshot with one more event of `value` at `tsMs` in its bucket, without the buckets no window
 * of the series can read any more at `nowMs` (older than `retention`). Keeps the read time.
 */
export function addToSnapshot(f: Float64Array, tsMs: number, value: number, widthMs: number, retention: number, nowMs: number): Uint8Array {
  const start = bucketStart(tsMs, widthMs);
  const n = f[2]!;
  const out: [number, Aggregate][] = [];
  let found = false;
  for (let i = 0, at = HEADER; i < n; i++, at += STRIDE) {
    const s = f[at]!;
    if (s + widthMs <= nowMs - retention) continue;
    const a = { count: f[at + 1]!, sum: f[at + 2]!, min: f[at + 3]!, max: f[at + 4]! };
    if (s === start) {
      a.count += 1;
      a.sum += value;
      if (value < a.min) a.min = value;
      if (value > a.max) a.max = value;
      found = true;
    }
    out.push([s, a]);
  }
  if (!found) out.push([start, { count: 1, sum: value, min: value, max: value }]);
  return encodeSnapshot(out, f[1]!);
}

export interface WindowCacheOptions {
  cache: NativeCache;
  /** How long a snapshot serves: the longest other replicas' events can go unseen. */
  ttlMs: number;
  streams: readonly StreamSpec[];
  /**
   * How long after a local write a read sent before it may still come back (the store's command
   * timeout, with margin): such a read may lack the write, so it is not cached.
   */
  inFlightMs: number;
}

/** Series snapshots in the L1 cache, and the local writes that keep them current. */
export class WindowCache {
  readonly ttlMs: number;
  readonly #cache: NativeCache;
  /** `entity:stream` -> the bucket widths (and their retention) the stream is kept at. */
  readonly #widths = new Map<string, { widthMs: number; retentionMs: number }[]>();
  /** Series key -> performance.now() of the last local write to it (kept for inFlightMs). */
  readonly #written = new Map<string, number>();
  readonly #inFlightMs: number;
  #pruneAt = 0;

  constructor(opts: WindowCacheOptions) {
    this.#cache = opts.cache;
    this.ttlMs = opts.ttlMs;
    this.#inFlightMs = opts.inFlightMs;
    for (const s of opts.streams) {
      const byWidth = new Map<number, number>();
      for (const w of s.windowsMs) byWidth.set(bucketWidthMs(w), Math.max(byWidth.get(bucketWidthMs(w)) ?? 0, retentionMs(w)));
      this.#widths.set(
        `${s.entity}:${s.stream}`,
        [...byWidth].map(([widthMs, r]) => ({ widthMs, retentionMs: r })),
      );
    }
  }

  /** The L1 key of the series a window reads. */
  key(w: { readonly entity: string; readonly stream: string; readonly windowMs: number }, id: string): string {
    return seriesCacheKey(w.entity, id, w.stream, bucketWidthMs(w.windowMs));
  }

  /** The cached snapshot of a series, or undefined. */
  get(entity: string, id: string, stream: string, windowMs: number): Float64Array | undefined {
    const bytes = this.#cache.get(seriesCacheKey(entity, id, stream, bucketWidthMs(windowMs)));
    if (bytes === undefined) return undefined;
    return snapshotView(bytes) ?? undefined;
  }

  /**
   * Caches a snapshot read from the store by a request sent at `sentAt` (performance.now()), unless
   * this replica wrote to the series since then: the read may not hold that write.
   */
  put(entity: string, id: string, stream: string, windowMs: number, bytes: Uint8Array, sentAt: number): void {
    const key = seriesCacheKey(entity, id, stream, bucketWidthMs(windowMs));
    const w = this.#written.get(key);
    if (w !== undefined && w >= sentAt) return;
    this.#cache.set(key, bytes, this.ttlMs);
  }

  /** Events the store applied (true) or reported as already applied (false), in record order. */
  written(records: readonly EventRecord[], applied: readonly boolean[], nowMs = Date.now()): void {
    for (let i = 0; i < records.length; i++) {
      if (applied[i]) this.#apply(records[i]!, nowMs);
      else this.#drop(records[i]!);
    }
  }

  /** Events whose write may or may not have landed: their snapshots are dropped. */
  uncertain(records: readonly EventRecord[]): void {
    for (const r of records) this.#drop(r);
  }

  #apply(r: EventRecord, nowMs: number): void {
    const t = this.#mark();
    for (const e of r.writes) {
      for (const w of this.#widths.get(`${e.entity}:${e.stream}`) ?? []) {
        const key = seriesCacheKey(e.entity, e.id, e.stream, w.widthMs);
        this.#written.set(key, t);
        const bytes = this.#cache.get(key);
        const f = bytes === undefined ? null : snapshotView(bytes);
        if (f === null) continue;
        // The snapshot keeps its read time: local writes must not hide other replicas' events longer.
        const left = this.ttlMs - (nowMs - snapshotReadAt(f));
        if (left <= 0) this.#cache.delete(key);
        else this.#cache.set(key, addToSnapshot(f, e.ts, e.value, w.widthMs, w.retentionMs, nowMs), left);
      }
    }
  }

  #drop(r: EventRecord): void {
    const t = this.#mark();
    for (const e of r.writes) {
      for (const w of this.#widths.get(`${e.entity}:${e.stream}`) ?? []) {
        const key = seriesCacheKey(e.entity, e.id, e.stream, w.widthMs);
        this.#written.set(key, t);
        this.#cache.delete(key);
      }
    }
  }

  /** The time of a local write; forgets writes no read in flight can predate. */
  #mark(): number {
    const t = performance.now();
    if (t >= this.#pruneAt) {
      for (const [k, at] of this.#written) if (t - at > this.#inFlightMs) this.#written.delete(k);
      this.#pruneAt = t + this.#inFlightMs;
    }
    return t;
  }
}
