// npm run bench:http -- [--seconds 10] [--rounds 3] [--connections 32] [--no-write]
// One run, four servers on the demo credit model, each driven by wrk with the same OIP request:
//   ceiling          uWS answering a fixed body (the HTTP stack's limit)
//   fastify+ort      Fastify + onnxruntime-node, one session.run per request
//   scoreline         the server as shipped: a worker pool, and this tiny model placed inline
//                     because its batches run faster than a hop to a worker (inlineBelowMicros)
//   scoreline workers the same with every batch sent to the piscina workers (inlineBelowMicros 0)
// Rounds are interleaved and medians reported, because a small shared machine is noisy.

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { have, median, killOnExit, postScript, runWrk, waitReady, type WrkResult } from './wrk.js';
import { table, writeReadmeBlock, writeSection } from './results.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODEL = join(ROOT, 'examples/models/credit-default/1/model.onnx');
const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const REQUEST = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 10], datatype: 'FP32', data: ROW }] });

interface Target {
  name: string;
  port: number;
  start(): ChildProcess;
  proc?: ChildProcess;
  results: WrkResult[];
}

function node(args: string[]): ChildProcess {
  return spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '10' }, rounds: { type: 'string', default: '3' }, connections: { type: 'string', default: '32' }, 'no-write': { type: 'boolean', default: false } },
  });
  if (!have('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const connections = Number(values.connections);
  const path = '/v2/models/credit-default/infer';

  // The ceiling answers with the very body scoreline sends for this request.
  const scorelineAnswerFile = join(tmpdir(), `scoreline-bench-answer-${process.pid}.json`);
  const poolOnly = join(tmpdir(), `scoreline-bench-pool-${process.pid}.yaml`);
  writeFileSync(poolOnly, 'inference:\n  workers: 1\n  inlineBelowMicros: 0\n');
  const targets: Target[] = [
    { name: 'ceiling (uWS fixed body)', port: 18190, start: () => node(['dist/bench/servers/hello.js', '18190', scorelineAnswerFile]), results: [] },
    { name: 'fastify + onnxruntime-node', port: 18191, start: () => node(['dist/bench/servers/fastify-ort.js', '18191', MODEL, 'credit-default']), results: [] },
    { name: 'scoreline (default: model inline)', port: 18192, start: () => node(['bin/scoreline.js', 'serve', '--model-repo', 'examples/models', '--port', '18192', '--host', '127.0.0.1', '--log-level', 'warn']), results: [] },
    { name: 'scoreline (batches in 1 worker)', port: 18193, start: () => node(['bin/scoreline.js', 'serve', '--model-repo', 'examples/models', '--port', '18193', '--host', '127.0.0.1', '--log-level', 'warn', '--config', poolOnly]), results: [] },
  ];
  const [ceiling, fastify, scoreline, pooled] = targets as [Target, Target, Target, Target];
  killOnExit(() => targets.map((t) => t.proc));
  try {
    for (const t of [scoreline, pooled, fastify]) {
      t.proc = t.start();
      await waitReady(t.port, path, REQUEST);
    }
    // Same request, same answer: check before measuring anything.
    const answers = await Promise.all([scoreline, pooled, fastify].map(async (t) => (await fetch(`http://127.0.0.1:${t.port}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: REQUEST })).json()));
    const probs = answers.map((a: any) => a.outputs.find((o: any) => o.name === 'probabilities').data[1] as number);
    if (probs.some((p) => Math.abs(p - probs[0]!) > 1e-6)) throw new Error(`servers disagree: ${probs.join(', ')}`);
    writeFileSync(scorelineAnswerFile, JSON.stringify(answers[0]));
    ceiling.proc = ceiling.start();
    await waitReady(ceiling.port, path, REQUEST);

    const script = postScript(REQUEST, 'http');
    for (const t of targets) await runWrk(`http://127.0.0.1:${t.port}${path}`, script, { connections, seconds: 2 }); // warm up
    for (let r = 0; r < rounds; r++) {
      for (const t of targets) {
        const res = await runWrk(`http://127.0.0.1:${t.port}${path}`, script, { connections, seconds });
        t.results.push(res);
        console.log(`round ${r + 1} ${t.name.padEnd(32)} ${res.rps.toFixed(0).padStart(8)} rps  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  errors ${res.errors}`);
      }
    }
  } finally {
    for (const t of targets) t.proc?.kill('SIGTERM');
  }

  const summary = targets.map((t) => ({ name: t.name, rps: median(t.results.map((r) => r.rps)), p50: median(t.results.map((r) => r.p50ms)), p99: median(t.results.map((r) => r.p99ms)), errors: t.results.reduce((a, r) => a + r.errors, 0) }));
  const [c, f, s, w] = summary as [typeof summary[0], typeof summary[0], typeof summary[0], typeof summary[0]];
  const rows = summary.map((x) => [x.name, x.rps.toFixed(0), x.p50.toFixed(3), x.p99.toFixed(3), x.errors, (x.rps / c.rps).toFixed(2), (x.rps / f.rps).toFixed(2)]);
  const text =
    table(['server', 'RPS (median)', 'p50 ms', 'p99 ms', 'errors', 'x ceiling', 'x fastify'], rows) +
    `\n\nwrk: 1 thread, ${connections} connections, ${seconds} s per run, ${rounds} interleaved rounds (medians), pinned to the last CPU; ` +
    `request: one row of the demo credit model (\`${REQUEST.length}\` bytes of OIP JSON).\n\n` +
    `- scoreline / ceiling = **${(s.rps / c.rps).toFixed(2)}**, scoreline / fastify = **${(s.rps / f.rps).toFixed(2)}**, p99 ${s.p99.toFixed(3)} ms\n` +
    `- with every batch in the worker pool: / ceiling = **${(w.rps / c.rps).toFixed(2)}**, / fastify = **${(w.rps / f.rps).toFixed(2)}**, p99 ${w.p99.toFixed(3)} ms\n` +
    `- for this model (one ~20 us batch of 64 rows) inline is **${(s.rps / w.rps).toFixed(2)}x** the throughput of the worker pool, which is why the default places it inline`;
  console.log(`\n${text}`);
  if (!values['no-write']) {
    writeSection('http', 'HTTP inference: scoreline vs the uWS ceiling and Fastify + onnxruntime-node', 'npm run bench:http', text);
    writeReadmeBlock(
      'http',
      table(
        ['server', 'RPS', 'p50 ms', 'p99 ms', 'x ceiling', 'x Fastify'],
        summary.map((x) => [x.name, x.rps.toFixed(0), x.p50.toFixed(2), x.p99.toFixed(2), (x.rps / c.rps).toFixed(2), (x.rps / f.rps).toFixed(2)]),
      ),
    );
  }
}

await main();
