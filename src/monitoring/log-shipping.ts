// The prediction log shared through PostgreSQL, as the log thread runs it: committed SQLite segments
// are shipped to the `predictions` table in segment order, a batch per transaction together with
// this file's watermark in `log_shipping`, so a crash at any point ships each row exactly once (the
// watermark is read back from PostgreSQL at start and after every failure, whose commit may or may
// not have happened). A request never waits on this: rows wait in SQLite while PostgreSQL is away,
// and shipping retries with backoff, counting and reporting failures once per episode.
//
// Labels join here too, on whichever replica receives them: the log first ships what it has
// committed (so its own predictions always join at once), looks the ids up in `predictions` (the
// newest row wins when an id repeats), checks each label against its prediction's task exactly as
// the SQLite log does, and upserts the joined ones into `labels`, which performance windows and
// retraining read. Only the log thread imports this module.

import { Database } from '../store/postgres/database.js';
import { labelProblem, segmentColumns, type FeedbackResult, type Store, type Task } from './log-store.js';

/** Shipping's health, as the prediction log's status reports it (null there when the log is not shared). */
export interface ShippingStatus {
  /** failing: the last attempt to ship failed; rows wait in SQLite and are retried. */
  state: 'ok' | 'failing';
  /** Predictions committed to SQLite and not yet in PostgreSQL. */
  backlog_rows: number;
  /** Predictions shipped since start. */
  shipped: number;
  /** Failed attempts since start. */
  errors: number;
  last_error: string | null;
  last_error_at: string | null;
}

/** Predictions per transaction: a few segments at least, a bounded insert at most. */
export const SHIP_ROWS = 16_384;
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 4000;
const DAY = 86_400_000;

/** Days (UTC, as epoch ms of midnight) and the partition holding each. */
const partitionOf = (day: number): string => `predictions_${new Date(day).toISOString().slice(0, 10).replaceAll('-', '')}`;
const dayOfPartition = (name: string): number | null => {
  const m = /^predictions_(\d{4})(\d{2})(\d{2})$/.exec(name);
  return m === null ? null : Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
};

const codeOf = (e: unknown): string | undefined => (e as { code?: string } | null)?.code;
const messageOf = (e: unknown): string => ((e as Error | null)?.message ?? String(e)).split('\n')[0]!;

export class LogShipper {
  private readonly db: Database;
  /** The last segment known to be in PostgreSQL, verified since the last failure (null: read it first). */
  private watermark: number | null = null;
  /** The last segment known shipped, kept across failures: backlog and retention count from it. */
  private known = 0;
  /** Days whose partition exists (created here or found). */
  private readonly days = new Set<number>();
  /** Every shipping step runs alone, in order. */
  private turn: Promise<unknown> = Promise.resolve();
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = RETRY_MIN_MS;
  private draining = false;
  /** Rows were committed locally since the last round began. */
  private dirty = false;
  private closed = false;
  readonly status: ShippingStatus = { state: 'ok', backlog_rows: 0, shipped: 0, errors: 0, last_error: null, last_error_at: null };

  constructor(
    url: string,
    private readonly local: () => Store,
    /** Told after every change of the status. */
    private readonly report: (status: ShippingStatus) => void,
  ) {
    // Two connections: shipping and a feedback or window read at the same time.
    this.db = new Database(url, { poolSize: 2, connectTimeoutMs: 3000, queryTimeoutMs: 30_000, onIdleError: () => undefined });
  }

  /** The last segment known shipped (retention keeps the ones after it). */
  get shippedThrough(): number {
    return this.known;
  }

  /** Runs fn after every shipping step queued before it. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn, fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  /** New rows were committed locally: ship them soon (not while a failure's backoff runs). */
  kick(): void {
    this.recount();
    this.report(this.status);
    this.dirty = true;
    if (this.draining || this.retryTimer !== null || this.closed) return;
    this.draining = true;
    void (async () => {
      try {
        // Rows committed while a batch ships set dirty again: they go in the next round.
        while (this.dirty && !this.closed) {
          this.dirty = false;
          await this.exclusive(() => this.shipAll());
        }
      } catch {
        this.retryLater();
      } finally {
        this.draining = false;
      }
    })();
  }

