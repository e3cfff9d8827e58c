// The feature server: resolves the features a model's input columns are bound to, for one entity,
// per request. Stored groups and realtime windows come from the embedded store synchronously, or
// with Redis from the native L1 cache (groups and window snapshots, see window-cache.ts) and then one
// round trip, shared by every request of the event-loop turn, for whatever L1 lacks; values older
// than their TTL are stale and take their fallback (default | last_known | compute | error); online
// features are computed in dependency order (resolution.ts holds one request's state). Each value carries a status (present, stale, default, missing,
// override) and an age, returned with "debug": true, and a reason when the store could not be read
// for it (circuit open, timed out, not connected). Plans are compiled once per model.

import { badRequest, featureUnavailable, ScorelineError } from '../errors.js';
import { isObject } from '../json.js';
import { decodeGroupInto, encodeGroupArrays } from './codec.js';
import type { FeatureDef } from './types.js';
import { BatchReadBuffer, type NativeCache } from './native-cache.js';
import type { FeatureRegistry, ResolutionPlan } from './plan.js';
import { StoreUnavailableError } from './redis-store.js';
import { groupKey, type EventRecord, type FetchResult, type GroupRead, type OnlineStore, type SeriesRead } from './store.js';
import { DEFAULT, MISSING, OVERRIDE, PRESENT, Resolution, STALE, type Resolved } from './resolution.js';
import { snapshotAtValid, snapshotView, WindowCache } from './window-cache.js';

/** Where a model input column's value comes from. */
type ColumnSource = { kind: 'feature'; slot: number } | { kind: 'request'; field: string };

export interface ModelFeatures {
  readonly plan: ResolutionPlan;
  /** One per model input column, in column order. */
  readonly columns: readonly ColumnSource[];
  readonly columnNames: readonly string[];
  /** Override lookup: feature name and name@version -> slot. */
  readonly overrideSlot: ReadonlyMap<string, number>;
  /** Index into plan.windows per slot, -1 for slots without a window. */
  readonly windowBySlot: Int32Array;
  /** Index into plan.entities of each stored read and of each window. */
  readonly storedEntity: Int32Array;
  readonly windowEntity: Int32Array;
  /** Freshness recorder per slot (stored features), so a request does no metric lookups. */
  readonly freshness: readonly ((ageSeconds: number) => void)[];
}

export interface FeatureObserver {
  cacheLookup(hits: number, misses: number): void;
  fallback(ref: string, kind: string): void;
  /** A recorder of the age (seconds) of one feature's served values; fetched once per plan. */
  freshness(ref: string): (ageSeconds: number) => void;
  storeFailure(): void;
  /** A stored value older than its TTL was found (it took its fallback). */
  stale(ref: string): void;
  /** One request's features were resolved (the denominator of stale ratios). */
  resolution(): void;
}

export interface FeatureServerOptions {
  registry: FeatureRegistry;
  store: OnlineStore;
  /** L1 in front of a remote store; null for the in-process store (nothing to save there). */
  cache: NativeCache | null;
  cacheTtlMs: number;
  negativeTtlMs: number;
  /**
   * Keep realtime window snapshots in L1 too (default true, with a cache and a TTL > 0): a window
   * then misses other replicas' events of up to cacheTtlMs. False reads every window from the store.
   */
  cacheWindows?: boolean;
  /** The store's command timeout: how long a read may still come back after it was sent. */
  storeTimeoutMs?: number;
  observer?: FeatureObserver | undefined;
}

const IGNORE = (): void => undefined;
const NO_OBSERVER: FeatureObserver = {
  cacheLookup() {},
  fallback() {},
  freshness: () => IGNORE,
  storeFailure() {},
  stale() {},
  resolution() {},
};

export class FeatureServer {
  readonly registry: FeatureRegistry;
  readonly store: OnlineStore;
  private readonly cache: NativeCache | null;
  private readonly windows: WindowCache | null;
  private readonly observer: FeatureObserver;
  readonly #keys: string[] = [];
  readonly #batch = new BatchReadBuffer(16 * 1024, 16);
  #batchF64: Float64Array = new Float64Array(0);

