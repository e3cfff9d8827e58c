// The registry in PostgreSQL: models, versions, aliases with their history, deployments with their
// history, and the artifacts themselves as content-addressed bytea rows, re-hashed on every load.
// onnxruntime opens files, so a version's artifact is also cached under <data-dir>/artifacts by its
// hash; the cached copy is re-hashed before every use and fetched again from the database when it
// is missing or damaged. Writes of one model are serialised by an advisory lock and notify every
// replica on commit. The semantics are ModelRegistry's: the same rules, errors and records.

import { existsSync, readFileSync } from 'node:fs';
import {
  artifactMissing,
  artifactTampered,
  aliasNotFound,
  badRequest,
  conflict,
  isScorelineError,
  modelNotFound,
  versionNotFound,
  type ScorelineError,
} from '../../errors.js';
import { refuseExternalData } from '../../onnx/index.js';
import {
  ArtifactStore,
  checkAliasName,
  deploymentMoved,
  deploymentRevisionMatches,
  LATEST,
  mergePatch,
  prepareRegistration,
  REMOVED_DEPLOYMENT,
  repositoryRegistration,
  sha256Of,
  versionTaken,
  identicalToVersion,
  versionNumberTaken,
  VERSION_COLUMNS,
  versionRow,
  type AliasEvent,
  type ArtifactKind,
  type ChangeOptions,
  type DeploymentEvent,
  type DeploymentRecord,
  type ImportResult,
  type ImportSkip,
  type JsonObject,
  type Lineage,
  type ModelRecord,
  type RegisterOptions,
  type RegisterResult,
  type RegistryCounters,
  type RepositoryScan,
  type Signature,
  type VersionRecord,
  type VersionUpdate,
} from '../../registry/index.js';
import type { Registry, SaveDeploymentOptions } from '../types.js';
import { lockKey, notifyChange, type Database, type Queryable } from './database.js';

export interface PostgresRegistryOptions {
  /** Clock for created/updated/at timestamps. */
  now?: () => Date;
  /** Called on every refused artifact load (tampered or missing in the database). */
  onArtifactRefusal?: (error: ScorelineError, sha256: string) => void;
  /** Called when the local cached copy of an artifact was damaged and was fetched again. */
  onCacheRepaired?: (sha256: string, path: string) => void;
  /** The replica making changes, named in their notifications. */
  origin?: string | null;
}

interface VersionRow {
  model: string;
  version: number;
  sha256: string;
  size: string;
  created_at: string;
  signature: Signature;
  metrics: Record<string, number>;
  tags: Record<string, string>;
  lineage: Lineage;
  config: JsonObject;
  reference: unknown;
  reference_data: string | null;
  aliases: string[] | null;
}

/** Bytes per read of an artifact (16 MB of hex text per row). */
const SLICE = 8 * 1024 * 1024;

const VERSION_SELECT = `
  SELECT v.*, (SELECT array_agg(a.alias ORDER BY a.alias COLLATE "C") FROM aliases a WHERE a.model = v.model AND a.version = v.version) AS aliases
  FROM versions v`;

export class PostgresRegistry implements Registry {
  readonly #db: Database;
  readonly #cache: ArtifactStore;
  readonly #now: () => Date;
  readonly #opts: PostgresRegistryOptions;
  #tampered = 0;
  #missing = 0;

  constructor(db: Database, dataDir: string, opts: PostgresRegistryOptions = {}) {
    this.#db = db;
    this.#cache = new ArtifactStore(dataDir);
    this.#now = opts.now ?? (() => new Date());
    this.#opts = opts;
  }

