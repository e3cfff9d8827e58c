// The prediction log as the HTTP thread sees it: rows are appended into columnar buffers (no I/O,
// no per-row objects) and shipped to the log worker every 100 ms or 4,096 rows; reads (labelled
// windows, feedback joins, history, alerts) are messages answered by the worker. Sampling keeps a
// fraction of predictions; the worker prunes rows older than the retention.

import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import type { AppendBatch, LogRequest } from './log-worker.js';

export interface PredictionLogOptions {
  dataDir: string;
  /** Share of predictions kept (0..1). */
  sampleRate: number;
  retentionDays: number;
}

const FLUSH_ROWS = 4096;
const FLUSH_MS = 100;

export class PredictionLog {
  private readonly worker: Worker;
  private ids: string[] = [];
  private models: string[] = [];
  private versions: number[] = [];
  private variants: string[] = [];
  private ts: number[] = [];
  private scores: number[] = [];
  private features: number[] = [];
  private widths: number[] = [];
  private timer: NodeJS.Timeout | null = null;
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private readonly pruneTimer: NodeJS.Timeout;
  logged = 0;
  dropped = 0;
  private closed = false;

  constructor(private readonly opts: PredictionLogOptions) {
    this.worker = new Worker(new URL('./log-worker.js', import.meta.url), { workerData: { file: join(opts.dataDir, 'monitoring.db') } });
    this.worker.unref();
    this.worker.on('message', (m: { id?: number; value?: unknown; error?: string }) => {
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

  append(id: string, model: string, version: number, variant: string, ts: number, score: number, row: ArrayLike<number> | null, offset: number, width: number): void {
    if (this.closed) return;
    this.ids.push(id);
    this.models.push(model);
    this.versions.push(version);
    this.variants.push(variant);
    this.ts.push(ts);
    this.scores.push(score);
    if (row !== null) {
      for (let i = 0; i < width; i++) this.features.push(row[offset + i] as number);
      this.widths.push(width);
    } else {
      this.widths.push(0);
    }
    this.logged++;
    if (this.ids.length >= FLUSH_ROWS) this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(() => this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  }

  /** Ships the buffered rows to the worker (their buffers are transferred, not copied). */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.ids.length === 0) return;
    const batch: AppendBatch = {
      ids: this.ids,
      models: this.models,
      versions: Int32Array.from(this.versions),
      variants: this.variants,
      ts: Float64Array.from(this.ts),
      scores: Float64Array.from(this.scores),
      features: Float32Array.from(this.features),
      widths: Int32Array.from(this.widths),
    };
    this.ids = [];
    this.models = [];
    this.versions = [];
    this.variants = [];
    this.ts = [];
    this.scores = [];
    this.features = [];
    this.widths = [];
    const transfer = [batch.versions.buffer, batch.ts.buffer, batch.scores.buffer, batch.features.buffer, batch.widths.buffer] as ArrayBuffer[];
    this.worker.postMessage({ op: 'append', batch } satisfies LogRequest, transfer);
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
