// npm run bench:explain -- [--rows 2000] [--no-write]
// The cost of an explained row, for each method, on one seeded synthetic credit-like problem of 61
// features:
//   linear      the logistic regression (trainLogistic, exported by logisticToOnnx)
//   TreeSHAP    a 150-tree depth-3 GBDT (fitTrees, exported as one TreeEnsembleClassifier)
//   KernelSHAP  a MatMul+Tanh net on the same 61 features (coalitions sampled) and on its first 10
//               (every coalition enumerated); 50 background rows each
// Two measurements:
//   in-process  the explainer's math alone (linear contributions, TreeSHAP), microseconds per row,
//               next to evaluating the same margin without explaining it
//   served      a real scoreline server: v1 :explain against :predict on the same rows, wall time
//               and server CPU time (all threads, from /proc) per row; the first explanation of a
//               version builds its explainer and is timed apart
// The machine is shared: the load average is printed with the result.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { explainExact, marginOf, prepareExact, recogniseScore, type ScoreModel } from '../src/explain/index.js';
import { seededRandom } from '../src/explain/index.js';
import { fitTrees, logisticToOnnx, trainLogistic, treesToOnnx } from '../src/retraining/index.js';
import { tanhNet } from '../test/fixtures/explain-models.js';
import { table, writeSection } from './results.js';
import { cpuMs, killOnExit, serverPin, waitReady } from './wrk.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const M = 61;
const NAMES = Array.from({ length: M }, (_, j) => `x${String(j).padStart(2, '0')}`);
const PORT = 18371;

/** Seeded rows of 61 features on different scales, and labels from a known nonlinear log-odds. */
function synthetic(n: number, seed: number): { X: Float64Array; y: Float64Array } {
  const r = seededRandom(seed);
  const X = new Float64Array(n * M);
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < M; j++) X[i * M + j] = Math.fround(Math.round((r() * 2 - 1) * (1 + (j % 7)) * 100) / 100);
    const x = (j: number) => X[i * M + j]!;
    const logit = -1 + 0.8 * x(0) - 0.5 * x(3) + 0.3 * x(7) * x(8) + (x(12) > 1 ? 0.9 : 0) - 0.2 * x(20) + 0.1 * x(40);
    y[i] = r() < 1 / (1 + Math.exp(-logit)) ? 1 : 0;
  }
  return { X, y };
}

function read(bytes: Uint8Array, features: number, output: string, column: number | null): ScoreModel {
  const r = recogniseScore(bytes, { input: 'input', inputType: 'FP32', features, output, column });
  if (!r.ok) throw new Error(r.reason);
  return r.model;
}

/** Microseconds per call of f over `rows` rows, repeated until at least 300 ms have run. */
function perRow(rows: number, f: (i: number) => void): number {
  for (let i = 0; i < Math.min(rows, 200); i++) f(i);
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 300) {
    for (let i = 0; i < rows; i++) f(i);
    n += rows;
  }
  return ((performance.now() - t0) * 1000) / n;
}

