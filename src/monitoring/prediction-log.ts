// The prediction log as the HTTP thread sees it: each model version and variant appends into its
// own columnar buffers (typed arrays and an id list: no I/O, no per-row objects), shipped to the
// log worker as one segment every 200 ms or 4,096 rows, buffers transferred rather than copied.
// Reads (labelled windows, feedback joins, history, alerts) are messages answered by the worker.
// Sampling keeps a fraction of predictions; the worker prunes what is older than the retention.

import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import type { AppendSegment, LogRequest } from './log-worker.js';
import type { ClassificationMetrics, RegressionMetrics } from './metrics.js';

export interface PredictionLogOptions {
  dataDir: string;
  /** Share of predictions kept (0..1). */
  sampleRate: number;
  retentionDays: number;
}

// Small, frequent segments: each is one short transaction in the log thread, so no single write
// holds a core long enough to show in request latency.
const FLUSH_ROWS = 1024;
const FLUSH_MS = 100;
/** Predictions sent to the log thread and not yet written beyond which new ones are dropped (counted). */
const MAX_BACKLOG = 1_000_000;

/** The buffer of one model version and variant; rows of `width` float inputs. */
export class LogStream {
  private ids: string[] = [];
  private ts: Float64Array;
  private scores: Float64Array;
  private features: Float32Array;
  private n = 0;

  constructor(
    private readonly log: PredictionLog,
    readonly model: string,
    readonly version: number,
    readonly variant: string,
    readonly width: number,
    private capacity = 64,
  ) {
    this.ts = new Float64Array(capacity);
    this.scores = new Float64Array(capacity);
    this.features = new Float32Array(capacity * width);
  }

  get size(): number {
    return this.n;
  }

  /** One prediction; `row` holds its `width` inputs from `offset` (null: not kept). */
  push(id: string, ts: number, score: number, row: ArrayLike<number> | null, offset: number): void {
    if (this.log.closed) return;
    if (this.log.backlog >= MAX_BACKLOG) {
      this.log.dropped++;
      return;
    }
    const n = this.n;
    if (n === this.capacity) this.grow();
    this.ids.push(id);
    this.ts[n] = ts;
    this.scores[n] = score;
    const w = this.width;
    if (w > 0) {
      const f = this.features;
      const at = n * w;
      if (row === null) f.fill(NaN, at, at + w);
      else for (let i = 0; i < w; i++) f[at + i] = row[offset + i] as number;
    }
    this.n = n + 1;
    this.log.logged++;
    if (this.n >= FLUSH_ROWS) this.flush();
    else if (n === 0) this.log.schedule(this);
  }

  private grow(): void {
    const cap = this.capacity * 2;
    const ts = new Float64Array(cap);
    ts.set(this.ts);
    const scores = new Float64Array(cap);
    scores.set(this.scores);
    const features = new Float32Array(cap * this.width);
    features.set(this.features);
    this.ts = ts;
    this.scores = scores;
    this.features = features;
    this.capacity = cap;
  }

  /** Ships the buffered rows to the worker as one segment. */
  flush(): void {
    const n = this.n;
    if (n === 0) return;
    const segment: AppendSegment = {
      model: this.model,
      version: this.version,
      variant: this.variant,
      width: this.width,
      n,
      ids: this.ids,
      ts: this.ts,
      scores: this.scores,
      features: this.features,
    };
    // The next buffers start at about the size this flush needed.
    this.capacity = Math.min(FLUSH_ROWS, Math.max(64, 1 << Math.ceil(Math.log2(n))));
    this.ids = [];
    this.ts = new Float64Array(this.capacity);
    this.scores = new Float64Array(this.capacity);
    this.features = new Float32Array(this.capacity * this.width);
    this.n = 0;
    this.log.backlog += n;
    this.log.send({ op: 'append', segment } satisfies LogRequest, [segment.ts.buffer, segment.scores.buffer, segment.features.buffer] as ArrayBuffer[]);
  }
}

export class PredictionLog {
  private readonly worker: Worker;
  private readonly streams = new Map<string, LogStream>();
  private readonly dirty = new Set<LogStream>();
  private timer: NodeJS.Timeout | null = null;
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private readonly pruneTimer: NodeJS.Timeout;
  logged = 0;
  /** Predictions not logged because the log thread was too far behind. */
  dropped = 0;
  /** Predictions sent to the log thread and not yet acknowledged as written. */
  backlog = 0;
  closed = false;

