// What is recorded for one model version as it serves: Prometheus cells (requests by variant,
// route and status class, durations, queue and compute times, batch sizes), an exact all-time
// latency histogram, recent volume, and per batch the scores and inputs of every row into the
// windowed statistics (drift, prediction distribution) and the prediction log. Per request this is
// a few counter updates; per row a score read and a few comparisons.

import { storeUnavailable } from '../errors.js';
import type { Batch, BatchObserver, LoadedModel, RunResult } from '../inference/index.js';
import { WindowedStats, type Baselines } from './buckets.js';
import { LatencyRecorder, RateCounter } from './latency.js';
import type { LogStream, PredictionLog } from './prediction-log.js';
import type { CounterCell, CounterFamily, HistogramCell, HistogramFamily } from './prometheus.js';

/** How a request came in; `explain` is any request that asked for explanations, whatever carried it. */
export type Route = 'infer' | 'predict' | 'stream' | 'score' | 'grpc' | 'explain';
export const ROUTES: readonly Route[] = ['infer', 'predict', 'stream', 'score', 'grpc', 'explain'];
const ROUTE_INDEX: Record<Route, number> = { infer: 0, predict: 1, stream: 2, score: 3, grpc: 4, explain: 5 };
export const CLASSES = ['2xx', '4xx', '5xx'] as const;

/** Sub-millisecond resolution where scoreline lives, seconds at the tail. */
export const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];
export const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

export const statusClass = (status: number): number => (status < 400 ? 0 : status < 500 ? 1 : 2);
/** Errors for the error rate: server-side failures and load shedding, not client mistakes. */
export const isError = (status: number): boolean => status >= 500 || status === 429;

export interface VersionMetrics {
  requests: CounterFamily;
  duration: HistogramFamily;
  queue: HistogramFamily;
  compute: HistogramFamily;
  batch: HistogramFamily;
}

export interface VolumeSnapshot {
  requests: number;
  errors: number;
  rps: number;
  error_rate: number | null;
}

export class VersionMonitor implements BatchObserver {
  readonly latency = new LatencyRecorder();
  readonly volume = new RateCounter(60);
  readonly errors = new RateCounter(60);
  stats: WindowedStats;
  /** Input columns recorded per prediction (0 when the model has no named features). */
  private readonly width: number;
  /**
   * Per feature, for a categorical one (a BYTES input's column): its category -> index in the
   * reference's categories, so a row is numbers throughout (index = categories.length: a category
   * the reference never had; NaN: missing, or no reference yet). Null for numeric features.
   */
  private codes: (Map<string, number> | null)[] = [];
  /** One row's feature values, when they have to be gathered (several inputs, categories). */
  private readonly scratch: Float32Array;
  /** The single numeric input holds every feature in order: rows are read in place. */
  private readonly inPlace: boolean;
  private readonly variants = new Map<string, { requests: CounterCell[][]; duration: HistogramCell[] }>();
  private readonly queueChild: HistogramCell;
  private readonly computeChild: HistogramCell;
  private readonly batchChild: HistogramCell;
  readonly model: string;
  readonly version: string;

  constructor(
    readonly loaded: LoadedModel,
    private readonly m: VersionMetrics,
    private readonly log: PredictionLog | null,
    readonly enabled: boolean,
  ) {
    this.model = loaded.name;
    this.version = loaded.version;
    const labels = { model: this.model, version: this.version };
    this.queueChild = m.queue.cell(labels);
    this.computeChild = m.compute.cell(labels);
    this.batchChild = m.batch.cell(labels);
    const f = loaded.features;
    this.width = f?.names.length ?? 0;
    this.inPlace = f === null || (f.single && !f.categorical[0]);
    this.scratch = new Float32Array(this.width);
    this.stats = new WindowedStats(null);
    this.stats.threshold = this.threshold();
    this.setCodes(null);
  }

  /**
   * Freezes the reference (drift baselines): windows restart against it, unless its bins are the
   * ones they already count in (then what was counted stays).
   */
  setBaselines(b: Baselines | null): void {
    if (this.stats.adopt(b)) {
      this.setCodes(b);
      return;
    }
    const { onMinute, onHour } = this.stats;
    this.stats = new WindowedStats(b);
    this.stats.threshold = this.threshold();
    this.stats.onMinute = onMinute;
    this.stats.onHour = onHour;
    this.setCodes(b);
  }

  private threshold(): number | null {
    const c = this.loaded.config;
    return (c.task ?? 'classification') === 'classification' ? (c.threshold ?? 0.5) : null;
  }

  private setCodes(b: Baselines | null): void {
    const f = this.loaded.features;
    this.codes = (f?.names ?? []).map((name, j) => {
      if (!f!.categorical[j]) return null;
      const base = b?.features.find((x) => x.name === name)?.baseline;
      return new Map(base?.kind === 'categorical' ? base.categories.map((c, k) => [c, k]) : []);
    });
  }

  /** Gathers row `row` of the batch's inputs into the scratch row, categories as their codes. */
  private gather(batch: Batch, row: number, per: readonly number[]): Float32Array {
    const f = this.loaded.features!;
    const out = this.scratch;
    for (let j = 0; j < out.length; j++) {
      const i = f.input[j]!;
      const v = batch.buffers[i]![row * per[i]! + f.column[j]!];
      const codes = this.codes[j];
      if (codes === null || codes === undefined) out[j] = Number(v);
      // No reference to code against: unknown; an empty string is a missing category.
      else out[j] = v === '' || codes.size === 0 ? NaN : (codes.get(v as string) ?? codes.size);
    }
    return out;
  }

