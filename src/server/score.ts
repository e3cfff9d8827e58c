// Entity scoring and realtime events:
//   POST /v1/score/{model}  {"entity": {"customer_id": "C00042"}, "context": {request fields}?,
//                            "features": {overrides}?, "debug": true?, "id": "..."?}
//     -> {"request_id", "model", "model_version", "score", "features"? (with "debug")}
//   POST /v1/events          one event or {"events": [...]}, see features/events.ts
//     -> {"accepted", "ignored", "duplicates", "ids"}; a store failure answers 503
//        {"error", "state": "unknown" | "not_stored", "ids"} (retry with the same ids)
// Features are resolved (L1 cache -> store -> fallbacks), written straight into the version's open
// batch as one row, and the score is read from the model's score output.

import { randomBytes } from 'node:crypto';
import { badRequest, EventWriteError, shuttingDown, signatureMismatch, storeUnavailable, type ScorelineError } from '../errors.js';
import { StoreUnavailableError, type FeatureService, type ModelFeatures, type Resolved } from '../features/index.js';
import type { Target } from '../deploy/index.js';
import type { LoadedModel, PendingRequest, RunResult } from '../inference/index.js';
import type { VersionMonitor } from '../monitoring/index.js';
import { monitorOf, ShadowPair, targetOf, type ServerContext } from './context.js';
import { scoreOf } from './encode.js';
import { sendShadow } from './shadow.js';
import { checkJsonContentType, isObject, parseJson, readBody, sendError, sendJson, type ResponseState } from './http.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

type Res = HttpResponse & ResponseState;

// Request ids: a random per-process prefix and a counter, unique across replicas and restarts
// without the cost of a UUID per request.
const ID_PREFIX = randomBytes(6).toString('hex');
let idCounter = 0;
export const nextRequestId = (): string => `${ID_PREFIX}-${(++idCounter).toString(36).padStart(6, '0')}`;

const prefixes = new WeakMap<LoadedModel, string>();
/** `"model":...,"model_version":...,` of a version, built once. */
function prefixOf(m: LoadedModel): string {
  let p = prefixes.get(m);
  if (p === undefined) prefixes.set(m, (p = `"model":${JSON.stringify(m.name)},"model_version":${JSON.stringify(m.version)},`));
  return p;
}

/** Models set up for entity scoring: their compiled feature bindings. */
export const modelFeatures = new WeakMap<LoadedModel, ModelFeatures>();

/** Compiles a loaded model's bindings; logs and skips models not meant for entity scoring. */
export function bindModel(ctx: ServerContext, features: FeatureService, m: LoadedModel): void {
  const columns = m.config.features;
  if (!columns) return;
  const where = `model '${m.name}' version ${m.version}`;
  const input = m.inputs[0]!;
  try {
    if (input.datatype !== 'FP32' && input.datatype !== 'FP64') throw signatureMismatch(`${where}: entity scoring needs an FP32 or FP64 input, not ${input.datatype}`);
    modelFeatures.set(m, features.server.compileModel(columns, m.config.bindings ?? {}, where));
  } catch (e) {
    if (m.config.bindings) throw e;
    ctx.log.info({ model: m.name, version: m.version, reason: (e as Error).message }, 'model is not set up for entity scoring');
  }
}

class ScoreInference implements PendingRequest {
  settled = false;
  readonly rows = 1;
  constructor(
    private readonly res: Res,
    private readonly ctx: ServerContext,
    private readonly model: LoadedModel,
    private readonly mon: VersionMonitor,
    /** The request id as JSON text (quoted). */
    private readonly idJson: string,
    readonly requestId: string,
    private readonly debug: Resolved | null,
    readonly enqueuedAt: number,
    readonly deadline: number,
    private readonly target: Target,
    private readonly pair: ShadowPair | null,
  ) {}

  get variant(): string {
    return this.target.variant;
  }

  resolve(result: RunResult, rowStart: number): void {
    const m = this.model;
    const score = scoreOf(m, result, rowStart);
    let body = `{"request_id":${this.idJson},${prefixOf(m)}"variant":"${this.target.variant}","score":${Number.isFinite(score) ? score : 'null'}`;
    if (this.debug !== null) body += `,"entity":${JSON.stringify(this.debug.entityIds)},"features":${JSON.stringify(this.debug.debug())}`;
    sendJson(this.res, 200, body + '}');
    const ms = performance.now() - this.enqueuedAt;
    this.mon.request('score', 200, ms, this.target.variant);
    this.target.stats?.record(200, ms, score);
    this.pair?.primary(score);
  }

  reject(err: ScorelineError): void {
    const ms = performance.now() - this.enqueuedAt;
    const status = sendError(this.res, err, this.ctx.log);
    this.mon.request('score', status, ms, this.target.variant);
    this.target.stats?.record(status, ms, null);
  }
}

function enqueue(ctx: ServerContext, res: Res, target: Target, resolved: Resolved, requestId: string, debug: boolean, t0: number): void {
  const idJson = JSON.stringify(requestId);
  const m = target.model;
  const batch = m.batcher.reserve(1);
  const buf = batch.buffers[0]!;
  const at = batch.rows * m.batcher.rowElements(batch, 0);
  const row = resolved.row;
  for (let c = 0; c < row.length; c++) (buf as Float64Array)[at + c] = row[c]!;
  const timeout = ctx.config.server.requestTimeoutMs;
  const pair = target.shadow !== null ? new ShadowPair(target.shadow.agreement) : null;
  const p = new ScoreInference(res, ctx, m, monitorOf(ctx, m), idJson, requestId, debug ? resolved : null, t0, t0 + timeout, target, pair);
  m.batcher.commit(batch, p);
  if (pair !== null && target.shadow !== null) {
    // The shadow scores the same features only if it binds the same columns.
    if (modelFeatures.get(target.shadow.model)?.columnNames.join() === modelFeatures.get(m)?.columnNames.join()) sendShadow(target.shadow, pair, { kind: 'row', row }, timeout);
    else pair.failed();
  }
}

