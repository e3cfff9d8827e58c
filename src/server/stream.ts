// WebSocket /v1/stream: pipelined scoring with JSON frames
// `{"id", "model", "version"?, "inputs": [OIP inputs], "outputs"?}` answered, as batches complete, by
// `{"id", "model_version", "outputs"}` or `{"id", "error", "status"}`; and realtime event frames
// `{"id", "event", "entity", "ts"?, "fields"?}` answered by `{"id", "accepted", "ignored"}`. Backpressure: answers go out
// while the socket's buffered amount is under maxBackpressureBytes, else wait in a per-connection
// outbox that drains on `drain`. A connection may have maxInflightPerConnection requests in flight
// (more get a 429 answer); when its outbox holds that many unread answers the reader is too slow
// and the connection is closed (1008), so a client that never reads cannot grow server memory.
// With API keys on, the upgrade needs a key (Authorization or x-api-key header; 401 otherwise) and
// every frame the scope it uses: `infer` for inference frames, `events` for event frames (403 frame).

import { badRequest, isScorelineError, ScorelineError, shuttingDown } from '../errors.js';
import type { ApiKey, ApiKeys } from './api-keys.js';
import type { RequestOrigin } from './exchange.js';
import type { LoadedModel, RunResult } from '../inference/index.js';
import { isObject } from '../json.js';
import type { ServerContext } from './context.js';
import { decodeOip } from './decode.js';
import { outputsJson } from './encode.js';
import { ingestFrame } from './score.js';
import { errorResponse, STATUS_LINES } from './http.js';
import { infer, type Answering, type Protocol, type Reply } from './inference.js';
import type { HttpResponse, TemplatedApp, WebSocket } from './uws.js';

interface Conn {
  /** Requests accepted and not yet answered. */
  inflight: number;
  /** Answers waiting for the socket to drain. */
  outbox: string[];
  closed: boolean;
  /** The upgrade request's headers (lower-case names): a deployment's sticky header applies to the whole connection. */
  headers: Map<string, string>;
  /** The API key the connection was opened with (null: auth off). */
  key: ApiKey | null;
  /** What every request of the connection carries: the key id, for the prediction log. */
  origin: RequestOrigin;
}

type Socket = WebSocket<Conn>;

export const CLOSE_SLOW_CONSUMER = 1008;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_TOO_BIG = 1009;
/**
 * uWS v20.30 drops a connection whose frame exceeds its maxPayloadLength without a close frame (the
 * peer sees 1006), so uWS gets this multiple of the configured limit and the limit is enforced here
 * with 1009 and a reason. Frames beyond uWS's own cut-off still end in 1006.
 */
export const UWS_PAYLOAD_FACTOR = 4;

interface Limits {
  readonly backpressure: number;
  readonly outbox: number;
}

function deliver(ws: Socket, conn: Conn, text: string, limits: Limits): void {
  if (conn.closed) return;
  if (conn.outbox.length === 0 && ws.getBufferedAmount() < limits.backpressure) {
    ws.cork(() => ws.send(text, false));
  } else if (conn.outbox.length < limits.outbox) {
    conn.outbox.push(text);
  } else {
    conn.closed = true;
    conn.outbox.length = 0;
    ws.end(CLOSE_SLOW_CONSUMER, `${limits.outbox} answers unread: the client reads too slowly`);
  }
}

function errorFrame(id: string, err: ScorelineError): string {
  return `{"id":${id},${err.jsonFields},"status":${err.status}}`;
}

/** An OIP inference frame, its size (bounding declared tensor sizes) and its id as JSON text. */
interface Frame {
  readonly frame: Record<string, unknown>;
  readonly size: number;
  readonly idJson: string;
}

/** OIP v2 request frames, answered `{"id", "model_version", "outputs"}`. */
const STREAM_OIP: Protocol<Frame> = {
  route: 'stream',
  decode: (m, f) => decodeOip(m, f.frame, f.size, false),
  encode: (m: LoadedModel, result: RunResult, rowStart: number, a: Answering<Frame>) =>
    `{"id":${a.input.idJson},"model_version":"${m.version}","outputs":${outputsJson(m, result, rowStart, a.decoded.rows, a.decoded.select)}}`,
  shadow: (m, f) => decodeOip(m, f.frame, f.size, false),
};

