// npm run bench:http -- [--seconds 10] [--rounds 3] [--connections 32] [--no-write]
// One run, two models (the demo logistic regression and a 150-tree GBDT over 61 features, see
// gbdt.ts), four servers per model, each driven by wrk with the same one-row OIP request:
//   ceiling           uWS answering that model's answer as a fixed body (the HTTP stack's limit)
//   fastify+ort       Fastify + onnxruntime-node, one session.run per request
//   scoreline         the server as shipped (monitoring and the prediction log on): a worker pool,
//                     and models whose batches run faster than a hop to a worker placed inline
//   scoreline workers the same with every batch sent to the piscina workers (inlineBelowMicros 0)
// Reported first: server CPU microseconds per request (all threads, from /proc), then throughput
// and latency. Rounds are interleaved and medians reported, because a small shared machine is noisy.

import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { GBDT_NAME, writeGbdtRepository } from './gbdt.js';
import { cpuMs, have, median, killOnExit, postScript, runWrk, serverPin, waitReady, type WrkResult } from './wrk.js';
import { table, writeReadmeBlock, writeSection } from './results.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DEMO_ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];

interface Target {
  name: string;
  port: number;
  start(): ChildProcess;
  proc?: ChildProcess;
  results: WrkResult[];
  /** Server CPU (all threads) per request, microseconds, per round. */
  cpuUs: number[];
}

interface Model {
  name: string;
  label: string;
  path: string;
  request: string;
  targets: Target[];
}

