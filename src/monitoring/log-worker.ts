// The monitoring store's own thread: every SQLite write and read of <data-dir>/monitoring.db
// happens here, never on the HTTP thread.
//
// Predictions are stored as segments: one row per flushed batch of one model version and variant,
// its timestamps, scores and inputs packed columnar in a blob, so writing a prediction costs one
// entry in the request-id index instead of a row and three index entries. All of the log, both
// threads, costs 1.3 us of CPU per prediction in `npm run bench:monitoring`. A label that arrives (by
// request id) is joined to its prediction there and then: the score, time and inputs are copied into
// the `labels` table, which is what performance windows and retraining read, with plain indexes.
// Unknown ids are reported, not stored. Retention drops old segments, their ids and labels.

import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { classificationMetrics, regressionMetrics } from './metrics.js';

// On Linux a thread has its own nice value: this one yields to the HTTP thread when both want the
// same core (nice 10 still gets ~10% of a contended core, more than the log needs at tens of
// thousands of predictions a second), so a flush never stalls a request. Elsewhere: no-op.
try {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  if (Number.isInteger(tid) && tid > 0) setPriority(tid, 10);
} catch {
  // not Linux, or not permitted
}

/** One flushed batch of a model version and variant; `n` rows of `width` inputs each (NaN: not kept). */
export interface AppendSegment {
  model: string;
  version: number;
  variant: string;
  width: number;
  n: number;
  ids: string[];
  ts: Float64Array;
  scores: Float64Array;
  features: Float32Array;
}

export type LogRequest =
  | { op: 'append'; segment: AppendSegment }
  | { op: 'feedback'; id: number; items: { requestId: string; label: number }[]; now: number }
  | { op: 'labelled'; id: number; model: string; version: number; since: number; limit: number }
  | { op: 'performance'; id: number; model: string; version: number; since: number; limit: number; task: 'classification' | 'regression'; threshold: number }
  | { op: 'training'; id: number; model: string; since: number; limit: number }
  | { op: 'history.put'; points: { model: string; version: number; at: number; data: string }[] }
  | { op: 'history.get'; id: number; model: string; version: number; from: number; to: number }
  | { op: 'alerts.save'; alert: { id: string; state: string; data: string; at: number } }
  | { op: 'alerts.history'; id: number; limit: number; since: number }
  | { op: 'alerts.open'; id: number }
  | { op: 'prune'; before: number; id: number }
  | { op: 'flush'; id: number };

/** Rows per segment are below this; a prediction's location is segment id * SEG + row. */
export const SEG = 65536;

