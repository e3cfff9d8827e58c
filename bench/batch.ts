// Benchmark of batch scoring (src/batch) against the naive loop, measured in one run on the same
// file: the demo credit rows are generated once into a temp CSV, the bundled credit-default model is
// registered into a temp registry, then
//   (a) scoreBatch on the whole file (default 2M rows; the median of --runs runs) and on its first
//       tenth, each run in a fresh child process so its peak RSS is its own (memory is flat when the
//       peaks match and RSS stops growing early in the big run), and
//   (b) a naive loop: readline over the same CSV, onnxruntime-node's public InferenceSession.run once
//       per row, one output line per row (time-boxed to the first --naive-rows rows).
// Prints the table and writes it into bench/RESULTS.md (section `batch`) unless --no-write.
//
//   npx tsc -p . && node dist/bench/batch.js [--rows 2000000] [--naive-rows 100000] [--runs 3] [--workers N] [--no-write]

import { fork } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, createWriteStream, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import { CREDIT_FEATURES, generateCreditData, toCsv } from '../examples/credit-data.js';
import { scoreBatch, DEFAULT_BATCH_ROWS, type BatchSummary } from '../src/batch/index.js';
import { parseModelConfig } from '../src/config.js';
import { ModelRegistry } from '../src/registry/index.js';
import { SqliteRegistry } from '../src/store/index.js';
import { machine, table, writeSection } from './results.js';

const MODEL_DIR = fileURLToPath(new URL('../../examples/models/credit-default/', import.meta.url));
const MODEL = 'credit-default';
const GENERATE_CHUNK = 100_000;

interface ChildRequest {
  dataDir: string;
  input: string;
  output: string;
  workers: number;
}

interface ChildAnswer {
  summary: BatchSummary;
  /** The OS's peak RSS of the child process (getrusage), bytes. */
  maxRssBytes: number;
  /** RSS sampled at every progress report: [rows, bytes]. */
  samples: [number, number][];
}

/** Writes `rows` demo rows as CSV (header once) and the first `firstRows` of them into a second file. */
async function writeDemoCsv(path: string, rows: number, firstPath: string, firstRows: number): Promise<void> {
  const all = createWriteStream(path);
  const first = createWriteStream(firstPath);
  const put = async (s: ReturnType<typeof createWriteStream>, text: string) => {
    if (!s.write(text)) await once(s, 'drain');
  };
  let written = 0;
  for (let seed = 1; written < rows; seed++) {
    const n = Math.min(GENERATE_CHUNK, rows - written);
    const csv = toCsv(generateCreditData({ n, seed }));
    const body = written === 0 ? csv : csv.slice(csv.indexOf('\n') + 1);
    await put(all, body);
    if (written < firstRows) {
      const lines = body.split('\n');
      const keep = Math.min(firstRows - written + (written === 0 ? 1 : 0), lines.length - 1);
      await put(first, `${lines.slice(0, keep).join('\n')}\n`);
    }
    written += n;
  }
  all.end();
  first.end();
  await Promise.all([once(all, 'close'), once(first, 'close')]);
}

