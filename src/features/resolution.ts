// One request's feature resolution (what FeatureServer.resolve fills): slot values, event times and
// statuses, the model row, the window snapshots it read, and the debug view built on demand from them.

import type { ModelFeatures } from './server.js';
import { aggregateSnapshot, snapshotReadAt } from './window-cache.js';

export type ValueStatus = 'present' | 'stale' | 'default' | 'missing' | 'override';
const STATUS: readonly ValueStatus[] = ['present', 'stale', 'default', 'missing', 'override'];
export const PRESENT = 0;
export const STALE = 1;
export const DEFAULT = 2;
export const MISSING = 3;
export const OVERRIDE = 4;

export interface Resolved {
  /** The model input row, in column order. */
  readonly row: readonly number[];
  readonly entityIds: Readonly<Record<string, string>>;
  /**
   * Per feature of the plan (debug): value, status, age in ms (null when not stored), and why the
   * store did not give it (`reason`), only for values that took a fallback because it could not be read.
   */
  debug(): Record<string, FeatureDebug>;
}

export interface FeatureDebug {
  value: number | boolean | null;
  status: ValueStatus;
  age_ms: number | null;
  /**
   * Realtime and hybrid values whose window was read: how old the store's view it was aggregated
   * from is. 0 when read from the store for this request (or held in process); with Redis, a window
   * served from L1 holds this replica's events and misses other replicas' events of the last
   * window_age_ms (at most the L1 TTL).
   */
  window_age_ms?: number;
  reason?: string;
}

/** One request's resolution: slots, statuses and the model row, with the debug view on demand. */
export class Resolution implements Resolved {
  readonly values: (number | boolean | null)[] = [];
  readonly ts: number[] = [];
  readonly status: number[] = [];
  readonly row: number[] = [];
  /** Per plan window: the snapshot of its series (remote stores), once read from L1 or the store. */
  readonly snapshots: (Float64Array | undefined)[] = [];
  /** Where each snapshot starts in its array (f64 index): snapshots are read in place. */
  readonly snapshotAt: number[] = [];
  /** Set when the store could not be read: why, and which of plan.stored and plan.windows were not. */
  storeReason: string | null = null;
  private unreadStored: readonly number[] | null = null;
  private unreadWindows: readonly number[] | null = null;
  /** Per plan window, when the series it was read from was read from the store (epoch ms); null: none read. */
  private windowReadAt: number[] | null = null;

  constructor(
    readonly mf: ModelFeatures,
    readonly ids: readonly string[],
    readonly now: number,
  ) {
    const n = mf.plan.slotCount;
    for (let i = 0; i < n; i++) {
      this.values.push(null);
      this.ts.push(NaN);
      this.status.push(MISSING);
    }
    for (let c = 0; c < mf.columns.length; c++) this.row.push(0);
  }

  get entityIds(): Record<string, string> {
    const out: Record<string, string> = {};
    this.mf.plan.entities.forEach((e, i) => {
      out[e] = this.ids[i]!;
    });
    return out;
  }

  unread(reason: string, readIndex: readonly number[], windowIndex: readonly number[]): void {
    this.storeReason = reason;
    this.unreadStored = readIndex;
    this.unreadWindows = windowIndex;
  }

  fromSnapshot(wi: number, since: number | undefined): number | null | undefined {
    const f = this.snapshots[wi];
    if (f === undefined) return undefined;
    const w = this.mf.plan.windows[wi]!;
    return aggregateSnapshot(f, this.now, w.windowMs, w.aggregation, since, this.snapshotAt[wi]);
  }

  /** Window `wi` gave a value: from a snapshot (its read time), or from the in-process store (now). */
  windowRead(wi: number, fromSnapshot: boolean): void {
    this.windowReadAt ??= [];
    const at = this.windowReadAt;
    at[wi] = fromSnapshot ? snapshotReadAt(this.snapshots[wi]!, this.snapshotAt[wi]) : this.now;
  }

  debug(): Record<string, FeatureDebug> {
    const out: Record<string, FeatureDebug> = {};
    let unread: Set<number> | null = null;
    const plan = this.mf.plan;
    if (this.storeReason !== null) {
      unread = new Set(this.unreadWindows!.map((wi) => plan.windows[wi]!.slot));
      for (const i of this.unreadStored!) for (const slot of plan.stored[i]!.slots) unread.add(slot);
    }
    for (const p of plan.features) {
      const t = this.ts[p.slot]!;
      const st = this.status[p.slot]!;
      const d: FeatureDebug = {
        value: this.values[p.slot] ?? null,
        status: STATUS[st]!,
        age_ms: Number.isNaN(t) || st === OVERRIDE ? null : Math.max(0, Math.round(this.now - t)),
      };
      const wi = this.mf.windowBySlot[p.slot]!;
      const readAt = wi >= 0 && st !== OVERRIDE ? this.windowReadAt?.[wi] : undefined;
      if (readAt !== undefined) d.window_age_ms = Math.max(0, Math.round(this.now - readAt));
      if (unread !== null && st !== PRESENT && st !== OVERRIDE && unread.has(p.slot)) d.reason = this.storeReason!;
      out[p.def.ref] = d;
    }
    return out;
  }
}
