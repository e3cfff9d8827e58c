// Jobs, alerts and the cluster in PostgreSQL. Jobs are compare-and-set by revision, and a partial
// unique index keeps one unfinished job per model whichever replica creates it. The cluster is a
// replicas table (heartbeats by the database's clock) and a one-row leader lease, taken or renewed
// by one conditional upsert, with a term that grows whenever the lease changes hands; change
// notifications arrive on a dedicated LISTEN connection that reconnects by itself.

import pg from 'pg';
import {
  ACTIVE_STATES,
  TERMINAL,
  type AlertRecord,
  type Incident,
  type Job,
  type JobFilter,
  type Lease,
  type ReplicaRecord,
  type ReplicaReport,
  type StoreChange,
  type TriggerEvent,
} from '../records.js';
import type { AlertRecords, ClusterRecords, JobRecords } from '../types.js';
import { CHANNEL, notifyChange, type Database } from './database.js';

const TERMINAL_LIST = [...TERMINAL];
const ACTIVE_LIST = [...ACTIVE_STATES];

interface JobRow {
  data: Job;
  revision: number;
}
const toJob = (r: JobRow): Job => ({ ...r.data, revision: r.revision });

export class PostgresJobs implements JobRecords {
  constructor(
    private readonly db: Database,
    private readonly origin: string | null,
  ) {}

  async insert(job: Job): Promise<boolean> {
    return this.db.tx(async (c) => {
      const stored = { ...job, revision: 1 };
      const r = await c.query(
        'INSERT INTO jobs (id, model, state, created_at, revision, data) VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT DO NOTHING',
        [job.id, job.model, job.state, job.createdAt, JSON.stringify(stored)],
      );
      if (r.rowCount !== 1) return false;
      await notifyChange(c, { kind: 'job', model: job.model, origin: this.origin });
      job.revision = 1;
      return true;
    });
  }

  async update(job: Job): Promise<boolean> {
    const next = { ...job, revision: job.revision + 1 };
    const ok = await this.db.tx(async (c) => {
      const r = await c.query(
        'UPDATE jobs SET state = $1, data = $2, revision = $3 WHERE id = $4 AND revision = $5 AND NOT (state = ANY($6))',
        [job.state, JSON.stringify(next), next.revision, job.id, job.revision, TERMINAL_LIST],
      );
      if (r.rowCount !== 1) return false;
      await notifyChange(c, { kind: 'job', model: job.model, origin: this.origin });
      return true;
    });
    if (ok) job.revision = next.revision;
    return ok;
  }

  async get(id: string): Promise<Job | undefined> {
    const row = (await this.db.query<JobRow>('SELECT data, revision FROM jobs WHERE id = $1', [id]))[0];
    return row && toJob(row);
  }

  async list(filter: JobFilter = {}): Promise<Job[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.model !== undefined) {
      args.push(filter.model);
      where.push(`model = $${args.length}`);
    }
    if (filter.state !== undefined) {
      args.push(filter.state);
      where.push(`state = $${args.length}`);
    }
    args.push(filter.limit ?? 100);
    const sql = `SELECT data, revision FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT $${args.length}`;
    return (await this.db.query<JobRow>(sql, args)).map(toJob);
  }

  async active(model: string): Promise<Job | undefined> {
    const row = (
      await this.db.query<JobRow>('SELECT data, revision FROM jobs WHERE model = $1 AND state = ANY($2) ORDER BY created_at LIMIT 1', [
        model,
        ACTIVE_LIST,
      ])
    )[0];
    return row && toJob(row);
  }

  async unfinished(): Promise<Job[]> {
    return (
      await this.db.query<JobRow>('SELECT data, revision FROM jobs WHERE state = ANY($1) ORDER BY created_at, id COLLATE "C"', [
        ACTIVE_LIST,
      ])
    ).map(toJob);
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
    const rows = await this.db.query<{ model: string; state: string; n: string }>(
      'SELECT model, state, count(*) AS n FROM jobs GROUP BY model, state ORDER BY model COLLATE "C", state COLLATE "C"',
    );
    return rows.map((r) => ({ model: r.model, state: r.state, n: Number(r.n) }));
  }

  async addTriggerEvent(e: TriggerEvent): Promise<void> {
    await this.db.query('INSERT INTO trigger_events (model, at, data) VALUES ($1, $2, $3)', [e.model, e.at, JSON.stringify(e)]);
  }

  async triggerEvents(model: string, limit = 50): Promise<TriggerEvent[]> {
    return (
      await this.db.query<{ data: TriggerEvent }>('SELECT data FROM trigger_events WHERE model = $1 ORDER BY seq DESC LIMIT $2', [
        model,
        limit,
      ])
    ).map((r) => r.data);
  }

  async addIncident(i: Incident): Promise<void> {
    await this.db.query('INSERT INTO incidents (id, model, at, data) VALUES ($1, $2, $3, $4)', [i.id, i.model, i.at, JSON.stringify(i)]);
  }

  async incidents(model?: string, limit = 100): Promise<Incident[]> {
    const rows =
      model === undefined
        ? await this.db.query<{ data: Incident }>('SELECT data FROM incidents ORDER BY at DESC LIMIT $1', [limit])
        : await this.db.query<{ data: Incident }>('SELECT data FROM incidents WHERE model = $1 ORDER BY at DESC LIMIT $2', [model, limit]);
    return rows.map((r) => r.data);
  }
}

