// The model registry: models, versions (their ONNX signature, metrics, lineage), aliases and the
// deployment history in SQLite, artifacts content-addressed by sha256 under the data dir, and the
// model repository folder it imports from (plain version folders and MLflow model folders). Uploads are judged by content (ONNX only; pickles and
// joblib dumps refused). The store module (src/store) wraps it for SQLite and PostgreSQL alike.

export type * from './records.js';
export {
  ArtifactStore,
  sha256Of,
  type ArtifactCounters,
  type ArtifactKind,
  type ArtifactStoreOptions,
  type StoredArtifact,
} from './artifacts.js';
export { prepareDataDir, type DataDirPreparation, type ModeChange } from './data-dir.js';
export { assertOnnx, detectFormat, type ModelFormat } from './format.js';
export {
  MODEL_NAME,
  scanRepository,
  sha256File,
  type HashCache,
  type RepositoryModel,
  type RepositoryReference,
  type RepositoryRefusal,
  type RepositoryScan,
  type RepositoryVersion,
} from './repository.js';
export {
  ARCHIVE_TYPES,
  isMlflowFolder,
  MLFLOW_NUMERIC_TYPES,
  MLMODEL,
  mlflowModelFile,
  readMlflowArchive,
  readMlflowFolder,
  readMlflowModel,
  type MlflowModel,
} from './mlflow.js';
export { MIGRATIONS, openDatabase, schemaVersion, type Db } from './schema.js';
export {
  ALIAS_NAME,
  checkAliasName,
  deploymentMoved,
  deploymentRevisionMatches,
  LATEST,
  MAX_VERSION,
  mergePatch,
  ModelRegistry,
  prepareRegistration,
  REMOVED_DEPLOYMENT,
  repositoryRegistration,
  versionTaken,
  identicalToVersion,
  versionNumberTaken,
  VERSION_COLUMNS,
  versionRow,
} from './store.js';
