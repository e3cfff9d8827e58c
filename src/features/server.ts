// The feature server: resolves the features a model's input columns are bound to, for one entity,
// per request. Stored groups come from the native L1 cache, then the online store in one round trip
// for everything missing (realtime series always from the store); values older than their TTL are
// stale and take their fallback (default | last_known | compute | error); online features are
// computed in dependency order. Each value carries a status (present, stale, default, missing,
// override) and an age, returned with "debug": true. Plans are compiled once per model.

import { badRequest, featureUnavailable, ScorelineError } from '../errors.js';
import { decodeGroupInto, encodeGroupArrays } from './codec.js';
import type { FeatureDef } from './definitions.js';
import type { NativeCache } from './native-cache.js';
import type { FeatureRegistry, ResolutionPlan } from './plan.js';
import { StoreUnavailableError } from './redis-store.js';
import { groupKey, type FetchResult, type GroupRead, type OnlineStore, type SeriesRead, type SeriesReader } from './store.js';

export type ValueStatus = 'present' | 'stale' | 'default' | 'missing' | 'override';
const STATUS: readonly ValueStatus[] = ['present', 'stale', 'default', 'missing', 'override'];
const PRESENT = 0;
const STALE = 1;
const DEFAULT = 2;
const MISSING = 3;
const OVERRIDE = 4;

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
}

export interface Resolved {
  /** The model input row, in column order. */
  readonly row: Float64Array;
  readonly entityIds: Readonly<Record<string, string>>;
  /** Per feature of the plan (debug): value, status, age in ms (null when not stored). */
  debug(): Record<string, { value: number | boolean | null; status: ValueStatus; age_ms: number | null }>;
}

export interface FeatureObserver {
  cacheLookup(hits: number, misses: number): void;
  fallback(ref: string, kind: string): void;
  freshness(ref: string, ageSeconds: number): void;
  storeFailure(): void;
}

export interface FeatureServerOptions {
  registry: FeatureRegistry;
  store: OnlineStore;
  /** L1 in front of a remote store; null for the in-process store (nothing to save there). */
  cache: NativeCache | null;
  cacheTtlMs: number;
  negativeTtlMs: number;
  observer?: FeatureObserver;
}

