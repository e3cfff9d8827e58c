// The one inference step every transport calls (OIP v2 over HTTP, v1 :predict, entity scoring,
// WebSocket frames, OIP over gRPC): resolve the target version and variant (deployment router, or
// the version the request names), prepare (entity scoring resolves features here, possibly
// asynchronously), decode into the version's open batch, commit, copy to the shadow; and when the
// batch comes back, encode the answer, send it through the transport's Reply, and record the
// request in the monitor, the deployment's step statistics and the shadow pair. The prediction log
// sees every row through the batch observer, under the request id and variant set here. So canary
// analysis, A/B statistics, shadow comparison, monitoring and the prediction log see all traffic,
// whatever carried it.

import { errorResponse } from './http.js';
import { internal, isScorelineError, type ScorelineError } from '../errors.js';
import type { Target } from '../deploy/index.js';
import type { Batch, LoadedModel, PendingRequest, RunResult } from '../inference/index.js';
import type { Route, VersionMonitor } from '../monitoring/index.js';
import { monitorOf, ShadowPair, targetOf, type ServerContext } from './context.js';
import type { DecodedRequest } from './decode.js';
import { scoreOf } from './encode.js';
import { nextRequestId } from './request-id.js';
import { sendShadow } from './shadow.js';
import type { Exchange, RequestOrigin } from './exchange.js';

/**
 * How a transport answers one request. Each is called at most once per request. `Out` is what the
 * protocol's encoder makes (JSON text, a protobuf message object).
 */
export interface Reply<Out = string> {
  /** What the transport learned before the request was parsed: x-request-id, API key, exchange. */
  readonly origin?: RequestOrigin | undefined;
  ok(body: Out): void;
  /** Sends the error; returns the HTTP-equivalent status it was answered with. */
  fail(err: ScorelineError): number;
}

/**
 * A wire protocol: how a request's input becomes rows of a batch and how rows of a result become
 * its answer. `In` is what the transport parsed (a JSON body, a WebSocket frame, features).
 */
export interface Protocol<In, Out = string> {
  readonly route: Route;
  /** Work before any batch is touched; may be asynchronous. Throws to refuse the request. */
  prepare?(model: LoadedModel, input: In): In | Promise<In>;
  /** Reserves the version's open batch and writes the request's rows. Nothing is committed. */
  decode(model: LoadedModel, input: In): DecodedRequest;
  /**
   * The answer for rows [rowStart, rowStart + decoded.rows) of a finished batch. A promise when the
   * request asked for work after its score (explanations): it must read `result` before its first
   * await, and the request is answered (and recorded in the monitor) when it settles.
   */
  encode(model: LoadedModel, result: RunResult, rowStart: number, request: Answering<In>): Out | Promise<Out>;
  /** Decodes the same input into a shadow version's batcher; throws when the shadow cannot take it. */
  shadow(model: LoadedModel, input: In): DecodedRequest;
}

/** What an encoder knows of the request it answers. */
export interface Answering<In> {
  readonly decoded: DecodedRequest;
  readonly requestId: string;
  /** The deployment variant that routed it (default, direct, canary, a, ..., explicit). */
  readonly variant: string;
  readonly input: In;
  /** When the request's deadline passes (performance.now() time). */
  readonly deadline: number;
}

/** One request as a transport hands it over. */
export interface Call<In, Out = string> {
  readonly protocol: Protocol<In, Out>;
  readonly model: string;
  /** The version named by the request, or undefined for the deployment's choice. */
  readonly version: string | undefined;
  /** The value of the deployment's sticky key (A/B), when the transport has it. */
  readonly sticky: string | undefined;
  readonly input: In;
  readonly reply: Reply<Out>;
  /** Arrival time (performance.now()). */
  readonly t0: number;
  /** The request id the transport was given (e.g. a frame id), used when the body names none. */
  readonly requestId?: string | undefined;
  /** The client's own deadline from arrival (a gRPC deadline), in ms; the request's is the shorter of it and server.requestTimeoutMs. */
  readonly timeoutMs?: number | undefined;
}

