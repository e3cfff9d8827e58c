// The server's route table: every route it answers, with what the API description says of it
// (summary, parameters, request body and its schema, responses). Routes are registered through
// RouteTable (routes.ts), which refuses a route this table does not describe and a description
// whose route was never registered, so GET /openapi.json, which is generated from the registered
// entries, is the server's actual surface. The request body schemas are schemas.ts's.

import {
  ALIAS_REQUEST, DATATYPES, DEPLOYMENT_REQUEST, EVENTS_REQUEST, FEEDBACK_REQUEST, INCIDENT_REQUEST, INDEX_REQUEST, MODEL_CONTROL_REQUEST,
  OIP_INFER_REQUEST, REASON_REQUEST, SCORE_REQUEST, V1_PREDICT_REQUEST, type Schema,
} from './schemas.js';

export type Method = 'get' | 'post' | 'put' | 'delete';
export type Tag = 'OIP' | 'KServe v1' | 'Scoring' | 'Monitoring' | 'Admin' | 'Model control' | 'Server';

export interface Response {
  readonly description: string;
  readonly schema?: Schema;
  /** Default application/json. */
  readonly contentType?: string;
}

export interface RequestBody {
  readonly required: boolean;
  /** Content types and their schema (JSON bodies) or a description of the bytes. */
  readonly content: Readonly<Record<string, Schema>>;
  /**
   * 'schema': the POST route helper validates the JSON body with the application/json schema before
   * the route's code runs. 'parser': documented here, checked by the body's own parser (see
   * schemas.ts for why), which a test holds to the schema. 'bytes': not JSON.
   */
  readonly checkedBy: 'schema' | 'parser' | 'bytes';
}

export interface Operation {
  readonly method: Method;
  /** The uWS pattern the route is registered under (`:name` parameters). */
  readonly pattern: string;
  /** The path as clients write it, when it differs from the pattern (v1 `:predict`). */
  readonly path?: string;
  readonly summary: string;
  readonly description?: string;
  readonly tag: Tag;
  /** Behind the admin bearer token. */
  readonly admin?: boolean;
  readonly query?: Readonly<Record<string, { readonly description: string; readonly schema: Schema }>>;
  readonly body?: RequestBody;
  readonly responses: Readonly<Record<number, Response>>;
  /** A WebSocket upgrade (GET with Upgrade: websocket). */
  readonly websocket?: boolean;
}

// Response shapes.