  async register(name: string, bytes: Uint8Array, options: RegisterOptions = {}): Promise<RegisterResult> {
    const prepared = prepareRegistration(name, bytes, options);
    const { requested, source, sha256, referenceData } = prepared;
    return this.#db.tx(async (c) => {
      await lockKey(c, `model:${name}`);
      const at = this.#stamp();
      await c.query('INSERT INTO models (name, description, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING', [
        name,
        options.description ?? '',
        at,
      ]);
      const same = (await c.query<{ version: number }>('SELECT version FROM versions WHERE model = $1 AND sha256 = $2', [name, sha256]))
        .rows[0];
      if (same) {
        if (requested !== undefined && requested !== same.version) throw identicalToVersion(source, name, sha256, same.version, requested);
        await putArtifact(c, bytes, sha256); // restores the bytes if they were damaged
        if (referenceData !== undefined) await this.#attachReferenceData(c, name, same.version, referenceData);
        return { name, version: same.version, sha256, size: bytes.length, created: false };
      }
      let version = requested;
      if (version === undefined) {
        const max = (await c.query<{ v: number | null }>('SELECT max(version) AS v FROM versions WHERE model = $1', [name])).rows[0]!;
        version = (max.v ?? 0) + 1;
      } else {
        const taken = (await c.query<{ sha256: string }>('SELECT sha256 FROM versions WHERE model = $1 AND version = $2', [name, version]))
          .rows[0];
        if (taken) throw versionNumberTaken(name, version, taken.sha256, sha256);
      }
      await putArtifact(c, bytes, sha256);
      const referenceSha = referenceData === undefined ? null : await putArtifact(c, referenceData);
      await c.query(
        `INSERT INTO versions (${VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
        versionRow(name, version, prepared, bytes.length, at, options, referenceSha),
      );
      await notifyChange(c, { kind: 'version', model: name, version, origin: this.#opts.origin ?? null });
      return { name, version, sha256, size: bytes.length, created: true };
    });
  }

  async importRepository(scan: RepositoryScan): Promise<ImportResult> {
    const imported: RegisterResult[] = [];
    const unchanged: RegisterResult[] = [];
    const skipped: ImportSkip[] = [...scan.refused];
    for (const model of scan.models) {
      for (const v of model.versions) {
        // Every replica imports the repository at start: same number and hash (from the scan) is not read again.
        const known = (
          await this.#db.query<{ size: string; reference_data: string | null }>(
            'SELECT size, reference_data FROM versions WHERE model = $1 AND version = $2 AND sha256 = $3',
            [model.name, v.version, v.sha256],
          )
        )[0];
        if (known) {
          const reference = model.reference;
          if (reference !== null && known.reference_data === null) {
            await this.#db.tx(async (c) => {
              await lockKey(c, `model:${model.name}`);
              await this.#attachReferenceData(c, model.name, v.version, reference.bytes);
            });
          }
          unchanged.push({ name: model.name, version: v.version, sha256: v.sha256, size: Number(known.size), created: false });
          continue;
        }
        const taken = (
          await this.#db.query<{ sha256: string }>('SELECT sha256 FROM versions WHERE model = $1 AND version = $2', [model.name, v.version])
        )[0];
        if (taken !== undefined && taken.sha256 !== v.sha256) {
          skipped.push(versionTaken(model.name, v.version, v.path, taken.sha256, v.sha256));
          continue;
        }
        try {
          const { bytes, options } = repositoryRegistration(model, v);
          const result = await this.register(model.name, bytes, options);
          (result.created ? imported : unchanged).push(result);
        } catch (e) {
          if (!isScorelineError(e) || e.status >= 500) throw e;
          skipped.push({ model: model.name, version: v.version, path: v.path, code: e.code, reason: e.message });
        }
      }
    }
    return { imported, unchanged, skipped };
  }

  async getModel(name: string): Promise<ModelRecord> {
    const model = (await this.listModels(name))[0];
    if (!model) throw modelNotFound(name);
    return model;
  }

  async listModels(only?: string): Promise<ModelRecord[]> {
    const args = only === undefined ? [] : [only];
    const rows = await this.#db.query<{ name: string; description: string; created_at: string; latest: number; n: string }>(
      `SELECT m.name, m.description, m.created_at, max(v.version) AS latest, count(v.version) AS n
       FROM models m LEFT JOIN versions v ON v.model = m.name ${only === undefined ? '' : 'WHERE m.name = $1'}
       GROUP BY m.name ORDER BY m.name COLLATE "C"`,
      args,
    );
    const aliases = await this.#db.query<{ model: string; alias: string; version: number }>(
      `SELECT model, alias, version FROM aliases ${only === undefined ? '' : 'WHERE model = $1'} ORDER BY alias COLLATE "C"`,
      args,
    );
    return rows.map((r) => ({
      name: r.name,
      description: r.description,
      createdAt: r.created_at,
      latestVersion: r.latest,
      versionCount: Number(r.n),
      aliases: Object.fromEntries(aliases.filter((a) => a.model === r.name).map((a) => [a.alias, a.version])),
    }));
  }

  async getVersion(name: string, version: number): Promise<VersionRecord> {
    return this.#version(this.#db, name, version);
  }

  async listVersions(name: string): Promise<VersionRecord[]> {
    await this.#requireModel(this.#db, name);
    return (await this.#db.query<VersionRow>(`${VERSION_SELECT} WHERE v.model = $1 ORDER BY v.version`, [name])).map(toVersion);
  }

  async resolve(name: string, versionOrAlias: string): Promise<VersionRecord> {
    await this.#requireModel(this.#db, name);
    if (/^[0-9]+$/.test(versionOrAlias)) return this.getVersion(name, Number(versionOrAlias));
    if (versionOrAlias === LATEST) return this.getVersion(name, (await this.getModel(name)).latestVersion);
    const row = (
      await this.#db.query<{ version: number }>('SELECT version FROM aliases WHERE model = $1 AND alias = $2', [name, versionOrAlias])
    )[0];
    if (!row) throw aliasNotFound(name, versionOrAlias);
    return this.getVersion(name, row.version);
  }

  async load(name: string, version: number): Promise<{ record: VersionRecord; bytes: Buffer }> {
    const record = await this.getVersion(name, version);
    const bytes = await this.#fetch(record.sha256);
    refuseExternalData(bytes, `version ${version} of model '${name}'`);
    return { record, bytes };
  }

  async artifactFile(name: string, version: number): Promise<{ record: VersionRecord; path: string }> {
    const record = await this.getVersion(name, version);
    const path = await this.#cached(record.sha256, 'onnx', `version ${version} of model '${name}'`);
    return { record, path };
  }

  async referenceData(name: string, version: number): Promise<Buffer | null> {
    const { referenceData } = await this.getVersion(name, version);
    return referenceData === null ? null : this.#fetch(referenceData);
  }

  async setAlias(name: string, alias: string, version: number, options: ChangeOptions = {}): Promise<AliasEvent> {
    checkAliasName(alias);
    return this.#db.tx(async (c) => {
      await lockKey(c, `model:${name}`);
      await this.#version(c, name, version);
      const current = await aliasVersion(c, name, alias);
      const event = this.#aliasEvent(name, alias, current, version, options);
      if (current === version) return event;
      await c.query(
        `INSERT INTO aliases (model, alias, version, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at`,
        [name, alias, version, event.at],
      );
      await recordAlias(c, event);
      await notifyChange(c, { kind: 'alias', model: name, version, origin: this.#opts.origin ?? null });
      return event;
    });
  }

  async deleteAlias(name: string, alias: string, options: ChangeOptions = {}): Promise<AliasEvent> {
    return this.#db.tx(async (c) => {
      await lockKey(c, `model:${name}`);
      await this.#requireModel(c, name);
      const current = await aliasVersion(c, name, alias);
      if (current === null) throw aliasNotFound(name, alias);
      await c.query('DELETE FROM aliases WHERE model = $1 AND alias = $2', [name, alias]);
      const event = this.#aliasEvent(name, alias, current, null, options);
      await recordAlias(c, event);
      await notifyChange(c, { kind: 'alias', model: name, origin: this.#opts.origin ?? null });
      return event;
    });
  }

  async aliasHistory(name: string, alias?: string): Promise<AliasEvent[]> {
    await this.#requireModel(this.#db, name);
    const rows = await this.#db.query<{
      model: string;
      alias: string;
      from_version: number | null;
      to_version: number | null;
      at: string;
      reason: string;
      actor: string;
    }>(
      `SELECT * FROM alias_history WHERE model = $1 ${alias === undefined ? '' : 'AND alias = $2'} ORDER BY id`,
      alias === undefined ? [name] : [name, alias],
    );
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

  async updateVersion(name: string, version: number, update: VersionUpdate): Promise<VersionRecord> {
    return this.#db.tx(async (c) => {
      await lockKey(c, `model:${name}`);
      const current = await this.#version(c, name, version);
      const reference = 'reference' in update ? (update.reference ?? null) : current.reference;
      const referenceData = update.referenceData !== undefined ? await putArtifact(c, update.referenceData) : current.referenceData;
      await c.query(
        'UPDATE versions SET metrics = $1, tags = $2, reference = $3, reference_data = $4, revision = revision + 1 WHERE model = $5 AND version = $6',
        [
          JSON.stringify(mergePatch(current.metrics, update.metrics)),
          JSON.stringify(mergePatch(current.tags, update.tags)),
          reference === null ? null : JSON.stringify(reference),
          referenceData,
          name,
          version,
        ],
      );
      const referenceChanged = 'reference' in update || update.referenceData !== undefined;
      await notifyChange(c, { kind: referenceChanged ? 'reference' : 'version', model: name, version, origin: this.#opts.origin ?? null });
      return this.#version(c, name, version);
    });
  }

  async saveDeployment<S>(name: string, state: S, options: SaveDeploymentOptions): Promise<DeploymentRecord<S>> {
    const json = JSON.stringify(state);
    if (json === undefined || json === REMOVED_DEPLOYMENT) throw badRequest('a deployment state must be JSON');
    return this.#db.tx(async (c) => {
      await lockKey(c, `deployment:${name}`);
      await this.#requireModel(c, name);
      const at = this.#stamp();
      const before = (
        await c.query<{ state: string; revision: number }>('SELECT state::text AS state, revision FROM deployments WHERE model = $1', [
          name,
        ])
      ).rows[0];
      const current = before?.revision ?? 0;
      const removed = before === undefined || before.state === REMOVED_DEPLOYMENT;
      if (options.expectRevision !== undefined && !deploymentRevisionMatches(options.expectRevision, current, removed))
        throw deploymentMoved(name, options.expectRevision, current);
      await c.query(
        `INSERT INTO deployments (model, state, updated_at, revision) VALUES ($1, $2, $3, $4)
         ON CONFLICT (model) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at, revision = excluded.revision`,
        [name, json, at, current + 1],
      );
      await c.query('INSERT INTO deployment_history (model, at, action, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5, $6)', [
        name,
        at,
        options.action,
        removed ? null : before.state,
        json,
        options.reason ?? '',
      ]);
      await notifyChange(c, { kind: 'deployment', model: name, origin: this.#opts.origin ?? null });
      return { model: name, state: JSON.parse(json) as S, updatedAt: at, revision: current + 1 };
    });
  }

  async removeDeployment(name: string, options: SaveDeploymentOptions): Promise<number> {
    return this.#db.tx(async (c) => {
      await lockKey(c, `deployment:${name}`);
      await this.#requireModel(c, name);
      const before = (
        await c.query<{ state: string; revision: number }>('SELECT state::text AS state, revision FROM deployments WHERE model = $1', [
          name,
        ])
      ).rows[0];
      if (before === undefined || before.state === REMOVED_DEPLOYMENT) throw conflict(`model '${name}' has no deployment`);
      if (options.expectRevision !== undefined && options.expectRevision !== before.revision)
        throw deploymentMoved(name, options.expectRevision, before.revision);
      const at = this.#stamp();
      // The row stays (state JSON null) so that the next deployment's revision is higher than every replica's.
      await c.query('UPDATE deployments SET state = $1, updated_at = $2, revision = $3 WHERE model = $4', [
        REMOVED_DEPLOYMENT,
        at,
        before.revision + 1,
        name,
      ]);
      await c.query('INSERT INTO deployment_history (model, at, action, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5, $6)', [
        name,
        at,
        options.action,
        before.state,
        REMOVED_DEPLOYMENT,
        options.reason ?? '',
      ]);
      await notifyChange(c, { kind: 'deployment', model: name, origin: this.#opts.origin ?? null });
      return before.revision + 1;
    });
  }

  async getDeployment<S = unknown>(name: string): Promise<DeploymentRecord<S> | undefined> {
    await this.#requireModel(this.#db, name);
    const row = (
      await this.#db.query<DeploymentRow>('SELECT * FROM deployments WHERE model = $1 AND state::text <> $2', [name, REMOVED_DEPLOYMENT])
    )[0];
    return row && toDeployment<S>(row);
  }

  async listDeployments<S = unknown>(): Promise<DeploymentRecord<S>[]> {
    return (
      await this.#db.query<DeploymentRow>('SELECT * FROM deployments WHERE state::text <> $1 ORDER BY model COLLATE "C"', [
        REMOVED_DEPLOYMENT,
      ])
    ).map((r) => toDeployment<S>(r));
  }

  async deploymentHistory<S = unknown>(name: string): Promise<DeploymentEvent<S>[]> {
    await this.#requireModel(this.#db, name);
    const rows = await this.#db.query<{
      model: string;
      at: string;
      action: string;
      from_state: S | null;
      to_state: S | null;
      reason: string;
    }>('SELECT * FROM deployment_history WHERE model = $1 ORDER BY id', [name]);
    return rows.map((r) => ({ model: r.model, at: r.at, action: r.action, reason: r.reason, from: r.from_state, to: r.to_state }));
  }

  counters(): RegistryCounters {
    return { tamperedRefusals: this.#tampered, missingRefusals: this.#missing };
  }

  /** The artifact's bytes from the database, re-hashed; refusals are counted and reported. */
  async #fetch(sha256: string): Promise<Buffer> {
    // In slices: a bytea comes back as hex text, and hundreds of MB of it would not fit in one
    // JavaScript string. One snapshot, so the slices are of one value.
    const bytes = await this.#db.tx(async (c) => {
      await c.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      const head = (await c.query<{ n: number }>('SELECT octet_length(bytes) AS n FROM artifacts WHERE sha256 = $1', [sha256])).rows[0];
      if (head === undefined) return null;
      const parts: Buffer[] = [];
      for (let at = 0; at < head.n; at += SLICE) {
        const r = await c.query<{ part: Buffer }>('SELECT substring(bytes FROM $2 FOR $3) AS part FROM artifacts WHERE sha256 = $1', [
          sha256,
          at + 1,
          SLICE,
        ]);
        parts.push(r.rows[0]!.part);
      }
      return Buffer.concat(parts, head.n);
    });
    if (bytes === null) {
      this.#missing++;
      throw this.#refuse(artifactMissing(sha256, `${this.#db.location}, table artifacts`), sha256);
    }
    const actual = sha256Of(bytes);
    if (actual !== sha256) {
      this.#tampered++;
      throw this.#refuse(artifactTampered(sha256, actual, `in the store (${this.#db.location})`), sha256);
    }
    return bytes;
  }

  /** A verified local copy of the artifact: the cached file if it still hashes right, else fetched and cached. */
  async #cached(sha256: string, kind: ArtifactKind, what: string): Promise<string> {
    const path = this.#cache.path(sha256, kind);
    if (existsSync(path)) {
      const bytes = readFileSync(path);
      if (sha256Of(bytes) === sha256) {
        refuseExternalData(bytes, what);
        return path;
      }
      this.#opts.onCacheRepaired?.(sha256, path);
    }
    const bytes = await this.#fetch(sha256);
    refuseExternalData(bytes, what);
    this.#cache.put(bytes, kind);
    return path;
  }

  #refuse(error: ScorelineError, sha256: string): ScorelineError {
    try {
      this.#opts.onArtifactRefusal?.(error, sha256);
    } catch {
      // A failing observer must not replace the refusal itself.
    }
    return error;
  }

