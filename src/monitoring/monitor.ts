// The Monitor: per model version the windowed statistics (latency, volume, predictions, drift
// against the frozen reference), performance from delayed labels joined in the prediction log, SLA
// compliance, a history point per minute, the Prometheus families that expose them, and the periodic
// evaluation that feeds gauges and alert rules. Drift and performance figures carry their sample size
// and hold their band below a minimum (./sample-size.ts).

import client from 'prom-client';
import type { LoadedModel } from '../inference/index.js';
import { round6 } from '../numbers.js';
import { type Bucket, driftSpeaks, type Window } from './buckets.js';
import { FeatureMetricsObserver } from './feature-metrics.js';
import { performanceOf, type Performance } from './performance.js';
import type { PredictionLog, PredictionLogStatus } from './prediction-log.js';
import { CallbackFamily, CounterFamily, HistogramFamily } from './prometheus.js';
import { DEFAULT_MIN_SAMPLES, type MinSamples } from './sample-size.js';
import type { MergeStatus, SharedMonitoring } from './shared.js';
import {
  BATCH_BUCKETS,
  CLASSES,
  LATENCY_BUCKETS,
  statusClass,
  VersionMonitor,
  type Route,
  type VersionMetrics,
} from './version-monitor.js';

export interface SlaConfig {
  p95Ms: number | null;
  p99Ms: number | null;
  /** Highest acceptable share of 5xx and 429 answers. */
  errorRate: number | null;
  /** Lowest acceptable share of requests answered without a server error (5xx). */
  availability: number | null;
}

export interface MonitorOptions {
  /** Node process metrics (CPU, memory, event loop lag, GC). */
  processMetrics?: boolean;
  /** false turns every per-request and per-prediction recording off (the benchmark's baseline). */
  enabled?: boolean;
  log?: PredictionLog | null;
  sla?: SlaConfig;
  /** Samples each statistic needs before its band, gauges, alerts and history speak. */
  minSamples?: MinSamples;
}

