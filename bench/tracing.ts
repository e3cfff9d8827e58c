// npm run bench:tracing -- [--seconds 10] [--rounds 5] [--connections 32] [--baseline DIR] [--no-write]
// What tracing and the access log cost on the request path: scoreline servers on the demo credit
// model driven by wrk with the same OIP request in interleaved rounds (medians), pinned off wrk's CPU:
//   before    (with --baseline DIR: a build of scoreline from before the gate, e.g.
//             `git archive <commit> | tar -x -C DIR`, node_modules linked, `npx tsc -p .` there)
//   off       this build's defaults: tracing off (no SDK loaded), access log sampling 1%
//   access    the access log taking every request (accessLog.sampleRate 1)
//   on 1%     tracing on, tracing.sampleRatio 0.01, spans exported over OTLP/protobuf to a sink here
//   on 100%   tracing on, every request traced (a request span and queue / inference children)
// Server CPU time per request (all threads, from /proc) is the steadier measure on a shared machine.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { cpuMs, have, killOnExit, median, postScript, runWrk, serverPin, waitReady, type WrkResult } from './wrk.js';
import { table, writeReadmeBlock, writeSection } from './results.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const REQUEST = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 10], datatype: 'FP32', data: ROW }] });
const PATH = '/v2/models/credit-default/infer';

interface Target {
  name: string;
  port: number;
  config: string;
  /** Directory of the scoreline build to run. */
  root: string;
  proc?: ChildProcess;
  results: WrkResult[];
  cpuUs: number[];
}

