// Every error scoreline reports to a client or an operator: a stable code, an HTTP status and a
// message that says precisely what was wrong. Made by small factory functions so call sites read
// as sentences; mapped to HTTP in exactly one place (server/http.ts).

export type ErrorCode =
  | 'BAD_REQUEST'
  | 'INVALID_JSON'
  | 'EMPTY_BODY'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'BODY_TOO_LARGE'
  | 'TOO_MANY_ROWS'
  | 'MODEL_NOT_FOUND'
  | 'VERSION_NOT_FOUND'
  | 'ROUTE_NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'SIGNATURE_MISMATCH'
  | 'VALUE_OUT_OF_RANGE'
  | 'FEATURE_UNAVAILABLE'
  | 'STORE_UNAVAILABLE'
  | 'DEPLOYMENT_INVALID'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'FOREIGN_ORIGIN'
  | 'QUEUE_FULL'
  | 'NOT_READY'
  | 'DEADLINE_EXCEEDED'
  | 'INFERENCE_FAILED'
  | 'SHUTTING_DOWN'
  | 'CONFIG_INVALID'
  | 'MODEL_INVALID'
  | 'UNSUPPORTED_MODEL_FORMAT'
  | 'NOT_ONNX'
  | 'ARTIFACT_TAMPERED'
  | 'ARTIFACT_MISSING'
  | 'ALIAS_NOT_FOUND'
  | 'CONFLICT'
  | 'JOB_NOT_FOUND'
  | 'RETRAINING_NOT_CONFIGURED'
  | 'INTERNAL'
  | 'INSUFFICIENT_STORAGE'
  | 'LABEL_INVALID'
  | 'EXTERNAL_DATA'
  | 'EXPLANATION_UNAVAILABLE'
  | 'TOO_MANY_REJECTS'
  | 'API_KEY_REQUIRED'
  | 'API_KEY_INVALID'
  | 'SCOPE_MISSING'
  | 'MLFLOW_MODEL_INVALID'
  | 'UPGRADE_REQUIRED';

const STATUS: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  INVALID_JSON: 400,
  EMPTY_BODY: 400,
  UNSUPPORTED_MEDIA_TYPE: 415,
  BODY_TOO_LARGE: 413,
  TOO_MANY_ROWS: 413,
  MODEL_NOT_FOUND: 404,
  VERSION_NOT_FOUND: 404,
  ROUTE_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  SIGNATURE_MISMATCH: 422,
  VALUE_OUT_OF_RANGE: 422,
  FEATURE_UNAVAILABLE: 422,
  STORE_UNAVAILABLE: 503,
  DEPLOYMENT_INVALID: 422,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  FOREIGN_ORIGIN: 403,
  QUEUE_FULL: 429,
  NOT_READY: 503,
  DEADLINE_EXCEEDED: 504,
  INFERENCE_FAILED: 500,
  SHUTTING_DOWN: 503,
  CONFIG_INVALID: 500,
  MODEL_INVALID: 500,
  // 422, not 415: the request's content type is right (octet-stream), its content is not a model we load.
  UNSUPPORTED_MODEL_FORMAT: 422,
  NOT_ONNX: 422,
  // The registry's own storage is corrupt: a server-side fault, not the client's.
  ARTIFACT_TAMPERED: 500,
  ARTIFACT_MISSING: 500,
  ALIAS_NOT_FOUND: 404,
  CONFLICT: 409,
  JOB_NOT_FOUND: 404,
  RETRAINING_NOT_CONFIGURED: 422,
  INTERNAL: 500,
  // The server's own disk is full: the request was fine and can be retried once space is freed.
  INSUFFICIENT_STORAGE: 507,
  LABEL_INVALID: 422,
  // Like NOT_ONNX: the upload is a model file, just not one the server will load.
  EXTERNAL_DATA: 422,
  // The request is fine; the version lacks what explanations are measured against (reference rows).
  EXPLANATION_UNAVAILABLE: 422,
  // A batch run whose input had more unusable rows than its caller accepts.
  TOO_MANY_REJECTS: 422,
  // No credentials, or credentials that name no key: 401 (the client must authenticate); a valid key
  // without the scope the route needs: 403 (authenticating again does not help).
  API_KEY_REQUIRED: 401,
  API_KEY_INVALID: 401,
  SCOPE_MISSING: 403,
  // Like NOT_ONNX: an MLflow model folder that is well-formed, but not one the server can serve as it is.
  MLFLOW_MODEL_INVALID: 422,
  UPGRADE_REQUIRED: 426,
};

