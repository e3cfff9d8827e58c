// The shared online store in Redis (ioredis). Key layout (prefix default `sl:`):
//
//   {prefix}g:{entity}:{id}:v{version}        HASH  one per entity id and feature version:
//                                             field = feature name, value = "<value>|<event ts ms>"
//                                             (value: a number, true/false, or empty for null)
//   {prefix}s:{entity}:{id}:{stream}:{width}  HASH  one per realtime series and bucket width (ms):
//                                             field = bucket start in base-36 epoch seconds,
//                                             value = "count,sum,min,max"; the key expires after
//                                             the series' retention, dead buckets are trimmed on read
//   {prefix}e:{event}:{event id}              STRING one per applied event, until the event can no longer
//                                             change a window: a retry with the same id is not counted again
//
// The reads of all requests of one event-loop turn go out as one pipeline. The client fails fast
// while Redis is unreachable (no offline queue) and reconnects by itself; a circuit breaker stops
// requests waiting on a Redis that is connected but does not answer (see breaker.ts). Callers then
// serve from the L1 cache and fallbacks. Failures say whether anything was sent (StoreUnavailableError.sent): a write refused
// before sending was not applied, one that timed out may have been.

import { Redis } from 'ioredis';
import type { Logger } from '../logger.js';
import { CircuitBreaker, REFUSED, type Admission } from './breaker.js';
import { encodeGroup, type FeatureValue } from './codec.js';
import type { StoredGroup, StreamSpec } from './plan.js';
import type { EventRecord, FetchResult, GroupRead, GroupWrite, OnlineStore, SeriesRead } from './store.js';
import { encodeSnapshot } from './window-cache.js';
import {
  bucketStart,
  bucketWidthMs,
  decodeAggregate,
  decodeBucketField,
  encodeBucketField,
  retentionMs,
  type Aggregate,
} from './windows.js';

export class StoreUnavailableError extends Error {
  constructor(
    message: string,
    /** False when the command was refused before sending (it was not applied); true when it may have been. */
    readonly sent = false,
    /** Short, for feature statuses: 'store circuit open', 'store timed out', ... */
    readonly reason = 'store unavailable',
  ) {
    super(message);
    this.name = 'StoreUnavailableError';
  }
}

export const CIRCUIT_OPEN = 'store circuit open';
export const NOT_CONNECTED = 'store not connected';

export interface RedisStoreOptions {
  url: string;
  /** AUTH password (overrides one in the URL); read from features.redis.passwordFile. */
  password?: string;
  keyPrefix?: string;
  /** Per-command timeout; a read slower than this counts as a failure and the request falls back. */
  timeoutMs?: number;
  streams: readonly StreamSpec[];
  /** Observes each pipeline's round trip (seconds) and failures, for metrics. */
  onRoundTrip?: ((seconds: number, ok: boolean) => void) | undefined;
  /** Timeouts or connection errors in a row that open the circuit (default 5), and its probe period (default 1000 ms). */
  breaker?: { failures?: number; probeMs?: number } | undefined;
  /** Where the circuit's opening (warn) and closing (info) are logged. */
  log?: Pick<Logger, 'warn' | 'info'> | undefined;
}

type Failure = 'timeout' | 'connection' | 'reply' | 'unsent';

/** What an ioredis command error means: no answer in time, a lost connection, an answer that is an error, or never sent. */
function classify(err: Error): Failure {
  if (err.message === 'Command timed out') return 'timeout';
  if (err.name === 'ReplyError') return 'reply';
  if (err.message.startsWith("Stream isn't writeable")) return 'unsent';
  return 'connection';
}

// Applies one event once: KEYS[1] is the event's id key, set only if absent (PX ARGV[1]); when it
// was already there the event is a retry or a duplicate and nothing changes (returns 0). Otherwise
// each series key KEYS[i] (i >= 2) gets the value ARGV[3i - 4] added to bucket ARGV[3i - 3] and
// expires after ARGV[3i - 2] ms (returns 1). One script, so the id and the windows change together.
const ADD_EVENT = `
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  local key = KEYS[i]
  local v = tonumber(ARGV[3 * i - 4])
  local field = ARGV[3 * i - 3]
  local ttl = tonumber(ARGV[3 * i - 2])
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
return 1
`;

