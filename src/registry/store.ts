// The model registry: models, their versions (sha256-addressed artifacts with signature, metrics,
// tags, lineage and config), aliases with their full history, and each model's deployment state with
// its history, in one SQLite file <dataDir>/registry.db next to the artifact store. Every write is one
// IMMEDIATE transaction; every load re-hashes the artifact and checks again that the model keeps no
// tensor data in other files. A version's reference rows are kept as an artifact too, so that what
// the registry hands out is always bytes it stored, never a file at a path it recorded. Deployment
// state is opaque JSON here: the deployer owns its meaning.

import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  aliasNotFound,
  badRequest,
  conflict,
  insufficientStorage,
  isDiskFull,
  isScorelineError,
  modelNotFound,
  versionNotFound,
  type ScorelineError,
} from '../errors.js';
import { ArtifactStore, sha256Of } from './artifacts.js';
import { refuseExternalData } from '../onnx/index.js';
import { assertOnnx } from './format.js';
import { readMlflowFolder } from './mlflow.js';
import { MODEL_NAME, type RepositoryModel, type RepositoryScan, type RepositoryVersion } from './repository.js';
import type {
  AliasEvent,
  ChangeOptions,
  DeploymentEvent,
  DeploymentRecord,
  ImportResult,
  ImportSkip,
  JsonObject,
  Lineage,
  ModelRecord,
  RegisterOptions,
  RegisterResult,
  RegistryCounters,
  RegistryOptions,
  Signature,
  VersionRecord,
  VersionUpdate,
} from './records.js';
import { openDatabase, type Db } from './schema.js';

export type * from './records.js';

/** Alias names; they start with a letter so that they can never be read as a version number. */
export const ALIAS_NAME = /^[a-z][a-z0-9_-]{0,63}$/;
/** Resolves to the highest version; cannot be set as an alias. */
export const LATEST = 'latest';
export const MAX_VERSION = 999_999_999;

interface VersionRow {
  model: string;
  version: number;
  sha256: string;
  size: number;
  created_at: string;
  signature: string;
  metrics: string;
  tags: string;
  lineage: string;
  config: string;
  reference: string | null;
  reference_data: string | null;
  aliases: string | null;
}

const VERSION_SELECT = `
  SELECT v.*, (SELECT group_concat(a.alias, ',') FROM aliases a WHERE a.model = v.model AND a.version = v.version) AS aliases
  FROM versions v`;

/** What every store checks and derives before it records a version: the name, the number, the bytes as ONNX, hash, signature and lineage. */
export function prepareRegistration(name: string, bytes: Uint8Array, options: RegisterOptions) {
  if (!MODEL_NAME.test(name)) {
    throw badRequest(`'${name}' is not a valid model name (letters, digits, '.', '_', '-'; at most 128, starting with a letter or digit)`);
  }
  const requested = options.version;
  if (requested !== undefined && !(Number.isSafeInteger(requested) && requested >= 1 && requested <= MAX_VERSION)) {
    throw badRequest(`model versions are integers from 1 to ${MAX_VERSION}, got ${requested}`);
  }
  const declared = options.source === undefined ? options.declaredSource : undefined;
  const source = options.source ?? (declared !== undefined ? `'${declared}' (as its sender names it)` : `the artifact for model '${name}'`);
  const meta = assertOnnx(bytes, source);
  const sha256 = sha256Of(bytes);
  const signature: Signature = { inputs: meta.inputs, outputs: meta.outputs };
  const lineage: Lineage = {
    ...(options.source !== undefined ? { source: options.source } : {}),
    ...(declared !== undefined ? { declaredSource: declared } : {}),
    ...options.lineage,
  };
  return { requested, source, sha256, signature, lineage, referenceData: options.referenceData };
}

/** The bytes are already stored as another version than the one asked for. */
export function identicalToVersion(source: string, name: string, sha256: string, same: number, requested: number): ScorelineError {
  return conflict(
    `${source} is identical to version ${same} of model '${name}' (sha256 ${sha256}); it cannot also be version ${requested}`,
  );
}

/** The version number asked for holds other bytes. */
export function versionNumberTaken(name: string, version: number, stored: string, sha256: string): ScorelineError {
  return conflict(`version ${version} of model '${name}' already exists with different bytes (sha256 ${stored}, not ${sha256})`);
}

/** The columns of a new versions row, in the order of versionRow(); both stores insert it. */
export const VERSION_COLUMNS = 'model, version, sha256, size, created_at, signature, metrics, tags, lineage, config, reference_data';

