// npm run bench:export -- [--rows 1000000] [--small 100000] [--features 10] [--heap 96] [--no-write]
// Memory of `scoreline export predictions` as the log grows: a monitoring.db is written with the
// log's own store code (segments of 1,000 predictions with --features inputs each, labels joined for
// one in ten), then the CLI exports --small rows and --rows rows in each format, once as users run
// it and once with V8's heap capped at --heap MB. Uncapped, V8 grows its heap lazily (RSS moves
// with the allocation rate, not with what is kept); the capped runs show what the export needs:
// the same cap carries the ten times larger log. Throughput, peak RSS and the CPU load average at
// the start are printed (the machine is shared).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { openStore, type AppendSegment } from '../src/monitoring/log-store.js';
import { table, writeSection } from './results.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'bin', 'scoreline.js');
const SEGMENT = 1000;

function writeLog(dataDir: string, model: string, rows: number, width: number): void {
  const db = new Database(join(dataDir, 'monitoring.db'));
  const store = openStore(db, false);
  const t0 = Date.UTC(2026, 0, 1);
  let seq = 0;
  for (let start = 0; start < rows; start += SEGMENT * 50) {
    const segments: AppendSegment[] = [];
    for (let s = start; s < Math.min(rows, start + SEGMENT * 50); s += SEGMENT) {
      const n = Math.min(SEGMENT, rows - s);
      const ts = new Float64Array(n);
      const scores = new Float64Array(n);
      const features = new Float32Array(n * width);
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        ts[i] = t0 + (s + i) * 10;
        scores[i] = ((s + i) % 997) / 997;
        for (let j = 0; j < width; j++) features[i * width + j] = (s + i + j) % 101;
        ids.push(`req-${s + i}`);
      }
      segments.push({
        model,
        version: 1 + (s % 2),
        variant: 'default',
        task: 'classification',
        width,
        n,
        ids: JSON.stringify(ids),
        ts,
        scores,
        features,
      });
    }
    store.writeGroup([{ kind: 'append', through: ++seq, position: 0, segments, rows: segments.reduce((a, x) => a + x.n, 0) }]);
    const labels = [];
    for (let i = start; i < Math.min(rows, start + SEGMENT * 50); i += 10)
      labels.push({ requestId: `req-${i}`, label: i % 20 === 0 ? 1 : 0 });
    store.feedback(labels, t0 + rows * 10);
  }
  db.close();
}

interface Run {
  rows: number;
  heap: string;
  format: string;
  seconds: number;
  rssMb: number;
  bytes: number;
}

function exportOnce(dataDir: string, model: string, format: string, dir: string, heap: number | null): Run {
  const out = join(dir, `out.${format}`);
  const node = heap === null ? [] : [`--max-old-space-size=${heap}`];
  const r = spawnSync(
    process.execPath,
    [...node, CLI, 'export', 'predictions', '--data-dir', dataDir, '--model', model, '--format', format, '--output', out, '--quiet'],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(r.stderr);
  const m = /exported ([\d,]+) predictions .* in ([\d.]+) s \(peak RSS (\d+) MB\)/.exec(r.stdout);
  if (m === null) throw new Error(`unexpected output: ${r.stdout}`);
  const bytes = statSync(out).size;
  rmSync(out);
  return {
    rows: Number(m[1]!.replaceAll(',', '')),
    heap: heap === null ? 'default' : `${heap} MB`,
    format,
    seconds: Number(m[2]),
    rssMb: Number(m[3]),
    bytes,
  };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      rows: { type: 'string', default: '1000000' },
      small: { type: 'string', default: '100000' },
      features: { type: 'string', default: '10' },
      heap: { type: 'string', default: '96' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  const heap = Number(values.heap);
  const big = Number(values.rows);
  const small = Number(values.small);
  const width = Number(values.features);
  const load = loadavg()[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-bench-export-'));
  try {
    const dataDir = join(dir, 'data');
    spawnSync('mkdir', ['-p', dataDir]);
    // Two models in one log: the small export reads only its own segments, the big one its own.
    writeLog(dataDir, 'small', small, width);
    writeLog(dataDir, 'big', big, width);
    const runs: Run[] = [];
    for (const format of ['parquet', 'jsonl', 'csv']) {
      for (const cap of [null, heap])
        runs.push(exportOnce(dataDir, 'small', format, dir, cap), exportOnce(dataDir, 'big', format, dir, cap));
    }
    const rows = runs.map((r) => [
      r.format,
      r.heap,
      r.rows.toLocaleString('en-US'),
      r.seconds.toFixed(2),
      Math.round(r.rows / r.seconds).toLocaleString('en-US'),
      r.rssMb,
      (r.bytes / 2 ** 20).toFixed(1),
    ]);
    const ratios = (h: string) =>
      ['parquet', 'jsonl', 'csv'].map((f) => {
        const [a, b] = runs.filter((r) => r.format === f && r.heap === h);
        return `${f} ${(b!.rssMb / a!.rssMb).toFixed(2)}x`;
      });
    const body =
      `${table(['format', 'V8 heap', 'rows', 'seconds', 'rows/s', 'peak RSS (MB)', 'file (MiB)'], rows)}\n\n` +
      `Peak RSS of the ${big.toLocaleString('en-US')}-row export over the ${small.toLocaleString('en-US')}-row one (${width} features, ` +
      `segments of ${SEGMENT} rows, one row in ten labelled): with V8's default heap ${ratios('default').join(', ')}; ` +
      `with the heap capped at ${heap} MB (both sizes complete under it) ${ratios(`${heap} MB`).join(', ')}. Load average at start: ${load.toFixed(2)}.`;
    console.log(body);
    if (!values['no-write']) writeSection('export', 'Prediction export: peak memory as the log grows', 'npm run bench:export', body);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
