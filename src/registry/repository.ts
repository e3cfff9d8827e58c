// Reads a model repository in Triton's layout: DIR/<model>/<version>/model.onnx with an optional
// DIR/<model>/model.yaml. Versions are positive integers. Every artifact is hashed (sha256) as it is
// read, so what is served is exactly what was found. The reference rows model.yaml names (relative
// to the model's folder) are read here too, so the registry can keep them with the versions: the
// repository is the operator's own folder, the one place scoreline takes such a path from.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { configInvalid } from '../errors.js';
import { parseModelConfig, type ModelConfig } from '../config.js';

export interface RepositoryVersion {
  readonly version: number;
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
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
}

export const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const VERSION_DIR = /^[1-9][0-9]{0,8}$/;

export function sha256File(path: string): { sha256: string; size: number } {
  const bytes = readFileSync(path);
  return { sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
}

/** The reference file a model.yaml names, resolved as the server resolves it (relative to the model's folder). */
function readReference(modelDir: string, reference: string | undefined): RepositoryReference | null {
  if (reference === undefined) return null;
  const path = resolve(modelDir, reference);
  // A missing file is the server's to report when it freezes the drift baseline, not a reason to refuse the model.
  if (!existsSync(path) || !statSync(path).isFile()) return null;
  return { path, bytes: readFileSync(path) };
}

export function scanRepository(dir: string): RepositoryScan {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw configInvalid(`model repository ${root} does not exist or is not a directory`);
  }
  const models: RepositoryModel[] = [];
  const skipped: string[] = [];
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
      const path = join(modelDir, v.name, 'model.onnx');
      if (!existsSync(path)) {
        skipped.push(`${entry.name}/${v.name}: no model.onnx`);
        continue;
      }
      versions.push({ version: Number(v.name), path, ...sha256File(path) });
    }
    if (versions.length === 0) {
      skipped.push(`${entry.name}: no version folder with a model.onnx`);
      continue;
    }
    versions.sort((a, b) => a.version - b.version);
    models.push({ name: entry.name, dir: modelDir, config, versions, reference: readReference(modelDir, config.reference) });
  }
  return { models, skipped };
}