/** A WebSocket connection as the inference step's reply: answers go through the outbox. */
class FrameReply implements Reply {
  constructor(
    private readonly ws: Socket,
    private readonly conn: Conn,
    private readonly limits: Limits,
    private readonly idJson: string,
  ) {}
  get origin(): RequestOrigin {
    return this.conn.origin;
  }
  ok(body: string): void {
    this.conn.inflight--;
    deliver(this.ws, this.conn, body, this.limits);
  }
  fail(err: ScorelineError): number {
    this.conn.inflight--;
    deliver(this.ws, this.conn, errorFrame(this.idJson, err), this.limits);
    return err.status;
  }
}

export interface StreamHandle {
  /** Closes every connection once its pending answers have been sent. */
  closeAll(): void;
  readonly connections: number;
  /** Answers held in outboxes, summed over connections. */
  readonly queuedAnswers: number;
}

/** The open connections of every app the stream is registered on (a TLS reload registers it on a new one). */
export class Streams implements StreamHandle {
  readonly open = new Set<Socket>();
  closeAll(): void {
    for (const ws of this.open) ws.end(CLOSE_GOING_AWAY, 'server shutting down');
  }
  get connections(): number {
    return this.open.size;
  }
  get queuedAnswers(): number {
    let n = 0;
    for (const ws of this.open) n += ws.getUserData().outbox.length;
    return n;
  }
}

/** Refuses an upgrade with a JSON error and closes. */
function refuseUpgrade(res: HttpResponse, err: ScorelineError): void {
  res.cork(() => {
    res.writeStatus(STATUS_LINES[err.status] ?? `${err.status} Error`).writeHeader('content-type', 'application/json');
    if (err.status === 401) res.writeHeader('www-authenticate', 'Bearer realm="scoreline"');
    res.end(`{${err.jsonFields}}`, true);
  });
}

