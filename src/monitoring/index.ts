// Monitoring of what the server serves: Prometheus metrics (prom-client, DESIGN.md section 4) and,
// per model version, exact latency percentiles (HDR), RPS and error rate for the JSON snapshot.
// Recording is a handful of array/counter updates per request, with label children cached.

import client from 'prom-client';
import type { BatchObserver, PendingRequest } from '../inference/index.js';
import { LatencyRecorder, RateCounter } from './latency.js';
import { CallbackFamily, CounterFamily, HistogramFamily, type CounterCell, type HistogramCell } from './prometheus.js';

export { LatencyRecorder, RateCounter, type LatencySnapshot } from './latency.js';

export type Route = 'infer' | 'predict' | 'stream' | 'score';
const ROUTES: readonly Route[] = ['infer', 'predict', 'stream', 'score'];
const ROUTE_INDEX: Record<Route, number> = { infer: 0, predict: 1, stream: 2, score: 3 };
const CLASSES = ['2xx', '4xx', '5xx'] as const;

/** Sub-millisecond resolution where scoreline lives, seconds at the tail. */
const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

const statusClass = (status: number): number => (status < 400 ? 0 : status < 500 ? 1 : 2);
/** Errors for the error rate: server-side failures and load shedding, not client mistakes. */
const isError = (status: number): boolean => status >= 500 || status === 429;

export interface VolumeSnapshot {
  requests: number;
  errors: number;
  rps: number;
  error_rate: number | null;
}

interface Metrics {
  requests: CounterFamily;
  duration: HistogramFamily;
  queue: HistogramFamily;
  compute: HistogramFamily;
  batch: HistogramFamily;
}

export class VersionMonitor implements BatchObserver {
  readonly latency = new LatencyRecorder();
  readonly volume = new RateCounter(60);
  readonly errors = new RateCounter(60);
  /** Per variant label: cells by route x status class, and duration by route. */
  private readonly variants = new Map<string, { requests: CounterCell[][]; duration: HistogramCell[] }>();
  private readonly queueChild: HistogramCell;
  private readonly computeChild: HistogramCell;
  private readonly batchChild: HistogramCell;

  constructor(
    readonly model: string,
    readonly version: string,
    private readonly m: Metrics,
  ) {
    this.queueChild = m.queue.cell({ model, version });
    this.computeChild = m.compute.cell({ model, version });
    this.batchChild = m.batch.cell({ model, version });
  }

  private cellsOf(variant: string) {
    let c = this.variants.get(variant);
    if (c === undefined) {
      const { model, version } = this;
      c = {
        requests: ROUTES.map((route) => CLASSES.map((status) => this.m.requests.cell({ model, version, variant, route, status }))),
        duration: ROUTES.map((route) => this.m.duration.cell({ model, version, variant, route })),
      };
      this.variants.set(variant, c);
    }
    return c;
  }

  /**
   * One answered request: status and wall time from arrival to response, in milliseconds. The
   * variant is the deployment's label for the route it took (default, direct, canary, a, ...).
   */
  request(route: Route, status: number, ms: number, variant = 'default'): void {
    const r = ROUTE_INDEX[route];
    const c = this.cellsOf(variant);
    c.requests[r]![statusClass(status)]!.inc();
    c.duration[r]!.observe(ms / 1000);
    if (status < 400) this.latency.recordMicros(ms * 1000);
    const now = Date.now();
    this.volume.add(now);
    if (isError(status)) this.errors.add(now);
  }

  onDispatch(batch: { rows: number; requests: readonly PendingRequest[] }, now: number): void {
    this.batchChild.observe(batch.rows);
    const reqs = batch.requests;
    for (let i = 0; i < reqs.length; i++) this.queueChild.observe((now - reqs[i]!.enqueuedAt) / 1000);
  }

  onComplete(_rows: number, computeMs: number): void {
    this.computeChild.observe(computeMs / 1000);
  }

  volumeSnapshot(windowSeconds = 10): VolumeSnapshot {
    const now = Date.now();
    const n = this.volume.sum(now, windowSeconds);
    const e = this.errors.sum(now, windowSeconds);
    const total = this.volume.total;
    return {
      requests: total,
      errors: this.errors.total,
      rps: n / windowSeconds,
      // Over the recent window while there is traffic, else over the whole life of the version.
      error_rate: n > 0 ? e / n : total === 0 ? null : this.errors.total / total,
    };
  }
}

export interface MonitorOptions {
  /** Node process metrics (CPU, memory, event loop lag, GC). */
  processMetrics?: boolean;
}

export class Monitor {
  readonly registry = new client.Registry();
  private readonly metrics: Metrics;
  private readonly versions = new Map<string, VersionMonitor>();
  private readonly unresolved: CounterFamily;

