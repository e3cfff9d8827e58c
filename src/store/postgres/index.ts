// The store in PostgreSQL, for N replicas: one database holds the registry with its artifacts, the
// deployments, retraining jobs, alerts and the cluster's replicas and leader lease. Opening it
// waits (with backoff, saying why) until the server answers, then applies the migrations.

import type { ScorelineError } from '../../errors.js';
import type { Store } from '../types.js';
import { Database, withStartRetry, type ConnectLog } from './database.js';
import { migrate } from './migrations/index.js';
import { PostgresCanarySteps } from './canary.js';
import { PostgresMonitoring } from './monitoring.js';
import { PostgresAlerts, PostgresCluster, PostgresJobs } from './records.js';
import { PostgresRegistry } from './registry.js';

export interface PostgresStoreOptions {
  url: string;
  /** Where artifacts are cached for onnxruntime (the data dir). */
  dataDir: string;
  log: ConnectLog;
  /** The replica making changes, named in their notifications. */
  origin?: string | null;
  now?: () => Date;
  onArtifactRefusal?: (error: ScorelineError, sha256: string) => void;
  onCacheRepaired?: (sha256: string, path: string) => void;
  poolSize?: number;
  connectTimeoutMs?: number;
  /** Keep trying to reach the server at start (default true); false fails on the first attempt. */
  waitForServer?: boolean;
}

export class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  readonly location: string;
  readonly registry: PostgresRegistry;
  readonly jobs: PostgresJobs;
  readonly alerts: PostgresAlerts;
  readonly cluster: PostgresCluster;
  readonly monitoring: PostgresMonitoring;
  readonly canary: PostgresCanarySteps;
  readonly #db: Database;

  private constructor(db: Database, opts: PostgresStoreOptions) {
    this.#db = db;
    this.location = db.location;
    const origin = opts.origin ?? null;
    this.registry = new PostgresRegistry(db, opts.dataDir, {
      origin,
      ...(opts.now ? { now: opts.now } : {}),
      ...(opts.onArtifactRefusal ? { onArtifactRefusal: opts.onArtifactRefusal } : {}),
      ...(opts.onCacheRepaired ? { onCacheRepaired: opts.onCacheRepaired } : {}),
    });
    this.jobs = new PostgresJobs(db, origin);
    this.alerts = new PostgresAlerts(db, origin);
    this.cluster = new PostgresCluster(db, opts.log);
    this.monitoring = new PostgresMonitoring(db);
    this.canary = new PostgresCanarySteps(db);
  }

  static async open(opts: PostgresStoreOptions): Promise<PostgresStore> {
    const db = new Database(opts.url, {
      ...(opts.poolSize !== undefined ? { poolSize: opts.poolSize } : {}),
      ...(opts.connectTimeoutMs !== undefined ? { connectTimeoutMs: opts.connectTimeoutMs } : {}),
      onIdleError: (e) => opts.log.warn({ store: db.location, err: e.message }, 'a connection to the store was closed'),
    });
    try {
      const attempt = async () => {
        const applied = await migrate(db);
        if (applied.length > 0) opts.log.info({ store: db.location, migrations: applied }, 'store schema migrated');
      };
      if (opts.waitForServer === false) await attempt();
      else await withStartRetry(db.location, attempt, opts.log);
    } catch (e) {
      await db.close().catch(() => undefined);
      throw e;
    }
    return new PostgresStore(db, opts);
  }

  async close(): Promise<void> {
    await this.#db.close();
  }
}
