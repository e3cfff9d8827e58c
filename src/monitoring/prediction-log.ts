// The prediction log as the HTTP thread sees it: each model version and variant appends into its
// own columnar buffers (typed arrays and an id list: no I/O, no per-row objects), shipped to the
// log worker every flushMs (default 100) or 1,024 rows, all streams of a flush in one message with a
// sequence number, buffers transferred rather than copied. The worker acknowledges flushes by that
// number once committed, which is what `durability: sync` waits for before a request is answered.
// A failed write is held (bounded by the backlog), retried by the worker, counted and reported here:
// status(), one error line per failure episode and one line when it writes again.
// Reads (labelled windows, feedback joins, history, alerts) are messages answered by the worker.
// Sampling keeps a fraction of predictions; the worker prunes what is older than the retention.

import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { insufficientStorage, isDiskFull, storeUnavailable } from '../errors.js';
import type { AppendSegment, FeedbackResult, LogReply, LogReport, LogRequest, LogWorkerData, Task } from './log-worker.js';
import { LogStream, MAX_BACKLOG } from './log-stream.js';
import type { ClassificationMetrics, RegressionMetrics } from './metrics.js';

export type { FeedbackResult } from './log-worker.js';
export { LogStream, MAX_BACKLOG } from './log-stream.js';
export type Durability = 'async' | 'sync';

/** Where the log reports its failures and recoveries (a pino logger fits). */
export interface LogSink {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface PredictionLogOptions {
  dataDir: string;
  /** Share of predictions kept (0..1). */
  sampleRate: number;
  retentionDays: number;
  /** Longest a logged prediction waits in memory before it is sent to the log thread, ms (default 100). */
  flushMs?: number;
  /** async (default): requests are answered at once; sync: only once their predictions are committed. */
  durability?: Durability;
  logger?: LogSink;
}

/** The log's health, as /v1/monitoring and /metrics report it. */
export interface PredictionLogStatus {
  /** failing: the last write failed (predictions are held and retried, or refused with sync). */
  state: 'ok' | 'failing';
  durability: Durability;
  last_error: string | null;
  last_error_at: string | null;
  /** Failed write attempts since start. */
  errors: number;
  /** Predictions sent to the log thread and not yet written (held ones included). */
  backlog: number;
  /** Predictions never written: the backlog was full, or they were still held at shutdown. */
  dropped: number;
}

export const DEFAULT_FLUSH_MS = 100;

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
  /** The flush whose commit settles it. */
  through: number;
}

export class PredictionLog {
  private readonly worker: Worker;
  private readonly file: string;
  private readonly streams = new Map<string, LogStream>();
  private readonly dirty = new Set<LogStream>();
  private readonly flushMs: number;
  readonly durability: Durability;
  private timer: NodeJS.Timeout | null = null;
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly pruneTimer: NodeJS.Timeout;
  /** Sequence number of the last flush sent to the worker. */
  private seq = 0;
  /** Commits waited on (durability sync), oldest flush first. */
  private readonly commits: Deferred[] = [];
  /** The commit everything pushed in this turn of the event loop waits on. */
  private pendingCommit: Deferred | null = null;
  private failingSince: number | null = null;
  private episode = { errors: 0, dropped: 0 };
  private lastError: string | null = null;
  private lastErrorAt: number | null = null;
  logged = 0;
  /** Predictions never written: the backlog was full, or they were still held at shutdown. */
  dropped = 0;
  /** Predictions sent to the log thread and not yet acknowledged as written. */
  backlog = 0;
  /** Failed write attempts. */
  errors = 0;
  closed = false;

