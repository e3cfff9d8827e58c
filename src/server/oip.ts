// Open Inference Protocol (KServe v2) REST endpoints and the v1 `:predict` and `:explain` endpoints:
// health, server and model metadata, readiness, and inference through the version's dynamic batcher
// (with explanations when a request asks for them, see explain.ts).

import pkg from '../version.js';
import { routeNotFound, shuttingDown, type ScorelineError } from '../errors.js';
import type { LoadedModel, RunResult } from '../inference/index.js';
import type { ServerContext } from './context.js';
import { decodeInstances, decodeOip, decodeScanned } from './decode.js';
import { ScannedOip, scanOip } from './fast-oip.js';
import { outputsJson, predictionsJson } from './encode.js';
import { parseJson, sendError, sendJson, postRoute, type ResponseState, type PostRequest } from './http.js';
import { explaining, explainingInput, oipExplainAsk, v1ExplainAsk, type ExplainAsk, type Explaining } from './explain.js';
import { infer, type Answering, type Protocol, type Reply } from './inference.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

type Res = HttpResponse & ResponseState;

/**
 * A JSON request body and its size in bytes (which bounds the tensor sizes it may declare). An OIP
 * body in the common form is read straight from its bytes (a ScannedOip), any other parsed.
 */
export interface JsonBody {
  readonly body: unknown;
  readonly size: number;
}

const decodeOipBody = (m: LoadedModel, i: JsonBody) =>
  i.body instanceof ScannedOip ? decodeScanned(m, i.body, i.size) : decodeOip(m, i.body, i.size);

/** Open Inference Protocol v2 over JSON. */
export const OIP_JSON: Protocol<JsonBody> = {
  route: 'infer',
  decode: decodeOipBody,
  encode: (m: LoadedModel, result: RunResult, rowStart: number, a: Answering<JsonBody>) =>
    `${m.oipPrefix},"id":${JSON.stringify(a.requestId)},"outputs":${outputsJson(m, result, rowStart, a.decoded.rows, a.decoded.select)}}`,
  shadow: decodeOipBody,
};

/** KServe v1 `:predict`. */
export const V1_PREDICT: Protocol<JsonBody> = {
  route: 'predict',
  decode: (m, i) => decodeInstances(m, i.body, i.size),
  encode: (m: LoadedModel, result: RunResult, rowStart: number, a: Answering<JsonBody>) =>
    `{"predictions":${predictionsJson(m, result, rowStart, a.decoded.rows)},"model_name":${JSON.stringify(m.name)},"model_version":"${m.version}","request_id":${JSON.stringify(a.requestId)}}`,
  shadow: (m, i) => decodeInstances(m, i.body, i.size),
};

/** v1 `:explain`: the instances of `:predict`, answered with one explanation per instance. */
const V1_EXPLAINED: Protocol<JsonBody> = {
  route: 'predict',
  decode: (m, i) => decodeInstances(m, i.body, i.size),
  encode: (m: LoadedModel, _result: RunResult, _rowStart: number, a: Answering<JsonBody>) =>
    `{"model_name":${JSON.stringify(m.name)},"model_version":"${m.version}","request_id":${JSON.stringify(a.requestId)}}`,
  shadow: (m, i) => decodeInstances(m, i.body, i.size),
};

/** How a route takes requests for explanations: the protocol, and what the body asks (null: none). */
interface ExplainRoute {
  readonly protocol: Protocol<Explaining<JsonBody>>;
  readonly ask: (body: unknown) => ExplainAsk | null;
}

/** Appends `"key": value` to a JSON object's text. */
const withMember = (body: string, member: string): string => `${body.slice(0, -1)},${member}}`;

/** An HTTP response as the inference step's reply. */
export class HttpReply implements Reply {
  constructor(
    private readonly res: Res,
    private readonly ctx: ServerContext,
  ) {}
  /** The gate's findings (x-request-id, API key, exchange) live on the response object. */
  get origin(): Res {
    return this.res;
  }
  ok(body: string): void {
    sendJson(this.res, 200, body);
  }
  fail(err: ScorelineError): number {
    return sendError(this.res, err, this.ctx.log);
  }
}

/** The model and version a URL names; v1 carries `:predict` or `:explain` on its last segment. */
function targetPath(
  protocol: Protocol<JsonBody>,
  params: readonly string[],
): { name: string; version: string | undefined; explain: boolean } | null {
  let name = params[0]!;
  let version = params.length > 1 ? params[1] : undefined;
  let explain = false;
  if (protocol.route === 'predict') {
    const last = version ?? name;
    explain = last.endsWith(':explain');
    if (!explain && !last.endsWith(':predict')) return null;
    // ':predict' and ':explain' are both 8 characters.
    if (version !== undefined) version = last.slice(0, -8);
    else name = last.slice(0, -8);
  }
  return { name, version, explain };
}

/**
 * `explain.inline` takes explanation requests on the protocol's own path (OIP parameters);
 * `explain.suffix` serves the v1 `:explain` suffix.
 */
