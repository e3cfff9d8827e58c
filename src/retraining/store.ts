// Retraining records in <data-dir>/retraining.db: jobs (their whole record as JSON, with state and
// model as columns to query), every trigger with what became of it (a job, folded into a queued
// job, or skipped and why), and incidents. Writes are rare (a job changes state a handful of
// times), so the HTTP thread writes synchronously: a record is on disk before an answer says so.

import { join } from 'node:path';
import Database from 'better-sqlite3';

export type JobState = 'queued' | 'running' | 'validating' | 'deploying' | 'succeeded' | 'rejected' | 'failed' | 'rolled_back';
export const JOB_STATES: readonly JobState[] = ['queued', 'running', 'validating', 'deploying', 'succeeded', 'rejected', 'failed', 'rolled_back'];
export const TERMINAL: ReadonlySet<JobState> = new Set(['succeeded', 'rejected', 'failed', 'rolled_back']);

export type TriggerKind = 'drift' | 'performance' | 'schedule' | 'manual' | 'incident';

export interface Trigger {
  kind: TriggerKind;
  reason: string;
  at: string;
  /** What set it off: the alert, the incident, the cron expression, who asked. */
  evidence?: unknown;
}

export interface JobStep {
  name: string;
  startedAt: string;
  endedAt?: string;
  ms?: number;
  ok?: boolean;
}

export interface Job {
  id: string;
  model: string;
  state: JobState;
  trigger: Trigger;
  /** Triggers that arrived while the job was queued and were folded into it. */
  folded: Trigger[];
  createdAt: string;
  updatedAt: string;
  startedAt?: string;
  endedAt?: string;
  steps: JobStep[];
  log: { at: string; msg: string }[];
  championVersion?: number;
  challengerVersion?: number;
  /** The external trainer's process (group) while it runs. */
  trainerPid?: number;
  data?: unknown;
  training?: unknown;
  validation?: unknown;
  decision?: { outcome: 'accepted' | 'rejected' | 'promoted' | 'rolled_back' | 'failed'; reasons: string[] };
  error?: string;
}

export interface TriggerEvent {
  at: string;
  model: string;
  kind: TriggerKind;
  outcome: 'job' | 'folded' | 'skipped-running' | 'skipped-cooldown';
  jobId: string | null;
  reason: string;
}

export interface Incident {
  id: string;
  model: string;
  at: string;
  reason: string;
  severity: string;
  jobId: string | null;
  outcome: string;
}

export class JobStore {
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
  }

  save(job: Job): void {
    this.db.prepare('INSERT OR REPLACE INTO jobs (id, model, state, created_at, data) VALUES (?, ?, ?, ?, ?)').run(job.id, job.model, job.state, job.createdAt, JSON.stringify(job));
  }

  get(id: string): Job | undefined {
    const row = this.db.prepare('SELECT data FROM jobs WHERE id = ?').get(id) as { data: string } | undefined;
    return row ? (JSON.parse(row.data) as Job) : undefined;
  }

  /** Newest first. */
  list(filter: { model?: string; state?: JobState; limit?: number } = {}): Job[] {
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
    const sql = `SELECT data FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, filter.limit ?? 100) as { data: string }[]).map((r) => JSON.parse(r.data) as Job);
  }

  /** Jobs that were not finished: after a restart these are failed, never left running. */
  unfinished(): Job[] {
    return (this.db.prepare(`SELECT data FROM jobs WHERE state NOT IN (${[...TERMINAL].map(() => '?').join(', ')})`).all(...TERMINAL) as { data: string }[]).map(
      (r) => JSON.parse(r.data) as Job,
    );
  }

  /** When the model's last finished job ended (epoch ms), for cooldowns across restarts. */
  lastEnded(model: string): number | null {
    let last: number | null = null;
    for (const j of this.list({ model, limit: 20 })) {
      if (j.endedAt === undefined) continue;
      const t = Date.parse(j.endedAt);
      if (last === null || t > last) last = t;
    }
    return last;
  }

  /** Jobs per model and state, for /metrics. */
  counts(): { model: string; state: string; n: number }[] {
    return this.db.prepare('SELECT model, state, count(*) AS n FROM jobs GROUP BY model, state').all() as { model: string; state: string; n: number }[];
  }

  addTriggerEvent(e: TriggerEvent): void {
    this.db.prepare('INSERT INTO trigger_events (model, at, data) VALUES (?, ?, ?)').run(e.model, e.at, JSON.stringify(e));
  }

  triggerEvents(model: string, limit = 50): TriggerEvent[] {
    return (this.db.prepare('SELECT data FROM trigger_events WHERE model = ? ORDER BY seq DESC LIMIT ?').all(model, limit) as { data: string }[]).map(
      (r) => JSON.parse(r.data) as TriggerEvent,
    );
  }

  addIncident(i: Incident): void {
    this.db.prepare('INSERT INTO incidents (id, model, at, data) VALUES (?, ?, ?, ?)').run(i.id, i.model, i.at, JSON.stringify(i));
  }

  incidents(model?: string, limit = 100): Incident[] {
    const rows = (
      model === undefined
        ? this.db.prepare('SELECT data FROM incidents ORDER BY at DESC LIMIT ?').all(limit)
        : this.db.prepare('SELECT data FROM incidents WHERE model = ? ORDER BY at DESC LIMIT ?').all(model, limit)
    ) as { data: string }[];
    return rows.map((r) => JSON.parse(r.data) as Incident);
  }

  close(): void {
    this.db.close();
  }
}