/** Runs scoreBatch in a fresh process: its RSS is batch scoring's alone. */
async function scoreInChild(req: ChildRequest): Promise<ChildAnswer> {
  const child = fork(fileURLToPath(import.meta.url), ['--child', JSON.stringify(req)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const [answer] = (await once(child, 'message')) as [ChildAnswer | { error: string }];
  await once(child, 'exit');
  if ('error' in answer) throw new Error(`scoreBatch failed in the child: ${answer.error}`);
  return answer;
}

async function child(req: ChildRequest): Promise<void> {
  const registry = ModelRegistry.open(req.dataDir);
  const samples: [number, number][] = [];
  try {
    const summary = await scoreBatch({
      registry: new SqliteRegistry(registry),
      model: MODEL,
      input: req.input,
      output: req.output,
      idColumns: ['customer_id'],
      workers: req.workers,
      progress: (p) => {
        samples.push([p.rows, process.memoryUsage.rss()]);
        process.stderr.write(
          `\r  ${p.rows.toLocaleString('en')} rows, ${Math.round(p.rowsPerSecond).toLocaleString('en')} rows/s, ${((100 * p.bytesRead) / p.bytesTotal).toFixed(0)}%   `,
        );
      },
    });
    process.stderr.write('\n');
    process.send!({ summary, maxRssBytes: process.resourceUsage().maxRSS * 1024, samples } satisfies ChildAnswer);
  } catch (e) {
    process.send!({ error: (e as Error).stack ?? String(e) });
  } finally {
    registry.close();
  }
}

/** The loop most people write first: one line, one session.run, one output line. */
async function naive(input: string, output: string, limit: number): Promise<{ rows: number; seconds: number }> {
  const session = await ort.InferenceSession.create(join(MODEL_DIR, '1', 'model.onnx'));
  const out = createWriteStream(output);
  const lines = createInterface({ input: createReadStream(input), crlfDelay: Infinity });
  let columns: number[] = [];
  let idColumn = 0;
  let rows = 0;
  const started = performance.now();
  for await (const line of lines) {
    const fields = line.split(',');
    if (columns.length === 0) {
      columns = CREDIT_FEATURES.map((f) => fields.indexOf(f));
      idColumn = fields.indexOf('customer_id');
      out.write('customer_id,label,probabilities_0,probabilities_1\n');
      continue;
    }
    const x = Float32Array.from(columns, (c) => Number(fields[c]));
    const result = await session.run({ input: new ort.Tensor('float32', x, [1, x.length]) });
    const p = result.probabilities!.data as Float32Array;
    if (!out.write(`${fields[idColumn]},${result.label!.data[0]},${p[0]},${p[1]}\n`)) await once(out, 'drain');
    if (++rows === limit) break;
  }
  const seconds = (performance.now() - started) / 1000;
  lines.close();
  out.end();
  await once(out, 'close');
  await session.release();
  return { rows, seconds };
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;
const int = (n: number) => Math.round(n).toLocaleString('en');

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      rows: { type: 'string', default: '2000000' },
      'naive-rows': { type: 'string', default: '100000' },
      runs: { type: 'string', default: '3' },
      workers: { type: 'string', default: String(Math.max(1, availableParallelism() - 1)) },
      'no-write': { type: 'boolean', default: false },
    },
  });
  const rows = Number(values.rows);
  const naiveRows = Math.min(Number(values['naive-rows']), rows);
  const workers = Number(values.workers);
  const runs = Math.max(1, Number(values.runs));
  const smallRows = Math.max(1, Math.floor(rows / 10));
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-bench-batch-'));
  try {
    const input = join(dir, 'credit.csv');
    const small = join(dir, 'credit-small.csv');
    console.log(`generating ${int(rows)} demo rows into ${input} ...`);
    await writeDemoCsv(input, rows, small, smallRows);
    const inputBytes = statSync(input).size;

    const dataDir = join(dir, 'data');
    const registry = ModelRegistry.open(dataDir);
    const config = parseModelConfig(readFileSync(join(MODEL_DIR, 'model.yaml'), 'utf8'), 'model.yaml');
    registry.register(MODEL, readFileSync(join(MODEL_DIR, '1', 'model.onnx')), { config: { ...config } });
    registry.close();

    console.log(`scoreBatch, ${int(smallRows)} rows (memory reference) ...`);
    const first = await scoreInChild({ dataDir, input: small, output: join(dir, 'small-out.csv'), workers });
    const fulls: ChildAnswer[] = [];
    for (let r = 1; r <= runs; r++) {
      console.log(`scoreBatch, ${int(rows)} rows, run ${r} of ${runs} ...`);
      fulls.push(await scoreInChild({ dataDir, input, output: join(dir, 'out.csv'), workers }));
    }
    const byRate = [...fulls].sort((a, b) => a.summary.rowsPerSecond - b.summary.rowsPerSecond);
    const full = byRate[(byRate.length - 1) >> 1]!;
    const peakOs = Math.max(...fulls.map((f) => f.maxRssBytes));
    const peakSampled = Math.max(...fulls.map((f) => f.summary.peakRssBytes));
    console.log(`naive loop, first ${int(naiveRows)} rows ...`);
    const slow = await naive(input, join(dir, 'naive-out.csv'), naiveRows);
    const naiveRate = slow.rows / slow.seconds;

    const s = full.summary;
    const quarter = (q: number) => full.samples.find(([r]) => r >= (q * rows) / 4)?.[1] ?? NaN;
    const body = [
      table(
        ['method', 'rows', 'seconds', 'rows/s', 'x naive', 'peak RSS (sampled)', 'peak RSS (OS)'],
        [
          [
            `scoreBatch, ${workers} worker${workers > 1 ? 's' : ''}, batches of ${DEFAULT_BATCH_ROWS}${runs > 1 ? ` (median of ${runs})` : ''}`,
            int(s.rows),
            s.seconds.toFixed(2),
            int(s.rowsPerSecond),
            (s.rowsPerSecond / naiveRate).toFixed(1),
            mb(peakSampled),
            mb(peakOs),
          ],
          [
            `scoreBatch, same, first tenth of the file`,
            int(first.summary.rows),
            first.summary.seconds.toFixed(2),
            int(first.summary.rowsPerSecond),
            (first.summary.rowsPerSecond / naiveRate).toFixed(1),
            mb(first.summary.peakRssBytes),
            mb(first.maxRssBytes),
          ],
          ['naive: readline + InferenceSession.run per row', int(slow.rows), slow.seconds.toFixed(2), int(naiveRate), '1.0', '', ''],
        ],
      ),
      '',
      `Input: ${int(rows)} demo credit rows (\`generateCreditData\`), ${mb(inputBytes)} of CSV with 13 columns; model: the bundled ` +
        `\`credit-default\` v1 (logistic regression, 10 features); output: \`customer_id,label,probabilities_0,probabilities_1\`. ` +
        `Seconds include starting the workers and loading the model. Each scoreBatch run is a fresh child process.`,
      '',
      `- scoreBatch / naive = **${(s.rowsPerSecond / naiveRate).toFixed(1)}x**; target >= 300,000 rows/s: **${s.rowsPerSecond >= 300_000 ? 'met' : 'not met'}** (${int(s.rowsPerSecond)} rows/s)`,
      `- throughput of the ${runs} runs: ${byRate.map((f) => int(f.summary.rowsPerSecond)).join(', ')} rows/s (the machine is shared: expect spread)`,
      `- memory: peak RSS ${mb(peakOs)} for ${int(rows)} rows vs ${mb(first.maxRssBytes)} for ${int(first.summary.rows)} rows; ` +
        `RSS at 25/50/75/100% of the median run: ${[1, 2, 3, 4].map((q) => mb(quarter(q))).join(' / ')}`,
      `- rejected rows: ${s.rejected}; the naive loop ran ${int(slow.rows)} rows (time-boxed), its rate is per row over the same file`,
    ].join('\n');
    console.log(`\n${machine()}\n\n${body}\n`);
    if (!values['no-write']) writeSection('batch', 'Batch scoring: scoreBatch vs one session.run per row', `npm run bench:batch`, body);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const i = process.argv.indexOf('--child');
  if (i >= 0) await child(JSON.parse(process.argv[i + 1]!) as ChildRequest);
  else await main(process.argv.slice(2));
}