  constructor(private readonly opts: FeatureServerOptions) {
    this.registry = opts.registry;
    this.store = opts.store;
    this.cache = opts.cache;
    this.observer = opts.observer ?? NO_OBSERVER;
    this.windows =
      opts.cache !== null && opts.cacheTtlMs > 0 && opts.cacheWindows !== false
        ? new WindowCache({
            cache: opts.cache,
            ttlMs: opts.cacheTtlMs,
            streams: opts.registry.streams,
            inFlightMs: 2 * (opts.storeTimeoutMs ?? 1000) + 1000,
          })
        : null;
  }

  /**
   * Compiles a model's bindings: each column takes `bindings[column]` (a feature ref or
   * `request.<field>`), else the feature of the same name. Throws CONFIG_INVALID naming the column.
   */
  compileModel(columns: readonly string[], bindings: Readonly<Record<string, string>> = {}, where = 'model'): ModelFeatures {
    for (const b of Object.keys(bindings)) {
      if (!columns.includes(b))
        throw new ScorelineError('CONFIG_INVALID', `${where}: bindings name '${b}', which is not one of its features`);
    }
    const refs: string[] = [];
    const sources: ({ kind: 'feature'; ref: string } | { kind: 'request'; field: string })[] = columns.map((c) => {
      const b = bindings[c] ?? c;
      if (b.startsWith('request.')) return { kind: 'request', field: b.slice(8) };
      try {
        refs.push(this.registry.resolveRef(b).ref);
      } catch (e) {
        throw new ScorelineError('CONFIG_INVALID', `${where}: column '${c}' is bound to ${(e as Error).message}`);
      }
      return { kind: 'feature', ref: this.registry.resolveRef(b).ref };
    });
    const plan = this.registry.plan(refs);
    const slotOf = new Map(plan.refs.map((r, i) => [r, plan.outputSlots[i]!]));
    const overrideSlot = new Map<string, number>();
    for (const p of plan.features) {
      overrideSlot.set(p.def.ref, p.slot);
      // A bare name overrides the version this model uses.
      if (!overrideSlot.has(p.def.name) || plan.refs.includes(p.def.ref)) overrideSlot.set(p.def.name, p.slot);
    }
    const windowBySlot = new Int32Array(plan.slotCount).fill(-1);
    plan.windows.forEach((w, i) => {
      windowBySlot[w.slot] = i;
    });
    return {
      plan,
      columns: sources.map((s) => (s.kind === 'request' ? s : { kind: 'feature', slot: slotOf.get(s.ref)! })),
      columnNames: columns,
      overrideSlot,
      windowBySlot,
      storedEntity: Int32Array.from(plan.stored, (x) => plan.entities.indexOf(x.group.entity)),
      freshness: plan.features.map((p) =>
        p.def.type === 'offline' || p.def.type === 'hybrid' ? this.observer.freshness(p.def.ref) : IGNORE,
      ),
      windowEntity: Int32Array.from(plan.windows, (w) => plan.entities.indexOf(w.entity)),
    };
  }

