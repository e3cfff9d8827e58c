// npm run bench:http -- [--seconds 10] [--rounds 3] [--connections 32] [--no-write]
// One run, four servers on the demo credit model, each driven by wrk with the same OIP request
// (servers pinned off the CPU wrk runs on):
//   ceiling          uWS answering a fixed body (the HTTP stack's limit)
//   fastify+ort      Fastify + onnxruntime-node, one session.run per request
//   scoreline         the server as shipped: a worker pool, and this tiny model placed inline
//                     because its batches run faster than a hop to a worker (inlineBelowMicros)
//   scoreline workers the same with every batch sent to the piscina workers (inlineBelowMicros 0)
// and the shipped scoreline again over OIP gRPC, typed contents and raw_input_contents, driven by
// bench/grpc-load.ts (wrk cannot speak gRPC) with as many calls in flight as wrk has connections,
// next to its HTTP run and to the gRPC ceiling (grpc-js answering fixed bytes), with the server's
// CPU per request for each.
// Rounds are interleaved and medians reported, because a small shared machine is noisy.

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { availableParallelism, loadavg } from 'node:os';
import { cpuMs, have, median, killOnExit, postScript, runWrk, serverPin, waitReady, type WrkResult } from './wrk.js';
import { encodeRequest, encodeResponse, inferOnce, runGrpcLoad, waitGrpcReady, type LoadResult } from './grpc-load.js';
import { table, writeReadmeBlock, writeSection } from './results.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODEL = join(ROOT, 'examples/models/credit-default/1/model.onnx');
const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const REQUEST = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 10], datatype: 'FP32', data: ROW }] });
const GRPC_PORT = 18194;
const GRPC_CEILING_PORT = 18195;
const GRPC_TYPED = { model_name: 'credit-default', inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10], contents: { fp32_contents: ROW } }] };
const GRPC_RAW = { model_name: 'credit-default', inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10] }], raw_input_contents: [Buffer.from(Float32Array.from(ROW).buffer)] };

interface Target {
  name: string;
  port: number;
  start(): ChildProcess;
  proc?: ChildProcess;
  results: WrkResult[];
}

