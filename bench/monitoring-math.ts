// Micro-benchmark of the monitoring math (src/monitoring/metrics.ts, drift.ts, hdr.ts): the
// per-prediction cost of the streaming drift counters and the per-request latency record (against
// hdr-histogram-js), which sit on the scoring path, and the per-window cost of
// the metrics over 100k labelled rows, which run off it. A throughput check, not a test: it prints
// a table (median of several rounds, machine noted) and asserts nothing.
//
//   npx tsc -p . && node dist/bench/monitoring-math.js [--write]   (--write: also into bench/RESULTS.md)

import { pathToFileURL } from 'node:url';
import {
  CategoricalDriftCounter,
  NumericDriftCounter,
  categoricalBaseline,
  distributionSummary,
  numericBaseline,
} from '../src/monitoring/drift.js';
import { classificationMetrics, delong, regressionMetrics } from '../src/monitoring/metrics.js';
import * as hdr from 'hdr-histogram-js';
import { HdrHistogram } from '../src/monitoring/hdr.js';
import { machine, table, writeSection } from './results.js';

const ROWS = 100_000;
const ROUNDS = 7;

/** Seeded uniform [0, 1) (mulberry32), so every run measures the same data. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Median nanoseconds per operation of `fn`, which performs `ops` operations per call. */
function measure(fn: () => void, ops: number): number {
  fn(); // warm up (JIT)
  const samples: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    samples.push(Number(process.hrtime.bigint() - t0) / ops);
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1]!;
}

export interface MonitoringMathRow {
  name: string;
  /** Median nanoseconds per call (per observation for the counters' add). */
  ns: number;
  /** Rows one call processes, for ns per row. */
  rows: number;
}

export function runMonitoringMathBench(): MonitoringMathRow[] {
  const r = rng(42);
  // Scores with float32 precision (what a model returns), labels leaning on the score, ~5% missing features.
  const scores = new Float32Array(ROWS);
  const labels = new Uint8Array(ROWS);
  const scoresB = new Float64Array(ROWS);
  const feature: (number | null)[] = new Array(ROWS);
  const category: (string | null)[] = new Array(ROWS);
  const cats = ['retail', 'sme', 'corporate', 'public', 'other', 'student', 'pensioner', 'self-employed'];
  for (let i = 0; i < ROWS; i++) {
    scores[i] = r();
    labels[i] = r() < scores[i]! ? 1 : 0;
    scoresB[i] = Math.min(1, Math.max(0, scores[i]! + (r() - 0.5) * 0.3));
    feature[i] = r() < 0.05 ? null : 50 + 30 * (r() + r() + r() - 1.5);
    category[i] = r() < 0.05 ? null : cats[Math.floor(r() * r() * cats.length)]!;
  }
  const reference = Array.from(feature.slice(0, ROWS / 2));
  const numBaseline = numericBaseline(reference);
  const catBaseline = categoricalBaseline(category.slice(0, ROWS / 2));
  const num = new NumericDriftCounter(numBaseline);
  const cat = new CategoricalDriftCounter(catBaseline);
  const REPEAT = 20;
  let sink = 0;
  // Request latencies in microseconds, log-uniform from 50 us to 50 ms.
  const latencies = Float64Array.from({ length: ROWS }, () => 50 * Math.exp(r() * Math.log(1000)));
  const mine = new HdrHistogram(3_600_000_000, 3);
  const theirs = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000,
    numberOfSignificantValueDigits: 3,
    useWebAssembly: false,
  });
  const rows: MonitoringMathRow[] = [
    {
      name: 'NumericDriftCounter.add (5% missing)',
      rows: 1,
      ns: measure(() => {
        for (let k = 0; k < REPEAT; k++) for (let i = 0; i < ROWS; i++) num.add(feature[i]);
      }, REPEAT * ROWS),
    },
    {
      name: 'CategoricalDriftCounter.add (8 categories)',
      rows: 1,
      ns: measure(() => {
        for (let k = 0; k < REPEAT; k++) for (let i = 0; i < ROWS; i++) cat.add(category[i]);
      }, REPEAT * ROWS),
    },
    {
      name: 'HdrHistogram.recordValue (latency us, 3 digits)',
      rows: 1,
      ns: measure(() => {
        for (let k = 0; k < REPEAT; k++) for (let i = 0; i < ROWS; i++) mine.recordValue(latencies[i]!);
      }, REPEAT * ROWS),
    },
    {
      name: 'hdr-histogram-js recordValue (same histogram; the baseline)',
      rows: 1,
      ns: measure(() => {
        for (let k = 0; k < REPEAT; k++) for (let i = 0; i < ROWS; i++) theirs.recordValue(latencies[i]!);
      }, REPEAT * ROWS),
    },
    {
      name: 'NumericDriftCounter.psi()',
      rows: 1,
      ns: measure(() => {
        for (let k = 0; k < 10_000; k++) sink += num.psi() ?? 0;
      }, 10_000),
    },
    {
      name: 'classificationMetrics',
      rows: ROWS,
      ns: measure(() => {
        sink += classificationMetrics(scores, labels, 0.5).auc ?? 0;
      }, 1),
    },
    {
      name: 'regressionMetrics',
      rows: ROWS,
      ns: measure(() => {
        sink += regressionMetrics(scores, scoresB).rmse ?? 0;
      }, 1),
    },
    {
      name: 'delong',
      rows: ROWS,
      ns: measure(() => {
        sink += delong(scores, scoresB, labels)?.z ?? 0;
      }, 1),
    },
    {
      name: 'numericBaseline (freeze edges)',
      rows: reference.length,
      ns: measure(() => {
        sink += numericBaseline(reference).edges[4]!;
      }, 1),
    },
    {
      name: 'distributionSummary',
      rows: ROWS,
      ns: measure(() => {
        sink += distributionSummary(scores).p50 ?? 0;
      }, 1),
    },
  ];
  if (mine.getValueAtPercentile(99) !== theirs.getValueAtPercentile(99)) console.error('the two histograms disagree');
  if (Number.isNaN(sink)) console.error('unexpected NaN');
  return rows;
}

function format(rows: MonitoringMathRow[]): string {
  const human = (ns: number): string =>
    ns < 1e3 ? `${ns.toFixed(1)} ns` : ns < 1e6 ? `${(ns / 1e3).toFixed(1)} us` : `${(ns / 1e6).toFixed(2)} ms`;
  return table(
    ['operation', 'rows per call', 'time per call', 'ns per row'],
    rows.map((row) => [row.name, row.rows.toLocaleString('en-US'), human(row.ns), (row.ns / row.rows).toFixed(1)]),
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const body = format(runMonitoringMathBench());
  console.log(`Monitoring math, median of ${ROUNDS} rounds, on ${machine()}\n\n${body}`);
  if (process.argv.includes('--write')) {
    writeSection(
      'monitoring-math',
      'Monitoring math (drift counters, window metrics)',
      'npx tsc -p . && node dist/bench/monitoring-math.js --write',
      body,
    );
  }
}
