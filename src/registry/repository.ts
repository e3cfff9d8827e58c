// Reads a model repository in Triton's layout: DIR/<model>/<version>/model.onnx with an optional
// DIR/<model>/model.yaml. A version folder may instead hold an MLflow model (MLmodel with the onnx
// flavor, see mlflow.ts): its flavor's model file is the version's artifact. Versions are positive
// integers. Every artifact is hashed (sha256) as it is read, so what is served is exactly what was
// found; a cache keyed by file size and modification time spares a poller re-hashing files that did
// not change. The reference rows model.yaml names (relative to the model's folder) are read here too,
// so the registry can keep them with the versions: the repository is the operator's own folder, the
// one place scoreline takes such a path from.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { configInvalid, isScorelineError } from '../errors.js';
import { parseModelConfig, type ModelConfig } from '../config.js';
import { isMlflowFolder, mlflowModelFile } from './mlflow.js';

export interface RepositoryVersion {
  readonly version: number;
  /** The ONNX file: model.onnx, or an MLflow folder's flavor file. */
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
  /** The version's MLflow model folder, when it is one (read in full when the version is registered). */
  readonly mlflowDir?: string;
}

/** A version folder that cannot be registered as it is (an MLflow model without ONNX, say). */
export interface RepositoryRefusal {
  readonly model: string;
  readonly version: number;
  readonly path: string;
  readonly code: string;
  readonly reason: string;
}

export interface RepositoryReference {
  /** The file model.yaml's `reference` names, absolute. */
  readonly path: string;
  readonly bytes: Buffer;
}

export interface RepositoryModel {
  readonly name: string;
  readonly dir: string;
  readonly config: ModelConfig;
  readonly versions: readonly RepositoryVersion[];
  /** The reference rows model.yaml names; null without a `reference`, or when its file is not there. */
  readonly reference: RepositoryReference | null;
}

export interface RepositoryScan {
  readonly models: readonly RepositoryModel[];
  /** Entries that were skipped, with the reason, for the log. */
  readonly skipped: readonly string[];
  /** Version folders holding a model the registry would refuse: reported like the registry's own refusals. */
  readonly refused: readonly RepositoryRefusal[];
}

/** Hashes of files already read, by path, valid while size and modification time stay the same. */
export type HashCache = Map<string, { size: number; mtimeMs: number; sha256: string }>;

export const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const VERSION_DIR = /^[1-9][0-9]{0,8}$/;

export function sha256File(path: string, cache?: HashCache): { sha256: string; size: number } {
  const st = cache === undefined ? null : statSync(path);
  const known = st === null ? undefined : cache!.get(path);
  if (st !== null && known !== undefined && known.size === st.size && known.mtimeMs === st.mtimeMs)
    return { sha256: known.sha256, size: known.size };
  const bytes = readFileSync(path);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (st !== null) cache!.set(path, { size: st.size, mtimeMs: st.mtimeMs, sha256 });
  return { sha256, size: bytes.length };
}

/** The reference file a model.yaml names, resolved as the server resolves it (relative to the model's folder). */
function readReference(modelDir: string, reference: string | undefined): RepositoryReference | null {
  if (reference === undefined) return null;
  const path = resolve(modelDir, reference);
  // A missing file is the server's to report when it freezes the drift baseline, not a reason to refuse the model.
  if (!existsSync(path) || !statSync(path).isFile()) return null;
  return { path, bytes: readFileSync(path) };
}

export function scanRepository(dir: string, cache?: HashCache): RepositoryScan {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw configInvalid(`model repository ${root} does not exist or is not a directory`);
  }
  const models: RepositoryModel[] = [];
  const skipped: string[] = [];
  const refused: RepositoryRefusal[] = [];
  for (const entry of readdirSync(root, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    if (!entry.isDirectory()) continue;
    if (!MODEL_NAME.test(entry.name)) {
      skipped.push(`${entry.name}: not a valid model name (letters, digits, '.', '_', '-')`);
      continue;
    }
    const modelDir = join(root, entry.name);
    const yamlPath = ['model.yaml', 'model.yml', 'model.json'].map((f) => join(modelDir, f)).find((p) => existsSync(p));
    const config = yamlPath ? parseModelConfig(readFileSync(yamlPath, 'utf8'), yamlPath) : {};
    const versions: RepositoryVersion[] = [];
    for (const v of readdirSync(modelDir, { withFileTypes: true })) {
      if (!v.isDirectory()) continue;
      if (!VERSION_DIR.test(v.name)) {
        skipped.push(`${entry.name}/${v.name}: version folders are positive integers`);
        continue;
      }
      const versionDir = join(modelDir, v.name);
      if (isMlflowFolder(versionDir)) {
        try {
          const path = join(versionDir, mlflowModelFile(versionDir));
          versions.push({ version: Number(v.name), path, ...sha256File(path, cache), mlflowDir: versionDir });
        } catch (e) {
          if (!isScorelineError(e)) throw e;
          refused.push({ model: entry.name, version: Number(v.name), path: versionDir, code: e.code, reason: e.message });
        }
        continue;
      }
      const path = join(versionDir, 'model.onnx');
      if (!existsSync(path)) {
        skipped.push(`${entry.name}/${v.name}: no model.onnx (nor an MLflow MLmodel)`);
        continue;
      }
      versions.push({ version: Number(v.name), path, ...sha256File(path, cache) });
    }
    if (versions.length === 0) {
      if (!refused.some((r) => r.model === entry.name))
        skipped.push(`${entry.name}: no version folder with a model.onnx or an MLflow model`);
      continue;
    }
    versions.sort((a, b) => a.version - b.version);
    models.push({ name: entry.name, dir: modelDir, config, versions, reference: readReference(modelDir, config.reference) });
  }
  return { models, skipped, refused };
}