interface AlertRow {
  id: string;
  state: string;
  updated_at: string;
  data: unknown;
}
const toAlert = (r: AlertRow): AlertRecord => ({ id: r.id, state: r.state, at: Number(r.updated_at), data: r.data });

export class PostgresAlerts implements AlertRecords {
  constructor(
    private readonly db: Database,
    private readonly origin: string | null,
  ) {}

  async save(a: AlertRecord): Promise<void> {
    const data = JSON.stringify(a.data);
    await this.db.tx(async (c) => {
      await c.query(
        `INSERT INTO alerts (id, state, updated_at, data) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at, data = excluded.data`,
        [a.id, a.state, a.at, data],
      );
      await c.query('INSERT INTO alert_events (alert_id, state, at, data) VALUES ($1, $2, $3, $4)', [a.id, a.state, a.at, data]);
      await notifyChange(c, { kind: 'alert', model: null, origin: this.origin });
    });
  }

  async list(limit: number, since: number): Promise<AlertRecord[]> {
    return (
      await this.db.query<AlertRow>('SELECT * FROM alerts WHERE updated_at >= $1 ORDER BY updated_at DESC, id COLLATE "C" LIMIT $2', [
        since,
        limit,
      ])
    ).map(toAlert);
  }

  async open(): Promise<AlertRecord[]> {
    return (
      await this.db.query<AlertRow>("SELECT * FROM alerts WHERE state IN ('pending', 'firing') ORDER BY updated_at, id COLLATE \"C\"")
    ).map(toAlert);
  }
}

interface ReplicaRow {
  id: string;
  address: string;
  host: string;
  pid: number;
  started_at: string;
  heartbeat_at: Date;
  deployments: ReplicaReport['deployments'];
}

export interface ListenLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export class PostgresCluster implements ClusterRecords {
  readonly shared = true;

  constructor(
    private readonly db: Database,
    private readonly log: ListenLog,
  ) {}

  async heartbeat(r: ReplicaReport): Promise<void> {
    await this.db.query(
      `INSERT INTO replicas (id, address, host, pid, started_at, heartbeat_at, deployments) VALUES ($1, $2, $3, $4, $5, now(), $6)
       ON CONFLICT (id) DO UPDATE SET address = excluded.address, host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
         heartbeat_at = now(), deployments = excluded.deployments`,
      [r.id, r.address, r.host, r.pid, r.startedAt, JSON.stringify(r.deployments)],
    );
  }

  async leave(id: string): Promise<void> {
    await this.db.query('DELETE FROM replicas WHERE id = $1', [id]);
  }

  async replicas(withinMs: number): Promise<ReplicaRecord[]> {
    const rows = await this.db.query<ReplicaRow>(
      'SELECT * FROM replicas WHERE heartbeat_at > now() - $1 * interval \'1 millisecond\' ORDER BY id COLLATE "C"',
      [withinMs],
    );
    return rows.map((r) => ({
      id: r.id,
      address: r.address,
      host: r.host,
      pid: r.pid,
      startedAt: r.started_at,
      heartbeatAt: r.heartbeat_at.toISOString(),
      deployments: r.deployments,
    }));
  }

