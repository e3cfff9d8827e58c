// The store's interface: everything scoreline keeps beyond one request, in four parts with one
// implementation each in SQLite (the embedded default, one process) and PostgreSQL (N replicas):
// the registry (models, versions, artifacts, aliases, references, deployments), retraining jobs,
// alerts, and the cluster (replicas, the leader lease, change notifications). Every call is async
// and may fail with STORE_UNAVAILABLE (503, Retry-After) when a shared store cannot be reached; none
// is ever awaited on the request path, which serves from memory.

import type {
  AliasEvent,
  ChangeOptions,
  DeploymentEvent,
  DeploymentRecord,
  ImportResult,
  ModelRecord,
  RegisterOptions,
  RegisterResult,
  RegistryCounters,
  RepositoryScan,
  VersionRecord,
  VersionUpdate,
} from '../registry/index.js';
import type { AlertRecord, Incident, Job, JobFilter, Lease, ReplicaRecord, ReplicaReport, StoreChange, TriggerEvent } from './records.js';

export interface SaveDeploymentOptions {
  action: string;
  reason?: string;
  /**
   * The revision the caller's change is based on (0: the model had no deployment). When the stored
   * deployment has moved on (another replica changed it), nothing is written and CONFLICT is thrown.
   */
  expectRevision?: number;
}

export interface Registry {
  /** Validates the bytes as ONNX, stores the artifact and records the version, all or nothing. */
  register(name: string, bytes: Uint8Array, options?: RegisterOptions): Promise<RegisterResult>;
  /** Registers every version of a scanned model repository under its own number (see ModelRegistry.importRepository). */
  importRepository(scan: RepositoryScan): Promise<ImportResult>;
  getModel(name: string): Promise<ModelRecord>;
  /** All models (or the one named), sorted by name. */
  listModels(only?: string): Promise<ModelRecord[]>;
  getVersion(name: string, version: number): Promise<VersionRecord>;
  /** Versions of a model, oldest first. */
  listVersions(name: string): Promise<VersionRecord[]>;
  /** The version a reference names: a number, an alias, or "latest". */
  resolve(name: string, versionOrAlias: string): Promise<VersionRecord>;
  /** The version's record and its artifact bytes, verified against their sha256 (ARTIFACT_TAMPERED / ARTIFACT_MISSING). */
  load(name: string, version: number): Promise<{ record: VersionRecord; bytes: Buffer }>;
  /** The version's artifact as a verified file on the local disk, for onnxruntime to open. */
  artifactFile(name: string, version: number): Promise<{ record: VersionRecord; path: string }>;
  /** The version's reference rows (verified), or null when it has none. */
  referenceData(name: string, version: number): Promise<Buffer | null>;
  setAlias(name: string, alias: string, version: number, options?: ChangeOptions): Promise<AliasEvent>;
  deleteAlias(name: string, alias: string, options?: ChangeOptions): Promise<AliasEvent>;
  /** Alias moves of a model (or of one alias), oldest first. */
  aliasHistory(name: string, alias?: string): Promise<AliasEvent[]>;
  /** Merges metrics and tags, replaces the reference (and its rows); returns the updated record. */
  updateVersion(name: string, version: number, update: VersionUpdate): Promise<VersionRecord>;
  /** Replaces the model's deployment state (opaque JSON) and appends the change to its history. */
  saveDeployment<S>(name: string, state: S, options: SaveDeploymentOptions): Promise<DeploymentRecord<S>>;
  getDeployment<S = unknown>(name: string): Promise<DeploymentRecord<S> | undefined>;
  listDeployments<S = unknown>(): Promise<DeploymentRecord<S>[]>;
  /**
   * Removes the model's deployment (CONFLICT when it has none, or when it moved past
   * expectRevision); returns the removal's revision. Revisions keep counting across a removal.
   */
  removeDeployment(name: string, options: SaveDeploymentOptions): Promise<number>;
  /** Deployment changes of a model, oldest first; `to` is null where the deployment was removed. */
  deploymentHistory<S = unknown>(name: string): Promise<DeploymentEvent<S>[]>;
  /** Artifact loads refused here (this process), for /metrics. */
  counters(): RegistryCounters;
}

export interface JobRecords {
  /** Stores a new job unless its model already has one that is not finished (then false, nothing written). */
  insert(job: Job): Promise<boolean>;
  /**
   * Writes the job if the stored copy is still at job.revision, and advances job.revision; false
   * (nothing written) when it moved on. A finished job is never written again.
   */
  update(job: Job): Promise<boolean>;
  get(id: string): Promise<Job | undefined>;
  /** Newest first. */
  list(filter?: JobFilter): Promise<Job[]>;
  /** The model's job that is not finished, if any. */
  active(model: string): Promise<Job | undefined>;
  /** Every job that is not finished, oldest first. */
  unfinished(): Promise<Job[]>;
  /** When the model's last finished job ended (epoch ms), for cooldowns. */
  lastEnded(model: string): Promise<number | null>;
  /** Jobs per model and state. */
  counts(): Promise<{ model: string; state: string; n: number }[]>;
  addTriggerEvent(e: TriggerEvent): Promise<void>;
  /** Newest first. */
  triggerEvents(model: string, limit?: number): Promise<TriggerEvent[]>;
  addIncident(i: Incident): Promise<void>;
  /** Newest first. */
  incidents(model?: string, limit?: number): Promise<Incident[]>;
}