  private retryLater(): void {
    if (this.retryTimer !== null || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.kick();
    }, this.retryMs);
    this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
  }

  /** Ships everything committed locally so far, now (backoff or not); throws STORE_UNAVAILABLE when PostgreSQL cannot be reached. */
  catchUp(): Promise<void> {
    return this.exclusive(() => this.shipAll());
  }

  private async shipAll(): Promise<void> {
    try {
      if (this.watermark === null) await this.readWatermark();
      for (;;) {
        const segments = this.local().unshippedSegments(this.watermark!, SHIP_ROWS);
        if (segments.length === 0) break;
        await this.ship(segments);
      }
    } catch (e) {
      this.failed(e);
      throw this.db.translate(e);
    }
    if (this.status.state === 'failing') {
      this.status.state = 'ok';
      this.retryMs = RETRY_MIN_MS;
      this.report(this.status);
    }
  }

  private async readWatermark(): Promise<void> {
    const rows = await this.db.pool.query<{ through: string }>('SELECT shipped_through AS through FROM log_shipping WHERE log_id = $1', [
      this.local().logId,
    ]);
    this.watermark = Number(rows.rows[0]?.through ?? 0);
    this.known = this.watermark;
    this.recount();
  }

  private failed(e: unknown): void {
    // The commit of the batch may have happened: the watermark is read again before the next one.
    this.watermark = null;
    this.status.errors++;
    this.status.last_error = messageOf(e);
    this.status.last_error_at = new Date().toISOString();
    this.status.state = 'failing';
    this.recount();
    this.report(this.status);
  }

  /** The predictions not shipped yet, as the status reports them. */
  private recount(): void {
    try {
      this.status.backlog_rows = this.local().unshippedRows(this.known);
    } catch {
      // the local file cannot be read now: the last count stands
    }
  }

  /** Creates the day partitions these rows need; two replicas creating the same one is not an error. */
  private async partitions(ts: Float64Array[]): Promise<void> {
    const need = new Set<number>();
    for (const col of ts) for (const t of col) need.add(Math.floor(t / DAY) * DAY);
    for (const day of need) {
      if (this.days.has(day)) continue;
      try {
        await this.db.pool.query(
          `CREATE TABLE IF NOT EXISTS ${partitionOf(day)} PARTITION OF predictions FOR VALUES FROM (${day}) TO (${day + DAY})`,
        );
      } catch (e) {
        // 42P07 / 23505: another replica created it at the same moment.
        if (codeOf(e) !== '42P07' && codeOf(e) !== '23505') throw e;
      }
      this.days.add(day);
    }
  }

  /**
   * One transaction: the segments' rows and the watermark moved to the last of them, only from where
   * it was. What a segment's rows share (model, version, variant, task, key, width) is sent once per
   * segment, and every row's inputs go in one binary parameter that rows slice: per row only its
   * id, time, score and where its inputs start travel as array elements, which the client encodes
   * and the server parses as text.
   */
  private async ship(segments: ReturnType<Store['unshippedSegments']>): Promise<void> {
    const logId = this.local().logId!;
    const rowSeg: number[] = [];
    const ids: string[] = [];
    const tss: number[] = [];
    const scores: (number | null)[] = [];
    const offsets: number[] = [];
    const tsCols: Float64Array[] = [];
    const inputs: Buffer[] = [];
    let inputBytes = 0;
    for (const [k, seg] of segments.entries()) {
      const cols = segmentColumns(seg.data, seg.n, seg.width);
      tsCols.push(cols.ts);
      const segIds = JSON.parse(seg.ids ?? '[]') as string[];
      const rowBytes = seg.width * 4;
      for (let i = 0; i < seg.n; i++) {
        rowSeg.push(k + 1);
        ids.push(segIds[i] ?? '');
        tss.push(Math.round(cols.ts[i]!));
        const sc = cols.scores[i]!;
        scores.push(Number.isFinite(sc) ? sc : null);
        // A row logged without inputs is NaN throughout: no features for it (offset -1).
        offsets.push(seg.width > 0 && !Number.isNaN(cols.features[i * seg.width]!) ? inputBytes + i * rowBytes : -1);
      }
      inputs.push(Buffer.from(cols.features.buffer, cols.features.byteOffset, cols.features.byteLength));
      inputBytes += cols.features.byteLength;
    }
    await this.partitions(tsCols);
    const from = this.watermark!;
    const through = segments[segments.length - 1]!.id;
    await this.db.tx(async (c) => {
      await c.query(
        `INSERT INTO predictions (request_id, model, version, variant, task, ts, score, features, key_id, log_id)
         SELECT r.id, s.model, s.version, s.variant, s.task, r.ts, r.score,
                CASE WHEN r.off < 0 THEN NULL ELSE substring($11::bytea FROM r.off + 1 FOR s.width * 4) END,
                s.key_id, $12::text
           FROM unnest($1::int[], $2::text[], $3::bigint[], $4::float8[], $5::int[]) AS r(seg, id, ts, score, off)
           JOIN unnest($6::text[], $7::int[], $8::text[], $9::text[], $10::text[], $13::int[])
                WITH ORDINALITY AS s(model, version, variant, task, key_id, width, k) ON s.k = r.seg`,
        [
          rowSeg,
          ids,
          tss,
          scores,
          offsets,
          segments.map((g) => g.model),
          segments.map((g) => g.version),
          segments.map((g) => g.variant),
          segments.map((g) => g.task),
          segments.map((g) => g.key_id),
          Buffer.concat(inputs, inputBytes),
          logId,
          segments.map((g) => g.width),
        ],
      );
      const moved = await c.query(
        `INSERT INTO log_shipping (log_id, shipped_through, updated_at) VALUES ($1, $2, now())
         ON CONFLICT (log_id) DO UPDATE SET shipped_through = EXCLUDED.shipped_through, updated_at = now()
         WHERE log_shipping.shipped_through = $3`,
        [logId, through, from],
      );
      // Someone else moved this log's watermark (a second process on the same data dir): nothing is written twice.
      if (moved.rowCount !== 1) throw new Error(`the shipping watermark of log ${logId} is no longer at segment ${from}; read again`);
    });
    this.watermark = through;
    this.known = through;
    this.status.shipped += ids.length;
    this.recount();
    this.report(this.status);
  }

  /** Joins labels to predictions shipped by any replica; see the module comment. */
  async feedback(items: { requestId: string; label: number }[], now: number): Promise<FeedbackResult> {
    await this.catchUp();
    const wanted = [...new Set(items.map((it) => it.requestId))];
    const found = new Map<
      string,
      { model: string; version: number; variant: string; task: Task | null; ts: string; score: number | null; features: Buffer | null }
    >();
    try {
      const { rows } = await this.db.pool.query(
        `SELECT DISTINCT ON (request_id) request_id, model, version, variant, task, ts, score, features
         FROM predictions WHERE request_id = ANY($1::text[]) ORDER BY request_id, ts DESC`,
        [wanted],
      );
      for (const r of rows) found.set(r.request_id, r);
    } catch (e) {
      throw this.db.translate(e);
    }
    const unknown: string[] = [];
    const rejected: FeedbackResult['rejected'] = [];
    // The last label of a request in the body wins, as in the SQLite log.
    const joins = new Map<string, number>();
    let joined = 0;
    for (const it of items) {
      const p = found.get(it.requestId);
      if (p === undefined) {
        // never logged (or sampled out), or dropped by retention
        unknown.push(it.requestId);
        continue;
      }
      const reason = labelProblem(p, it.label);
      if (reason !== null) {
        rejected.push({ requestId: it.requestId, label: it.label, reason });
        continue;
      }
      joins.set(it.requestId, it.label);
      joined++;
    }
    if (joins.size > 0) {
      const ids = [...joins.keys()];
      const col = <T>(f: (p: NonNullable<ReturnType<typeof found.get>>) => T): T[] => ids.map((id) => f(found.get(id)!));
      await this.db.tx(async (c) => {
        await c.query(
          `INSERT INTO labels (request_id, model, version, variant, ts, score, features, label, labelled_at)
           SELECT r.*, $9::bigint FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[], $6::float8[], $7::bytea[], $8::float8[]) AS r
           ON CONFLICT (request_id) DO UPDATE SET model = EXCLUDED.model, version = EXCLUDED.version, variant = EXCLUDED.variant,
             ts = EXCLUDED.ts, score = EXCLUDED.score, features = EXCLUDED.features, label = EXCLUDED.label, labelled_at = EXCLUDED.labelled_at`,
          [
            ids,
            col((p) => p.model),
            col((p) => p.version),
            col((p) => p.variant),
            col((p) => p.ts),
            col((p) => p.score),
            col((p) => p.features),
            ids.map((id) => joins.get(id)!),
            now,
          ],
        );
      });
    }
    return { joined, unknown, rejected };
  }

  /** Scores and labels of a version's labelled predictions since `since`, newest first (every replica's). */
  async labelledRows(
    model: string,
    version: number,
    since: number,
    limit: number,
  ): Promise<{ scores: Float64Array; labels: Float64Array }> {
    const rows = await this.rows<[number | null, number]>(
      'SELECT score, label FROM labels WHERE model = $1 AND version = $2 AND ts >= $3 ORDER BY ts DESC LIMIT $4',
      [model, version, since, limit],
    );
    const scores = new Float64Array(rows.length);
    const labels = new Float64Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      scores[i] = rows[i]![0] ?? NaN;
      labels[i] = rows[i]![1];
    }
    return { scores, labels };
  }

  /** Labelled predictions of a model with their inputs, oldest first (every replica's). */
  async training(model: string, since: number, limit: number): Promise<{ ts: number; score: number; label: number; features: number[] }[]> {
    const rows = await this.rows<[string, number | null, Buffer, number]>(
      'SELECT ts, score, features, label FROM labels WHERE model = $1 AND features IS NOT NULL AND ts >= $2 ORDER BY ts LIMIT $3',
      [model, since, limit],
    );
    return rows.map(([ts, score, f, label]) => ({
      ts: Number(ts),
      score: score as number,
      label,
      // Copied: a bytea Buffer's offset need not be a multiple of 4.
      features: Array.from(new Float32Array(new Uint8Array(f).buffer)),
    }));
  }

  private async rows<R extends unknown[]>(text: string, values: unknown[]): Promise<R[]> {
    try {
      return (await this.db.pool.query<R>({ text, values, rowMode: 'array' })).rows;
    } catch (e) {
      throw this.db.translate(e);
    }
  }

  /**
   * Retention in PostgreSQL: drops the day partitions wholly before `before` and the labels older
   * than it. Idempotent; any replica may run it. Returns the partitions dropped.
   */
  async prune(before: number): Promise<number> {
    const names = await this.rows<[string]>(
      "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'predictions'::regclass",
      [],
    );
    let dropped = 0;
    for (const [name] of names) {
      const day = dayOfPartition(name);
      if (day === null || day + DAY > before) continue;
      try {
        await this.db.pool.query(`DROP TABLE IF EXISTS ${name}`);
      } catch (e) {
        throw this.db.translate(e);
      }
      this.days.delete(day);
      dropped++;
    }
    await this.rows('DELETE FROM labels WHERE ts < $1', [before]);
    return dropped;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    await this.turn;
    await this.db.close();
  }
}
