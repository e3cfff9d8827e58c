// The monitoring database, <data-dir>/monitoring.db, as the log thread uses it: its schema (brought
// up to date on open), statements and transactions. Predictions are stored as segments: one row per
// flushed batch of one model version and variant, its timestamps, scores and inputs packed columnar
// in a blob, so writing a prediction costs one entry in the request-id index instead of a row and
// three index entries. A label that arrives (by request id) is joined to its prediction there and
// then: the score, time and inputs are copied into the `labels` table, which is what performance
// windows and retraining read, with plain indexes. Unknown ids are reported, not stored; a label the
// model's task cannot have (7 for a classifier) is refused with its reason and changes nothing.
// Retention drops old segments, their ids and labels.
//
// Shared (the store is PostgreSQL): the file also keeps each segment's request ids and a random
// log id, which is what the log thread ships segments to PostgreSQL with (log-shipping.ts); labels
// then join there, and this file's `labels` table is not used. Retention keeps what is not shipped
// yet, and always the newest segment, so that segment ids (the shipping watermark) never go back.

import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';

export type Task = 'classification' | 'regression';

/** One flushed batch of a model version and variant; `n` rows of `width` inputs each (NaN: not kept). */
export interface AppendSegment {
  model: string;
  version: number;
  variant: string;
  /** The API key that sent these predictions (null: none, auth off). */
  keyId?: string | null;
  /** The model's task, which decides what labels it can get (null: not known). */
  task: Task | null;
  width: number;
  n: number;
  /** The rows' request ids, a JSON array text of n strings. */
  ids: string;
  ts: Float64Array;
  scores: Float64Array;
  features: Float32Array;
}

export interface FeedbackResult {
  joined: number;
  unknown: string[];
  rejected: { requestId: string; label: number; reason: string }[];
}

/** Rows per segment are below this; a prediction's location is segment id * SEG + row. */
export const SEG = 65536;

/** A segment blob's columns, as views into it: timestamps, scores, then n * width inputs (row-major). */
export function segmentColumns(data: Buffer, n: number, width: number): { ts: Float64Array; scores: Float64Array; features: Float32Array } {
  // The blob is a SQLite copy at an arbitrary offset: align it once so that the views need no per-value reads.
  const bytes = data.byteOffset % 8 === 0 ? data : new Uint8Array(data);
  const base = bytes.byteOffset;
  return {
    ts: new Float64Array(bytes.buffer, base, n),
    scores: new Float64Array(bytes.buffer, base + n * 8, n),
    features: new Float32Array(bytes.buffer, base + n * 16, n * width),
  };
}

/** A write queued in the log thread: rows read from the ring (through that row), history points or an alert change. */
export type Write =
  /** Rows of the ring read through row `through`, where the read stopped at byte `position` (what their settling frees). */
  | { kind: 'append'; through: number; position: number; segments: AppendSegment[]; rows: number }
  /** `seq`: the HTTP thread's number of the message, acknowledged once committed. */
  | { kind: 'history'; seq: number; points: { model: string; version: number; at: number; data: string }[] }
  | { kind: 'alert'; seq: number; alert: { id: string; state: string; data: string; at: number } };

/** The ring (its id) and its row through which the appends of a transaction go: committed with them, as the meta row `ring`. */
export interface RingMark {
  ring: number;
  through: number;
}

interface SegmentRow {
  model: string;
  version: number;
  variant: string;
  task: Task | null;
  n: number;
  width: number;
  data: Buffer;
}

/** A committed segment as shipping reads it: its id, columns blob and the request ids (a JSON array text). */
export interface StoredSegment extends SegmentRow {
  id: number;
  key_id: string | null;
  ids: string;
}

/** What retention dropped; `unshipped`: predictions past retention kept because they are not in PostgreSQL yet (shared only). */
export interface PruneResult {
  predictions: number;
  history: number;
  alertEvents: number;
  unshipped: number;
}

export type Store = ReturnType<typeof openStore>;

