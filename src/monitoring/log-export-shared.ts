// The shared prediction log read back for export (log-export.ts reads a replica's own file): every
// replica's shipped predictions of a model in PostgreSQL, each with the label joined to it (labels
// are kept only there when the log is shared), read in one REPEATABLE READ snapshot through a cursor,
// a chunk at a time, so memory stays flat whatever the window's size. Rows come by version, then
// variant, then time: a chunk holds one version and variant, as the export writes them. Predictions
// a replica has not shipped yet are still only in its own file and are not here.

import { Database } from '../store/postgres/database.js';
import type { PredictionChunk, PredictionFilter } from './log-export.js';

/** Rows fetched from the cursor at a time: one chunk at most. */
const FETCH_ROWS = 65_536;

/** A planned read of the shared log: totals known up front, rows in chunks. */
export interface SharedPredictionScan {
  /** Rows in the window: the progress total. */
  readonly total: number;
  /** Input width of each version in the window. */
  readonly widths: ReadonlyMap<number, number>;
  chunks(): AsyncGenerator<PredictionChunk>;
  /** Whether the shared log holds any prediction of the model, in any window. */
  hasModel(): Promise<boolean>;
  /** Models the shared log holds predictions of. */
  models(): Promise<string[]>;
  close(): Promise<void>;
}

interface Row {
  request_id: string;
  version: number;
  variant: string;
  ts: string;
  score: number | null;
  features: Buffer | null;
  label: number | null;
  labelled_at: string | null;
}

/** Opens a snapshot of the window in the shared log at `url` (on its own connection); the caller closes the scan. */
export async function scanSharedPredictionLog(url: string, filter: PredictionFilter): Promise<SharedPredictionScan> {
  const db = new Database(url, { poolSize: 1, onIdleError: () => undefined });
  let lease: Awaited<ReturnType<Database['lease']>>;
  try {
    lease = await db.lease();
  } catch (e) {
    await db.close().catch(() => undefined);
    throw e;
  }
  const c = lease.client;
  let open = true;
  const close = async () => {
    if (!open) return;
    open = false;
    await c.query('ROLLBACK').catch(() => (lease.broken = true));
    lease.release();
    await db.close().catch(() => undefined);
  };
  // PostgreSQL going away mid-export is the store's 503 error, as everywhere else.
  const fetch = async (): Promise<Row[]> => {
    try {
      return (await c.query<Row>(`FETCH ${FETCH_ROWS} FROM export_rows`)).rows;
    } catch (e) {
      throw db.translate(e);
    }
  };
  try {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const params: unknown[] = [filter.model, Math.floor(filter.from), Math.ceil(filter.to)];
    if (filter.version !== undefined) params.push(filter.version);
    const where = `p.model = $1 AND p.ts >= $2 AND p.ts < $3${filter.version === undefined ? '' : ' AND p.version = $4'}`;
    const plan = await c.query<{ version: number; n: string; width: number | null }>(
      `SELECT p.version, count(*) AS n, max(octet_length(p.features)) / 4 AS width FROM predictions p WHERE ${where} GROUP BY p.version ORDER BY p.version`,
      params,
    );
    const widths = new Map<number, number>();
    let total = 0;
    for (const r of plan.rows) {
      widths.set(r.version, r.width ?? 0);
      total += Number(r.n);
    }
    // The label joined to a prediction copies its time: a request id a client reused joins only the prediction it labelled.
    await c.query(
      `DECLARE export_rows NO SCROLL CURSOR FOR
         SELECT p.request_id, p.version, p.variant, p.ts, p.score, p.features, l.label, l.labelled_at
           FROM predictions p
           LEFT JOIN labels l ON l.request_id = p.request_id AND l.ts = p.ts AND l.model = p.model AND l.version = p.version
          WHERE ${where}
          ORDER BY p.version, p.variant, p.ts`,
      params,
    );
    return {
      total,
      widths,
      chunks: () => chunks(fetch, filter.model, widths),
      hasModel: async () => (await c.query('SELECT 1 FROM predictions WHERE model = $1 LIMIT 1', [filter.model])).rows.length > 0,
      models: async () =>
        (await c.query<{ model: string }>('SELECT DISTINCT model FROM predictions ORDER BY model')).rows.map((r) => r.model),
      close,
    };
  } catch (e) {
    await close();
    throw db.translate(e);
  }
}

async function* chunks(fetch: () => Promise<Row[]>, model: string, widths: ReadonlyMap<number, number>): AsyncGenerator<PredictionChunk> {
  // A chunk is a run of rows of one version and variant, at most FETCH_ROWS long.
  let run: Row[] = [];
  for (;;) {
    const rows = await fetch();
    if (rows.length === 0) break;
    for (const r of rows) {
      const head = run[0];
      if (head !== undefined && (r.version !== head.version || r.variant !== head.variant || run.length === FETCH_ROWS)) {
        yield chunkOf(model, run, widths.get(head.version) ?? 0);
        run = [];
      }
      run.push(r);
    }
  }
  if (run.length > 0) yield chunkOf(model, run, widths.get(run[0]!.version) ?? 0);
}

function chunkOf(model: string, rows: readonly Row[], width: number): PredictionChunk {
  const n = rows.length;
  const ts = new Float64Array(n);
  const scores = new Float64Array(n);
  const features = new Float32Array(n * width).fill(Number.NaN);
  const labels = new Float64Array(n).fill(Number.NaN);
  const labelledAt = new Float64Array(n).fill(Number.NaN);
  const requestIds: string[] = new Array<string>(n);
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    requestIds[i] = r.request_id;
    ts[i] = Number(r.ts);
    scores[i] = r.score ?? Number.NaN;
    if (r.features !== null) {
      // float32 little-endian, as shipped; copied out, since the buffer need not be 4-byte aligned.
      const m = Math.min(width, r.features.length >> 2);
      for (let k = 0; k < m; k++) features[i * width + k] = r.features.readFloatLE(k * 4);
    }
    if (r.label !== null) {
      labels[i] = r.label;
      labelledAt[i] = Number(r.labelled_at);
    }
  }
  const first = rows[0]!;
  return {
    model,
    version: first.version,
    variant: first.variant,
    width,
    rows: n,
    segmentRows: n,
    requestIds,
    ts,
    scores,
    features,
    labels,
    labelledAt,
  };
}
