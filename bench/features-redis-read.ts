// npx tsc -p . && node dist/bench/features-redis-read.js [--batches 2000] [--no-write]
// How the Redis store reads a batch of cache misses: the demo's 3 hashes per customer (its group and
// two window series) for 32 customers per batch, as one pipeline of HGETALLs (a reply array per
// key, the client's former path) against the store's read script (every hash in one reply string).
// Client CPU (this process) and redis-server CPU (/proc) per customer, measured in one run on a
// real redis-server with the demo materialized; both paths parse the replies into field lists.

import { spawn, spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { table, writeSection } from './results.js';
import { cpuMs, have, serverPin } from './wrk.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
// The store's script (src/features/redis-store.ts READ_HASHES).
const READ_HASHES = `
local out = {}
for i = 1, #KEYS do out[i] = table.concat(redis.call('HGETALL', KEYS[i]), '\\31') end
return table.concat(out, '\\30')
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { batches: { type: 'string', default: '2000' }, 'no-write': { type: 'boolean', default: false } },
  });
  if (!have('redis-server')) throw new Error('redis-server is not installed');
  const batches = Number(values.batches);
  const port = 18000 + Math.floor(Math.random() * 1000);
  const pin = serverPin();
  const argv = [...pin.slice(1), 'redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  const server = spawn(pin[0] ?? argv.shift()!, argv, { stdio: 'ignore' });
  const load0 = loadavg()[0]!;
  try {
    for (let i = 0; i < 100 && spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() !== 'PONG'; i++)
      await new Promise((r) => setTimeout(r, 50));
    const m = spawnSync(
      process.execPath,
      [
        'bin/scoreline.js',
        'features',
        'materialize',
        '--definitions',
        'examples/features/features.yaml',
        '--redis',
        `redis://127.0.0.1:${port}`,
        '--quiet',
      ],
      { cwd: ROOT, encoding: 'utf8' },
    );
    if (m.status !== 0) throw new Error(`materialize failed: ${m.stderr}`);
    const redis = new Redis(`redis://127.0.0.1:${port}`, { commandTimeout: 1000 });
    redis.defineCommand('slReadHashes', { lua: READ_HASHES });
    await new Promise((r) => redis.once('ready', r));
    const keysOf = (i: number): string[] => {
      const id = `C${String(i % 10_000).padStart(5, '0')}`;
      return [`sl:g:customer:${id}:v1`, `sl:s:customer:${id}:transaction:1440000`, `sl:s:customer:${id}:late_payment:129600000`];
    };
    let fields = [0, 0];
    const pipelined = async (keys: string[]) => {
      const p = redis.pipeline();
      for (const k of keys) p.hgetall(k);
      for (const [, h] of (await p.exec())!) fields[0]! += Object.keys(h as Record<string, string>).length * 2;
    };
    const scripted = async (keys: string[]) => {
      const s = await (redis as unknown as { slReadHashes(n: number, ...k: string[]): Promise<string> }).slReadHashes(keys.length, ...keys);
      for (const rec of s.split('\x1e')) fields[1]! += rec === '' ? 0 : rec.split('\x1f').length;
    };
    const results: { name: string; client: number[]; server: number[] }[] = [
      { name: 'pipeline of HGETALL (a reply per key)', client: [], server: [] },
      { name: 'read script (one reply string per batch)', client: [], server: [] },
    ];
    const paths = [pipelined, scripted];
    for (let round = 0; round < 4; round++) {
      fields = [0, 0];
      for (let p = 0; p < 2; p++) {
        const c0 = process.cpuUsage();
        const s0 = cpuMs(server.pid!);
        for (let b = 0; b < batches; b++) {
          const keys: string[] = [];
          for (let k = 0; k < 32; k++) keys.push(...keysOf(b * 32 + k));
          await paths[p]!(keys);
        }
        const c = process.cpuUsage(c0);
        // the first round warms up
        if (round === 0) continue;
        results[p]!.client.push((c.user + c.system) / (batches * 32));
        results[p]!.server.push(((cpuMs(server.pid!) - s0) * 1000) / (batches * 32));
      }
      if (fields[0] !== fields[1]) throw new Error(`the two paths read different data (${fields[0]} vs ${fields[1]} items)`);
    }
    redis.disconnect();
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
    const [a, b] = results as [(typeof results)[0], (typeof results)[0]];
    const text =
      table(
        ['read path', 'client CPU us/customer', 'redis-server CPU us/customer', 'total'],
        results.map((r) => [r.name, med(r.client).toFixed(2), med(r.server).toFixed(2), (med(r.client) + med(r.server)).toFixed(2)]),
      ) +
      `\n\nScript / pipeline: client CPU **${(med(b.client) / med(a.client)).toFixed(2)}x**, redis-server CPU ${(med(b.server) / med(a.server)).toFixed(2)}x, both ${((med(b.client) + med(b.server)) / (med(a.client) + med(a.server))).toFixed(2)}x.` +
      `\n\n${batches} batches of 32 demo customers (3 hashes each: the group of 8 fields and two window series) per round, 3 rounds after a warm-up (medians); redis-server pinned off the load generator's CPU. ` +
      `Client CPU is this process's (ioredis and parsing into field lists); the store also decodes the values, the same for both.` +
      `\n- 1-minute load average at the start and end: ${load0.toFixed(1)}, ${loadavg()[0]!.toFixed(1)} (2 cores: above 2, other processes shared the machine).`;
    console.log(text);
    if (!values['no-write'])
      writeSection(
        'features-redis-read',
        'Redis reads of a batch: one script call vs a pipeline of HGETALL',
        'npx tsc -p . && node dist/bench/features-redis-read.js',
        text,
      );
  } finally {
    server.kill('SIGTERM');
  }
}

await main();