  async #version(c: Queryable | Database, name: string, version: number): Promise<VersionRecord> {
    const row = (await query<VersionRow>(c, `${VERSION_SELECT} WHERE v.model = $1 AND v.version = $2`, [name, version]))[0];
    if (!row) {
      await this.#requireModel(c, name);
      throw versionNotFound(name, String(version));
    }
    return toVersion(row);
  }

  async #requireModel(c: Queryable | Database, name: string): Promise<void> {
    if ((await query(c, 'SELECT 1 FROM models WHERE name = $1', [name])).length === 0) throw modelNotFound(name);
  }

  /** Gives the version these reference rows unless it already has some: a version's reference data never changes. */
  async #attachReferenceData(c: Queryable, name: string, version: number, bytes: Uint8Array): Promise<void> {
    const row = (
      await c.query<{ reference_data: string | null }>('SELECT reference_data FROM versions WHERE model = $1 AND version = $2', [
        name,
        version,
      ])
    ).rows[0];
    if (!row || row.reference_data !== null) return;
    const sha = await putArtifact(c, bytes);
    await c.query('UPDATE versions SET reference_data = $1, revision = revision + 1 WHERE model = $2 AND version = $3', [
      sha,
      name,
      version,
    ]);
    await notifyChange(c, { kind: 'reference', model: name, version, origin: this.#opts.origin ?? null });
  }

  #stamp(): string {
    return this.#now().toISOString();
  }

  #aliasEvent(model: string, alias: string, from: number | null, to: number | null, options: ChangeOptions): AliasEvent {
    return { model, alias, from, to, at: this.#stamp(), reason: options.reason ?? '', actor: options.actor ?? '' };
  }
}

