// The monitoring store's own thread: every SQLite write and read of <data-dir>/monitoring.db
// (log-store.ts) happens here, never on the HTTP thread. Predictions arrive through the shared ring
// (log-ring.ts): this thread sleeps until the HTTP thread's first row after a quiet spell, reads the
// ring within flushMs of it (at once when the HTTP thread asks: a durability sync commit, the ring a
// quarter full), assembles segments (log-segments.ts) and writes them.
//
// Writes (segments, history points, alert events) queue here in arrival order and are committed in
// groups: whatever arrived while the previous transaction ran goes into the next one, so under load a
// commit (and, with durability sync, its fsync) is shared by many flushes. A write that fails (disk
// full, file unwritable) stays queued and is retried with backoff, oldest first, and the HTTP thread
// is told, so it can count, log and report it; with durability sync the failed rows are refused
// instead (their requests are waiting, and get an error rather than an answer nobody logged). What
// is committed or refused is published in the ring as a row count, which is what commits wait on,
// and only then is the rows' space in the ring freed: a thread that dies before leaves them there
// for the next one. Each commit of rows also stores the ring row it reaches in the file (the ring
// mark), so the next thread skips rows committed just before a death instead of writing them twice.
// History points and alert events are acknowledged once committed; the HTTP thread keeps the rest
// and sends them again to a new thread.
// Held rows are bounded: past MAX_BACKLOG this thread stops reading the ring, which then fills, and
// the HTTP thread drops (and counts) what does not fit.
//
// Shared (the store is PostgreSQL): committed segments are also shipped to PostgreSQL afterwards
// (log-shipping.ts), and feedback, labelled windows, performance and training data are answered from
// there, so a label sent to any replica joins and every replica's windows count every replica's
// labels. This file's own `labels` table is then not used.

