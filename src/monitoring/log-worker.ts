// The monitoring store's own thread: every SQLite write and read of <data-dir>/monitoring.db
// happens here, never on the HTTP thread. Predictions arrive in columnar batches and are inserted
// in one transaction each; feedback labels join them by request id (unknown ids are reported, not
// stored); labelled windows, per-minute history points and alert records are read back on request.

import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

export interface AppendBatch {
  ids: string[];
  models: string[];
  versions: Int32Array;
  variants: string[];
  ts: Float64Array;
  scores: Float64Array;
  /** Row-major feature values; `widths[i]` values per row (0: not kept). */
  features: Float32Array;
  widths: Int32Array;
}

export type LogRequest =
  | { op: 'append'; batch: AppendBatch }
  | { op: 'feedback'; id: number; items: { requestId: string; label: number }[]; now: number }
  | { op: 'labelled'; id: number; model: string; version: number; since: number; limit: number }
  | { op: 'training'; id: number; model: string; since: number; limit: number }
  | { op: 'history.put'; points: { model: string; version: number; at: number; data: string }[] }
  | { op: 'history.get'; id: number; model: string; version: number; from: number; to: number }
  | { op: 'alerts.save'; alert: { id: string; state: string; data: string; at: number } }
  | { op: 'alerts.history'; id: number; limit: number; since: number }
  | { op: 'alerts.open'; id: number }
  | { op: 'prune'; before: number; id: number }
  | { op: 'flush'; id: number };

const db = new Database((workerData as { file: string }).file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.pragma('busy_timeout = 5000');
db.exec(`
  CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    variant TEXT NOT NULL,
    ts INTEGER NOT NULL,
    score REAL,
    features BLOB,
    label REAL,
    labelled_at INTEGER
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS predictions_by_version ON predictions (model, version, ts);
  CREATE INDEX IF NOT EXISTS predictions_labelled ON predictions (model, labelled_at) WHERE label IS NOT NULL;
  CREATE TABLE IF NOT EXISTS history (
    model TEXT NOT NULL, version INTEGER NOT NULL, at INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (model, version, at)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, state TEXT NOT NULL, data TEXT NOT NULL, updated_at INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS alert_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, state TEXT NOT NULL, at INTEGER NOT NULL, data TEXT NOT NULL);
`);

const insert = db.prepare(
  'INSERT OR IGNORE INTO predictions (request_id, model, version, variant, ts, score, features) VALUES (?, ?, ?, ?, ?, ?, ?)',
);
const label = db.prepare('UPDATE predictions SET label = ?, labelled_at = ? WHERE request_id = ?');
const labelled = db.prepare(
  'SELECT score, label FROM predictions WHERE model = ? AND version = ? AND label IS NOT NULL AND ts >= ? ORDER BY ts DESC LIMIT ?',
);
const training = db.prepare(
  'SELECT ts, score, features, label FROM predictions WHERE model = ? AND label IS NOT NULL AND features IS NOT NULL AND ts >= ? ORDER BY ts LIMIT ?',
);
const historyPut = db.prepare('INSERT OR REPLACE INTO history (model, version, at, data) VALUES (?, ?, ?, ?)');
const historyGet = db.prepare('SELECT at, data FROM history WHERE model = ? AND version = ? AND at >= ? AND at <= ? ORDER BY at');
const alertPut = db.prepare('INSERT OR REPLACE INTO alerts (id, state, data, updated_at) VALUES (?, ?, ?, ?)');
const alertEvent = db.prepare('INSERT INTO alert_events (alert_id, state, at, data) VALUES (?, ?, ?, ?)');
const alertHistory = db.prepare('SELECT data FROM alert_events WHERE at >= ? ORDER BY seq DESC LIMIT ?');
const alertOpen = db.prepare("SELECT data FROM alerts WHERE state IN ('pending', 'firing')");

const appendAll = db.transaction((b: AppendBatch) => {
  let at = 0;
  for (let i = 0; i < b.ids.length; i++) {
    const w = b.widths[i]!;
    const blob = w > 0 ? Buffer.from(b.features.buffer, b.features.byteOffset + at * 4, w * 4) : null;
    at += w;
    insert.run(b.ids[i], b.models[i], b.versions[i], b.variants[i], Math.round(b.ts[i]!), Number.isFinite(b.scores[i]) ? b.scores[i] : null, blob);
  }
});

const feedback = db.transaction((items: { requestId: string; label: number }[], now: number) => {
  const unknown: string[] = [];
  let joined = 0;
  for (const it of items) {
    if (label.run(it.label, now, it.requestId).changes === 1) joined++;
    else unknown.push(it.requestId);
  }
  return { joined, unknown };
});

function reply(id: number, value: unknown, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage({ id, value }, transfer);
}

parentPort!.on('message', (m: LogRequest) => {
  try {
    switch (m.op) {
      case 'append':
        appendAll(m.batch);
        return;
      case 'feedback':
        return reply(m.id, feedback(m.items, m.now));
      case 'labelled': {
        const rows = labelled.all(m.model, m.version, m.since, m.limit) as { score: number | null; label: number }[];
        const scores = new Float64Array(rows.length);
        const labels = new Float64Array(rows.length);
        rows.forEach((r, i) => {
          scores[i] = r.score ?? NaN;
          labels[i] = r.label;
        });
        return reply(m.id, { scores, labels }, [scores.buffer, labels.buffer]);
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
      case 'prune': {
        const p = db.prepare('DELETE FROM predictions WHERE ts < ?').run(m.before).changes;
        const h = db.prepare('DELETE FROM history WHERE at < ?').run(m.before).changes;
        const a = db.prepare('DELETE FROM alert_events WHERE at < ?').run(m.before).changes;
        return reply(m.id, { predictions: p, history: h, alertEvents: a });
      }
      case 'flush':
        return reply(m.id, true);
    }
  } catch (e) {
    if ('id' in m && typeof m.id === 'number') parentPort!.postMessage({ id: m.id, error: (e as Error).message });
    else parentPort!.postMessage({ error: (e as Error).message });
  }
});