/** A new version's row values, JSON columns as text. */
export function versionRow(
  name: string,
  version: number,
  prepared: { sha256: string; signature: Signature; lineage: Lineage },
  size: number,
  at: string,
  options: RegisterOptions,
  referenceSha: string | null,
): unknown[] {
  return [
    name,
    version,
    prepared.sha256,
    size,
    at,
    JSON.stringify(prepared.signature),
    JSON.stringify(options.metrics ?? {}),
    JSON.stringify(options.tags ?? {}),
    JSON.stringify(prepared.lineage),
    JSON.stringify(options.config ?? {}),
    referenceSha,
  ];
}

/** Metrics or tags with a patch applied: a null value removes the key. */
export function mergePatch<T>(base: Readonly<Record<string, T>>, patch: Record<string, T | null> | undefined): Record<string, T> {
  const out: Record<string, T> = { ...base };
  for (const [k, v] of Object.entries(patch ?? {}))
    if (v === null) delete out[k];
    else out[k] = v;
  return out;
}

/** Refuses alias names that could be read as a version or as `latest`. */
export function checkAliasName(alias: string): void {
  if (!ALIAS_NAME.test(alias) || alias === LATEST) {
    throw badRequest(
      `'${alias}' is not a valid alias name: lowercase letters, digits, '_' and '-', starting with a letter, not '${LATEST}'`,
    );
  }
}

/**
 * The stored state of a removed deployment. Its row stays, so revisions keep counting up across a
 * removal (a replica that served an older revision adopts the next deployment), and reads treat it
 * as no deployment.
 */
export const REMOVED_DEPLOYMENT = 'null';

/** Whether a change based on `expected` may be written over the stored `current` revision; 0 means "no deployment". */
export const deploymentRevisionMatches = (expected: number, current: number, removed: boolean) =>
  expected === current || (removed && expected === 0);

/**
 * What a repository version is registered from: its model.onnx, or its MLflow folder's flavor file
 * with the signature's feature names (model.yaml's settings win) and MLmodel as lineage.
 */
export function repositoryRegistration(model: RepositoryModel, v: RepositoryVersion): { bytes: Uint8Array; options: RegisterOptions } {
  const mlflow = v.mlflowDir === undefined ? null : readMlflowFolder(v.mlflowDir);
  const config = mlflow?.features ? { features: mlflow.features, ...model.config } : model.config;
  return {
    bytes: mlflow?.bytes ?? readFileSync(v.path),
    options: {
      version: v.version,
      source: v.path,
      config: config as JsonObject,
      ...(mlflow !== null ? { lineage: mlflow.lineage } : {}),
      ...(model.reference !== null ? { referenceData: model.reference.bytes } : {}),
    },
  };
}

/** Versions are immutable: other bytes under a registered number are refused before they are read. */
export function versionTaken(model: string, version: number, path: string, registered: string, found: string): ImportSkip {
  const e = conflict(
    `version ${version} of model '${model}' already exists with different bytes (sha256 ${registered}, not ${found}); versions are immutable: add a new version folder`,
  );
  return { model, version, path, code: e.code, reason: e.message };
}

/** The deployment's revision did not match: another writer changed it since the caller read it. */
export const deploymentMoved = (name: string, expected: number, actual: number) =>
  conflict(
    `the deployment of model '${name}' changed while this change was prepared (revision ${actual}, this change was based on ${expected}); read it again and retry`,
  );

export class ModelRegistry {
  readonly dataDir: string;
  readonly artifacts: ArtifactStore;
  readonly #db: Db;
  readonly #now: () => Date;

  private constructor(dataDir: string, db: Db, artifacts: ArtifactStore, now: () => Date) {
    this.dataDir = dataDir;
    this.#db = db;
    this.artifacts = artifacts;
    this.#now = now;
  }

  /** Opens the registry in dataDir (created if needed), migrating registry.db to the current schema. */
  static open(dataDir: string, options: RegistryOptions = {}): ModelRegistry {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const artifacts = new ArtifactStore(dataDir, options.onArtifactRefusal ? { onRefusal: options.onArtifactRefusal } : {});
    const db = openDatabase(join(dataDir, 'registry.db'));
    return new ModelRegistry(dataDir, db, artifacts, options.now ?? (() => new Date()));
  }

