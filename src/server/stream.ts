// WebSocket /v1/stream: pipelined scoring with JSON frames
// `{"id", "model", "version"?, "inputs": [OIP inputs], "outputs"?}` answered, as batches complete, by
// `{"id", "model_version", "outputs"}` or `{"id", "error", "status"}`; and realtime event frames
// `{"id", "event", "entity", "ts"?, "fields"?}` answered by `{"id", "accepted", "ignored"}`. Backpressure: answers go out
// while the socket's buffered amount is under maxBackpressureBytes, else wait in a per-connection
// outbox that drains on `drain`. A connection may have maxInflightPerConnection requests in flight
// (more get a 429 answer); when its outbox holds that many unread answers the reader is too slow
// and the connection is closed (1008), so a client that never reads cannot grow server memory.

import { badRequest, isScorelineError, ScorelineError, shuttingDown } from '../errors.js';
import type { LoadedModel, PendingRequest, RunResult } from '../inference/index.js';
import type { VersionMonitor } from '../monitoring/index.js';
import { monitorOf, targetOf, type ServerContext } from './context.js';
import { decodeOip, type DecodedRequest } from './decode.js';
import { outputsJson } from './encode.js';
import { ingestFrame, nextRequestId } from './score.js';
import { errorResponse, isObject } from './http.js';
import type { TemplatedApp, WebSocket } from './uws.js';

interface Conn {
  /** Requests accepted and not yet answered. */
  inflight: number;
  /** Answers waiting for the socket to drain. */
  outbox: string[];
  closed: boolean;
}

type Socket = WebSocket<Conn>;

export const CLOSE_SLOW_CONSUMER = 1008;
export const CLOSE_GOING_AWAY = 1001;

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
  return `{"id":${id},"error":${JSON.stringify(err.message)},"status":${err.status}}`;
}

class StreamInference implements PendingRequest {
  settled = false;
  constructor(
    private readonly ws: Socket,
    private readonly conn: Conn,
    private readonly limits: Limits,
    private readonly model: LoadedModel,
    private readonly mon: VersionMonitor,
    private readonly idJson: string,
    private readonly decoded: DecodedRequest,
    readonly enqueuedAt: number,
    readonly deadline: number,
    readonly requestId: string,
  ) {}

  get rows(): number {
    return this.decoded.rows;
  }

  resolve(result: RunResult, rowStart: number): void {
    const d = this.decoded;
    this.conn.inflight--;
    deliver(
      this.ws,
      this.conn,
      `{"id":${this.idJson},"model_version":"${this.model.version}","outputs":${outputsJson(this.model, result, rowStart, d.rows, d.select)}}`,
      this.limits,
    );
    this.mon.request('stream', 200, performance.now() - this.enqueuedAt);
  }

  reject(err: ScorelineError): void {
    this.conn.inflight--;
    deliver(this.ws, this.conn, errorFrame(this.idJson, err), this.limits);
    this.mon.request('stream', err.status, performance.now() - this.enqueuedAt);
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
  const timeout = ctx.config.server.requestTimeoutMs;
  const open = new Set<Socket>();

  app.ws<Conn>('/v1/stream', {
    maxPayloadLength: cfg.maxPayloadBytes,
    // Our own outbox enforces the limit; uWS must never drop a frame we decided to send.
    maxBackpressure: 1024 * 1024 * 1024,
    closeOnBackpressureLimit: 0,
    idleTimeout: cfg.idleTimeoutSeconds,
    sendPingsAutomatically: true,
    upgrade: (res, req, context) => {
      if (ctx.draining) {
        res.cork(() => res.writeStatus('503 Service Unavailable').end('{"error":"the server is shutting down"}', true));
        return;
      }
      const conn: Conn = { inflight: 0, outbox: [], closed: false };
      res.upgrade(conn, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
    },
    open: (ws) => {
      open.add(ws);
    },
    message: (ws, message, isBinary) => {
      const t0 = performance.now();
      const conn = ws.getUserData();
      let idJson = 'null';
      let model: LoadedModel | undefined;
      try {
        if (conn.closed) return;
        if (ctx.draining) throw shuttingDown();
        if (isBinary) throw badRequest('binary frames are not supported on /v1/stream; send JSON text frames');
        let frame: unknown;
        try {
          frame = JSON.parse(Buffer.from(message).toString('utf8'));
        } catch (e) {
          throw badRequest(`frame is not valid JSON: ${(e as Error).message}`);
        }
        if (!isObject(frame)) throw badRequest('frame must be a JSON object');
        const id = frame.id;
        if (id !== undefined) {
          if (typeof id !== 'string' && typeof id !== 'number') throw badRequest('"id" must be a string or a number');
          idJson = JSON.stringify(id);
        }
        if (typeof frame.event === 'string') {
          // A realtime event frame: stored, then acknowledged with the counts.
          conn.inflight++;
          ingestFrame(ctx.features, frame).then(
            (counts) => {
              conn.inflight--;
              deliver(ws, conn, `{"id":${idJson},${counts}}`, limits);
            },
            (e) => {
              conn.inflight--;
              deliver(ws, conn, errorFrame(idJson, isScorelineError(e) ? e : errorResponse(e, ctx.log)), limits);
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
        model = targetOf(ctx, frame.model, v === undefined ? undefined : String(v), undefined).model;
        const decoded = decodeOip(model, frame, message.byteLength, false);
        const p = new StreamInference(ws, conn, limits, model, monitorOf(ctx, model), idJson, decoded, t0, t0 + timeout, typeof frame.id === 'string' ? frame.id : nextRequestId());
        conn.inflight++;
        model.batcher.commit(decoded.batch, p);
      } catch (e) {
        const err = isScorelineError(e) ? e : errorResponse(e, ctx.log);
        deliver(ws, conn, errorFrame(idJson, err), limits);
        if (model !== undefined) monitorOf(ctx, model).request('stream', err.status, performance.now() - t0);
        else ctx.monitor.unrouted('stream', err.status);
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
