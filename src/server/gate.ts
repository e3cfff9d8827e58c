// What every HTTP request passes before its route runs: its x-request-id (checked, kept to be echoed
// and to name the prediction), its API key and the scope the route needs (when auth is on), and,
// when tracing is on or the access log samples it, its Exchange (the request span continuing the
// caller's traceparent, and the access line). The gate wraps route registration on a uWS app, so no
// route can be added without an access rule: the route table (api.ts) gives every route its rule,
// and a route missing from it stops the server at start rather than being served open by accident.
// WebSocket upgrades are checked in stream.ts (their frames need per-frame scopes).

import type { Logger } from 'pino';
import type { ApiKeyScope } from '../config.js';
import { requestIdInvalid } from '../errors.js';
import type { AccessLog } from './access-log.js';
import type { ApiKeys } from './api-keys.js';
import type { ServerContext } from './context.js';
import { Exchange, type ExchangeSinks } from './exchange.js';
import { sendError, type ResponseState } from './http.js';
import type { TlsFiles } from './tls.js';
import type { Tracing } from './tracing.js';
import { accessOf } from './routes.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

type Res = HttpResponse & ResponseState;
type Handler = (res: Res, req: HttpRequest) => void;

/** Who may call a route: the route table's word for it (api.ts), which every route has. */
export type { Access } from './api.js';
export { accessOf };

/** x-request-id: visible ASCII and spaces (it is echoed as a header and logged), at most 128 characters. */
const REQUEST_ID = /^[\x20-\x7e]{1,128}$/;

export function checkRequestId(id: string): void {
  if (id.length > 128) throw requestIdInvalid(`is ${id.length} characters long; at most 128`);
  if (!REQUEST_ID.test(id)) throw requestIdInvalid('must be printable ASCII');
}

export interface GateOptions {
  /** null: auth off, every route open. */
  readonly keys: ApiKeys | null;
  readonly metricsPublic: boolean;
  readonly tracing: Tracing | null;
  readonly access: AccessLog | null;
  readonly log: Logger;
}

const REGISTRATIONS = new Set(['get', 'post', 'put', 'del', 'patch', 'any']);
const HAS_BODY = new Set(['post', 'put', 'patch', 'any']);

export class Gate {
  private readonly sinks: ExchangeSinks;

  constructor(private readonly opts: GateOptions) {
    this.sinks = { tracing: opts.tracing, access: opts.access };
  }

  /**
   * `app` with get/post/put/del/patch/any registrations passing through the gate; everything else
   * (ws, whose upgrade stream.ts checks; options, the CORS preflights; listen) is the app's own.
   */
  wrap(app: TemplatedApp): TemplatedApp {
    const proxy: TemplatedApp = new Proxy(app, {
      get: (target, prop) => {
        if (typeof prop === 'string' && REGISTRATIONS.has(prop)) {
          return (pattern: string, handler: Handler) => {
            (target as unknown as Record<string, (p: string, h: Handler) => void>)[prop]!(pattern, this.guard(prop, pattern, handler));
            return proxy;
          };
        }
        const v = Reflect.get(target, prop) as unknown;
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    return proxy;
  }

  private guard(method: string, pattern: string, handler: Handler): Handler {
    const rule = accessOf(method, pattern);
    if (rule === 'stream')
      throw new Error(
        `route ${pattern} is a WebSocket route: its upgrade is checked by stream.ts, not registered as ${method.toUpperCase()}`,
      );
    const { keys, tracing, access, log } = this.opts;
    const scope: ApiKeyScope | null =
      keys === null || rule === 'open' || rule === 'admin' || (rule === 'metrics' && this.opts.metricsPublic)
        ? null
        : rule === 'metrics'
          ? 'monitoring:read'
          : rule;
    // Traced: the data plane. Health checks, scrapes, the dashboard and the admin API would only add noise.
    const traced = tracing !== null && rule !== 'open' && rule !== 'admin' && rule !== 'metrics';
    const closeOnRefusal = HAS_BODY.has(method);
    const verb = method === 'del' ? 'DELETE' : method.toUpperCase();
    const spanName = `${verb} ${pattern}`;
    const anyMethod = method === 'any';
    const sinks = this.sinks;
    return (res, req) => {
      const sampled = access?.sample() ?? false;
      if (traced || sampled) {
        const t0 = performance.now();
        const path = req.getUrl();
        const span = traced
          ? tracing.request(spanName, t0, req.getHeader('traceparent'), req.getHeader('tracestate'), {
              'http.request.method': verb,
              'http.route': pattern,
              'url.path': path,
            })
          : null;
        res.exchange = new Exchange(sinks, anyMethod ? req.getMethod().toUpperCase() : verb, path, t0, span, sampled);
      }
      const requestId = req.getHeader('x-request-id');
      try {
        if (requestId !== '') {
          checkRequestId(requestId);
          res.requestId = requestId;
        }
        if (scope !== null) {
          const key = keys!.authenticate(req.getHeader('authorization'), req.getHeader('x-api-key'));
          res.keyId = key.id;
          keys!.authorize(key, scope);
        }
      } catch (e) {
        // Refused before its body was read: close, so the unread body is never taken for a request.
        sendError(res, e, log, closeOnRefusal);
        return;
      }
      handler(res, req);
    };
  }
}

/** Counters of what the gate and its sinks did: refusals, spans exported and dropped, access lines, the certificate's expiry. */
export function registerGateMetrics(
  ctx: ServerContext,
  keys: ApiKeys | null,
  tracing: Tracing | null,
  access: AccessLog | null,
  tls: TlsFiles | null,
): void {
  const m = ctx.monitor;
  if (keys !== null) {
    m.callback(
      'scoreline_auth_refusals_total',
      'Requests refused for their API key: missing (401), invalid (401), or lacking the scope the route needs (403).',
      'counter',
      () => (['missing', 'invalid', 'scope'] as const).map((reason) => ({ labels: { reason }, value: keys.refusals[reason] })),
    );
  }
  if (tracing !== null) {
    m.callback('scoreline_trace_spans_exported_total', 'Spans the OTLP collector accepted.', 'counter', () => [
      { labels: {}, value: tracing.stats.exported },
    ]);
    m.callback(
      'scoreline_trace_spans_failed_total',
      'Spans dropped because the OTLP collector did not take them after retries.',
      'counter',
      () => [{ labels: {}, value: tracing.stats.failed }],
    );
  }
  if (access !== null) {
    m.callback('scoreline_access_log_lines_total', 'Access log lines written (sampled requests).', 'counter', () => [
      { labels: {}, value: access.written },
    ]);
    m.callback('scoreline_access_log_dropped_total', 'Access log lines dropped because the buffer was full.', 'counter', () => [
      { labels: {}, value: access.dropped },
    ]);
  }
  if (tls !== null) {
    m.callback(
      'scoreline_tls_certificate_expiry_timestamp_seconds',
      'When the serving TLS certificate expires (Unix time); alert well before it.',
      'gauge',
      () => [{ labels: {}, value: Date.parse(tls.pair.notAfter) / 1000 }],
    );
  }
}
