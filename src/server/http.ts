// HTTP plumbing over uWS: the one POST route helper (origin check, content type 415, size limit 413,
// body read, parsed and checked against the route's schema, early refusals), writing corked responses, and the one place where errors
// become HTTP responses. Follows the uWS rules: onAborted before anything async, headers and
// parameters read inside the handler before the body arrives, chunks copied.

import type { Logger } from 'pino';
import {
  bodyTooLarge,
  emptyBody,
  foreignOrigin,
  internal,
  invalidJson,
  isScorelineError,
  unsupportedMediaType,
  type ScorelineError,
} from '../errors.js';
import { bodyCheckOf } from './routes.js';
import type { RequestOrigin } from './exchange.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

export const STATUS_LINES: Record<number, string> = {
  200: '200 OK',
  201: '201 Created',
  204: '204 No Content',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  409: '409 Conflict',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  422: '422 Unprocessable Entity',
  426: '426 Upgrade Required',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
  504: '504 Gateway Timeout',
  507: '507 Insufficient Storage',
};

/** Per-response state kept on the uWS response object (with what the gate learned: request id, key, exchange). */
export interface ResponseState extends RequestOrigin {
  aborted?: boolean;
  answered?: boolean;
  /** An allowed cross-site origin, echoed in Access-Control-Allow-Origin. */
  allowOrigin?: string;
}

type Res = HttpResponse & ResponseState;

// The response being written inside res.cork(): module state instead of a closure per response.
const out: { res: Res; status: number; body: string; headers: Record<string, string> | undefined; close: boolean } = {
  res: null as unknown as Res,
  status: 200,
  body: '',
  headers: undefined,
  close: false,
};

function writeCorked(): void {
  const { res, status, body, headers, close } = out;
  if (status !== 200) res.writeStatus(STATUS_LINES[status] ?? `${status} Error`);
  res.writeHeader('content-type', 'application/json');
  if (headers) for (const k in headers) res.writeHeader(k, headers[k]!);
  if (res.allowOrigin !== undefined)
    res
      .writeHeader('access-control-allow-origin', res.allowOrigin)
      .writeHeader('vary', 'origin')
      .writeHeader('access-control-expose-headers', 'x-request-id, traceparent');
  if (res.requestId !== undefined) res.writeHeader('x-request-id', res.requestId);
  if (res.exchange?.span) res.writeHeader('traceparent', res.exchange.traceparent());
  res.end(body, close);
}

export function sendJson(res: Res, status: number, body: string, extraHeaders?: Record<string, string>, close = false): void {
  if (res.aborted || res.answered) return;
  res.answered = true;
  out.res = res;
  out.status = status;
  out.body = body;
  out.headers = extraHeaders;
  out.close = close;
  res.cork(writeCorked);
  out.res = null as unknown as Res;
  out.body = '';
  if (res.exchange !== undefined) res.exchange.end(status, res);
}

export function sendText(res: Res, status: number, contentType: string, body: string): void {
  if (res.aborted || res.answered) return;
  res.answered = true;
  res.cork(() => {
    if (status !== 200) res.writeStatus(STATUS_LINES[status] ?? `${status} Error`);
    res.writeHeader('content-type', contentType);
    if (res.requestId !== undefined) res.writeHeader('x-request-id', res.requestId);
    if (res.exchange?.span) res.writeHeader('traceparent', res.exchange.traceparent());
    res.end(body);
  });
  if (res.exchange !== undefined) res.exchange.end(status, res);
}

/** Marks a response whose client went away; its exchange ends as 499 (the status nginx logs for it). */
export function markAborted(res: Res): void {
  res.aborted = true;
  if (res.exchange !== undefined) res.exchange.end(499, res);
}

/** The JSON error body and status for any thrown value; unknown errors are logged, never leaked. */
export function errorResponse(err: unknown, log?: Logger): ScorelineError {
  if (isScorelineError(err)) return err;
  log?.error({ err }, 'unexpected error while handling a request');
  return internal();
}

/** A 401 says how to authenticate (RFC 7235). */
const BEARER_CHALLENGE: Record<string, string> = { 'www-authenticate': 'Bearer realm="scoreline"' };

export function sendError(res: Res, err: unknown, log?: Logger, close = false): number {
  const e = errorResponse(err, log);
  const headers = e.retryAfter !== undefined ? { 'retry-after': String(e.retryAfter) } : e.status === 401 ? BEARER_CHALLENGE : undefined;
  // After a 413 the rest of the body may still be on the wire: close rather than parse it as a request.
  sendJson(res, e.status, `{${e.jsonFields}}`, headers, close || e.status === 413);
  return e.status;
}

export interface BodyLimits {
  maxBytes: number;
}