export const ERROR: Schema = {
  type: 'object',
  required: ['error'],
  properties: { error: { type: 'string', description: 'What was wrong, precisely.' } },
};
const tensor = (withData: boolean): Schema => ({
  type: 'object',
  required: ['name', 'datatype', 'shape', ...(withData ? ['data'] : [])],
  properties: {
    name: { type: 'string' },
    datatype: { enum: [...DATATYPES] },
    shape: { type: 'array', items: { type: 'integer' }, description: withData ? 'The tensor\'s shape.' : '-1 where the model leaves a dimension dynamic.' },
    ...(withData ? { data: { type: 'array', items: { type: ['number', 'boolean', 'string'] } } } : {}),
  },
});
const SERVER_METADATA: Schema = {
  type: 'object',
  properties: { name: { type: 'string' }, version: { type: 'string' }, extensions: { type: 'array', items: { type: 'string' } } },
};
const MODEL_METADATA: Schema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    versions: { type: 'array', items: { type: 'string' } },
    platform: { type: 'string' },
    inputs: { type: 'array', items: tensor(false) },
    outputs: { type: 'array', items: tensor(false) },
  },
};
const READINESS: Schema = { type: 'object', properties: { name: { type: 'string' }, ready: { type: 'boolean' } } };
const INFER_RESPONSE: Schema = {
  type: 'object',
  properties: {
    model_name: { type: 'string' },
    model_version: { type: 'string' },
    id: { type: 'string', description: 'The request id: the request\'s own, or generated.' },
    outputs: { type: 'array', items: tensor(true) },
  },
};
const PREDICT_RESPONSE: Schema = {
  type: 'object',
  properties: {
    predictions: { type: 'array', description: 'One entry per instance: its outputs (an object when the model has several).' },
    model_name: { type: 'string' },
    model_version: { type: 'string' },
    request_id: { type: 'string' },
  },
};
const SCORE_RESPONSE: Schema = {
  type: 'object',
  properties: {
    request_id: { type: 'string' },
    model: { type: 'string' },
    model_version: { type: 'string' },
    variant: { type: 'string', description: 'The deployment variant that answered (default, direct, stable, canary, a, ...).' },
    score: { type: ['number', 'null'] },
    entity: { type: 'object', description: 'With debug: the entity ids.' },
    features: { type: 'object', description: 'With debug: each feature\'s value and where it came from.' },
  },
};
const EVENTS_RESPONSE: Schema = {
  type: 'object',
  properties: { accepted: { type: 'integer' }, ignored: { type: 'integer' }, duplicates: { type: 'integer' }, ids: { type: 'array', items: { type: 'string' } } },
};
const FEEDBACK_RESPONSE: Schema = {
  type: 'object',
  properties: {
    received: { type: 'integer' },
    joined: { type: 'integer' },
    unknown: { type: 'integer' },
    unknown_ids: { type: 'array', items: { type: 'string' } },
    rejected: { type: 'integer' },
    rejected_items: { type: 'array', items: { type: 'object', properties: { request_id: { type: 'string' }, label: { type: 'number' }, reason: { type: 'string' } } } },
  },
};
const INDEX_RESPONSE: Schema = {
  type: 'array',
  items: {
    type: 'object',
    required: ['name', 'version', 'state', 'reason'],
    properties: { name: { type: 'string' }, version: { type: 'string' }, state: { enum: ['READY', 'LOADING', 'UNAVAILABLE'] }, reason: { type: 'string' } },
  },
};
const LOADED: Schema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    versions: { type: 'array', items: { type: 'integer' } },
    ignored_parameters: { type: 'array', items: { type: 'string' }, description: 'Load parameters accepted and ignored.' },
  },
};
const REGISTERED: Schema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    version: { type: 'integer' },
    sha256: { type: 'string' },
    features: { type: ['array', 'null'], items: { type: 'string' }, description: 'MLflow archives: the feature names the signature gave.' },
  },
};
const OBJECT = (description: string): Schema => ({ type: 'object', description });

const ok = (description: string, schema?: Schema): Response => ({ description, ...(schema !== undefined ? { schema } : {}) });
const E = {
  400: { description: 'Bad request: malformed JSON or a body the schema refuses.', schema: ERROR },
  401: { description: 'No admin bearer token.', schema: ERROR },
  403: { description: 'A wrong admin token, or a cross-site origin that is not allowed.', schema: ERROR },
  404: { description: 'Unknown model, version, alias or job.', schema: ERROR },
  409: { description: 'Conflicts with the current state (said how).', schema: ERROR },
  413: { description: 'The body is larger than the limit.', schema: ERROR },
  415: { description: 'Wrong content type.', schema: ERROR },
  422: { description: 'Well-formed, but not what the model or the registry takes (shape, datatype, values, a model file that is not ONNX).', schema: ERROR },
  429: { description: 'The version\'s queue is full; retry after Retry-After.', schema: ERROR },
  500: { description: 'A server fault (the message says which).', schema: ERROR },
  503: { description: 'Not ready, shutting down, or a store unavailable; retry after Retry-After.', schema: ERROR },
  504: { description: 'The request missed its deadline.', schema: ERROR },
  507: { description: 'The data dir is out of space.', schema: ERROR },
} as const satisfies Record<number, Response>;
const errors = (...codes: (keyof typeof E)[]): Record<number, Response> => Object.fromEntries(codes.map((c) => [c, E[c]]));
const INFER_ERRORS = errors(400, 403, 404, 413, 415, 422, 429, 500, 503, 504);
const ADMIN_ERRORS = errors(401, 403, 404);

const json = (schema: Schema, checkedBy: RequestBody['checkedBy'] = 'schema', required = true): RequestBody => ({ required, content: { 'application/json': schema }, checkedBy });
const optionalJson = (schema: Schema): RequestBody => json(schema, 'schema', false);

