// Entity scoring and realtime events:
//   POST /v1/score/{model}  {"entity": {"customer_id": "C00042"}, "context": {request fields}?,
//                            "features": {overrides}?, "debug": true?, "id": "..."?,
//                            "explain": true?, "top_k": K?}
//     -> {"request_id", "model", "model_version", "variant", "score", "features"? (with "debug"),
//         "explanation"? (with "explain", see explain.ts)}
//   POST /v1/events          one event or {"events": [...]}, see features/events.ts
//     -> {"accepted", "ignored", "duplicates", "ids"}; a store failure answers 503
//        {"error", "state": "unknown" | "not_stored", "ids"} (retry with the same ids)
// Features are resolved (L1 cache -> store -> fallbacks) in the inference step's prepare stage,
// written straight into the version's open batch as one row, and the score is read from the
// model's score output.

import { badRequest, EventWriteError, shuttingDown, signatureMismatch, storeUnavailable } from '../errors.js';
import { StoreUnavailableError, type FeatureService, type ModelFeatures, type Resolved } from '../features/index.js';
import { writeElement, type LoadedModel, type RunResult } from '../inference/index.js';
import { isObject } from '../json.js';
import type { ServerContext } from './context.js';
import type { DecodedRequest } from './decode.js';
import { scoreOf } from './encode.js';
import { explainAsk, explaining, explainingInput, type ExplainAsk } from './explain.js';
import { postRoute, sendError, sendJson } from './http.js';
import { infer, type Answering, type Protocol } from './inference.js';
import { HttpReply } from './oip.js';
import type { TemplatedApp } from './uws.js';

const prefixes = new WeakMap<LoadedModel, string>();
/** `"model":...,"model_version":...,` of a version, built once. */
function prefixOf(m: LoadedModel): string {
  let p = prefixes.get(m);
  if (p === undefined) {
    p = `"model":${JSON.stringify(m.name)},"model_version":${JSON.stringify(m.version)},`;
    prefixes.set(m, p);
  }
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
    if (input.datatype !== 'FP32' && input.datatype !== 'FP64')
      throw signatureMismatch(`${where}: entity scoring needs an FP32 or FP64 input, not ${input.datatype}`);
    // Features resolve to numbers in one row: a model with categorical (BYTES) or several inputs is scored over OIP, v1 or gRPC.
    if (m.inputs.length !== 1)
      throw signatureMismatch(`${where}: entity scoring needs a single numeric input, the model has ${m.inputs.length}`);
    modelFeatures.set(m, features.server.compileModel(columns, m.config.bindings ?? {}, where));
  } catch (e) {
    if (m.config.bindings) throw e;
    ctx.log.info({ model: m.name, version: m.version, reason: (e as Error).message }, 'model is not set up for entity scoring');
  }
}

/** An entity scoring request: the checked body, then (after prepare) its resolved features. */
interface ScoreInput {
  readonly body: Record<string, unknown>;
  readonly id: string | undefined;
  readonly debug: boolean;
  readonly resolved: Resolved | null;
  /** The routed version's feature columns, which a shadow must share to score the same row. */
  readonly columns: readonly string[] | null;
}

const storeError = (e: unknown) => (e instanceof StoreUnavailableError ? storeUnavailable(e.message) : e);

/** Writes a resolved row into a version's open batch, under the same value rules as every other path. */
function writeRow(m: LoadedModel, mf: ModelFeatures, resolved: Resolved, id: string | undefined): DecodedRequest {
  const batch = m.batcher.reserve(1);
  const buf = batch.buffers[0]!;
  const dt = m.inputs[0]!.datatype;
  const at = batch.rows * m.batcher.rowElements(batch, 0);
  const row = resolved.row;
  for (let c = 0; c < row.length; c++) writeElement(row[c], dt, buf, at + c, `feature '${mf.columnNames[c]}'`);
  return { batch, rows: 1, id, select: null };
}