/**
 * application/json (or +json), optionally with parameters. A body without a content type is refused:
 * a browser sends cross-site "simple" requests (no preflight) only as text/plain, form encodings or
 * with no type, so requiring JSON keeps forms on other sites from posting here.
 */
export function checkJsonContentType(contentType: string): void {
  if (contentType === 'application/json') return;
  const base = contentType.split(';', 1)[0]!.trim().toLowerCase();
  if (base !== 'application/json' && !base.endsWith('+json')) throw unsupportedMediaType(contentType === '' ? '(none)' : contentType);
}

/** JSON or nothing: for routes behind a bearer token, which a cross-site form cannot send. */
export function checkOptionalJsonContentType(contentType: string): void {
  if (contentType !== '') checkJsonContentType(contentType);
}

/** Which cross-site origins may call the server (`cors.allowedOrigins`; default none). */
export class OriginPolicy {
  private readonly allowed: ReadonlySet<string>;
  private readonly any: boolean;

  constructor(origins: readonly string[]) {
    this.any = origins.includes('*');
    this.allowed = new Set(origins.map((o) => o.toLowerCase().replace(/\/+$/, '')));
  }

  /**
   * Checks a request's Origin header: none (not a browser's cross-site call) or this server's own
   * origin passes silently (returns null); an allowed origin is returned to echo back; anything
   * else throws 403.
   */
  check(origin: string, host: string): string | null {
    if (origin === '') return null;
    const o = origin.toLowerCase();
    // Same origin: the browser shows the page of this very server (the dashboard).
    if (host !== '' && (o === `http://${host.toLowerCase()}` || o === `https://${host.toLowerCase()}`)) return null;
    if (this.any || this.allowed.has(o)) return origin;
    throw foreignOrigin(origin);
  }
}

/** A POST request as the route helper hands it over, read before the body arrived. */
export interface PostRequest {
  readonly params: readonly string[];
  /** Values of the headers the route asked for, in order ('' when absent). */
  readonly headers: readonly string[];
  /** Arrival time (performance.now()). */
  readonly t0: number;
}

export interface PostRoute {
  /** Default POST. */
  readonly method?: 'post' | 'put';
  readonly maxBytes: number;
  /** URL parameters to read. */
  readonly params: number;
  /** Names of headers to read, which may depend on the parameters (e.g. a deployment's sticky header). */
  readonly headers?: (params: readonly string[]) => readonly string[];
  /** Checks the content type; default: JSON (415 otherwise). */
  readonly contentType?: (contentType: string) => void;
  /** Parses the body as JSON (default true); 'optional' lets an empty body through as undefined; false hands over the raw bytes only. */
  readonly json?: boolean | 'optional';
  /** Refuses before the body is read, by throwing (auth, shutdown, feature switched off). */
  readonly admit?: (p: PostRequest) => void;
  /** Told the status of every answer the helper sends itself (refusals, unreadable bodies): monitoring. */
  readonly refused?: (status: number) => void;
  /** What a 413 says (default: the byte limit). */
  readonly tooLarge?: () => ScorelineError;
}

export interface PostContext {
  readonly log: Logger;
  readonly origins: OriginPolicy;
}

/**
 * The one POST route helper: origin (403), content type (415), admission, body size (413), body
 * read (copied out of uWS's chunks), parsed and checked against the route table's schema for it
 * (400), then `handle` with the parsed body (undefined
 * when `json` is false) and the raw bytes. Refusals before the body is read close the connection,
 * so an unread body is never parsed as the next request.
 */
export function postRoute(
  app: TemplatedApp,
  pattern: string,
  ctx: PostContext,
  route: PostRoute,
  handle: (res: Res, body: unknown, raw: Buffer, p: PostRequest) => void,
): void {
  const checkType = route.contentType ?? checkJsonContentType;
  const json = route.json ?? true;
  const method = route.method ?? 'post';
  app[method](pattern, (res: Res, req: HttpRequest) => {
    const t0 = performance.now();
    const params: string[] = [];
    for (let i = 0; i < route.params; i++) params.push(req.getParameter(i));
    const names = route.headers?.(params);
    const headers: string[] = [];
    if (names !== undefined) for (const n of names) headers.push(req.getHeader(n));
    const contentType = req.getHeader('content-type');
    const contentLength = req.getHeader('content-length');
    const origin = req.getHeader('origin');
    const host = origin === '' ? '' : req.getHeader('host');
    const p: PostRequest = { params, headers, t0 };
    try {
      const allow = ctx.origins.check(origin, host);
      if (allow !== null) res.allowOrigin = allow;
      checkType(contentType);
      route.admit?.(p);
    } catch (e) {
      const status = sendError(res, e, ctx.log, true);
      route.refused?.(status);
      return;
    }
    readBody(
      res,
      contentLength,
      { maxBytes: route.maxBytes },
      (buf) => {
        let body: unknown;
        try {
          body = json === false || (json === 'optional' && buf.length === 0) ? undefined : parseJson(buf);
          if (body !== undefined && check !== null) check(body);
        } catch (e) {
          // Answered first: `refused?.(sendError(...))` would skip the answer on routes without a `refused`.
          const status = sendError(res, e, ctx.log);
          route.refused?.(status);
          return;
        }
        handle(res, body, buf, p);
      },
      (err) => {
        const status = sendError(res, err.status === 413 && route.tooLarge ? route.tooLarge() : err, ctx.log);
        route.refused?.(status);
      },
    );
  });
  // The route's request body schema, from the route table it was just registered in (null: its
  // body is bytes, or checked by its own parser: see schemas.ts).
  const check = bodyCheckOf(app, method, pattern);
}