  close(): void {
    if (this.#db.open) this.#db.close();
  }

  /** Validates the bytes as ONNX, stores the artifact and records the version, all or nothing. */
  register(name: string, bytes: Uint8Array, options: RegisterOptions = {}): RegisterResult {
    const prepared = prepareRegistration(name, bytes, options);
    const { requested, source, sha256, referenceData } = prepared;

    return this.#write(() => {
      const at = this.#stamp();
      this.#db
        .prepare('INSERT OR IGNORE INTO models (name, description, created_at) VALUES (?, ?, ?)')
        .run(name, options.description ?? '', at);
      const same = this.#db.prepare('SELECT version FROM versions WHERE model = ? AND sha256 = ?').get(name, sha256) as
        | { version: number }
        | undefined;
      if (same) {
        if (requested !== undefined && requested !== same.version) throw identicalToVersion(source, name, sha256, same.version, requested);
        this.artifacts.put(bytes); // restores the file if it went missing or was damaged
        if (referenceData !== undefined) this.#attachReferenceData(name, same.version, referenceData);
        return { name, version: same.version, sha256, size: bytes.length, created: false };
      }
      let version = requested;
      if (version === undefined) {
        const max = this.#db.prepare('SELECT MAX(version) AS v FROM versions WHERE model = ?').get(name) as { v: number | null };
        version = (max.v ?? 0) + 1;
      } else {
        const taken = this.#db.prepare('SELECT sha256 FROM versions WHERE model = ? AND version = ?').get(name, version) as
          | { sha256: string }
          | undefined;
        if (taken) throw versionNumberTaken(name, version, taken.sha256, sha256);
      }
      this.artifacts.put(bytes);
      const referenceSha = referenceData === undefined ? null : this.artifacts.put(referenceData, 'csv').sha256;
      this.#db
        .prepare(`INSERT INTO versions (${VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
        .run(...versionRow(name, version, prepared, bytes.length, at, options, referenceSha));
      return { name, version, sha256, size: bytes.length, created: true };
    });
  }

  /**
   * Registers every version of a scanned model repository under its own number, with model.yaml as
   * config and its reference rows as the version's reference data. Safe to run at every start:
   * versions already registered with the same hash are not re-read (they only get the reference
   * rows if they have none yet). A version whose number the registry holds with other bytes (or
   * whose file is not ONNX, or keeps tensor data in other files) is skipped and reported: the
   * registry stays the source of truth. An MLflow version folder is registered from its flavor's
   * ONNX file, with its signature's feature names (model.yaml's settings win) and MLmodel as lineage.
   */
  importRepository(scan: RepositoryScan): ImportResult {
    const imported: RegisterResult[] = [];
    const unchanged: RegisterResult[] = [];
    const skipped: ImportSkip[] = [...scan.refused];
    for (const model of scan.models) {
      for (const v of model.versions) {
        // Fast path for every restart: same number, same hash (from the scan), artifact present.
        const known = this.#db
          .prepare('SELECT size, reference_data FROM versions WHERE model = ? AND version = ? AND sha256 = ?')
          .get(model.name, v.version, v.sha256) as { size: number; reference_data: string | null } | undefined;
        if (known && this.artifacts.has(v.sha256)) {
          const reference = model.reference;
          if (reference !== null && known.reference_data === null) {
            this.#write(() => this.#attachReferenceData(model.name, v.version, reference.bytes));
          }
          unchanged.push({ name: model.name, version: v.version, sha256: v.sha256, size: known.size, created: false });
          continue;
        }
        const taken = this.#db.prepare('SELECT sha256 FROM versions WHERE model = ? AND version = ?').get(model.name, v.version) as
          | { sha256: string }
          | undefined;
        if (taken !== undefined && taken.sha256 !== v.sha256) {
          skipped.push(versionTaken(model.name, v.version, v.path, taken.sha256, v.sha256));
          continue;
        }
        try {
          const { bytes, options } = repositoryRegistration(model, v);
          const result = this.register(model.name, bytes, options);
          (result.created ? imported : unchanged).push(result);
        } catch (e) {
          if (!isScorelineError(e) || e.status >= 500) throw e;
          skipped.push({ model: model.name, version: v.version, path: v.path, code: e.code, reason: e.message });
        }
      }
    }
    return { imported, unchanged, skipped };
  }

  getModel(name: string): ModelRecord {
    const model = this.listModels(name)[0];
    if (!model) throw modelNotFound(name);
    return model;
  }

  /** All models (or the one named), sorted by name, with their latest version and aliases. */
  listModels(only?: string): ModelRecord[] {
    const where = only === undefined ? '' : 'WHERE m.name = ?';
    const rows = this.#db
      .prepare(`SELECT m.name, m.description, m.created_at, MAX(v.version) AS latest, COUNT(v.version) AS n
      FROM models m LEFT JOIN versions v ON v.model = m.name ${where} GROUP BY m.name ORDER BY m.name`)
      .all(...(only === undefined ? [] : [only])) as { name: string; description: string; created_at: string; latest: number; n: number }[];
    const aliases = this.#db
      .prepare(`SELECT model, alias, version FROM aliases ${only === undefined ? '' : 'WHERE model = ?'} ORDER BY alias`)
      .all(...(only === undefined ? [] : [only])) as { model: string; alias: string; version: number }[];
    return rows.map((r) => ({
      name: r.name,
      description: r.description,
      createdAt: r.created_at,
      latestVersion: r.latest,
      versionCount: r.n,
      aliases: Object.fromEntries(aliases.filter((a) => a.model === r.name).map((a) => [a.alias, a.version])),
    }));
  }

  getVersion(name: string, version: number): VersionRecord {
    const row = this.#db.prepare(`${VERSION_SELECT} WHERE v.model = ? AND v.version = ?`).get(name, version) as VersionRow | undefined;
    if (!row) {
      this.#requireModel(name);
      throw versionNotFound(name, String(version));
    }
    return toVersion(row);
  }

  /** Versions of a model, oldest first. */
  listVersions(name: string): VersionRecord[] {
    this.#requireModel(name);
    return (this.#db.prepare(`${VERSION_SELECT} WHERE v.model = ? ORDER BY v.version`).all(name) as VersionRow[]).map(toVersion);
  }

  /** The version a reference names: a version number ("3"), an alias ("champion") or "latest". */
  resolve(name: string, versionOrAlias: string): VersionRecord {
    this.#requireModel(name);
    if (/^[0-9]+$/.test(versionOrAlias)) return this.getVersion(name, Number(versionOrAlias));
    if (versionOrAlias === LATEST) return this.getVersion(name, this.getModel(name).latestVersion);
    const row = this.#db.prepare('SELECT version FROM aliases WHERE model = ? AND alias = ?').get(name, versionOrAlias) as
      | { version: number }
      | undefined;
    if (!row) throw aliasNotFound(name, versionOrAlias);
    return this.getVersion(name, row.version);
  }

  /**
   * The version's record and its artifact bytes, re-hashed: ARTIFACT_TAMPERED / ARTIFACT_MISSING are
   * thrown and counted. A model that keeps tensor data in other files (stored before such models
   * were refused) is refused here with EXTERNAL_DATA, so no caller ever hands it to onnxruntime.
   */
  load(name: string, version: number): { record: VersionRecord; bytes: Buffer } {
    const record = this.getVersion(name, version);
    const bytes = this.artifacts.read(record.sha256);
    refuseExternalData(bytes, `version ${version} of model '${name}'`);
    return { record, bytes };
  }

  /** The version's reference rows as stored (re-hashed like any artifact), or null when the registry keeps none. */
  referenceData(name: string, version: number): Buffer | null {
    const { referenceData } = this.getVersion(name, version);
    return referenceData === null ? null : this.artifacts.read(referenceData, 'csv');
  }

  /** Points the alias at the version, recording the move (no record when it already points there). */
  setAlias(name: string, alias: string, version: number, options: ChangeOptions = {}): AliasEvent {
    checkAliasName(alias);
    return this.#write(() => {
      this.getVersion(name, version);
      const current = this.#aliasVersion(name, alias);
      const event = this.#aliasEvent(name, alias, current, version, options);
      if (current === version) return event;
      this.#db
        .prepare(`INSERT INTO aliases (model, alias, version, updated_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at`)
        .run(name, alias, version, event.at);
      return this.#recordAlias(event);
    });
  }

  deleteAlias(name: string, alias: string, options: ChangeOptions = {}): AliasEvent {
    return this.#write(() => {
      this.#requireModel(name);
      const current = this.#aliasVersion(name, alias);
      if (current === null) throw aliasNotFound(name, alias);
      this.#db.prepare('DELETE FROM aliases WHERE model = ? AND alias = ?').run(name, alias);
      return this.#recordAlias(this.#aliasEvent(name, alias, current, null, options));
    });
  }

  /** Alias moves of a model (or of one alias), oldest first. */
  aliasHistory(name: string, alias?: string): AliasEvent[] {
    this.#requireModel(name);
    const rows = this.#db
      .prepare(`SELECT * FROM alias_history WHERE model = ? ${alias === undefined ? '' : 'AND alias = ?'} ORDER BY id`)
      .all(...(alias === undefined ? [name] : [name, alias])) as {
      model: string;
      alias: string;
      from_version: number | null;
      to_version: number | null;
      at: string;
      reason: string;
      actor: string;
    }[];
    return rows.map((r) => ({
      model: r.model,
      alias: r.alias,
      from: r.from_version,
      to: r.to_version,
      at: r.at,
      reason: r.reason,
      actor: r.actor,
    }));
  }

  /** Merges metrics and tags into the version's, replaces its reference; returns the updated record. */
  updateVersion(name: string, version: number, update: VersionUpdate): VersionRecord {
    return this.#write(() => {
      const current = this.getVersion(name, version);
      const reference = 'reference' in update ? (update.reference ?? null) : current.reference;
      const referenceData =
        update.referenceData !== undefined ? this.artifacts.put(update.referenceData, 'csv').sha256 : current.referenceData;
      this.#db
        .prepare('UPDATE versions SET metrics = ?, tags = ?, reference = ?, reference_data = ? WHERE model = ? AND version = ?')
        .run(
          JSON.stringify(mergePatch(current.metrics, update.metrics)),
          JSON.stringify(mergePatch(current.tags, update.tags)),
          reference === null ? null : JSON.stringify(reference),
          referenceData,
          name,
          version,
        );
      return this.getVersion(name, version);
    });
  }

  /**
   * Replaces the model's deployment state and appends the change to its history. With
   * expectRevision, writes only when the stored deployment is still at that revision (0: none yet).
   */
  saveDeployment<S>(name: string, state: S, options: { action: string; reason?: string; expectRevision?: number }): DeploymentRecord<S> {
    const json = JSON.stringify(state);
    if (json === undefined || json === REMOVED_DEPLOYMENT) throw badRequest('a deployment state must be JSON');
    return this.#write(() => {
      this.#requireModel(name);
      const at = this.#stamp();
      const before = this.#db.prepare('SELECT state, revision FROM deployments WHERE model = ?').get(name) as
        | { state: string; revision: number }
        | undefined;
      const current = before?.revision ?? 0;
      const removed = before === undefined || before.state === REMOVED_DEPLOYMENT;
      if (options.expectRevision !== undefined && !deploymentRevisionMatches(options.expectRevision, current, removed))
        throw deploymentMoved(name, options.expectRevision, current);
      this.#db
        .prepare(`INSERT INTO deployments (model, state, updated_at, revision) VALUES (?, ?, ?, ?)
        ON CONFLICT (model) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at, revision = excluded.revision`)
        .run(name, json, at, current + 1);
      this.#db
        .prepare('INSERT INTO deployment_history (model, at, action, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?, ?)')
        .run(name, at, options.action, removed ? null : before.state, json, options.reason ?? '');
      return { model: name, state: JSON.parse(json) as S, updatedAt: at, revision: current + 1 };
    });
  }

  /**
   * Removes the model's deployment (it then serves its highest ready version), recording the removal
   * in its history with no new state; CONFLICT when it has none, or when it changed since
   * expectRevision. Returns the removal's revision.
   */
  removeDeployment(name: string, options: { action: string; reason?: string; expectRevision?: number }): number {
    return this.#write(() => {
      this.#requireModel(name);
      const before = this.#db.prepare('SELECT state, revision FROM deployments WHERE model = ?').get(name) as
        | { state: string; revision: number }
        | undefined;
      if (before === undefined || before.state === REMOVED_DEPLOYMENT) throw conflict(`model '${name}' has no deployment`);
      if (options.expectRevision !== undefined && options.expectRevision !== before.revision)
        throw deploymentMoved(name, options.expectRevision, before.revision);
      const at = this.#stamp();
      this.#db
        .prepare('UPDATE deployments SET state = ?, updated_at = ?, revision = ? WHERE model = ?')
        .run(REMOVED_DEPLOYMENT, at, before.revision + 1, name);
      this.#db
        .prepare('INSERT INTO deployment_history (model, at, action, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?, ?)')
        .run(name, at, options.action, before.state, REMOVED_DEPLOYMENT, options.reason ?? '');
      return before.revision + 1;
    });
  }

  /** The model's deployment, or undefined when it has none. */
  getDeployment<S = unknown>(name: string): DeploymentRecord<S> | undefined {
    this.#requireModel(name);
    const row = this.#db.prepare('SELECT * FROM deployments WHERE model = ? AND state <> ?').get(name, REMOVED_DEPLOYMENT) as
      | DeploymentRow
      | undefined;
    return row && toDeployment<S>(row);
  }

  listDeployments<S = unknown>(): DeploymentRecord<S>[] {
    return (this.#db.prepare('SELECT * FROM deployments WHERE state <> ? ORDER BY model').all(REMOVED_DEPLOYMENT) as DeploymentRow[]).map(
      (r) => toDeployment<S>(r),
    );
  }

  /** Deployment changes of a model, oldest first; `to` is null where the deployment was removed. */
  deploymentHistory<S = unknown>(name: string): DeploymentEvent<S>[] {
    this.#requireModel(name);
    const rows = this.#db.prepare('SELECT * FROM deployment_history WHERE model = ? ORDER BY id').all(name) as {
      model: string;
      at: string;
      action: string;
      from_state: string | null;
      to_state: string;
      reason: string;
    }[];
    return rows.map((r) => ({
      model: r.model,
      at: r.at,
      action: r.action,
      reason: r.reason,
      from: r.from_state === null ? null : (JSON.parse(r.from_state) as S),
      to: JSON.parse(r.to_state) as S | null,
    }));
  }

  counters(): RegistryCounters {
    const c = this.artifacts.counters();
    return { tamperedRefusals: c.tampered, missingRefusals: c.missing };
  }

  #write<T>(fn: () => T): T {
    // IMMEDIATE takes the write lock up front, so a read-then-write never fails on a concurrent writer.
    try {
      return this.#db.transaction(fn).immediate();
    } catch (e) {
      // Rolled back, so nothing changed: the caller learns it can retry once there is room (507).
      if (isDiskFull(e)) throw insufficientStorage(this.dataDir, e);
      throw e;
    }
  }

  /** Gives the version these reference rows unless it already has some: a version's reference data never changes. */
  #attachReferenceData(name: string, version: number, bytes: Uint8Array): void {
    const row = this.#db.prepare('SELECT reference_data FROM versions WHERE model = ? AND version = ?').get(name, version) as
      | { reference_data: string | null }
      | undefined;
    if (!row || row.reference_data !== null) return;
    const { sha256 } = this.artifacts.put(bytes, 'csv');
    this.#db.prepare('UPDATE versions SET reference_data = ? WHERE model = ? AND version = ?').run(sha256, name, version);
  }

  #stamp(): string {
    return this.#now().toISOString();
  }

  #requireModel(name: string): void {
    if (!this.#db.prepare('SELECT 1 FROM models WHERE name = ?').get(name)) throw modelNotFound(name);
  }

  #aliasVersion(name: string, alias: string): number | null {
    const row = this.#db.prepare('SELECT version FROM aliases WHERE model = ? AND alias = ?').get(name, alias) as
      | { version: number }
      | undefined;
    return row?.version ?? null;
  }

  #aliasEvent(model: string, alias: string, from: number | null, to: number | null, options: ChangeOptions): AliasEvent {
    return { model, alias, from, to, at: this.#stamp(), reason: options.reason ?? '', actor: options.actor ?? '' };
  }

  #recordAlias(e: AliasEvent): AliasEvent {
    this.#db
      .prepare('INSERT INTO alias_history (model, alias, from_version, to_version, at, reason, actor) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(e.model, e.alias, e.from, e.to, e.at, e.reason, e.actor);
    return e;
  }
}

interface DeploymentRow {
  model: string;
  state: string;
  updated_at: string;
  revision: number;
}

const toDeployment = <S>(r: DeploymentRow): DeploymentRecord<S> => ({
  model: r.model,
  state: JSON.parse(r.state) as S,
  updatedAt: r.updated_at,
  revision: r.revision,
});

function toVersion(r: VersionRow): VersionRecord {
  return {
    model: r.model,
    version: r.version,
    sha256: r.sha256,
    size: r.size,
    createdAt: r.created_at,
    signature: JSON.parse(r.signature) as Signature,
    metrics: JSON.parse(r.metrics) as Record<string, number>,
    tags: JSON.parse(r.tags) as Record<string, string>,
    lineage: JSON.parse(r.lineage) as Lineage,
    config: JSON.parse(r.config) as JsonObject,
    reference: r.reference === null ? null : (JSON.parse(r.reference) as unknown),
    referenceData: r.reference_data,
    aliases: r.aliases ? r.aliases.split(',').sort() : [], // alias names never contain ','
  };
}
