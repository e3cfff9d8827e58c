// The embedded online store, when no Redis is configured: durable in one SQLite file (WAL) under the
// data dir, and served from memory outside the JS heap.
//
//   groups   one row per (entity id, feature version): the group key and its codec bytes
//   buckets  one row per realtime bucket: count, sum, min, max, and when no window can read it any more
//   seen     applied event ids, until their events can no longer change a window
//   meta     schema version; per offline source, the fingerprint of the file last loaded in full
//
// Reads never touch the file on the request path once the groups are in memory: every group is
// copied into a named table of the native addon (native-cache.ts: sharded, off the JS heap), by a
// worker thread started at open, so the server is ready at once and is fully in memory after one
// scan of the file. Until then, a group not yet copied is read from the file (and copied). Writes go
// to the file first (one transaction per call, committed before they are answered), then to memory.
// Realtime windows are held in process (WindowStore), restored from `buckets` at open.
//
// With `memoryBytes` set below what the groups need, the table evicts least recently used groups and
// every group not in memory is read from the file, which costs far more than a memory lookup (see
// bench/RESULTS.md).

import { closeSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { decodeGroup, encodeGroup } from './codec.js';
import { NativeTable } from './native-cache.js';
import { StoreUnavailableError } from './redis-store.js';
import type { StoredGroup, StreamSpec } from './plan.js';
import {
  groupKey,
  SeenIds,
  type EventRecord,
  type FetchResult,
  type GroupRead,
  type GroupWrite,
  type OnlineStore,
  type SeriesRead,
} from './store.js';
import { encodeSnapshot } from './window-cache.js';
import { bucketStart, bucketWidthMs, retentionMs, WindowStore, type Aggregation } from './windows.js';

const SCHEMA_VERSION = 1;
const PRUNE_MS = 60_000;
const PUT_ROWS = 100;

/** Writes the (key, value) pairs of `args` (PUT_ROWS of them with `many`, else one by one) and empties it. */
function flush(
  many: Database.Statement<(string | Uint8Array)[]>,
  one: Database.Statement<[string, Uint8Array]>,
  args: (string | Uint8Array)[],
): void {
  if (args.length === 2 * PUT_ROWS) many.run(...args);
  else for (let i = 0; i < args.length; i += 2) one.run(args[i] as string, args[i + 1] as Uint8Array);
  args.length = 0;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets (
  entity TEXT NOT NULL, stream TEXT NOT NULL, id TEXT NOT NULL, width INTEGER NOT NULL, start INTEGER NOT NULL,
  count INTEGER NOT NULL, sum REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL, until INTEGER NOT NULL,
  PRIMARY KEY (entity, stream, id, width, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS buckets_until ON buckets (until);
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_until ON seen (until);
`;

export interface EmbeddedStoreOptions {
  /** The SQLite file (created 0600 with its folder when missing). */
  path: string;
  streams: readonly StreamSpec[];
  /** Bytes the in-memory copy of the groups may take; undefined: all of them (like Redis without maxmemory). */
  memoryBytes?: number;
  /** Serve from a copy in memory (default true); false: the file only (a loader that does not serve). */
  memory?: boolean;
  /** Told when the groups are all in memory (rows copied, seconds), or why the copy stopped. */
  onPreloaded?: (rows: number, seconds: number) => void;
  onPreloadError?: (err: Error) => void;
}

/** What decides whether a source file must be loaded again: its size, time and the layouts it feeds. */
export interface SourceFingerprint {
  path: string;
  size: number;
  mtimeMs: number;
  layouts: string;
}

export class EmbeddedStore implements OnlineStore {
  readonly kind = 'embedded';
  readonly sync = true;
  readonly available = true;
  readonly path: string;
  readonly db: Database.Database;
  readonly table: NativeTable;
  readonly seen = new SeenIds();
  /** Every group of the file is in the table: a group the table lacks is absent. */
  #complete = false;
  #preload: Worker | null = null;
  #preloaded: Promise<void>;
  readonly #windows = new Map<string, Map<string, WindowStore>>();
  /** `entity:stream` -> bucket widths with their retention. */
  readonly #widths = new Map<string, { widthMs: number; retentionMs: number }[]>();
  readonly #get: Database.Statement<[string], Buffer>;
  readonly #put: Database.Statement<[string, Uint8Array]>;
  readonly #putMany: Database.Statement<(string | Uint8Array)[]>;
  readonly #seenAdd: Database.Statement<[string, number]>;
  readonly #bucketAdd: Database.Statement<[string, string, string, number, number, number, number, number, number]>;
  readonly #pruneTimer: NodeJS.Timeout;
  readonly #limited: boolean;
  readonly #memory: boolean;

  constructor(private readonly opts: EmbeddedStoreOptions) {
    this.path = resolve(opts.path);
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    closeSync(openSync(this.path, 'a', 0o600));
    this.db = new Database(this.path);
    this.db.pragma('journal_mode = WAL');
    // A committed transaction survives the process (it is in the WAL); power loss may lose the last ones.
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
    const version = this.db.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'schema'").get();
    if (version === undefined) this.db.prepare("INSERT INTO meta VALUES ('schema', ?)").run(String(SCHEMA_VERSION));
    else if (version.value !== String(SCHEMA_VERSION))
      throw new Error(`${this.path} has feature store schema ${version.value}; this version of scoreline reads ${SCHEMA_VERSION}`);
    this.#get = this.db.prepare<[string], Buffer>('SELECT value FROM groups WHERE key = ?').pluck();
    this.#put = this.db.prepare<[string, Uint8Array]>('INSERT OR REPLACE INTO groups (key, value) VALUES (?, ?)');
    this.#putMany = this.db.prepare<(string | Uint8Array)[]>(
      `INSERT OR REPLACE INTO groups (key, value) VALUES ${Array(PUT_ROWS).fill('(?, ?)').join(', ')}`,
    );
    this.#seenAdd = this.db.prepare<[string, number]>('INSERT OR REPLACE INTO seen (key, until) VALUES (?, ?)');
    this.#bucketAdd = this.db.prepare(
      `INSERT INTO buckets (entity, stream, id, width, start, count, sum, lo, hi, until) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?)
       ON CONFLICT (entity, stream, id, width, start) DO UPDATE SET
         count = count + 1, sum = sum + excluded.sum, lo = min(lo, excluded.lo), hi = max(hi, excluded.hi), until = max(until, excluded.until)`,
    );

    for (const s of opts.streams) {
      let byStream = this.#windows.get(s.entity);
      if (byStream === undefined) {
        byStream = new Map();
        this.#windows.set(s.entity, byStream);
      }
      const ws = new WindowStore({ stream: s.stream });
      for (const w of s.windowsMs) ws.register(s.stream, w);
      byStream.set(s.stream, ws);
      const byWidth = new Map<number, number>();
      for (const w of s.windowsMs) byWidth.set(bucketWidthMs(w), Math.max(byWidth.get(bucketWidthMs(w)) ?? 0, retentionMs(w)));
      this.#widths.set(
        `${s.entity}:${s.stream}`,
        [...byWidth].map(([widthMs, r]) => ({ widthMs, retentionMs: r })),
      );
    }
    this.#restore(Date.now());

    // The table is process-wide by name: a store opened again on the same file starts from scratch.
    this.#limited = opts.memoryBytes !== undefined;
    this.table = new NativeTable(`features:${this.path}`, opts.memoryBytes !== undefined ? { maxBytes: opts.memoryBytes } : undefined);
    this.table.clear();
    this.#memory = opts.memory !== false;
    this.#preloaded = this.#memory ? this.#startPreload() : Promise.resolve();
    this.#pruneTimer = setInterval(() => this.prune(Date.now()), PRUNE_MS);
    this.#pruneTimer.unref();
  }

  /** Windows and event ids still in use, from the file. */
  #restore(now: number): void {
    const buckets = this.db.prepare<[number], [string, string, string, number, number, number, number, number, number]>(
      'SELECT entity, stream, id, width, start, count, sum, lo, hi FROM buckets WHERE until > ?',
    );
    for (const [entity, stream, id, width, start, count, sum, min, max] of buckets.raw().iterate(now)) {
      this.#windows.get(entity)?.get(stream)?.restore(id, width, start, { count, sum, min, max });
    }
    const seen = this.db.prepare<[number], [string, number]>('SELECT key, until FROM seen WHERE until > ?');
    for (const [key, until] of seen.raw().iterate(now)) this.seen.add(key, until);
  }

  /** Copies every group into the table in a worker thread, without overwriting newer writes. */
  #startPreload(): Promise<void> {
    const t0 = performance.now();
    const worker = new Worker(new URL('./preload-worker.js', import.meta.url), { workerData: { path: this.path, table: this.table.name } });
    this.#preload = worker;
    return new Promise<void>((done) => {
      let rows = 0;
      worker.on('message', (m: { rows: number; done?: boolean }) => {
        rows = m.rows;
        if (!m.done) return;
        // A limited table may have evicted some: then a miss still has to look in the file.
        this.#complete = !this.#limited;
        this.opts.onPreloaded?.(rows, (performance.now() - t0) / 1000);
      });
      worker.on('error', (e) => this.opts.onPreloadError?.(e));
      worker.on('exit', () => {
        this.#preload = null;
        done();
      });
    });
  }

  /** Resolves when the copy into memory has finished (or stopped). */
  preloaded(): Promise<void> {
    return this.#preloaded;
  }

  /** Every group is in memory: reads never go to the file. */
  get inMemory(): boolean {
    return this.#complete;
  }

  groupSync(group: StoredGroup, id: string): Uint8Array | null {
    const key = groupKey(group, id);
    if (!this.#memory) return this.#get.get(key) ?? null;
    const v = this.table.get(key);
    if (v !== undefined) return v;
    if (this.#complete) return null;
    const row = this.#get.get(key);
    if (row === undefined) return null;
    this.table.insertMany([key], [row]);
    return row;
  }

  windowSync(
    entity: string,
    id: string,
    stream: string,
    nowMs: number,
    windowMs: number,
    aggregation: Aggregation,
    sinceMs?: number,
  ): number | null {
    const ws = this.#windows.get(entity)?.get(stream);
    return ws === undefined ? null : ws.read(id, nowMs, windowMs, aggregation, sinceMs);
  }

  async fetch(groups: readonly GroupRead[], series: readonly SeriesRead[]): Promise<FetchResult> {
    const now = Date.now();
    return {
      groups: groups.map((r) => this.groupSync(r.group, r.id)),
      series: series.map((r) => encodeSnapshot(this.#windows.get(r.entity)?.get(r.stream)?.buckets(r.id, r.windowMs) ?? [], now)),
    };
  }

  /** Merges values into the groups, in one transaction; memory follows once it is committed. */
  async writeGroups(writes: readonly GroupWrite[]): Promise<void> {
    this.writeGroupsSync(writes);
  }

  writeGroupsSync(writes: readonly GroupWrite[]): void {
    const keys: string[] = [];
    const values: Uint8Array[] = [];
    // One buffer for every group of the call: one allocation, not one per group.
    let size = 0;
    for (const w of writes) size += w.group.layout.byteLength;
    const arena = new Uint8Array(size);
    let at = 0;
    this.db.transaction(() => {
      // Rows go in PUT_ROWS at a time (one statement per run: its fixed cost is most of a row's).
      const args: (string | Uint8Array)[] = [];
      for (const w of writes) {
        const key = groupKey(w.group, w.id);
        const layout = w.group.layout;
        let whole = true;
        for (const name of layout.names) if (!Object.hasOwn(w.values, name)) whole = false;
        const into = arena.subarray(at, at + layout.byteLength);
        at += layout.byteLength;
        let bytes: Uint8Array;
        if (whole) bytes = encodeGroup(layout, w.values, into);
        else {
          // Fields not given keep their stored values: the file's, this batch's writes included.
          flush(this.#putMany, this.#put, args);
          const old = this.#get.get(key);
          bytes = encodeGroup(layout, old !== undefined ? { ...(decodeGroup(layout, old) ?? {}), ...w.values } : w.values, into);
        }
        args.push(key, bytes);
        keys.push(key);
        values.push(bytes);
        if (args.length === 2 * PUT_ROWS) flush(this.#putMany, this.#put, args);
      }
      flush(this.#putMany, this.#put, args);
    })();
    if (this.#memory) for (let i = 0; i < keys.length; i++) this.table.set(keys[i]!, values[i]!);
  }

  /**
   * Applies each event not applied before, in one transaction (ids and buckets together), then to
   * the windows in memory. A write that fails changes nothing and throws StoreUnavailableError
   * (not sent: POST /v1/events answers 503 not_stored).
   */
  async addEvents(events: readonly EventRecord[], nowMs: number): Promise<boolean[]> {
    const out: boolean[] = [];
    const now = new Set<string>();
    const write = this.db.transaction(() => {
      for (const r of events) {
        const key = `${r.event}\0${r.eventId}`;
        if (now.has(key) || this.seen.has(key, nowMs)) {
          out.push(false);
          continue;
        }
        now.add(key);
        this.#seenAdd.run(key, r.keepUntil);
        for (const e of r.writes) {
          for (const w of this.#widths.get(`${e.entity}:${e.stream}`) ?? []) {
            const start = bucketStart(e.ts, w.widthMs);
            this.#bucketAdd.run(e.entity, e.stream, e.id, w.widthMs, start, e.value, e.value, e.value, start + w.widthMs + w.retentionMs);
          }
        }
        out.push(true);
      }
    });
    try {
      write();
    } catch (e) {
      // Rolled back (disk full, I/O error): nothing of the call was applied; the caller may retry.
      throw new StoreUnavailableError(`the feature store file could not be written (${(e as Error).message})`, false, 'store write failed');
    }
    events.forEach((r, i) => {
      if (!out[i]) return;
      this.seen.add(`${r.event}\0${r.eventId}`, r.keepUntil);
      for (const e of r.writes) this.#windows.get(e.entity)?.get(e.stream)?.add(e.id, e.ts, e.value, nowMs);
    });
    return out;
  }

  /** Drops what no window can read any more, in memory and in the file. */
  prune(nowMs: number): void {
    for (const byStream of this.#windows.values()) for (const ws of byStream.values()) ws.prune(nowMs);
    this.seen.prune(nowMs);
    this.db.prepare('DELETE FROM buckets WHERE until <= ?').run(nowMs);
    this.db.prepare('DELETE FROM seen WHERE until <= ?').run(nowMs);
  }

  /** True when the source file was loaded in full as it is now (same size, time and layouts). */
  sourceLoaded(name: string, f: SourceFingerprint): boolean {
    const row = this.db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?').get(`source:${name}`);
    return row !== undefined && row.value === JSON.stringify(f);
  }

  markSourceLoaded(name: string, f: SourceFingerprint): void {
    this.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(`source:${name}`, JSON.stringify(f));
  }

  /** Group records in the file. */
  get size(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM groups').get() as { n: number }).n;
  }

  async close(): Promise<void> {
    clearInterval(this.#pruneTimer);
    await this.#preload?.terminate();
    this.db.close();
    this.table.clear();
  }
}

/** The fingerprint of a source file as it is now. */
export function fingerprintOf(path: string, layouts: readonly StoredGroup[]): SourceFingerprint {
  const st = statSync(path);
  return {
    path: resolve(path),
    size: st.size,
    mtimeMs: st.mtimeMs,
    layouts: layouts.map((g) => `${g.entity}@${g.version}:${g.layout.hash}`).join(','),
  };
}