/** An OTLP/HTTP endpoint that takes every export and counts the bytes: the collector's side. */
async function startSink(): Promise<{ url: string; requests: () => number; close: () => void }> {
  let requests = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests: () => requests, close: () => server.close() };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '5' },
      connections: { type: 'string', default: '32' },
      baseline: { type: 'string' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  if (!have('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const connections = Number(values.connections);
  const load0 = loadavg()[0]!;
  const sink = await startSink();
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-bench-tracing-'));
  const mk = (name: string, extra: string): string => {
    const file = join(dir, `${name}.yaml`);
    writeFileSync(file, `modelRepository: ${join(ROOT, 'examples/models')}\ndataDir: ${join(dir, name)}\n${extra}`);
    return file;
  };
  const targets: Target[] = [];
  if (values.baseline !== undefined)
    targets.push({ name: 'before (baseline build)', port: 18300, root: values.baseline, config: mk('before', ''), results: [], cpuUs: [] });
  targets.push(
    { name: 'tracing off (defaults: access log 1%)', port: 18301, root: ROOT, config: mk('off', ''), results: [], cpuUs: [] },
    {
      name: 'tracing off, access log every request',
      port: 18302,
      root: ROOT,
      config: mk('access', 'accessLog: { sampleRate: 1 }\n'),
      results: [],
      cpuUs: [],
    },
    {
      name: 'tracing on, sampleRatio 0.01',
      port: 18303,
      root: ROOT,
      config: mk('on1', `tracing: { otlpEndpoint: "${sink.url}", sampleRatio: 0.01 }\n`),
      results: [],
      cpuUs: [],
    },
    {
      name: 'tracing on, sampleRatio 1',
      port: 18304,
      root: ROOT,
      config: mk('on100', `tracing: { otlpEndpoint: "${sink.url}", sampleRatio: 1 }\n`),
      results: [],
      cpuUs: [],
    },
  );
  killOnExit(() => targets.map((t) => t.proc));
  try {
    for (const t of targets) {
      const pin = serverPin();
      const argv = [
        ...pin.slice(1),
        process.execPath,
        join(t.root, 'bin/scoreline.js'),
        'serve',
        '--config',
        t.config,
        '--port',
        String(t.port),
        '--host',
        '127.0.0.1',
        '--log-level',
        'info',
      ];
      // Log level info everywhere (into /dev/null): the access log's lines are really serialised and written.
      t.proc = spawn(pin[0] ?? argv.shift()!, argv, { cwd: t.root, stdio: ['ignore', 'ignore', 'inherit'] });
      await waitReady(t.port, PATH, REQUEST);
    }
    const script = postScript(REQUEST, 'tracing');
    for (const t of targets) await runWrk(`http://127.0.0.1:${t.port}${PATH}`, script, { connections, seconds: 2 });
    for (let r = 0; r < rounds; r++) {
      for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
        const cpu0 = cpuMs(t.proc!.pid!);
        const res = await runWrk(`http://127.0.0.1:${t.port}${PATH}`, script, { connections, seconds });
        t.cpuUs.push(((cpuMs(t.proc!.pid!) - cpu0) * 1000) / res.requests);
        t.results.push(res);
        console.log(
          `round ${r + 1} ${t.name.padEnd(40)} ${res.rps.toFixed(0).padStart(8)} rps  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  errors ${res.errors}  cpu ${t.cpuUs.at(-1)!.toFixed(2)} us/req`,
        );
      }
    }
    // The traced servers really exported.
    if (sink.requests() === 0) throw new Error('no span reached the OTLP sink');
  } finally {
    for (const t of targets) t.proc?.kill('SIGTERM');
    sink.close();
  }

  const s = targets.map((t) => ({
    name: t.name,
    cpu: median(t.cpuUs),
    rps: median(t.results.map((x) => x.rps)),
    p50: median(t.results.map((x) => x.p50ms)),
    p99: median(t.results.map((x) => x.p99ms)),
    errors: t.results.reduce((a, x) => a + x.errors, 0),
    t,
  }));
  const off = s.find((x) => x.name.startsWith('tracing off (defaults'))!;
  const before = s.find((x) => x.name.startsWith('before'));
  const ref = before ?? off;
  const header = [
    'server',
    'RPS (median)',
    'p50 ms',
    'p99 ms',
    'errors',
    `RPS x ${before ? 'before' : 'off'}`,
    'server CPU us/request',
    `CPU x ${before ? 'before' : 'off'}`,
  ];
  const row = (x: (typeof s)[0]) => [
    x.name,
    x.rps.toFixed(0),
    x.p50.toFixed(3),
    x.p99.toFixed(3),
    x.errors,
    (x.rps / ref.rps).toFixed(3),
    x.cpu.toFixed(2),
    (x.cpu / ref.cpu).toFixed(3),
  ];
  const perRound = (a: Target, b: Target) => a.cpuUs.map((c, i) => (c / b.cpuUs[i]!).toFixed(3)).join(', ');
  const lines = [
    table(header, s.map(row)),
    '',
    `wrk: 1 thread, ${connections} connections, ${seconds} s per run, ${rounds} interleaved rounds (medians), pinned to the last CPU, the servers to the others; request: one row of the demo credit model over OIP; spans to an OTLP/HTTP sink in the benchmark process.`,
    '',
  ];
  if (before)
    lines.push(
      `- tracing off (this build) / before, server CPU per request: **${(off.cpu / before.cpu).toFixed(3)}** (${before.cpu.toFixed(2)} -> ${off.cpu.toFixed(2)} us); per round ${perRound(off.t, before.t)}`,
    );
  for (const x of s.filter((y) => y !== off && y !== before))
    lines.push(
      `- ${x.name} / tracing off, server CPU per request: **${(x.cpu / off.cpu).toFixed(3)}** (+${(x.cpu - off.cpu).toFixed(2)} us); per round ${perRound(x.t, off.t)}`,
    );
  lines.push(
    `- 1-minute load average at the start and end of the run: ${load0.toFixed(1)}, ${loadavg()[0]!.toFixed(1)} (on ${availableParallelism()} cores; above that, other processes shared the machine and throughput is noisier than CPU per request)`,
  );
  const text = lines.join('\n');
  console.log(`\n${text}`);
  const args = process.argv.slice(2).filter((x) => x !== '--no-write');
  const command = `npm run bench:tracing${args.length > 0 ? ` -- ${args.join(' ')}` : ''}`;
  if (!values['no-write']) {
    writeSection('tracing', 'Tracing and access log overhead', command, text);
    const us = (x: (typeof s)[0]) => `${x.cpu.toFixed(1)} us`;
    const brief = [
      `Server CPU per request (\`${command}\`, medians of ${rounds} interleaved rounds, load average ${load0.toFixed(1)} on ${availableParallelism()} cores):`,
      '',
      ...s.map(
        (x) => `- ${x.name}: ${us(x)}${x === ref ? '' : ` (${(x.cpu / ref.cpu).toFixed(2)}x ${before ? 'before' : 'tracing off'})`}`,
      ),
    ].join('\n');
    writeReadmeBlock('tracing', brief);
  }
}

await main();