export class ScorelineError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Seconds a client should wait before retrying (429 / 503), sent as Retry-After. */
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, message: string, retryAfter?: number) {
    super(message);
    this.name = 'ScorelineError';
    this.code = code;
    this.status = STATUS[code];
    this.retryAfter = retryAfter;
  }

  /** The code clients see (`"code"` in every error body), stable across releases: SCORELINE_<CODE>. */
  get publicCode(): string {
    return `SCORELINE_${this.code}`;
  }

  /** `"error":...,"code":...` (no braces), the start of every error body. */
  get jsonFields(): string {
    return `"error":${JSON.stringify(this.message)},"code":"SCORELINE_${this.code}"`;
  }
}

/** Every code with its HTTP status, for the documentation of the API. */
export const ERROR_STATUS: Readonly<Record<ErrorCode, number>> = STATUS;

export const isScorelineError = (e: unknown): e is ScorelineError => e instanceof ScorelineError;

export const badRequest = (message: string) => new ScorelineError('BAD_REQUEST', message);
export const invalidJson = (detail: string) => new ScorelineError('INVALID_JSON', `request body is not valid JSON: ${detail}`);
export const emptyBody = () => new ScorelineError('EMPTY_BODY', 'request body is empty; expected a JSON object');
export const unsupportedMediaType = (got: string, want = 'application/json') =>
  new ScorelineError('UNSUPPORTED_MEDIA_TYPE', `content-type '${got}' is not supported; send ${want}`);
export const bodyTooLarge = (limit: number) => new ScorelineError('BODY_TOO_LARGE', `request body exceeds the limit of ${limit} bytes`);
export const tooManyRows = (rows: number, limit: number) =>
  new ScorelineError(
    'TOO_MANY_ROWS',
    `the request holds ${rows} rows, more than limits.maxRowsPerRequest (${limit}); split it or raise the limit`,
  );
export const modelNotFound = (model: string) => new ScorelineError('MODEL_NOT_FOUND', `model '${model}' is not known to this server`);
export const versionNotFound = (model: string, version: string) =>
  new ScorelineError('VERSION_NOT_FOUND', `model '${model}' has no version '${version}'`);
export const routeNotFound = (method: string, url: string) =>
  new ScorelineError('ROUTE_NOT_FOUND', `no route for ${method.toUpperCase()} ${url}`);
export const methodNotAllowed = (method: string, url: string) =>
  new ScorelineError('METHOD_NOT_ALLOWED', `${method.toUpperCase()} is not allowed on ${url}`);
export const signatureMismatch = (message: string) => new ScorelineError('SIGNATURE_MISMATCH', message);
/** A well-formed value the model's datatype cannot hold (1e39 as FP32, 2^31 as INT32); the message names the field. */
export const valueOutOfRange = (message: string) => new ScorelineError('VALUE_OUT_OF_RANGE', message);
export const featureUnavailable = (message: string) => new ScorelineError('FEATURE_UNAVAILABLE', message);
export const unauthorized = () =>
  new ScorelineError('UNAUTHORIZED', 'this endpoint needs an admin bearer token (Authorization: Bearer <token>)');