function registerInference(
  app: TemplatedApp,
  ctx: ServerContext,
  pattern: string,
  protocol: Protocol<JsonBody>,
  versioned: boolean,
  explain: { inline: ExplainRoute | null; suffix: ExplainRoute | null },
): void {
  const route = protocol.route;
  postRoute(
    app,
    pattern,
    ctx.http,
    {
      maxBytes: ctx.config.server.maxBodyBytes,
      params: versioned ? 2 : 1,
      // A/B by header: the header has to be read now, before the body arrives.
      headers: (params) => {
        const t = versioned ? null : targetPath(protocol, params);
        const sticky = t === null ? null : ctx.router.stickyHeader(t.name);
        return sticky === null ? NO_HEADERS : [sticky];
      },
      admit: (p: PostRequest) => {
        if (targetPath(protocol, p.params) === null)
          throw routeNotFound('POST', `/v1/models/${p.params[0]}${versioned ? `/versions/${p.params[1]}` : ''}`);
        if (ctx.draining) throw shuttingDown();
      },
      refused: (status) => ctx.monitor.unrouted(route, status),
      // OIP bodies are read here: the common form straight from the bytes, the rest by JSON.parse.
      json: protocol !== OIP_JSON,
    },
    (res, parsed, raw, p) => {
      let body = parsed;
      if (protocol === OIP_JSON) {
        body = scanOip(raw);
        if (body === null) {
          try {
            body = parseJson(raw);
          } catch (e) {
            ctx.monitor.unrouted(route, sendError(res, e, ctx.log));
            return;
          }
        }
      }
      const t = targetPath(protocol, p.params)!;
      const x = t.explain ? explain.suffix : explain.inline;
      let ask: ExplainAsk | null = null;
      if (x !== null) {
        try {
          ask = x.ask(body);
        } catch (e) {
          ctx.monitor.unrouted('explain', sendError(res, e, ctx.log));
          return;
        }
      }
      const sticky = p.headers[0] || undefined;
      const reply = new HttpReply(res, ctx);
      if (ask === null) {
        infer(ctx, { protocol, model: t.name, version: t.version, sticky, input: { body, size: raw.length }, reply, t0: p.t0 });
      } else {
        infer(ctx, {
          protocol: x!.protocol,
          model: t.name,
          version: t.version,
          sticky,
          input: explainingInput({ body, size: raw.length }, ask),
          reply,
          t0: p.t0,
        });
      }
    },
  );
}

const NO_HEADERS: readonly string[] = [];

function tensorMeta(t: { name: string; datatype: string; shape: readonly number[] }) {
  return { name: t.name, datatype: t.datatype, shape: t.shape };
}

function modelMetadata(ctx: ServerContext, m: LoadedModel) {
  return {
    name: m.name,
    versions: ctx.engine.versionsOf(m.name).map((v) => v.version),
    platform: 'onnx_onnxv1',
    inputs: m.inputs.map(tensorMeta),
    outputs: m.outputs.map(tensorMeta),
  };
}

export function registerOip(app: TemplatedApp, ctx: ServerContext): void {
  const serverMeta = JSON.stringify({ name: 'scoreline', version: pkg.version, extensions: [] });
  app.get('/v2', (res) => sendJson(res, 200, serverMeta));
  app.get('/v2/', (res) => sendJson(res, 200, serverMeta));
  app.get('/v2/health/live', (res) => sendJson(res, 200, '{"live":true}'));
  app.get('/v2/health/ready', (res) => {
    const ready = !ctx.draining && ctx.engine.ready();
    // A degraded feature store does not make the server unready: it still scores from cache and fallbacks.
    const h = ctx.features?.health();
    sendJson(res, ready ? 200 : 503, JSON.stringify(h && h.status !== 'ok' ? { ready, degraded: h.reason } : { ready }));
  });

  /** Answers with the named (or highest) version, ready or not, or the precise 404. */
  const withModel = (versioned: boolean, answer: (res: Res, m: LoadedModel) => void) => (res: Res, req: HttpRequest) => {
    try {
      answer(res, ctx.engine.lookup(req.getParameter(0), versioned ? req.getParameter(1) : undefined));
    } catch (e) {
      sendError(res, e, ctx.log);
    }
  };
  const metadata = (versioned: boolean) => withModel(versioned, (res, m) => sendJson(res, 200, JSON.stringify(modelMetadata(ctx, m))));
  const readiness = (res: Res, m: LoadedModel) => {
    const isReady = m.state === 'ready' && !ctx.draining;
    sendJson(res, isReady ? 200 : 503, JSON.stringify({ name: m.name, ready: isReady }));
  };
  const ready = (versioned: boolean) => withModel(versioned, readiness);
  app.get('/v2/models/:model', metadata(false));
  app.get('/v2/models/:model/versions/:version', metadata(true));
  app.get('/v2/models/:model/ready', ready(false));
  app.get('/v2/models/:model/versions/:version/ready', ready(true));
  // Explanations ride on the same paths: OIP parameters {"explain": true}, v1 `:explain`.
  const oipExplain: ExplainRoute = {
    protocol: explaining(ctx, OIP_JSON, (body, list) => withMember(body, `"parameters":{"explanation":[${list.join(',')}]}`)),
    ask: oipExplainAsk,
  };
  const v1Explain: ExplainRoute = {
    protocol: explaining(ctx, V1_EXPLAINED, (body, list) => withMember(body, `"explanations":[${list.join(',')}]`)),
    ask: v1ExplainAsk,
  };
  const oip = { inline: oipExplain, suffix: null };
  const v1 = { inline: null, suffix: v1Explain };
  registerInference(app, ctx, '/v2/models/:model/infer', OIP_JSON, false, oip);
  registerInference(app, ctx, '/v2/models/:model/versions/:version/infer', OIP_JSON, true, oip);

  // KServe v1
  registerInference(app, ctx, '/v1/models/:model', V1_PREDICT, false, v1);
  registerInference(app, ctx, '/v1/models/:model/versions/:version', V1_PREDICT, true, v1);
  app.get('/v1/models', (res) => {
    const names = [...new Set(ctx.engine.list().map((m) => m.name))];
    sendJson(res, 200, JSON.stringify({ models: names }));
  });
  app.get('/v1/models/:model', withModel(false, readiness));
}