export function registerStream(app: TemplatedApp, ctx: ServerContext, streams = new Streams(), keys: ApiKeys | null = null): Streams {
  const cfg = ctx.config.websocket;
  const limits: Limits = { backpressure: cfg.maxBackpressureBytes, outbox: cfg.maxInflightPerConnection };
  const open = streams.open;

  app.ws<Conn>('/v1/stream', {
    maxPayloadLength: Math.min(cfg.maxPayloadBytes * UWS_PAYLOAD_FACTOR, 2 ** 31 - 1),
    // Our own outbox enforces the limit; uWS must never drop a frame we decided to send.
    maxBackpressure: 1024 * 1024 * 1024,
    closeOnBackpressureLimit: 0,
    idleTimeout: cfg.idleTimeoutSeconds,
    sendPingsAutomatically: true,
    upgrade: (res, req, context) => {
      if (ctx.draining) {
        res.cork(() =>
          res
            .writeStatus('503 Service Unavailable')
            .writeHeader('content-type', 'application/json')
            .end(`{${shuttingDown().jsonFields}}`, true),
        );
        return;
      }
      let key: ApiKey | null = null;
      try {
        // A page on another site may open a WebSocket to us (browsers do not preflight them): only allowed origins.
        ctx.http.origins.check(req.getHeader('origin'), req.getHeader('host'));
        if (keys !== null) key = keys.authenticate(req.getHeader('authorization'), req.getHeader('x-api-key'));
      } catch (e) {
        refuseUpgrade(res, errorResponse(e, ctx.log));
        return;
      }
      const headers = new Map<string, string>();
      // Credentials stay out of the connection's state.
      req.forEach((k, v) => {
        if (k !== 'authorization' && k !== 'x-api-key') headers.set(k, v);
      });
      const conn: Conn = { inflight: 0, outbox: [], closed: false, headers, key, origin: key === null ? {} : { keyId: key.id } };
      res.upgrade(
        conn,
        req.getHeader('sec-websocket-key'),
        req.getHeader('sec-websocket-protocol'),
        req.getHeader('sec-websocket-extensions'),
        context,
      );
    },
    open: (ws) => {
      open.add(ws);
    },
    message: (ws, message, isBinary) => {
      const t0 = performance.now();
      const conn = ws.getUserData();
      if (conn.closed) return;
      if (message.byteLength > cfg.maxPayloadBytes) {
        conn.closed = true;
        conn.outbox.length = 0;
        // A close reason must fit in 123 bytes.
        ws.end(CLOSE_TOO_BIG, `frame of ${message.byteLength} bytes is over websocket.maxPayloadBytes (${cfg.maxPayloadBytes})`);
        ctx.monitor.unrouted('stream', 413);
        return;
      }
      let idJson = 'null';
      try {
        if (isBinary) throw badRequest('binary frames are not supported on /v1/stream; send JSON text frames');
        let frame: unknown;
        try {
          frame = JSON.parse(Buffer.from(message).toString('utf8'));
        } catch (e) {
          throw badRequest(`frame is not valid JSON: ${(e as Error).message}`);
        }
        if (!isObject(frame)) throw badRequest('frame must be a JSON object');
        // The id first, so that every refusal (even during shutdown) can be matched by the client.
        const id = frame.id;
        if (id !== undefined) {
          if (typeof id !== 'string' && typeof id !== 'number') throw badRequest('"id" must be a string or a number');
          idJson = JSON.stringify(id);
        }
        if (ctx.draining) throw shuttingDown();
        if (typeof frame.event === 'string') {
          if (conn.key !== null) keys!.authorize(conn.key, 'events');
          // A realtime event frame: stored, then acknowledged with the counts.
          conn.inflight++;
          const answer = idJson;
          ingestFrame(ctx.features, frame).then(
            (counts) => {
              conn.inflight--;
              deliver(ws, conn, `{"id":${answer},${counts}}`, limits);
            },
            (e) => {
              conn.inflight--;
              deliver(ws, conn, errorFrame(answer, isScorelineError(e) ? e : errorResponse(e, ctx.log)), limits);
            },
          );
          return;
        }
        if (typeof frame.model !== 'string') throw badRequest('"model" (a string) is required, or "event" for an event frame');
        if (conn.key !== null) keys!.authorize(conn.key, 'infer');
        const v = frame.version;
        if (v !== undefined && typeof v !== 'string' && typeof v !== 'number') throw badRequest('"version" must be a string or a number');
        if (conn.inflight >= cfg.maxInflightPerConnection) {
          throw new ScorelineError(
            'QUEUE_FULL',
            `more than ${cfg.maxInflightPerConnection} requests in flight on this connection; wait for answers`,
            1,
          );
        }
        const version = v === undefined ? undefined : String(v);
        const stickyHeader = version === undefined ? ctx.router.stickyHeader(frame.model) : null;
        conn.inflight++;
        infer(ctx, {
          protocol: STREAM_OIP,
          model: frame.model,
          version,
          sticky: stickyHeader === null ? undefined : conn.headers.get(stickyHeader),
          input: { frame, size: message.byteLength, idJson },
          reply: new FrameReply(ws, conn, limits, idJson),
          t0,
          requestId: typeof id === 'string' ? id : undefined,
        });
      } catch (e) {
        const err = isScorelineError(e) ? e : errorResponse(e, ctx.log);
        deliver(ws, conn, errorFrame(idJson, err), limits);
        ctx.monitor.unrouted('stream', err.status);
      }
    },
    drain: (ws) => {
      const conn = ws.getUserData();
      let sent = 0;
      while (sent < conn.outbox.length && ws.getBufferedAmount() < limits.backpressure) ws.send(conn.outbox[sent++]!, false);
      if (sent > 0) conn.outbox.splice(0, sent);
    },
    close: (ws) => {
      ws.getUserData().closed = true;
      open.delete(ws);
    },
  });

  return streams;
}