  async lead(id: string, ttlMs: number): Promise<Lease> {
    // One statement decides: the holder renews (same term); a free or lapsed lease is taken (next
    // term); a lease another replica holds is left alone and reported. The database's clock judges.
    const taken = await this.db.query<{ holder: string; term: string }>(
      `INSERT INTO leader AS l (id, holder, term, acquired_at, expires_at) VALUES (1, $1, 1, now(), now() + $2 * interval '1 millisecond')
       ON CONFLICT (id) DO UPDATE SET
         holder = excluded.holder,
         term = CASE WHEN l.holder = excluded.holder AND l.expires_at > now() THEN l.term ELSE l.term + 1 END,
         acquired_at = CASE WHEN l.holder = excluded.holder AND l.expires_at > now() THEN l.acquired_at ELSE now() END,
         expires_at = excluded.expires_at
       WHERE l.holder = excluded.holder OR l.holder IS NULL OR l.expires_at <= now()
       RETURNING holder, term`,
      [id, ttlMs],
    );
    if (taken[0]) return { holder: taken[0].holder, term: Number(taken[0].term), ttlMs };
    const cur = (await this.db.query<{ holder: string | null; term: string }>('SELECT holder, term FROM leader WHERE id = 1'))[0];
    return { holder: cur?.holder ?? null, term: Number(cur?.term ?? 0), ttlMs };
  }

  async resign(id: string): Promise<void> {
    await this.db.query('UPDATE leader SET holder = NULL, expires_at = now() WHERE id = 1 AND holder = $1', [id]);
  }

  async leader(): Promise<string | null> {
    return (
      (await this.db.query<{ holder: string | null }>('SELECT holder FROM leader WHERE id = 1 AND expires_at > now()'))[0]?.holder ?? null
    );
  }

  async sharedSecret(name: string, make: () => string): Promise<string> {
    await this.db.query('INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [name, make()]);
    return (await this.db.query<{ value: string }>('SELECT value FROM secrets WHERE name = $1', [name]))[0]!.value;
  }

  async listen(onChange: (c: StoreChange) => void, onGap: () => void): Promise<() => Promise<void>> {
    let client: pg.Client | null = null;
    let stopped = false;
    let timer: NodeJS.Timeout | null = null;
    let delay = 250;
    let connected = false;
    const connect = async (): Promise<void> => {
      timer = null;
      if (stopped) return;
      const c = new pg.Client({
        connectionString: this.db.url,
        keepAlive: true,
        connectionTimeoutMillis: 3000,
        application_name: 'scoreline-listen',
      });
      const lost = (why: string) => {
        if (client !== c) return;
        client = null;
        c.removeAllListeners('notification');
        void c.end().catch(() => undefined);
        if (stopped) return;
        if (connected) this.log.warn({ store: this.db.location, err: why }, 'lost the change notifications of the store; reconnecting');
        connected = false;
        timer = setTimeout(() => void connect(), delay);
        timer.unref();
        delay = Math.min(5000, delay * 2);
      };
      client = c;
      c.on('error', (e) => lost(e.message));
      c.on('end', () => lost('connection closed'));
      c.on('notification', (n) => {
        if (n.channel !== CHANNEL || n.payload === undefined) return;
        let change: StoreChange;
        try {
          change = JSON.parse(n.payload) as StoreChange;
        } catch {
          return;
        }
        onChange(change);
      });
      try {
        await c.connect();
        await c.query(`LISTEN ${CHANNEL}`);
      } catch (e) {
        lost((e as Error).message);
        return;
      }
      if (client !== c) return;
      if (stopped) {
        await c.end().catch(() => undefined);
        return;
      }
      delay = 250;
      connected = true;
      // Anything committed while nobody listened is read again by the caller.
      onGap();
    };
    await connect();
    return async () => {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      const c = client;
      client = null;
      if (c !== null) await c.end().catch(() => undefined);
    };
  }
}
