// The monitoring cells in PostgreSQL: each replica upserts its open minute and hour (and the ones
// that closed since its last share) in one statement, and reads the others' cells of a window with
// their age by the database's clock, so a replica's own clock never decides what is fresh.

import type { MonitoringCell, MonitoringRecords, SharedCell } from '../types.js';
import type { Database } from './database.js';

export class PostgresMonitoring implements MonitoringRecords {
  constructor(private readonly db: Database) {}

  async putCells(replica: string, cells: readonly MonitoringCell[]): Promise<void> {
    if (cells.length === 0) return;
    await this.db.query(
      `INSERT INTO monitoring_cells (model, version, span, start, replica, ref, data, rps, updated_at)
       SELECT m, v, s, st, $1, r, d, rp, now()
         FROM unnest($2::text[], $3::int[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::float8[]) AS t(m, v, s, st, r, d, rp)
       ON CONFLICT (model, version, span, start, replica)
       DO UPDATE SET ref = EXCLUDED.ref, data = EXCLUDED.data, rps = EXCLUDED.rps, updated_at = now()`,
      [
        replica,
        cells.map((c) => c.model),
        cells.map((c) => c.version),
        cells.map((c) => c.span),
        cells.map((c) => c.start),
        cells.map((c) => c.ref),
        cells.map((c) => c.data),
        cells.map((c) => c.rps),
      ],
    );
  }

  async cells(q: {
    model: string;
    version: number;
    span: 'minute' | 'hour';
    since: number;
    ref: string;
    exceptReplica: string;
  }): Promise<SharedCell[]> {
    const rows = await this.db.query<{ replica: string; start: string; data: string; rps: number | null; age_ms: number }>(
      `SELECT replica, start, data, rps, (extract(epoch FROM now() - updated_at) * 1000)::float8 AS age_ms
         FROM monitoring_cells
        WHERE model = $1 AND version = $2 AND span = $3 AND start >= $4 AND ref = $5 AND replica <> $6`,
      [q.model, q.version, q.span, q.since, q.ref, q.exceptReplica],
    );
    return rows.map((r) => ({ replica: r.replica, start: Number(r.start), data: JSON.parse(r.data), rps: r.rps, ageMs: r.age_ms }));
  }

  async range(q: { model: string; version: number; span: 'minute' | 'hour'; from: number; to: number }): Promise<SharedCell[]> {
    const rows = await this.db.query<{ replica: string; start: string; data: string; rps: number | null; age_ms: number }>(
      `SELECT replica, start, data, rps, (extract(epoch FROM now() - updated_at) * 1000)::float8 AS age_ms
         FROM monitoring_cells
        WHERE model = $1 AND version = $2 AND span = $3 AND start >= $4 AND start <= $5
        ORDER BY start`,
      [q.model, q.version, q.span, q.from, q.to],
    );
    return rows.map((r) => ({ replica: r.replica, start: Number(r.start), data: JSON.parse(r.data), rps: r.rps, ageMs: r.age_ms }));
  }

  async prune(minutesBefore: number, hoursBefore: number): Promise<number> {
    const rows = await this.db.query<{ n: string }>(
      `WITH gone AS (
         DELETE FROM monitoring_cells WHERE (span = 'minute' AND start < $1) OR (span = 'hour' AND start < $2) RETURNING 1
       ) SELECT count(*) AS n FROM gone`,
      [minutesBefore, hoursBefore],
    );
    return Number(rows[0]?.n ?? 0);
  }
}
