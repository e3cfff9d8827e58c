// Reads the prediction log (<data-dir>/monitoring.db) for export, segment by segment, on its own
// read-only connection: it runs beside a live server (in WAL mode a reader never blocks the log
// thread's writes) and, inside one read transaction, sees one snapshot however long it takes.
// Memory stays flat whatever the log's size: segments and request ids are both walked with cursors,
// and only one segment (a flush of at most 65,536 rows) is decoded at a time.
//
// Request ids are keyed by id, not by position (that keeps logging a prediction at one index entry),
// so they are read in one pass ordered by position, which SQLite sorts on disk, and merged with the
// segments as both advance. A row whose id was not kept (a client that reused a request id: the
// first prediction keeps it) is exported with a null id.

import { existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import { badRequest } from '../errors.js';
import { SEG, segmentColumns } from './log-store.js';

export interface PredictionFilter {
  readonly model: string;
  /** Only this version; every version when absent. */
  readonly version?: number;
  /** Epoch milliseconds, inclusive. */
  readonly from: number;
  /** Epoch milliseconds, exclusive. */
  readonly to: number;
}

/** The rows of one segment that pass the filter, columnar. */
export interface PredictionChunk {
  readonly model: string;
  readonly version: number;
  readonly variant: string;
  /** Inputs per row (0: the model logs none). */
  readonly width: number;
  /** Rows that passed the time filter. */
  readonly rows: number;
  /** Rows of the segment they came from, passed or not (progress counts these). */
  readonly segmentRows: number;
  readonly requestIds: readonly (string | null)[];
  readonly ts: Float64Array;
  readonly scores: Float64Array;
  /** rows * width, row-major; NaN where an input was not kept. */
  readonly features: Float32Array;
  /** NaN where no label was joined. */
  readonly labels: Float64Array;
  /** Epoch milliseconds the label arrived; NaN without one. */
  readonly labelledAt: Float64Array;
}

export interface PredictionScan {
  /** Rows in the segments the filter selects (before times are checked row by row): the progress total. */
  readonly total: number;
  /** Input width of each version in the selection. */
  readonly widths: ReadonlyMap<number, number>;
  chunks(): Generator<PredictionChunk>;
  /** Whether the log holds any prediction of the model, in any window (tells an empty window from a wrong name). */
  hasModel(): boolean;
  /** Models the log holds predictions of (for the error that names a model it has none of). */
  models(): string[];
  close(): void;
}

interface SegmentRow {
  id: number;
  version: number;
  variant: string;
  n: number;
  width: number;
  data: Buffer;
}

/** Opens the log read-only and plans the scan; throws a clear error when there is no log to read. */
export function scanPredictionLog(file: string, filter: PredictionFilter): PredictionScan {
  if (!existsSync(file)) throw badRequest(`there is no prediction log at ${file}: is --data-dir the server's data dir, and monitoring on?`);
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    // One snapshot for every statement below, taken at the first read.
    db.exec('BEGIN');
    if (db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'segments'").get() === undefined) {
      throw badRequest(`${file} holds no prediction log yet (no prediction was ever logged)`);
    }
    const versionClause = filter.version === undefined ? '' : 'AND version = @version';
    const where = `model = @model ${versionClause} AND t1 >= @from AND t0 < @to`;
    const params = {
      model: filter.model,
      from: Math.floor(filter.from),
      to: Math.ceil(filter.to),
      ...(filter.version === undefined ? {} : { version: filter.version }),
    };
    const plan = db
      .prepare(`SELECT min(id) AS first, max(id) AS last, coalesce(sum(n), 0) AS total FROM segments WHERE ${where}`)
      .get(params) as { first: number | null; last: number | null; total: number };
    const widths = new Map<number, number>();
    for (const r of db.prepare(`SELECT DISTINCT version, width FROM segments WHERE ${where} ORDER BY version`).all(params) as {
      version: number;
      width: number;
    }[]) {
      // A version logs one width (its model.yaml's features); the widest is kept if a file ever mixes them.
      widths.set(r.version, Math.max(r.width, widths.get(r.version) ?? 0));
    }
    const segments = db.prepare(`SELECT id, version, variant, n, width, data FROM segments WHERE ${where} ORDER BY id`);
    const ids = db.prepare('SELECT loc, request_id FROM prediction_ids WHERE loc >= ? AND loc < ? ORDER BY loc');
    const labels = db.prepare('SELECT loc, label, labelled_at FROM labels WHERE loc >= ? AND loc < ?');

    function* chunks(): Generator<PredictionChunk> {
      if (plan.first === null || plan.last === null) return;
      const idCursor = ids.iterate(plan.first * SEG, (plan.last + 1) * SEG) as IterableIterator<{ loc: number; request_id: string }>;
      let nextId = idCursor.next();
      try {
        for (const seg of segments.iterate(params) as IterableIterator<SegmentRow>) {
          const base = seg.id * SEG;
          const all: (string | null)[] = new Array<string | null>(seg.n).fill(null);
          // Ids of segments the filter skipped (other models, other versions) are passed over.
          while (!nextId.done && nextId.value.loc < base) nextId = idCursor.next();
          while (!nextId.done && nextId.value.loc < base + seg.n) {
            all[nextId.value.loc - base] = nextId.value.request_id;
            nextId = idCursor.next();
          }
          yield chunkOf(seg, all, labels.all(base, base + seg.n) as { loc: number; label: number; labelled_at: number }[], filter);
        }
      } finally {
        idCursor.return?.();
      }
    }

    return {
      total: plan.total,
      widths,
      chunks,
      hasModel: () => db.prepare('SELECT 1 FROM segments WHERE model = ? LIMIT 1').get(filter.model) !== undefined,
      models: () => db.prepare('SELECT DISTINCT model FROM segments ORDER BY model').pluck().all() as string[],
      close: () => {
        if (!db.open) return;
        if (db.inTransaction) db.exec('COMMIT');
        db.close();
      },
    };
  } catch (e) {
    db.close();
    throw e;
  }
}