  private readonly logStreams = new Map<string, LogStream>();
  /** The last stream used: a version nearly always serves one variant for one key at a time. */
  private lastStream: LogStream | null = null;

  /** The log of a variant and API key id (keyed by both: each segment carries one of each). */
  private logStream(log: PredictionLog, variant: string, keyId: string | undefined): LogStream {
    const last = this.lastStream;
    if (last !== null && last.variant === variant && last.keyId === (keyId ?? null)) return last;
    const k = keyId === undefined ? variant : `${variant}\u0000${keyId}`;
    let s = this.logStreams.get(k);
    if (s === undefined) {
      s = log.stream(
        this.loaded.name,
        this.loaded.versionNumber,
        variant,
        this.width,
        this.loaded.config.task ?? 'classification',
        keyId ?? null,
      );
      this.logStreams.set(k, s);
    }
    this.lastStream = s;
    return s;
  }

  private cellsOf(variant: string) {
    let c = this.variants.get(variant);
    if (c === undefined) {
      const { model, version } = this;
      c = {
        requests: ROUTES.map((route) => CLASSES.map((status) => this.m.requests.cell({ model, version, variant, route, status }))),
        duration: ROUTES.map((route) => this.m.duration.cell({ model, version, variant, route })),
      };
      this.variants.set(variant, c);
    }
    return c;
  }

  /**
   * One answered request: status and wall time from arrival to response, in milliseconds. The
   * variant is the deployment's label for the route it took (default, direct, canary, a, ...).
   */
  request(route: Route, status: number, ms: number, variant = 'default'): void {
    if (!this.enabled) return;
    const r = ROUTE_INDEX[route];
    const c = this.cellsOf(variant);
    c.requests[r]![statusClass(status)]!.inc();
    c.duration[r]!.observe(ms / 1000);
    const ok = status < 400;
    // Explanations (KernelSHAP above all) take far longer than a score: they are counted, and timed in
    // the route's histogram, but kept out of the version's latency percentiles and SLA.
    const timed = ok && route !== 'explain';
    if (timed) this.latency.recordMicros(ms * 1000);
    const now = Date.now();
    this.volume.add(now);
    const error = isError(status);
    if (error) this.errors.add(now);
    this.stats.recordRequest(now, error, timed ? ms * 1000 : null);
  }

  onDispatch(batch: Batch, now: number): void {
    if (!this.enabled) return;
    this.batchChild.observe(batch.rows);
    const reqs = batch.requests;
    for (let i = 0; i < reqs.length; i++) this.queueChild.observe((now - reqs[i]!.enqueuedAt) / 1000);
  }

  /**
   * Every row of a finished batch: its score (and inputs) into the windows and the prediction log.
   * With durability sync, the promise of their commit: the batcher answers the batch after it.
   */
  onComplete(batch: Batch, result: RunResult): Promise<void> | undefined {
    if (!this.enabled) return undefined;
    this.computeChild.observe(result.computeMs / 1000);
    const m = this.loaded;
    const o = result.outputs[m.scoreOutput.output];
    if (o === undefined) return undefined;
    let per = 1;
    for (let i = 1; i < o.dims.length; i++) per *= o.dims[i]!;
    const column = Math.min(m.scoreOutput.column ?? per - 1, per - 1);
    const width = this.width;
    const inPlace = this.inPlace;
    const input = width > 0 && inPlace ? (batch.buffers[0] as Float32Array) : null;
    const rowElems = inPlace ? null : m.inputs.map((_, i) => m.batcher.rowElements(batch, i));
    const now = Date.now();
    const stats = this.stats;
    const log = this.log;
    const reqs = batch.requests;
    let logged = 0;
    let lost = 0;
    for (let k = 0; k < reqs.length; k++) {
      const r = reqs[k]!;
      if (r.internal) continue;
      const start = batch.rowStarts[k]!;
      const stream = log !== null && r.requestId !== undefined ? this.logStream(log, r.variant ?? 'default', r.keyId) : null;
      // Rows of a multi-row request are logged as id/row (a chunk of a split request knows its offset).
      const total = r.totalRows ?? r.rows;
      const offset = r.rowOffset ?? 0;
      for (let j = 0; j < r.rows; j++) {
        const row = start + j;
        const score = Number(o.data[row * per + column]);
        const values = rowElems === null ? input : this.gather(batch, row, rowElems);
        const at = rowElems === null ? row * width : 0;
        stats.recordPrediction(now, score, values, at);
        if (stream !== null && log!.sampled()) {
          if (stream.push(r.requestId!, now, score, values, at, total > 1 ? offset + j : -1)) logged++;
          else lost++;
        }
      }
    }
    if (log === null || log.durability !== 'sync') return undefined;
    if (lost > 0)
      return Promise.reject(
        storeUnavailable(
          `the prediction log did not take ${lost} of this batch's predictions (closed, or ${log.backlog} waiting to be written)`,
        ),
      );
    return logged > 0 ? log.commit() : undefined;
  }

  volumeSnapshot(windowSeconds = 10): VolumeSnapshot {
    const now = Date.now();
    const n = this.volume.sum(now, windowSeconds);
    const e = this.errors.sum(now, windowSeconds);
    const total = this.volume.total;
    return {
      requests: total,
      errors: this.errors.total,
      rps: n / windowSeconds,
      // Over the recent window while there is traffic, else over the whole life of the version.
      error_rate: n > 0 ? e / n : total === 0 ? null : this.errors.total / total,
    };
  }
}