// Reads hashes for a batch of requests: every key's fields and values joined by \x1f, the keys'
// answers by \x1e, in one reply string. A reply array per HGETALL costs the client most of a cache
// miss (a command with its own timer per key; a string per field and value, an array and an object
// per hash); the script moves a little of that work to redis-server. Field names are
// feature names or bucket starts, values numbers: neither holds a control character.
const READ_HASHES = `
local out = {}
for i = 1, #KEYS do out[i] = table.concat(redis.call('HGETALL', KEYS[i]), '\\31') end
return table.concat(out, '\\30')
`;
/** Keys per script call: a batch larger than this is split over several calls of one pipeline. */
const READ_CHUNK = 256;

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

/** One caller's reads, waiting for the end of the event-loop turn. */
interface PendingFetch {
  readonly groups: readonly GroupRead[];
  readonly series: readonly SeriesRead[];
  resolve(r: FetchResult): void;
  reject(e: unknown): void;
}

/** A group hash (fields and values of READ_HASHES, `name`, `"value|ts"`, ...) as codec bytes; null when empty (no such key). */
function parseGroup(group: StoredGroup, items: readonly string[]): Uint8Array | null {
  if (items.length === 0) return null;
  const values: Record<string, FeatureValue> = {};
  for (let i = 0; i + 1 < items.length; i += 2) {
    const v = decodeField(items[i + 1]!);
    if (v !== undefined) values[items[i]!] = v;
  }
  return encodeGroup(group.layout, values);
}

const NONE: readonly string[] = [];

export class RedisStore implements OnlineStore {
  readonly kind = 'redis';
  readonly sync = false;
  readonly redis: RedisWithScript;
  readonly breaker: CircuitBreaker;
  /** Connected and the circuit closed (or half-open): a field, read by every request. */
  available = false;
  private readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly widths = new Map<string, { widthMs: number; retentionMs: number }[]>();

  constructor(private readonly opts: RedisStoreOptions) {
    this.prefix = opts.keyPrefix ?? 'sl:';
    this.timeoutMs = opts.timeoutMs ?? 50;
    this.redis = new Redis(opts.url, {
      ...(opts.password !== undefined ? { password: opts.password } : {}),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.timeoutMs,
      connectTimeout: 2000,
      retryStrategy: (times) => Math.min(50 * times, 1000),
      lazyConnect: false,
    }) as RedisWithScript;
    // Errors are reported through `available` and metrics; an unhandled 'error' event would crash.
    this.redis.on('error', () => undefined);
    const probeMs = opts.breaker?.probeMs ?? 1000;
    // The URL is not logged: it may hold a password.
    this.breaker = new CircuitBreaker({
      failures: opts.breaker?.failures ?? 5,
      probeMs,
      probe: () => this.redis.ping(),
      onOpen: (n, cause) =>
        opts.log?.warn(
          { store: 'redis', failures: n, cause, timeoutMs: this.timeoutMs, probeMs },
          `feature store circuit open: redis failed ${n} requests in a row (${cause}); serving from the L1 cache and fallbacks without waiting, refusing event writes, probing every ${probeMs} ms`,
        ),
      onClose: (ms) =>
        opts.log?.info(
          { store: 'redis', openMs: Math.round(ms) },
          `feature store circuit closed: redis answers again after ${Math.round(ms)} ms`,
        ),
      onChange: () => this.refresh(),
    });
    // ioredis announces status changes on the next tick; exec() also checks the status itself.
    this.redis.on('ready', () => this.refresh());
    for (const ev of ['close', 'end', 'reconnecting']) this.redis.on(ev, () => this.refresh());
    this.redis.defineCommand('slAddEvent', { lua: ADD_EVENT });
    this.redis.defineCommand('slReadHashes', { lua: READ_HASHES });
    for (const s of opts.streams) {
      const list = s.windowsMs.map((w) => ({ widthMs: bucketWidthMs(w), retentionMs: retentionMs(w) }));
      // One bucket series per width; the longest retention of windows sharing a width wins.
      const byWidth = new Map<number, number>();
      for (const x of list) byWidth.set(x.widthMs, Math.max(byWidth.get(x.widthMs) ?? 0, x.retentionMs));
      this.widths.set(
        `${s.entity}:${s.stream}`,
        [...byWidth].map(([widthMs, retention]) => ({ widthMs, retentionMs: retention })),
      );
    }
  }

