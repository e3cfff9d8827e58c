// A scoreline cluster for e2e tests: a real PostgreSQL (test/fixtures/postgres.ts) and N replicas
// (the CLI as child processes, each with its own data dir) sharing it through SCORELINE_STORE_URL,
// with the same config file; HTTP helpers per replica, and polling with deadlines.

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startPostgres, type TestPostgres } from '../fixtures/postgres.js';
import { request, startServer, tempDir, type JsonResponse, type TestServer } from './server.js';
import { waitFor } from '../fixtures/wait.js';

export const TOKEN = 'cluster-test-token';

export interface Replica {
  server: TestServer;
  dataDir: string;
}

export interface TestCluster {
  pg: TestPostgres;
  replicas: Replica[];
  configPath: string;
  /** The admin token: TOKEN, or with SCORELINE_ADMIN_TOKEN set empty the one the replicas share through the store. */
  token: string;
  /** Starts replica i (again, with its data dir) and waits until it listens; `onLine` sees its log while it starts. */
  start(i: number, env?: Record<string, string>, onLine?: (line: string) => void): Promise<Replica>;
  admin<T = any>(
    i: number,
    method: string,
    path: string,
    init?: { json?: unknown; body?: Uint8Array | string; type?: string },
  ): Promise<JsonResponse<T>>;
  url(i: number): string;
  close(): Promise<void>;
}

export async function startCluster(n: number, config: Record<string, unknown>, env: Record<string, string> = {}): Promise<TestCluster> {
  const pg = await startPostgres();
  const dir = await tempDir('scoreline-cluster-');
  const configPath = join(dir, 'scoreline.yaml');
  await writeFile(configPath, stringify(config));
  const replicas: Replica[] = [];
  const dataDirs: string[] = [];
  const cluster: TestCluster = {
    pg,
    replicas,
    configPath,
    token: TOKEN,
    async start(i, extra = {}, onLine) {
      dataDirs[i] ??= await tempDir(`scoreline-replica${i + 1}-`);
      const server = await startServer(
        ['--config', configPath, '--data-dir', dataDirs[i]!],
        {
          SCORELINE_STORE_URL: pg.url,
          SCORELINE_ADMIN_TOKEN: TOKEN,
          SCORELINE_REPLICA_ID: `replica-${i + 1}-${Date.now().toString(36)}`,
          ...env,
          ...extra,
        },
        onLine === undefined ? {} : { onLine },
      );
      replicas[i] = { server, dataDir: dataDirs[i]! };
      return replicas[i]!;
    },
    admin(i, method, path, init = {}) {
      return request(`${replicas[i]!.server.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${cluster.token}`, ...(init.type ? { 'content-type': init.type } : {}) },
        ...(init.json !== undefined ? { json: init.json } : {}),
        ...(init.body !== undefined ? { body: init.body } : {}),
      });
    },
    url: (i) => replicas[i]!.server.url,
    async close() {
      await Promise.all(replicas.map((r) => r?.server.stop()));
      await pg.remove();
    },
  };
  try {
    // One after the other: the first migrates, the others find the schema current.
    for (let i = 0; i < n; i++) await cluster.start(i);
    if (env.SCORELINE_ADMIN_TOKEN === '') cluster.token = (await readFile(join(dataDirs[0]!, 'admin-token'), 'utf8')).trim();
  } catch (e) {
    await cluster.close();
    throw e;
  }
  return cluster;
}

/** Polls `probe` until it returns a value other than undefined, or fails after ms with `what`. */
export async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>, everyMs = 50): Promise<T> {
  let last: unknown;
  const found = await waitFor(
    async () => {
      try {
        const v = await probe();
        return v === undefined ? undefined : { v };
      } catch (e) {
        last = e;
        return undefined;
      }
    },
    { timeoutMs: ms, intervalMs: everyMs, message: () => `${what}${last ? ` (last error: ${(last as Error).message})` : ''}` },
  );
  return found.v;
}

/** Whether the replica's process is still running. */
export const alive = (r: Replica) => r.server.proc.exitCode === null && r.server.proc.signalCode === null;
