// npm run bench:retrain -- [--rows 300000] [--seconds 8] [--connections 8] [--no-write]
// Scoring latency while a retraining job trains: the demo model served under steady wrk load,
// measured first with nothing else running, then while a job reads a large training file, fits
// the logistic regression and scores champion and challenger on the validation rows (all in the
// job's worker thread). The gate is set so the job ends rejected: the canary is not measured here.

import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { CREDIT_COLUMNS, generateCreditData, toCsv } from '../examples/credit-data.js';
import { demoModelYaml } from '../examples/build-demo-model.js';
import { table, writeSection } from './results.js';
import { have, killOnExit, postScript, runWrk, serverPin, type WrkResult } from './wrk.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const REQUEST = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 10], datatype: 'FP32', data: ROW }] });
const TOKEN = 'bench-retrain';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rows: { type: 'string', default: '300000' },
      seconds: { type: 'string', default: '8' },
      connections: { type: 'string', default: '8' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  if (!have('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
  const rows = Number(values.rows);
  const seconds = Number(values.seconds);
  const connections = Number(values.connections);

  const work = mkdtempSync(join(tmpdir(), 'scoreline-bench-retrain-'));
  const modelDir = join(work, 'models', 'credit-default');
  mkdirSync(join(modelDir, '1'), { recursive: true });
  copyFileSync(join(ROOT, 'examples/models/credit-default/1/model.onnx'), join(modelDir, '1', 'model.onnx'));
  copyFileSync(join(ROOT, 'examples/models/credit-default/reference.csv'), join(modelDir, 'reference.csv'));
  mkdirSync(join(work, 'training'));
  console.log(`writing ${rows} training rows ...`);
  writeFileSync(
    join(work, 'training', 'applications.csv'),
    toCsv(generateCreditData({ n: rows, seed: 5, drift: 0.5, concept: 1 }), CREDIT_COLUMNS),
  );
  const retraining = {
    data: '../../training/applications.csv',
    useFeedback: false,
    timeColumn: 'application_date',
    label: 'default',
    gate: { minDelta: 1 },
    triggers: {},
  };
  writeFileSync(join(modelDir, 'model.yaml'), `${demoModelYaml()}${stringify({ retraining })}`);
  writeFileSync(join(work, 'scoreline.yaml'), stringify({ modelRepository: 'models', dataDir: 'data', log: { level: 'info' } }));

  const pin = serverPin();
  const argv = [
    ...pin.slice(1),
    process.execPath,
    join(ROOT, 'bin/scoreline.js'),
    'serve',
    '--config',
    join(work, 'scoreline.yaml'),
    '--port',
    '18391',
    '--grpc-port',
    'off',
    '--host',
    '127.0.0.1',
  ];
  const proc: ChildProcess = spawn(pin[0] ?? argv.shift()!, argv, {
    cwd: ROOT,
    env: { ...process.env, SCORELINE_ADMIN_TOKEN: TOKEN },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  killOnExit(() => [proc]);
  const base = 'http://127.0.0.1:18391';
  try {
    await new Promise<void>((resolve, reject) => {
      proc.once('exit', (c) => reject(new Error(`server exited ${c}`)));
      createInterface({ input: proc.stdout! }).on('line', (l) => l.includes('scoreline listening') && resolve());
    });
    const url = `${base}/v2/models/credit-default/infer`;
    const script = postScript(REQUEST, 'retrain-latency');
    await runWrk(url, script, { connections, seconds: 2 }); // warm up
    const idle: WrkResult = await runWrk(url, script, { connections, seconds });
    console.log(`idle:     ${idle.rps.toFixed(0)} rps, p50 ${idle.p50ms.toFixed(3)} ms, p99 ${idle.p99ms.toFixed(3)} ms`);

    const started = await fetch(`${base}/admin/retrain/credit-default`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: '{}',
    });
    const { job } = (await started.json()) as { job: { id: string } };
    const t0 = Date.now();
    const during: WrkResult = await runWrk(url, script, { connections, seconds });
    const t1 = Date.now();
    let j: { state: string; startedAt: string; endedAt: string; steps: { name: string; ms?: number }[] };
    for (;;) {
      j = (await (await fetch(`${base}/admin/jobs/${job.id}`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as typeof j;
      if (['succeeded', 'rejected', 'failed', 'rolled_back'].includes(j.state)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const busy = j.steps.reduce((a: number, s) => a + (s.ms ?? 0), 0);
    const jobStart = Date.parse(j.startedAt);
    const jobEnd = Date.parse(j.endedAt);
    const overlap = Math.max(0, Math.min(jobEnd, t1) - Math.max(jobStart, t0)) / (t1 - t0);
    console.log(
      `training: ${during.rps.toFixed(0)} rps, p50 ${during.p50ms.toFixed(3)} ms, p99 ${during.p99ms.toFixed(3)} ms (job ${j.state}, steps ${j.steps.map((s) => `${s.name} ${s.ms} ms`).join(', ')})`,
    );
    if (overlap < 0.5) console.log(`warning: the job ran for only ${(overlap * 100).toFixed(0)}% of the measured window; use more --rows`);

    const text =
      table(
        ['phase', 'RPS', 'p50 ms', 'p99 ms', 'errors'],
        [
          ['no job', idle.rps.toFixed(0), idle.p50ms.toFixed(3), idle.p99ms.toFixed(3), idle.errors],
          ['retraining job running', during.rps.toFixed(0), during.p50ms.toFixed(3), during.p99ms.toFixed(3), during.errors],
        ],
      ) +
      `\n\nwrk: 1 thread, ${connections} connections, ${seconds} s per phase, pinned to the last CPU (server on the others); job: ${rows} training rows from one CSV, ` +
      `built-in logistic regression, steps ${j.steps.map((s) => `${s.name} ${s.ms} ms`).join(', ')} (${busy} ms of work, covering ${(overlap * 100).toFixed(0)}% of the measured window).\n\n` +
      `- p99 while training / p99 idle = **${(during.p99ms / idle.p99ms).toFixed(2)}** (${idle.p99ms.toFixed(3)} -> ${during.p99ms.toFixed(3)} ms); throughput ${(during.rps / idle.rps).toFixed(2)}x`;
    console.log(`\n${text}`);
    if (!values['no-write'])
      writeSection('retrain-latency', 'Scoring latency while a retraining job trains', 'npm run bench:retrain', text);
  } finally {
    proc.kill('SIGTERM');
  }
}

await main();
