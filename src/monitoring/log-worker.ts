// The monitoring store's own thread: every SQLite write and read of <data-dir>/monitoring.db
// (log-store.ts) happens here, never on the HTTP thread. `npm run bench:monitoring` measures the CPU
// the log costs per prediction, both threads (see bench/RESULTS.md).
//
// Writes (segments, history points, alert events) queue here in arrival order and are committed in
// groups: whatever arrived while the previous transaction ran goes into the next one, so under load a
// commit (and, with durability sync, its fsync) is shared by many flushes. A write that fails (disk
// full, file unwritable) stays queued and is retried with backoff, oldest first, and the HTTP thread
// is told, so it can count, log and report it; with durability sync the failed flushes are refused
// instead (their requests are waiting, and get an error rather than an answer nobody logged).

import { closeSync, openSync, readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { openStore, type AppendSegment, type Store, type Task, type Write } from './log-store.js';
import { classificationMetrics, regressionMetrics } from './metrics.js';

export type { AppendSegment, FeedbackResult, Task } from './log-store.js';

// On Linux a thread has its own nice value: this one yields to the HTTP thread when both want the
// same core (nice 10 still gets ~10% of a contended core, more than the log needs at tens of
// thousands of predictions a second), so a flush never stalls a request. Elsewhere: no-op.
try {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  if (Number.isInteger(tid) && tid > 0) setPriority(tid, 10);
} catch {
  // not Linux, or not permitted
}

export interface LogWorkerData {
  file: string;
  durability: 'async' | 'sync';
}

export type LogRequest =
  /** One flush of the HTTP thread: its segments are committed together, acknowledged by `seq`. */
  | { op: 'append'; seq: number; segments: AppendSegment[] }
  | { op: 'feedback'; id: number; items: { requestId: string; label: number }[]; now: number }
  | { op: 'labelled'; id: number; model: string; version: number; since: number; limit: number }
  | { op: 'performance'; id: number; model: string; version: number; since: number; limit: number; task: Task; threshold: number }
  | { op: 'training'; id: number; model: string; since: number; limit: number }
  | { op: 'history.put'; points: { model: string; version: number; at: number; data: string }[] }
  | { op: 'history.get'; id: number; model: string; version: number; from: number; to: number }
  | { op: 'alerts.save'; alert: { id: string; state: string; data: string; at: number } }
  | { op: 'alerts.history'; id: number; limit: number; since: number }
  | { op: 'alerts.open'; id: number }
  | { op: 'prune'; before: number; id: number }
  /** Tries every queued write now (backoff or not), then answers how many predictions are still held. */
  | { op: 'flush'; id: number };

/** What the log thread reports about its writes, besides answers to requests. */
export type LogReport =
  /** Every append up to `through` is committed (or was refused earlier); `rows` predictions were just written. */
  | { kind: 'written'; through: number; rows: number }
  /**
   * A write failed. Async: everything stays queued (`held` predictions) and is retried. Sync: the
   * appends of the failed transaction are refused (`refused` predictions, seqs up to `refusedThrough`).
   */
  | { kind: 'failed'; error: string; code: string | null; held: number; refused: number; refusedThrough: number };

/** An answer to a request with an `id`. */
export type LogReply = { id: number; value: unknown } | { id: number; error: string; code: string | null };

/** Predictions per transaction while catching up on a queue (a single flush is never split). */
const GROUP_ROWS = 65_536;
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2000;

const { file, durability } = workerData as LogWorkerData;
const SYNC = durability === 'sync';

let store: Store | null = null;

/** The store, opened on first use and again after a failed open (a full disk at start). */
function storeOf(): Store {
  if (store !== null) return store;
  // Created private before SQLite opens it: its -wal and -shm files are made with the same mode.
  closeSync(openSync(file, 'a', 0o600));
  const db = new Database(file);
  try {
    store = openStore(db, SYNC);
  } catch (e) {
    db.close();
    throw e;
  }
  return store;
}

const queue: Write[] = [];
let drainQueued = false;
let retryTimer: NodeJS.Timeout | null = null;
let retryMs = RETRY_MIN_MS;
let failing = false;
/** Every append up to this seq is committed or refused. */
let settledThrough = 0;

const post = (m: LogReport | LogReply, transfer: ArrayBuffer[] = []) => parentPort!.postMessage(m, transfer);
const codeOf = (e: unknown): string | null => {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : null;
};
const heldRows = () => queue.reduce((a, w) => a + (w.kind === 'append' ? w.rows : 0), 0);

function enqueue(w: Write): void {
  queue.push(w);
  if (!drainQueued) {
    drainQueued = true;
    setImmediate(drain);
  }
}

/**
 * Commits the queue, oldest first, in groups. While a failure's backoff runs, new writes wait for
 * it, except with durability sync, where requests wait on each flush and try at once.
 */
function drain(force = false): void {
  drainQueued = false;
  if (retryTimer !== null) {
    if (!force && !(SYNC && queue.some((w) => w.kind === 'append'))) return;
    clearTimeout(retryTimer);
    retryTimer = null;
  }
  const reopening = store === null;
  let s: Store;
  try {
    s = storeOf();
  } catch (e) {
    failed(e);
    return;
  }
  while (queue.length > 0) {
    let k = 0;
    let rows = 0;
    while (k < queue.length && (k === 0 || rows < GROUP_ROWS)) {
      const w = queue[k++]!;
      if (w.kind === 'append') rows += w.rows;
    }
    const group = queue.slice(0, k);
    try {
      s.writeGroup(group);
    } catch (e) {
      failed(e);
      return;
    }
    queue.splice(0, k);
    for (const w of group) if (w.kind === 'append') settledThrough = w.seq;
    failing = false;
    retryMs = RETRY_MIN_MS;
    post({ kind: 'written', through: settledThrough, rows });
  }
  if (failing && reopening) {
    // The store opens again and nothing was queued: say so, or the failure would look permanent.
    failing = false;
    retryMs = RETRY_MIN_MS;
    post({ kind: 'written', through: settledThrough, rows: 0 });
  }
}

function failed(e: unknown): void {
  failing = true;
  let refused = 0;
  let refusedThrough = 0;
  if (SYNC) {
    // Their requests are still waiting: every queued flush gets an error now (the ones behind the
    // failed group would fail the same way) and these rows are never written.
    for (let i = 0; i < queue.length; ) {
      const w = queue[i]!;
      if (w.kind !== 'append') {
        i++;
        continue;
      }
      queue.splice(i, 1);
      refused += w.rows;
      refusedThrough = settledThrough = w.seq;
    }
  }
  post({ kind: 'failed', error: (e as Error)?.message ?? String(e), code: codeOf(e), held: heldRows(), refused, refusedThrough });
  // Retried until it works. With nothing left to write (sync refused it) the next flush is the retry.
  if (retryTimer === null && (queue.length > 0 || store === null)) {
    retryTimer = setTimeout(() => {
      retryTimer = null;
      drain();
    }, retryMs);
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
  }
}

function answer(m: Exclude<LogRequest, { op: 'append' | 'history.put' | 'alerts.save' }>): void {
  // Reads see every write queued before them (and feedback first retries held predictions, so that
  // labels sent just after the disk has room again find them).
  drain(m.op === 'feedback' || m.op === 'flush');
  if (m.op === 'flush') {
    post({ id: m.id, value: { held: heldRows() } });
    return;
  }
  const s = storeOf();
  switch (m.op) {
    case 'feedback':
      post({ id: m.id, value: s.feedback(m.items, m.now) });
      return;
    case 'labelled': {
      const { scores, labels } = s.labelledRows(m.model, m.version, m.since, m.limit);
      post({ id: m.id, value: { scores, labels } }, [scores.buffer as ArrayBuffer, labels.buffer as ArrayBuffer]);
      return;
    }
    case 'performance': {
      // Sorting a day of labels takes tens of milliseconds: done here, not on the HTTP thread.
      const { scores, labels } = s.labelledRows(m.model, m.version, m.since, m.limit);
      const metrics = scores.length === 0 ? null : m.task === 'regression' ? regressionMetrics(scores, labels) : classificationMetrics(scores, labels, m.threshold);
      post({ id: m.id, value: { n: scores.length, metrics } });
      return;
    }
    case 'training': {
      const rows = s.training.all(m.model, m.since, m.limit) as { ts: number; score: number; features: Buffer; label: number }[];
      post({
        id: m.id,
        value: rows.map((r) => ({ ts: r.ts, score: r.score, label: r.label, features: Array.from(new Float32Array(r.features.buffer, r.features.byteOffset, r.features.byteLength / 4)) })),
      });
      return;
    }
    case 'history.get':
      post({
        id: m.id,
        value: (s.historyGet.all(m.model, m.version, m.from, m.to) as { at: number; data: string }[]).map((r) => ({ at: r.at, ...JSON.parse(r.data) })),
      });
      return;
    case 'alerts.history':
      post({ id: m.id, value: (s.alertHistory.all(m.since, m.limit) as { data: string }[]).map((r) => JSON.parse(r.data)) });
      return;
    case 'alerts.open':
      post({ id: m.id, value: (s.alertOpen.all() as { data: string }[]).map((r) => JSON.parse(r.data)) });
      return;
    case 'prune':
      post({ id: m.id, value: s.prune(m.before) });
      return;
  }
}

parentPort!.on('message', (m: LogRequest) => {
  switch (m.op) {
    case 'append':
      return enqueue({ kind: 'append', seq: m.seq, segments: m.segments, rows: m.segments.reduce((a, s) => a + s.n, 0) });
    case 'history.put':
      return enqueue({ kind: 'history', points: m.points });
    case 'alerts.save':
      return enqueue({ kind: 'alert', alert: m.alert });
    default:
      try {
        answer(m);
      } catch (e) {
        post({ id: m.id, error: (e as Error).message, code: codeOf(e) });
      }
  }
});

// Opened now, so that a store that cannot be opened is reported (and retried) before the first write.
drain(true);