export const forbidden = () => new ScorelineError('FORBIDDEN', 'the admin token is not valid');
export const foreignOrigin = (origin: string) =>
  new ScorelineError('FOREIGN_ORIGIN', `requests from origin '${origin}' are not allowed; list it in cors.allowedOrigins to allow it`);
export const storeUnavailable = (message: string) => new ScorelineError('STORE_UNAVAILABLE', message, 1);
/** The shared store (PostgreSQL) did not answer: nothing was changed, and the same request can be sent again. */
export const storeUnreachable = (location: string, cause: string) =>
  new ScorelineError('STORE_UNAVAILABLE', `the store (${location}) cannot be reached: ${cause}; nothing was changed, retry later`, 5);
export const queueFull = (model: string, version: string, limit: number) =>
  new ScorelineError('QUEUE_FULL', `the queue of model '${model}' version ${version} is full (${limit} rows waiting); retry later`, 1);
export const notReady = (what: string) => new ScorelineError('NOT_READY', `${what} is not ready`, 1);
export const deadlineExceeded = (ms: number) =>
  new ScorelineError('DEADLINE_EXCEEDED', `the request did not complete within its deadline of ${ms} ms`);
export const inferenceFailed = (message: string) => new ScorelineError('INFERENCE_FAILED', `inference failed: ${message}`);
export const shuttingDown = () => new ScorelineError('SHUTTING_DOWN', 'the server is shutting down', 1);
export const configInvalid = (message: string) => new ScorelineError('CONFIG_INVALID', message);
export const modelInvalid = (message: string) => new ScorelineError('MODEL_INVALID', message);
const TO_ONNX =
  'convert it to ONNX with skl2onnx (scikit-learn), onnxmltools (XGBoost, LightGBM, CatBoost) or hummingbird ' +
  '(tree models compiled to tensor operations); torch.onnx.export or tf2onnx for neural networks';
/** `what` names the format, e.g. "a Python pickle (protocol 4)". */
export const unsupportedFormat = (source: string, what: string) =>
  new ScorelineError(
    'UNSUPPORTED_MODEL_FORMAT',
    `${source} is ${what}; it is refused because loading a pickle executes arbitrary code from the file. ` +
      `To serve the model, ${TO_ONNX}, and register the .onnx file`,
  );
export const notOnnx = (source: string, detail: string) =>
  new ScorelineError('NOT_ONNX', `${source} is not an ONNX model (${detail}); scoreline serves ONNX only. To serve the model, ${TO_ONNX}`);
export const artifactTampered = (sha256: string, actual: string, where = 'on disk') =>
  new ScorelineError(
    'ARTIFACT_TAMPERED',
    `artifact ${sha256} was modified ${where} (its content now hashes to ${actual}); refusing to load it`,
  );
export const artifactMissing = (sha256: string, path: string) =>
  new ScorelineError('ARTIFACT_MISSING', `artifact ${sha256} is missing from the artifact store (${path})`);
export const aliasNotFound = (model: string, alias: string) =>
  new ScorelineError('ALIAS_NOT_FOUND', `model '${model}' has no alias '${alias}'`);
export const conflict = (message: string) => new ScorelineError('CONFLICT', message);
export const jobNotFound = (id: string) => new ScorelineError('JOB_NOT_FOUND', `no retraining job '${id}'`);
export const retrainingNotConfigured = (model: string) =>
  new ScorelineError(
    'RETRAINING_NOT_CONFIGURED',
    `model '${model}' has no retraining configuration (a \`retraining\` section in its model.yaml or in the server config's retraining.${model})`,
  );
export const internal = (message = 'internal error') => new ScorelineError('INTERNAL', message);

/**
 * A realtime events write the store did not acknowledge. `unknown`: it was sent and may have been
 * applied (the store timed out or the connection dropped after sending), so only a retry with the
 * same ids is safe; `not_stored`: it was refused before anything was sent. `ids` are the events'
 * ids in body order, generated ones included, for that retry.
 */
