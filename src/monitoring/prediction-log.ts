// The prediction log as the HTTP thread sees it: every logged prediction is one record written into
// a shared-memory ring (log-ring.ts) that the log thread drains into SQLite segments, within flushMs
// (default 100) of the first row after a quiet spell. Logging a prediction costs the HTTP thread a
// few typed-array stores and one atomic store: no object, no message, no I/O. When the ring is full
// (the log thread behind, or failing and holding what it may) the prediction is dropped and counted.
// The log thread publishes how many rows are committed in the ring, which is what `durability: sync`
// waits for (Atomics.waitAsync) before a request is answered.
// A failed write is held (bounded), retried by the log thread, counted and reported here: status(),
// one error line per failure episode and one line when it writes again.
// Reads (labelled windows, feedback joins, history, alerts) are messages answered by the log thread,
// after it has read every row logged before them.
// Sampling keeps a fraction of predictions; the log thread prunes what is older than the retention.
// Shared (`shared`, when the store is PostgreSQL): the log thread also ships what it commits to
// PostgreSQL, and feedback joins there, so a label sent to any replica finds its prediction, and
// performance windows and retraining data cover every replica's labels; status() reports shipping.

import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { insufficientStorage, isDiskFull, storeUnavailable } from '../errors.js';
import type { ShippingStatus } from './log-shipping.js';
import type { PruneResult } from './log-store.js';
import type { FeedbackResult, LogReply, LogReport, LogRequest, LogWorkerData, Task } from './log-worker.js';
import { createRing, DEFAULT_RING_BYTES, reached, RingWriter } from './log-ring.js';
import { MAX_BACKLOG } from './log-segments.js';
import { LogStream } from './log-stream.js';
import type { ClassificationMetrics, RegressionMetrics } from './metrics.js';

export type { FeedbackResult } from './log-worker.js';
export type { ShippingStatus } from './log-shipping.js';
export { LogStream } from './log-stream.js';
export { MAX_BACKLOG } from './log-segments.js';
export type Durability = 'async' | 'sync';

/** Longest a closing shared log waits to ship what it committed. */
const CLOSE_SHIP_MS = 5000;
/** A log thread that died is replaced after this pause, doubled (to RESTART_MAX_MS) while replacements keep dying young. */
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 30_000;
/** A thread that lived this long died of something new: the next pause starts again from RESTART_MIN_MS. */
const RESTART_RESET_MS = 60_000;
/** History points and alert events kept for the next log thread while none runs. */
const MAX_PARKED = 10_000;

/** Where the log reports its failures and recoveries (a pino logger fits). */
export interface LogSink {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info?(obj: object, msg: string): void;
}

export interface PredictionLogOptions {
  dataDir: string;
  /** Share of predictions kept (0..1). */
  sampleRate: number;
  retentionDays: number;
  /** Longest a logged prediction waits in the ring before the log thread writes it, ms (default 100). */
  flushMs?: number;
  /** async (default): requests are answered at once; sync: only once their predictions are committed. */
  durability?: Durability;
  /** Bytes of the shared ring (default 16 MiB): how much the log thread may fall behind before predictions are dropped. */
  ringBytes?: number;
  logger?: LogSink;
  /**
   * Share the log through PostgreSQL at this URL (the store's): committed predictions are shipped
   * there, and feedback, labelled windows and training data are answered from there. Its schema is
   * the store's (migration 2), applied when the store opens.
   */
  shared?: { url: string };
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
  /** Predictions logged and not yet written (in the ring, or held by the log thread). */
  backlog: number;
  /** Predictions never written: the ring was full, the log thread died, or they were still held at shutdown. */
  dropped: number;
  /** Log threads started again after one died. */
  restarts: number;
  /** Shipping to PostgreSQL (null: the log is not shared). */
  shipping: ShippingStatus | null;
}