  constructor(private readonly opts: PredictionLogOptions) {
    this.worker = new Worker(new URL('./log-worker.js', import.meta.url), { workerData: { file: join(opts.dataDir, 'monitoring.db') } });
    this.worker.unref();
    this.worker.on('message', (m: { id?: number; value?: unknown; error?: string; written?: number }) => {
      if (m.written !== undefined) {
        this.backlog -= m.written;
        return;
      }
      if (m.id === undefined) return;
      const w = this.waiting.get(m.id);
      if (w === undefined) return;
      this.waiting.delete(m.id);
      if (m.error !== undefined) w.reject(new Error(m.error));
      else w.resolve(m.value);
    });
    this.worker.on('error', (e) => {
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    });
    const prune = () => void this.request({ op: 'prune', before: Date.now() - opts.retentionDays * 86_400_000 }).catch(() => undefined);
    this.pruneTimer = setInterval(prune, 3_600_000);
    this.pruneTimer.unref();
    prune();
  }

  /** Whether this prediction is kept (sampling); cheap enough to ask per row. */
  sampled(): boolean {
    return this.opts.sampleRate >= 1 || Math.random() < this.opts.sampleRate;
  }

  /** The buffer of a model version and variant (created on first use, with that row width). */
  stream(model: string, version: number, variant: string, width: number): LogStream {
    const key = `${model}\u0000${version}\u0000${variant}\u0000${width}`;
    let s = this.streams.get(key);
    if (s === undefined) {
      s = new LogStream(this, model, version, variant, width);
      this.streams.set(key, s);
    }
    return s;
  }

  append(id: string, model: string, version: number, variant: string, ts: number, score: number, row: ArrayLike<number> | null, offset: number, width: number): void {
    this.stream(model, version, variant, width).push(id, ts, score, row, offset);
  }

  /** @internal a stream got its first row: flush it within FLUSH_MS. */
  schedule(s: LogStream): void {
    this.dirty.add(s);
    if (this.timer === null) {
      this.timer = setTimeout(() => this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  }

  /** @internal */
  send(m: LogRequest, transfer: ArrayBuffer[]): void {
    this.worker.postMessage(m, transfer);
  }

  /** Ships every buffered row to the worker. */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const s of this.dirty) s.flush();
    this.dirty.clear();
  }

  private request<T>(m: Record<string, unknown>): Promise<T> {
    this.flush();
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...m, id });
    });
  }

  /** Joins labels to logged predictions by request id. */
  feedback(items: { requestId: string; label: number }[]): Promise<{ joined: number; unknown: string[] }> {
    return this.request({ op: 'feedback', items, now: Date.now() });
  }

  /** Scores and labels of labelled predictions of a version since `since`, newest first. */
  labelled(model: string, version: number, since: number, limit = 200_000): Promise<{ scores: Float64Array; labels: Float64Array }> {
    return this.request({ op: 'labelled', model, version, since, limit });
  }

  /**
   * Performance metrics of a version's labelled predictions since `since` (the newest `limit`),
   * computed in the log thread: `n` rows read, `metrics` null when there were none.
   */
  performance(
    model: string,
    version: number,
    since: number,
    task: 'classification' | 'regression',
    threshold: number,
    limit = 200_000,
  ): Promise<{ n: number; metrics: ClassificationMetrics | RegressionMetrics | null }> {
    return this.request({ op: 'performance', model, version, since, limit, task, threshold });
  }

  /** Labelled predictions of a model (any version) with their inputs, oldest first: retraining data. */
  training(model: string, since = 0, limit = 1_000_000): Promise<{ ts: number; score: number; label: number; features: number[] }[]> {
    return this.request({ op: 'training', model, since, limit });
  }

  putHistory(points: { model: string; version: number; at: number; data: string }[]): void {
    if (!this.closed && points.length > 0) this.worker.postMessage({ op: 'history.put', points } satisfies LogRequest);
  }

  history(model: string, version: number, from: number, to: number): Promise<Record<string, unknown>[]> {
    return this.request({ op: 'history.get', model, version, from, to });
  }

  saveAlert(id: string, state: string, data: unknown, at: number): void {
    if (!this.closed) this.worker.postMessage({ op: 'alerts.save', alert: { id, state, data: JSON.stringify(data), at } } satisfies LogRequest);
  }

  alertHistory(limit: number, since: number): Promise<unknown[]> {
    return this.request({ op: 'alerts.history', limit, since });
  }

  openAlerts(): Promise<unknown[]> {
    return this.request({ op: 'alerts.open' });
  }

  /** Drops predictions (with their ids and labels), history and alert events older than `before`. */
  prune(before: number): Promise<{ predictions: number; history: number; alertEvents: number }> {
    return this.request({ op: 'prune', before });
  }

  /** Waits until everything appended so far is written. */
  async drain(): Promise<void> {
    await this.request({ op: 'flush' });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.drain().catch(() => undefined);
    this.closed = true;
    clearInterval(this.pruneTimer);
    await this.worker.terminate();
  }
}
