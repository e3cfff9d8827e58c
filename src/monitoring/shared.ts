// Monitoring shared by the replicas of one store: every replica writes its per-minute and per-hour
// buckets of each version (counts, the HDR latency histogram, score and feature bins: all of it
// adds up exactly) to the store every `shareMs`, and a merged view of a window is this replica's own
// live buckets plus the other replicas' stored cells of that window. So the snapshot, the dashboard
// and the alert rules read the same figures on every replica, and counts, PSI and AUC do not depend
// on which replica served a request.
// The request path never waits on the store: buckets are written from a timer. While the store
// cannot be reached, closed minutes and hours wait in a bounded queue (the open ones are always
// written whole, as they stand) and go at the next share that succeeds; a cell pushed out of a full
// queue is counted as dropped, and failures are counted and logged once per episode.

import { round6 } from '../numbers.js';
import type { MonitoringCell, MonitoringRecords, SharedCell } from '../store/types.js';
import { type Bucket, type BucketJSON, histogram, type Window } from './buckets.js';
import type { HdrHistogram } from './hdr.js';
import type { VersionMonitor } from './version-monitor.js';

const MINUTE = 60_000;
const HOUR = 3_600_000;

/** Where the sharing reports its failures and recoveries (a pino logger fits). */
export interface ShareLog {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface SharedMonitoringOptions {
  records: MonitoringRecords;
  /** This replica's id: its own cells are read live, never from the store. */
  replica: string;
  log: ShareLog;
  /** Closed cells kept while the store cannot be reached (default 10,000); beyond it the oldest are dropped. */
  maxPending?: number;
  /** Figures of the version's last evaluation written with its minute (history shows them). */
  evaluationOf?: (vm: VersionMonitor) => Record<string, unknown> | null;
}

/** How a merged view came out: how many replicas it holds, and whether the others' part is current. */
export interface MergeStatus {
  /** Replica processes whose cells are in the view, this one included (a restarted replica once per life). */
  replicas: number;
  /** partial: the store could not be read, and the others' cells are the last ones read (or none). */
  state: 'merged' | 'partial';
  reason: string | null;
}

/** The sharing's health, for /v1/monitoring and /metrics. */
export interface ShareStatus {
  state: 'ok' | 'failing';
  /** Cells written since start. */
  shared: number;
  /** Failed writes since start. */
  errors: number;
  /** Closed cells waiting for the store. */
  pending: number;
  /** Closed cells never written: pushed out of the full queue while the store was away. */
  dropped: number;
  last_error: string | null;
  last_error_at: string | null;
}

interface Pending {
  vm: VersionMonitor;
  span: 'minute' | 'hour';
  start: number;
  bucket: Bucket;
  ref: string;
}

/** A cell's reported rate counts only while the replica keeps writing it. */
const FRESH_MS = 10_000;

export class SharedMonitoring {
  private readonly pending = new Map<string, Pending>();
  private readonly maxPending: number;
  /** The open minute's counts at the last share, per version: an idle version is not written again. */
  private readonly lastOpen = new Map<VersionMonitor, string>();
  private readonly lastGood = new Map<string, { cells: SharedCell[]; rateCells: SharedCell[] }>();
  private sharing: Promise<void> | null = null;
  shared = 0;
  errors = 0;
  dropped = 0;
  private failingSince: number | null = null;
  private lastError: string | null = null;
  private lastErrorAt: number | null = null;

  constructor(private readonly opts: SharedMonitoringOptions) {
    this.maxPending = opts.maxPending ?? 10_000;
  }

  get replica(): string {
    return this.opts.replica;
  }

