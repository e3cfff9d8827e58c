// npm run bench:http -- [--seconds 10] [--rounds 3] [--connections 32] [--no-write]
// One run, two models (the demo logistic regression and a 150-tree GBDT over 61 features, see
// gbdt.ts), four servers per model, each driven by wrk with the same one-row OIP request:
//   ceiling           uWS answering that model's answer as a fixed body (the HTTP stack's limit)
//   fastify+ort       Fastify + onnxruntime-node, one session.run per request
//   scoreline         the server as shipped (monitoring and the prediction log on): a worker pool,
//                     and models whose batches run faster than a hop to a worker placed inline
//   scoreline workers the same with every batch sent to the piscina workers (inlineBelowMicros 0)
//   floor             uWS copying the body and answering one microtask later with the same answer:
//                     what any server answering after reading the request pays before doing work
// and, for the demo model, the shipped server again over OIP gRPC (typed contents and
// raw_input_contents) driven by bench/grpc-load.ts (wrk speaks HTTP/1.1 only), next to the gRPC
// ceiling (grpc-js answering fixed bytes).
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
import { encodeRequest, encodeResponse, inferOnce, runGrpcLoad, waitGrpcReady } from './grpc-load.js';
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
    options: {
      seconds: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '32' },
      'no-write': { type: 'boolean', default: false },
    },
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
  const serve = (port: number, extra: string[]) =>
    node([
      'bin/scoreline.js',
      'serve',
      '--model-repo',
      repo,
      '--data-dir',
      join(dir, `data-${port}`),
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--log-level',
      'warn',
      ...extra,
    ]);
  const GRPC_PORT = 18194;
  const GRPC_CEILING_PORT = 18195;
  const scoreline: Target = {
    name: 'scoreline (default)',
    port: 18192,
    start: () => serve(18192, ['--grpc-port', String(GRPC_PORT)]),
    results: [],
    cpuUs: [],
  };
  const pooled: Target = {
    name: 'scoreline (batches in 1 worker)',
    port: 18193,
    start: () => serve(18193, ['--grpc-port', 'off', '--config', poolOnly]),
    results: [],
    cpuUs: [],
  };
  const grpcCeiling: { proc?: ChildProcess } = {};
  const grpcTyped = {
    model_name: 'credit-default',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10], contents: { fp32_contents: DEMO_ROW } }],
  };
  const grpcRaw = {
    model_name: 'credit-default',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10] }],
    raw_input_contents: [Buffer.from(Float32Array.from(DEMO_ROW).buffer)],
  };
  const grpcRuns = [
    {
      name: 'ceiling (grpc-js fixed answer)',
      port: GRPC_CEILING_PORT,
      body: encodeRequest(grpcTyped),
      proc: () => grpcCeiling.proc!,
      res: [] as { rps: number; p50ms: number; p99ms: number; errors: number }[],
      cpu: [] as number[],
    },
    {
      name: 'scoreline gRPC, typed contents',
      port: GRPC_PORT,
      body: encodeRequest(grpcTyped),
      proc: () => scoreline.proc!,
      res: [] as { rps: number; p50ms: number; p99ms: number; errors: number }[],
      cpu: [] as number[],
    },
    {
      name: 'scoreline gRPC, raw contents',
      port: GRPC_PORT,
      body: encodeRequest(grpcRaw),
      proc: () => scoreline.proc!,
      res: [] as { rps: number; p50ms: number; p99ms: number; errors: number }[],
      cpu: [] as number[],
    },
  ];
  const oip = (row: number[]) => JSON.stringify({ inputs: [{ name: 'input', shape: [1, row.length], datatype: 'FP32', data: row }] });
  const models: Model[] = [
    {
      name: 'credit-default',
      label: 'logistic regression, 10 features (the demo)',
      path: join(repo, 'credit-default/1/model.onnx'),
      request: oip(DEMO_ROW),
      targets: [],
    },
    {
      name: GBDT_NAME,
      label: 'gradient-boosted trees, 150 trees of depth 3, 61 features',
      path: join(repo, GBDT_NAME, '1/model.onnx'),
      request: oip(gbdtRow),
      targets: [],
    },
  ];
  let port = 18200;
  for (const m of models) {
    const answer = join(dir, `${m.name}-answer.json`);
    const p1 = port++;
    const p2 = port++;
    const p3 = port++;
    m.targets = [
      {
        name: 'ceiling (uWS fixed body)',
        port: p1,
        start: () => node(['dist/bench/servers/hello.js', String(p1), answer]),
        results: [],
        cpuUs: [],
      },
      {
        name: 'fastify + onnxruntime-node',
        port: p2,
        start: () => node(['dist/bench/servers/fastify-ort.js', String(p2), m.path, m.name]),
        results: [],
        cpuUs: [],
      },
      scoreline,
      pooled,
      {
        name: 'floor (uWS reads, answers a tick later)',
        port: p3,
        start: () => node(['dist/bench/servers/hello.js', String(p3), answer, 'read-async']),
        results: [],
        cpuUs: [],
      },
    ];
  }
  const all = [scoreline, pooled, ...models.flatMap((m) => [m.targets[0]!, m.targets[1]!, m.targets[4]!])];
  killOnExit(() => [...all.map((t) => t.proc), grpcCeiling.proc]);
  const load0 = loadavg()[0]!;
  try {
    // The scoreline servers start one at a time, each alone on its CPU: a model's placement (inline
    // or in the worker pool) is decided by timing its batches at load, which other servers loading on
    // the same core would slow down.
    for (const t of [scoreline, pooled]) {
      t.proc = t.start();
      for (const m of models) await waitReady(t.port, `/v2/models/${m.name}/infer`, m.request);
    }
    for (const t of models.map((m) => m.targets[1]!)) t.proc = t.start();
    for (const m of models) {
      const path = `/v2/models/${m.name}/infer`;
      for (const t of m.targets.slice(1, 4)) await waitReady(t.port, path, m.request);
      // Same request, same answer: check before measuring anything.
      const answers = await Promise.all(
        m.targets.slice(1, 4).map(async (t) =>
          (
            await fetch(`http://127.0.0.1:${t.port}${path}`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: m.request,
            })
          ).json(),
        ),
      );
      const probs = (answers as { outputs: { name: string; data: number[] }[] }[]).map(
        (a) => a.outputs.find((o) => o.name === 'probabilities')!.data[1]!,
      );
      if (probs.some((p) => Math.abs(p - probs[0]!) > 1e-5)) throw new Error(`${m.name}: servers disagree: ${probs.join(', ')}`);
      const ours = answers[1]!;
      writeFileSync(join(dir, `${m.name}-answer.json`), JSON.stringify(ours));
      for (const t of [m.targets[0]!, m.targets[4]!]) {
        t.proc = t.start();
        await waitReady(t.port, path, m.request);
      }
    }

    // gRPC typed and raw give HTTP's answer; the gRPC ceiling answers with those bytes.
    await waitGrpcReady(GRPC_PORT, grpcTyped);
    const typedAnswer = await inferOnce(GRPC_PORT, grpcTyped);
    const rawAnswer = await inferOnce(GRPC_PORT, grpcRaw);
    const httpP = (
      (await (
        await fetch(`http://127.0.0.1:${scoreline.port}/v2/models/credit-default/infer`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: models[0]!.request,
        })
      ).json()) as { outputs: { data: number[] }[] }
    ).outputs[1]!.data[1]!;
    const typedP = typedAnswer.outputs[1]!.contents.fp32_contents[1]!;
    const rawP = rawAnswer.raw_output_contents[1]!.readFloatLE(4);
    if (Math.abs(typedP - httpP) > 1e-6 || Math.abs(rawP - httpP) > 1e-6)
      throw new Error(`gRPC disagrees with HTTP: ${typedP}, ${rawP} vs ${httpP}`);
    const grpcAnswerFile = join(dir, 'grpc-answer.bin');
    writeFileSync(grpcAnswerFile, encodeResponse(typedAnswer));
    grpcCeiling.proc = node(['dist/bench/servers/grpc-echo.js', String(GRPC_CEILING_PORT), grpcAnswerFile]);
    await waitGrpcReady(GRPC_CEILING_PORT, grpcTyped);
    for (const g of grpcRuns) await runGrpcLoad(g.port, g.body, { seconds: 2, concurrency: connections }); // warm up

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
          console.log(
            `round ${r + 1} ${m.name.padEnd(15)} ${t.name.padEnd(32)} ${res.rps.toFixed(0).padStart(8)} rps  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  cpu ${cpuUs.toFixed(2)} us/req  errors ${res.errors}`,
          );
        }
      }
      for (const g of grpcRuns) {
        const pid = g.proc().pid!;
        const c0 = cpuMs(pid);
        const res = await runGrpcLoad(g.port, g.body, { seconds, concurrency: connections });
        const cpuUs = ((cpuMs(pid) - c0) * 1000) / Math.max(1, res.requests);
        g.res.push(res);
        g.cpu.push(cpuUs);
        console.log(
          `round ${r + 1} credit-default  ${g.name.padEnd(32)} ${res.rps.toFixed(0).padStart(8)} rps  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  cpu ${cpuUs.toFixed(2)} us/req  errors ${res.errors}`,
        );
      }
    }

    let text = '';
    let readme = '';
    for (const m of models) {
      const summary = m.targets.map((t) => {
        const s = results.get(key(m, t))!;
        return {
          name: t.name,
          cpu: median(s.cpu),
          rps: median(s.res.map((x) => x.rps)),
          p50: median(s.res.map((x) => x.p50ms)),
          p99: median(s.res.map((x) => x.p99ms)),
          errors: s.res.reduce((a, x) => a + x.errors, 0),
        };
      });
      const [c, f, sc, w, floor] = summary as [
        (typeof summary)[0],
        (typeof summary)[0],
        (typeof summary)[0],
        (typeof summary)[0],
        (typeof summary)[0],
      ];
      const rows = summary.map((x) => [
        x.name,
        x.cpu.toFixed(2),
        (x.cpu / c.cpu).toFixed(2),
        x.rps.toFixed(0),
        x.p50.toFixed(3),
        x.p99.toFixed(3),
        x.errors,
        (x.rps / c.rps).toFixed(2),
        (x.rps / f.rps).toFixed(2),
      ]);
      text +=
        `### ${m.name}: ${m.label}\n\n` +
        table(['server', 'CPU us/request', 'CPU x ceiling', 'RPS (median)', 'p50 ms', 'p99 ms', 'errors', 'x ceiling', 'x fastify'], rows) +
        `\n\n- scoreline: **${sc.cpu.toFixed(2)} us** of server CPU per request (**${(sc.cpu / c.cpu).toFixed(2)}x** the ceiling's, **${(sc.cpu / f.cpu).toFixed(2)}x** Fastify's); ` +
        `throughput **${(sc.rps / c.rps).toFixed(2)}x** the ceiling, **${(sc.rps / f.rps).toFixed(2)}x** Fastify; p99 ${sc.p99.toFixed(3)} ms vs Fastify's ${f.p99.toFixed(3)} ms\n` +
        `- with every batch in the worker pool: ${w.cpu.toFixed(2)} us/request, ${(w.rps / c.rps).toFixed(2)}x the ceiling, ${(w.rps / f.rps).toFixed(2)}x Fastify, p99 ${w.p99.toFixed(3)} ms\n` +
        `- the floor (uWS copying the body and answering one microtask later, no work): ${floor.cpu.toFixed(2)} us/request (${(floor.cpu / c.cpu).toFixed(2)}x the ceiling's); scoreline's own work is the other ${(sc.cpu - floor.cpu).toFixed(2)} us\n\n`;
      readme += `${m.label}:\n\n${table(
        ['server', 'CPU us/req', 'RPS', 'p99 ms', 'x ceiling', 'x Fastify'],
        summary.map((x) => [
          x.name,
          x.cpu.toFixed(1),
          x.rps.toFixed(0),
          x.p99.toFixed(2),
          (x.rps / c.rps).toFixed(2),
          (x.rps / f.rps).toFixed(2),
        ]),
      )}\n\n`;
    }
    {
      const http = results.get(key(models[0]!, scoreline))!;
      const httpCpu = median(http.cpu);
      const rows = [
        [
          'scoreline HTTP, OIP JSON (wrk)',
          httpCpu.toFixed(2),
          '1.00',
          median(http.res.map((x) => x.rps)).toFixed(0),
          median(http.res.map((x) => x.p50ms)).toFixed(3),
          median(http.res.map((x) => x.p99ms)).toFixed(3),
        ],
        ...grpcRuns.map((g) => [
          g.name,
          median(g.cpu).toFixed(2),
          (median(g.cpu) / httpCpu).toFixed(2),
          median(g.res.map((x) => x.rps)).toFixed(0),
          median(g.res.map((x) => x.p50ms)).toFixed(3),
          median(g.res.map((x) => x.p99ms)).toFixed(3),
        ]),
      ];
      const [ceil, typed, raw] = grpcRuns.map((g) => median(g.cpu)) as [number, number, number];
      text +=
        `### credit-default over OIP gRPC\n\n` +
        table(['transport', 'server CPU us/request', 'CPU x HTTP', 'RPS (median)', 'p50 ms', 'p99 ms'], rows) +
        `\n\n- gRPC is driven by bench/grpc-load.ts (wrk speaks HTTP/1.1 only): one channel, ${connections} unary calls in flight, the request serialized once, ` +
        `answers counted not decoded; it runs in Node on wrk's CPU, so its RPS is bounded by the client: compare server CPU per request.\n` +
        `- grpc-js itself (the ceiling: no decoding, no model) costs ${ceil.toFixed(1)} us per call; scoreline's own share of a typed call is ${(typed - ceil).toFixed(1)} us, of a raw one ${(raw - ceil).toFixed(1)} us\n\n`;
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
    grpcCeiling.proc?.kill('SIGTERM');
  }
}

await main();