/** What retention dropped; with a shared log also the PostgreSQL day partitions (null: PostgreSQL could not be reached, `sharedError`). */
export type PruneReport = PruneResult & { partitions?: number | null; sharedError?: string };

export const DEFAULT_FLUSH_MS = 100;

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
  /** The rows it covers: after row `from` through row `through` (ring row counts). */
  from: number;
  through: number;
}

export class PredictionLog {
  private worker!: Worker;
  private readonly workerData: LogWorkerData;
  /** Why the current thread failed (its error event), for the line its exit writes. */
  private crash: string | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private restartMs = RESTART_MIN_MS;
  private startedAt = 0;
  /** Rows settled when the current thread started: a replacement that dies without settling any may be killed by the rows in the ring. */
  private resumedAt = 0;
  /**
   * History points and alert events not yet acknowledged as committed, oldest first: sent again to
   * the next thread if this one dies (at most MAX_PARKED; beyond that the oldest are no longer kept).
   */
  private readonly unsaved: Extract<LogRequest, { seq: number }>[] = [];
  private seq = 0;
  /** Numbers of the writes let go of by `unsaved` while full: lost if the thread dies before acknowledging them. */
  private overflow: number[] = [];
  /** Writes let go of while no thread ran. */
  private parkedDropped = 0;
  /** Log threads started again after one died. */
  restarts = 0;
  private readonly file: string;
  private readonly ring: RingWriter;
  private readonly streams = new Map<string, LogStream>();
  readonly durability: Durability;
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly pruneTimer: NodeJS.Timeout;
  /** Commits waited on (durability sync), in row order, each covering the rows since the one before. */
  private readonly commits: Deferred[] = [];
  /** The commit everything logged in this turn of the event loop waits on. */
  private pendingCommit: Deferred | null = null;
  /** Where the next commit's rows start. */
  private commitFrom = 0;
  /** Refusals of the log thread whose report has been handled. */
  private refusalsSeen = 0;
  /** Whether a wait on the ring's settled count is armed. */
  private watching = false;
  /** Set while no log thread runs (one died, the next starts after a pause): commits and reads fail at once. */
  private dead: Error | null = null;
  private failingSince: number | null = null;
  private episode = { errors: 0, dropped: 0 };
  private lastError: string | null = null;
  private lastErrorAt: number | null = null;
  /** Shipping as last reported by the log thread (null: not shared). */
  private shippingStatus: ShippingStatus | null;
  logged = 0;
  /** Predictions never written: the ring was full, the log thread died, or they were still held at shutdown. */
  dropped = 0;
  /** Failed write attempts. */
  errors = 0;
  closed = false;

  constructor(private readonly opts: PredictionLogOptions) {
    this.file = join(opts.dataDir, 'monitoring.db');
    this.durability = opts.durability ?? 'async';
    const ring = createRing(opts.ringBytes ?? DEFAULT_RING_BYTES);
    this.ring = new RingWriter(ring);
    this.shippingStatus =
      opts.shared === undefined ? null : { state: 'ok', backlog_rows: 0, shipped: 0, errors: 0, last_error: null, last_error_at: null };
    this.workerData = {
      file: this.file,
      durability: this.durability,
      ring,
      flushMs: opts.flushMs ?? DEFAULT_FLUSH_MS,
      ...(opts.shared !== undefined ? { shared: { url: opts.shared.url } } : {}),
    };
    this.spawn();
    const prune = () =>
      void this.prune(Date.now() - opts.retentionDays * 86_400_000).then(
        (r) => {
          if (r.unshipped > 0)
            opts.logger?.warn(
              { file: this.file, unshipped: r.unshipped, retentionDays: opts.retentionDays },
              `prediction log: ${r.unshipped} predictions past retention are kept until they are shipped to PostgreSQL`,
            );
          if (r.sharedError !== undefined)
            opts.logger?.warn({ err: r.sharedError }, 'prediction log: retention in PostgreSQL failed; retried at the next prune');
        },
        () => undefined,
      );
    this.pruneTimer = setInterval(prune, 3_600_000);
    this.pruneTimer.unref();
    prune();
  }