function scoreProtocol(features: FeatureService): Protocol<ScoreInput> {
  const bindings = (m: LoadedModel): ModelFeatures => {
    const mf = modelFeatures.get(m);
    if (mf === undefined)
      throw signatureMismatch(
        `model '${m.name}' version ${m.version} is not set up for entity scoring (its model.yaml needs features bound to feature definitions)`,
      );
    return mf;
  };
  return {
    route: 'score',
    prepare(m, input) {
      const b = input.body;
      const mf = bindings(m);
      let r: Resolved | Promise<Resolved>;
      try {
        r = features.server.resolve(mf, b.entity, b.context, b.features);
      } catch (e) {
        throw storeError(e);
      }
      if (r instanceof Promise) {
        return r.then(
          (resolved) => ({ ...input, resolved, columns: mf.columnNames }),
          (e) => {
            throw storeError(e);
          },
        );
      }
      return { ...input, resolved: r, columns: mf.columnNames };
    },
    decode: (m, input) => writeRow(m, bindings(m), input.resolved!, input.id),
    encode(m: LoadedModel, result: RunResult, rowStart: number, a: Answering<ScoreInput>) {
      const score = scoreOf(m, result, rowStart);
      let body = `{"request_id":${JSON.stringify(a.requestId)},${prefixOf(m)}"variant":${JSON.stringify(a.variant)},"score":${Number.isFinite(score) ? score : 'null'}`;
      const d = a.input.debug ? a.input.resolved : null;
      if (d !== null) body += `,"entity":${JSON.stringify(d.entityIds)},"features":${JSON.stringify(d.debug())}`;
      return `${body}}`;
    },
    // The shadow scores the same features only if it binds the same columns.
    shadow(m, input) {
      const mf = bindings(m);
      if (mf.columnNames.join() !== input.columns!.join()) throw signatureMismatch('the shadow binds other feature columns');
      return writeRow(m, mf, input.resolved!, undefined);
    },
  };
}

export function registerScore(app: TemplatedApp, ctx: ServerContext, features: FeatureService | null): void {
  const maxBytes = ctx.config.server.maxBodyBytes;
  const protocol = features === null ? null : scoreProtocol(features);
  const explained = protocol === null ? null : explaining(ctx, protocol, (body, list) => `${body.slice(0, -1)},"explanation":${list[0]}}`);

  postRoute(
    app,
    '/v1/score/:model',
    ctx.http,
    {
      maxBytes,
      params: 1,
      headers: (params) => {
        const h = ctx.router.stickyHeader(params[0]!);
        return h === null ? [] : [h];
      },
      admit: () => {
        if (ctx.draining) throw shuttingDown();
        if (features === null)
          throw signatureMismatch('entity scoring is off: the server has no feature definitions (features.definitions)');
      },
      refused: (status) => ctx.monitor.unrouted('score', status),
    },
    (res, body, _raw, p) => {
      const name = p.params[0]!;
      const reply = new HttpReply(res, ctx);
      let input: ScoreInput;
      let ask: ExplainAsk | null;
      let sticky = p.headers[0] || undefined;
      try {
        if (!isObject(body)) throw badRequest('request body must be a JSON object with an "entity"');
        if (body.id !== undefined && typeof body.id !== 'string') throw badRequest('"id" must be a string');
        if (body.debug !== undefined && typeof body.debug !== 'boolean') throw badRequest('"debug" must be true or false');
        if (body.entity === undefined) throw badRequest('"entity" is required, e.g. {"customer_id": "C00042"}');
        const stickyField = ctx.router.stickyEntityField(name);
        const stickyValue = stickyField !== null && isObject(body.entity) ? body.entity[stickyField] : undefined;
        if (stickyValue !== undefined) sticky = String(stickyValue);
        ask = explainAsk(body, '');
        input = { body, id: body.id as string | undefined, debug: body.debug === true, resolved: null, columns: null };
      } catch (e) {
        ctx.monitor.unrouted('score', sendError(res, e, ctx.log));
        return;
      }
      if (ask === null) infer(ctx, { protocol: protocol!, model: name, version: undefined, sticky, input, reply, t0: p.t0 });
      else
        infer(ctx, { protocol: explained!, model: name, version: undefined, sticky, input: explainingInput(input, ask), reply, t0: p.t0 });
    },
  );

  postRoute(
    app,
    '/v1/events',
    ctx.http,
    {
      maxBytes,
      params: 0,
      admit: () => {
        if (features === null) throw signatureMismatch('realtime features are off: the server has no feature definitions');
        if (ctx.draining) throw shuttingDown();
      },
    },
    (res, body) => {
      features!.ingest(body).then(
        (r) => sendJson(res, 200, JSON.stringify(r)),
        (e) => {
          // The answer says whether the events may have landed, and their ids for a retry.
          if (e instanceof EventWriteError)
            sendJson(res, e.status, `{${e.jsonFields},${writeState(e)}}`, { 'retry-after': String(e.retryAfter ?? 1) });
          else sendError(res, e, ctx.log);
        },
      );
    },
  );
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
    if (e instanceof EventWriteError) return `${e.jsonFields},"status":${e.status},${writeState(e)}`;
    throw e;
  }
}