import { closeSync, openSync, readlinkSync, writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { IDLE, PENDING, type RecordVisitor, reached, RingReader, URGENT } from './log-ring.js';
import { MAX_BACKLOG, SegmentAssembler } from './log-segments.js';
import { LogShipper, type ShippingStatus } from './log-shipping.js';
import { openStore, type Store, type Task, type Write } from './log-store.js';
import { classificationMetrics, regressionMetrics } from './metrics.js';

export type { AppendSegment, FeedbackResult, Task } from './log-store.js';

// On Linux a thread has its own nice value: this one yields to the HTTP thread when both want the
// same core (nice 10 still gets ~10% of a contended core, more than the log needs at tens of
// thousands of predictions a second), so a flush never stalls a request. It is named, so that
// `top -H` (and the monitoring benchmark) can tell its CPU from the HTTP thread's. Elsewhere: no-op.
try {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  if (Number.isInteger(tid) && tid > 0) setPriority(tid, 10);
  writeFileSync('/proc/thread-self/comm', 'scoreline-log');
} catch {
  // not Linux, or not permitted
}

export interface LogWorkerData {
  file: string;
  durability: 'async' | 'sync';
  /** The ring the HTTP thread writes predictions into (log-ring.ts). */
  ring: SharedArrayBuffer;
  /** Longest a row waits in the ring before this thread writes it, ms. */
  flushMs: number;
  /** Set when the log is shared through PostgreSQL: its URL. */
  shared?: { url: string };
  /**
   * Set when this thread replaces one that died: the streams defined so far (index, definition
   * JSON), whose definitions the dead thread may have freed from the ring. Reading resumes at the
   * ring's tail: the rows the dead thread read and did not settle are read again, less those the
   * file's ring mark says it committed.
   */
  restart?: { streams: [number, string][] };
}

export type LogRequest =
  | { op: 'feedback'; id: number; items: { requestId: string; label: number }[]; now: number }
  | { op: 'labelled'; id: number; model: string; version: number; since: number; limit: number }
  | { op: 'performance'; id: number; model: string; version: number; since: number; limit: number; task: Task; threshold: number }
  | { op: 'training'; id: number; model: string; since: number; limit: number }
  /** `seq` numbers the writes that owe no answer: acknowledged (`saved`) once committed, sent again to a new thread until then. */
  | { op: 'history.put'; seq: number; points: { model: string; version: number; at: number; data: string }[] }
  | { op: 'history.get'; id: number; model: string; version: number; from: number; to: number }
  | { op: 'alerts.save'; seq: number; alert: { id: string; state: string; data: string; at: number } }
  | { op: 'alerts.history'; id: number; limit: number; since: number }
  | { op: 'alerts.open'; id: number }
  | { op: 'prune'; before: number; id: number }
  /** Reads the ring and tries every queued write now (backoff or not), then answers how many predictions are still held. */
  | { op: 'flush'; id: number }
  /** The log is closing: what is committed is shipped (at most `waitMs`), and the shared store's connections are closed. */
  | { op: 'close'; id: number; waitMs: number };

/**
 * The requests that answer, with `rows`: how many predictions the HTTP thread had logged when it
 * asked. Each sees those rows, and no later ones.
 */
type Question = Exclude<LogRequest, { op: 'history.put' | 'alerts.save' }> & { rows: number };

/** What the log thread reports about its writes, besides answers to requests (and the settled count in the ring). */
export type LogReport =
  /** Writes succeed again after a failure. */
  | { kind: 'written' }
  /** History points and alert events through number `seq` are committed. */
  | { kind: 'saved'; seq: number }
  /**
   * A write failed. Async: everything stays queued (`held` predictions) and is retried. Sync: the
   * queued rows are refused (`refused` predictions, rows after `refusedFrom` through
   * `refusedThrough`), which is refusal number `refusals` in the ring.
   */
  | {
      kind: 'failed';
      error: string;
      code: string | null;
      held: number;
      refused: number;
      refusedFrom: number;
      refusedThrough: number;
      refusals: number;
    }
  /** Shared: shipping to PostgreSQL changed (rows shipped or waiting, a failure or recovery). */
  | { kind: 'shipping'; status: ShippingStatus };

/** An answer to a request with an `id`. */
export type LogReply = { id: number; value: unknown } | { id: number; error: string; code: string | null };

/** Predictions per transaction while catching up on a queue (a single read of the ring is never split). */
const GROUP_ROWS = 65_536;
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2000;

const { file, durability, ring, flushMs, shared, restart } = workerData as LogWorkerData;
const SYNC = durability === 'sync';
const reader = new RingReader(ring);
const assembler = new SegmentAssembler();
for (const [index, json] of restart?.streams ?? []) assembler.define(index, json);

let store: Store | null = null;

const shipper =
  shared === undefined ? null : new LogShipper(shared.url, storeOf, (status) => post({ kind: 'shipping', status: { ...status } }));

/** The store, opened on first use and again after a failed open (a full disk at start). */
function storeOf(): Store {
  if (store !== null) return store;
  // Created private before SQLite opens it: its -wal and -shm files are made with the same mode.
  closeSync(openSync(file, 'a', 0o600));
  const db = new Database(file);
  try {
    store = openStore(db, SYNC, shared !== undefined);
  } catch (e) {
    db.close();
    throw e;
  }
  return store;
}

const queue: Write[] = [];
/** Predictions in the queue. */
let held = 0;
let writeQueued = false;
let retryTimer: NodeJS.Timeout | null = null;
let retryMs = RETRY_MIN_MS;
/** After a restart the HTTP thread counts the log as failing until this thread's first write. */
let failing = restart !== undefined;
/** A write failed and none has succeeded since: rows read are held in memory and freed from the ring at once. */
let holding = false;
/** A replacement first skips the rows its dead predecessor committed and did not settle (the file's ring mark). */
let markChecked = restart === undefined;
/** Rows committed or refused so far (as published in the ring). */
let settledThrough = reader.settled();
/** Rows read into the queue (or settled) so far: a read past it that assembled nothing skipped rows, which still settle. */
let queuedThrough = reader.rows;
/** Set while reading is paused at MAX_BACKLOG: called once a write makes room. */
let onRoom: (() => void) | null = null;

const post = (m: LogReport | LogReply, transfer: ArrayBuffer[] = []) => parentPort!.postMessage(m, transfer);
const codeOf = (e: unknown): string | null => {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : null;
};

/**
 * Moves the rows in the ring (those before row `until`, when given) into the queue, as segments;
 * nothing while MAX_BACKLOG rows are held.
 */
function pull(until: number | null = null): void {
  if (held >= MAX_BACKLOG) return;
  if (!markChecked) {
    const unopened = skipCommitted();
    if (unopened !== null) {
      if (SYNC) refuseUnread(unopened);
      return;
    }
  }
  try {
    reader.read(assembler, until);
  } catch (e) {
    // A record the thread cannot read is a bug: the rows before it stay in the ring, unread.
    assembler.discard();
    throw e;
  }
  const { segments, rows } = assembler.take();
  // Only skipped rows (one that killed a thread): nothing to write, but they are settled all the same.
  if (rows === 0 && reader.rows === queuedThrough) return;
  queue.push({ kind: 'append', through: reader.rows, position: reader.position, segments, rows });
  queuedThrough = reader.rows;
  held += rows;
  // Writes are failing: what is read waits here, and the ring takes new rows meanwhile.
  if (holding) reader.release();
}

/** What a record visitor that keeps no row does with the other records. */
const definitionsOnly: RecordVisitor = {
  row: () => undefined,
  define: (index, json) => assembler.define(index, json),
  cut: () => assembler.cut(),
};

/**
 * A thread that died between committing rows and settling them left them in the ring: the file's
 * ring mark (committed with them) says so, and they are skipped here, not written twice. Returns
 * the error while the store cannot be opened (the mark is unknown), else null.
 */
function skipCommitted(): Error | null {
  let mark: ReturnType<Store['ringMark']>;
  try {
    mark = storeOf().ringMark();
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
  markChecked = true;
  if (mark === null || mark.ring !== reader.id || reached(reader.rows, mark.through)) return null;
  reader.read(definitionsOnly, mark.through);
  settledThrough = queuedThrough = mark.through;
  reader.settle(mark.through, reader.position);
  return null;
}

/**
 * Durability sync while the store cannot be opened and the ring mark is unknown: the requests are
 * waiting, so the rows in the ring are refused now, as the rows of a failed write are (some may be
 * rows a dead thread committed: their requests then get an error, never an answer that was not logged).
 */
function refuseUnread(e: Error): void {
  const from = settledThrough;
  reader.read(definitionsOnly);
  if (reader.rows !== from) {
    const refusals = reader.refuse();
    settledThrough = queuedThrough = reader.rows;
    reader.settle(reader.rows, reader.position);
    failing = holding = true;
    post({
      kind: 'failed',
      error: e.message,
      code: codeOf(e),
      held,
      refused: (reader.rows - from) | 0,
      refusedFrom: from,
      refusedThrough: reader.rows,
      refusals,
    });
  }
}

function enqueue(w: Write): void {
  queue.push(w);
  if (!writeQueued) {
    writeQueued = true;
    setImmediate(write);
  }
}

/**
 * Commits the queue, oldest first, in groups. While a failure's backoff runs, new writes wait for
 * it, except with durability sync, where requests wait on the rows and try at once.
 */
function write(force = false): void {
  writeQueued = false;
  if (retryTimer !== null) {
    if (!force && !(SYNC && held > 0)) return;
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
    let last: Extract<Write, { kind: 'append' }> | null = null;
    let saved = -1;
    for (const w of group) {
      if (w.kind === 'append') last = w;
      else saved = w.seq;
    }
    try {
      s.writeGroup(group, last === null ? null : { ring: reader.id, through: last.through });
    } catch (e) {
      failed(e);
      return;
    }
    queue.splice(0, k);
    held -= rows;
    if (last !== null) {
      settledThrough = last.through;
      reader.settle(last.through, last.position);
      shipper?.kick();
    }
    if (saved >= 0) post({ kind: 'saved', seq: saved });
    recovered();
  }
  if (reopening) recovered();
  room();
}

/** Resumes reading the ring once the held rows are below MAX_BACKLOG again. */
function room(): void {
  if (onRoom === null || held >= MAX_BACKLOG) return;
  const resume = onRoom;
  onRoom = null;
  resume();
}

/** A write succeeded: after a failure, the HTTP thread is told (it logs the recovery once). */
function recovered(): void {
  holding = false;
  if (!failing) return;
  failing = false;
  retryMs = RETRY_MIN_MS;
  post({ kind: 'written' });
}

function failed(e: unknown): void {
  failing = true;
  holding = true;
  let refused = 0;
  const refusedFrom = settledThrough;
  let refusedThrough = settledThrough;
  let refusedPosition = 0;
  let refusals = reader.refusals();
  if (SYNC) {
    // Their requests are still waiting: every queued row gets an error now (the ones behind the
    // failed group would fail the same way) and these rows are never written.
    for (let i = 0; i < queue.length; ) {
      const w = queue[i]!;
      if (w.kind !== 'append') {
        i++;
        continue;
      }
      queue.splice(i, 1);
      refused += w.rows;
      refusedThrough = w.through;
      refusedPosition = w.position;
    }
    if (refused > 0) {
      held -= refused;
      // Counted before the rows are settled: a commit that sees them settled also sees the refusal.
      refusals = reader.refuse();
      settledThrough = refusedThrough;
      reader.settle(refusedThrough, refusedPosition);
      room();
    }
  }
  post({
    kind: 'failed',
    error: (e as Error)?.message ?? String(e),
    code: codeOf(e),
    held,
    refused,
    refusedFrom,
    refusedThrough,
    refusals,
  });
  // Retried until it works. With nothing left to write (sync refused it) the next rows are the retry.
  if (retryTimer === null && (queue.length > 0 || store === null)) {
    retryTimer = setTimeout(() => {
      retryTimer = null;
      write();
    }, retryMs);
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
  }
}

/**
 * Waits for rows and writes them: asleep while the ring is empty, woken by the HTTP thread's first
 * row (written within flushMs of it) or by its asking for everything now.
 */
async function run(): Promise<void> {
  /** When the rows waiting in the ring must be written by. */
  let due = Infinity;
  /** When the last read of the ring began: rows found after it arrived no earlier. */
  let lastRead = Date.now();
  for (;;) {
    if (held >= MAX_BACKLOG) {
      // Writes are failing and hold all they may: leave the rest in the ring until one succeeds.
      await new Promise<void>((resolve) => (onRoom = resolve));
      continue;
    }
    const wake = reader.wake();
    if (wake === IDLE) {
      if (reader.empty()) {
        due = Infinity;
        await reader.waitWake(IDLE);
      } else if (reader.swapWake(IDLE, PENDING)) {
        // Rows published while the last write ran, without a wake: due a flush after it began.
        due = lastRead + flushMs;
      }
      continue;
    }
    if (wake === PENDING) {
      if (due === Infinity) due = Date.now() + flushMs;
      const left = due - Date.now();
      if (left > 0) {
        await reader.waitWake(PENDING, left);
        continue;
      }
    }
    // Asked for now (URGENT), or due: everything in the ring is read and written.
    reader.swapWake(URGENT, PENDING);
    lastRead = Date.now();
    pull();
    write();
    due = Infinity;
    // A writer that asked again meanwhile (URGENT) is served by the next turn.
    reader.swapWake(PENDING, IDLE);
    // Shipping's network I/O (and the answers it owes) runs only when this loop lets the event
    // loop turn: under a steady stream of urgent wakes it otherwise never would.
    if (shipper !== null) await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

function answer(m: Question): void {
  // Reads see every row the HTTP thread logged before asking, and every write queued before them
  // (and feedback first retries held predictions, so that labels sent just after the disk has room
  // again find them).
  pull(m.rows);
  write(m.op === 'feedback' || m.op === 'flush' || m.op === 'close');
  if (m.op === 'flush') {
    post({ id: m.id, value: { held } });
    return;
  }
  if (m.op === 'close') {
    void closeShipping(m.waitMs).then((unshipped) => post({ id: m.id, value: { held, unshipped } }));
    return;
  }
  const s = storeOf();
  if (
    shipper !== null &&
    (m.op === 'feedback' || m.op === 'labelled' || m.op === 'performance' || m.op === 'training' || m.op === 'prune')
  ) {
    answerShared(shipper, s, m).catch((e) => post({ id: m.id, error: (e as Error).message, code: codeOf(e) }));
    return;
  }
  switch (m.op) {
    case 'feedback':
      post({ id: m.id, value: s.feedback(m.items, m.now) });
      return;
    case 'labelled': {
      const { scores, labels } = s.labelledRows(m.model, m.version, m.since, m.limit);
      post({ id: m.id, value: { scores, labels } }, [scores.buffer as ArrayBuffer, labels.buffer as ArrayBuffer]);
      return;
    }
    case 'performance':
      post({ id: m.id, value: performanceOf(s.labelledRows(m.model, m.version, m.since, m.limit), m.task, m.threshold) });
      return;
    case 'training': {
      const rows = s.training.all(m.model, m.since, m.limit) as { ts: number; score: number; features: Buffer; label: number }[];
      post({
        id: m.id,
        value: rows.map((r) => ({
          ts: r.ts,
          score: r.score,
          label: r.label,
          features: Array.from(new Float32Array(r.features.buffer, r.features.byteOffset, r.features.byteLength / 4)),
        })),
      });
      return;
    }
    case 'history.get':
      post({
        id: m.id,
        value: (s.historyGet.all(m.model, m.version, m.from, m.to) as { at: number; data: string }[]).map((r) => ({
          at: r.at,
          ...JSON.parse(r.data),
        })),
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

/** Sorting a day of labels takes tens of milliseconds: done here, not on the HTTP thread. */
function performanceOf(rows: { scores: Float64Array; labels: Float64Array }, task: Task, threshold: number) {
  const { scores, labels } = rows;
  const metrics =
    scores.length === 0
      ? null
      : task === 'regression'
        ? regressionMetrics(scores, labels)
        : classificationMetrics(scores, labels, threshold);
  return { n: scores.length, metrics };
}

/** The questions a shared log answers from PostgreSQL (its labels are every replica's). */
/**
 * Ships what is committed before the process goes (bounded by waitMs: PostgreSQL may be away, and
 * then the rows stay in the file for the next start on this data dir), then closes the connections.
 * Answers how many committed rows are still not shipped.
 */
async function closeShipping(waitMs: number): Promise<number> {
  if (shipper === null) return 0;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, waitMs);
  });
  await Promise.race([shipper.catchUp().catch(() => undefined), late]);
  clearTimeout(timer);
  const unshipped = shipper.status.backlog_rows;
  await shipper.close().catch(() => undefined);
  return unshipped;
}

async function answerShared(shipper: LogShipper, s: Store, m: Question): Promise<void> {
  switch (m.op) {
    case 'feedback':
      post({ id: m.id, value: await shipper.feedback(m.items, m.now) });
      return;
    case 'labelled': {
      const { scores, labels } = await shipper.labelledRows(m.model, m.version, m.since, m.limit);
      post({ id: m.id, value: { scores, labels } }, [scores.buffer as ArrayBuffer, labels.buffer as ArrayBuffer]);
      return;
    }
    case 'performance':
      post({ id: m.id, value: performanceOf(await shipper.labelledRows(m.model, m.version, m.since, m.limit), m.task, m.threshold) });
      return;
    case 'training':
      post({ id: m.id, value: await shipper.training(m.model, m.since, m.limit) });
      return;
    case 'prune': {
      // Locally, what is not shipped yet stays; in PostgreSQL, whole days past retention go.
      const local = s.prune(m.before, shipper.shippedThrough);
      let partitions: number | null = null;
      let error: string | null = null;
      try {
        partitions = await shipper.prune(m.before);
      } catch (e) {
        error = (e as Error).message;
      }
      post({ id: m.id, value: { ...local, partitions, ...(error !== null ? { sharedError: error } : {}) } });
      return;
    }
    default:
      throw new Error(`${m.op} is not answered from PostgreSQL`);
  }
}

parentPort!.on('message', (m: LogRequest) => {
  switch (m.op) {
    case 'history.put':
      return enqueue({ kind: 'history', seq: m.seq, points: m.points });
    case 'alerts.save':
      return enqueue({ kind: 'alert', seq: m.seq, alert: m.alert });
    default:
      try {
        answer(m as Question);
      } catch (e) {
        post({ id: m.id, error: (e as Error).message, code: codeOf(e) });
      }
  }
});

// Opened now, so that a store that cannot be opened is reported (and retried) before the first write.
write(true);
// Shared: what an earlier run committed and did not ship goes now (it also reads the watermark).
shipper?.kick();
run().catch((e) => {
  // A bug, not a failed write (those are caught where they happen): the thread's error event reports it.
  setImmediate(() => {
    throw e;
  });
});
