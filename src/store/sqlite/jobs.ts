// Retraining records in SQLite, <data-dir>/retraining.db: jobs (their whole record as JSON, with
// model, state and revision as columns to query and to compare-and-set), every trigger with what
// became of it, and incidents. One process writes it; a write is one short transaction on the
// calling thread, so a record is on disk before an answer says so.

import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ACTIVE_STATES, TERMINAL, type Incident, type Job, type JobFilter, type TriggerEvent } from '../records.js';
import type { JobRecords } from '../types.js';

const ACTIVE_LIST = ACTIVE_STATES.map((s) => `'${s}'`).join(', ');
const TERMINAL_LIST = [...TERMINAL].map((s) => `'${s}'`).join(', ');

export class SqliteJobs implements JobRecords {
  private readonly db: Database.Database;

  constructor(dataDir: string) {
    this.db = new Database(join(dataDir, 'retraining.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL, data TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS jobs_by_model ON jobs (model, created_at);
      CREATE TABLE IF NOT EXISTS trigger_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, at TEXT NOT NULL, data TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS trigger_events_by_model ON trigger_events (model, seq);
      CREATE TABLE IF NOT EXISTS incidents (id TEXT PRIMARY KEY, model TEXT NOT NULL, at TEXT NOT NULL, data TEXT NOT NULL);
    `);
    // Files from before jobs had revisions: every stored job starts at revision 0.
    if (this.db.prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'revision'").get() === undefined) {
      this.db.exec('ALTER TABLE jobs ADD COLUMN revision INTEGER NOT NULL DEFAULT 0');
    }
  }

  async insert(job: Job): Promise<boolean> {
    // IMMEDIATE: the check and the insert hold the write lock together.
    return this.db
      .transaction(() => {
        if (this.db.prepare(`SELECT 1 FROM jobs WHERE model = ? AND state IN (${ACTIVE_LIST})`).get(job.model) !== undefined) return false;
        job.revision = 1;
        this.db
          .prepare('INSERT INTO jobs (id, model, state, created_at, data, revision) VALUES (?, ?, ?, ?, ?, 1)')
          .run(job.id, job.model, job.state, job.createdAt, JSON.stringify(job));
        return true;
      })
      .immediate();
  }

  async update(job: Job): Promise<boolean> {
    const next = { ...job, revision: job.revision + 1 };
    const r = this.db
      .prepare(`UPDATE jobs SET state = ?, data = ?, revision = ? WHERE id = ? AND revision = ? AND state NOT IN (${TERMINAL_LIST})`)
      .run(job.state, JSON.stringify(next), next.revision, job.id, job.revision);
    if (r.changes !== 1) return false;
    job.revision = next.revision;
    return true;
  }

  async get(id: string): Promise<Job | undefined> {
    const row = this.db.prepare('SELECT data, revision FROM jobs WHERE id = ?').get(id) as Row | undefined;
    return row && toJob(row);
  }

  async list(filter: JobFilter = {}): Promise<Job[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.model !== undefined) {
      where.push('model = ?');
      args.push(filter.model);
    }
    if (filter.state !== undefined) {
      where.push('state = ?');
      args.push(filter.state);
    }
    const sql = `SELECT data, revision FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, filter.limit ?? 100) as Row[]).map(toJob);
  }

  async active(model: string): Promise<Job | undefined> {
    const row = this.db
      .prepare(`SELECT data, revision FROM jobs WHERE model = ? AND state IN (${ACTIVE_LIST}) ORDER BY created_at LIMIT 1`)
      .get(model) as Row | undefined;
    return row && toJob(row);
  }

  async unfinished(): Promise<Job[]> {
    return (this.db.prepare(`SELECT data, revision FROM jobs WHERE state IN (${ACTIVE_LIST}) ORDER BY created_at, id`).all() as Row[]).map(
      toJob,
    );
  }

  async lastEnded(model: string): Promise<number | null> {
    let last: number | null = null;
    for (const j of await this.list({ model, limit: 20 })) {
      if (j.endedAt === undefined) continue;
      const t = Date.parse(j.endedAt);
      if (last === null || t > last) last = t;
    }
    return last;
  }

  async counts(): Promise<{ model: string; state: string; n: number }[]> {
    return this.db.prepare('SELECT model, state, count(*) AS n FROM jobs GROUP BY model, state ORDER BY model, state').all() as {
      model: string;
      state: string;
      n: number;
    }[];
  }

  async addTriggerEvent(e: TriggerEvent): Promise<void> {
    this.db.prepare('INSERT INTO trigger_events (model, at, data) VALUES (?, ?, ?)').run(e.model, e.at, JSON.stringify(e));
  }

  async triggerEvents(model: string, limit = 50): Promise<TriggerEvent[]> {
    return (
      this.db.prepare('SELECT data FROM trigger_events WHERE model = ? ORDER BY seq DESC LIMIT ?').all(model, limit) as { data: string }[]
    ).map((r) => JSON.parse(r.data) as TriggerEvent);
  }

  async addIncident(i: Incident): Promise<void> {
    this.db.prepare('INSERT INTO incidents (id, model, at, data) VALUES (?, ?, ?, ?)').run(i.id, i.model, i.at, JSON.stringify(i));
  }

  async incidents(model?: string, limit = 100): Promise<Incident[]> {
    const rows = (
      model === undefined
        ? this.db.prepare('SELECT data FROM incidents ORDER BY at DESC LIMIT ?').all(limit)
        : this.db.prepare('SELECT data FROM incidents WHERE model = ? ORDER BY at DESC LIMIT ?').all(model, limit)
    ) as { data: string }[];
    return rows.map((r) => JSON.parse(r.data) as Incident);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

interface Row {
  data: string;
  revision: number;
}

const toJob = (r: Row): Job => ({ ...(JSON.parse(r.data) as Job), revision: r.revision });