  private refresh(): void {
    this.available = this.redis.status === 'ready' && this.breaker.admitting;
  }

  /** Why requests do not go to the store now (meaningful while `available` is false). */
  unavailableReason(): string {
    return this.breaker.state !== 'closed' ? CIRCUIT_OPEN : NOT_CONNECTED;
  }

  /** For health: what is wrong, in a sentence. */
  describeOutage(): string {
    return this.breaker.state !== 'closed'
      ? `the online store (redis) does not answer within ${this.timeoutMs} ms (circuit open; probing it)`
      : 'the online store (redis) is unreachable';
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
    if (this.redis.status !== 'ready') throw new StoreUnavailableError('the feature store (redis) is not connected', false, NOT_CONNECTED);
    const admission = this.breaker.admit();
    if (admission === REFUSED) {
      throw new StoreUnavailableError(
        `the feature store (redis) circuit is open: it did not answer ${this.breaker.state === 'open' ? 'recently' : 'a probe yet'}, so nothing is sent until it does`,
        false,
        CIRCUIT_OPEN,
      );
    }
    const p = this.redis.pipeline();
    build(p);
    const t0 = performance.now();
    let results: [Error | null, unknown][] | null;
    try {
      results = await p.exec();
    } catch (e) {
      throw this.failed(admission, e as Error, t0);
    }
    let err: Error | null = null;
    if (results !== null) {
      for (let i = 0; i < results.length; i++) {
        const e = results[i]![0];
        // A timeout says most about the store; keep looking for one.
        if (e !== null && (err === null || classify(e) === 'timeout')) err = e;
      }
    } else {
      err = new Error('no reply');
    }
    if (err !== null) throw this.failed(admission, err, t0);
    this.opts.onRoundTrip?.((performance.now() - t0) / 1000, true);
    this.breaker.success(admission);
    return results!.map(([, v]) => v as T);
  }

  /** Counts a failed pipeline and says what it means for the caller. */
  private failed(admission: Admission, err: Error, t0: number): StoreUnavailableError {
    this.opts.onRoundTrip?.((performance.now() - t0) / 1000, false);
    const kind = classify(err);
    if (kind === 'reply') {
      // Redis answered: it is not hung.
      this.breaker.success(admission);
      return new StoreUnavailableError(`redis answered with an error: ${err.message}`, true, 'store error');
    }
    if (kind === 'unsent') {
      // Nothing waited: not a reason to open the circuit.
      this.breaker.release(admission);
      return new StoreUnavailableError('the feature store (redis) is not connected', false, NOT_CONNECTED);
    }
    if (kind === 'timeout') {
      this.breaker.failure(admission, `no answer within ${this.timeoutMs} ms`);
      return new StoreUnavailableError(`the store did not answer within ${this.timeoutMs} ms`, true, 'store timed out');
    }
    this.breaker.failure(admission, `connection: ${err.message}`);
    return new StoreUnavailableError(
      `the connection to the store failed before it answered (${err.message})`,
      true,
      'store connection lost',
    );
  }

