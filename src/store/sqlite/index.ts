// The store in SQLite, the embedded default: the registry (registry.db and the artifact folder of the
// data dir, through ModelRegistry), alerts in registry.db, retraining jobs in retraining.db, and a
// cluster of one: the process is the only replica and always leads. The calls are synchronous
// underneath (better-sqlite3) and answer as promises to fit the store's interface.

import { hostname } from 'node:os';
import {
  ModelRegistry,
  openDatabase,
  type ChangeOptions,
  type Db,
  type RegisterOptions,
  type RegistryOptions,
  type RepositoryScan,
  type VersionUpdate,
} from '../../registry/index.js';
import { join, resolve } from 'node:path';
import type { AlertRecord, Lease, ReplicaRecord, ReplicaReport } from '../records.js';
import type { AlertRecords, ClusterRecords, Registry, SaveDeploymentOptions, Store } from '../types.js';
import { SqliteJobs } from './jobs.js';

/** ModelRegistry behind the store's async interface. */
export class SqliteRegistry implements Registry {
  constructor(readonly inner: ModelRegistry) {}
  async register(name: string, bytes: Uint8Array, options?: RegisterOptions) {
    return this.inner.register(name, bytes, options);
  }
  async importRepository(scan: RepositoryScan) {
    return this.inner.importRepository(scan);
  }
  async getModel(name: string) {
    return this.inner.getModel(name);
  }
  async listModels(only?: string) {
    return this.inner.listModels(only);
  }
  async getVersion(name: string, version: number) {
    return this.inner.getVersion(name, version);
  }
  async listVersions(name: string) {
    return this.inner.listVersions(name);
  }
  async resolve(name: string, versionOrAlias: string) {
    return this.inner.resolve(name, versionOrAlias);
  }
  async load(name: string, version: number) {
    return this.inner.load(name, version);
  }
  async artifactFile(name: string, version: number) {
    // The artifact folder is the store itself: the verified file is the one onnxruntime opens.
    const { record } = this.inner.load(name, version);
    return { record, path: this.inner.artifacts.path(record.sha256) };
  }
  async referenceData(name: string, version: number) {
    return this.inner.referenceData(name, version);
  }
  async setAlias(name: string, alias: string, version: number, options?: ChangeOptions) {
    return this.inner.setAlias(name, alias, version, options);
  }
  async deleteAlias(name: string, alias: string, options?: ChangeOptions) {
    return this.inner.deleteAlias(name, alias, options);
  }
  async aliasHistory(name: string, alias?: string) {
    return this.inner.aliasHistory(name, alias);
  }
  async updateVersion(name: string, version: number, update: VersionUpdate) {
    return this.inner.updateVersion(name, version, update);
  }
  async saveDeployment<S>(name: string, state: S, options: SaveDeploymentOptions) {
    return this.inner.saveDeployment(name, state, options);
  }
  async getDeployment<S = unknown>(name: string) {
    return this.inner.getDeployment<S>(name);
  }
  async listDeployments<S = unknown>() {
    return this.inner.listDeployments<S>();
  }
  async removeDeployment(name: string, options: SaveDeploymentOptions) {
    return this.inner.removeDeployment(name, options);
  }
  async deploymentHistory<S = unknown>(name: string) {
    return this.inner.deploymentHistory<S>(name);
  }
  counters() {
    return this.inner.counters();
  }
}

/** Alerts in registry.db (its own connection: the registry's is private to ModelRegistry). */
class SqliteAlerts implements AlertRecords {
  constructor(private readonly db: Db) {}
  async save(a: AlertRecord): Promise<void> {
    const data = JSON.stringify(a.data);
    this.db
      .transaction(() => {
        this.db.prepare('INSERT OR REPLACE INTO alerts (id, state, updated_at, data) VALUES (?, ?, ?, ?)').run(a.id, a.state, a.at, data);
        this.db.prepare('INSERT INTO alert_events (alert_id, state, at, data) VALUES (?, ?, ?, ?)').run(a.id, a.state, a.at, data);
      })
      .immediate();
  }
  async list(limit: number, since: number): Promise<AlertRecord[]> {
    return (
      this.db.prepare('SELECT * FROM alerts WHERE updated_at >= ? ORDER BY updated_at DESC, id LIMIT ?').all(since, limit) as AlertRow[]
    ).map(toAlert);
  }
  async open(): Promise<AlertRecord[]> {
    return (this.db.prepare("SELECT * FROM alerts WHERE state IN ('pending', 'firing') ORDER BY updated_at, id").all() as AlertRow[]).map(
      toAlert,
    );
  }
}

interface AlertRow {
  id: string;
  state: string;
  updated_at: number;
  data: string;
}
const toAlert = (r: AlertRow): AlertRecord => ({ id: r.id, state: r.state, at: r.updated_at, data: JSON.parse(r.data) as unknown });

/** One process: it is the only replica, it leads from its first attempt, and nothing else changes the store. */
class LocalCluster implements ClusterRecords {
  readonly shared = false;
  private report: (ReplicaReport & { heartbeatAt: string }) | null = null;
  private holder: string | null = null;
  private term = 0;
  private readonly secrets = new Map<string, string>();
  async heartbeat(report: ReplicaReport): Promise<void> {
    this.report = { ...report, heartbeatAt: new Date().toISOString() };
  }
  async leave(id: string): Promise<void> {
    if (this.report?.id === id) this.report = null;
  }
  async replicas(): Promise<ReplicaRecord[]> {
    return this.report === null ? [] : [this.report];
  }
  async lead(id: string, ttlMs: number): Promise<Lease> {
    if (this.holder === null) {
      this.holder = id;
      this.term++;
    }
    return { holder: this.holder, term: this.term, ttlMs };
  }
  async resign(id: string): Promise<void> {
    if (this.holder === id) this.holder = null;
  }
  async leader(): Promise<string | null> {
    return this.holder;
  }
  async listen(): Promise<() => Promise<void>> {
    return async () => undefined;
  }
  async sharedSecret(name: string, make: () => string): Promise<string> {
    let s = this.secrets.get(name);
    if (s === undefined) {
      s = make();
      this.secrets.set(name, s);
    }
    return s;
  }
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  readonly location: string;
  readonly registry: SqliteRegistry;
  readonly jobs: SqliteJobs;
  readonly alerts: AlertRecords;
  readonly cluster: ClusterRecords = new LocalCluster();
  /** One process: its monitoring view is its own. */
  readonly monitoring = null;
  /** One process: its canary statistics are all the traffic. */
  readonly canary = null;
  readonly #alertDb: Db;

  private constructor(dataDir: string, registry: ModelRegistry, jobs: SqliteJobs, alertDb: Db) {
    this.location = `SQLite in ${resolve(dataDir)} on ${hostname()}`;
    this.registry = new SqliteRegistry(registry);
    this.jobs = jobs;
    this.#alertDb = alertDb;
    this.alerts = new SqliteAlerts(alertDb);
  }

  /** Opens (creating and migrating) the data dir's databases. */
  static open(dataDir: string, options: RegistryOptions = {}): SqliteStore {
    const registry = ModelRegistry.open(dataDir, options);
    let jobs: SqliteJobs | undefined;
    try {
      jobs = new SqliteJobs(dataDir);
      return new SqliteStore(dataDir, registry, jobs, openDatabase(join(dataDir, 'registry.db')));
    } catch (e) {
      jobs?.close();
      registry.close();
      throw e;
    }
  }

  async close(): Promise<void> {
    this.registry.inner.close();
    this.jobs.close();
    if (this.#alertDb.open) this.#alertDb.close();
  }
}