const NO_OBSERVER: FeatureObserver = { cacheLookup() {}, fallback() {}, freshness() {}, storeFailure() {} };

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export class FeatureServer {
  readonly registry: FeatureRegistry;
  readonly store: OnlineStore;
  private readonly cache: NativeCache | null;
  private readonly observer: FeatureObserver;

  constructor(private readonly opts: FeatureServerOptions) {
    this.registry = opts.registry;
    this.store = opts.store;
    this.cache = opts.cache;
    this.observer = opts.observer ?? NO_OBSERVER;
  }

  /**
   * Compiles a model's bindings: each column takes `bindings[column]` (a feature ref or
   * `request.<field>`), else the feature of the same name. Throws CONFIG_INVALID naming the column.
   */
  compileModel(columns: readonly string[], bindings: Readonly<Record<string, string>> = {}, where = 'model'): ModelFeatures {
    for (const b of Object.keys(bindings)) {
      if (!columns.includes(b)) throw new ScorelineError('CONFIG_INVALID', `${where}: bindings name '${b}', which is not one of its features`);
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
    plan.windows.forEach((w, i) => (windowBySlot[w.slot] = i));
    return {
      plan,
      columns: sources.map((s) => (s.kind === 'request' ? s : { kind: 'feature', slot: slotOf.get(s.ref)! })),
      columnNames: columns,
      overrideSlot,
      windowBySlot,
    };
  }

  /**
   * Resolves a model's features for one request body. Synchronous with the in-process store (and
   * with every stored group in L1 and no realtime series); a Promise otherwise.
   */
  resolve(mf: ModelFeatures, entity: unknown, context: unknown, overrides: unknown, now = Date.now()): Resolved | Promise<Resolved> {
    const plan = mf.plan;
    const ids: Record<string, string> = {};
    for (const e of plan.entities) ids[e] = this.registry.entityId(e, entity);
    if (context !== undefined && !isObject(context)) throw badRequest('"context" must be an object of request fields');
    const ctx = (context ?? {}) as Record<string, unknown>;
    const n = plan.slotCount;
    const values: (number | boolean | null)[] = new Array<number | boolean | null>(n).fill(null);
    const ts = new Float64Array(n).fill(NaN);
    const status = new Uint8Array(n).fill(MISSING);
    for (const r of plan.requestFields) values[r.slot] = this.requestField(ctx, r.field);
    const row = new Float64Array(mf.columns.length);
    for (let c = 0; c < mf.columns.length; c++) {
      const col = mf.columns[c]!;
      if (col.kind === 'request') row[c] = +this.requestField(ctx, col.field);
    }
    const overridden = this.applyOverrides(mf, overrides, status);

    // Stored groups: L1 first, then the store for the rest; realtime series always from the store.
    const reads: GroupRead[] = [];
    const readIndex: number[] = [];
    let hits = 0;
    for (let i = 0; i < plan.stored.length; i++) {
      const s = plan.stored[i]!;
      const id = ids[s.group.entity]!;
      const bytes = this.cache?.get(groupKey(s.group, id));
      if (bytes !== undefined && decodeGroupInto(s.group.layout, bytes, values, ts, s)) {
        hits++;
        continue;
      }
      reads.push({ group: s.group, id });
      readIndex.push(i);
    }
    if (this.cache !== null) this.observer.cacheLookup(hits, reads.length);
    const series: SeriesRead[] = plan.windows.map((w) => ({ entity: w.entity, id: ids[w.entity]!, stream: w.stream, windowMs: w.windowMs }));
    if (reads.length === 0 && series.length === 0) return this.finish(mf, row, values, ts, status, overridden, null, ids, now);
    if (this.store.sync && this.store.fetchSync) {
      return this.finish(mf, row, values, ts, status, overridden, this.absorb(mf, this.store.fetchSync(reads, series), reads, readIndex, values, ts), ids, now);
    }
    if (!this.store.available) {
      this.observer.storeFailure();
      return this.finish(mf, row, values, ts, status, overridden, null, ids, now);
    }
    return this.store.fetch(reads, series).then(
      (r) => this.finish(mf, row, values, ts, status, overridden, this.absorb(mf, r, reads, readIndex, values, ts), ids, now),
      (e) => {
        if (!(e instanceof StoreUnavailableError)) throw e;
        this.observer.storeFailure();
        return this.finish(mf, row, values, ts, status, overridden, null, ids, now);
      },
    );
  }

  private requestField(ctx: Record<string, unknown>, field: string): number | boolean {
    const v = ctx[field];
    if (v === undefined) throw badRequest(`context.${field} is required (a request field the features use)`);
    if (typeof v === 'boolean') return v;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`context.${field} must be a finite number or a boolean`);
    return v;
  }

  /** Checks overrides; returns slot -> value (applied after stored values are decoded), or null. */
  private applyOverrides(mf: ModelFeatures, overrides: unknown, status: Uint8Array): Map<number, number | boolean> | null {
    if (overrides === undefined) return null;
    if (!isObject(overrides)) throw badRequest('"features" must be an object of feature overrides');
    const out = new Map<number, number | boolean>();
    for (const key of Object.keys(overrides)) {
      const slot = mf.overrideSlot.get(key);
      if (slot === undefined) throw badRequest(`features: '${key}' is not a feature this model uses (${[...mf.overrideSlot.keys()].filter((k) => !k.includes('@')).join(', ')})`);
      const def = mf.plan.features[slot]!.def;
      const v = overrides[key];
      const ok = def.dtype === 'bool' ? typeof v === 'boolean' : typeof v === 'number' && Number.isFinite(v) && (def.dtype.startsWith('float') || Number.isInteger(v));
      if (!ok) throw badRequest(`features.${key} must be ${def.dtype === 'bool' ? 'true or false' : `a finite ${def.dtype}`}`);
      out.set(slot, v as number | boolean);
      status[slot] = OVERRIDE;
    }
    return out;
  }

  /** Decodes fetched groups into the slots and caches them (empty groups too, briefly). */
  private absorb(mf: ModelFeatures, r: FetchResult, reads: readonly GroupRead[], readIndex: readonly number[], values: (number | boolean | null)[], ts: Float64Array): SeriesReader[] {
    for (let k = 0; k < reads.length; k++) {
      const s = mf.plan.stored[readIndex[k]!]!;
      let bytes = r.groups[k];
      if (bytes === null || bytes === undefined) {
        const empty = s.group.layout.names.map(() => null);
        bytes = encodeGroupArrays(s.group.layout, empty, new Float64Array(empty.length));
        this.cache?.set(groupKey(s.group, reads[k]!.id), bytes, this.opts.negativeTtlMs);
      } else {
        this.cache?.set(groupKey(s.group, reads[k]!.id), bytes, this.opts.cacheTtlMs);
      }
      decodeGroupInto(s.group.layout, bytes, values, ts, s);
    }
    return r.series;
  }

  private finish(
    mf: ModelFeatures,
    row: Float64Array,
    values: (number | boolean | null)[],
    ts: Float64Array,
    status: Uint8Array,
    overridden: Map<number, number | boolean> | null,
    series: SeriesReader[] | null,
    ids: Record<string, string>,
    now: number,
  ): Resolved {
    const plan = mf.plan;
    const missing: string[] = [];
    for (const p of plan.features) {
      const slot = p.slot;
      const o = overridden?.get(slot);
      if (o !== undefined) {
        values[slot] = o;
        continue;
      }
      const def = p.def;
      let v: number | boolean | null = null;
      let st = MISSING;
      let stored: number | boolean | null = null;
      if (def.type === 'offline' || def.type === 'hybrid') {
        stored = values[slot] ?? null;
        const age = Number.isNaN(ts[slot]!) ? NaN : now - ts[slot]!;
        if (stored !== null && !Number.isNaN(age)) this.observer.freshness(def.ref, Math.max(0, age) / 1000);
        const fresh = stored !== null && (def.ttlMs === 0 || age <= def.ttlMs);
        if (fresh) {
          v = stored;
          st = PRESENT;
        }
      }
      if (def.type === 'realtime' || (def.type === 'hybrid' && st === PRESENT)) {
        const wi = mf.windowBySlot[slot]!;
        const w = plan.windows[wi]!;
        const reader = series?.[wi];
        const part = reader ? reader(now, w.windowMs, w.aggregation, w.hybrid ? ts[slot] : undefined) : undefined;
        if (part === undefined || part === null) {
          v = null;
          st = MISSING;
        } else {
          v = w.hybrid ? (v as number) + part : part;
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
        else missing.push(def.ref);
      }
      values[slot] = v;
      status[slot] = st;
    }
    if (missing.length > 0) {
      const who = Object.entries(ids).map(([e, id]) => `${e} ${id}`).join(', ');
      throw featureUnavailable(`no usable value for feature${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${who} (missing or stale, and the fallback is error)`);
    }
    for (let c = 0; c < mf.columns.length; c++) {
      const col = mf.columns[c]!;
      if (col.kind !== 'feature') continue;
      const x = values[col.slot];
      row[c] = typeof x === 'boolean' ? (x ? 1 : 0) : (x as number);
    }
    return {
      row,
      entityIds: ids,
      debug: () => {
        const out: Record<string, { value: number | boolean | null; status: ValueStatus; age_ms: number | null }> = {};
        for (const p of plan.features) {
          const t = ts[p.slot]!;
          out[p.def.ref] = {
            value: values[p.slot] ?? null,
            status: STATUS[status[p.slot]!]!,
            age_ms: Number.isNaN(t) || status[p.slot] === OVERRIDE ? null : Math.max(0, Math.round(now - t)),
          };
        }
        return out;
      },
    };
  }
}

export type { FeatureDef };