const MONITORING_QUERY = {
  version: { description: 'The version (default: the one serving requests that name none).', schema: { type: 'string' } },
};

export const OPERATIONS: readonly Operation[] = [
  // Open Inference Protocol.
  { method: 'get', pattern: '/v2', tag: 'OIP', summary: 'Server metadata', responses: { 200: ok('Name, version and extensions.', SERVER_METADATA) } },
  { method: 'get', pattern: '/v2/', tag: 'OIP', summary: 'Server metadata (the same as /v2)', responses: { 200: ok('Name, version and extensions.', SERVER_METADATA) } },
  { method: 'get', pattern: '/v2/health/live', tag: 'OIP', summary: 'Liveness', responses: { 200: ok('The process answers.', { type: 'object', properties: { live: { const: true } } }) } },
  {
    method: 'get', pattern: '/v2/health/ready', tag: 'OIP', summary: 'Readiness',
    description: 'Ready when every loaded version is ready and the server is not shutting down; a degraded feature store is reported, not unready.',
    responses: { 200: ok('Ready.', { type: 'object', properties: { ready: { type: 'boolean' }, degraded: { type: 'string' } } }), 503: ok('Not ready.', { type: 'object', properties: { ready: { const: false } } }) },
  },
  { method: 'get', pattern: '/v2/models/:model', tag: 'OIP', summary: 'Model metadata (its highest version)', responses: { 200: ok('Inputs and outputs with datatype and shape.', MODEL_METADATA), 404: E[404] } },
  { method: 'get', pattern: '/v2/models/:model/versions/:version', tag: 'OIP', summary: 'Model version metadata', responses: { 200: ok('Inputs and outputs with datatype and shape.', MODEL_METADATA), 404: E[404] } },
  { method: 'get', pattern: '/v2/models/:model/ready', tag: 'OIP', summary: 'Model readiness', responses: { 200: ok('Ready.', READINESS), 503: ok('Loaded, not ready.', READINESS), 404: E[404] } },
  { method: 'get', pattern: '/v2/models/:model/versions/:version/ready', tag: 'OIP', summary: 'Model version readiness', responses: { 200: ok('Ready.', READINESS), 503: ok('Loaded, not ready.', READINESS), 404: E[404] } },
  {
    method: 'post', pattern: '/v2/models/:model/infer', tag: 'OIP', summary: 'Inference (the deployment picks the version)',
    body: json(OIP_INFER_REQUEST, 'parser'),
    responses: { 200: ok('The outputs (all, or those asked for).', INFER_RESPONSE), ...INFER_ERRORS },
  },
  {
    method: 'post', pattern: '/v2/models/:model/versions/:version/infer', tag: 'OIP', summary: 'Inference on a named version',
    body: json(OIP_INFER_REQUEST, 'parser'),
    responses: { 200: ok('The outputs (all, or those asked for).', INFER_RESPONSE), ...INFER_ERRORS },
  },
  // KServe v1.
  { method: 'get', pattern: '/v1/models', tag: 'KServe v1', summary: 'Models served', responses: { 200: ok('Their names.', { type: 'object', properties: { models: { type: 'array', items: { type: 'string' } } } }) } },
  { method: 'get', pattern: '/v1/models/:model', tag: 'KServe v1', summary: 'Model readiness', responses: { 200: ok('Ready.', READINESS), 503: ok('Loaded, not ready.', READINESS), 404: E[404] } },
  {
    method: 'post', pattern: '/v1/models/:model', path: '/v1/models/{model}:predict', tag: 'KServe v1', summary: 'Predict (KServe v1 / TF Serving style)',
    body: json(V1_PREDICT_REQUEST, 'parser'),
    responses: { 200: ok('One prediction per instance.', PREDICT_RESPONSE), ...INFER_ERRORS },
  },
  {
    method: 'post', pattern: '/v1/models/:model/versions/:version', path: '/v1/models/{model}/versions/{version}:predict', tag: 'KServe v1', summary: 'Predict on a named version',
    body: json(V1_PREDICT_REQUEST, 'parser'),
    responses: { 200: ok('One prediction per instance.', PREDICT_RESPONSE), ...INFER_ERRORS },
  },
  // Entity scoring and realtime features.
  {
    method: 'post', pattern: '/v1/score/:model', tag: 'Scoring', summary: 'Score an entity: its features resolved online, then the model',
    body: json(SCORE_REQUEST),
    responses: { 200: ok('The score and the version that gave it.', SCORE_RESPONSE), ...INFER_ERRORS },
  },
  {
    method: 'post', pattern: '/v1/events', tag: 'Scoring', summary: 'Realtime events for windowed features',
    body: json(EVENTS_REQUEST, 'parser'),
    responses: { 200: ok('What was stored.', EVENTS_RESPONSE), ...errors(400, 403, 413, 415, 422, 503) },
  },
  {
    method: 'get', pattern: '/v1/stream', tag: 'Scoring', websocket: true, summary: 'WebSocket: pipelined scoring and events',
    description: 'Upgrade to a WebSocket. JSON text frames: {"id", "model", "version"?, "inputs", "outputs"?} (an OIP request) answered by {"id", "model_version", "outputs"} as batches complete, or {"id", "event", "entity", ...} answered like POST /v1/events; errors are {"id", "error", "status"}.',
    responses: { 101: ok('Switching protocols.'), 403: E[403], 426: { description: 'A GET without the WebSocket upgrade headers.', schema: ERROR }, 503: E[503] },
  },
  // Monitoring.
  { method: 'get', pattern: '/metrics', tag: 'Monitoring', summary: 'Prometheus metrics', responses: { 200: { description: 'Prometheus text exposition.', contentType: 'text/plain; version=0.0.4' } } },
  { method: 'get', pattern: '/v1/monitoring', tag: 'Monitoring', summary: 'Monitored models and the prediction log\'s health', responses: { 200: ok('Models, versions, which one serves.', OBJECT('{"models", "prediction_log"}')) } },
  {
    method: 'get', pattern: '/v1/monitoring/:model', tag: 'Monitoring', summary: 'Monitoring snapshot of a version over a window',
    query: { ...MONITORING_QUERY, window: { description: 'all (default), 1h, 24h or 7d.', schema: { enum: ['all', '1h', '24h', '7d'] } } },
    responses: { 200: ok('Performance, drift, predictions, latency, volume, SLA, queue and open alerts.', OBJECT('The snapshot.')), ...errors(400, 404) },
  },
  {
    method: 'get', pattern: '/v1/monitoring/:model/history', tag: 'Monitoring', summary: 'Per-minute history of a version',
    query: {
      ...MONITORING_QUERY,
      from: { description: 'ISO time or epoch ms (default 24 h ago).', schema: { type: 'string' } },
      to: { description: 'ISO time or epoch ms (default now).', schema: { type: 'string' } },
    },
    responses: { 200: ok('History points.', OBJECT('{"model", "version", "from", "to", "points"}')), ...errors(400, 404, 503) },
  },
  {
    method: 'post', pattern: '/v1/feedback', tag: 'Monitoring', summary: 'Delayed labels, joined to logged predictions by request id',
    body: json(FEEDBACK_REQUEST),
    responses: { 200: ok('How many joined; unknown and rejected ids.', FEEDBACK_RESPONSE), 422: ok('Every label was rejected.', FEEDBACK_RESPONSE), ...errors(400, 403, 413, 415, 503) },
  },
  { method: 'get', pattern: '/dashboard', tag: 'Monitoring', summary: 'Live monitoring dashboard', responses: { 200: { description: 'The page.', contentType: 'text/html' } } },
  // Admin.
  { method: 'get', pattern: '/admin/models', tag: 'Admin', admin: true, summary: 'Registered models', responses: { 200: ok('Models with their latest version and aliases.', OBJECT('{"models"}')), ...ADMIN_ERRORS } },
  { method: 'get', pattern: '/admin/models/:name', tag: 'Admin', admin: true, summary: 'A model: versions (signature, metrics, lineage, config) and deployment', responses: { 200: ok('The model.', OBJECT('{"model", "versions", "deployment"}')), ...ADMIN_ERRORS } },
  {
    method: 'post', pattern: '/admin/models/:name/versions', tag: 'Admin', admin: true, summary: 'Register a version',
    description: 'An ONNX file (application/octet-stream), or a tar.gz of an MLflow model folder with the onnx flavor (application/gzip): its ONNX file is the artifact, its signature names the features, MLmodel is kept as lineage. X-Scoreline-Source names where the file came from (recorded, never read).',
    body: {
      required: true,
      checkedBy: 'bytes',
      content: {
        'application/octet-stream': { type: 'string', contentMediaType: 'application/octet-stream', description: 'The ONNX model file.' },
        'application/gzip': { type: 'string', contentMediaType: 'application/gzip', description: 'A tar.gz of an MLflow model folder (also application/x-tar+gzip, application/x-gzip, application/x-tar).' },
      },
    },
    responses: { 201: ok('Registered.', REGISTERED), 200: ok('The same bytes were registered already.', REGISTERED), ...ADMIN_ERRORS, ...errors(400, 409, 413, 415, 422, 507) },
  },
  {
    method: 'put', pattern: '/admin/models/:name/versions/:version/reference', tag: 'Admin', admin: true, summary: 'Freeze a version\'s drift reference from a CSV',
    body: { required: true, checkedBy: 'bytes', content: { 'text/csv': { type: 'string', description: 'The model\'s feature columns (and its label) with a header.' } } },
    responses: { 200: ok('Rows read and the reference AUC.', OBJECT('{"model", "version", "rows", "reference_auc", "features"}')), ...ADMIN_ERRORS, ...errors(400, 413, 422) },
  },
  {
    method: 'put', pattern: '/admin/models/:name/aliases/:alias', tag: 'Admin', admin: true, summary: 'Point an alias at a version',
    body: json(ALIAS_REQUEST),
    responses: { 200: ok('The alias and the recorded move.', OBJECT('{"alias", "version", "event"}')), ...ADMIN_ERRORS, 400: E[400] },
  },
  { method: 'get', pattern: '/admin/models/:name/aliases/:alias', tag: 'Admin', admin: true, summary: 'An alias and its history', responses: { 200: ok('Where it points and its moves.', OBJECT('{"model", "alias", "version", "history"}')), ...ADMIN_ERRORS } },
  {
    method: 'get', pattern: '/admin/alerts', tag: 'Admin', admin: true, summary: 'Alerts: firing, pending, history',
    query: { model: { description: 'Only this model\'s.', schema: { type: 'string' } }, limit: { description: 'History entries (1-1000, default 100).', schema: { type: 'integer' } } },
    responses: { 200: ok('Alerts.', OBJECT('{"firing", "pending", "history"}')), ...ADMIN_ERRORS },
  },
  { method: 'post', pattern: '/admin/retrain/:name', tag: 'Admin', admin: true, summary: 'Start a retraining job', body: optionalJson(REASON_REQUEST), responses: { 202: ok('The outcome and the job.', OBJECT('{"outcome", "job"}')), ...ADMIN_ERRORS, ...errors(400, 409, 422) } },
  { method: 'get', pattern: '/admin/retrain/:name', tag: 'Admin', admin: true, summary: 'Retraining status of a model', responses: { 200: ok('Its configuration and jobs.', OBJECT('The status.')), ...ADMIN_ERRORS } },
  { method: 'post', pattern: '/admin/incidents', tag: 'Admin', admin: true, summary: 'Report an incident (may trigger retraining)', body: json(INCIDENT_REQUEST), responses: { 201: ok('The incident and what it triggered.', OBJECT('{"incident", "outcome", "job"}')), ...ADMIN_ERRORS, 400: E[400] } },
  { method: 'get', pattern: '/admin/incidents', tag: 'Admin', admin: true, summary: 'Incidents', query: { model: { description: 'Only this model\'s.', schema: { type: 'string' } } }, responses: { 200: ok('Incidents.', OBJECT('{"incidents"}')), ...ADMIN_ERRORS } },
  {
    method: 'get', pattern: '/admin/jobs', tag: 'Admin', admin: true, summary: 'Retraining jobs',
    query: {
      model: { description: 'Only this model\'s.', schema: { type: 'string' } },
      state: { description: 'Only jobs in this state.', schema: { type: 'string' } },
      limit: { description: '1-1000 (default 50).', schema: { type: 'integer' } },
    },
    responses: { 200: ok('Jobs, newest first.', OBJECT('{"jobs"}')), ...ADMIN_ERRORS, 400: E[400] },
  },
  { method: 'get', pattern: '/admin/jobs/:id', tag: 'Admin', admin: true, summary: 'A retraining job with its log', responses: { 200: ok('The job.', OBJECT('The job.')), ...ADMIN_ERRORS } },
  {
    method: 'put', pattern: '/admin/deployments/:name', tag: 'Admin', admin: true, summary: 'Deploy: direct, blue-green, canary, A/B or shadow',
    description: 'Every version is loaded, warmed up, checked against the input contract, run on sample inputs and held to the latency budget before traffic moves.',
    body: json(DEPLOYMENT_REQUEST),
    responses: { 200: ok('The deployment.', OBJECT('The deployment view.')), ...ADMIN_ERRORS, ...errors(400, 409, 422) },
  },
  { method: 'get', pattern: '/admin/deployments/:name', tag: 'Admin', admin: true, summary: 'A deployment: traffic, step statistics, analysis, history', responses: { 200: ok('The deployment view.', OBJECT('The deployment view.')), ...ADMIN_ERRORS } },
  {
    method: 'delete', pattern: '/admin/deployments/:name', tag: 'Admin', admin: true, summary: 'Remove a deployment (the model serves its highest version again)',
    query: { reason: { description: 'Recorded in the history.', schema: { type: 'string' } } },
    responses: { 200: ok('The deployment view, without a strategy.', OBJECT('The deployment view.')), ...ADMIN_ERRORS, 409: E[409] },
  },
  { method: 'post', pattern: '/admin/deployments/:name/promote', tag: 'Admin', admin: true, summary: 'Promote: canary step, blue-green switch, shadow to primary', body: optionalJson(REASON_REQUEST), responses: { 200: ok('The deployment.', OBJECT('The deployment view.')), ...ADMIN_ERRORS, ...errors(400, 409, 422) } },
  { method: 'post', pattern: '/admin/deployments/:name/rollback', tag: 'Admin', admin: true, summary: 'Roll back', body: optionalJson(REASON_REQUEST), responses: { 200: ok('The deployment.', OBJECT('The deployment view.')), ...ADMIN_ERRORS, ...errors(400, 409, 422) } },
  // Triton model control.
  {
    method: 'post', pattern: '/v2/repository/index', tag: 'Model control', admin: true, summary: 'Repository index (Triton)',
    body: optionalJson(INDEX_REQUEST),
    responses: { 200: ok('Every version in the repository or loaded, with its state.', INDEX_RESPONSE), ...errors(400, 401, 403) },
  },
  {
    method: 'post', pattern: '/v2/repository/models/:model/load', tag: 'Model control', admin: true, summary: 'Load a model (Triton)',
    description: 'Imports the model\'s version folders from the repository and loads them (a model only the registry has: its latest version).',
    body: optionalJson(MODEL_CONTROL_REQUEST),
    responses: { 200: ok('The versions loaded.', LOADED), ...ADMIN_ERRORS, ...errors(400, 409, 422) },
  },
  {
    method: 'post', pattern: '/v2/repository/models/:model/unload', tag: 'Model control', admin: true, summary: 'Unload a model (Triton)',
    description: 'Unloads every version once queued requests are answered; refused (409) while the model has a deployment.',
    body: optionalJson(MODEL_CONTROL_REQUEST),
    responses: { 200: ok('The versions unloaded.', LOADED), ...ADMIN_ERRORS, ...errors(400, 409) },
  },
  // This document.
  { method: 'get', pattern: '/openapi.json', tag: 'Server', summary: 'This API description (OpenAPI 3.1)', responses: { 200: ok('The document.', { type: 'object' }) } },
];

/** What a path parameter is, by its name in the patterns. */
export const PATH_PARAMETERS: Readonly<Record<string, string>> = {
  model: 'A model name.',
  name: 'A model name.',
  version: 'A version number.',
  alias: 'An alias name (lowercase; not "latest").',
  id: 'A retraining job id.',
};