function node(args: string[]): ChildProcess {
  const pin = serverPin();
  const [cmd, ...rest] = pin.length > 0 ? [...pin, process.execPath, ...args] : [process.execPath, ...args];
  return spawn(cmd!, rest, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '10' }, rounds: { type: 'string', default: '3' }, connections: { type: 'string', default: '32' }, 'no-write': { type: 'boolean', default: false } },
  });
  if (!have('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const connections = Number(values.connections);

  // One repository with both models: the demo logistic regression and the 150-tree GBDT.
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-bench-http-'));
  const repo = join(dir, 'models');
  cpSync(join(ROOT, 'examples/models/credit-default'), join(repo, 'credit-default'), { recursive: true });
  const gbdtRow = writeGbdtRepository(repo);
  const poolOnly = join(dir, 'pool.yaml');
  writeFileSync(poolOnly, 'inference:\n  workers: 1\n  inlineBelowMicros: 0\n');
  const serve = (port: number, extra: string[] = []) =>
    node(['bin/scoreline.js', 'serve', '--model-repo', repo, '--data-dir', join(dir, `data-${port}`), '--port', String(port), '--host', '127.0.0.1', '--log-level', 'warn', ...extra]);
  const scoreline: Target = { name: 'scoreline (default)', port: 18192, start: () => serve(18192), results: [], cpuUs: [] };
  const pooled: Target = { name: 'scoreline (batches in 1 worker)', port: 18193, start: () => serve(18193, ['--config', poolOnly]), results: [], cpuUs: [] };
  const oip = (row: number[]) => JSON.stringify({ inputs: [{ name: 'input', shape: [1, row.length], datatype: 'FP32', data: row }] });
  const models: Model[] = [
    { name: 'credit-default', label: 'logistic regression, 10 features (the demo)', path: join(repo, 'credit-default/1/model.onnx'), request: oip(DEMO_ROW), targets: [] },
    { name: GBDT_NAME, label: 'gradient-boosted trees, 150 trees of depth 3, 61 features', path: join(repo, GBDT_NAME, '1/model.onnx'), request: oip(gbdtRow), targets: [] },
  ];
  let port = 18200;
  for (const m of models) {
    const answer = join(dir, `${m.name}-answer.json`);
    const p1 = port++;
    const p2 = port++;
    m.targets = [
      { name: 'ceiling (uWS fixed body)', port: p1, start: () => node(['dist/bench/servers/hello.js', String(p1), answer]), results: [], cpuUs: [] },
      { name: 'fastify + onnxruntime-node', port: p2, start: () => node(['dist/bench/servers/fastify-ort.js', String(p2), m.path, m.name]), results: [], cpuUs: [] },
      scoreline,
      pooled,
    ];
  }
  const all = [scoreline, pooled, ...models.flatMap((m) => m.targets.slice(0, 2))];
  killOnExit(() => all.map((t) => t.proc));
  const load0 = loadavg()[0]!;
  try {
    for (const t of [scoreline, pooled, ...models.map((m) => m.targets[1]!)]) t.proc = t.start();
    for (const m of models) {
      const path = `/v2/models/${m.name}/infer`;
      for (const t of m.targets.slice(1)) await waitReady(t.port, path, m.request);
      // Same request, same answer: check before measuring anything.
      const answers = await Promise.all(m.targets.slice(1).map(async (t) => (await fetch(`http://127.0.0.1:${t.port}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: m.request })).json()));
      const probs = answers.map((a: any) => a.outputs.find((o: any) => o.name === 'probabilities').data[1] as number);
      if (probs.some((p) => Math.abs(p - probs[0]!) > 1e-5)) throw new Error(`${m.name}: servers disagree: ${probs.join(', ')}`);
      const ours = answers[1]!;
      writeFileSync(join(dir, `${m.name}-answer.json`), JSON.stringify(ours));
      const ceiling = m.targets[0]!;
      ceiling.proc = ceiling.start();
      await waitReady(ceiling.port, path, m.request);
    }

    // Each (model, server) pair keeps its own results; scoreline targets are shared objects, so key by model.
    const results = new Map<string, { res: WrkResult[]; cpu: number[] }>();
    const key = (m: Model, t: Target) => `${m.name}\u0000${t.name}`;
    for (const m of models) {
      const script = postScript(m.request, `http-${m.name}`);
      for (const t of m.targets) await runWrk(`http://127.0.0.1:${t.port}/v2/models/${m.name}/infer`, script, { connections, seconds: 2 }); // warm up
    }
    for (let r = 0; r < rounds; r++) {
      for (const m of models) {
        const script = postScript(m.request, `http-${m.name}`);
        for (const t of m.targets) {
          const c0 = cpuMs(t.proc!.pid!);
          const res = await runWrk(`http://127.0.0.1:${t.port}/v2/models/${m.name}/infer`, script, { connections, seconds });
          const cpuUs = ((cpuMs(t.proc!.pid!) - c0) * 1000) / Math.max(1, res.requests);
          const slot = results.get(key(m, t)) ?? { res: [], cpu: [] };
          slot.res.push(res);
          slot.cpu.push(cpuUs);
          results.set(key(m, t), slot);
          console.log(`round ${r + 1} ${m.name.padEnd(15)} ${t.name.padEnd(32)} ${res.rps.toFixed(0).padStart(8)} rps  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  cpu ${cpuUs.toFixed(2)} us/req  errors ${res.errors}`);
        }
      }
    }

    let text = '';
    let readme = '';
    for (const m of models) {
      const summary = m.targets.map((t) => {
        const s = results.get(key(m, t))!;
        return { name: t.name, cpu: median(s.cpu), rps: median(s.res.map((x) => x.rps)), p50: median(s.res.map((x) => x.p50ms)), p99: median(s.res.map((x) => x.p99ms)), errors: s.res.reduce((a, x) => a + x.errors, 0) };
      });
      const [c, f, sc, w] = summary as [(typeof summary)[0], (typeof summary)[0], (typeof summary)[0], (typeof summary)[0]];
      const rows = summary.map((x) => [x.name, x.cpu.toFixed(2), (x.cpu / c.cpu).toFixed(2), x.rps.toFixed(0), x.p50.toFixed(3), x.p99.toFixed(3), x.errors, (x.rps / c.rps).toFixed(2), (x.rps / f.rps).toFixed(2)]);
      text +=
        `### ${m.name}: ${m.label}\n\n` +
        table(['server', 'CPU us/request', 'CPU x ceiling', 'RPS (median)', 'p50 ms', 'p99 ms', 'errors', 'x ceiling', 'x fastify'], rows) +
        `\n\n- scoreline: **${sc.cpu.toFixed(2)} us** of server CPU per request (**${(sc.cpu / c.cpu).toFixed(2)}x** the ceiling's, **${(sc.cpu / f.cpu).toFixed(2)}x** Fastify's); ` +
        `throughput **${(sc.rps / c.rps).toFixed(2)}x** the ceiling, **${(sc.rps / f.rps).toFixed(2)}x** Fastify; p99 ${sc.p99.toFixed(3)} ms vs Fastify's ${f.p99.toFixed(3)} ms\n` +
        `- with every batch in the worker pool: ${w.cpu.toFixed(2)} us/request, ${(w.rps / c.rps).toFixed(2)}x the ceiling, ${(w.rps / f.rps).toFixed(2)}x Fastify, p99 ${w.p99.toFixed(3)} ms\n\n`;
      readme += `${m.label}:\n\n` + table(['server', 'CPU us/req', 'RPS', 'p99 ms', 'x ceiling', 'x Fastify'], summary.map((x) => [x.name, x.cpu.toFixed(1), x.rps.toFixed(0), x.p99.toFixed(2), (x.rps / c.rps).toFixed(2), (x.rps / f.rps).toFixed(2)])) + '\n\n';
    }
    text +=
      `wrk: 1 thread, ${connections} connections, ${seconds} s per run, ${rounds} interleaved rounds (medians), wrk pinned to the last CPU and every server to the others; ` +
      `request: one row of OIP JSON. CPU us/request is the server process's CPU time (all threads, /proc) over the run divided by the requests it answered: ` +
      `the figure that survives a noisy machine. Load average at start: ${load0.toFixed(2)}.`;
    console.log(`\n${text}`);
    if (!values['no-write']) {
      writeSection('http', 'HTTP inference: scoreline vs the uWS ceiling and Fastify + onnxruntime-node', 'npm run bench:http', text);
      writeReadmeBlock('http', readme.trimEnd());
    }
  } finally {
    for (const t of all) t.proc?.kill('SIGTERM');
  }
}

await main();
