// The store: everything scoreline keeps beyond a request (registry and artifacts, deployments,
// retraining jobs, alerts, the cluster's replicas and leader lease) behind one async interface,
// kept in SQLite under the data dir (the embedded default) or in PostgreSQL when `store.url` (or
// SCORELINE_STORE_URL) names one, so that N replicas behave as one scoreline.

import type { ScorelineError } from '../errors.js';
import type { ConnectLog } from './postgres/database.js';
import { PostgresStore } from './postgres/index.js';
import { SqliteStore } from './sqlite/index.js';
import type { Store } from './types.js';

export type * from './types.js';
export * from './records.js';
export { SqliteRegistry, SqliteStore } from './sqlite/index.js';
export { PostgresStore } from './postgres/index.js';

export interface OpenStoreOptions {
  /** postgres:// URL of the shared store; null keeps everything in SQLite under dataDir. */
  url: string | null;
  dataDir: string;
  log: ConnectLog;
  /** This replica's id, named in the change notifications it causes. */
  origin?: string;
  onArtifactRefusal?: (error: ScorelineError, sha256: string) => void;
  onCacheRepaired?: (sha256: string, path: string) => void;
  /** Keep trying to reach PostgreSQL at start (default true). */
  waitForServer?: boolean;
}

/** The store URL a process uses: the config's, else SCORELINE_STORE_URL, else none (SQLite). */
export function storeUrl(configured: string | null | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (configured !== null && configured !== undefined && configured !== '') return configured;
  const e = env.SCORELINE_STORE_URL;
  return e !== undefined && e !== '' ? e : null;
}

export async function openStore(o: OpenStoreOptions): Promise<Store> {
  const refusal = o.onArtifactRefusal ? { onArtifactRefusal: o.onArtifactRefusal } : {};
  if (o.url === null) return SqliteStore.open(o.dataDir, refusal);
  return PostgresStore.open({
    url: o.url,
    dataDir: o.dataDir,
    log: o.log,
    origin: o.origin ?? null,
    ...refusal,
    ...(o.onCacheRepaired ? { onCacheRepaired: o.onCacheRepaired } : {}),
    ...(o.waitForServer !== undefined ? { waitForServer: o.waitForServer } : {}),
  });
}