  constructor(opts: MonitorOptions = {}) {
    const r = this.registry;
    this.metrics = {
      requests: new CounterFamily(r, 'scoreline_requests_total', 'Inference requests answered, by model version, deployment variant, route and status class.', [
        'model',
        'version',
        'variant',
        'route',
        'status',
      ]),
      duration: new HistogramFamily(
        r,
        'scoreline_request_duration_seconds',
        'Time from request arrival to response, in seconds.',
        ['model', 'version', 'variant', 'route'],
        LATENCY_BUCKETS,
      ),
      queue: new HistogramFamily(
        r,
        'scoreline_inference_queue_duration_seconds',
        'Time a request waited in the dynamic batcher before its batch was dispatched, in seconds.',
        ['model', 'version'],
        LATENCY_BUCKETS,
      ),
      compute: new HistogramFamily(r, 'scoreline_inference_compute_duration_seconds', 'onnxruntime session.run time per batch, in seconds.', ['model', 'version'], LATENCY_BUCKETS),
      batch: new HistogramFamily(r, 'scoreline_batch_size', 'Rows per dispatched batch.', ['model', 'version'], BATCH_BUCKETS),
    };
    this.unresolved = new CounterFamily(
      r,
      'scoreline_unrouted_requests_total',
      'Requests answered before a model version was chosen (unknown model, bad body, not ready), by route and status class.',
      ['route', 'status'],
    );
    if (opts.processMetrics !== false) {
      client.collectDefaultMetrics({ register: this.registry, prefix: 'scoreline_' });
      // These gauges end in _total, which `promtool check metrics` rejects for non-counters.
      for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total']) {
        this.registry.removeSingleMetric(`scoreline_nodejs_${name}`);
      }
    }
  }

  version(model: string, version: string): VersionMonitor {
    const key = `${model}\u0000${version}`;
    let v = this.versions.get(key);
    if (v === undefined) {
      v = new VersionMonitor(model, version, this.metrics);
      this.versions.set(key, v);
    }
    return v;
  }

  /** A request that failed before it reached a model version. */
  unrouted(route: Route, status: number): void {
    this.unresolved.cell({ route, status: CLASSES[statusClass(status)]! }).inc();
  }

  /** A counter or gauge read from its source at scrape time (e.g. the native cache's statistics). */
  callback(name: string, help: string, type: 'counter' | 'gauge', read: () => readonly { labels: Record<string, string>; value: number }[]): void {
    new CallbackFamily(this.registry, name, help, type, read);
  }

  /** Metrics of feature serving, recorded by the feature server through this observer. */
  featureObserver(): FeatureMetricsObserver {
    if (this.features === null) this.features = new FeatureMetricsObserver(this.registry);
    return this.features;
  }

  private features: FeatureMetricsObserver | null = null;

  /** A gauge whose value is read at scrape time. */
  gauge(name: string, help: string, labelNames: string[], collect: (set: (labels: Record<string, string>, v: number) => void) => void): void {
    new client.Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        collect((labels, v) => this.set(labels, v));
      },
    });
  }

  async exposition(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

const FRESHNESS_BUCKETS = [1, 10, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400];

/** Fallbacks, freshness, L1 lookups and store round trips of feature serving. */
export class FeatureMetricsObserver {
  private readonly fallbacks: CounterFamily;
  private readonly freshnessFamily: HistogramFamily;
  private readonly lookups: CounterFamily;
  private readonly roundTrips: HistogramFamily;
  private readonly failures: CounterCell;
  private readonly hitCell: CounterCell;
  private readonly missCell: CounterCell;
  private readonly fresh = new Map<string, HistogramCell>();
  private readonly fallbackCells = new Map<string, CounterCell>();
  private readonly rttOk: HistogramCell;
  private readonly rttFailed: HistogramCell;

  constructor(registry: client.Registry) {
    this.fallbacks = new CounterFamily(registry, 'scoreline_feature_fallbacks_total', 'Feature values served by a fallback, by feature and fallback kind.', ['feature', 'kind']);
    this.freshnessFamily = new HistogramFamily(
      registry,
      'scoreline_feature_freshness_seconds',
      'Age of stored feature values (now minus their event time) when served, in seconds.',
      ['feature'],
      FRESHNESS_BUCKETS,
    );
    this.lookups = new CounterFamily(registry, 'scoreline_feature_lookups_total', 'Stored feature groups looked up in the L1 cache per request, by result.', ['result']);
    this.hitCell = this.lookups.cell({ result: 'hit' });
    this.missCell = this.lookups.cell({ result: 'miss' });
    this.roundTrips = new HistogramFamily(registry, 'scoreline_feature_store_roundtrip_seconds', 'Round trips to the online store (one pipeline per request), in seconds.', ['result'], LATENCY_BUCKETS);
    this.rttOk = this.roundTrips.cell({ result: 'ok' });
    this.rttFailed = this.roundTrips.cell({ result: 'error' });
    this.failures = new CounterFamily(registry, 'scoreline_feature_store_failures_total', 'Requests that could not reach the online store and were served from cache and fallbacks.', []).cell({});
  }

  cacheLookup(hits: number, misses: number): void {
    this.hitCell.inc(hits);
    this.missCell.inc(misses);
  }

  fallback(ref: string, kind: string): void {
    const key = `${ref}\u0000${kind}`;
    let c = this.fallbackCells.get(key);
    if (c === undefined) this.fallbackCells.set(key, (c = this.fallbacks.cell({ feature: ref, kind })));
    c.inc();
  }

  freshness(ref: string): (ageSeconds: number) => void {
    let h = this.fresh.get(ref);
    if (h === undefined) this.fresh.set(ref, (h = this.freshnessFamily.cell({ feature: ref })));
    const cell = h;
    return (ageSeconds) => cell.observe(ageSeconds);
  }

  storeFailure(): void {
    this.failures.inc();
  }

  storeRoundTrip(seconds: number, ok: boolean): void {
    (ok ? this.rttOk : this.rttFailed).observe(seconds);
  }
}