  /**
   * Resolves a model's features for one request body. Synchronous with the in-process store (and
   * with every stored group in L1 and no realtime series); a Promise otherwise.
   */
  resolve(mf: ModelFeatures, entity: unknown, context: unknown, overrides: unknown, now = Date.now()): Resolved | Promise<Resolved> {
    const plan = mf.plan;
    const ids: string[] = [];
    for (let e = 0; e < plan.entities.length; e++) ids.push(this.registry.entityId(plan.entities[e]!, entity));
    if (context !== undefined && !isObject(context)) throw badRequest('"context" must be an object of request fields');
    const ctx = (context ?? EMPTY) as Record<string, unknown>;
    const r = new Resolution(mf, ids, now);
    for (const f of plan.requestFields) r.values[f.slot] = this.requestField(ctx, f.field);
    for (let c = 0; c < mf.columns.length; c++) {
      const col = mf.columns[c]!;
      if (col.kind === 'request') r.row[c] = +this.requestField(ctx, col.field);
    }
    const overridden = this.applyOverrides(mf, overrides, r.status);
    const store = this.store;

    // The in-process store: everything synchronous, no intermediate objects.
    if (store.sync && store.groupSync && store.windowSync) {
      for (let i = 0; i < plan.stored.length; i++) {
        const s = plan.stored[i]!;
        const bytes = store.groupSync(s.group, ids[mf.storedEntity[i]!]!);
        if (bytes !== null) decodeGroupInto(s.group.layout, bytes, r.values, r.ts, s);
      }
      const windowSync = store.windowSync.bind(store);
      return this.finish(r, overridden, (wi, since) => {
        const w = plan.windows[wi]!;
        return windowSync(w.entity, ids[mf.windowEntity[wi]!]!, w.stream, now, w.windowMs, w.aggregation, since);
      });
    }

    // A remote store: L1 first, for groups and window snapshots; then one round trip (shared with
    // every request of this event-loop turn) for whatever L1 does not hold.
    const reads: GroupRead[] = [];
    const readIndex: number[] = [];
    const series: SeriesRead[] = [];
    const seriesIndex: number[] = [];
    let hits = 0;
    const cache = this.cache;
    const wc = this.windows;
    // Every L1 key of the request in one call across the N-API boundary: each crossing has a fixed cost
    // larger than one key's lookup.
    const keys = this.#keys;
    keys.length = 0;
    if (cache !== null) {
      for (let i = 0; i < plan.stored.length; i++) keys.push(groupKey(plan.stored[i]!.group, ids[mf.storedEntity[i]!]!));
      if (wc !== null) for (let wi = 0; wi < plan.windows.length; wi++) keys.push(wc.key(plan.windows[wi]!, ids[mf.windowEntity[wi]!]!));
      if (keys.length > 0) cache.getManyInto(keys, this.#batch);
    }
    const batch = this.#batch;
    for (let i = 0; i < plan.stored.length; i++) {
      const s = plan.stored[i]!;
      if (cache !== null) {
        const at = batch.meta[2 * i]!;
        if (at >= 0 && decodeGroupInto(s.group.layout, batch.data.subarray(at, at + batch.meta[2 * i + 1]!), r.values, r.ts, s)) {
          hits++;
          continue;
        }
      }
      reads.push({ group: s.group, id: ids[mf.storedEntity[i]!]! });
      readIndex.push(i);
    }
    let inBatch = false;
    for (let wi = 0; wi < plan.windows.length; wi++) {
      if (wc !== null) {
        const k = plan.stored.length + wi;
        const at = batch.meta[2 * k]!;
        // Read in place (values in the batch buffer are 8-byte aligned: every length is a multiple of 8).
        let f = this.#batchF64;
        if (f.buffer !== batch.data.buffer)
          f = this.#batchF64 = new Float64Array(batch.data.buffer, batch.data.byteOffset, batch.data.byteLength >> 3);
        if (at >= 0 && (at & 7) === 0 && snapshotAtValid(f, at >> 3, batch.meta[2 * k + 1]!)) {
          r.snapshots[wi] = f;
          r.snapshotAt[wi] = at >> 3;
          inBatch = true;
          hits++;
          continue;
        }
      }
      const w = plan.windows[wi]!;
      series.push({ entity: w.entity, id: ids[mf.windowEntity[wi]!]!, stream: w.stream, windowMs: w.windowMs });
      seriesIndex.push(wi);
    }
    if (cache !== null) this.observer.cacheLookup(hits, reads.length + (wc !== null ? series.length : 0));
    if (reads.length === 0 && series.length === 0) return this.finish(r, overridden, null);
    // A field read: while the store is down or its circuit is open, nothing waits on it.
    if (!store.available) {
      this.observer.storeFailure();
      r.unread(store.unavailableReason?.() ?? 'store unavailable', readIndex, seriesIndex);
      return this.finish(r, overridden, null);
    }
    // The next request reads into the batch buffer: snapshots kept past this turn are copied.
    if (inBatch) {
      for (let wi = 0; wi < plan.windows.length; wi++) {
        const f = r.snapshots[wi];
        if (f !== this.#batchF64) continue;
        const at = r.snapshotAt[wi]!;
        r.snapshots[wi] = f.slice(at, at + 3 + 5 * f[at + 2]!);
        r.snapshotAt[wi] = 0;
      }
    }
    const sentAt = performance.now();
    return store.fetch(reads, series).then(
      (f) => {
        this.absorb(mf, f, reads, readIndex, r);
        for (let k = 0; k < series.length; k++) {
          const bytes = f.series[k]!;
          const s = series[k]!;
          wc?.put(s.entity, s.id, s.stream, s.windowMs, bytes, sentAt);
          r.snapshots[seriesIndex[k]!] = snapshotView(bytes) ?? undefined;
          r.snapshotAt[seriesIndex[k]!] = 0;
        }
        return this.finish(r, overridden, null);
      },
      (e) => {
        if (!(e instanceof StoreUnavailableError)) throw e;
        this.observer.storeFailure();
        r.unread(e.reason, readIndex, seriesIndex);
        return this.finish(r, overridden, null);
      },
    );
  }

  /** Realtime events this replica wrote: cached window snapshots take them in (see window-cache.ts). */
  eventsWritten(records: readonly EventRecord[], applied: readonly boolean[]): void {
    this.windows?.written(records, applied);
  }

  /** Realtime events whose write may or may not have landed. */
  eventsUncertain(records: readonly EventRecord[]): void {
    this.windows?.uncertain(records);
  }

  private requestField(ctx: Record<string, unknown>, field: string): number | boolean {
    const v = ctx[field];
    if (v === undefined) throw badRequest(`context.${field} is required (a request field the features use)`);
    if (typeof v === 'boolean') return v;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`context.${field} must be a finite number or a boolean`);
    return v;
  }

  /** Checks overrides; returns slot -> value (applied after stored values are decoded), or null. */
  private applyOverrides(mf: ModelFeatures, overrides: unknown, status: number[]): Map<number, number | boolean> | null {
    if (overrides === undefined) return null;
    if (!isObject(overrides)) throw badRequest('"features" must be an object of feature overrides');
    const out = new Map<number, number | boolean>();
    for (const key of Object.keys(overrides)) {
      const slot = mf.overrideSlot.get(key);
      if (slot === undefined)
        throw badRequest(
          `features: '${key}' is not a feature this model uses (${[...mf.overrideSlot.keys()].filter((k) => !k.includes('@')).join(', ')})`,
        );
      const def = mf.plan.features[slot]!.def;
      const v = overrides[key];
      const ok =
        def.dtype === 'bool'
          ? typeof v === 'boolean'
          : typeof v === 'number' && Number.isFinite(v) && (def.dtype.startsWith('float') || Number.isInteger(v));
      if (!ok) throw badRequest(`features.${key} must be ${def.dtype === 'bool' ? 'true or false' : `a finite ${def.dtype}`}`);
      out.set(slot, v as number | boolean);
      status[slot] = OVERRIDE;
    }
    return out;
  }

  /** Decodes fetched groups into the slots and caches them (empty groups too, briefly). */
  private absorb(mf: ModelFeatures, f: FetchResult, reads: readonly GroupRead[], readIndex: readonly number[], r: Resolution): void {
    for (let k = 0; k < reads.length; k++) {
      const s = mf.plan.stored[readIndex[k]!]!;
      let bytes = f.groups[k];
      if (bytes === null || bytes === undefined) {
        const empty = s.group.layout.names.map(() => null);
        bytes = encodeGroupArrays(s.group.layout, empty, new Float64Array(empty.length));
        this.cache?.set(groupKey(s.group, reads[k]!.id), bytes, this.opts.negativeTtlMs);
      } else {
        this.cache?.set(groupKey(s.group, reads[k]!.id), bytes, this.opts.cacheTtlMs);
      }
      decodeGroupInto(s.group.layout, bytes, r.values, r.ts, s);
    }
  }

  /** `series` reads the in-process store's windows; null reads the resolution's snapshots. */
  private finish(r: Resolution, overridden: Map<number, number | boolean> | null, series: SeriesAccess | null): Resolution {
    this.observer.resolution();
    const mf = r.mf;
    const plan = mf.plan;
    const { values, ts, status, now } = r;
    let missing: string[] | null = null;
    for (const p of plan.features) {
      const slot = p.slot;
      if (overridden !== null) {
        const o = overridden.get(slot);
        if (o !== undefined) {
          values[slot] = o;
          continue;
        }
      }
      const def = p.def;
      let v: number | boolean | null = null;
      let st = MISSING;
      let stored: number | boolean | null = null;
      if (def.type === 'offline' || def.type === 'hybrid') {
        stored = values[slot] ?? null;
        const t = ts[slot]!;
        if (stored !== null && !Number.isNaN(t)) {
          const age = now - t;
          mf.freshness[slot]!(age > 0 ? age / 1000 : 0);
          if (def.ttlMs === 0 || age <= def.ttlMs) {
            v = stored;
            st = PRESENT;
          } else {
            this.observer.stale(def.ref);
          }
        }
      }
      if (def.type === 'realtime' || (def.type === 'hybrid' && st === PRESENT)) {
        const wi = mf.windowBySlot[slot]!;
        const since = def.type === 'hybrid' ? ts[slot] : undefined;
        const part = series !== null ? series(wi, since) : r.fromSnapshot(wi, since);
        if (part !== undefined) r.windowRead(wi, series === null);
        if (part === undefined || part === null) {
          v = null;
          st = MISSING;
        } else {
          v = def.type === 'hybrid' ? (v as number) + part : part;
          st = PRESENT;
        }
      } else if (def.type === 'online') {
        const x = p.computeSlots!(values);
        if (typeof x === 'boolean' || !Number.isNaN(x)) {
          v = x;
          st = PRESENT;
        }
      }
      if (st === MISSING) {
        const fb = def.fallback;
        if (fb.kind === 'default') {
          v = fb.value;
          st = DEFAULT;
        } else if (fb.kind === 'last_known' && stored !== null) {
          v = stored;
          st = STALE;
        } else if (fb.kind === 'compute' && p.computeSlots) {
          const x = p.computeSlots(values);
          if (typeof x === 'boolean' || !Number.isNaN(x)) {
            v = x;
            st = DEFAULT;
          }
        }
        if (st !== MISSING) this.observer.fallback(def.ref, fb.kind);
        else {
          missing ??= [];
          missing.push(def.ref);
        }
      }
      values[slot] = v;
      status[slot] = st;
    }
    if (missing !== null) {
      const who = plan.entities.map((e, i) => `${e} ${r.ids[i]}`).join(', ');
      throw featureUnavailable(
        `no usable value for feature${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${who} (missing or stale, and the fallback is error)`,
      );
    }
    const row = r.row;
    for (let c = 0; c < mf.columns.length; c++) {
      const col = mf.columns[c]!;
      if (col.kind !== 'feature') continue;
      const x = values[col.slot];
      row[c] = typeof x === 'boolean' ? (x ? 1 : 0) : (x as number);
    }
    return r;
  }
}

const EMPTY: Record<string, unknown> = {};

/** Window part of feature `wi` of the plan (after `since` for hybrids); undefined when unavailable. */
type SeriesAccess = (wi: number, since: number | undefined) => number | null | undefined;

export type { FeatureDef };
export type { FeatureDebug, Resolved, ValueStatus } from './resolution.js';
