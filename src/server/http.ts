// HTTP plumbing over uWS: reading a JSON body under a size limit (413) and a content type (415),
// writing corked responses, and the one place where errors become HTTP responses. Follows the
// uWS rules: onAborted before anything async, headers read inside the handler, chunks copied.

import type { Logger } from 'pino';
import { bodyTooLarge, emptyBody, internal, invalidJson, isScorelineError, unsupportedMediaType, type ScorelineError } from '../errors.js';
import type { HttpRequest, HttpResponse } from './uws.js';

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
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
  504: '504 Gateway Timeout',
  507: '507 Insufficient Storage',
};

/** Per-response state kept on the uWS response object. */
export interface ResponseState {
  aborted?: boolean;
  answered?: boolean;
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
}

export function sendText(res: Res, status: number, contentType: string, body: string): void {
  if (res.aborted || res.answered) return;
  res.answered = true;
  res.cork(() => {
    if (status !== 200) res.writeStatus(STATUS_LINES[status] ?? `${status} Error`);
    res.writeHeader('content-type', contentType).end(body);
  });
}

/** The JSON error body and status for any thrown value; unknown errors are logged, never leaked. */
export function errorResponse(err: unknown, log?: Logger): ScorelineError {
  if (isScorelineError(err)) return err;
  log?.error({ err }, 'unexpected error while handling a request');
  return internal();
}

export function sendError(res: Res, err: unknown, log?: Logger, close = false): number {
  const e = errorResponse(err, log);
  const headers = e.retryAfter !== undefined ? { 'retry-after': String(e.retryAfter) } : undefined;
  // After a 413 the rest of the body may still be on the wire: close rather than parse it as a request.
  sendJson(res, e.status, `{"error":${JSON.stringify(e.message)}}`, headers, close || e.status === 413);
  return e.status;
}

export interface BodyLimits {
  maxBytes: number;
}

/** application/json, optionally with parameters; an absent content type is accepted as JSON. */
export function checkJsonContentType(contentType: string): void {
  if (contentType === '' || contentType === 'application/json') return;
  const base = contentType.split(';', 1)[0]!.trim().toLowerCase();
  if (base !== 'application/json' && !base.endsWith('+json')) throw unsupportedMediaType(contentType);
}

/**
 * Reads the whole body and hands it over as a Buffer (valid only during the callback when it is the
 * single chunk uWS delivered). Must be called synchronously inside the route handler.
 */
export function readBody(
  res: Res,
  contentLength: string,
  limits: BodyLimits,
  onBody: (body: Buffer) => void,
  onError: (err: ScorelineError) => void,
): void {
  res.onAborted(() => {
    res.aborted = true;
  });
  const declared = contentLength === '' ? -1 : Number(contentLength);
  if (declared > limits.maxBytes) {
    // Answer at once and close: reading a body we will refuse is wasted work.
    onError(bodyTooLarge(limits.maxBytes));
    return;
  }
  let acc: Buffer | null = null;
  let chunks: Buffer[] | null = null;
  let received = 0;
  res.onData((chunk, isLast) => {
    if (res.answered) return;
    const n = chunk.byteLength;
    if (isLast && received === 0) {
      // Common case: the whole body in one chunk, parsed before uWS neuters it.
      onBody(Buffer.from(chunk));
      return;
    }
    received += n;
    if (received > limits.maxBytes) {
      onError(bodyTooLarge(limits.maxBytes));
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
      (chunks ??= []).push(Buffer.from(Buffer.from(chunk)));
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

export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Reads the headers a JSON POST handler needs, synchronously (HttpRequest dies at the first await). */
export function jsonPostHeaders(req: HttpRequest): { contentType: string; contentLength: string } {
  return { contentType: req.getHeader('content-type'), contentLength: req.getHeader('content-length') };
}