export function registerScore(app: TemplatedApp, ctx: ServerContext, features: FeatureService | null): void {
  const limits = { maxBytes: ctx.config.server.maxBodyBytes };

  app.post('/v1/score/:model', (res: Res, req: HttpRequest) => {
    const t0 = performance.now();
    const name = req.getParameter(0);
    const contentType = req.getHeader('content-type');
    const contentLength = req.getHeader('content-length');
    const stickyHeader = ctx.router.stickyHeader(name);
    const sticky = stickyHeader !== null ? req.getHeader(stickyHeader) || undefined : undefined;
    if (ctx.draining) {
      ctx.monitor.unrouted('score', sendError(res, shuttingDown(), ctx.log, true));
      return;
    }
    try {
      checkJsonContentType(contentType);
      if (features === null) throw signatureMismatch('entity scoring is off: the server has no feature definitions (features.definitions)');
    } catch (e) {
      ctx.monitor.unrouted('score', sendError(res, e, ctx.log, true));
      return;
    }
    readBody(
      res,
      contentLength,
      limits,
      (buf) => {
        let target: Target | undefined;
        const fail = (e: unknown) => {
          const status = sendError(res, e instanceof StoreUnavailableError ? storeUnavailable(e.message) : e, ctx.log);
          if (target !== undefined) monitorOf(ctx, target.model).request('score', status, performance.now() - t0, target.variant);
          else ctx.monitor.unrouted('score', status);
        };
        try {
          const body = parseJson(buf);
          if (!isObject(body)) throw badRequest('request body must be a JSON object with an "entity"');
          if (body.id !== undefined && typeof body.id !== 'string') throw badRequest('"id" must be a string');
          if (body.debug !== undefined && typeof body.debug !== 'boolean') throw badRequest('"debug" must be true or false');
          if (body.entity === undefined) throw badRequest('"entity" is required, e.g. {"customer_id": "C00042"}');
          const stickyField = ctx.router.stickyEntityField(name);
          const stickyValue = stickyField !== null && isObject(body.entity) ? body.entity[stickyField] : undefined;
          const t = (target = targetOf(ctx, name, undefined, stickyValue === undefined ? sticky : String(stickyValue)));
          const model = t.model;
          const mf = modelFeatures.get(model);
          if (mf === undefined) throw signatureMismatch(`model '${name}' version ${model.version} is not set up for entity scoring (its model.yaml needs features bound to feature definitions)`);
          const requestId = (body.id as string | undefined) ?? nextRequestId();
          const debug = body.debug === true;
          const resolved = features!.server.resolve(mf, body.entity, body.context, body.features);
          if (resolved instanceof Promise) {
            resolved.then((r) => {
              try {
                enqueue(ctx, res, t, r, requestId, debug, t0);
              } catch (e) {
                fail(e);
              }
            }, fail);
          } else {
            enqueue(ctx, res, t, resolved, requestId, debug, t0);
          }
        } catch (e) {
          fail(e);
        }
      },
      (err) => ctx.monitor.unrouted('score', sendError(res, err, ctx.log)),
    );
  });

  app.post('/v1/events', (res: Res, req: HttpRequest) => {
    const contentType = req.getHeader('content-type');
    const contentLength = req.getHeader('content-length');
    try {
      checkJsonContentType(contentType);
      if (features === null) throw signatureMismatch('realtime features are off: the server has no feature definitions');
      if (ctx.draining) throw shuttingDown();
    } catch (e) {
      sendError(res, e, ctx.log, true);
      return;
    }
    readBody(
      res,
      contentLength,
      limits,
      (buf) => {
        let body: unknown;
        try {
          body = parseJson(buf);
        } catch (e) {
          sendError(res, e, ctx.log);
          return;
        }
        features!.ingest(body).then(
          (r) => sendJson(res, 200, JSON.stringify(r)),
          (e) => {
            // The answer says whether the events may have landed, and their ids for a retry.
            if (e instanceof EventWriteError) sendJson(res, e.status, `{"error":${JSON.stringify(e.message)},${writeState(e)}}`, { 'retry-after': String(e.retryAfter ?? 1) });
            else sendError(res, e, ctx.log);
          },
        );
      },
      (err) => sendError(res, err, ctx.log),
    );
  });
}

const writeState = (e: EventWriteError): string => `"state":"${e.state}","ids":${JSON.stringify(e.ids)}`;

/**
 * A WebSocket event frame (`{"event": ...}`), answered `{"id", "accepted", "ignored", "duplicates",
 * "ids"}`, or on a store failure `{"id", "error", "status": 503, "state", "ids"}`. A string frame id
 * is the event's id (its idempotency key); a numeric one only correlates the answer (counters
 * restart with every connection), so the event gets a generated id.
 */
export async function ingestFrame(features: FeatureService | null, frame: Record<string, unknown>): Promise<string> {
  if (features === null) throw signatureMismatch('realtime features are off: the server has no feature definitions');
  try {
    const r = await features.ingest(typeof frame.id === 'number' ? { ...frame, id: undefined } : frame);
    return `"accepted":${r.accepted},"ignored":${r.ignored},"duplicates":${r.duplicates},"ids":${JSON.stringify(r.ids)}`;
  } catch (e) {
    if (e instanceof EventWriteError) return `"error":${JSON.stringify(e.message)},"status":${e.status},${writeState(e)}`;
    throw e;
  }
}