  constructor(private readonly opts: PredictionLogOptions) {
    this.file = join(opts.dataDir, 'monitoring.db');
    this.flushMs = opts.flushMs ?? DEFAULT_FLUSH_MS;
    this.durability = opts.durability ?? 'async';
    const workerData: LogWorkerData = { file: this.file, durability: this.durability };
    this.worker = new Worker(new URL('./log-worker.js', import.meta.url), { workerData });
    this.worker.unref();
    this.worker.on('message', (m: LogReport | LogReply) => {
      if ('id' in m) return this.answered(m);
      if (m.kind === 'written') this.written(m.through, m.rows);
      else this.failed(m);
    });
    this.worker.on('error', (e) => {
      // The thread itself died (not a failed write, which it survives): nothing more will be written.
      this.noteFailure(e.message, null, this.backlog);
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
      this.settle(Infinity, storeUnavailable(`the prediction log thread stopped: ${e.message}`));
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

  /** The buffer of a model version, variant and API key id (created on first use, with that row width). */
  stream(model: string, version: number, variant: string, width: number, task: Task | null = null, keyId: string | null = null): LogStream {
    const key = `${model}\u0000${version}\u0000${variant}\u0000${width}\u0000${keyId ?? ''}`;
    let s = this.streams.get(key);
    if (s === undefined) {
      s = new LogStream(this, model, version, variant, width, task, keyId);
      this.streams.set(key, s);
    }
    return s;
  }

  append(id: string, model: string, version: number, variant: string, ts: number, score: number, row: ArrayLike<number> | null, offset: number, width: number, task: Task | null = null): boolean {
    return this.stream(model, version, variant, width, task).push(id, ts, score, row, offset);
  }

  /** @internal a stream got its first row: flush it within flushMs. */
  schedule(s: LogStream): void {
    this.dirty.add(s);
    if (this.timer === null) {
      this.timer = setTimeout(() => this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  /** @internal a stream is full: ship it, with every other buffered row (a flush carries all rows pushed before it). */
  flushStream(s: LogStream): void {
    this.dirty.add(s);
    this.flush();
  }

  /** Ships every buffered row to the worker. */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const segments: AppendSegment[] = [];
    for (const s of this.dirty) {
      const segment = s.take();
      if (segment !== null) segments.push(segment);
    }
    this.dirty.clear();
    // A commit waiting on the next flush gets one, even an empty one, or it would wait forever.
    if (segments.length > 0 || this.pendingCommit?.through === this.seq + 1) this.send(segments);
  }

  private send(segments: AppendSegment[]): void {
    const seq = ++this.seq;
    const transfer: ArrayBuffer[] = [];
    let rows = 0;
    for (const s of segments) {
      rows += s.n;
      transfer.push(s.ts.buffer as ArrayBuffer, s.scores.buffer as ArrayBuffer, s.features.buffer as ArrayBuffer);
    }
    this.backlog += rows;
    this.worker.postMessage({ op: 'append', seq, segments } satisfies LogRequest, transfer);
    const c = this.pendingCommit;
    if (c !== null && c.through === seq) {
      this.pendingCommit = null;
      this.commits.push(c);
    }
  }

  /**
   * Resolves once every prediction pushed so far is committed to SQLite (durability sync); rejects
   * with STORE_UNAVAILABLE when that write failed. Everything pushed in the same turn of the event
   * loop shares one flush and one promise, so a commit serves many batches.
   */
  commit(): Promise<void> {
    if (this.closed) return Promise.reject(storeUnavailable('the prediction log is closed'));
    let c = this.pendingCommit;
    if (c === null) {
      // Every row pushed so far is buffered (it goes into the next flush) or in an earlier flush.
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      c = this.pendingCommit = { promise, resolve, reject, through: this.seq + 1 };
      setImmediate(this.commitNow);
    }
    return c.promise;
  }

  /** Sends the flush the pending commit waits on, unless a read or a full stream already did. */
  private readonly commitNow = (): void => {
    if (this.pendingCommit !== null) this.flush();
  };

  /** Resolves (or rejects with `err`) every commit waiting on a flush up to `through`. */
  private settle(through: number, err: Error | null): void {
    const cs = this.commits;
    let k = 0;
    while (k < cs.length && cs[k]!.through <= through) {
      if (err === null) cs[k]!.resolve();
      else cs[k]!.reject(err);
      k++;
    }
    if (k > 0) cs.splice(0, k);
    if (err !== null && this.pendingCommit !== null && this.pendingCommit.through <= through) {
      this.pendingCommit.reject(err);
      this.pendingCommit = null;
    }
  }

  private written(through: number, rows: number): void {
    this.backlog -= rows;
    this.settle(through, null);
    if (this.failingSince === null) return;
    this.opts.logger?.warn(
      {
        file: this.file,
        failedForSeconds: Math.round((Date.now() - this.failingSince) / 100) / 10,
        failedAttempts: this.episode.errors,
        dropped: this.dropped - this.episode.dropped,
        backlog: this.backlog,
      },
      'prediction log: writing again; the predictions held while it failed are being written',
    );
    this.failingSince = null;
  }

  private failed(m: Extract<LogReport, { kind: 'failed' }>): void {
    this.backlog -= m.refused;
    if (m.refused > 0) this.settle(m.refusedThrough, storeUnavailable(`the prediction log could not commit this prediction: ${m.error}`));
    this.noteFailure(m.error, m.code, m.held);
  }

  private noteFailure(error: string, code: string | null, held: number): void {
    this.errors++;
    this.lastError = code !== null && !error.includes(code) ? `${code}: ${error}` : error;
    this.lastErrorAt = Date.now();
    if (this.failingSince !== null) {
      this.episode.errors++;
      return;
    }
    this.failingSince = this.lastErrorAt;
    this.episode = { errors: 1, dropped: this.dropped };
    this.opts.logger?.error(
      { file: this.file, err: error, code, held, backlog: this.backlog, durability: this.durability },
      this.durability === 'sync'
        ? `prediction log: cannot write to ${this.file} (${code ?? error}); requests are answered 503 until it can, retrying`
        : `prediction log: cannot write to ${this.file} (${code ?? error}); holding up to ${MAX_BACKLOG} predictions in memory and retrying`,
    );
  }

  private answered(m: LogReply): void {
    const w = this.waiting.get(m.id);
    if (w === undefined) return;
    this.waiting.delete(m.id);
    if (!('error' in m)) {
      w.resolve(m.value);
      return;
    }
    w.reject(isDiskFull(m) ? insufficientStorage(this.opts.dataDir, new Error(m.error)) : new Error(m.error));
  }

  status(): PredictionLogStatus {
    return {
      state: this.failingSince === null ? 'ok' : 'failing',
      durability: this.durability,
      last_error: this.lastError,
      last_error_at: this.lastErrorAt === null ? null : new Date(this.lastErrorAt).toISOString(),
      errors: this.errors,
      backlog: this.backlog,
      dropped: this.dropped,
    };
  }

  private request<T>(m: Record<string, unknown>): Promise<T> {
    this.flush();
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...m, id });
    });
  }

  /**
   * Joins labels to logged predictions by request id. A label the prediction's model cannot have
   * (not 0/1 for a classifier) is rejected with its reason and changes nothing.
   */
  feedback(items: { requestId: string; label: number }[]): Promise<FeedbackResult> {
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

  /** Tries to write everything appended so far (also what a failure holds); resolves with the predictions still held. */
  async drain(): Promise<{ held: number }> {
    return this.request({ op: 'flush' });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    const held = await this.drain().then(
      (r) => r.held,
      () => this.backlog,
    );
    this.closed = true;
    if (held > 0) {
      this.dropped += held;
      this.opts.logger?.error({ file: this.file, held, lastError: this.lastError }, `prediction log: ${held} predictions could not be written before shutdown and are lost`);
    }
    clearInterval(this.pruneTimer);
    this.settle(Infinity, storeUnavailable('the prediction log is closed'));
    await this.worker.terminate();
  }
}
