// Throwaway PostgreSQL and Redis servers on this machine, for `npm run demo:cluster` and the tests:
// each on a free 127.0.0.1 port, with its files in a temp dir, stopped and removed by its owner.
//
// PostgreSQL: Debian's server binaries (under /usr/lib/postgresql/<major>/bin, newest major first),
// a cluster initialised with trust authentication, one database created. initdb refuses to run as
// root, so as root the cluster belongs to the `postgres` user and every server binary runs as that
// user (runuser); as anyone else they run directly. Redis: redis-server from PATH, no persistence.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface LocalPostgres {
  readonly port: number;
  /** postgres://postgres@127.0.0.1:<port>/<database> */
  readonly url: string;
  readonly dir: string;
  /** Stops the server (pg_ctl stop -m fast: clients are disconnected); the data stays. */
  stop(): Promise<void>;
  /** Starts the stopped server again on the same port. */
  start(): Promise<void>;
  /** Runs SQL on the database. */
  query<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Stops the server and removes its files. */
  remove(): Promise<void>;
  /** remove(), synchronously: for an exit handler, where nothing asynchronous runs any more. */
  removeSync(): void;
}

export interface LocalRedis {
  readonly port: number;
  readonly url: string;
  proc: ChildProcess;
  /** Kills the server (SIGKILL: like a crash) and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts a new server on the same port. */
  restart(): Promise<void>;
  cli(...args: string[]): string;
}

export const POSTGRES_MISSING =
  'PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (install the postgresql package: apt-get install postgresql)';
export const REDIS_MISSING = 'redis-server is not on PATH (install it: apt-get install redis-server)';

/** The newest PostgreSQL bin directory with initdb and pg_ctl, or null. */
export function postgresBin(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const majors = readdirSync(root)
    .filter((d) => /^[0-9]+$/.test(d))
    .sort((a, b) => Number(b) - Number(a));
  for (const m of majors) {
    const bin = join(root, m, 'bin');
    if (existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'pg_ctl'))) return bin;
  }
  return null;
}

export function redisAvailable(): boolean {
  return spawnSync('sh', ['-c', 'command -v redis-server']).status === 0;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** How to stop each server started here and not yet removed, from its first file on. */
const live = new Set<() => void>();

/**
 * Stops every server started here and removes its files, synchronously: for a signal or exit
 * handler, which may run while a server is still starting (before its owner holds a handle to it).
 */
export function removeAllSync(): void {
  for (const remove of [...live]) remove();
}

const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function pgUser(): { uid: number; gid: number } {
  const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (r.status !== 0 || g.status !== 0)
    throw new Error("running as root, but there is no 'postgres' user to own the cluster (initdb refuses root)");
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/** Runs a server binary, as the postgres user when we are root. */
function run(bin: string, args: string[]): string {
  const cmd = asRoot ? 'runuser' : bin;
  const argv = asRoot ? ['-u', 'postgres', '--', bin, ...args] : args;
  const r = spawnSync(cmd, argv, { encoding: 'utf8', cwd: '/' });
  if (r.status !== 0) throw new Error(`${bin} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

export async function startPostgres(database = 'scoreline'): Promise<LocalPostgres> {
  const bin = postgresBin();
  if (bin === null) throw new Error(POSTGRES_MISSING);
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-pg-'));
  if (asRoot) {
    const { uid, gid } = pgUser();
    chownSync(dir, uid, gid);
  }
  const data = join(dir, 'data');
  const logFile = join(dir, 'server.log');
  const port = await freePort();
  // Unix sockets in the cluster's own dir: the system's socket dir may not exist or be writable.
  // No durability: the cluster is thrown away, and fsync would only slow the demo and the tests.
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`;
  const startSync = () => {
    run(join(bin, 'pg_ctl'), ['-D', data, '-l', logFile, '-o', options, '-w', '-t', '60', 'start']);
  };
  const stopSync = () => {
    if (!existsSync(join(data, 'postmaster.pid'))) return;
    run(join(bin, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', '-t', '60', 'stop']);
  };
  const removeSync = () => {
    live.delete(removeSync);
    try {
      stopSync();
    } catch {
      // removed anyway: a server that cannot be stopped has lost its files under it and exits
    }
    rmSync(dir, { recursive: true, force: true });
  };
  live.add(removeSync);
  try {
    run(join(bin, 'initdb'), ['-D', data, '--auth=trust', '--username=postgres', '--encoding=UTF8', '--no-sync']);
    startSync();
    const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${database}`);
    } finally {
      await admin.end();
    }
  } catch (e) {
    const log = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
    removeSync();
    throw new Error(`${(e as Error).message}\n${log}`);
  }
  const url = `postgres://postgres@127.0.0.1:${port}/${database}`;
  return {
    port,
    url,
    dir,
    stop: async () => stopSync(),
    start: async () => startSync(),
    async query(sql, params) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        return (await c.query(sql, params as unknown[])).rows;
      } finally {
        await c.end();
      }
    },
    remove: async () => removeSync(),
    removeSync,
  };
}

async function launchRedis(port: number): Promise<ChildProcess> {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const kill = () => {
    live.delete(kill);
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  };
  live.add(kill);
  proc.once('exit', () => live.delete(kill));
  for (let i = 0; i < 100; i++) {
    if (spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG') return proc;
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill('SIGKILL');
  throw new Error(`redis-server did not start on port ${port}`);
}

export async function startRedis(): Promise<LocalRedis> {
  if (!redisAvailable()) throw new Error(REDIS_MISSING);
  const port = await freePort();
  const r: LocalRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc: await launchRedis(port),
    async kill() {
      if (r.proc.exitCode !== null || r.proc.signalCode !== null) return;
      const exited = new Promise((res) => r.proc.once('exit', res));
      r.proc.kill('SIGKILL');
      await exited;
    },
    async restart() {
      r.proc = await launchRedis(port);
    },
    cli(...args) {
      return spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim();
    },
  };
  return r;
}