const db = new Database((workerData as { file: string }).file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.pragma('busy_timeout = 5000');
db.exec(`
  CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    variant TEXT NOT NULL,
    t0 INTEGER NOT NULL,
    t1 INTEGER NOT NULL,
    n INTEGER NOT NULL,
    width INTEGER NOT NULL,
    data BLOB NOT NULL
  );
  CREATE TABLE IF NOT EXISTS prediction_ids (request_id TEXT PRIMARY KEY, loc INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS labels (
    loc INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    variant TEXT NOT NULL,
    ts INTEGER NOT NULL,
    score REAL,
    features BLOB,
    label REAL NOT NULL,
    labelled_at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS labels_by_version ON labels (model, version, ts);
  CREATE INDEX IF NOT EXISTS labels_by_model ON labels (model, ts);
  CREATE TABLE IF NOT EXISTS history (
    model TEXT NOT NULL, version INTEGER NOT NULL, at INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (model, version, at)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, state TEXT NOT NULL, data TEXT NOT NULL, updated_at INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS alert_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, state TEXT NOT NULL, at INTEGER NOT NULL, data TEXT NOT NULL);
`);

const segmentPut = db.prepare('INSERT INTO segments (model, version, variant, t0, t1, n, width, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
// json_each expands the ids inside SQLite: one statement per segment, not one per prediction.
const idsPut = db.prepare('INSERT OR IGNORE INTO prediction_ids (request_id, loc) SELECT value, ? + key FROM json_each(?)');
const idGet = db.prepare('SELECT loc FROM prediction_ids WHERE request_id = ?').pluck();
const segmentGet = db.prepare('SELECT model, version, variant, n, width, data FROM segments WHERE id = ?');
const labelPut = db.prepare(
  'INSERT OR REPLACE INTO labels (loc, model, version, variant, ts, score, features, label, labelled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
);
const labelled = db.prepare('SELECT score, label FROM labels WHERE model = ? AND version = ? AND ts >= ? ORDER BY ts DESC LIMIT ?');
const training = db.prepare('SELECT ts, score, features, label FROM labels WHERE model = ? AND features IS NOT NULL AND ts >= ? ORDER BY ts LIMIT ?');
const historyPut = db.prepare('INSERT OR REPLACE INTO history (model, version, at, data) VALUES (?, ?, ?, ?)');
const historyGet = db.prepare('SELECT at, data FROM history WHERE model = ? AND version = ? AND at >= ? AND at <= ? ORDER BY at');
const alertPut = db.prepare('INSERT OR REPLACE INTO alerts (id, state, data, updated_at) VALUES (?, ?, ?, ?)');
const alertEvent = db.prepare('INSERT INTO alert_events (alert_id, state, at, data) VALUES (?, ?, ?, ?)');
const alertHistory = db.prepare('SELECT data FROM alert_events WHERE at >= ? ORDER BY seq DESC LIMIT ?');
const alertOpen = db.prepare("SELECT data FROM alerts WHERE state IN ('pending', 'firing')");

/** Blob layout: ts float64 x n, score float64 x n, inputs float32 x n*width (row-major). */
const appendSegment = db.transaction((s: AppendSegment) => {
  const { n, width } = s;
  if (n === 0) return;
  const data = Buffer.allocUnsafe(n * 16 + n * width * 4);
  Buffer.from(s.ts.buffer, s.ts.byteOffset, n * 8).copy(data, 0);
  Buffer.from(s.scores.buffer, s.scores.byteOffset, n * 8).copy(data, n * 8);
  if (width > 0) Buffer.from(s.features.buffer, s.features.byteOffset, n * width * 4).copy(data, n * 16);
  let t0 = Infinity;
  let t1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const t = s.ts[i]!;
    if (t < t0) t0 = t;
    if (t > t1) t1 = t;
  }
  const id = Number(segmentPut.run(s.model, s.version, s.variant, Math.floor(t0), Math.ceil(t1), n, width, data).lastInsertRowid);
  idsPut.run(id * SEG, JSON.stringify(s.ids.length === n ? s.ids : s.ids.slice(0, n)));
});

interface SegmentRow {
  model: string;
  version: number;
  variant: string;
  n: number;
  width: number;
  data: Buffer;
}

const feedback = db.transaction((items: { requestId: string; label: number }[], now: number) => {
  const unknown: string[] = [];
  let joined = 0;
  const segments = new Map<number, SegmentRow | undefined>();
  for (const it of items) {
    const loc = idGet.get(it.requestId) as number | undefined;
    const segId = loc === undefined ? -1 : Math.floor(loc / SEG);
    let seg = segments.get(segId);
    if (seg === undefined && loc !== undefined && !segments.has(segId)) {
      seg = segmentGet.get(segId) as SegmentRow | undefined;
      segments.set(segId, seg);
    }
    if (loc === undefined || seg === undefined) {
      // never logged (or sampled out), or pruned by retention
      unknown.push(it.requestId);
      continue;
    }
    const row = loc - segId * SEG;
    const ts = seg.data.readDoubleLE(row * 8);
    const score = seg.data.readDoubleLE(seg.n * 8 + row * 8);
    const features = seg.width > 0 ? seg.data.subarray(seg.n * 16 + row * seg.width * 4, seg.n * 16 + (row + 1) * seg.width * 4) : null;
    // A row logged without inputs is NaN throughout: keep no features for it.
    const kept = features !== null && !Number.isNaN(features.readFloatLE(0)) ? features : null;
    labelPut.run(loc, seg.model, seg.version, seg.variant, Math.round(ts), Number.isFinite(score) ? score : null, kept, it.label, now);
    joined++;
  }
  return { joined, unknown };
});

/** Drops segments older than `before` with their ids and labels. */
const prune = db.transaction((before: number) => {
  const keep = db.prepare('SELECT min(id) FROM segments WHERE t1 >= ?').pluck().get(before) as number | null;
  const max = db.prepare('SELECT max(id) FROM segments').pluck().get() as number | null;
  // Everything below the first segment still in retention goes (segment ids grow with time).
  const cut = keep ?? (max === null ? 0 : max + 1);
  let predictions = 0;
  if (cut > 0) {
    const gone = db.prepare('SELECT coalesce(sum(n), 0) FROM segments WHERE id < ?').pluck().get(cut) as number;
    if (gone > 0) {
      db.prepare('DELETE FROM segments WHERE id < ?').run(cut);
      db.prepare('DELETE FROM prediction_ids WHERE loc < ?').run(cut * SEG);
      db.prepare('DELETE FROM labels WHERE loc < ?').run(cut * SEG);
      predictions = gone;
    }
  }
  const history = db.prepare('DELETE FROM history WHERE at < ?').run(before).changes;
  const alertEvents = db.prepare('DELETE FROM alert_events WHERE at < ?').run(before).changes;
  return { predictions, history, alertEvents };
});

function labelledRows(model: string, version: number, since: number, limit: number): { scores: Float64Array; labels: Float64Array } {
  const rows = labelled.all(model, version, since, limit) as { score: number | null; label: number }[];
  const scores = new Float64Array(rows.length);
  const labels = new Float64Array(rows.length);
  rows.forEach((r, i) => {
    scores[i] = r.score ?? NaN;
    labels[i] = r.label;
  });
  return { scores, labels };
}

function reply(id: number, value: unknown, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage({ id, value }, transfer);
}

parentPort!.on('message', (m: LogRequest) => {
  try {
    switch (m.op) {
      case 'append':
        appendSegment(m.segment);
        // Acknowledged, so the HTTP thread knows how far behind the log is.
        parentPort!.postMessage({ written: m.segment.n });
        return;
      case 'feedback':
        return reply(m.id, feedback(m.items, m.now));
      case 'labelled': {
        const { scores, labels } = labelledRows(m.model, m.version, m.since, m.limit);
        return reply(m.id, { scores, labels }, [scores.buffer as ArrayBuffer, labels.buffer as ArrayBuffer]);
      }
      case 'performance': {
        // Sorting a day of labels takes tens of milliseconds: done here, not on the HTTP thread.
        const { scores, labels } = labelledRows(m.model, m.version, m.since, m.limit);
        const metrics = scores.length === 0 ? null : m.task === 'regression' ? regressionMetrics(scores, labels) : classificationMetrics(scores, labels, m.threshold);
        return reply(m.id, { n: scores.length, metrics });
      }
      case 'training': {
        const rows = training.all(m.model, m.since, m.limit) as { ts: number; score: number; features: Buffer; label: number }[];
        return reply(
          m.id,
          rows.map((r) => ({ ts: r.ts, score: r.score, label: r.label, features: Array.from(new Float32Array(r.features.buffer, r.features.byteOffset, r.features.byteLength / 4)) })),
        );
      }
      case 'history.put':
        db.transaction(() => {
          for (const p of m.points) historyPut.run(p.model, p.version, p.at, p.data);
        })();
        return;
      case 'history.get':
        return reply(
          m.id,
          (historyGet.all(m.model, m.version, m.from, m.to) as { at: number; data: string }[]).map((r) => ({ at: r.at, ...JSON.parse(r.data) })),
        );
      case 'alerts.save':
        alertPut.run(m.alert.id, m.alert.state, m.alert.data, m.alert.at);
        alertEvent.run(m.alert.id, m.alert.state, m.alert.at, m.alert.data);
        return;
      case 'alerts.history':
        return reply(m.id, (alertHistory.all(m.since, m.limit) as { data: string }[]).map((r) => JSON.parse(r.data)));
      case 'alerts.open':
        return reply(m.id, (alertOpen.all() as { data: string }[]).map((r) => JSON.parse(r.data)));
      case 'prune':
        return reply(m.id, prune(m.before));
      case 'flush':
        return reply(m.id, true);
    }
  } catch (e) {
    if ('id' in m && typeof m.id === 'number') parentPort!.postMessage({ id: m.id, error: (e as Error).message });
    else parentPort!.postMessage({ error: (e as Error).message });
  }
});
