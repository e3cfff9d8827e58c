// The online store behind feature serving: stored groups (offline and hybrid values, one record per
// entity id and feature version, as codec bytes) and realtime event series (time buckets). Two
// implementations with one contract: the in-process MemoryStore (one replica, no Redis, synchronous)
// and RedisStore (shared by every replica). Both are read in one round trip per request.

import { decodeGroup, encodeGroup, type FeatureValue } from './codec.js';
import type { StoredGroup, StreamSpec } from './plan.js';
import { WindowStore, windowKey, type Aggregation } from './windows.js';

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

/** Answers a window aggregation over one series as of `nowMs` (after `sinceMs` for hybrids). */
export type SeriesReader = (nowMs: number, windowMs: number, aggregation: Aggregation, sinceMs?: number) => number | null;

export interface FetchResult {
  /** Codec bytes per group read; null when the store holds nothing for that entity id and version. */
  readonly groups: (Uint8Array | null)[];
  readonly series: SeriesReader[];
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

export interface OnlineStore {
  readonly kind: 'memory' | 'redis';
  /** True when reads can be answered synchronously (fetchSync). */
  readonly sync: boolean;
  /** False while the store cannot be reached (reads then fail fast and callers fall back). */
  readonly available: boolean;
  fetch(groups: readonly GroupRead[], series: readonly SeriesRead[]): Promise<FetchResult>;
  fetchSync?(groups: readonly GroupRead[], series: readonly SeriesRead[]): FetchResult;
  /** Merges values into the groups (fields not given are kept). */
  writeGroups(writes: readonly GroupWrite[]): Promise<void>;
  addEvents(events: readonly EventWrite[], nowMs: number): Promise<void>;
  close(): Promise<void>;
}

/** Key of a stored group record, shared by the stores and the L1 cache. */
export const groupKey = (group: StoredGroup, id: string): string => `${group.entity}:${id}:v${group.version}`;

/** One process, no network: groups as codec bytes in a Map, series in a WindowStore. */
export class MemoryStore implements OnlineStore {
  readonly kind = 'memory';
  readonly sync = true;
  readonly available = true;
  private readonly groups = new Map<string, Uint8Array>();
  private readonly windows = new WindowStore();
  private readonly pruneTimer: NodeJS.Timeout;

  constructor(streams: readonly StreamSpec[]) {
    for (const s of streams) for (const w of s.windowsMs) this.windows.register(s.stream, w);
    this.pruneTimer = setInterval(() => this.windows.prune(Date.now()), 60_000);
    this.pruneTimer.unref();
  }

  fetchSync(groups: readonly GroupRead[], series: readonly SeriesRead[]): FetchResult {
    const g: (Uint8Array | null)[] = [];
    for (const r of groups) g.push(this.groups.get(groupKey(r.group, r.id)) ?? null);
    const s: SeriesReader[] = [];
    for (const r of series) {
      const key = windowKey(r.entity, r.id, r.stream);
      s.push((now, windowMs, aggregation, since) => this.windows.read(key, now, windowMs, aggregation, since));
    }
    return { groups: g, series: s };
  }

  async fetch(groups: readonly GroupRead[], series: readonly SeriesRead[]): Promise<FetchResult> {
    return this.fetchSync(groups, series);
  }

  async writeGroups(writes: readonly GroupWrite[]): Promise<void> {
    for (const w of writes) {
      const key = groupKey(w.group, w.id);
      const old = this.groups.get(key);
      const merged = old ? { ...(decodeGroup(w.group.layout, old) ?? {}), ...w.values } : w.values;
      this.groups.set(key, encodeGroup(w.group.layout, merged));
    }
  }

  async addEvents(events: readonly EventWrite[], nowMs: number): Promise<void> {
    for (const e of events) this.windows.add(windowKey(e.entity, e.id, e.stream), e.ts, e.value, nowMs);
  }

  /** Entity ids held, for tests and the demo's startup log. */
  get size(): number {
    return this.groups.size;
  }

  async close(): Promise<void> {
    clearInterval(this.pruneTimer);
  }
}
