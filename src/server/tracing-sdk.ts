// The OpenTelemetry SDK behind Tracing, imported only when tracing.otlpEndpoint is set: a tracer
// provider with parent-based sampling (a request continues its caller's decision; new traces are
// sampled at tracing.sampleRatio), a batch span processor and the OTLP/HTTP exporter. Spans are
// parented explicitly (no context manager, no AsyncLocalStorage on the request path): the request's
// span is handed along with the request.

import {
  createTraceState,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type HrTime,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace-base';
import type { Logger } from 'pino';
import type { TracingConfig } from '../config.js';
import { OtlpHttpExporter } from './otlp-exporter.js';
import { formatTraceparent, parseTraceparent } from './traceparent.js';
import type { TraceExportStats, Tracing } from './tracing.js';

/**
 * Wall-clock time of a performance.now() reading, given the offset between the two clocks. The SDK
 * would measure that offset again for every span (with Date.now()'s millisecond steps), so children
 * could start before their parent; one offset per request keeps a request's spans in order, and
 * measuring it per request follows the wall clock's adjustments.
 */
function hrTime(t: number, offsetMs: number): HrTime {
  const ms = t + offsetMs;
  const s = Math.floor(ms / 1000);
  return [s, Math.round((ms - s * 1000) * 1e6)];
}

export class OtelTracing implements Tracing {
  readonly stats: TraceExportStats = { exported: 0, failed: 0 };
  private readonly provider: BasicTracerProvider;
  private readonly tracer: Tracer;
  /** The clock offset each request span was started with, for its children and its end. */
  private readonly offsets = new WeakMap<Span, number>();

  constructor(config: TracingConfig, log: Logger, version: string) {
    const exporter = new OtlpHttpExporter({
      endpoint: config.otlpEndpoint!,
      protocol: config.protocol,
      headers: config.headers,
      timeoutMs: 10_000,
      log,
      stats: this.stats,
    });
    this.provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': config.serviceName, 'service.version': version }),
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sampleRatio) }),
      spanProcessors: [
        new BatchSpanProcessor(exporter, { scheduledDelayMillis: config.exportIntervalMs, maxQueueSize: 16_384, maxExportBatchSize: 1024 }),
      ],
    });
    this.tracer = this.provider.getTracer('scoreline', version);
    log.info(
      { endpoint: config.otlpEndpoint, protocol: config.protocol, sampleRatio: config.sampleRatio },
      'exporting spans over OTLP/HTTP',
    );
  }

  request(name: string, t0: number, traceparent: string, tracestate: string, attributes: Attributes): Span {
    let ctx = ROOT_CONTEXT;
    const parent = traceparent === '' ? null : parseTraceparent(traceparent);
    if (parent !== null) {
      ctx = trace.setSpanContext(ROOT_CONTEXT, {
        traceId: parent.traceId,
        spanId: parent.spanId,
        traceFlags: parent.flags & 1,
        isRemote: true,
        ...(tracestate !== '' ? { traceState: createTraceState(tracestate) } : {}),
      });
    }
    const offset = Date.now() - performance.now();
    // Attributes after the sampling decision: an unsampled span would only copy them to drop them.
    const span = this.tracer.startSpan(name, { kind: SpanKind.SERVER, startTime: hrTime(t0, offset) }, ctx);
    if (span.isRecording()) {
      span.setAttributes(attributes);
      this.offsets.set(span, offset);
    }
    return span;
  }

  child(parent: Span, name: string, start: number, end: number, attributes?: Attributes): void {
    const offset = this.offsets.get(parent);
    if (offset === undefined) return; // not recording
    const span = this.tracer.startSpan(
      name,
      { kind: SpanKind.INTERNAL, startTime: hrTime(start, offset), ...(attributes ? { attributes } : {}) },
      trace.setSpan(ROOT_CONTEXT, parent),
    );
    span.end(hrTime(end, offset));
  }

  finish(span: Span, status: number, end: number): void {
    const offset = this.offsets.get(span);
    if (offset === undefined) {
      span.end();
      return;
    }
    span.setAttribute('http.response.status_code', status);
    // Server spans: only 5xx are errors (a 4xx is the client's, not this server's failure).
    if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end(hrTime(end, offset));
  }

  traceparent(span: Span): string {
    const c = span.spanContext();
    return formatTraceparent(c.traceId, c.spanId, c.traceFlags);
  }

  async shutdown(): Promise<void> {
    await this.provider.shutdown();
  }
}