const WINDOW_MS: Record<Window, number> = { all: Infinity, '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 };

/**
 * What gauges, alert rules and history points read. A statistic below its minimum sample is null
 * here (never a value the rules could act on); its sample size is kept beside it.
 */
export interface Evaluation {
  /** 1h window. */
  scorePsi: number | null;
  /** Current score values behind scorePsi (null without a reference). */
  scorePsiN: number | null;
  featurePsi: Record<string, number | null>;
  featureN: Record<string, number>;
  /** 24h window. */
  auc: number | null;
  /** Labelled rows behind auc. */
  labelled: number;
  referenceAuc: number | null;
  p99Ms: number | null;
  errorRate: number | null;
  requests1h: number;
}

export class Monitor {
  readonly registry = new client.Registry();
  private gather: { exposition(): Promise<{ text: string }>; close(): void } | null = null;
  readonly enabled: boolean;
  readonly log: PredictionLog | null;
  readonly sla: SlaConfig;
  readonly minSamples: MinSamples;
  private readonly metrics: VersionMetrics;
  private readonly versions = new Map<LoadedModel, VersionMonitor>();
  private readonly unresolved: CounterFamily;
  private features: FeatureMetricsObserver | null = null;
  private readonly perfCache = new Map<string, { at: number; value: Promise<Performance> }>();
  /** Latest periodic evaluation per version, for gauges and alert rules. */
  readonly evaluations = new Map<VersionMonitor, Evaluation>();
  /** The other replicas' monitoring, when the store is shared: every view is the merge of all of them. */
  private shared: SharedMonitoring | null = null;

  constructor(opts: MonitorOptions = {}) {
    this.enabled = opts.enabled !== false;
    this.log = opts.log ?? null;
    this.sla = opts.sla ?? { p95Ms: null, p99Ms: null, errorRate: null, availability: null };
    this.minSamples = opts.minSamples ?? DEFAULT_MIN_SAMPLES;
    const r = this.registry;
    this.metrics = {
      requests: new CounterFamily(
        r,
        'scoreline_requests_total',
        'Inference requests answered, by model version, deployment variant, route and status class.',
        ['model', 'version', 'variant', 'route', 'status'],
      ),
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
      compute: new HistogramFamily(
        r,
        'scoreline_inference_compute_duration_seconds',
        'onnxruntime session.run time per batch, in seconds.',
        ['model', 'version'],
        LATENCY_BUCKETS,
      ),
      batch: new HistogramFamily(r, 'scoreline_batch_size', 'Rows per dispatched batch.', ['model', 'version'], BATCH_BUCKETS),
    };
    this.unresolved = new CounterFamily(
      r,
      'scoreline_unrouted_requests_total',
      'Requests answered before a model version was chosen (unknown model, bad body, not ready), by route and status class.',
      ['route', 'status'],
    );
    this.callback(
      'scoreline_drift_psi',
      'PSI against the frozen reference over the last hour, per version; feature="__score__" is the score. Omitted while the hour holds fewer values than monitoring.minSamples.psi asks for (band insufficient_data): below it PSI is sampling noise.',
      'gauge',
      () =>
        [...this.evaluations].flatMap(([vm, e]) => [
          ...(e.scorePsi === null ? [] : [{ labels: { model: vm.model, version: vm.version, feature: '__score__' }, value: e.scorePsi }]),
          ...Object.entries(e.featurePsi)
            .filter((x): x is [string, number] => x[1] !== null)
            .map(([feature, value]) => ({ labels: { model: vm.model, version: vm.version, feature }, value })),
        ]),
    );
    this.callback(
      'scoreline_drift_sample_size',
      'Current values over the last hour behind scoreline_drift_psi, per version and feature (feature="__score__" is the score), reported also while too few for the PSI to be.',
      'gauge',
      () =>
        [...this.evaluations].flatMap(([vm, e]) => [
          ...(e.scorePsiN === null ? [] : [{ labels: { model: vm.model, version: vm.version, feature: '__score__' }, value: e.scorePsiN }]),
          ...Object.entries(e.featureN).map(([feature, value]) => ({ labels: { model: vm.model, version: vm.version, feature }, value })),
        ]),
    );
    this.callback(
      'scoreline_model_auc',
      'AUC over the last 24 hours of labelled predictions, per version. Omitted below monitoring.minSamples.auc (labelled rows and rows of each class; band insufficient_data).',
      'gauge',
      () =>
        [...this.evaluations]
          .filter(([, e]) => e.auc !== null)
          .map(([vm, e]) => ({ labels: { model: vm.model, version: vm.version }, value: e.auc! })),
    );
    this.callback(
      'scoreline_model_labelled_predictions',
      'Labelled predictions over the last 24 hours behind scoreline_model_auc, per version, reported also while too few for the AUC to be.',
      'gauge',
      () => [...this.evaluations].map(([vm, e]) => ({ labels: { model: vm.model, version: vm.version }, value: e.labelled })),
    );
    this.callback(
      'scoreline_sla_compliance',
      'Whether a version meets each SLA objective over the last hour (1) or not (0).',
      'gauge',
      () =>
        [...this.evaluations].flatMap(([vm, e]) =>
          Object.entries(this.slaOf(e.p99Ms, null, e.errorRate, e.requests1h))
            .filter(([k, v]) => k !== 'compliant' && v !== null && typeof v === 'object' && (v as { met: boolean | null }).met !== null)
            .map(([objective, v]) => ({
              labels: { model: vm.model, version: vm.version, objective },
              value: (v as { met: boolean }).met ? 1 : 0,
            })),
        ),
    );
    this.callback(
      'scoreline_predictions_logged_total',
      'Predictions accepted into the prediction log (after sampling; written by its thread shortly after).',
      'counter',
      () => [{ labels: {}, value: this.log?.logged ?? 0 }],
    );
    this.callback(
      'scoreline_predictions_dropped_total',
      'Predictions never written to the prediction log: the ring was full (the log thread behind, or failing and holding a million), the log thread died, or they were still held at shutdown.',
      'counter',
      () => [{ labels: {}, value: this.log?.dropped ?? 0 }],
    );
    this.callback(
      'scoreline_prediction_log_backlog',
      'Predictions handed to the log thread and not yet written (including those held while writes fail).',
      'gauge',
      () => [{ labels: {}, value: this.log?.backlog ?? 0 }],
    );
    this.callback(
      'scoreline_prediction_log_errors_total',
      'Failed write attempts of the prediction log (disk full, file unwritable); held predictions are retried.',
      'counter',
      () => [{ labels: {}, value: this.log?.errors ?? 0 }],
    );
    this.callback(
      'scoreline_prediction_log_shipped_total',
      "Predictions shipped from this replica's prediction log to PostgreSQL (shared log only; 0 otherwise).",
      'counter',
      () => [{ labels: {}, value: this.log?.shippedRows ?? 0 }],
    );
    this.callback(
      'scoreline_prediction_log_ship_errors_total',
      'Failed attempts to ship the prediction log to PostgreSQL (PostgreSQL unreachable); the predictions wait on disk and are retried.',
      'counter',
      () => [{ labels: {}, value: this.log?.shipErrors ?? 0 }],
    );
    this.callback(
      'scoreline_prediction_log_ship_backlog',
      'Predictions written to the local prediction log and not yet shipped to PostgreSQL (shared log only).',
      'gauge',
      () => [{ labels: {}, value: this.log?.shipBacklog ?? 0 }],
    );
    this.callback('scoreline_prediction_log_failing', "Whether the prediction log's last write failed (1) or not (0).", 'gauge', () => [
      { labels: {}, value: this.log?.status().state === 'failing' ? 1 : 0 },
    ]);
    if (opts.processMetrics !== false) {
      client.collectDefaultMetrics({ register: this.registry, prefix: 'scoreline_' });
      // These gauges end in _total, which `promtool check metrics` rejects for non-counters.
      for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total']) {
        this.registry.removeSingleMetric(`scoreline_nodejs_${name}`);
      }
    }
  }

  /** The prediction log's health (null when monitoring is off), for /v1/monitoring. */
  logStatus(): PredictionLogStatus | null {
    return this.log?.status() ?? null;
  }

  version(loaded: LoadedModel): VersionMonitor {
    let v = this.versions.get(loaded);
    if (v === undefined) {
      v = new VersionMonitor(loaded, this.metrics, this.log, this.enabled);
      const vm = v;
      v.stats.onMinute = (start, minute) => {
        this.historyPoint(vm, start, minute);
        this.shared?.closed(vm, 'minute', start, minute);
      };
      v.stats.onHour = (start, hour) => this.shared?.closed(vm, 'hour', start, hour);
      this.versions.set(loaded, v);
    }
    return v;
  }

  /** From now on every view merges the other replicas' state, and this replica's is written for them. */
  shareWith(shared: SharedMonitoring): void {
    this.shared = shared;
    this.callback(
      'scoreline_monitoring_shared_cells_total',
      "Monitoring cells (a version's minute or hour) this replica wrote to the shared store.",
      'counter',
      () => [{ labels: {}, value: shared.shared }],
    );
    this.callback(
      'scoreline_monitoring_share_errors_total',
      'Failed writes of monitoring cells to the shared store; closed cells wait and are written when it is back.',
      'counter',
      () => [{ labels: {}, value: shared.errors }],
    );
    this.callback('scoreline_monitoring_share_pending', 'Closed monitoring cells waiting for the shared store.', 'gauge', () => [
      { labels: {}, value: shared.status().pending },
    ]);
    this.callback(
      'scoreline_monitoring_share_dropped_total',
      'Closed monitoring cells never written: pushed out of the bounded queue while the shared store was away.',
      'counter',
      () => [{ labels: {}, value: shared.dropped }],
    );
  }

  get sharing(): SharedMonitoring | null {
    return this.shared;
  }

  /** Writes this replica's monitoring state for the others (a no-op unless the store is shared). */
  share(now = Date.now()): Promise<void> {
    return this.shared === null ? Promise.resolve() : this.shared.share(this.all(), now);
  }

  /**
   * The window of a version as every replica saw it: this replica's live buckets plus the others'
   * stored ones (only its own without a shared store), with the request rate of all of them.
   */
  private async merged(
    vm: VersionMonitor,
    window: Window,
    now: number,
  ): Promise<{ bucket: Bucket; rps: number | null; merge: MergeStatus | null }> {
    const own = vm.stats.view(window, now);
    if (this.shared === null) return { bucket: own, rps: null, merge: null };
    const { rps, ...merge } = await this.shared.mergeOthers(vm, window, now, own);
    return { bucket: own, rps: rps + vm.volumeSnapshot().rps, merge };
  }

  find(loaded: LoadedModel): VersionMonitor | undefined {
    return this.versions.get(loaded);
  }

  all(): VersionMonitor[] {
    return [...this.versions.values()].filter((v) => v.loaded.state !== 'unloaded');
  }

  /** A request that failed before it reached a model version. */
  unrouted(route: Route, status: number): void {
    this.unresolved.cell({ route, status: CLASSES[statusClass(status)]! }).inc();
  }

  /** A counter or gauge read from its source at scrape time (e.g. the native cache's statistics). */
  callback(
    name: string,
    help: string,
    type: 'counter' | 'gauge',
    read: () => readonly { labels: Record<string, string>; value: number }[],
  ): void {
    new CallbackFamily(this.registry, name, help, type, read);
  }

  /** Metrics of feature serving, recorded by the feature server through this observer. */
  featureObserver(): FeatureMetricsObserver {
    if (this.features === null) this.features = new FeatureMetricsObserver(this.registry);
    return this.features;
  }

  /** A gauge whose value is read at scrape time. */
  gauge(
    name: string,
    help: string,
    labelNames: string[],
    collect: (set: (labels: Record<string, string>, v: number) => void) => void,
  ): void {
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
    if (this.gather !== null) return (await this.gather.exposition()).text;
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** With several HTTP threads: /metrics answers with every thread's series, gathered by `g`. */
  gatherWith(g: { exposition(): Promise<{ text: string }>; close(): void }): void {
    this.gather = g;
  }

  /** Performance from labelled predictions of the window (cached for two seconds: dashboards poll). */
  performance(vm: VersionMonitor, window: Window, now = Date.now()): Promise<Performance> {
    const key = `${vm.model}\u0000${vm.version}\u0000${window}`;
    const hit = this.perfCache.get(key);
    if (hit !== undefined && now - hit.at < 2000) return hit.value;
    const value = this.computePerformance(vm, window, now);
    this.perfCache.set(key, { at: now, value });
    return value;
  }

  private async computePerformance(vm: VersionMonitor, window: Window, now: number): Promise<Performance> {
    const task = vm.loaded.config.task ?? 'classification';
    const threshold = vm.loaded.config.threshold ?? 0.5;
    const since = window === 'all' ? 0 : now - WINDOW_MS[window];
    const metrics =
      this.log === null ? null : (await this.log.performance(vm.model, vm.loaded.versionNumber, since, task, threshold)).metrics;
    return performanceOf(task, metrics, threshold, vm.stats.baselines?.referenceAuc ?? null, this.minSamples);
  }

  slaOf(p99Ms: number | null, p95Ms: number | null, errorRate: number | null, requests: number) {
    const s = this.sla;
    const obj = (target: number | null, actual: number | null, lowerIsBetter = true) => ({
      target,
      actual: round6(actual),
      met: target === null || actual === null ? null : lowerIsBetter ? actual <= target : actual >= target,
    });
    const availability = errorRate === null || requests === 0 ? null : 1 - errorRate;
    const out = {
      p95_ms: obj(s.p95Ms, p95Ms),
      p99_ms: obj(s.p99Ms, p99Ms),
      error_rate: obj(s.errorRate, errorRate),
      availability: obj(s.availability, availability, false),
    };
    const verdicts = Object.values(out)
      .map((o) => o.met)
      .filter((m): m is boolean => m !== null);
    return { ...out, compliant: verdicts.length === 0 ? null : verdicts.every(Boolean) };
  }

  /** The JSON snapshot of a version over a window (alerts are added by the caller). */
  async snapshot(vm: VersionMonitor, window: Window) {
    const now = Date.now();
    const { bucket: b, rps: sharedRps, merge } = await this.merged(vm, window, now);
    // The all-time histogram of this process has a finer resolution; merged with other replicas the buckets' is used.
    const lat =
      window === 'all' && merge === null
        ? vm.latency.snapshot()
        : (() => {
            const h = b.latency;
            const n = h.totalCount;
            const ms = (p: number) => (n === 0 ? null : h.getValueAtPercentile(p) / 1000);
            return {
              count: n,
              p50_ms: ms(50),
              p95_ms: ms(95),
              p99_ms: ms(99),
              p999_ms: ms(99.9),
              max_ms: n === 0 ? null : h.maxValue / 1000,
              mean_ms: n === 0 ? null : h.mean / 1000,
            };
          })();
    const latency = Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, k === 'count' ? v : round6(v as number | null)]));
    const errorRate = b.requests === 0 ? null : b.errors / b.requests;
    const volume = {
      requests: b.requests,
      errors: b.errors,
      rps: round6(window === 'all' || window === '1h' ? (sharedRps ?? vm.volumeSnapshot().rps) : b.requests / (WINDOW_MS[window] / 1000)),
      error_rate: round6(errorRate),
    };
    const n = b.predictions;
    const mean = n === 0 ? null : b.scoreSum / n;
    const classification = (vm.loaded.config.task ?? 'classification') === 'classification';
    const predictions = {
      count: n,
      // Predictions per class at the version's threshold (classifiers).
      ...(classification ? { classes: { '0': n - b.positives, '1': b.positives } } : {}),
      mean: round6(mean),
      std: n < 2 || mean === null ? null : round6(Math.sqrt(Math.max(0, b.scoreSq / n - mean * mean))),
      min: n === 0 ? null : round6(b.scoreMin),
      max: n === 0 ? null : round6(b.scoreMax),
      histogram: {
        edges: b.score.baseline.edges.map((e) => round6(e)),
        counts: Array.from(b.score.counts),
        reference_shares: vm.stats.baselines?.score ? [...vm.stats.baselines.score.refShares] : null,
      },
    };
    const drift = vm.stats.drift(b, this.minSamples.psi);
    for (const d of [drift.score, ...Object.values(drift.features)]) d.psi = round6(d.psi);
    for (const f of Object.values(drift.features)) f.missing_rate = round6(f.missing_rate);
    return {
      model: vm.model,
      version: vm.version,
      window,
      generated_at: new Date(now).toISOString(),
      state: vm.loaded.state,
      task: vm.loaded.config.task ?? 'classification',
      performance: await this.performance(vm, window, now),
      drift,
      predictions,
      latency,
      volume,
      sla: this.slaOf(latency.p99_ms as number | null, latency.p95_ms as number | null, errorRate, b.requests),
      reference: vm.stats.baselines ? { rows: vm.stats.baselines.rows, auc: round6(vm.stats.baselines.referenceAuc) } : null,
      prediction_log: this.logStatus(),
      ...(merge === null ? {} : { replicas: { ...merge, sharing: this.shared!.status() } }),
    };
  }

  /**
   * Recomputes every version's evaluation (1h drift, 24h AUC, latency, errors): gauges, alert rules
   * and history points read it. A PSI or AUC below its minimum sample is null here.
   */
  async evaluate(now = Date.now()): Promise<Map<VersionMonitor, Evaluation>> {
    for (const vm of this.all()) {
      const h = (await this.merged(vm, '1h', now)).bucket;
      const drift = vm.stats.drift(h, this.minSamples.psi);
      const perf = await this.performance(vm, '24h', now).catch(() => null);
      const auc = perf !== null && 'auc' in perf && perf.bands.auc === 'sufficient' ? perf.auc : null;
      this.evaluations.set(vm, {
        scorePsi: driftSpeaks(drift.score) ? drift.score.psi : null,
        scorePsiN: drift.score.band === null ? null : drift.score.n,
        featurePsi: Object.fromEntries(Object.entries(drift.features).map(([k, v]) => [k, driftSpeaks(v) ? v.psi : null])),
        featureN: Object.fromEntries(Object.entries(drift.features).map(([k, v]) => [k, v.n])),
        auc,
        labelled: perf?.labelled ?? 0,
        referenceAuc: vm.stats.baselines?.referenceAuc ?? null,
        p99Ms: h.latency.totalCount === 0 ? null : h.latency.getValueAtPercentile(99) / 1000,
        errorRate: h.requests === 0 ? null : h.errors / h.requests,
        requests1h: h.requests,
      });
    }
    for (const vm of this.evaluations.keys()) if (vm.loaded.state === 'unloaded') this.evaluations.delete(vm);
    return this.evaluations;
  }

  /** The last evaluation's figures (1h drift, 24h AUC) as a history point shows them: null below their minimum sample, which is kept beside them. */
  evaluationPoint(vm: VersionMonitor): {
    score_psi: number | null;
    score_psi_n: number | null;
    auc: number | null;
    labelled: number | null;
  } {
    const e = this.evaluations.get(vm);
    return {
      score_psi: round6(e?.scorePsi ?? null),
      score_psi_n: e?.scorePsiN ?? null,
      auc: round6(e?.auc ?? null),
      labelled: e?.labelled ?? null,
    };
  }

  private historyPoint(vm: VersionMonitor, start: number, minute: Bucket): void {
    if (this.log === null) return;
    const l = minute.latency;
    const n = l.totalCount;
    const data = {
      requests: minute.requests,
      rps: round6(minute.requests / 60),
      p50_ms: n === 0 ? null : l.getValueAtPercentile(50) / 1000,
      p95_ms: n === 0 ? null : l.getValueAtPercentile(95) / 1000,
      p99_ms: n === 0 ? null : l.getValueAtPercentile(99) / 1000,
      error_rate: minute.requests === 0 ? null : round6(minute.errors / minute.requests),
      predictions: minute.predictions,
      ...this.evaluationPoint(vm),
    };
    this.log.putHistory([{ model: vm.model, version: vm.loaded.versionNumber, at: start, data: JSON.stringify(data) }]);
  }

  async close(): Promise<void> {
    this.gather?.close();
    await this.log?.close();
  }
}