  /** Starts a log thread; after a death, with the streams defined so far, reading the ring where the dead one stopped. */
  private spawn(restart?: LogWorkerData['restart']): void {
    const w = new Worker(new URL('./log-worker.js', import.meta.url), {
      workerData: restart === undefined ? this.workerData : { ...this.workerData, restart },
    });
    w.unref();
    w.on('message', (m: LogReport | LogReply) => {
      if ('id' in m) return this.answered(m);
      if (m.kind === 'written') this.written();
      else if (m.kind === 'saved') this.saved(m.seq);
      else if (m.kind === 'shipping') this.shipped(m.status);
      else this.failed(m);
    });
    // The thread itself died (not a failed write, which it survives): a bug that threw, out of
    // memory, or an exit nobody asked for. Its exit follows its error event.
    w.on('error', (e) => {
      if (this.worker === w) this.crash = e.message;
    });
    w.on('exit', (code) => {
      if (this.worker === w && !this.closed) this.died(this.crash ?? `exited with code ${code}`);
    });
    this.worker = w;
    this.crash = null;
    this.dead = null;
    this.startedAt = Date.now();
    this.resumedAt = this.ring.settled();
    // Rows that waited for it are written now, not a flush interval later.
    if (restart !== undefined && this.backlog > 0) this.ring.urgent();
    for (const m of this.unsaved) w.postMessage(m);
    if (this.parkedDropped > 0) {
      this.opts.logger?.error(
        { file: this.file, dropped: this.parkedDropped },
        `prediction log: ${this.parkedDropped} history points and alert events sent while no log thread ran were dropped (at most ${MAX_PARKED} wait)`,
      );
      this.parkedDropped = 0;
    }
  }

  /** The log thread committed the history points and alert events through number `seq`. */
  private saved(seq: number): void {
    let k = 0;
    while (k < this.unsaved.length && this.unsaved[k]!.seq <= seq) k++;
    this.unsaved.splice(0, k);
    k = 0;
    while (k < this.overflow.length && this.overflow[k]! <= seq) k++;
    this.overflow.splice(0, k);
  }