/** Rows from a transaction's client or from the pool (whose errors are already translated). */
async function query<T extends object>(c: Queryable | Database, sql: string, params: unknown[]): Promise<T[]> {
  const r = await (c as Queryable).query(sql, params);
  return (Array.isArray(r) ? r : r.rows) as T[];
}

/** Stores the bytes under their hash; bytes stored damaged under it are replaced, since the right ones are known exactly. */
async function putArtifact(c: Queryable, bytes: Uint8Array, sha256 = sha256Of(bytes)): Promise<string> {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const present = (
    await c.query<{ ok: boolean }>("SELECT encode(sha256(bytes), 'hex') = sha256 AS ok FROM artifacts WHERE sha256 = $1", [sha256])
  ).rows[0];
  if (present?.ok) return sha256;
  await c.query(
    `INSERT INTO artifacts (sha256, size, bytes) VALUES ($1, $2, $3)
     ON CONFLICT (sha256) DO UPDATE SET bytes = excluded.bytes, size = excluded.size`,
    [sha256, bytes.length, buf],
  );
  return sha256;
}

async function aliasVersion(c: Queryable, name: string, alias: string): Promise<number | null> {
  return (
    (await c.query<{ version: number }>('SELECT version FROM aliases WHERE model = $1 AND alias = $2', [name, alias])).rows[0]?.version ??
    null
  );
}

async function recordAlias(c: Queryable, e: AliasEvent): Promise<void> {
  await c.query(
    'INSERT INTO alias_history (model, alias, from_version, to_version, at, reason, actor) VALUES ($1, $2, $3, $4, $5, $6, $7)',
    [e.model, e.alias, e.from, e.to, e.at, e.reason, e.actor],
  );
}

interface DeploymentRow {
  model: string;
  state: unknown;
  updated_at: string;
  revision: number;
}

const toDeployment = <S>(r: DeploymentRow): DeploymentRecord<S> => ({
  model: r.model,
  state: r.state as S,
  updatedAt: r.updated_at,
  revision: r.revision,
});

function toVersion(r: VersionRow): VersionRecord {
  return {
    model: r.model,
    version: r.version,
    sha256: r.sha256,
    size: Number(r.size),
    createdAt: r.created_at,
    signature: r.signature,
    metrics: r.metrics,
    tags: r.tags,
    lineage: r.lineage,
    config: r.config,
    reference: r.reference ?? null,
    referenceData: r.reference_data,
    aliases: r.aliases ?? [],
  };
}
