// Open Inference Protocol (KServe v2) REST endpoints and the v1 `:predict` endpoint: health,
// server and model metadata, readiness, and inference through the version's dynamic batcher.

import pkg from '../version.js';
import { routeNotFound, shuttingDown, type ScorelineError } from '../errors.js';
import type { Target } from '../deploy/index.js';
import type { LoadedModel, PendingRequest, RunResult } from '../inference/index.js';
import type { Route, VersionMonitor } from '../monitoring/index.js';
import { monitorOf, ShadowPair, targetOf, type ServerContext } from './context.js';
import { decodeInstances, decodeOip, type DecodedRequest } from './decode.js';
import { outputsJson, predictionsJson, scoreOf } from './encode.js';
import { nextRequestId } from './score.js';
import { sendShadow } from './shadow.js';
import { checkJsonContentType, parseJson, readBody, sendError, sendJson, type ResponseState } from './http.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

type Res = HttpResponse & ResponseState;

/** An HTTP inference request waiting in a batcher; answers once, in the protocol it came in. */
class HttpInference implements PendingRequest {
  settled = false;

  constructor(
    private readonly res: Res,
    private readonly ctx: ServerContext,
    private readonly model: LoadedModel,
    private readonly mon: VersionMonitor,
    private readonly route: Route,
    private readonly decoded: DecodedRequest,
    readonly enqueuedAt: number,
    readonly deadline: number,
    private readonly target: Target,
    private readonly pair: ShadowPair | null,
    /** The client's id, else a generated one: predictions are logged under it, feedback joins on it. */
    readonly requestId: string,
  ) {}

  get rows(): number {
    return this.decoded.rows;
  }

  get variant(): string {
    return this.target.variant;
  }

  resolve(result: RunResult, rowStart: number): void {
    const d = this.decoded;
    const m = this.model;
    let body: string;
    if (this.route === 'predict') {
      body = `{"predictions":${predictionsJson(m, result, rowStart, d.rows)},"model_name":${JSON.stringify(m.name)},"model_version":"${m.version}","request_id":${JSON.stringify(this.requestId)}}`;
    } else {
      body = m.oipPrefix + ',"id":' + JSON.stringify(this.requestId) + ',"outputs":' + outputsJson(m, result, rowStart, d.rows, d.select) + '}';
    }
    sendJson(this.res, 200, body);
    const ms = performance.now() - this.enqueuedAt;
    this.mon.request(this.route, 200, ms, this.target.variant);
    // Scores are read only for deployments that watch them (canary, shadow).
    if (this.target.stats !== null || this.pair !== null) {
      const score = scoreOf(m, result, rowStart);
      this.target.stats?.record(200, ms, score);
      this.pair?.primary(score);
    }
  }

  reject(err: ScorelineError): void {
    const status = sendError(this.res, err, this.ctx.log);
    const ms = performance.now() - this.enqueuedAt;
    this.mon.request(this.route, status, ms, this.target.variant);
    this.target.stats?.record(status, ms, null);
  }
}

function inferenceHandler(ctx: ServerContext, route: Route, versioned: boolean) {
  const limits = { maxBytes: ctx.config.server.maxBodyBytes };
  const timeout = ctx.config.server.requestTimeoutMs;
  return (res: Res, req: HttpRequest): void => {
    const t0 = performance.now();
    let name = req.getParameter(0);
    let version = versioned ? req.getParameter(1) : undefined;
    if (route === 'predict') {
      // /v1/models/{m}:predict and /v1/models/{m}/versions/{v}:predict
      const target = versioned ? version! : name;
      if (!target.endsWith(':predict')) {
        sendError(res, routeNotFound('POST', req.getUrl()));
        return;
      }
      if (versioned) version = target.slice(0, -8);
      else name = target.slice(0, -8);
    }
    const contentType = req.getHeader('content-type');
    const contentLength = req.getHeader('content-length');
    // A/B by header: the header has to be read now, before the body arrives.
    const stickyHeader = version === undefined ? ctx.router.stickyHeader(name) : null;
    const sticky = stickyHeader !== null ? req.getHeader(stickyHeader) || undefined : undefined;
    if (ctx.draining) {
      ctx.monitor.unrouted(route, sendError(res, shuttingDown(), ctx.log, true));
      return;
    }
    try {
      checkJsonContentType(contentType);
    } catch (e) {
      ctx.monitor.unrouted(route, sendError(res, e, ctx.log, true));
      return;
    }
    readBody(
      res,
      contentLength,
      limits,
      (buf) => {
        let target: Target | undefined;
        try {
          const body = parseJson(buf);
          target = targetOf(ctx, name, version, sticky);
          const model = target.model;
          const decoded = route === 'predict' ? decodeInstances(model, body, buf.length) : decodeOip(model, body, buf.length);
          const pair = target.shadow !== null ? new ShadowPair(target.shadow.agreement) : null;
          const p = new HttpInference(res, ctx, model, monitorOf(ctx, model), route, decoded, t0, t0 + timeout, target, pair, decoded.id ?? nextRequestId());
          model.batcher.commit(decoded.batch, p);
          if (pair !== null) sendShadow(target.shadow!, pair, { kind: route === 'predict' ? 'predict' : 'oip', body, maxElements: buf.length }, timeout);
        } catch (e) {
          const status = sendError(res, e, ctx.log);
          if (target !== undefined) monitorOf(ctx, target.model).request(route, status, performance.now() - t0, target.variant);
          else ctx.monitor.unrouted(route, status);
        }
      },
      (err) => ctx.monitor.unrouted(route, sendError(res, err, ctx.log)),
    );
  };
}

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
  app.post('/v2/models/:model/infer', inferenceHandler(ctx, 'infer', false));
  app.post('/v2/models/:model/versions/:version/infer', inferenceHandler(ctx, 'infer', true));

  // KServe v1
  app.post('/v1/models/:model', inferenceHandler(ctx, 'predict', false));
  app.post('/v1/models/:model/versions/:version', inferenceHandler(ctx, 'predict', true));
  app.get('/v1/models', (res) => {
    const names = [...new Set(ctx.engine.list().map((m) => m.name))];
    sendJson(res, 200, JSON.stringify({ models: names }));
  });
  app.get('/v1/models/:model', withModel(false, readiness));
}

/** Route patterns served, for answering 405 rather than 404 on a known path with the wrong method. */
export const OIP_PATTERNS = [
  '/v2',
  '/v2/health/live',
  '/v2/health/ready',
  '/v2/models/:model',
  '/v2/models/:model/versions/:version',
  '/v2/models/:model/ready',
  '/v2/models/:model/versions/:version/ready',
  '/v2/models/:model/infer',
  '/v2/models/:model/versions/:version/infer',
  '/v1/models',
  '/v1/models/:model',
  '/v1/models/:model/versions/:version',
];