export interface AlertRecords {
  /** Records an alert's new state: its row is replaced and the change appended to the alert events. */
  save(alert: AlertRecord): Promise<void>;
  /** Alerts (their latest state) changed at or after `since` (epoch ms), newest change first. */
  list(limit: number, since: number): Promise<AlertRecord[]>;
  /** Alerts whose latest state is pending or firing. */
  open(): Promise<AlertRecord[]>;
}

export interface ClusterRecords {
  /** Whether other replicas can share this store (PostgreSQL); SQLite serves one process, which always leads. */
  readonly shared: boolean;
  /** Records a replica's heartbeat (the store's clock) with what it reports. */
  heartbeat(report: ReplicaReport): Promise<void>;
  /** Removes a replica's row (it shut down). */
  leave(id: string): Promise<void>;
  /** Replicas whose last heartbeat is at most `withinMs` old, by id. */
  replicas(withinMs: number): Promise<ReplicaRecord[]>;
  /** Takes the lease for `id` (when free or lapsed) or renews it (when `id` holds it) for ttlMs; returns who holds it now. */
  lead(id: string, ttlMs: number): Promise<Lease>;
  /** Ends the lease at once if `id` holds it, so another replica leads without waiting for it to lapse. */
  resign(id: string): Promise<void>;
  /** Who holds a lease that has not lapsed, or null. */
  leader(): Promise<string | null>;
  /**
   * Calls `onChange` for every change committed by any replica, and `onGap` whenever changes may
   * have been missed (the connection was lost and is back): the caller then reads everything again.
   * Reconnects by itself until the returned function is called.
   */
  listen(onChange: (c: StoreChange) => void, onGap: () => void): Promise<() => Promise<void>>;
  /** A secret every replica shares (e.g. the admin token): the first replica's `make()` wins. */
  sharedSecret(name: string, make: () => string): Promise<string>;
}

/** One replica's monitoring state of a version over a minute or an hour, as it shares it. */
export interface MonitoringCell {
  model: string;
  version: number;
  span: 'minute' | 'hour';
  /** Start of the minute or hour, epoch ms. */
  start: number;
  /** The drift reference the bucket was kept under: only cells with the same key are merged. */
  ref: string;
  /** The bucket's counts and histograms, JSON text. */
  data: string;
  /** The replica's request rate when it shared the cell (open minutes; null otherwise). */
  rps: number | null;
}

export interface SharedCell {
  replica: string;
  start: number;
  /** The bucket, parsed. */
  data: unknown;
  rps: number | null;
  /** Milliseconds since the replica last wrote the cell (by the store's clock). */
  ageMs: number;
}

export interface MonitoringRecords {
  /** Writes this replica's cells, each replacing its earlier state (same model, version, span, start). */
  putCells(replica: string, cells: readonly MonitoringCell[]): Promise<void>;
  /** Cells of the other replicas for a version and reference, starting at or after `since`. */
  cells(q: {
    model: string;
    version: number;
    span: 'minute' | 'hour';
    since: number;
    ref: string;
    exceptReplica: string;
  }): Promise<SharedCell[]>;
  /** Every replica's cells of a version (any reference) starting within [from, to], oldest first. */
  range(q: { model: string; version: number; span: 'minute' | 'hour'; from: number; to: number }): Promise<SharedCell[]>;
  /** Drops minute cells that start before `minutesBefore` and hour cells before `hoursBefore`; returns how many. */
  prune(minutesBefore: number, hoursBefore: number): Promise<number>;
}

/** One replica's statistics of a canary deployment's current step, as it shares them. */
export interface CanaryStepRow {
  model: string;
  /** Names the step (the stored deployment's revision and start): rows of another step are never read with it. */
  step: string;
  /** Per version, the step's counts and histograms, JSON text. */
  data: string;
}

export interface SharedCanaryStep {
  model: string;
  step: string;
  replica: string;
  /** The statistics, parsed. */
  data: unknown;
  /** Milliseconds since the replica last wrote the row (by the store's clock). */
  ageMs: number;
}

export interface CanaryStepRecords {
  /** Writes this replica's rows, each replacing its earlier row of the model (whatever step that was). */
  putSteps(replica: string, rows: readonly CanaryStepRow[]): Promise<void>;
  /** The other replicas' rows of exactly these steps. */
  steps(keys: readonly { model: string; step: string }[], exceptReplica: string): Promise<SharedCanaryStep[]>;
  /** Drops rows not written for `olderThanMs` unless they belong to one of `keep`; returns how many. */
  prune(keep: readonly { model: string; step: string }[], olderThanMs: number): Promise<number>;
}

export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  /** Where the store is, for logs and errors (a URL without its password, or the data dir). */
  readonly location: string;
  readonly registry: Registry;
  readonly jobs: JobRecords;
  readonly alerts: AlertRecords;
  readonly cluster: ClusterRecords;
  /** Monitoring state shared by the replicas (PostgreSQL); null when one process serves alone (SQLite). */
  readonly monitoring: MonitoringRecords | null;
  /** Canary step statistics shared by the replicas (PostgreSQL); null when one process serves alone (SQLite). */
  readonly canary: CanaryStepRecords | null;
  close(): Promise<void>;
}
