// The server's route table: every route it answers, with who may call it (its access rule, which
// the gate enforces) and what the API description says of it (summary, parameters, request body
// and its schema, responses). Routes are registered through RouteTable (routes.ts), which refuses a
// route this table does not describe and a description whose route was never registered, so GET
// /openapi.json, which is generated from the registered entries, is the server's actual surface,
// and no route is served without an access rule. The request body schemas are schemas.ts's, the
// answers' responses.ts's.

import type { ApiKeyScope } from '../config.js';
import {
  ALIAS_REQUEST,
  DEPLOYMENT_REQUEST,
  EVENTS_REQUEST,
  FEEDBACK_REQUEST,
  INCIDENT_REQUEST,
  INDEX_REQUEST,
  MODEL_CONTROL_REQUEST,
  OIP_INFER_REQUEST,
  REASON_REQUEST,
  SCORE_REQUEST,
  V1_EXPLAIN_REQUEST,
  V1_PREDICT_REQUEST,
  type Schema,
} from './schemas.js';
import {
  ERROR,
  EVENTS_RESPONSE,
  EXPLAIN_RESPONSE,
  FEEDBACK_RESPONSE,
  INDEX_RESPONSE,
  INFER_RESPONSE,
  LOADED,
  MODEL_METADATA,
  OBJECT,
  PREDICT_RESPONSE,
  READINESS,
  REGISTERED,
  SCORE_RESPONSE,
  SERVER_METADATA,
} from './responses.js';

export { ERROR } from './responses.js';

export type Method = 'get' | 'post' | 'put' | 'delete';

/**
 * Who may call a route: `open` (health, metadata, the dashboard page, this document), `admin` (the
 * admin bearer token, checked by the admin routes themselves), `metrics` (open unless
 * auth.metricsPublic is false, then monitoring:read), `stream` (the WebSocket: a key at the upgrade,
 * then each frame the scope it uses, checked by stream.ts), or the API key scope it needs.
 */
export type Access = 'open' | 'admin' | 'metrics' | 'stream' | ApiKeyScope;
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
  /** Who may call it; the same for every operation of one route (method and pattern). */
  readonly access: Access;
  readonly query?: Readonly<Record<string, { readonly description: string; readonly schema: Schema }>>;
  readonly body?: RequestBody;
  readonly responses: Readonly<Record<number, Response>>;
  /** A WebSocket upgrade (GET with Upgrade: websocket). */
  readonly websocket?: boolean;
}

const ok = (description: string, schema?: Schema): Response => ({ description, ...(schema !== undefined ? { schema } : {}) });
const E = {
  400: { description: 'Bad request: malformed JSON or a body the schema refuses.', schema: ERROR },
  401: { description: 'No admin bearer token, or (auth.enabled) no valid API key.', schema: ERROR },
  403: {
    description: 'A wrong admin token, an API key without the scope the route needs, or a cross-site origin that is not allowed.',
    schema: ERROR,
  },
  404: { description: 'Unknown model, version, alias or job.', schema: ERROR },
  409: { description: 'Conflicts with the current state (said how).', schema: ERROR },
  413: { description: 'The body is larger than the limit.', schema: ERROR },
  415: { description: 'Wrong content type.', schema: ERROR },
  422: {
    description:
      'Well-formed, but not what the model or the registry takes (shape, datatype, values, a model file that is not ONNX, a version without reference rows to explain against).',
    schema: ERROR,
  },
  429: { description: "The version's queue is full; retry after Retry-After.", schema: ERROR },
  500: { description: 'A server fault (the message says which).', schema: ERROR },
  503: {
    description: 'Not ready, shutting down, or a store (feature store, prediction log, registry) unavailable; retry after Retry-After.',
    schema: ERROR,
  },
  504: { description: 'The request missed its deadline.', schema: ERROR },
  507: { description: 'The data dir is out of space.', schema: ERROR },
} as const satisfies Record<number, Response>;
const errors = (...codes: (keyof typeof E)[]): Record<number, Response> => Object.fromEntries(codes.map((c) => [c, E[c]]));
const INFER_ERRORS = errors(400, 401, 403, 404, 413, 415, 422, 429, 500, 503, 504);
// 503: the store (shared with other replicas) cannot be reached; nothing changed.
const ADMIN_ERRORS = errors(401, 403, 404, 503);

