// WebSocket /v1/stream: pipelined scoring with JSON frames
// `{"id", "model", "version"?, "inputs": [OIP inputs], "outputs"?}` answered, as batches complete, by
// `{"id", "model_version", "outputs"}` or `{"id", "error", "status"}`; and realtime event frames
// `{"id", "event", "entity", "ts"?, "fields"?}` answered by `{"id", "accepted", "ignored"}`. Backpressure: answers go out
// while the socket's buffered amount is under maxBackpressureBytes, else wait in a per-connection
// outbox that drains on `drain`. A connection may have maxInflightPerConnection requests in flight
// (more get a 429 answer); when its outbox holds that many unread answers the reader is too slow
// and the connection is closed (1008), so a client that never reads cannot grow server memory.

import { badRequest, isScorelineError, ScorelineError, shuttingDown } from '../errors.js';
import type { LoadedModel, RunResult } from '../inference/index.js';
import type { ServerContext } from './context.js';
import { decodeOip } from './decode.js';
import { outputsJson } from './encode.js';
import { ingestFrame } from './score.js';
import { errorResponse, isObject } from './http.js';
import { infer, type Answering, type Protocol, type Reply } from './inference.js';
import type { TemplatedApp, WebSocket } from './uws.js';

interface Conn {
  /** Requests accepted and not yet answered. */
  inflight: number;
  /** Answers waiting for the socket to drain. */
  outbox: string[];
  closed: boolean;
  /** The upgrade request's headers (lower-case names): a deployment's sticky header applies to the whole connection. */
  headers: Map<string, string>;
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

export function registerStream(app: TemplatedApp, ctx: ServerContext): StreamHandle {
  const cfg = ctx.config.websocket;
  const limits: Limits = { backpressure: cfg.maxBackpressureBytes, outbox: cfg.maxInflightPerConnection };
  const open = new Set<Socket>();

  app.ws<Conn>('/v1/stream', {
    maxPayloadLength: Math.min(cfg.maxPayloadBytes * UWS_PAYLOAD_FACTOR, 2 ** 31 - 1),
    // Our own outbox enforces the limit; uWS must never drop a frame we decided to send.
    maxBackpressure: 1024 * 1024 * 1024,
    closeOnBackpressureLimit: 0,
    idleTimeout: cfg.idleTimeoutSeconds,
    sendPingsAutomatically: true,
    upgrade: (res, req, context) => {
      if (ctx.draining) {
        res.cork(() => res.writeStatus('503 Service Unavailable').writeHeader('content-type', 'application/json').end(`{${shuttingDown().jsonFields}}`, true));
        return;
      }
      try {
        // A page on another site may open a WebSocket to us (browsers do not preflight them): only allowed origins.
        ctx.http.origins.check(req.getHeader('origin'), req.getHeader('host'));
      } catch (e) {
        const err = errorResponse(e, ctx.log);
        res.cork(() => res.writeStatus('403 Forbidden').writeHeader('content-type', 'application/json').end(`{${err.jsonFields}}`, true));
        return;
      }
      const headers = new Map<string, string>();
      req.forEach((k, v) => headers.set(k, v));
      const conn: Conn = { inflight: 0, outbox: [], closed: false, headers };
      res.upgrade(conn, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
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
        const v = frame.version;
        if (v !== undefined && typeof v !== 'string' && typeof v !== 'number') throw badRequest('"version" must be a string or a number');
        if (conn.inflight >= cfg.maxInflightPerConnection) {
          throw new ScorelineError('QUEUE_FULL', `more than ${cfg.maxInflightPerConnection} requests in flight on this connection; wait for answers`, 1);
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

  return {
    closeAll() {
      for (const ws of open) ws.end(CLOSE_GOING_AWAY, 'server shutting down');
    },
    get connections() {
      return open.size;
    },
    get queuedAnswers() {
      let n = 0;
      for (const ws of open) n += ws.getUserData().outbox.length;
      return n;
    },
  };
}
