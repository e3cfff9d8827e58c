// Benchmarks of the native feature cache (src/features/native-cache.ts) against lru-cache, all
// measured in one run: throughput of getMany(20) / get / set (benchmark.js), JS heap with 2M
// entries loaded, and read-loop latency percentiles while the GC runs. Every measurement runs in
// its own child process (node --expose-gc) so the caches do not disturb each other.
//
//   npx tsc -p . && node dist/bench/features-cache.js [--quick]
//
// runFeaturesCacheBench() returns the numbers; formatFeaturesCacheTable() renders the markdown.

import { execFile } from 'node:child_process';
import { cpus } from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import Benchmark from 'benchmark';
import { LRUCache } from 'lru-cache';
import { BatchReadBuffer, NativeCache } from '../src/features/native-cache.js';

type Impl = 'native' | 'lru-cache';

export interface ThroughputRow {
  name: string;
  entries: number;
  nativeOpsPerSec: number;
  lruOpsPerSec: number;
}

export interface LatencySummary {
  batches: number;
  p50Micros: number;
  p99Micros: number;
  p999Micros: number;
  maxMicros: number;
  gcCount: number;
  gcPauseMillis: number;
}

export interface FeaturesCacheBenchResult {
  machine: string;
  throughput: ThroughputRow[];
  memory: { entries: number; nativeHeapBytes: number; lruHeapBytes: number; nativeRssBytes: number; lruRssBytes: number };
  latency: { entries: number; native: LatencySummary; lru: LatencySummary };
}

export interface FeaturesCacheBenchOptions {
  /** Working-set sizes for the throughput benchmarks. */
  throughputEntries?: number[];
  /** Entries loaded for the memory and GC-latency measurements. */
  loadedEntries?: number;
  /** benchmark.js maxTime per case, seconds. */
  maxTime?: number;
  /** Batches read in each latency loop (the same count for both, so both allocate the same churn). */
  latencyBatches?: number;
}

const BATCH = 20;
const LATENCY_OLD_SPACE_MB = 1024;

function keyOf(i: number): string {
  return `fv:credit:c${String(i).padStart(8, '0')}`;
}

/** Value ~100-200 bytes (or exactly `fixed`), content derived from i. */
function valueFor(i: number, fixed?: number): Buffer {
  const value = Buffer.allocUnsafe(fixed ?? 100 + (i % 101));
  value.fill(i & 255);
  value.writeUInt32LE(i >>> 0, 0);
  return value;
}

/** Deterministic pseudo-random batches of distinct-looking keys over [0, entries). */
function makeBatches(entries: number, count: number): string[][] {
  let state = 0x9e3779b9;
  const next = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % entries;
  };
  return Array.from({ length: count }, () => Array.from({ length: BATCH }, () => keyOf(next())));
}

interface Store {
  fill(entries: number, fixed?: number): void;
  readBatch(keys: string[]): number;
}

function openStore(impl: Impl, entries: number): Store {
  if (impl === 'native') {
    const cache = new NativeCache();
    cache.configure({ maxEntries: entries * 2, maxBytes: entries * 1024 });
    const out = new BatchReadBuffer();
    return {
      fill(n, fixed) {
        for (let base = 0; base < n; base += 1000) {
          const ids = Array.from({ length: Math.min(1000, n - base) }, (_, j) => base + j);
          cache.setMany(
            ids.map(keyOf),
            ids.map((i) => valueFor(i, fixed)),
          );
        }
      },
      readBatch(keys) {
        // The hot-path form: values land in a reused buffer, read through offsets/lengths.
        cache.getManyInto(keys, out);
        let bytes = 0;
        for (let i = 0; i < keys.length; i++) bytes += out.has(i) ? out.meta[2 * i + 1]! : 0;
        return bytes;
      },
    };
  }
  const lru = new LRUCache<string, Buffer>({ max: entries * 2 });
  return {
    fill(n, fixed) {
      for (let i = 0; i < n; i++) lru.set(keyOf(i), valueFor(i, fixed));
    },
    readBatch(keys) {
      let bytes = 0;
      for (let i = 0; i < keys.length; i++) bytes += lru.get(keys[i]!)?.length ?? 0;
      return bytes;
    },
  };
}

// ---- children ---------------------------------------------------------------------------------

function runSuite(cases: Record<string, () => void>, maxTime: number): Record<string, number> {
  const suite = new Benchmark.Suite();
  for (const [name, fn] of Object.entries(cases)) suite.add(name, fn, { maxTime, minSamples: 10 });
  const hz: Record<string, number> = {};
  suite.on('cycle', (event: Benchmark.Event) => {
    const bench = event.target as unknown as Benchmark;
    if (bench.error) throw bench.error;
    hz[bench.name!] = bench.hz;
    process.stderr.write(`  ${String(event.target)}\n`);
  });
  suite.run({ async: false });
  return hz;
}

