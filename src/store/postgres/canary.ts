// Canary step statistics in PostgreSQL: each replica upserts its rows (one per model with a canary)
// in one statement, and the leader reads the other replicas' rows of the current steps with their
// age by the database's clock, so a replica's own clock never says how old a row is.

import type { CanaryStepRecords, CanaryStepRow, SharedCanaryStep } from '../types.js';
import type { Database } from './database.js';

export class PostgresCanarySteps implements CanaryStepRecords {
  constructor(private readonly db: Database) {}

  async putSteps(replica: string, rows: readonly CanaryStepRow[]): Promise<void> {
    if (rows.length === 0) return;
    await this.db.query(
      `INSERT INTO canary_steps (model, replica, step, data, updated_at)
       SELECT m, $1, s, d, now() FROM unnest($2::text[], $3::text[], $4::text[]) AS t(m, s, d)
       ON CONFLICT (model, replica) DO UPDATE SET step = EXCLUDED.step, data = EXCLUDED.data, updated_at = now()`,
      [replica, rows.map((r) => r.model), rows.map((r) => r.step), rows.map((r) => r.data)],
    );
  }

  async steps(keys: readonly { model: string; step: string }[], exceptReplica: string): Promise<SharedCanaryStep[]> {
    if (keys.length === 0) return [];
    const rows = await this.db.query<{ model: string; step: string; replica: string; data: string; age_ms: number }>(
      `SELECT c.model, c.step, c.replica, c.data, (extract(epoch FROM now() - c.updated_at) * 1000)::float8 AS age_ms
         FROM canary_steps c
         JOIN unnest($1::text[], $2::text[]) AS k(model, step) ON c.model = k.model AND c.step = k.step
        WHERE c.replica <> $3`,
      [keys.map((k) => k.model), keys.map((k) => k.step), exceptReplica],
    );
    return rows.map((r) => ({ model: r.model, step: r.step, replica: r.replica, data: JSON.parse(r.data), ageMs: r.age_ms }));
  }

  async prune(keep: readonly { model: string; step: string }[], olderThanMs: number): Promise<number> {
    const rows = await this.db.query<{ n: string }>(
      `WITH gone AS (
         DELETE FROM canary_steps c
          WHERE c.updated_at < now() - make_interval(secs => $3::float8 / 1000)
            AND NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[]) AS k(model, step) WHERE k.model = c.model AND k.step = c.step)
          RETURNING 1
       ) SELECT count(*) AS n FROM gone`,
      [keep.map((k) => k.model), keep.map((k) => k.step), olderThanMs],
    );
    return Number(rows[0]?.n ?? 0);
  }
}
