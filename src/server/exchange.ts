// One HTTP request and its answer as tracing and the access log see them. An Exchange exists only
// for requests that are traced (tracing on) or whose access line was sampled; every other request
// carries none, so with both off the request path allocates nothing for them. The route helpers
// fill in what they learn (the model version and variant that answered, the prediction id), and the
// one place that writes answers (http.ts) ends it with the status.

import type { AccessLog } from './access-log.js';
import type { Attributes, Span, Tracing } from './tracing.js';

/** What the gate learned about a request before its route ran; kept on the uWS response object. */
export interface RequestOrigin {
  /** x-request-id as the client sent it (validated); echoed on the answer. */
  requestId?: string | undefined;
  /** The id of the API key that authenticated the request. */
  keyId?: string | undefined;
  exchange?: Exchange | undefined;
}

export interface ExchangeSinks {
  readonly tracing: Tracing | null;
  readonly access: AccessLog | null;
}

export class Exchange {
  model: string | null = null;
  version: string | null = null;
  variant: string | null = null;
  /** The id the prediction was logged under, when no x-request-id named one. */
  predictionId: string | null = null;
  private ended = false;

  constructor(
    private readonly sinks: ExchangeSinks,
    readonly method: string,
    readonly path: string,
    readonly t0: number,
    /** The request's SERVER span, when traced. */
    readonly span: Span | null,
    /** Whether the access log takes this request. */
    private readonly logged: boolean,
  ) {}

  /** The model version and deployment variant that answered, and the id of the prediction. */
  served(model: string, version: string, variant: string, predictionId: string | null): void {
    this.model = model;
    this.version = version;
    this.variant = variant;
    this.predictionId = predictionId;
    const s = this.span;
    if (s?.isRecording()) {
      s.setAttributes({ 'scoreline.model': model, 'scoreline.model_version': version, 'scoreline.variant': variant });
      if (predictionId !== null) s.setAttribute('scoreline.request_id', predictionId);
    }
  }

  /** A finished part of the request (queue wait, inference, feature lookup) as a child span. */
  part(name: string, start: number, end: number, attributes?: Attributes): void {
    if (this.span !== null) this.sinks.tracing!.child(this.span, name, start, end, attributes);
  }

  /** Whether parts are worth measuring (the request span records). */
  get recording(): boolean {
    return this.span?.isRecording() ?? false;
  }

  traceparent(): string {
    return this.sinks.tracing!.traceparent(this.span!);
  }

  /** The answer went out with `status` (499: the client went away first). */
  end(status: number, origin: RequestOrigin): void {
    if (this.ended) return;
    this.ended = true;
    const now = performance.now();
    if (this.span !== null) {
      if (origin.keyId !== undefined && this.span.isRecording()) this.span.setAttribute('scoreline.api_key_id', origin.keyId);
      this.sinks.tracing!.finish(this.span, status, now);
    }
    if (!this.logged) return;
    const r = {
      method: this.method,
      path: this.path,
      status,
      duration_ms: Math.round((now - this.t0) * 1000) / 1000,
      model: this.model,
      version: this.version,
      variant: this.variant,
      request_id: origin.requestId ?? this.predictionId,
      key_id: origin.keyId ?? null,
    };
    this.sinks.access!.push(this.span !== null ? { ...r, trace_id: this.span.spanContext().traceId } : r);
  }
}