/** Times of a traced request (performance.now()): prepare (feature lookup) started, rows committed to a batch. */
type Traced = { prepareStart: number | null; committedAt: number };

class Inference<In, Out> implements PendingRequest, Answering<In> {
  settled = false;
  readonly rows: number;
  readonly enqueuedAt: number;
  readonly deadline: number;
  /** The API key that sent it, logged with its predictions. */
  readonly keyId: string | undefined;
  private readonly traced: Traced | null;

  constructor(
    private readonly call: Call<In, Out>,
    readonly input: In,
    private readonly target: Target,
    private readonly mon: VersionMonitor,
    readonly decoded: DecodedRequest,
    readonly requestId: string,
    private readonly pair: ShadowPair | null,
    timeoutMs: number,
    prepareStart: number | null,
  ) {
    this.rows = decoded.rows;
    this.enqueuedAt = call.t0;
    this.deadline = call.t0 + timeoutMs;
    const origin = call.reply.origin;
    this.keyId = origin?.keyId;
    this.traced = origin?.exchange?.recording ? { prepareStart, committedAt: performance.now() } : null;
  }

  get variant(): string {
    return this.target.variant;
  }

  resolve(result: RunResult, rowStart: number, batch?: Batch): void {
    const m = this.target.model;
    const call = this.call;
    const ex = call.reply.origin?.exchange;
    if (ex !== undefined) {
      ex.served(m.name, m.version, this.target.variant, this.requestId);
      if (this.traced !== null) this.parts(ex, result, batch);
    }
    const body = call.protocol.encode(m, result, rowStart, this);
    if (body instanceof Promise) {
      this.later(body, result, rowStart);
      return;
    }
    call.reply.ok(body);
    const ms = performance.now() - call.t0;
    this.mon.request(call.protocol.route, 200, ms, this.target.variant);
    // Scores are read only for deployments that watch them (canary, shadow).
    if (this.target.stats !== null || this.pair !== null) {
      const score = scoreOf(m, result, rowStart);
      this.target.stats?.record(200, ms, score, result);
      this.pair?.primary(score);
    }
  }

  /**
   * Child spans of the request: feature lookup, queue wait (commit to dispatch) and inference (the
   * batch's run, with the batch's size and sequence number as attributes, so requests that shared a
   * batch can be found; a batch span linked to each request would sit in a trace of its own).
   */
  private parts(ex: Exchange, result: RunResult, batch: Batch | undefined): void {
    const t = this.traced!;
    const now = performance.now();
    // Prepare is the feature lookup of entity scoring; it ends where the rows are written.
    if (t.prepareStart !== null) ex.part('feature lookup', t.prepareStart, t.committedAt);
    if (batch === undefined || batch.dispatchedAt < t.committedAt) {
      // A request split over several batches (or run alone after a batch failed): one span for all of it.
      ex.part('inference', t.committedAt, now, { 'scoreline.compute_ms': result.computeMs });
      return;
    }
    ex.part('queue', t.committedAt, batch.dispatchedAt);
    ex.part('inference', batch.dispatchedAt, now, {
      'scoreline.batch.seq': batch.seq,
      'scoreline.batch.rows': batch.rows,
      'scoreline.batch.requests': batch.requests.length,
      'scoreline.compute_ms': result.computeMs,
    });
  }