  /**
   * Reads groups and series. Every fetch of one event-loop turn goes out in one pipeline, sent when
   * the turn ends (setImmediate: after all the requests the server read in this turn), each key
   * once however many requests ask for it; each caller gets its own answer, or the batch's failure.
   */
  fetch(groups: readonly GroupRead[], series: readonly SeriesRead[]): Promise<FetchResult> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ groups, series, resolve, reject });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        setImmediate(this.#flush);
      }
    });
  }

  #pending: PendingFetch[] = [];
  #flushScheduled = false;

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    const batch = this.#pending;
    this.#pending = [];
    const keys: string[] = [];
    /** Per key: the group layout to decode it with, or the series' bucket width and retention. */
    const parse: (StoredGroup | { widthMs: number; retentionMs: number })[] = [];
    const index = new Map<string, number>();
    const at = (key: string, how: StoredGroup | { widthMs: number; retentionMs: number }): number => {
      let i = index.get(key);
      if (i === undefined) {
        i = keys.length;
        keys.push(key);
        parse.push(how);
        index.set(key, i);
      }
      return i;
    };
    const slots: Int32Array[] = batch.map((p) => {
      const out = new Int32Array(p.groups.length + p.series.length);
      let k = 0;
      for (const g of p.groups) out[k++] = at(this.groupKey(g.group, g.id), g.group);
      for (const s of p.series) {
        const width = this.seriesWidth(s.entity, s.stream, s.windowMs);
        out[k++] = at(this.seriesKey(s.entity, s.id, s.stream, width.widthMs), width);
      }
      return out;
    });
    const readAt = Date.now();
    this.exec<string>((p) => {
      const pp = p as unknown as { slReadHashes(n: number, ...keys: string[]): void };
      for (let i = 0; i < keys.length; i += READ_CHUNK) {
        const chunk = keys.slice(i, i + READ_CHUNK);
        pp.slReadHashes(chunk.length, ...chunk);
      }
    }).then(
      (replies) => {
        const values: (Uint8Array | null)[] = [];
        try {
          for (let c = 0; c < replies.length; c++) {
            const records = replies[c]!.split('\x1e');
            const first = c * READ_CHUNK;
            if (records.length !== Math.min(READ_CHUNK, keys.length - first))
              throw new Error(`redis answered ${records.length} hashes for ${Math.min(READ_CHUNK, keys.length - first)} keys`);
            for (let k = 0; k < records.length; k++) {
              const i = first + k;
              const how = parse[i]!;
              const items = records[k] === '' ? NONE : records[k]!.split('\x1f');
              values.push('layout' in how ? parseGroup(how, items) : this.parseSeries(keys[i]!, how, items, readAt));
            }
          }
        } catch (e) {
          for (const p of batch) p.reject(e);
          return;
        }
        batch.forEach((p, j) => {
          const s = slots[j]!;
          const groups: (Uint8Array | null)[] = [];
          const series: Uint8Array[] = [];
          for (let k = 0; k < p.groups.length; k++) groups.push(values[s[k]!]!);
          for (let k = p.groups.length; k < s.length; k++) series.push(values[s[k]!]!);
          p.resolve({ groups, series });
        });
      },
      (e) => {
        for (const p of batch) p.reject(e);
      },
    );
  };

  /** The bucket width a window of `windowMs` is stored at, with the longest retention of that width. */
  private seriesWidth(entity: string, stream: string, windowMs: number): { widthMs: number; retentionMs: number } {
    const widthMs = bucketWidthMs(windowMs);
    return this.widths.get(`${entity}:${stream}`)?.find((w) => w.widthMs === widthMs) ?? { widthMs, retentionMs: retentionMs(windowMs) };
  }

  /** A series hash as a snapshot; buckets no window can read any more are dropped here and in Redis. */
  private parseSeries(key: string, width: { widthMs: number; retentionMs: number }, items: readonly string[], readAt: number): Uint8Array {
    const buckets: [number, Aggregate][] = [];
    const dead: string[] = [];
    for (let i = 0; i + 1 < items.length; i += 2) {
      const f = items[i]!;
      const start = decodeBucketField(f);
      const a = decodeAggregate(items[i + 1]!);
      if (start === null || a === null) continue;
      if (start + width.widthMs <= readAt - width.retentionMs) dead.push(f);
      else buckets.push([start, a]);
    }
    if (dead.length > 0) this.redis.hdel(key, ...dead).catch(() => undefined);
    return encodeSnapshot(buckets, readAt);
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

  eventKey(event: string, eventId: string): string {
    return `${this.prefix}e:${event}:${eventId}`;
  }

  async addEvents(events: readonly EventRecord[], nowMs: number): Promise<boolean[]> {
    if (events.length === 0) return [];
    const replies = await this.exec<number>((p) => {
      const pp = p as unknown as { slAddEvent(n: number, ...a: (string | number)[]): void };
      for (const r of events) {
        const keys: string[] = [this.eventKey(r.event, r.eventId)];
        const argv: (string | number)[] = [Math.max(1, Math.ceil(r.keepUntil - nowMs))];
        for (const e of r.writes) {
          for (const w of this.widths.get(`${e.entity}:${e.stream}`) ?? []) {
            keys.push(this.seriesKey(e.entity, e.id, e.stream, w.widthMs));
            argv.push(e.value, encodeBucketField(bucketStart(e.ts, w.widthMs)), Math.ceil(w.retentionMs));
          }
        }
        pp.slAddEvent(keys.length, ...keys, ...argv);
      }
    });
    return replies.map((n) => n === 1);
  }

  async close(): Promise<void> {
    this.breaker.stop();
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}