interface Served {
  model: string;
  features: number;
  method: string;
  detail: string;
  build: number;
  wallUs: number;
  cpuUs: number;
  predictWallUs: number;
  predictCpuUs: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rows: { type: 'string', default: '2000' }, 'no-write': { type: 'boolean', default: false } } });
  const refRows = Number(values.rows);
  const load0 = loadavg()[0]!;
  const train = synthetic(20_000, 1);
  const ref = synthetic(refRows, 2);
  const probe = synthetic(512, 3);

  const logistic = trainLogistic(train.X, train.y, { l2: 1 });
  const linearBytes = logisticToOnnx(logistic, { featureNames: NAMES });
  const trees = fitTrees(train.X, train.y, { trees: 150, depth: 3 });
  const treesBytes = treesToOnnx(trees, { featureNames: NAMES });

  // In-process: the math of one explained row against evaluating its margin.
  const inProcess: (string | number)[][] = [];
  for (const [name, bytes] of [
    ['linear (logistic regression)', linearBytes],
    ['TreeSHAP (150 trees, depth 3)', treesBytes],
  ] as const) {
    const model = read(bytes, M, 'probabilities', 1);
    const exact = prepareExact(model, ref.X, refRows, NAMES);
    const phi = new Float64Array(M);
    const rowOf = (i: number) => probe.X.subarray((i % 512) * M, ((i % 512) + 1) * M);
    const explain = perRow(512, (i) => explainExact(exact, rowOf(i), phi));
    const score = perRow(512, (i) => marginOf(model, rowOf(i)));
    inProcess.push([name, explain.toFixed(2), score.toFixed(3), (explain / score).toFixed(1)]);
    console.log(`in-process ${name}: ${explain.toFixed(2)} us per explained row, ${score.toFixed(3)} us per margin`);
  }

  // Served: a repository of the four models, each with the same reference rows.
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-bench-explain-'));
  const repo = join(dir, 'models');
  const csv = (features: number) =>
    `${[NAMES.slice(0, features).join(','), ...Array.from({ length: refRows }, (_, i) => Array.from(ref.X.subarray(i * M, i * M + features)).join(','))].join('\n')}\n`;
  const models: [string, Uint8Array, number, Record<string, unknown>][] = [
    ['linear61', linearBytes, M, { score: { output: 'probabilities', index: 1 } }],
    ['trees61', treesBytes, M, { score: { output: 'probabilities', index: 1 } }],
    ['net10', tanhNet(10, 16, 5), 10, { score: { output: 'score' } }],
    ['net61', tanhNet(M, 16, 4), M, { score: { output: 'score' } }],
  ];
  for (const [name, bytes, features, extra] of models) {
    mkdirSync(join(repo, name, '1'), { recursive: true });
    writeFileSync(join(repo, name, '1', 'model.onnx'), bytes);
    writeFileSync(join(repo, name, 'reference.csv'), csv(features));
    writeFileSync(
      join(repo, name, 'model.yaml'),
      stringify({ features: NAMES.slice(0, features), reference: 'reference.csv', task: 'classification', ...extra }),
    );
  }
  const config = join(dir, 'scoreline.yaml');
  // KernelSHAP on 61 features runs ~10^5 model rows per explained row: the deadline is raised for it.
  writeFileSync(
    config,
    stringify({ modelRepository: repo, dataDir: join(dir, 'data'), server: { requestTimeoutMs: 120_000 }, monitoring: { enabled: false } }),
  );
  let proc: ChildProcess | undefined;
  killOnExit(() => [proc]);
  const pin = serverPin();
  const argv = [
    ...pin.slice(1),
    process.execPath,
    'bin/scoreline.js',
    'serve',
    '--config',
    config,
    '--port',
    String(PORT),
    '--host',
    '127.0.0.1',
    '--log-level',
    'error',
  ];
  proc = spawn(pin[0] ?? argv.shift()!, argv, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  const instance = (i: number, features: number) => Array.from(probe.X.subarray((i % 512) * M, (i % 512) * M + features));
  await waitReady(PORT, '/v1/models/linear61:predict', JSON.stringify({ instances: [instance(0, M)] }));

  const post = async (path: string, body: unknown) => {
    const r = await fetch(`http://127.0.0.1:${PORT}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${path}: ${r.status} ${text}`);
    return JSON.parse(text) as { explanations?: { method: string; kernel?: { coalitions: number; exact: boolean; model_rows: number } }[] };
  };
  /** Wall and server CPU microseconds per row over `requests` requests of `batch` rows. */
  const measure = async (path: string, requests: number, batch: number, features: number) => {
    const cpu0 = cpuMs(proc!.pid!);
    const t0 = performance.now();
    for (let q = 0; q < requests; q++)
      await post(path, { instances: Array.from({ length: batch }, (_, b) => instance(q * batch + b, features)) });
    const rows = requests * batch;
    return { wallUs: ((performance.now() - t0) * 1000) / rows, cpuUs: ((cpuMs(proc!.pid!) - cpu0) * 1000) / rows };
  };
  const served: Served[] = [];
  try {
    for (const [name, , features] of models) {
      const kernel = name.startsWith('net');
      const t0 = performance.now();
      const first = await post(`/v1/models/${name}:explain`, { instances: [instance(511, features)] });
      const build = performance.now() - t0;
      const e = first.explanations![0]!;
      const [requests, batch] = kernel ? (features > 10 ? [3, 1] : [10, 1]) : [40, 32];
      const explain = await measure(`/v1/models/${name}:explain`, requests, batch, features);
      const predict = await measure(`/v1/models/${name}:predict`, kernel ? 40 : requests, kernel ? 32 : batch, features);
      const detail = e.kernel
        ? `${e.kernel.coalitions} coalitions${e.kernel.exact ? ' (all)' : ' (sampled)'} x 50 background = ${e.kernel.model_rows} model rows per explained row`
        : `${requests} requests x ${batch} rows`;
      served.push({
        model: name,
        features,
        method: e.method,
        detail,
        build,
        wallUs: explain.wallUs,
        cpuUs: explain.cpuUs,
        predictWallUs: predict.wallUs,
        predictCpuUs: predict.cpuUs,
      });
      console.log(
        `served ${name} (${e.method}): ${explain.wallUs.toFixed(0)} us wall, ${explain.cpuUs.toFixed(0)} us CPU per explained row; predict ${predict.wallUs.toFixed(1)} / ${predict.cpuUs.toFixed(1)} us; first explanation ${build.toFixed(0)} ms`,
      );
    }
  } finally {
    proc.kill('SIGTERM');
  }
  const load1 = loadavg()[0]!;
  const body = [
    '**In-process** (the explainer alone, one thread; `explainExact` per row against evaluating the same margin):',
    '',
    table(['method (61 features)', 'us per explained row', 'us per margin', 'x margin'], inProcess),
    '',
    `**Served** (v1 \`:explain\` vs \`:predict\` on the same rows, one client, sequential requests; reference ${refRows} rows):`,
    '',
    table(
      [
        'model',
        'method',
        'us per explained row (wall)',
        'server CPU us per explained row',
        'us per predicted row (wall / CPU)',
        'x predict (CPU)',
        'first explanation (builds the explainer)',
        'work',
      ],
      served.map((s) => [
        `${s.model} (${s.features} features)`,
        s.method,
        s.wallUs.toFixed(0),
        s.cpuUs.toFixed(0),
        `${s.predictWallUs.toFixed(1)} / ${s.predictCpuUs.toFixed(1)}`,
        (s.cpuUs / s.predictCpuUs).toFixed(0),
        `${s.build.toFixed(0)} ms`,
        s.detail,
      ]),
    ),
    '',
    `Load average (1 min) ${load0.toFixed(2)} at start, ${load1.toFixed(2)} at end${load0 > 1 || load1 > 1 ? ': measured while other work ran on the machine' : ''}.`,
    "KernelSHAP runs its coalition rows through the version's batcher (maxBatchSize 64) as internal requests, four batches in flight: its cost is model rows, not math.",
  ].join('\n');
  console.log(`\n${body}`);
  if (!values['no-write']) writeSection('explain', 'Explanations: cost per explained row', 'npm run bench:explain', body);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