function chunkOf(
  seg: SegmentRow,
  ids: readonly (string | null)[],
  labelRows: readonly { loc: number; label: number; labelled_at: number }[],
  filter: PredictionFilter,
): PredictionChunk {
  const { n, width } = seg;
  const cols = segmentColumns(seg.data, n, width);
  const label = new Float64Array(n).fill(NaN);
  const labelledAt = new Float64Array(n).fill(NaN);
  const base = seg.id * SEG;
  for (const l of labelRows) {
    label[l.loc - base] = l.label;
    labelledAt[l.loc - base] = l.labelled_at;
  }
  // Most segments lie inside the window entirely: then the views are handed over as they are.
  let keep = 0;
  for (let i = 0; i < n; i++) if (cols.ts[i]! >= filter.from && cols.ts[i]! < filter.to) keep++;
  const head = { model: filter.model, version: seg.version, variant: seg.variant, width, segmentRows: n };
  if (keep === n)
    return { ...head, rows: n, requestIds: ids, ts: cols.ts, scores: cols.scores, features: cols.features, labels: label, labelledAt };
  const out = {
    ...head,
    rows: keep,
    requestIds: [] as (string | null)[],
    ts: new Float64Array(keep),
    scores: new Float64Array(keep),
    features: new Float32Array(keep * width),
    labels: new Float64Array(keep),
    labelledAt: new Float64Array(keep),
  };
  let k = 0;
  for (let i = 0; i < n; i++) {
    const t = cols.ts[i]!;
    if (!(t >= filter.from && t < filter.to)) continue;
    out.requestIds.push(ids[i] ?? null);
    out.ts[k] = t;
    out.scores[k] = cols.scores[i]!;
    out.features.set(cols.features.subarray(i * width, (i + 1) * width), k * width);
    out.labels[k] = label[i]!;
    out.labelledAt[k] = labelledAt[i]!;
    k++;
  }
  return out;
}