/** Brings the open database to the current schema; its statements and transactions. `shared`: segments keep their ids for shipping. */
export function openStore(db: Database.Database, sync: boolean, shared = false) {
  // async: NORMAL in WAL mode: a commit survives the process being killed (it is in the WAL, in the
  // OS's cache) and only the last commits can be lost to a power cut; that window is already
  // accepted (flushMs). sync: FULL, the WAL is fsynced at every commit, so an acknowledged
  // prediction survives a power cut too; group commit pays one fsync per transaction, not per row.
  // 16 KB pages for a new file (an existing one keeps its own): a segment's blob and a flush's index
  // entries span a quarter of the pages, so a write makes a quarter of the WAL frames and system
  // calls; about 25% less CPU per prediction than 4 KB pages, while a lookup by id still reads little.
  db.pragma('page_size = 16384');
  db.pragma('journal_mode = WAL');
  db.pragma(sync ? 'synchronous = FULL' : 'synchronous = NORMAL');
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
      data BLOB NOT NULL,
      task TEXT
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
    CREATE INDEX IF NOT EXISTS alert_events_by_alert ON alert_events (alert_id, at);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  `);
  // Files from before segments knew their model's task: their labels are checked for finiteness only.
  if (db.prepare("SELECT 1 FROM pragma_table_info('segments') WHERE name = 'task'").get() === undefined)
    db.exec('ALTER TABLE segments ADD COLUMN task TEXT');
  // The API key id of a segment's predictions (never the key); files from before API keys have none.
  if (db.prepare("SELECT 1 FROM pragma_table_info('segments') WHERE name = 'key_id'").get() === undefined)
    db.exec('ALTER TABLE segments ADD COLUMN key_id TEXT');
  // The request ids of a segment, kept only when it is shipped (prediction_ids keeps the first
  // segment of a repeated id, and cannot be read by segment without a scan).
  if (db.prepare("SELECT 1 FROM pragma_table_info('segments') WHERE name = 'ids'").get() === undefined)
    db.exec('ALTER TABLE segments ADD COLUMN ids TEXT');
  const logId = shared ? logIdOf(db) : null;

  const segmentPut = db.prepare(
    'INSERT INTO segments (model, version, variant, t0, t1, n, width, data, task, key_id, ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
  );
  // json_each expands the ids inside SQLite: one statement per segment, not one per prediction.
  const idsPut = db.prepare('INSERT OR IGNORE INTO prediction_ids (request_id, loc) SELECT value, ? + key FROM json_each(?)');
  const idGet = db.prepare('SELECT loc FROM prediction_ids WHERE request_id = ?').pluck();
  const segmentGet = db.prepare('SELECT model, version, variant, task, n, width, data FROM segments WHERE id = ?');
  const labelPut = db.prepare(
    'INSERT OR REPLACE INTO labels (loc, model, version, variant, ts, score, features, label, labelled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const labelled = db.prepare('SELECT score, label FROM labels WHERE model = ? AND version = ? AND ts >= ? ORDER BY ts DESC LIMIT ?');
  const training = db.prepare(
    'SELECT ts, score, features, label FROM labels WHERE model = ? AND features IS NOT NULL AND ts >= ? ORDER BY ts LIMIT ?',
  );
  const historyPut = db.prepare('INSERT OR REPLACE INTO history (model, version, at, data) VALUES (?, ?, ?, ?)');
  const historyGet = db.prepare('SELECT at, data FROM history WHERE model = ? AND version = ? AND at >= ? AND at <= ? ORDER BY at');
  const alertPut = db.prepare('INSERT OR REPLACE INTO alerts (id, state, data, updated_at) VALUES (?, ?, ?, ?)');
  // An event sent again by the HTTP thread (the log thread died before acknowledging it) is the same event: kept once.
  const alertEvent = db.prepare(
    'INSERT INTO alert_events (alert_id, state, at, data) SELECT @id, @state, @at, @data WHERE NOT EXISTS (SELECT 1 FROM alert_events WHERE alert_id = @id AND state = @state AND at = @at)',
  );
  const markPut = db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('ring', ?)");
  const markGet = db.prepare("SELECT value FROM meta WHERE key = 'ring'").pluck();
  const alertHistory = db.prepare('SELECT data FROM alert_events WHERE at >= ? ORDER BY seq DESC LIMIT ?');
  const alertOpen = db.prepare("SELECT data FROM alerts WHERE state IN ('pending', 'firing')");

  /** Blob layout (segmentColumns reads it): ts float64 x n, score float64 x n, inputs float32 x n*width (row-major). */
  const appendSegment = (s: AppendSegment) => {
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
    const id = Number(
      segmentPut.run(
        s.model,
        s.version,
        s.variant,
        Math.floor(t0),
        Math.ceil(t1),
        n,
        width,
        data,
        s.task,
        s.keyId ?? null,
        shared ? s.ids : null,
      ).lastInsertRowid,
    );
    idsPut.run(id * SEG, s.ids);
  };

  /** One transaction for a group of queued writes, in their order. */
  const writeGroup = db.transaction((group: Write[], mark: RingMark | null = null) => {
    if (mark !== null) markPut.run(`${mark.ring}:${mark.through}`);
    for (const w of group) {
      if (w.kind === 'append') for (const s of w.segments) appendSegment(s);
      else if (w.kind === 'history') for (const p of w.points) historyPut.run(p.model, p.version, p.at, p.data);
      else {
        alertPut.run(w.alert.id, w.alert.state, w.alert.data, w.alert.at);
        alertEvent.run(w.alert);
      }
    }
  });

  const feedback = db.transaction((items: { requestId: string; label: number }[], now: number): FeedbackResult => {
    const unknown: string[] = [];
    const rejected: FeedbackResult['rejected'] = [];
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
      const reason = labelProblem(seg, it.label);
      if (reason !== null) {
        rejected.push({ requestId: it.requestId, label: it.label, reason });
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
    return { joined, unknown, rejected };
  });

  /**
   * Drops segments older than `before` with their ids and labels. Shared: none after segment
   * `shippedThrough` (not in PostgreSQL yet; counted in `unshipped`), and never the newest one.
   */
  const prune = db.transaction((before: number, shippedThrough: number | null = null): PruneResult => {
    const keep = db.prepare('SELECT min(id) FROM segments WHERE t1 >= ?').pluck().get(before) as number | null;
    const max = db.prepare('SELECT max(id) FROM segments').pluck().get() as number | null;
    // Everything below the first segment still in retention goes (segment ids grow with time).
    let cut = keep ?? (max === null ? 0 : max + 1);
    let unshipped = 0;
    if (shared && max !== null) {
      // SQLite gives a new segment max(id) + 1: with the newest one kept, ids never go below the watermark.
      const limit = Math.min(max, (shippedThrough ?? 0) + 1);
      if (limit < cut) {
        unshipped = db
          .prepare('SELECT coalesce(sum(n), 0) FROM segments WHERE id >= ? AND id < ? AND id > ?')
          .pluck()
          .get(limit, cut, shippedThrough ?? 0) as number;
        cut = limit;
      }
    }
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
    return { predictions, history, alertEvents, unshipped };
  });

  const segmentsAfter = db.prepare(
    'SELECT id, model, version, variant, task, key_id, n, width, data, ids FROM segments WHERE id > ? ORDER BY id LIMIT ?',
  );
  const rowsAfter = db.prepare('SELECT coalesce(sum(n), 0) FROM segments WHERE id > ?').pluck();
  const lastSegment = db.prepare('SELECT coalesce(max(id), 0) FROM segments').pluck();
  /** Committed segments after segment `after`, oldest first, up to about `rows` predictions (at least one segment). */
  const unshippedSegments = (after: number, rows: number): StoredSegment[] => {
    const out: StoredSegment[] = [];
    let n = 0;
    // Segments hold at most SEGMENT_ROWS (1024) rows: read in pages until the budget is met.
    while (n < rows) {
      const page = segmentsAfter.all(out.length === 0 ? after : out[out.length - 1]!.id, 64) as StoredSegment[];
      for (const seg of page) {
        if (out.length > 0 && n + seg.n > rows) return out;
        out.push(seg);
        n += seg.n;
      }
      if (page.length < 64) break;
    }
    return out;
  };
  /** Predictions in segments after segment `after` (not shipped yet). */
  const unshippedRows = (after: number): number => rowsAfter.get(after) as number;
  const newestSegment = (): number => lastSegment.get() as number;

  const labelledRows = (model: string, version: number, since: number, limit: number): { scores: Float64Array; labels: Float64Array } => {
    const rows = labelled.all(model, version, since, limit) as { score: number | null; label: number }[];
    const scores = new Float64Array(rows.length);
    const labels = new Float64Array(rows.length);
    rows.forEach((r, i) => {
      scores[i] = r.score ?? NaN;
      labels[i] = r.label;
    });
    return { scores, labels };
  };

  return {
    db,
    logId,
    writeGroup,
    /** The last ring mark committed: rows of ring `ring` through `through` are in the file. */
    ringMark(): RingMark | null {
      const v = markGet.get() as string | undefined;
      if (v === undefined) return null;
      const [ring, through] = v.split(':').map(Number);
      return Number.isInteger(ring) && Number.isInteger(through) ? { ring: ring!, through: through! } : null;
    },
    feedback,
    prune,
    labelledRows,
    training,
    historyGet,
    alertHistory,
    alertOpen,
    unshippedSegments,
    unshippedRows,
    newestSegment,
  };
}

/** The file's random log id (shipping's key in PostgreSQL), made once and kept. */
function logIdOf(db: Database.Database): string {
  db.exec('CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID');
  db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('log_id', ?)").run(randomUUID());
  return db.prepare("SELECT value FROM meta WHERE key = 'log_id'").pluck().get() as string;
}

/** Why a label cannot belong to a prediction of this model version and task, or null when it can. */
export function labelProblem(seg: { model: string; version: number; task: Task | null }, label: number): string | null {
  if (!Number.isFinite(label)) return `label ${label} is not a finite number`;
  if (seg.task === 'classification' && label !== 0 && label !== 1) {
    return `label ${label} is not 0/1 (or true/false), the only labels of model '${seg.model}' version ${seg.version} (classification)`;
  }
  return null;
}