export class EventWriteError extends ScorelineError {
  constructor(
    message: string,
    readonly state: 'unknown' | 'not_stored',
    readonly ids: readonly string[],
  ) {
    super('STORE_UNAVAILABLE', message, 1);
  }
}

export const eventsNotStored = (why: string, ids: readonly string[]) =>
  new EventWriteError(`events were not stored: ${why}`, 'not_stored', ids);
export const eventsMaybeStored = (why: string, ids: readonly string[]) =>
  new EventWriteError(
    `${why}; the write may have been applied; retry with the same ${ids.length === 1 ? 'id' : 'ids'}, it is idempotent`,
    'unknown',
    ids,
  );
/** An error from the filesystem or SQLite that means the disk (or the user's quota) is full. */
export const isDiskFull = (e: unknown): boolean => {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
};
/** A write into the data dir refused for lack of space; `cause` is the filesystem's or SQLite's error. */
export const insufficientStorage = (dataDir: string, cause: unknown) =>
  new ScorelineError(
    'INSUFFICIENT_STORAGE',
    `the data dir ${dataDir} has no space left (ENOSPC: ${((cause as Error)?.message ?? String(cause)).split('\n')[0]}); free space there and retry`,
  );
export const labelInvalid = (message: string) => new ScorelineError('LABEL_INVALID', message);
/** `described` names the tensors, e.g. "tensor 'w' (initializer of the main graph) at 'weights.bin'". */
export const externalDataRefused = (source: string, count: number, described: string) =>
  new ScorelineError(
    'EXTERNAL_DATA',
    `${source} keeps the data of ${count === 1 ? described : `${count} tensors (${described})`} in a file ` +
      "outside the model (ONNX external data); external data is not accepted: the registry's sha256 covers only the model " +
      "file, and the data would be read from the server's disk. Save the model with every tensor inside the file: " +
      'onnx.save_model(model, path, save_as_external_data=False), or, for a model already saved with external data, ' +
      'm = onnx.load(path) (reads the data files next to it), onnx.external_data_helper.convert_model_from_external_data(m), ' +
      'then onnx.save_model(m, path, save_as_external_data=False), and register that file',
  );
/** A version that cannot explain its scores; the message says what it lacks and how to provide it. */
export const explanationUnavailable = (message: string) => new ScorelineError('EXPLANATION_UNAVAILABLE', message);
/** A batch scoring run past its --max-rejects limit. */
export const tooManyRejects = (message: string) => new ScorelineError('TOO_MANY_REJECTS', message);
export const apiKeyRequired = () =>
  new ScorelineError('API_KEY_REQUIRED', 'this endpoint needs an API key (Authorization: Bearer <key> or x-api-key: <key>)');
/** Never names the key that was sent: error bodies and logs must not carry secrets. */
export const apiKeyInvalid = (why = 'the API key is not valid') => new ScorelineError('API_KEY_INVALID', why);
export const scopeMissing = (keyId: string, scope: string) =>
  new ScorelineError('SCOPE_MISSING', `API key '${keyId}' does not have the '${scope}' scope this endpoint needs`);
export const requestIdInvalid = (why: string) => new ScorelineError('BAD_REQUEST', `x-request-id ${why}`);
/** An MLflow model folder (MLmodel, its flavor, its signature) that cannot be served as it is. */
export const mlflowInvalid = (source: string, detail: string) =>
  new ScorelineError('MLFLOW_MODEL_INVALID', `${source} is an MLflow model scoreline cannot serve: ${detail}`);
/** A plain GET on a WebSocket route. */
export const upgradeRequired = (url: string) =>
  new ScorelineError(
    'UPGRADE_REQUIRED',
    `${url} is a WebSocket endpoint: send GET with Upgrade: websocket (and Connection: Upgrade, Sec-WebSocket-Key, Sec-WebSocket-Version: 13)`,
  );