/** Both caches hold the same entries; each case cycles through precomputed batches. */
function childThroughput(entries: number, maxTime: number): Record<string, number> {
  const cache = new NativeCache();
  cache.clear();
  cache.configure({ maxEntries: entries * 2, maxBytes: entries * 1024 });
  const lru = new LRUCache<string, Buffer>({ max: entries * 2 });
  for (let i = 0; i < entries; i++) {
    const value = valueFor(i);
    cache.set(keyOf(i), value);
    lru.set(keyOf(i), value);
  }
  const batches = makeBatches(entries, 4096);
  const singles = batches.flat();
  const out = new BatchReadBuffer();
  const written = valueFor(7, 150);
  let b = 0;
  let s = 0;
  let sink = 0;
  const hz = runSuite(
    {
      'native getManyInto(20)': () => {
        sink += cache.getManyInto(batches[b++ & 4095]!, out);
      },
      'native getMany(20) -> Buffer[]': () => {
        sink += cache.getMany(batches[b++ & 4095]!).length;
      },
      'lru-cache 20x get': () => {
        const keys = batches[b++ & 4095]!;
        for (let i = 0; i < BATCH; i++) sink += lru.get(keys[i]!)!.length;
      },
      'native get': () => {
        sink += cache.get(singles[s++ & 65535]!)!.length;
      },
      'lru-cache get': () => {
        sink += lru.get(singles[s++ & 65535]!)!.length;
      },
      'native set (overwrite)': () => {
        cache.set(singles[s++ & 65535]!, written);
      },
      'lru-cache set (overwrite)': () => {
        lru.set(singles[s++ & 65535]!, written);
      },
    },
    maxTime,
  );
  if (sink === 0) throw new Error('benchmark produced no reads');
  return hz;
}

function childMemory(impl: Impl, entries: number): { heapBytes: number; rssBytes: number } {
  const store = openStore(impl, entries);
  store.fill(entries, 100);
  if (store.readBatch([keyOf(0), keyOf(entries - 1)]) !== 200) throw new Error('load failed');
  for (let i = 0; i < 4; i++) global.gc!();
  const usage = process.memoryUsage();
  return { heapBytes: usage.heapUsed, rssBytes: usage.rss };
}

async function childLatency(impl: Impl, entries: number, batchCount: number): Promise<LatencySummary> {
  const store = openStore(impl, entries);
  store.fill(entries, 100);
  const batches = makeBatches(entries, 4096);
  global.gc!();
  let gcCount = 0;
  let gcPauseMillis = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gcCount++;
      gcPauseMillis += entry.duration;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  // Churn: each batch allocates objects that a ring keeps alive for ~60k batches, long enough to
  // be promoted at either speed, so the old generation grows and full mark-compacts (which
  // must trace the whole heap, including every JS-side cache entry) happen during the loop.
  const ring: unknown[] = new Array(500_000);
  const samples = new Float64Array(batchCount);
  let sink = 0;
  for (let n = 0; n < batchCount; n++) {
    const start = process.hrtime.bigint();
    sink += store.readBatch(batches[n & 4095]!);
    for (let j = 0; j < 8; j++) ring[(n * 8 + j) % ring.length] = { id: n, payload: new Array(8).fill(j) };
    samples[n] = Number(process.hrtime.bigint() - start) / 1000;
  }
  const n = batchCount;
  // GC entries are delivered from the event loop, which the synchronous loop above never let run.
  await new Promise((resolve) => setTimeout(resolve, 200));
  observer.disconnect();
  if (sink === 0) throw new Error('latency loop read nothing');
  const sorted = samples.subarray(0, n).sort();
  const at = (q: number): number => sorted[Math.min(n - 1, Math.floor(q * n))]!;
  return { batches: n, p50Micros: at(0.5), p99Micros: at(0.99), p999Micros: at(0.999), maxMicros: sorted[n - 1]!, gcCount, gcPauseMillis };
}

// ---- parent ---------------------------------------------------------------------------------

const exec = promisify(execFile);
const THIS_FILE = fileURLToPath(import.meta.url);

async function inChild<T>(job: unknown, maxOldSpaceMB = 8192): Promise<T> {
  const { stdout, stderr } = await exec(
    process.execPath,
    ['--expose-gc', `--max-old-space-size=${maxOldSpaceMB}`, THIS_FILE, '--child', JSON.stringify(job)],
    { maxBuffer: 64 * 1024 * 1024 },
  );
  if (stderr.length > 0) process.stderr.write(stderr);
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as T;
}

