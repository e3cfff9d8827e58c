// Micro-benchmark of the prediction log's cost per logged prediction, through the seam the request
// path uses: VersionMonitor.onComplete over batches of the demo credit model's shape (10 inputs, two
// output columns), once with a prediction log (sampleRate 1) and once without one, in the same run.
// The difference is what logging adds to the HTTP thread per prediction. Around each round the
// process's CPU time (all threads: the log thread writing SQLite, GC) is read too, after the log has
// written everything the round logged, which gives the whole log's CPU per prediction. Then the log
// thread's two steps are run apart, in this thread, to show where its time goes: reading the ring
// into segments, and SQLite writing them.
//
//   npx tsc -p . && node dist/bench/prediction-log.js [--rounds 7] [--write]   (--write: into bench/RESULTS.md)

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { Batch } from '../src/inference/batcher.js';
import type { LoadedModel, PendingRequest, RunResult } from '../src/inference/index.js';
import { Monitor, PredictionLog } from '../src/monitoring/index.js';
import { createRing, RingReader, RingWriter } from '../src/monitoring/log-ring.js';
import { SegmentAssembler } from '../src/monitoring/log-segments.js';
import { openStore, type AppendSegment } from '../src/monitoring/log-store.js';
import { machine, table, writeSection } from './results.js';

const WIDTH = 10;
const BATCH_ROWS = 32;
/** Distinct batches, replayed PASSES times a round; the log thread catches up after each pass (unmeasured), as it does between flushes. */
const BATCHES = 2048;
const PASSES = 16;
/** Predictions per round: long enough for the thread CPU clock, which advances by scheduler ticks (about 1 ms). */
const ROWS = BATCHES * BATCH_ROWS * PASSES;

/** The parts of a loaded model version the monitor reads. */
const model = (): LoadedModel =>
  ({
    name: 'credit-default',
    version: '1',
    versionNumber: 1,
    state: 'ready',
    config: { task: 'classification', threshold: 0.5 },
    features: {
      names: Array.from({ length: WIDTH }, (_, i) => `f${i}`),
      input: Array.from({ length: WIDTH }, () => 0),
      column: Array.from({ length: WIDTH }, (_, i) => i),
      categorical: Array.from({ length: WIDTH }, () => false),
      single: true,
    },
    scoreOutput: { output: 0, column: 1 },
  }) as unknown as LoadedModel;

const ID_PREFIX = 'a1b2c3d4e5f6';

/** `count` batches of BATCH_ROWS rows: single-row requests (ids like the server's), or one request of BATCH_ROWS rows (logged as id/row). */
function batches(count: number, multiRow: boolean): { batch: Batch; result: RunResult }[] {
  let next = 0;
  return Array.from({ length: count }, () => {
    const input = new Float32Array(BATCH_ROWS * WIDTH);
    for (let i = 0; i < input.length; i++) input[i] = (i % 97) * 0.37;
    const batch = new Batch([input], [[WIDTH]], '', BATCH_ROWS);
    const add = (rows: number) => {
      const r: PendingRequest = {
        rows,
        enqueuedAt: 0,
        deadline: Infinity,
        settled: false,
        requestId: `${ID_PREFIX}-${(++next).toString(36).padStart(6, '0')}`,
        variant: 'default',
        resolve: () => undefined,
        reject: () => undefined,
      };
      batch.requests.push(r);
      batch.rowStarts.push(batch.rows);
      batch.rows += rows;
    };
    if (multiRow) add(BATCH_ROWS);
    else for (let i = 0; i < BATCH_ROWS; i++) add(1);
    const scores = new Float32Array(BATCH_ROWS * 2);
    for (let i = 0; i < BATCH_ROWS; i++) {
      scores[i * 2 + 1] = (i + 0.5) / BATCH_ROWS;
      scores[i * 2] = 1 - scores[i * 2 + 1]!;
    }
    return {
      batch,
      result: { outputs: [{ name: 'probabilities', datatype: 'FP32', dims: [BATCH_ROWS, 2], data: scores }], computeMs: 0.02 },
    };
  });
}

