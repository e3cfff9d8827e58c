// Tracing as the request path sees it: an interface with nothing behind it unless
// tracing.otlpEndpoint is set. Only then is the OpenTelemetry SDK imported (tracing-sdk.ts), so a
// server without tracing loads none of it, creates no span objects and parses no trace headers.

import type { Attributes, Span } from '@opentelemetry/api';
import type { Logger } from 'pino';
import type { TracingConfig } from '../config.js';

export type { Attributes, Span } from '@opentelemetry/api';

/** Counters of the exporter, for /metrics. */
export interface TraceExportStats {
  /** Spans the collector accepted. */
  exported: number;
  /** Spans given up on after retries (collector down, refusing, or too slow). */
  failed: number;
}

export interface Tracing {
  /**
   * Starts the SERVER span of a request at `t0` (performance.now()), continuing the trace its
   * traceparent / tracestate headers name ('' when absent), else starting one (sampled at
   * tracing.sampleRatio). Unsampled requests get a span that records nothing but still carries ids.
   */
  request(name: string, t0: number, traceparent: string, tracestate: string, attributes: Attributes): Span;
  /** A finished child of `parent` from `start` to `end` (performance.now() times). */
  child(parent: Span, name: string, start: number, end: number, attributes?: Attributes): void;
  /** Ends a request span with its HTTP status (5xx marks it an error). */
  finish(span: Span, status: number, end: number): void;
  /** The traceparent header of `span`, sent back so the caller can find this server's part. */
  traceparent(span: Span): string;
  readonly stats: TraceExportStats;
  /** Exports what is buffered and stops. */
  shutdown(): Promise<void>;
}

/** The tracer for `config`, or null when tracing is off (nothing is loaded then). */
export async function startTracing(config: TracingConfig, log: Logger, version: string): Promise<Tracing | null> {
  if (config.otlpEndpoint === null) return null;
  const { OtelTracing } = await import('./tracing-sdk.js');
  return new OtelTracing(config, log.child({ component: 'tracing' }), version);
}
