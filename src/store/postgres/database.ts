// The PostgreSQL connection: a pg Pool with bounded waits, the one place where PostgreSQL's errors
// become scoreline's (a connection refused, dropped or timed out is STORE_UNAVAILABLE, 503 with
// Retry-After, naming the store), transactions, change notifications sent inside them (delivered
// on commit only), and the first connection of a replica, retried with backoff while the server
// cannot be reached.

import pg from 'pg';
import { isScorelineError, storeUnreachable } from '../../errors.js';
import type { StoreChange } from '../records.js';

/** The channel every replica LISTENs on. */
export const CHANNEL = 'scoreline_changes';

export interface DatabaseOptions {
  /** Connections in the pool (default 8). */
  poolSize?: number;
  /** Longest wait for a connection before the call fails as unreachable (default 3000 ms). */
  connectTimeoutMs?: number;
  /** Longest a query may take (default 30 s; an artifact is read in 8 MB slices, one query each), so a hung server fails admin calls instead of holding them. */
  queryTimeoutMs?: number;
  /** Called with errors of idle connections (the server went away between queries). */
  onIdleError?: (e: Error) => void;
}

/** The URL without its password, as logs and errors show it. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    const user = u.username ? `${decodeURIComponent(u.username)}@` : '';
    return `PostgreSQL at ${user}${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return 'PostgreSQL (the URL cannot be parsed)';
  }
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'ECONNABORTED',
]);

/**
 * Whether the error means the server could not be reached (or went away mid-call), as opposed to
 * a refusal of the statement itself: class 08 (connection exception), 57P01-57P03 (shutting down,
 * crashed, starting up), 53300 (too many connections), socket errors, and the client's own
 * connection and timeout errors, which carry no SQLSTATE.
 */
export function isUnreachable(e: unknown): boolean {
  if (isScorelineError(e)) return false;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    if (CONNECTION_CODES.has(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code))
      return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === '53300';
  }
  const msg = (e as Error | null)?.message ?? '';
  return /connection terminated|timeout exceeded when trying to connect|connection timeout|not queryable|query read timeout|Connection terminated/i.test(
    msg,
  );
}

const reason = (e: unknown): string => {
  const err = e as { code?: string; message?: string };
  const msg = (err.message ?? String(e)).split('\n')[0]!;
  return err.code && !msg.includes(err.code) ? `${err.code} ${msg}` : msg;
};

export type Queryable = Pick<pg.PoolClient, 'query'>;

/** A connection taken from the pool (Database.lease). */
export interface Lease {
  readonly client: pg.PoolClient;
  /** Set when the connection failed; a broken connection is destroyed on release, never reused. */
  broken: boolean;
  release(): void;
}

export class Database {
  readonly pool: pg.Pool;
  readonly url: string;
  readonly location: string;

  constructor(url: string, opts: DatabaseOptions = {}) {
    this.url = url;
    this.location = describeUrl(url);
    this.pool = new pg.Pool({
      connectionString: url,
      max: opts.poolSize ?? 8,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 3000,
      query_timeout: opts.queryTimeoutMs ?? 30_000,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: 'scoreline',
    });
    // An idle connection the server closes emits 'error' on the pool: without a listener the process
    // would exit, and the next query simply takes a new connection.
    this.pool.on('error', (e) => opts.onIdleError?.(e));
  }

  /** The error a caller sees: unreachable -> STORE_UNAVAILABLE naming the store; anything else unchanged. */
  translate(e: unknown): unknown {
    if (!isUnreachable(e)) return e;
    const err = storeUnreachable(this.location, reason(e));
    (err as { cause?: unknown }).cause = e;
    return err;
  }

  async query<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> {
    try {
      return (await this.pool.query<T>(sql, params)).rows;
    } catch (e) {
      throw this.translate(e);
    }
  }

  /**
   * A connection of the pool for the caller's own sequence of statements. Out of the pool, a
   * connection has no listener for an error the server sends between statements (57P01 when it
   * shuts down): that would be an uncaught 'error' event and end the process or the thread. Here it
   * marks the lease broken, and the next statement on it fails. `release` returns it to the pool, or
   * destroys it when broken (by that event or by the caller).
   */
  async lease(): Promise<Lease> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (e) {
      throw this.translate(e);
    }
    const lease: Lease = {
      client,
      broken: false,
      release: () => {
        client.removeListener('error', onError);
        client.release(lease.broken ? true : undefined);
      },
    };
    const onError = () => {
      lease.broken = true;
    };
    client.on('error', onError);
    return lease;
  }

  /** Runs fn in one transaction (READ COMMITTED), committed when it resolves, rolled back when it throws. */
  async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const lease = await this.lease();
    const client = lease.client;
    try {
      await client.query('BEGIN');
      const out = await fn(client);
      await client.query('COMMIT');
      return out;
    } catch (e) {
      if (isUnreachable(e)) lease.broken = true;
      if (!lease.broken) await client.query('ROLLBACK').catch(() => (lease.broken = true));
      throw this.translate(e);
    } finally {
      // A connection that failed mid-transaction is not handed out again.
      lease.release();
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Serialises writers of one key (a model's registrations, its deployment) until the transaction ends. */
export async function lockKey(c: Queryable, key: string): Promise<void> {
  await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key]);
}

/** Sends the change to every listening replica when (and only if) the transaction commits. */
export async function notifyChange(c: Queryable, change: StoreChange): Promise<void> {
  await c.query('SELECT pg_notify($1, $2)', [CHANNEL, JSON.stringify(change)]);
}

export interface ConnectLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/**
 * Runs `attempt` until it succeeds, waiting 0.5 s, 1 s, 2 s ... (at most maxDelayMs) between tries
 * and logging why each failed. Only an unreachable server, one still starting, a database not
 * created yet or credentials not provisioned yet are waited for: any other error is thrown.
 */
export async function withStartRetry<T>(location: string, attempt: () => Promise<T>, log: ConnectLog, maxDelayMs = 5000): Promise<T> {
  let delay = 500;
  for (let tries = 1; ; tries++) {
    try {
      const out = await attempt();
      if (tries > 1) log.info({ store: location, attempts: tries }, 'the store is reachable');
      return out;
    } catch (e) {
      const code = (e as { code?: string }).code;
      const original = (e as { cause?: unknown }).cause ?? e;
      const waitable =
        isUnreachable(original) ||
        (isScorelineError(e) && e.code === 'STORE_UNAVAILABLE') ||
        code === '3D000' ||
        code === '28P01' ||
        code === '28000';
      if (!waitable) throw e;
      log.warn(
        { store: location, attempt: tries, retryInMs: delay, err: reason(original) },
        `cannot reach the store (${location}): ${reason(original)}; retrying in ${delay} ms`,
      );
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(maxDelayMs, delay * 2);
    }
  }
}