function node(args: string[]): ChildProcess {
  const pin = serverPin();
  return spawn(pin[0] ?? process.execPath, [...pin.slice(1), ...(pin.length > 0 ? [process.execPath] : []), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
}

/** CPU a server uses per second while idle (timers, monitoring evaluation, the connection guard), in ms. */
const idleCpu = new Map<number, number>();

async function measureIdle(proc: ChildProcess, seconds = 3): Promise<void> {
  const c0 = cpuMs(proc.pid!);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  idleCpu.set(proc.pid!, (cpuMs(proc.pid!) - c0) / seconds);
}

/**
 * One measured run of a load generator against `proc`: its result and the server's CPU per request,
 * less what the server burns idle over the same time (which would otherwise be charged to the
 * requests of a slow run more than to those of a fast one).
 */
async function measured<R extends { requests: number }>(proc: ChildProcess, run: () => Promise<R>): Promise<R & { cpuUs: number }> {
  const c0 = cpuMs(proc.pid!);
  const t0 = performance.now();
  const r = await run();
  const idle = (idleCpu.get(proc.pid!) ?? 0) * ((performance.now() - t0) / 1000);
  return { ...r, cpuUs: ((cpuMs(proc.pid!) - c0 - idle) * 1000) / r.requests };
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
    { name: 'scoreline (default: model inline)', port: 18192, start: () => node(['bin/scoreline.js', 'serve', '--model-repo', 'examples/models', '--port', '18192', '--grpc-port', String(GRPC_PORT), '--host', '127.0.0.1', '--log-level', 'warn']), results: [] },
    { name: 'scoreline (batches in 1 worker)', port: 18193, start: () => node(['bin/scoreline.js', 'serve', '--model-repo', 'examples/models', '--port', '18193', '--grpc-port', 'off', '--host', '127.0.0.1', '--log-level', 'warn', '--config', poolOnly]), results: [] },
  ];
  const [ceiling, fastify, scoreline, pooled] = targets as [Target, Target, Target, Target];
  const grpcAnswerFile = join(tmpdir(), `scoreline-bench-grpc-answer-${process.pid}.bin`);
  const grpcCeiling: { proc?: ChildProcess } = {};
  const grpcRuns: GrpcRun[] = [
    { name: 'ceiling (grpc-js fixed answer)', port: GRPC_CEILING_PORT, raw: false, proc: () => grpcCeiling.proc!, results: [] },
    { name: 'scoreline gRPC, typed contents', port: GRPC_PORT, raw: false, proc: () => scoreline.proc!, results: [] },
    { name: 'scoreline gRPC, raw contents', port: GRPC_PORT, raw: true, proc: () => scoreline.proc!, results: [] },
  ];
  killOnExit(() => [...targets.map((t) => t.proc), grpcCeiling.proc]);
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
    // gRPC typed and raw give the same probabilities as HTTP.
    await waitGrpcReady(GRPC_PORT, GRPC_TYPED);
    const typedAnswer = await inferOnce(GRPC_PORT, GRPC_TYPED);
    const rawAnswer = await inferOnce(GRPC_PORT, GRPC_RAW);
    const typedP = typedAnswer.outputs[1].contents.fp32_contents[1] as number;
    const rawP = (rawAnswer.raw_output_contents[1] as Buffer).readFloatLE(4);
    if (Math.abs(typedP - probs[0]!) > 1e-6 || Math.abs(rawP - probs[0]!) > 1e-6) throw new Error(`gRPC disagrees with HTTP: ${typedP}, ${rawP} vs ${probs[0]}`);
    writeFileSync(grpcAnswerFile, encodeResponse(typedAnswer));
    grpcCeiling.proc = node(['dist/bench/servers/grpc-echo.js', String(GRPC_CEILING_PORT), grpcAnswerFile]);
    await waitGrpcReady(GRPC_CEILING_PORT, GRPC_TYPED);
    ceiling.proc = ceiling.start();
    await waitReady(ceiling.port, path, REQUEST);

    const script = postScript(REQUEST, 'http');
    for (const t of targets) await runWrk(`http://127.0.0.1:${t.port}${path}`, script, { connections, seconds: 2 }); // warm up
    const typedBody = encodeRequest(GRPC_TYPED);
    const rawBody = encodeRequest(GRPC_RAW);
    for (const g of grpcRuns) await runGrpcLoad(g.port, g.raw ? rawBody : typedBody, { seconds: 2, concurrency: connections }); // warm up
    await Promise.all([measureIdle(scoreline.proc!), measureIdle(grpcCeiling.proc!)]);
    for (let r = 0; r < rounds; r++) {
      for (const t of targets) {
        const res = t === scoreline ? await measured(t.proc!, () => runWrk(`http://127.0.0.1:${t.port}${path}`, script, { connections, seconds })) : await runWrk(`http://127.0.0.1:${t.port}${path}`, script, { connections, seconds });
        t.results.push(res);
        console.log(`round ${r + 1} ${t.name.padEnd(32)} ${res.rps.toFixed(0).padStart(8)} rps  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  errors ${res.errors}`);
      }
      for (const g of grpcRuns) {
        const res = await measured(g.proc(), () => runGrpcLoad(g.port, g.raw ? rawBody : typedBody, { seconds, concurrency: connections }));
        g.results.push(res);
        console.log(`round ${r + 1} ${g.name.padEnd(32)} ${res.rps.toFixed(0).padStart(8)} rps  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  errors ${res.errors}  server ${res.cpuUs.toFixed(1)} us/request`);
      }
    }
  } finally {
    for (const t of targets) t.proc?.kill('SIGTERM');
    grpcCeiling.proc?.kill('SIGTERM');
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
  const grpcBody = grpcText(s, scoreline, grpcRuns, connections);
  console.log(`\n${text}\n\n${grpcBody}`);
  if (!values['no-write']) {
    writeSection('grpc', 'OIP over gRPC: the same scoreline server as HTTP, and the grpc-js ceiling', 'npm run bench:http', grpcBody);
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

interface GrpcRun {
  name: string;
  port: number;
  raw: boolean;
  proc: () => ChildProcess;
  results: (LoadResult & { cpuUs: number })[];
}

/** The same scoreline server over HTTP (wrk) and OIP gRPC (bench/grpc-load.ts), and the gRPC ceiling: throughput and CPU per request. */
function grpcText(s: { rps: number; p50: number; p99: number }, http: Target, runs: GrpcRun[], connections: number): string {
  const httpCpu = median(http.results.map((r) => (r as WrkResult & { cpuUs: number }).cpuUs));
  const rows = [
    ['scoreline HTTP, OIP JSON (wrk)', s.rps.toFixed(0), s.p50.toFixed(3), s.p99.toFixed(3), httpCpu.toFixed(1), '1.00'],
    ...runs.map((g) => {
      const cpu = median(g.results.map((r) => r.cpuUs));
      return [g.name, median(g.results.map((r) => r.rps)).toFixed(0), median(g.results.map((r) => r.p50ms)).toFixed(3), median(g.results.map((r) => r.p99ms)).toFixed(3), cpu.toFixed(1), (cpu / httpCpu).toFixed(2)];
    }),
  ];
  const [ceiling, typed, raw] = runs.map((g) => median(g.results.map((r) => r.cpuUs)));
  const [ceilingRps, typedRps] = runs.map((g) => median(g.results.map((r) => r.rps)));
  return (
    table(['transport', 'RPS (median)', 'p50 ms', 'p99 ms', 'server CPU us/request', 'CPU x HTTP'], rows) +
    `\n\nOne scoreline server (model inline), pinned off the load generator's CPU. HTTP: wrk, ${connections} connections. gRPC: bench/grpc-load.ts ` +
    `(wrk speaks HTTP/1.1 only), one channel with ${connections} unary calls in flight, the request serialized once, answers counted, not decoded; ` +
    `it runs in Node on the one CPU wrk uses, so gRPC RPS is bounded by the client: compare the server's CPU per request (from /proc, all threads, ` +
    `less the server's own idle CPU over the run's time). ` +
    `Load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(', ')} on ${availableParallelism()} cores` +
    `${loadavg()[0]! > availableParallelism() ? ': **taken under load** (other processes shared the machine; RPS and latency suffer more than CPU per request)' : ''}.\n\n` +
    `- server CPU per request, gRPC / HTTP: typed contents **${(typed! / httpCpu).toFixed(2)}x**, raw contents **${(raw! / httpCpu).toFixed(2)}x**; ` +
    `grpc-js itself (the ceiling, no decoding, no model) costs ${ceiling!.toFixed(1)} us per call, so scoreline's own share of a typed call is ${(typed! - ceiling!).toFixed(1)} us, of a raw one ${(raw! - ceiling!).toFixed(1)} us\n` +
    `- gRPC typed / the gRPC ceiling (throughput) = **${(typedRps! / ceilingRps!).toFixed(2)}**`
  );
}

await main();
