// The PostgreSQL schema's versioned migrations and how a database is brought to the newest: every
// replica runs this at start, under a session advisory lock, so replicas starting together apply
// each migration exactly once (the others wait, then find nothing to do). Each migration runs in
// its own transaction with its row in schema_migrations. Append migrations; never edit one that
// has shipped.

import { configInvalid } from '../../../errors.js';
import type { Database } from '../database.js';
import initial from './0001-initial.js';
import predictionLog from './0002-prediction-log.js';
import monitoringCells from './0003-monitoring-cells.js';
import canarySteps from './0004-canary-steps.js';

export const MIGRATIONS: readonly { readonly version: number; readonly name: string; readonly sql: string }[] = [
  { version: 1, name: 'initial', sql: initial },
  { version: 2, name: 'prediction-log', sql: predictionLog },
  { version: 3, name: 'monitoring-cells', sql: monitoringCells },
  { version: 4, name: 'canary-steps', sql: canarySteps },
];

/** The advisory lock key of migrations (any constant; 'scor' in ASCII). */
const MIGRATION_LOCK = 0x73636f72;

/** Applies the migrations the database lacks; returns the versions applied now. */
export async function migrate(db: Database): Promise<number[]> {
  const lease = await db.lease();
  const client = lease.client;
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      await client.query(
        'CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())',
      );
      const { rows } = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
      const current = rows[0]?.v ?? 0;
      const newest = MIGRATIONS[MIGRATIONS.length - 1]!.version;
      if (current > newest)
        throw configInvalid(`${db.location} has schema version ${current}, newer than this scoreline knows (${newest}); upgrade scoreline`);
      const applied: number[] = [];
      for (const m of MIGRATIONS) {
        if (m.version <= current) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
          await client.query('COMMIT');
        } catch (e) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw e;
        }
        applied.push(m.version);
      }
      return applied;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => (lease.broken = true));
    }
  } catch (e) {
    lease.broken = true;
    throw db.translate(e);
  } finally {
    lease.release();
  }
}
