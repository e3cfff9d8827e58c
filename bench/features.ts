// npm run bench:features -- [--seconds 8] [--rounds 2] [--quick] [--no-write]
// One run, two parts:
//   1. the native L1 cache against lru-cache (bench/features-cache.ts): getMany(20), get, set,
//      JS heap with 2M entries, read-loop latency while the GC runs;
//   2. end to end with wrk on the demo: POST /v1/score/credit-default (features resolved for a
//      random demo customer per request) against the plain OIP inference of the same model, with
//      the in-process store, and with Redis + the L1 cache (its hit rate on that traffic).
// Both wrk scripts build each request body in Lua, so the load generator pays the same per request.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { formatFeaturesCacheTable, runFeaturesCacheBench } from './features-cache.js';
import { table, writeSection } from './results.js';
import { have, median, runWrk, type WrkResult } from './wrk.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function script(name: string, path: string, bodyLua: string): string {
  const file = join(tmpdir(), `scoreline-bench-${name}-${process.pid}.lua`);
  writeFileSync(
    file,
    `wrk.method = "POST"\nwrk.path = "${path}"\nwrk.headers["Content-Type"] = "application/json"\nmath.randomseed(42)\n` +
      `request = function()\n  local i = math.random(0, 9999)\n  return wrk.format(nil, nil, nil, ${bodyLua})\nend\n`,
  );
  return file;
}

const SCORE_BODY = `'{"entity":{"customer_id":"C' .. string.format("%05d", i) .. '"},"context":{"amount":5200,"duration_months":24}}'`;
const INFER_BODY = `'{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[24,5200,37,52000,6.5,120,1,0.42,3,' .. (i % 3) .. ']}]}'`;

function serve(args: string[]): ChildProcess {
  return spawn(process.execPath, ['bin/scoreline.js', 'serve', '--host', '127.0.0.1', '--log-level', 'warn', ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
}

async function ready(port: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/v2/health/ready`)).ok) return;
    } catch {
      // starting
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server on ${port} did not become ready`);
}

async function metric(port: number, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Number(pattern.exec(text)?.[1] ?? NaN);
}

async function endToEnd(seconds: number, rounds: number): Promise<string> {
  if (!have('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
  const procs: ChildProcess[] = [];
  const redisPort = 18399;
  try {
    procs.push(serve(['--config', 'examples/scoreline.yaml', '--port', '18290', '--grpc-port', 'off']));
    let redisConfig: string | null = null;
    if (have('redis-server')) {
      procs.push(spawn('redis-server', ['--port', String(redisPort), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' }));
      await new Promise((r) => setTimeout(r, 300));
      const m = spawnSync(process.execPath, ['bin/scoreline.js', 'features', 'materialize', '--definitions', 'examples/features/features.yaml', '--redis', `redis://127.0.0.1:${redisPort}`, '--quiet'], { cwd: ROOT, encoding: 'utf8' });
      if (m.status !== 0) throw new Error(`materialize failed: ${m.stderr}`);
      redisConfig = join(tmpdir(), `scoreline-bench-redis-${process.pid}.yaml`);
      writeFileSync(redisConfig, `modelRepository: ${join(ROOT, 'examples/models')}\nfeatures:\n  definitions: ${join(ROOT, 'examples/features/features.yaml')}\n  redis: { url: redis://127.0.0.1:${redisPort} }\n`);
      procs.push(serve(['--config', redisConfig, '--port', '18291', '--grpc-port', 'off']));
    }
    await ready(18290);
    if (redisConfig) await ready(18291);
    const infer = script('infer', '/v2/models/credit-default/infer', INFER_BODY);
    const scoreScript = script('score', '/v1/score/credit-default', SCORE_BODY);
    const runs: { name: string; url: string; script: string; results: WrkResult[] }[] = [
      { name: 'OIP inference (plain, same model)', url: 'http://127.0.0.1:18290', script: infer, results: [] },
      { name: '/v1/score, in-process store', url: 'http://127.0.0.1:18290', script: scoreScript, results: [] },
    ];
    if (redisConfig) runs.push({ name: '/v1/score, Redis + native L1 cache', url: 'http://127.0.0.1:18291', script: scoreScript, results: [] });
    for (const r of runs) await runWrk(r.url, r.script, { connections: 32, seconds: 2 });
    for (let i = 0; i < rounds; i++) {
      for (const r of runs) {
        const res = await runWrk(r.url, r.script, { connections: 32, seconds });
        r.results.push(res);
        console.log(`round ${i + 1} ${r.name.padEnd(40)} ${res.rps.toFixed(0).padStart(8)} rps  p99 ${res.p99ms.toFixed(3)} ms  errors ${res.errors}`);
      }
    }
    const base = median(runs[0]!.results.map((x) => x.rps));
    const rows = runs.map((r) => {
      const rps = median(r.results.map((x) => x.rps));
      return [r.name, rps.toFixed(0), median(r.results.map((x) => x.p50ms)).toFixed(3), median(r.results.map((x) => x.p99ms)).toFixed(3), r.results.reduce((a, x) => a + x.errors, 0), (rps / base).toFixed(2)];
    });
    let hit = '';
    if (redisConfig) {
      const hits = await metric(18291, /^scoreline_feature_lookups_total\{result="hit"\} (\S+)$/m);
      const misses = await metric(18291, /^scoreline_feature_lookups_total\{result="miss"\} (\S+)$/m);
      hit = `\n- L1 cache hit rate on this traffic (uniform over the 10,000 demo customers, cache TTL 30 s): **${(hits / (hits + misses)).toFixed(3)}** (${hits} hits, ${misses} misses)`;
    }
    return (
      table(['endpoint', 'RPS (median)', 'p50 ms', 'p99 ms', 'errors', 'x plain inference'], rows) +
      `\n\nwrk: 1 thread, 32 connections, ${seconds} s per run, ${rounds} interleaved rounds, pinned to the last CPU; every request names a random demo customer (C00000..C09999).` +
      `\n- /v1/score resolves 9 features of the 4 types (6 offline from one stored group, 1 online expression, 1 realtime window, 1 hybrid) and 2 request fields per request.${hit}`
    );
  } finally {
    for (const p of procs) p.kill('SIGTERM');
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '8' }, rounds: { type: 'string', default: '2' }, quick: { type: 'boolean', default: false }, 'no-write': { type: 'boolean', default: false } } });
  const micro = await runFeaturesCacheBench(values.quick ? { throughputEntries: [10_000], loadedEntries: 200_000, maxTime: 0.5, latencyBatches: 200_000 } : {});
  const microTable = formatFeaturesCacheTable(micro);
  console.log(microTable);
  const e2e = await endToEnd(Number(values.seconds), Number(values.rounds));
  console.log(`\n${e2e}`);
  if (!values['no-write']) {
    writeSection('features-cache', 'Native feature cache vs lru-cache', 'npm run bench:features', microTable);
    writeSection('features-e2e', 'Entity scoring end to end: /v1/score vs plain inference', 'npm run bench:features', e2e);
  }
}

await main();
