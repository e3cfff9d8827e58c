// The shared online store in Redis (ioredis). Key layout (prefix default `sl:`):
//
//   {prefix}g:{entity}:{id}:v{version}        HASH  one per entity id and feature version:
//                                             field = feature name, value = "<value>|<event ts ms>"
//                                             (value: a number, true/false, or empty for null)
//   {prefix}s:{entity}:{id}:{stream}:{width}  HASH  one per realtime series and bucket width (ms):
//                                             field = bucket start in base-36 epoch seconds,
//                                             value = "count,sum,min,max"; the key expires after
//                                             the series' retention, dead buckets are trimmed on read
//
// A request's reads go out as one pipeline. The client fails fast while Redis is unreachable
// (no offline queue) and reconnects by itself; callers then serve from the L1 cache and fallbacks.

import { Redis } from 'ioredis';
import { encodeGroup, type FeatureValue } from './codec.js';
import type { StoredGroup, StreamSpec } from './plan.js';
import type { EventWrite, FetchResult, GroupRead, GroupWrite, OnlineStore, SeriesRead, SeriesReader } from './store.js';
import {
  aggregateWindow,
  bucketStart,
  bucketWidthMs,
  decodeAggregate,
  decodeBucketField,
  encodeBucketField,
  retentionMs,
  type Aggregate,
} from './windows.js';

export class StoreUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreUnavailableError';
  }
}

export interface RedisStoreOptions {
  url: string;
  keyPrefix?: string;
  /** Per-command timeout; a read slower than this counts as a failure and the request falls back. */
  timeoutMs?: number;
  streams: readonly StreamSpec[];
  /** Observes each pipeline's round trip (seconds) and failures, for metrics. */
  onRoundTrip?: (seconds: number, ok: boolean) => void;
}

// Adds one event value to a bucket of every width of its series, atomically per key.
const ADD_EVENT = `
local v = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local field = ARGV[2 * i]
  local ttl = tonumber(ARGV[2 * i + 1])
  local cur = redis.call('HGET', key, field)
  local c, s, lo, hi = 1, v, v, v
  if cur then
    local a, b, d, e = string.match(cur, '^([^,]+),([^,]+),([^,]+),([^,]+)$')
    c = tonumber(a) + 1
    s = tonumber(b) + v
    lo = math.min(tonumber(d), v)
    hi = math.max(tonumber(e), v)
  end
  redis.call('HSET', key, field, string.format('%d,%.17g,%.17g,%.17g', c, s, lo, hi))
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
`;

type RedisWithScript = Redis & {
  slAddEvent(numKeys: number, ...args: (string | number)[]): Promise<number>;
};

function encodeField(v: FeatureValue): string {
  return `${v.value === null ? '' : String(v.value)}|${v.eventTs}`;
}

function decodeField(raw: string): FeatureValue | undefined {
  const bar = raw.lastIndexOf('|');
  if (bar < 0) return undefined;
  const text = raw.slice(0, bar);
  const ts = Number(raw.slice(bar + 1));
  const value = text === '' ? null : text === 'true' ? true : text === 'false' ? false : Number(text);
  if (typeof value === 'number' && Number.isNaN(value)) return undefined;
  return { value, eventTs: Number.isFinite(ts) ? ts : 0 };
}

export class RedisStore implements OnlineStore {
  readonly kind = 'redis';
  readonly sync = false;
  readonly redis: RedisWithScript;
  private readonly prefix: string;
  private readonly widths = new Map<string, { widthMs: number; retentionMs: number }[]>();

