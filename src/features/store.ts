// The online store behind feature serving: stored groups (offline and hybrid values, one record per
// entity id and feature version, as codec bytes) and realtime event series (time buckets). Two
// implementations with one contract: the in-process MemoryStore (one replica, no Redis, synchronous)
// and RedisStore (shared by every replica). Both are read in one round trip per request.

import { decodeGroup, encodeGroup, type FeatureValue } from './codec.js';
import type { StoredGroup, StreamSpec } from './plan.js';
import { encodeSnapshot } from './window-cache.js';
import { WindowStore, type Aggregation } from './windows.js';

export interface GroupRead {
  readonly group: StoredGroup;
  readonly id: string;
}

export interface SeriesRead {
  readonly entity: string;
  readonly id: string;
  readonly stream: string;
  readonly windowMs: number;
}

export interface FetchResult {
  /** Codec bytes per group read; null when the store holds nothing for that entity id and version. */
  readonly groups: readonly (Uint8Array | null)[];
  /** Per series read, its buckets as a snapshot (window-cache.ts), stamped with when it was read. */
  readonly series: readonly Uint8Array[];
}

export interface GroupWrite {
  readonly group: StoredGroup;
  readonly id: string;
  readonly values: Readonly<Record<string, FeatureValue>>;
}

export interface EventWrite {
  readonly entity: string;
  readonly id: string;
  readonly stream: string;
  readonly ts: number;
  readonly value: number;
}

/** One realtime event: applied once per (event, eventId), to every series it feeds, or not at all. */
export interface EventRecord {
  /** The event type (`transaction`, ...): ids are unique per type. */
  readonly event: string;
  /** The client's id, else a generated one. */
  readonly eventId: string;
  /** Epoch ms until which the id is remembered: past it the event can no longer change any window. */
  readonly keepUntil: number;
  /** One per series the event feeds. */
  readonly writes: readonly EventWrite[];
}

export interface OnlineStore {
  readonly kind: 'memory' | 'embedded' | 'redis';
  /** True when reads can be answered synchronously (fetchSync). */
  readonly sync: boolean;
  /** False while the store cannot be reached (reads then fail fast and callers fall back). */
  readonly available: boolean;
  /** Why it is not available, short (for feature statuses): 'store circuit open', 'store not connected'. */
  unavailableReason?(): string;
  fetch(groups: readonly GroupRead[], series: readonly SeriesRead[]): Promise<FetchResult>;
  /** Synchronous stores: one group record (codec bytes) or null. */
  groupSync?(group: StoredGroup, id: string): Uint8Array | null;
  /** Synchronous stores: a window aggregation over one series. */
  windowSync?(
    entity: string,
    id: string,
    stream: string,
    nowMs: number,
    windowMs: number,
    aggregation: Aggregation,
    sinceMs?: number,
  ): number | null;
  /** Merges values into the groups (fields not given are kept). */
  writeGroups(writes: readonly GroupWrite[]): Promise<void>;
  /**
   * Applies each event unless its id was applied before (a retry, or a duplicate in the same call):
   * true per event applied now, false per duplicate.
   */
  addEvents(events: readonly EventRecord[], nowMs: number): Promise<boolean[]>;
  close(): Promise<void>;
}

/** Key of a stored group record, shared by the stores and the L1 cache. */
export const groupKey = (group: StoredGroup, id: string): string => `${group.entity}:${id}:v${group.version}`;

const MINUTE = 60_000;

/**
 * Ids of applied events, each until its keepUntil: what makes the in-process store's event writes
 * idempotent. Memory is bounded by the events of the longest window; prune() drops expired ids,
 * touching only the minutes that expired (ids are filed by the minute they expire in).
 */
export class SeenIds {
  readonly #until = new Map<string, number>();
  readonly #byMinute = new Map<number, string[]>();

  has(key: string, nowMs: number): boolean {
    const t = this.#until.get(key);
    return t !== undefined && t > nowMs;
  }