  /** A minute or hour of a version closed: it is written at the next share (once more, final). */
  closed(vm: VersionMonitor, span: 'minute' | 'hour', start: number, bucket: Bucket): void {
    const key = `${vm.model}\u0000${vm.loaded.versionNumber}\u0000${span}\u0000${start}`;
    this.pending.delete(key);
    this.pending.set(key, { vm, span, start, bucket, ref: vm.stats.key });
    while (this.pending.size > this.maxPending) {
      const oldest = this.pending.keys().next().value as string;
      this.pending.delete(oldest);
      this.dropped++;
    }
  }

  /** Writes the closed cells waiting and every version's open minute and hour; one write at a time. */
  share(vms: readonly VersionMonitor[], now = Date.now()): Promise<void> {
    if (this.sharing !== null) return this.sharing;
    this.sharing = this.write(vms, now).finally(() => {
      this.sharing = null;
    });
    return this.sharing;
  }

  private async write(vms: readonly VersionMonitor[], now: number): Promise<void> {
    // Reading the open cells first closes a minute that has passed, which queues it for this write.
    const opens = vms.filter((vm) => vm.enabled).map((vm) => [vm, vm.stats.open(now)] as const);
    const sent = [...this.pending.entries()];
    const cells: MonitoringCell[] = sent.map(([, p]) => this.cell(p.vm, p.span, p.start, p.bucket, p.ref, null));
    const opened: [VersionMonitor, string][] = [];
    for (const [vm, open] of opens) {
      const m = open.minute.bucket;
      const mark = `${vm.stats.key}:${open.minute.start}:${m.requests}:${m.errors}:${m.predictions}`;
      if (this.lastOpen.get(vm) === mark) continue;
      const ref = vm.stats.key;
      cells.push(this.cell(vm, 'minute', open.minute.start, m, ref, vm.volumeSnapshot().rps));
      cells.push(this.cell(vm, 'hour', open.hour.start, open.hour.bucket, ref, null));
      opened.push([vm, mark]);
    }
    if (cells.length === 0) return;
    try {
      await this.opts.records.putCells(this.opts.replica, cells);
    } catch (e) {
      this.errors++;
      this.lastError = (e as Error).message;
      this.lastErrorAt = Date.now();
      if (this.failingSince === null) {
        this.failingSince = this.lastErrorAt;
        this.opts.log.error(
          { err: this.lastError, pending: this.pending.size },
          'monitoring: the shared store cannot be written; closed minutes wait here and are written when it is back',
        );
      }
      return;
    }
    for (const [key, p] of sent) if (this.pending.get(key) === p) this.pending.delete(key);
    for (const [vm, mark] of opened) this.lastOpen.set(vm, mark);
    this.shared += cells.length;
    if (this.failingSince !== null) {
      this.opts.log.warn(
        { failedForMs: Date.now() - this.failingSince, written: cells.length, dropped: this.dropped },
        'monitoring: the shared store is written again',
      );
      this.failingSince = null;
    }
  }

  private cell(
    vm: VersionMonitor,
    span: 'minute' | 'hour',
    start: number,
    bucket: Bucket,
    ref: string,
    rps: number | null,
  ): MonitoringCell {
    const evaluation = span === 'minute' ? (this.opts.evaluationOf?.(vm) ?? null) : null;
    const data = JSON.stringify(evaluation === null ? bucket.toJSON() : { ...bucket.toJSON(), evaluation });
    return { model: vm.model, version: vm.loaded.versionNumber, span, start, ref, data, rps };
  }