/** Answers CORS preflights (OPTIONS) on every path: allowed origins get the methods and headers the API takes, others 403. */
export function registerPreflight(app: TemplatedApp, ctx: PostContext, patterns: readonly string[]): void {
  for (const pattern of ['/*', ...patterns]) app.options(pattern, (res: Res, req: HttpRequest) => preflight(res, req, ctx));
}

function preflight(res: Res, req: HttpRequest, ctx: PostContext): void {
  const origin = req.getHeader('origin');
  const host = req.getHeader('host');
  try {
    const allow = ctx.origins.check(origin, host);
    res.cork(() => {
      res.writeStatus('204 No Content');
      if (allow !== null) res.writeHeader('access-control-allow-origin', allow).writeHeader('vary', 'origin');
      res.writeHeader('access-control-allow-methods', 'GET, POST, PUT, DELETE, OPTIONS');
      res.writeHeader('access-control-allow-headers', 'content-type, authorization, x-api-key, x-request-id, traceparent, tracestate');
      res.writeHeader('access-control-max-age', '600');
      res.end();
    });
  } catch (e) {
    sendError(res, e, ctx.log);
  }
}

/**
 * Reads the whole body and hands it over as a Buffer (valid only during the callback when it is the
 * single chunk uWS delivered). Must be called synchronously inside the route handler.
 */
/** How much of a refused body is read (and dropped) before the 413, so the client gets to read it. */
const LINGER_BYTES = 16 * 1024 * 1024;

export function readBody(
  res: Res,
  contentLength: string,
  limits: BodyLimits,
  onBody: (body: Buffer) => void,
  onError: (err: ScorelineError) => void,
): void {
  res.onAborted(() => markAborted(res));
  const declared = contentLength === '' ? -1 : Number(contentLength);
  // A body over the limit is refused once the client has sent it (up to LINGER_BYTES): answered while
  // it is still writing, the connection would close under it and the client would see a broken pipe
  // instead of the 413. A client declaring more than that is answered at once.
  let refused: ScorelineError | null = null;
  if (declared > limits.maxBytes) {
    refused = bodyTooLarge(limits.maxBytes);
    if (declared > LINGER_BYTES) {
      onError(refused);
      return;
    }
  }
  let acc: Buffer | null = null;
  let chunks: Buffer[] | null = null;
  let received = 0;
  res.onData((chunk, isLast) => {
    if (res.answered) return;
    const n = chunk.byteLength;
    if (refused !== null) {
      received += n;
      if (isLast || received > LINGER_BYTES) onError(refused);
      return;
    }
    if (isLast && received === 0) {
      // Common case: the whole body in one chunk, parsed before uWS neuters it.
      onBody(Buffer.from(chunk));
      return;
    }
    received += n;
    if (received > limits.maxBytes) {
      refused = bodyTooLarge(limits.maxBytes);
      acc = null;
      chunks = null;
      if (isLast || received > LINGER_BYTES) onError(refused);
      return;
    }
    if (declared > 0) {
      acc ??= Buffer.allocUnsafe(declared);
      if (received > declared) {
        onError(bodyTooLarge(declared));
        return;
      }
      Buffer.from(chunk).copy(acc, received - n);
    } else {
      chunks ??= [];
      chunks.push(Buffer.from(Buffer.from(chunk)));
    }
    if (isLast) onBody(acc !== null ? acc.subarray(0, received) : Buffer.concat(chunks ?? [], received));
  });
}

/** Parses a JSON body, mapping failures to 400s with the parser's reason. */
export function parseJson(body: Buffer): unknown {
  if (body.length === 0) throw emptyBody();
  const text = body.toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    if (text.trim() === '') throw emptyBody();
    throw invalidJson((e as Error).message);
  }
}
