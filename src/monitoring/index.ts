// Monitoring of what the server serves: Prometheus metrics (the README lists them), and per model
// version the windowed statistics (latency, volume, predictions, drift against the frozen
// reference), performance from delayed labels joined in the prediction log, SLA compliance, a
// history point per minute, and the periodic evaluation that feeds gauges and alert rules (the
// Monitor, ./monitor.ts). Drift and performance figures carry their sample size and hold their band
// below a minimum (./sample-size.ts).

export { LatencyRecorder, RateCounter, type LatencySnapshot } from './latency.js';
export { VersionMonitor, type Route, type VolumeSnapshot } from './version-monitor.js';
export { FeatureMetricsObserver } from './feature-metrics.js';
export { PredictionLog, type PredictionLogStatus, type Durability, type FeedbackResult, type ShippingStatus } from './prediction-log.js';
export { WindowedStats, WINDOWS, type Window, type Baselines } from './buckets.js';
export { DEFAULT_MIN_SAMPLES, INSUFFICIENT, psiMinCount, type MinSamples, type SampleBand, type Shortfall } from './sample-size.js';
export type { Performance } from './performance.js';
export { scanPredictionLog, type PredictionChunk, type PredictionFilter, type PredictionScan } from './log-export.js';
export { scanSharedPredictionLog, type SharedPredictionScan } from './log-export-shared.js';
export { freezeReference, baselinesOf, parseCsvTable, type ReferenceRecord, type ReferenceTable } from './reference.js';
export { SharedMonitoring, type MergeStatus, type ShareStatus } from './shared.js';
export { Monitor, type Evaluation, type MonitorOptions, type SlaConfig } from './monitor.js';
export { WINDOWS as MONITORING_WINDOWS } from './buckets.js';