  /**
   * The other replicas' part of a window, merged into `into` (which holds this replica's own view),
   * with their current request rate. When the store cannot be read, the last cells read are used
   * and the status says the view is partial.
   */
  async mergeOthers(vm: VersionMonitor, window: Window, now: number, into: Bucket): Promise<MergeStatus & { rps: number }> {
    const q = {
      model: vm.model,
      version: vm.loaded.versionNumber,
      ref: vm.stats.key,
      exceptReplica: this.opts.replica,
    };
    const cacheKey = `${q.model}\u0000${q.version}\u0000${q.ref}\u0000${window}`;
    let cells: SharedCell[];
    let rateCells: SharedCell[];
    let reason: string | null = null;
    try {
      rateCells = await this.opts.records.cells({ ...q, span: 'minute', since: now - HOUR });
      cells =
        window === '1h'
          ? rateCells
          : await this.opts.records.cells({
              ...q,
              span: 'hour',
              since: window === 'all' ? 0 : now - (window === '24h' ? 24 * HOUR : 7 * 24 * HOUR),
            });
      this.lastGood.set(cacheKey, { cells, rateCells });
    } catch (e) {
      reason = `the shared store could not be read: ${(e as Error).message}`;
      const last = this.lastGood.get(cacheKey);
      cells = last?.cells ?? [];
      rateCells = last?.rateCells ?? [];
    }
    const replicas = new Set<string>();
    for (const c of cells) {
      try {
        into.mergeJSON(c.data, vm.stats.baselines);
        replicas.add(c.replica);
      } catch {
        reason ??= `a cell of replica ${c.replica} does not fit this version's reference and was left out`;
      }
    }
    // Each replica's newest open minute carries its current rate.
    const newest = new Map<string, SharedCell>();
    for (const c of rateCells) if (c.ageMs <= FRESH_MS && (newest.get(c.replica)?.start ?? -1) < c.start) newest.set(c.replica, c);
    let rps = 0;
    for (const c of newest.values()) if (c.start >= now - (now % MINUTE) - MINUTE) rps += c.rps ?? 0;
    return { replicas: replicas.size + 1, state: reason === null ? 'merged' : 'partial', reason, rps };
  }

  /** The history of a version per minute over [from, to], every replica's cells (this one's as shared) added up. */
  async history(model: string, version: number, from: number, to: number): Promise<Record<string, unknown>[]> {
    const rows = await this.opts.records.range({ model, version, span: 'minute', from: from - (from % MINUTE), to });
    const minutes = new Map<
      number,
      { requests: number; errors: number; predictions: number; latency: HdrHistogram; replicas: number; evaluation: unknown }
    >();
    const closedBefore = Date.now() - (Date.now() % MINUTE);
    for (const r of rows) {
      // A point per closed minute, as one replica's history has.
      if (r.start >= closedBefore) continue;
      const d = r.data as BucketJSON & { evaluation?: unknown };
      let m = minutes.get(r.start);
      if (m === undefined) {
        m = { requests: 0, errors: 0, predictions: 0, latency: histogram(), replicas: 0, evaluation: null };
        minutes.set(r.start, m);
      }
      m.requests += d.requests;
      m.errors += d.errors;
      m.predictions += d.predictions;
      m.latency.addJSON(d.latency);
      m.replicas++;
      // Every replica evaluates the merged view: any one's figures stand for the minute.
      m.evaluation ??= d.evaluation ?? null;
    }
    return [...minutes.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([at, m]) => {
        const l = m.latency;
        const n = l.totalCount;
        return {
          at,
          requests: m.requests,
          rps: round6(m.requests / 60),
          p50_ms: n === 0 ? null : l.getValueAtPercentile(50) / 1000,
          p95_ms: n === 0 ? null : l.getValueAtPercentile(95) / 1000,
          p99_ms: n === 0 ? null : l.getValueAtPercentile(99) / 1000,
          error_rate: m.requests === 0 ? null : round6(m.errors / m.requests),
          predictions: m.predictions,
          ...(m.evaluation !== null && typeof m.evaluation === 'object' ? m.evaluation : {}),
          replicas: m.replicas,
        };
      });
  }

  status(): ShareStatus {
    return {
      state: this.failingSince === null ? 'ok' : 'failing',
      shared: this.shared,
      errors: this.errors,
      pending: this.pending.size,
      dropped: this.dropped,
      last_error: this.lastError,
      last_error_at: this.lastErrorAt === null ? null : new Date(this.lastErrorAt).toISOString(),
    };
  }
}
