// What a replica takes from the store at start besides its records: its id, the admin token (one
// for every replica of a shared store), and, on the first start of an embedded store, the alerts
// an older scoreline kept in monitoring.db.

import { randomBytes } from 'node:crypto';
import { chmodSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { PredictionLog } from '../monitoring/index.js';
import type { Store } from '../store/index.js';
import { adminToken } from './admin.js';

/** SCORELINE_REPLICA_ID, else this host's name, process id and a random suffix (unique across restarts). */
export function replicaIdOf(): string {
  const env = process.env.SCORELINE_REPLICA_ID;
  if (env !== undefined && env !== '') return env;
  return `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/**
 * The admin token: SCORELINE_ADMIN_TOKEN; else with a shared store one token every replica shares
 * (the first replica's, kept in the store), written to the data dir for the CLI; else the data
 * dir's own (created on first start).
 */
export async function adminTokenFor(dataDir: string, store: Store): Promise<{ token: string; source: string }> {
  const env = process.env.SCORELINE_ADMIN_TOKEN;
  if (!store.cluster.shared || (env !== undefined && env.length > 0)) return adminToken(dataDir);
  const token = await store.cluster.sharedSecret('admin-token', () => randomBytes(24).toString('base64url'));
  const file = join(dataDir, 'admin-token');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { token, source: `${store.location} (copied to ${file})` };
}

/**
 * Alerts were kept in monitoring.db before the store held them: on the first start with a store
 * that has none, the recent ones are copied over, so firing alerts stay firing (no second
 * notification) and cooldowns hold.
 */
export async function importLegacyAlerts(store: Store, log: PredictionLog, logger: Logger): Promise<void> {
  if ((await store.alerts.list(1, 0)).length > 0) return;
  const recent = (await log.alertHistory(10_000, Date.now() - 7 * 86_400_000).catch(() => [])) as {
    id?: string;
    state?: string;
    firedAt?: number;
    startedAt?: number;
    resolvedAt?: number;
  }[];
  if (recent.length === 0) return;
  const latest = new Map<string, (typeof recent)[number]>();
  for (const a of [...recent].reverse()) if (typeof a.id === 'string') latest.set(a.id, a);
  for (const a of latest.values()) {
    await store.alerts.save({
      id: a.id!,
      state: a.state ?? 'resolved',
      at: a.resolvedAt ?? a.firedAt ?? a.startedAt ?? Date.now(),
      data: a,
    });
  }
  logger.info({ alerts: latest.size }, 'alerts kept in monitoring.db copied into the store');
}
