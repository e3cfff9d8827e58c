// The registry's record shapes: what ModelRegistry stores and returns for models, versions, aliases
// and deployments, and the options its calls take. Plain data, JSON-serialisable as the admin API
// sends it.

import type { ScorelineError } from '../errors.js';
import type { TensorSpec } from '../onnx/index.js';

export type JsonObject = { readonly [key: string]: unknown };

export interface Signature {
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
}

export interface Lineage {
  /** The file the version was registered from, read by the registry's caller itself (a model repository, a local file). */
  readonly source?: string;
  /** The path an uploader says the bytes came from (the admin API's X-Scoreline-Source): metadata only, never read. */
  readonly declaredSource?: string;
  readonly trainingJobId?: string;
  readonly dataWindow?: unknown;
  readonly [key: string]: unknown;
}

export interface VersionRecord {
  readonly model: string;
  readonly version: number;
  readonly sha256: string;
  readonly size: number;
  readonly createdAt: string;
  readonly signature: Signature;
  readonly metrics: Readonly<Record<string, number>>;
  readonly tags: Readonly<Record<string, string>>;
  readonly lineage: Lineage;
  readonly config: JsonObject;
  /** Drift baseline; null until monitoring writes one. */
  readonly reference: unknown;
  /** sha256 of the reference rows (model.yaml `reference`, a CSV) the registry keeps with the version; null when it has none. */
  readonly referenceData: string | null;
  /** Aliases pointing at this version, sorted. */
  readonly aliases: readonly string[];
}

export interface ModelRecord {
  readonly name: string;
  readonly description: string;
  readonly createdAt: string;
  readonly latestVersion: number;
  readonly versionCount: number;
  readonly aliases: Readonly<Record<string, number>>;
}

export interface RegisterOptions {
  /** Register under this version; without it, the next after the highest. */
  version?: number;
  /** The file the caller read the bytes from: named in errors and kept as lineage.source. */
  source?: string;
  /**
   * A path the sender of the bytes claims they came from: named in errors and kept as
   * lineage.declaredSource, never opened. Ignored when `source` is given.
   */
  declaredSource?: string;
  /**
   * The reference rows of the model.yaml `reference` (CSV bytes), kept in the artifact store with
   * the version; a version registered again with the same bytes gets them if it has none.
   */
  referenceData?: Uint8Array;
  /** Used when this registration creates the model. */
  description?: string;
  tags?: Record<string, string>;
  metrics?: Record<string, number>;
  lineage?: Lineage;
  config?: JsonObject;
}

export interface RegisterResult {
  readonly name: string;
  readonly version: number;
  readonly sha256: string;
  readonly size: number;
  /** False when these bytes were already registered: the existing version is returned. */
  readonly created: boolean;
}

export interface ImportSkip {
  readonly model: string;
  readonly version: number;
  readonly path: string;
  readonly code: string;
  readonly reason: string;
}

export interface ImportResult {
  readonly imported: readonly RegisterResult[];
  /** Repository versions already in the registry with the same bytes. */
  readonly unchanged: readonly RegisterResult[];
  /** Repository versions refused (version number taken by other bytes, not ONNX, ...); the registry keeps what it had. */
  readonly skipped: readonly ImportSkip[];
}

export interface ChangeOptions {
  reason?: string;
  actor?: string;
}

export interface AliasEvent {
  readonly model: string;
  readonly alias: string;
  /** null when the alias was created. */
  readonly from: number | null;
  /** null when the alias was deleted. */
  readonly to: number | null;
  readonly at: string;
  readonly reason: string;
  readonly actor: string;
}

export interface VersionUpdate {
  /** Merged into the stored metrics; a null value removes the key. */
  metrics?: Record<string, number | null>;
  /** Merged into the stored tags; a null value removes the key. */
  tags?: Record<string, string | null>;
  /** Replaces the stored reference (drift baseline). */
  reference?: unknown;
  /** Replaces the reference rows it was frozen from (CSV bytes, stored as a content-addressed artifact). */
  referenceData?: Uint8Array;
}

export interface DeploymentRecord<S = unknown> {
  readonly model: string;
  readonly state: S;
  readonly updatedAt: string;
  /** 1 for the first deployment of the model, one more for every change. */
  readonly revision: number;
}

export interface DeploymentEvent<S = unknown> {
  readonly model: string;
  readonly at: string;
  readonly action: string;
  readonly from: S | null;
  /** null: the deployment was removed. */
  readonly to: S | null;
  readonly reason: string;
}

export interface RegistryCounters {
  /** Artifact loads refused because the file no longer matches its sha256. */
  readonly tamperedRefusals: number;
  /** Artifact loads refused because the file is gone. */
  readonly missingRefusals: number;
}

export interface RegistryOptions {
  /** Clock for created/updated/at timestamps (ISO 8601). */
  now?: () => Date;
  /** Called on every refused artifact load (tampered or missing), e.g. to log it. */
  onArtifactRefusal?: (error: ScorelineError, sha256: string) => void;
}