  add(key: string, untilMs: number): void {
    this.#until.set(key, untilMs);
    const m = Math.ceil(untilMs / MINUTE);
    const list = this.#byMinute.get(m);
    if (list === undefined) this.#byMinute.set(m, [key]);
    else list.push(key);
  }

  /** Forgets ids whose time is up; returns how many. */
  prune(nowMs: number): number {
    let dropped = 0;
    for (const [m, keys] of this.#byMinute) {
      if (m * MINUTE > nowMs) continue;
      for (const k of keys) {
        const t = this.#until.get(k);
        // Re-added later with a longer keep: filed under that later minute too.
        if (t !== undefined && t <= nowMs) {
          this.#until.delete(k);
          dropped++;
        }
      }
      this.#byMinute.delete(m);
    }
    return dropped;
  }

  get size(): number {
    return this.#until.size;
  }
}

/** One process, no network: groups as codec bytes in a Map, series in a WindowStore. */
export class MemoryStore implements OnlineStore {
  readonly kind = 'memory';
  readonly sync = true;
  readonly available = true;
  // Keyed by group, then entity id; windows by entity, then stream, then id: no key strings to
  // build per read (building and hashing one costs more than the whole lookup).
  private readonly groups = new Map<StoredGroup, Map<string, Uint8Array>>();
  private readonly windows = new Map<string, Map<string, WindowStore>>();
  /** Applied event ids, keyed `event \0 id`. */
  readonly seen = new SeenIds();
  private readonly pruneTimer: NodeJS.Timeout;

  constructor(streams: readonly StreamSpec[]) {
    for (const s of streams) {
      let byStream = this.windows.get(s.entity);
      if (byStream === undefined) {
        byStream = new Map();
        this.windows.set(s.entity, byStream);
      }
      const ws = new WindowStore({ stream: s.stream });
      for (const w of s.windowsMs) ws.register(s.stream, w);
      byStream.set(s.stream, ws);
    }
    this.pruneTimer = setInterval(() => {
      const now = Date.now();
      for (const byStream of this.windows.values()) for (const ws of byStream.values()) ws.prune(now);
      this.seen.prune(now);
    }, 60_000);
    this.pruneTimer.unref();
  }

  groupSync(group: StoredGroup, id: string): Uint8Array | null {
    return this.groups.get(group)?.get(id) ?? null;
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
    const ws = this.windows.get(entity)?.get(stream);
    return ws === undefined ? null : ws.read(id, nowMs, windowMs, aggregation, sinceMs);
  }

  async fetch(groups: readonly GroupRead[], series: readonly SeriesRead[]): Promise<FetchResult> {
    const now = Date.now();
    const g = groups.map((r) => this.groupSync(r.group, r.id));
    const s = series.map((r) => encodeSnapshot(this.windows.get(r.entity)?.get(r.stream)?.buckets(r.id, r.windowMs) ?? [], now));
    return { groups: g, series: s };
  }

  async writeGroups(writes: readonly GroupWrite[]): Promise<void> {
    for (const w of writes) {
      let byId = this.groups.get(w.group);
      if (byId === undefined) {
        byId = new Map();
        this.groups.set(w.group, byId);
      }
      const old = byId.get(w.id);
      const merged = old ? { ...(decodeGroup(w.group.layout, old) ?? {}), ...w.values } : w.values;
      byId.set(w.id, encodeGroup(w.group.layout, merged));
    }
  }

  async addEvents(events: readonly EventRecord[], nowMs: number): Promise<boolean[]> {
    const out: boolean[] = [];
    for (const r of events) {
      const key = `${r.event}\0${r.eventId}`;
      if (this.seen.has(key, nowMs)) {
        out.push(false);
        continue;
      }
      this.seen.add(key, r.keepUntil);
      for (const e of r.writes) this.windows.get(e.entity)?.get(e.stream)?.add(e.id, e.ts, e.value, nowMs);
      out.push(true);
    }
    return out;
  }

  /** Group records held (entity ids x stored groups), for tests and logs. */
  get size(): number {
    let n = 0;
    for (const byId of this.groups.values()) n += byId.size;
    return n;
  }

  async close(): Promise<void> {
    clearInterval(this.pruneTimer);
  }
}