export interface PredictionLogBenchRow {
  name: string;
  /** HTTP thread, ns per prediction in onComplete: without a log, with one, and the difference. */
  offNs: number;
  onNs: number;
  /** CPU of all threads per prediction (ns) with the log, minus without. */
  cpuNs: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
};
/** CPU time of all the process's threads, ns. */
const cpuNow = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
};
/**
 * CPU time of this thread, ns (Linux schedstat: not the wall clock, so the figure holds on a machine
 * shared with other work); elsewhere the wall clock.
 */
const threadNs = (() => {
  try {
    readFileSync('/proc/thread-self/schedstat', 'utf8');
    return () => Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
  } catch {
    return () => Number(process.hrtime.bigint());
  }
})();

async function measure(multiRow: boolean, rounds: number): Promise<PredictionLogBenchRow> {
  const dataDir = mkdtempSync(join(tmpdir(), 'scoreline-bench-log-'));
  const log = new PredictionLog({ dataDir, sampleRate: 1, retentionDays: 30 });
  const withLog = new Monitor({ log, processMetrics: false }).version(model());
  const without = new Monitor({ processMetrics: false }).version(model());
  const work = batches(BATCHES, multiRow);
  const off: number[] = [];
  const on: number[] = [];
  const offCpu: number[] = [];
  const onCpu: number[] = [];
  try {
    for (let r = -1; r < rounds; r++) {
      // Same batches, same order; the log's ids repeat across rounds, which SQLite ignores (INSERT OR IGNORE) at the same cost.
      for (const [vm, times, cpu] of [
        [without, off, offCpu],
        [withLog, on, onCpu],
      ] as const) {
        const c0 = cpuNow();
        let thread = 0;
        for (let p = 0; p < PASSES; p++) {
          const t0 = threadNs();
          for (const w of work) void vm.onComplete(w.batch, w.result);
          thread += threadNs() - t0;
          await log.drain();
        }
        const ns = thread / ROWS;
        const c = (cpuNow() - c0) / ROWS;
        if (r < 0) continue; // warm-up round (JIT, the log opening its file)
        times.push(ns);
        cpu.push(c);
      }
    }
    if (log.dropped > 0) throw new Error(`the log dropped ${log.dropped} predictions: the figures would flatter it`);
  } finally {
    await log.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
  return {
    name: multiRow ? `batches of one ${BATCH_ROWS}-row request (ids id/row)` : `batches of ${BATCH_ROWS} one-row requests`,
    offNs: median(off),
    onNs: median(on),
    cpuNs: median(onCpu.map((c, i) => c - offCpu[i]!)),
  };
}

export async function runPredictionLogBench(rounds: number): Promise<PredictionLogBenchRow[]> {
  return [await measure(false, rounds), await measure(true, rounds)];
}

/** Where the log thread's time per prediction goes, ns: reading the ring into segments, and SQLite writing them. */
export interface LogThreadSplit {
  readNs: number;
  /** A new file (16 KB pages) and one made with 4 KB pages. */
  sqliteNs: number;
  sqlite4kNs: number;
}

/**
 * The log thread's two steps run here, on this thread, on the same rows: the ring read and segment
 * assembly, then the store writing the segments in transactions of ~7,000 rows (100 ms of a busy server).
 */
export function runLogThreadSplit(rounds: number): LogThreadSplit {
  const CHUNK = 65_536;
  const CHUNKS = 4;
  const sab = createRing();
  const writer = new RingWriter(sab);
  const reader = new RingReader(sab);
  const asm = new SegmentAssembler();
  writer.define(
    0,
    JSON.stringify({ model: 'credit-default', version: 1, variant: 'default', width: WIDTH, task: 'classification', keyId: null }),
  );
  const input = new Float32Array(BATCH_ROWS * WIDTH).map((_, i) => (i % 97) * 0.37);
  let next = 0;
  const reads: number[] = [];
  const writes: number[] = [];
  const writes4k: number[] = [];
  for (let r = -1; r < rounds; r++) {
    const segments: AppendSegment[] = [];
    let read = 0;
    for (let c = 0; c < CHUNKS; c++) {
      for (let i = 0; i < CHUNK; i++) {
        const id = `${ID_PREFIX}-${(++next).toString(36).padStart(6, '0')}`;
        writer.row(0, WIDTH, id, -1, Date.now(), i / CHUNK, input, (i % BATCH_ROWS) * WIDTH);
      }
      const t0 = threadNs();
      reader.read(asm);
      segments.push(...asm.take().segments);
      read += threadNs() - t0;
      reader.settle(reader.rows, reader.position);
    }
    const rows = CHUNK * CHUNKS;
    for (const [pageSize, times] of [
      [16384, writes],
      [4096, writes4k],
    ] as const) {
      const dir = mkdtempSync(join(tmpdir(), 'scoreline-bench-store-'));
      const db = new Database(join(dir, 'monitoring.db'));
      // A file from before 16 KB pages: its page size is fixed when its first table is made.
      if (pageSize === 4096) db.exec('PRAGMA page_size = 4096; CREATE TABLE made_before (x)');
      const store = openStore(db, false);
      const t0 = threadNs();
      for (let i = 0; i < segments.length; i += 7)
        store.writeGroup([{ kind: 'append', through: 0, position: 0, rows: 0, segments: segments.slice(i, i + 7) }]);
      const ns = threadNs() - t0;
      db.close();
      rmSync(dir, { recursive: true, force: true });
      if (r >= 0) times.push(ns / rows);
    }
    if (r >= 0) reads.push(read / rows);
  }
  return { readNs: median(reads), sqliteNs: median(writes), sqlite4kNs: median(writes4k) };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '7' }, write: { type: 'boolean', default: false } } });
  const load0 = loadavg()[0]!;
  const rows = await runPredictionLogBench(Number(values.rounds));
  const split = runLogThreadSplit(Number(values.rounds));
  const body =
    table(
      [
        'predictions',
        'onComplete without log, ns/prediction',
        'with log',
        'HTTP thread cost of logging, ns/prediction',
        'all threads CPU of logging, ns/prediction',
      ],
      rows.map((r) => [r.name, r.offNs.toFixed(1), r.onNs.toFixed(1), `**${(r.onNs - r.offNs).toFixed(1)}**`, r.cpuNs.toFixed(0)]),
    ) +
    `\n\n${ROWS.toLocaleString('en-US')} predictions per round, ${values.rounds} rounds (medians), model shape: ${WIDTH} float inputs, score in column 1 of 2; ` +
    `request ids like the server's (\`${ID_PREFIX}-00000a\`). HTTP thread: its CPU time (Linux schedstat) in VersionMonitor.onComplete with a PredictionLog (sampleRate 1) minus without one. ` +
    `All threads: process CPU time over the round until the log thread has written it (SQLite, WAL), minus the same without a log.\n` +
    `- target: <= 300 ns per logged prediction on the HTTP thread\n` +
    `- the log thread's work per prediction, its steps run apart on the same rows: reading the ring into segments **${split.readNs.toFixed(0)} ns**, ` +
    `SQLite writing them (transactions of ~7,000 rows, WAL) **${split.sqliteNs.toFixed(0)} ns** (${split.sqlite4kNs.toFixed(0)} ns in a file made with 4 KB pages)\n` +
    `- 1-minute load average at the start and end: ${load0.toFixed(1)}, ${loadavg()[0]!.toFixed(1)}`;
  console.log(`Prediction log cost per prediction on ${machine()}\n\n${body}`);
  if (values.write)
    writeSection(
      'prediction-log',
      'Prediction log: cost per logged prediction',
      'npx tsc -p . && node dist/bench/prediction-log.js --write',
      body,
    );
}