  /**
   * An answer that waits for work after the score. The version's statistics and the shadow pair get
   * the score and the time to it now (the wait says nothing about the version); the monitor records
   * the request once it is answered, under the protocol's route.
   */
  private later(body: Promise<Out>, result: RunResult, rowStart: number): void {
    const call = this.call;
    if (this.target.stats !== null || this.pair !== null) {
      const score = scoreOf(this.target.model, result, rowStart);
      this.target.stats?.record(200, performance.now() - call.t0, score, result);
      this.pair?.primary(score);
    }
    body.then(
      (text) => {
        call.reply.ok(text);
        this.mon.request(call.protocol.route, 200, performance.now() - call.t0, this.target.variant);
      },
      (e: unknown) => {
        const status = call.reply.fail(isScorelineError(e) ? e : internal());
        this.mon.request(call.protocol.route, status, performance.now() - call.t0, this.target.variant);
      },
    );
  }

  reject(err: ScorelineError): void {
    const ex = this.call.reply.origin?.exchange;
    if (ex !== undefined) ex.served(this.target.model.name, this.target.model.version, this.target.variant, this.requestId);
    const status = this.call.reply.fail(err);
    const ms = performance.now() - this.call.t0;
    this.mon.request(this.call.protocol.route, status, ms, this.target.variant);
    this.target.stats?.record(status, ms, null);
  }
}

/** Runs one request through the inference step; every outcome is answered through `call.reply`. */
export function infer<In, Out>(ctx: ServerContext, call: Call<In, Out>): void {
  let target: Target;
  try {
    target = targetOf(ctx, call.model, call.version, call.sticky);
  } catch (e) {
    ctx.monitor.unrouted(call.protocol.route, call.reply.fail(errorResponse(e, ctx.log)));
    return;
  }
  const prepare = call.protocol.prepare;
  const start = performance.now();
  if (prepare === undefined) {
    enqueue(ctx, call, target, call.input);
    return;
  }
  let prepared: In | Promise<In>;
  try {
    prepared = prepare.call(call.protocol, target.model, call.input);
  } catch (e) {
    failed(ctx, call, target, e);
    return;
  }
  if (prepared instanceof Promise) {
    prepared.then(
      (input) => enqueue(ctx, call, target, input, start),
      (e) => failed(ctx, call, target, e),
    );
  } else {
    enqueue(ctx, call, target, prepared, start);
  }
}

/** Decode and commit in one synchronous step: nothing else may touch the open batch in between. */
function enqueue<In, Out>(ctx: ServerContext, call: Call<In, Out>, target: Target, input: In, prepareStart: number | null = null): void {
  try {
    const model = target.model;
    const decoded = call.protocol.decode(model, input);
    const pair = target.shadow !== null ? new ShadowPair(target.shadow.agreement) : null;
    // The body's id, else the transport's (a frame id, an x-request-id header), else a new one.
    const requestId = decoded.id ?? call.requestId ?? call.reply.origin?.requestId ?? nextRequestId();
    const limit = ctx.config.server.requestTimeoutMs;
    const timeout = call.timeoutMs !== undefined && call.timeoutMs < limit ? call.timeoutMs : limit;
    const p = new Inference(call, input, target, monitorOf(ctx, model), decoded, requestId, pair, timeout, prepareStart);
    model.batcher.commit(decoded.batch, p);
    if (pair !== null)
      sendShadow(target.shadow!, pair, () => call.protocol.shadow(target.shadow!.model, input), ctx.config.server.requestTimeoutMs);
  } catch (e) {
    failed(ctx, call, target, e);
  }
}

function failed<In, Out>(ctx: ServerContext, call: Call<In, Out>, target: Target, e: unknown): void {
  const ex = call.reply.origin?.exchange;
  if (ex !== undefined)
    ex.served(target.model.name, target.model.version, target.variant, call.requestId ?? call.reply.origin?.requestId ?? null);
  const err = isScorelineError(e) ? e : errorResponse(e, ctx.log);
  const status = call.reply.fail(err);
  const ms = performance.now() - call.t0;
  monitorOf(ctx, target.model).request(call.protocol.route, status, ms, target.variant);
  // A request the client got wrong says nothing about the version; a full queue or a failure does.
  if (status >= 500 || status === 429) target.stats?.record(status, ms, null);
}