const json = (schema: Schema, checkedBy: RequestBody['checkedBy'] = 'schema', required = true): RequestBody => ({
  required,
  content: { 'application/json': schema },
  checkedBy,
});
const optionalJson = (schema: Schema): RequestBody => json(schema, 'schema', false);

const MONITORING_QUERY = {
  version: { description: 'The version (default: the one serving requests that name none).', schema: { type: 'string' } },
};

export const OPERATIONS: readonly Operation[] = [
  // Open Inference Protocol.
  {
    method: 'get',
    pattern: '/v2',
    access: 'open',
    tag: 'OIP',
    summary: 'Server metadata',
    responses: { 200: ok('Name, version and extensions.', SERVER_METADATA) },
  },
  {
    method: 'get',
    pattern: '/v2/',
    access: 'open',
    tag: 'OIP',
    summary: 'Server metadata (the same as /v2)',
    responses: { 200: ok('Name, version and extensions.', SERVER_METADATA) },
  },
  {
    method: 'get',
    pattern: '/v2/health/live',
    access: 'open',
    tag: 'OIP',
    summary: 'Liveness',
    responses: { 200: ok('The process answers.', { type: 'object', properties: { live: { const: true } } }) },
  },
  {
    method: 'get',
    pattern: '/v2/health/ready',
    access: 'open',
    tag: 'OIP',
    summary: 'Readiness',
    description:
      'Ready when every loaded version is ready and the server is not shutting down; a degraded feature store is reported, not unready.',
    responses: {
      200: ok('Ready.', { type: 'object', properties: { ready: { type: 'boolean' }, degraded: { type: 'string' } } }),
      503: ok('Not ready.', { type: 'object', properties: { ready: { const: false } } }),
    },
  },
  {
    method: 'get',
    pattern: '/v2/models/:model',
    access: 'open',
    tag: 'OIP',
    summary: 'Model metadata (its highest version)',
    responses: { 200: ok('Inputs and outputs with datatype and shape.', MODEL_METADATA), 404: E[404] },
  },
  {
    method: 'get',
    pattern: '/v2/models/:model/versions/:version',
    access: 'open',
    tag: 'OIP',
    summary: 'Model version metadata',
    responses: { 200: ok('Inputs and outputs with datatype and shape.', MODEL_METADATA), 404: E[404] },
  },
  {
    method: 'get',
    pattern: '/v2/models/:model/ready',
    access: 'open',
    tag: 'OIP',
    summary: 'Model readiness',
    responses: { 200: ok('Ready.', READINESS), 503: ok('Loaded, not ready.', READINESS), 404: E[404] },
  },
  {
    method: 'get',
    pattern: '/v2/models/:model/versions/:version/ready',
    access: 'open',
    tag: 'OIP',
    summary: 'Model version readiness',
    responses: { 200: ok('Ready.', READINESS), 503: ok('Loaded, not ready.', READINESS), 404: E[404] },
  },
  {
    method: 'post',
    pattern: '/v2/models/:model/infer',
    access: 'infer',
    tag: 'OIP',
    summary: 'Inference (the deployment picks the version)',
    body: json(OIP_INFER_REQUEST, 'parser'),
    responses: { 200: ok('The outputs (all, or those asked for).', INFER_RESPONSE), ...INFER_ERRORS },
  },
  {
    method: 'post',
    pattern: '/v2/models/:model/versions/:version/infer',
    access: 'infer',
    tag: 'OIP',
    summary: 'Inference on a named version',
    body: json(OIP_INFER_REQUEST, 'parser'),
    responses: { 200: ok('The outputs (all, or those asked for).', INFER_RESPONSE), ...INFER_ERRORS },
  },
  // KServe v1.
  {
    method: 'get',
    pattern: '/v1/models',
    access: 'open',
    tag: 'KServe v1',
    summary: 'Models served',
    responses: { 200: ok('Their names.', { type: 'object', properties: { models: { type: 'array', items: { type: 'string' } } } }) },
  },
  {
    method: 'get',
    pattern: '/v1/models/:model',
    access: 'open',
    tag: 'KServe v1',
    summary: 'Model readiness',
    responses: { 200: ok('Ready.', READINESS), 503: ok('Loaded, not ready.', READINESS), 404: E[404] },
  },
  {
    method: 'post',
    pattern: '/v1/models/:model',
    access: 'infer',
    path: '/v1/models/{model}:predict',
    tag: 'KServe v1',
    summary: 'Predict (KServe v1 / TF Serving style)',
    body: json(V1_PREDICT_REQUEST, 'parser'),
    responses: { 200: ok('One prediction per instance.', PREDICT_RESPONSE), ...INFER_ERRORS },
  },
  {
    method: 'post',
    pattern: '/v1/models/:model/versions/:version',
    access: 'infer',
    path: '/v1/models/{model}/versions/{version}:predict',
    tag: 'KServe v1',
    summary: 'Predict on a named version',
    body: json(V1_PREDICT_REQUEST, 'parser'),
    responses: { 200: ok('One prediction per instance.', PREDICT_RESPONSE), ...INFER_ERRORS },
  },
  // The same routes (the suffix is part of the last path segment) serve :explain.
  {
    method: 'post',
    pattern: '/v1/models/:model',
    access: 'infer',
    path: '/v1/models/{model}:explain',
    tag: 'KServe v1',
    summary: "Explain: reason codes of each instance's score",
    description:
      "Each feature's contribution to the score's margin, measured against the version's reference rows (422 without them): exact for linear models and tree ensembles, KernelSHAP otherwise.",
    body: json(V1_EXPLAIN_REQUEST, 'parser'),
    responses: { 200: ok('One explanation per instance.', EXPLAIN_RESPONSE), ...INFER_ERRORS },
  },
  {
    method: 'post',
    pattern: '/v1/models/:model/versions/:version',
    access: 'infer',
    path: '/v1/models/{model}/versions/{version}:explain',
    tag: 'KServe v1',
    summary: 'Explain on a named version',
    body: json(V1_EXPLAIN_REQUEST, 'parser'),
    responses: { 200: ok('One explanation per instance.', EXPLAIN_RESPONSE), ...INFER_ERRORS },
  },
  // Entity scoring and realtime features.
  {
    method: 'post',
    pattern: '/v1/score/:model',
    access: 'infer',
    tag: 'Scoring',
    summary: 'Score an entity: its features resolved online, then the model',
    body: json(SCORE_REQUEST),
    responses: { 200: ok('The score and the version that gave it.', SCORE_RESPONSE), ...INFER_ERRORS },
  },
  {
    method: 'post',
    pattern: '/v1/events',
    access: 'events',
    tag: 'Scoring',
    summary: 'Realtime events for windowed features',
    body: json(EVENTS_REQUEST, 'parser'),
    responses: { 200: ok('What was stored.', EVENTS_RESPONSE), ...errors(400, 403, 413, 415, 422, 503) },
  },
  {
    method: 'get',
    pattern: '/v1/stream',
    access: 'stream',
    tag: 'Scoring',
    websocket: true,
    summary: 'WebSocket: pipelined scoring and events',
    description:
      'Upgrade to a WebSocket. JSON text frames: {"id", "model", "version"?, "inputs", "outputs"?} (an OIP request) answered by {"id", "model_version", "outputs"} as batches complete, or {"id", "event", "entity", ...} answered like POST /v1/events; errors are {"id", "error", "status"}.',
    responses: {
      101: ok('Switching protocols.'),
      403: E[403],
      426: { description: 'A GET without the WebSocket upgrade headers.', schema: ERROR },
      503: E[503],
    },
  },
  // Monitoring.
  {
    method: 'get',
    pattern: '/metrics',
    access: 'metrics',
    tag: 'Monitoring',
    summary: 'Prometheus metrics',
    responses: { 200: { description: 'Prometheus text exposition.', contentType: 'text/plain; version=0.0.4' } },
  },
  {
    method: 'get',
    pattern: '/v1/monitoring',
    access: 'monitoring:read',
    tag: 'Monitoring',
    summary: "Monitored models and the prediction log's health",
    responses: { 200: ok('Models, versions, which one serves.', OBJECT('{"models", "prediction_log"}')) },
  },
  {
    method: 'get',
    pattern: '/v1/monitoring/:model',
    access: 'monitoring:read',
    tag: 'Monitoring',
    summary: 'Monitoring snapshot of a version over a window',
    query: { ...MONITORING_QUERY, window: { description: 'all (default), 1h, 24h or 7d.', schema: { enum: ['all', '1h', '24h', '7d'] } } },
    responses: {
      200: ok('Performance, drift, predictions, latency, volume, SLA, queue and open alerts.', OBJECT('The snapshot.')),
      ...errors(400, 404),
    },
  },
  {
    method: 'get',
    pattern: '/v1/monitoring/:model/history',
    access: 'monitoring:read',
    tag: 'Monitoring',
    summary: 'Per-minute history of a version',
    query: {
      ...MONITORING_QUERY,
      from: { description: 'ISO time or epoch ms (default 24 h ago).', schema: { type: 'string' } },
      to: { description: 'ISO time or epoch ms (default now).', schema: { type: 'string' } },
    },
    responses: { 200: ok('History points.', OBJECT('{"model", "version", "from", "to", "points"}')), ...errors(400, 404, 503) },
  },
  {
    method: 'post',
    pattern: '/v1/feedback',
    access: 'feedback',
    tag: 'Monitoring',
    summary: 'Delayed labels, joined to logged predictions by request id',
    body: json(FEEDBACK_REQUEST),
    responses: {
      200: ok('How many joined; unknown and rejected ids.', FEEDBACK_RESPONSE),
      422: ok('Every label was rejected.', FEEDBACK_RESPONSE),
      ...errors(400, 403, 413, 415, 503),
    },
  },
  {
    method: 'get',
    pattern: '/dashboard',
    access: 'open',
    tag: 'Monitoring',
    summary: 'Live monitoring dashboard',
    responses: { 200: { description: 'The page.', contentType: 'text/html' } },
  },
  // Admin.
  {
    method: 'get',
    pattern: '/admin/models',
    tag: 'Admin',
    access: 'admin',
    summary: 'Registered models',
    responses: { 200: ok('Models with their latest version and aliases.', OBJECT('{"models"}')), ...ADMIN_ERRORS },
  },
  {
    method: 'get',
    pattern: '/admin/models/:name',
    tag: 'Admin',
    access: 'admin',
    summary: 'A model: versions (signature, metrics, lineage, config) and deployment',
    responses: { 200: ok('The model.', OBJECT('{"model", "versions", "deployment"}')), ...ADMIN_ERRORS },
  },
  {
    method: 'post',
    pattern: '/admin/models/:name/versions',
    tag: 'Admin',
    access: 'admin',
    summary: 'Register a version',
    description:
      'An ONNX file (application/octet-stream), or a tar.gz of an MLflow model folder with the onnx flavor (application/gzip): its ONNX file is the artifact, its signature names the features, MLmodel is kept as lineage. X-Scoreline-Source names where the file came from (recorded, never read).',
    body: {
      required: true,
      checkedBy: 'bytes',
      content: {
        'application/octet-stream': { type: 'string', contentMediaType: 'application/octet-stream', description: 'The ONNX model file.' },
        'application/gzip': {
          type: 'string',
          contentMediaType: 'application/gzip',
          description: 'A tar.gz of an MLflow model folder (also application/x-tar+gzip, application/x-gzip, application/x-tar).',
        },
      },
    },
    responses: {
      201: ok('Registered.', REGISTERED),
      200: ok('The same bytes were registered already.', REGISTERED),
      ...ADMIN_ERRORS,
      ...errors(400, 409, 413, 415, 422, 507),
    },
  },
  {
    method: 'put',
    pattern: '/admin/models/:name/versions/:version/reference',
    tag: 'Admin',
    access: 'admin',
    summary: "Freeze a version's drift reference from a CSV",
    body: {
      required: true,
      checkedBy: 'bytes',
      content: { 'text/csv': { type: 'string', description: "The model's feature columns (and its label) with a header." } },
    },
    responses: {
      200: ok('Rows read and the reference AUC.', OBJECT('{"model", "version", "rows", "reference_auc", "features"}')),
      ...ADMIN_ERRORS,
      ...errors(400, 413, 422),
    },
  },
  {
    method: 'put',
    pattern: '/admin/models/:name/aliases/:alias',
    tag: 'Admin',
    access: 'admin',
    summary: 'Point an alias at a version',
    body: json(ALIAS_REQUEST),
    responses: { 200: ok('The alias and the recorded move.', OBJECT('{"alias", "version", "event"}')), ...ADMIN_ERRORS, 400: E[400] },
  },
  {
    method: 'get',
    pattern: '/admin/models/:name/aliases/:alias',
    tag: 'Admin',
    access: 'admin',
    summary: 'An alias and its history',
    responses: { 200: ok('Where it points and its moves.', OBJECT('{"model", "alias", "version", "history"}')), ...ADMIN_ERRORS },
  },
  {
    method: 'get',
    pattern: '/admin/alerts',
    tag: 'Admin',
    access: 'admin',
    summary: 'Alerts: firing, pending, history',
    query: {
      model: { description: "Only this model's.", schema: { type: 'string' } },
      limit: { description: 'History entries (1-1000, default 100).', schema: { type: 'integer' } },
    },
    responses: { 200: ok('Alerts.', OBJECT('{"firing", "pending", "history"}')), ...ADMIN_ERRORS },
  },
  {
    method: 'post',
    pattern: '/admin/retrain/:name',
    tag: 'Admin',
    access: 'admin',
    summary: 'Start a retraining job',
    body: optionalJson(REASON_REQUEST),
    responses: { 202: ok('The outcome and the job.', OBJECT('{"outcome", "job"}')), ...ADMIN_ERRORS, ...errors(400, 409, 422) },
  },
  {
    method: 'get',
    pattern: '/admin/retrain/:name',
    tag: 'Admin',
    access: 'admin',
    summary: 'Retraining status of a model',
    responses: { 200: ok('Its configuration and jobs.', OBJECT('The status.')), ...ADMIN_ERRORS, 422: E[422] },
  },
  {
    method: 'post',
    pattern: '/admin/incidents',
    tag: 'Admin',
    access: 'admin',
    summary: 'Report an incident (may trigger retraining)',
    body: json(INCIDENT_REQUEST),
    responses: { 201: ok('The incident and what it triggered.', OBJECT('{"incident", "outcome", "job"}')), ...ADMIN_ERRORS, 400: E[400] },
  },
  {
    method: 'get',
    pattern: '/admin/incidents',
    tag: 'Admin',
    access: 'admin',
    summary: 'Incidents',
    query: { model: { description: "Only this model's.", schema: { type: 'string' } } },
    responses: { 200: ok('Incidents.', OBJECT('{"incidents"}')), ...ADMIN_ERRORS },
  },
  {
    method: 'get',
    pattern: '/admin/jobs',
    tag: 'Admin',
    access: 'admin',
    summary: 'Retraining jobs',
    query: {
      model: { description: "Only this model's.", schema: { type: 'string' } },
      state: { description: 'Only jobs in this state.', schema: { type: 'string' } },
      limit: { description: '1-1000 (default 50).', schema: { type: 'integer' } },
    },
    responses: { 200: ok('Jobs, newest first.', OBJECT('{"jobs"}')), ...ADMIN_ERRORS, 400: E[400] },
  },
  {
    method: 'get',
    pattern: '/admin/jobs/:id',
    tag: 'Admin',
    access: 'admin',
    summary: 'A retraining job with its log',
    responses: { 200: ok('The job.', OBJECT('The job.')), ...ADMIN_ERRORS },
  },
  {
    method: 'put',
    pattern: '/admin/deployments/:name',
    tag: 'Admin',
    access: 'admin',
    summary: 'Deploy: direct, blue-green, canary, A/B or shadow',
    description:
      'Every version is loaded, warmed up, checked against the input contract, run on sample inputs and held to the latency budget before traffic moves.',
    body: json(DEPLOYMENT_REQUEST),
    responses: { 200: ok('The deployment.', OBJECT('The deployment view.')), ...ADMIN_ERRORS, ...errors(400, 409, 422) },
  },
  {
    method: 'get',
    pattern: '/admin/deployments/:name',
    tag: 'Admin',
    access: 'admin',
    summary: 'A deployment: traffic, step statistics, analysis, history, how each replica serves it',
    responses: { 200: ok('The deployment view.', OBJECT('The deployment view, with "replicas".')), ...ADMIN_ERRORS },
  },
  {
    method: 'delete',
    pattern: '/admin/deployments/:name',
    tag: 'Admin',
    access: 'admin',
    summary: 'Remove a deployment (the model serves its highest version again)',
    query: { reason: { description: 'Recorded in the history.', schema: { type: 'string' } } },
    responses: { 200: ok('The deployment view, without a strategy.', OBJECT('The deployment view.')), ...ADMIN_ERRORS, 409: E[409] },
  },
  {
    method: 'post',
    pattern: '/admin/deployments/:name/promote',
    tag: 'Admin',
    access: 'admin',
    summary: 'Promote: canary step, blue-green switch, shadow to primary',
    body: optionalJson(REASON_REQUEST),
    responses: { 200: ok('The deployment.', OBJECT('The deployment view.')), ...ADMIN_ERRORS, ...errors(400, 409, 422) },
  },
  {
    method: 'post',
    pattern: '/admin/deployments/:name/rollback',
    tag: 'Admin',
    access: 'admin',
    summary: 'Roll back',
    body: optionalJson(REASON_REQUEST),
    responses: { 200: ok('The deployment.', OBJECT('The deployment view.')), ...ADMIN_ERRORS, ...errors(400, 409, 422) },
  },
  {
    method: 'get',
    pattern: '/admin/cluster',
    tag: 'Admin',
    access: 'admin',
    summary: 'The replicas sharing the store and which one leads',
    responses: { 200: ok('The leader and every replica heard from recently.', OBJECT('{"leader", "replicas"}')), ...ADMIN_ERRORS },
  },
  // Triton model control.
  {
    method: 'post',
    pattern: '/v2/repository/index',
    tag: 'Model control',
    access: 'admin',
    summary: 'Repository index (Triton)',
    description: "This replica's repository folder and what this replica has loaded.",
    body: optionalJson(INDEX_REQUEST),
    responses: { 200: ok('Every version in the repository or loaded, with its state.', INDEX_RESPONSE), ...errors(400, 401, 403, 503) },
  },
  {
    method: 'post',
    pattern: '/v2/repository/models/:model/load',
    tag: 'Model control',
    access: 'admin',
    summary: 'Load a model (Triton)',
    description:
      "Imports the model's version folders from this replica's repository into the store and loads them here (a model only the store has: its latest version). Other replicas sharing the store can then deploy it; a deployment is what every replica serves.",
    body: optionalJson(MODEL_CONTROL_REQUEST),
    responses: { 200: ok('The versions loaded.', LOADED), ...ADMIN_ERRORS, ...errors(400, 409, 422) },
  },
  {
    method: 'post',
    pattern: '/v2/repository/models/:model/unload',
    tag: 'Model control',
    access: 'admin',
    summary: 'Unload a model (Triton)',
    description:
      'Unloads every version from this replica once queued requests are answered; refused (409) while the model has a deployment (which every replica serves).',
    body: optionalJson(MODEL_CONTROL_REQUEST),
    responses: { 200: ok('The versions unloaded.', LOADED), ...ADMIN_ERRORS, ...errors(400, 409) },
  },
  // This document.
  {
    method: 'get',
    pattern: '/openapi.json',
    access: 'open',
    tag: 'Server',
    summary: 'This API description (OpenAPI 3.1)',
    responses: { 200: ok('The document.', { type: 'object' }), 503: E[503] },
  },
];

/** What a path parameter is, by its name in the patterns. */
export const PATH_PARAMETERS: Readonly<Record<string, string>> = {
  model: 'A model name.',
  name: 'A model name.',
  version: 'A version number.',
  alias: 'An alias name (lowercase; not "latest").',
  id: 'A retraining job id.',
};
