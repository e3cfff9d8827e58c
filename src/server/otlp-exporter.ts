// Spans to an OpenTelemetry collector over OTLP/HTTP: protobuf (the default, as collectors expect
// it) or JSON, encoded by the OpenTelemetry project's own serializers. A batch the collector cannot
// take now (connection refused, 429, 502-504, timeout) is retried with backoff a few times, then
// given up: counted, and logged once per failure episode with one line when exports work again.
// Traces are telemetry: losing some while the collector is down must never hold up requests.

import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { Logger } from 'pino';
import type { TraceExportStats } from './tracing.js';

// ExportResultCode of @opentelemetry/core (SUCCESS 0, FAILED 1), without loading that package here.
const SUCCESS = 0;
const FAILED = 1;
const RETRYABLE = new Set([429, 502, 503, 504]);
const ATTEMPTS = 4;
const BACKOFF_MS = 250;

export interface OtlpExporterOptions {
  /** The collector's base URL (`/v1/traces` is appended) or the full traces URL. */
  readonly endpoint: string;
  readonly protocol: 'http/protobuf' | 'http/json';
  readonly headers: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  readonly log: Logger;
  readonly stats: TraceExportStats;
}

/** `http://collector:4318` -> `http://collector:4318/v1/traces`; a URL with a path is used as it is. */
export function tracesUrl(endpoint: string): string {
  const u = new URL(endpoint);
  if (u.pathname === '' || u.pathname === '/') u.pathname = '/v1/traces';
  return u.toString();
}

export class OtlpHttpExporter implements SpanExporter {
  private readonly url: string;
  private readonly headers: Record<string, string>;
  private readonly inflight = new Set<Promise<void>>();
  private failingSince: number | null = null;
  private failedInEpisode = 0;
  private stopped = false;

  constructor(private readonly opts: OtlpExporterOptions) {
    this.url = tracesUrl(opts.endpoint);
    this.headers = { ...opts.headers, 'content-type': opts.protocol === 'http/json' ? 'application/json' : 'application/x-protobuf' };
  }

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    if (this.stopped) {
      done({ code: FAILED, error: new Error('the trace exporter is shut down') });
      return;
    }
    const serializer = this.opts.protocol === 'http/json' ? JsonTraceSerializer : ProtobufTraceSerializer;
    let body: Uint8Array | undefined;
    try {
      body = serializer.serializeRequest(spans);
    } catch (e) {
      body = undefined;
      this.opts.log.error({ err: (e as Error).message, spans: spans.length }, 'spans could not be encoded; dropped');
    }
    if (body === undefined) {
      this.opts.stats.failed += spans.length;
      done({ code: FAILED, error: new Error('spans could not be encoded') });
      return;
    }
    const p = this.send(body, spans.length).then(
      () => done({ code: SUCCESS }),
      (e: Error) => done({ code: FAILED, error: e }),
    );
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private async send(body: Uint8Array, count: number): Promise<void> {
    let last = '';
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, BACKOFF_MS * 2 ** (attempt - 1)).unref());
      let status: number;
      try {
        const res = await fetch(this.url, {
          method: 'POST',
          headers: this.headers,
          body,
          signal: AbortSignal.timeout(this.opts.timeoutMs),
        });
        status = res.status;
        // Drain the body so the connection goes back to the pool.
        await res.arrayBuffer().catch(() => undefined);
      } catch (e) {
        last = (e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message;
        continue;
      }
      if (status >= 200 && status < 300) {
        this.opts.stats.exported += count;
        this.recovered();
        return;
      }
      last = `HTTP ${status}`;
      if (!RETRYABLE.has(status)) break;
    }
    this.opts.stats.failed += count;
    this.failedInEpisode += count;
    if (this.failingSince === null) {
      this.failingSince = Date.now();
      this.opts.log.warn(
        { url: this.url, err: last, spans: count },
        'the collector did not take these spans; they are dropped (requests are not affected)',
      );
    }
    throw new Error(`OTLP export to ${this.url} failed: ${last}`);
  }

  private recovered(): void {
    if (this.failingSince === null) return;
    this.opts.log.info(
      { url: this.url, droppedSpans: this.failedInEpisode, failedForSeconds: Math.round((Date.now() - this.failingSince) / 1000) },
      'exporting again',
    );
    this.failingSince = null;
    this.failedInEpisode = 0;
  }

  async forceFlush(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
  }

  async shutdown(): Promise<void> {
    await this.forceFlush();
    this.stopped = true;
  }
}
