// The content-addressed artifact store: model bytes kept under <dataDir>/artifacts/<sha[0:2]>/<sha>.onnx
// (and a version's reference rows as <sha>.csv), written atomically (temp file, fsync, rename) and
// verified against their sha256 on every read, so a file changed or removed behind the registry's
// back is refused, never served. Refusals are counted here and reported through an optional
// callback, for the server's metrics and log.

import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { artifactMissing, artifactTampered, badRequest, type ScorelineError } from '../errors.js';

export interface StoredArtifact {
  readonly sha256: string;
  readonly path: string;
  readonly size: number;
}

export interface ArtifactCounters {
  /** Reads refused because the file no longer hashes to its address. */
  readonly tampered: number;
  /** Reads refused because the file is gone. */
  readonly missing: number;
}

export interface ArtifactStoreOptions {
  /** Called on every refused read, before the error is thrown (e.g. to log it). */
  onRefusal?: (error: ScorelineError, sha256: string) => void;
}

/** What an artifact holds, and so its file extension: an ONNX model, or reference rows (CSV). */
export type ArtifactKind = 'onnx' | 'csv';

const SHA256 = /^[0-9a-f]{64}$/;

export const sha256Of = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export class ArtifactStore {
  readonly root: string;
  readonly #onRefusal: ArtifactStoreOptions['onRefusal'];
  #tampered = 0;
  #missing = 0;

  constructor(dataDir: string, options: ArtifactStoreOptions = {}) {
    this.root = join(dataDir, 'artifacts');
    this.#onRefusal = options.onRefusal;
    mkdirSync(this.root, { recursive: true, mode: 0o700 });
  }

  /** Where the artifact with this hash lives (whether or not it exists). */
  path(sha256: string, kind: ArtifactKind = 'onnx'): string {
    // The hash becomes a path: anything but 64 lowercase hex digits could walk out of the store.
    if (!SHA256.test(sha256)) throw badRequest(`'${sha256}' is not a sha256 (64 lowercase hex digits)`);
    return join(this.root, sha256.slice(0, 2), `${sha256}.${kind}`);
  }

  has(sha256: string, kind: ArtifactKind = 'onnx'): boolean {
    return existsSync(this.path(sha256, kind));
  }

  /**
   * Stores the bytes under their hash. Idempotent: an intact copy is left alone; a missing or
   * damaged one is replaced, since the bytes that belong at this address are known exactly.
   */
  put(bytes: Uint8Array, kind: ArtifactKind = 'onnx'): StoredArtifact {
    const sha256 = sha256Of(bytes);
    const path = this.path(sha256, kind);
    const stored = { sha256, path, size: bytes.length };
    if (existsSync(path) && statSync(path).size === bytes.length && sha256Of(readFileSync(path)) === sha256) return stored;

    const dir = join(this.root, sha256.slice(0, 2));
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temp = join(dir, `.${sha256}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      // Private like the rest of the data dir: a model's weights are the team's, not the machine's.
      const fd = openSync(temp, 'wx', 0o600);
      try {
        for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temp, path);
    } catch (e) {
      rmSync(temp, { force: true });
      throw e;
    }
    syncDir(dir);
    return stored;
  }

  /** The artifact's bytes, re-hashed: throws ARTIFACT_MISSING or ARTIFACT_TAMPERED (and counts it) when they are not what was stored. */
  read(sha256: string, kind: ArtifactKind = 'onnx'): Buffer {
    const path = this.path(sha256, kind);
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      this.#missing++;
      throw this.#refuse(artifactMissing(sha256, path), sha256);
    }
    const actual = sha256Of(bytes);
    if (actual !== sha256) {
      this.#tampered++;
      throw this.#refuse(artifactTampered(sha256, actual), sha256);
    }
    return bytes;
  }

  counters(): ArtifactCounters {
    return { tampered: this.#tampered, missing: this.#missing };
  }

  #refuse(error: ScorelineError, sha256: string): ScorelineError {
    try {
      this.#onRefusal?.(error, sha256);
    } catch {
      // A failing observer must not replace the refusal itself.
    }
    return error;
  }
}

/** Makes a rename durable: the directory entry is on disk once this returns. */
function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