export async function runFeaturesCacheBench(options: FeaturesCacheBenchOptions = {}): Promise<FeaturesCacheBenchResult> {
  const throughputEntries = options.throughputEntries ?? [10_000, 1_000_000];
  const loadedEntries = options.loadedEntries ?? 2_000_000;
  const maxTime = options.maxTime ?? 2;
  const latencyBatches = options.latencyBatches ?? 1_000_000;

  const throughput: ThroughputRow[] = [];
  for (const entries of throughputEntries) {
    const hz = await inChild<Record<string, number>>({ kind: 'throughput', entries, maxTime });
    const row = (name: string, native: string, lru: string): void => {
      throughput.push({ name, entries, nativeOpsPerSec: hz[native]!, lruOpsPerSec: hz[lru]! });
    };
    row('getMany(20) into a reused buffer vs 20x get', 'native getManyInto(20)', 'lru-cache 20x get');
    row('getMany(20) -> Buffer[] vs 20x get', 'native getMany(20) -> Buffer[]', 'lru-cache 20x get');
    row('get', 'native get', 'lru-cache get');
    row('set (overwrite)', 'native set (overwrite)', 'lru-cache set (overwrite)');
  }

  type Mem = { heapBytes: number; rssBytes: number };
  const nativeMem = await inChild<Mem>({ kind: 'memory', impl: 'native', entries: loadedEntries });
  const lruMem = await inChild<Mem>({ kind: 'memory', impl: 'lru-cache', entries: loadedEntries });
  // Both latency children get the same bounded old space, as a service in a container would.
  // Without a bound V8 lets the big lru-cache heap grow and defers its full GC past the loop.
  const latency = (impl: Impl): Promise<LatencySummary> =>
    inChild<LatencySummary>({ kind: 'latency', impl, entries: loadedEntries, batches: latencyBatches }, LATENCY_OLD_SPACE_MB);
  const native = await latency('native');
  const lru = await latency('lru-cache');

  return {
    machine: `${cpus()[0]?.model ?? 'unknown CPU'} x${cpus().length}, Node ${process.version}, ${process.platform}/${process.arch}`,
    throughput,
    memory: {
      entries: loadedEntries,
      nativeHeapBytes: nativeMem.heapBytes,
      lruHeapBytes: lruMem.heapBytes,
      nativeRssBytes: nativeMem.rssBytes,
      lruRssBytes: lruMem.rssBytes,
    },
    latency: { entries: loadedEntries, native, lru },
  };
}

const fmtOps = (hz: number): string => `${Math.round(hz).toLocaleString('en-US')} ops/s`;
const fmtMB = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
const fmtUs = (us: number): string => `${us.toFixed(1)} µs`;
const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;

export function formatFeaturesCacheTable(r: FeaturesCacheBenchResult): string {
  const lines = [`Machine: ${r.machine}`, '', '| benchmark | native | lru-cache | native / lru-cache |', '| --- | ---: | ---: | ---: |'];
  for (const t of r.throughput) {
    lines.push(
      `| ${t.name}, ${t.entries.toLocaleString('en-US')} entries | ${fmtOps(t.nativeOpsPerSec)} | ${fmtOps(t.lruOpsPerSec)} | ${ratio(t.nativeOpsPerSec, t.lruOpsPerSec)} |`,
    );
  }
  const m = r.memory;
  const loaded = `${m.entries.toLocaleString('en-US')} entries (100 B values)`;
  lines.push(
    `| JS heapUsed after GC, ${loaded} | ${fmtMB(m.nativeHeapBytes)} | ${fmtMB(m.lruHeapBytes)} | ${ratio(m.nativeHeapBytes, m.lruHeapBytes)} |`,
  );
  lines.push(
    `| RSS after GC, ${loaded} | ${fmtMB(m.nativeRssBytes)} | ${fmtMB(m.lruRssBytes)} | ${ratio(m.nativeRssBytes, m.lruRssBytes)} |`,
  );
  const { native: n, lru: l } = r.latency;
  const readLoop = `read loop (20 keys + churn) under GC, ${r.latency.entries.toLocaleString('en-US')} entries`;
  for (const [label, key] of [
    ['p50', 'p50Micros'],
    ['p99', 'p99Micros'],
    ['p999', 'p999Micros'],
    ['max', 'maxMicros'],
  ] as const) {
    lines.push(`| ${readLoop}: ${label} | ${fmtUs(n[key])} | ${fmtUs(l[key])} | ${ratio(n[key], l[key])} |`);
  }
  lines.push(
    `| GC during the read loop: count / total pause | ${n.gcCount} / ${n.gcPauseMillis.toFixed(0)} ms | ${l.gcCount} / ${l.gcPauseMillis.toFixed(0)} ms | |`,
  );
  lines.push('', 'Ratios: for throughput above 1 means native is faster; for memory and latency below 1 means native is smaller / faster.');
  return lines.join('\n');
}

async function main(argv: string[]): Promise<void> {
  const childAt = argv.indexOf('--child');
  if (childAt >= 0) {
    const job = JSON.parse(argv[childAt + 1]!) as { kind: string; impl: Impl; entries: number; maxTime: number; batches: number };
    let result: unknown;
    if (job.kind === 'throughput') result = childThroughput(job.entries, job.maxTime);
    else if (job.kind === 'memory') result = childMemory(job.impl, job.entries);
    else result = await childLatency(job.impl, job.entries, job.batches);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const quick = argv.includes('--quick');
  const result = await runFeaturesCacheBench(
    quick ? { throughputEntries: [10_000], loadedEntries: 200_000, maxTime: 0.5, latencyBatches: 200_000 } : {},
  );
  process.stdout.write(`${formatFeaturesCacheTable(result)}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