  constructor(private readonly opts: RedisStoreOptions) {
    this.prefix = opts.keyPrefix ?? 'sl:';
    this.redis = new Redis(opts.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: opts.timeoutMs ?? 50,
      connectTimeout: 2000,
      retryStrategy: (times) => Math.min(50 * times, 1000),
      lazyConnect: false,
    }) as RedisWithScript;
    // Errors are reported through `available` and metrics; an unhandled 'error' event would crash.
    this.redis.on('error', () => undefined);
    this.redis.defineCommand('slAddEvent', { lua: ADD_EVENT });
    for (const s of opts.streams) {
      const list = s.windowsMs.map((w) => ({ widthMs: bucketWidthMs(w), retentionMs: retentionMs(w) }));
      // One bucket series per width; the longest retention of windows sharing a width wins.
      const byWidth = new Map<number, number>();
      for (const x of list) byWidth.set(x.widthMs, Math.max(byWidth.get(x.widthMs) ?? 0, x.retentionMs));
      this.widths.set(`${s.entity}:${s.stream}`, [...byWidth].map(([widthMs, retention]) => ({ widthMs, retentionMs: retention })));
    }
  }

  get available(): boolean {
    return this.redis.status === 'ready';
  }

  /** Resolves once connected (or rejects after `ms`): for startup and tests. */
  async ready(ms = 5000): Promise<void> {
    if (this.available) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new StoreUnavailableError(`redis at ${this.opts.url} not reachable within ${ms} ms`)), ms);
      this.redis.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  groupKey(group: StoredGroup, id: string): string {
    return `${this.prefix}g:${group.entity}:${id}:v${group.version}`;
  }

  seriesKey(entity: string, id: string, stream: string, widthMs: number): string {
    return `${this.prefix}s:${entity}:${id}:${stream}:${widthMs}`;
  }

  private async exec<T>(build: (p: ReturnType<Redis['pipeline']>) => void): Promise<T[]> {
    if (!this.available) throw new StoreUnavailableError('the feature store (redis) is not connected');
    const p = this.redis.pipeline();
    build(p);
    const t0 = performance.now();
    let results: [Error | null, unknown][] | null;
    try {
      results = await p.exec();
    } catch (e) {
      this.opts.onRoundTrip?.((performance.now() - t0) / 1000, false);
      throw new StoreUnavailableError(`redis: ${(e as Error).message}`);
    }
    const failed = results?.find(([err]) => err !== null);
    this.opts.onRoundTrip?.((performance.now() - t0) / 1000, failed === undefined);
    if (!results || failed) throw new StoreUnavailableError(`redis: ${failed?.[0]?.message ?? 'no reply'}`);
    return results.map(([, v]) => v as T);
  }

  async fetch(groups: readonly GroupRead[], series: readonly SeriesRead[]): Promise<FetchResult> {
    const seriesKeys = series.map((s) => this.seriesKey(s.entity, s.id, s.stream, bucketWidthMs(s.windowMs)));
    const replies = await this.exec<Record<string, string>>((p) => {
      for (const g of groups) p.hgetall(this.groupKey(g.group, g.id));
      for (const k of seriesKeys) p.hgetall(k);
    });
    const out: (Uint8Array | null)[] = [];
    for (let i = 0; i < groups.length; i++) {
      const hash = replies[i]!;
      const fields = Object.keys(hash);
      if (fields.length === 0) {
        out.push(null);
        continue;
      }
      const values: Record<string, FeatureValue> = {};
      for (const f of fields) {
        const v = decodeField(hash[f]!);
        if (v !== undefined) values[f] = v;
      }
      out.push(encodeGroup(groups[i]!.group.layout, values));
    }
    const readers: SeriesReader[] = [];
    const now = Date.now();
    for (let j = 0; j < series.length; j++) {
      const hash = replies[groups.length + j]!;
      const widthMs = bucketWidthMs(series[j]!.windowMs);
      const buckets: [number, Aggregate][] = [];
      const dead: string[] = [];
      for (const f in hash) {
        const start = decodeBucketField(f);
        const a = decodeAggregate(hash[f]!);
        if (start === null || a === null) continue;
        if (start + widthMs <= now - series[j]!.windowMs - widthMs) dead.push(f);
        else buckets.push([start, a]);
      }
      if (dead.length > 0) this.redis.hdel(seriesKeys[j]!, ...dead).catch(() => undefined);
      readers.push((nowMs, windowMs, aggregation, since) => aggregateWindow(buckets, nowMs, windowMs, aggregation, since));
    }
    return { groups: out, series: readers };
  }

  async writeGroups(writes: readonly GroupWrite[]): Promise<void> {
    if (writes.length === 0) return;
    await this.exec((p) => {
      for (const w of writes) {
        const args: string[] = [];
        for (const name in w.values) args.push(name, encodeField(w.values[name]!));
        if (args.length > 0) p.hset(this.groupKey(w.group, w.id), ...args);
      }
    });
  }

  async addEvents(events: readonly EventWrite[]): Promise<void> {
    if (events.length === 0) return;
    await this.exec((p) => {
      const pp = p as unknown as { slAddEvent(n: number, ...a: (string | number)[]): void };
      for (const e of events) {
        const widths = this.widths.get(`${e.entity}:${e.stream}`) ?? [];
        const keys: string[] = [];
        const argv: (string | number)[] = [e.value];
        for (const w of widths) {
          keys.push(this.seriesKey(e.entity, e.id, e.stream, w.widthMs));
          argv.push(encodeBucketField(bucketStart(e.ts, w.widthMs)), Math.ceil(w.retentionMs));
        }
        if (keys.length > 0) pp.slAddEvent(keys.length, ...keys, ...argv);
      }
    });
  }

  async close(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}