  /**
   * The log thread is gone. The predictions it had read and not committed are still in the ring
   * (their space is freed only once committed) and the next thread writes them, as it does the
   * history points and alert events it had not acknowledged. Lost (and counted as dropped) are only
   * the rows it held in memory while its writes were failing, a row that threw when read (a bug:
   * skipped, so that it does not kill the next thread too), and, if a replacement dies without
   * committing anything and not reading a row, what the ring holds: those rows may be what killed it. Commits and requests
   * waiting on it fail with STORE_UNAVAILABLE, as does every commit and read until a new thread
   * runs. That one starts after a pause (longer while replacements keep dying young). Each death is
   * logged at error.
   */
  private died(why: string): void {
    const error = `the prediction log thread stopped: ${why}`;
    this.errors++;
    this.lastError = error;
    this.lastErrorAt = Date.now();
    this.failingSince ??= this.lastErrorAt;
    const err = storeUnavailable(`${error}; a new one is starting`);
    this.dead = err;
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
    // A row that threw when read is the one skipped; otherwise a replacement that committed nothing may have died of what the ring holds.
    const skipped = this.ring.skipBad() ? 1 : 0;
    const stuck = skipped === 0 && this.restarts > 0 && this.ring.settled() === this.resumedAt && this.backlog > 0;
    const lost = this.ring.abandon(stuck);
    const n = (lost.through - lost.from) | 0;
    this.dropped += n + skipped;
    const writes = this.overflow.length;
    this.overflow.length = 0;
    // Commits waiting fail (their rows may yet be written by the next thread: a 503 then, never an
    // answer whose prediction was not logged); the next commit covers only rows logged after this.
    this.noteRefusals(lost.refusals);
    this.rejectAll(err);
    this.commitFrom = this.ring.rows;
    if (Date.now() - this.startedAt >= RESTART_RESET_MS) this.restartMs = RESTART_MIN_MS;
    const pause = this.restartMs;
    this.restartMs = Math.min(RESTART_MAX_MS, this.restartMs * 2);
    this.opts.logger?.error(
      {
        file: this.file,
        err: why,
        lost: n + skipped,
        lostWrites: writes,
        skipped: stuck ? n : skipped,
        restartInMs: pause,
        durability: this.durability,
      },
      `prediction log: ${error}; ` +
        (stuck
          ? `the ${n} predictions waiting in the ring, which the last new thread died on, are skipped (counted as dropped)`
          : skipped > 0
            ? 'the prediction it died reading is skipped (counted as dropped)' +
              (n > 0 ? `, and ${n} predictions it held in memory while its writes failed are lost` : '')
            : n > 0
              ? `${n} predictions it held in memory while its writes failed are lost (counted as dropped)`
              : 'no prediction is lost') +
        (writes > 0 ? `, and ${writes} history points and alert events it had not written` : '') +
        `; a new log thread starts in ${pause} ms and writes the rest and what is logged meanwhile`,
    );
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.closed) return;
      this.restarts++;
      this.spawn({
        streams: [...this.streams.values()].flatMap((st): [number, string][] =>
          st.definition === null ? [] : [[st.index, st.definition]],
        ),
      });
    }, pause);
    this.restartTimer.unref();
  }

  /** Predictions logged and not yet written (in the ring, or held by the log thread). */
  get backlog(): number {
    return (this.ring.rows - this.ring.settled()) | 0;
  }

  /** Whether this prediction is kept (sampling); cheap enough to ask per row. */
  sampled(): boolean {
    return this.opts.sampleRate >= 1 || Math.random() < this.opts.sampleRate;
  }

  /** The log of a model version, variant and API key id (created on first use, with that row width). */
  stream(model: string, version: number, variant: string, width: number, task: Task | null = null, keyId: string | null = null): LogStream {
    const key = `${model}\u0000${version}\u0000${variant}\u0000${width}\u0000${keyId ?? ''}`;
    let s = this.streams.get(key);
    if (s === undefined) {
      s = new LogStream(this, this.ring, this.streams.size, model, version, variant, width, task, keyId);
      this.streams.set(key, s);
    }
    return s;
  }

  append(
    id: string,
    model: string,
    version: number,
    variant: string,
    ts: number,
    score: number,
    row: ArrayLike<number> | null,
    offset: number,
    width: number,
    task: Task | null = null,
  ): boolean {
    return this.stream(model, version, variant, width, task).push(id, ts, score, row, offset);
  }

  /** Ends the segments being filled (rows logged after this go into new ones) and has the log thread write them now. */
  flush(): void {
    // A cut that does not fit (the ring full) only leaves the segments to close when they are read.
    this.ring.cut();
    this.ring.urgent();
  }

  /**
   * Resolves once every prediction logged so far is committed to SQLite (durability sync); rejects
   * with STORE_UNAVAILABLE when that write failed. Everything logged in the same turn of the event
   * loop shares one promise and one wake of the log thread, so a commit serves many batches.
   */
  commit(): Promise<void> {
    if (this.closed) return Promise.reject(storeUnavailable('the prediction log is closed'));
    if (this.dead !== null) return Promise.reject(this.dead);
    let c = this.pendingCommit;
    if (c === null) {
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      c = this.pendingCommit = { promise, resolve, reject, from: this.commitFrom, through: this.commitFrom };
      setImmediate(this.seal);
    }
    return c.promise;
  }

  /** At the end of the turn: the pending commit covers every row logged so far; the log thread is asked to write them now. */
  private readonly seal = (): void => {
    const c = this.pendingCommit;
    if (c === null) return;
    this.pendingCommit = null;
    c.through = this.ring.rows;
    this.commitFrom = c.through;
    this.commits.push(c);
    if (!reached(this.ring.settled(), c.through)) this.ring.urgent();
    this.settle();
  };

  /** Resolves the commits whose rows the log thread has settled, and waits (cheaply) for the rest. */
  private settle(): void {
    const cs = this.commits;
    if (cs.length === 0) return;
    const settled = this.ring.settled();
    // Read after the settled count: a refusal not yet reported decides first which commits failed.
    if (this.ring.refusals() !== this.refusalsSeen) return;
    let k = 0;
    while (k < cs.length && reached(settled, cs[k]!.through)) cs[k++]!.resolve();
    if (k > 0) cs.splice(0, k);
    if (cs.length === 0 || this.watching) return;
    this.watching = true;
    const again = () => {
      this.watching = false;
      this.settle();
    };
    const change = this.ring.settledChange(settled);
    if (change === null) queueMicrotask(again);
    else void change.then(again);
  }

  private rejectAll(err: Error): void {
    for (const c of this.commits) c.reject(err);
    this.commits.length = 0;
    this.pendingCommit?.reject(err);
    this.pendingCommit = null;
  }

  private written(): void {
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

  /** Shipping changed: a failure episode is logged once when it starts (error) and once when it ends. */
  private shipped(next: ShippingStatus): void {
    const before = this.shippingStatus;
    this.shippingStatus = next;
    if (before === null || before.state === next.state) return;
    if (next.state === 'failing')
      this.opts.logger?.error(
        { file: this.file, err: next.last_error, backlog: next.backlog_rows },
        `prediction log: cannot ship to PostgreSQL (${next.last_error}); predictions wait in ${this.file} and are retried, and feedback is answered 503 until it is back`,
      );
    else
      (this.opts.logger?.info ?? this.opts.logger?.warn)?.call(
        this.opts.logger,
        { file: this.file, errors: next.errors, backlog: next.backlog_rows },
        'prediction log: shipping to PostgreSQL again; the predictions that waited are being shipped',
      );
  }

  /** Predictions shipped to PostgreSQL since start (0 when not shared). */
  get shippedRows(): number {
    return this.shippingStatus?.shipped ?? 0;
  }

  /** Failed attempts to ship to PostgreSQL since start. */
  get shipErrors(): number {
    return this.shippingStatus?.errors ?? 0;
  }

  /** Predictions committed locally and not yet in PostgreSQL. */
  get shipBacklog(): number {
    return this.shippingStatus?.backlog_rows ?? 0;
  }

  private failed(m: Extract<LogReport, { kind: 'failed' }>): void {
    if (m.refused > 0)
      this.refused(
        m.refusedFrom,
        m.refusedThrough,
        m.refusals,
        storeUnavailable(`the prediction log could not commit this prediction: ${m.error}`),
      );
    this.noteFailure(m.error, m.code, m.held);
  }

  /**
   * Durability sync: rows after `from` through `through` were not committed. A commit whose rows
   * overlap them fails; one wholly before them was committed.
   */
  private refused(from: number, through: number, refusals: number, err: Error): void {
    const overlaps = (c: Deferred) => c.through !== c.from && !reached(c.from, through);
    this.commits.splice(
      0,
      this.commits.length,
      ...this.commits.filter((c) => {
        if (reached(from, c.through)) c.resolve();
        else if (overlaps(c)) c.reject(err);
        else return true;
        return false;
      }),
    );
    // Rows of this turn may be among them: its commit fails, and the next one starts after them.
    const p = this.pendingCommit;
    if (p !== null && !reached(p.from, through)) {
      p.reject(err);
      this.pendingCommit = null;
    }
    this.commitFrom = this.ring.rows;
    this.noteRefusals(refusals);
    this.settle();
  }

  /** Refusals up to number `refusals` are handled (a late report of a dead thread never moves it back). */
  private noteRefusals(refusals: number): void {
    if (reached(refusals, this.refusalsSeen)) this.refusalsSeen = refusals;
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
    // PostgreSQL unreachable (shared log): the store's 503 with Retry-After, message as it was.
    if (m.code === 'STORE_UNAVAILABLE') w.reject(storeUnavailable(m.error));
    else w.reject(isDiskFull(m) ? insufficientStorage(this.opts.dataDir, new Error(m.error)) : new Error(m.error));
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
      restarts: this.restarts,
      shipping: this.shippingStatus === null ? null : { ...this.shippingStatus },
    };
  }

  private request<T>(m: Record<string, unknown>): Promise<T> {
    if (this.dead !== null) return Promise.reject(this.dead);
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...m, id, rows: this.ring.rows });
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
    if (!this.closed && points.length > 0) this.post({ op: 'history.put', seq: ++this.seq, points });
  }

  history(model: string, version: number, from: number, to: number): Promise<Record<string, unknown>[]> {
    return this.request({ op: 'history.get', model, version, from, to });
  }

  saveAlert(id: string, state: string, data: unknown, at: number): void {
    if (!this.closed) this.post({ op: 'alerts.save', seq: ++this.seq, alert: { id, state, data: JSON.stringify(data), at } });
  }

  /**
   * A write that owes no answer: kept until the log thread acknowledges it, and sent to the next
   * thread if this one dies first (and while none runs, only kept). Beyond MAX_PARKED kept, the
   * oldest is let go of: the thread still writes it, but a death before it does loses it (counted
   * and logged then).
   */
  private post(m: Extract<LogRequest, { seq: number }>): void {
    if (this.dead === null) this.worker.postMessage(m);
    this.unsaved.push(m);
    if (this.unsaved.length > MAX_PARKED) {
      const gone = this.unsaved.shift()!;
      if (this.dead !== null) {
        // No thread to write it: lost now (logged when the next one starts).
        this.parkedDropped++;
        return;
      }
      this.overflow.push(gone.seq);
    }
  }

  alertHistory(limit: number, since: number): Promise<unknown[]> {
    return this.request({ op: 'alerts.history', limit, since });
  }

  openAlerts(): Promise<unknown[]> {
    return this.request({ op: 'alerts.open' });
  }

  /**
   * Drops predictions (with their ids and labels), history and alert events older than `before`;
   * shared, keeps what is not shipped yet and drops PostgreSQL's day partitions wholly before it.
   */
  prune(before: number): Promise<PruneReport> {
    return this.request({ op: 'prune', before });
  }

  /** Tries to write everything logged so far (also what a failure holds); resolves with the predictions still held. */
  async drain(): Promise<{ held: number }> {
    return this.request({ op: 'flush' });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.drain().catch(() => undefined);
    if (this.opts.shared !== undefined) {
      // Shared: what is committed ships before the process goes (the next start on this data dir ships the rest).
      const r = await this.request<{ unshipped: number }>({ op: 'close', waitMs: CLOSE_SHIP_MS }).catch(() => null);
      if (r !== null && r.unshipped > 0)
        this.opts.logger?.warn(
          { file: this.file, unshipped: r.unshipped },
          `prediction log: ${r.unshipped} predictions are not shipped to the shared store yet; they ship at the next start on this data dir`,
        );
    }
    this.closed = true;
    // What the log thread still holds, and anything logged while it wrote the rest.
    const held = this.backlog;
    if (held > 0) {
      this.dropped += held;
      this.opts.logger?.error(
        { file: this.file, held, lastError: this.lastError },
        `prediction log: ${held} predictions could not be written before shutdown and are lost`,
      );
    }
    clearInterval(this.pruneTimer);
    if (this.restartTimer !== null) clearTimeout(this.restartTimer);
    this.rejectAll(storeUnavailable('the prediction log is closed'));
    await this.worker.terminate();
  }
}
