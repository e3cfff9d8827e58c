// The embedded feature store at the size of a real customer base: /v1/score with 10 stored features
// per entity, 10,000 entities against 10,000,000 (--entities), in one run.
//
//   npx tsc -p . && node dist/bench/features-big.js [--entities 10000000] [--seconds 8] [--rounds 3] [--keep DIR] [--no-write]
//   (also run by `npm run bench:features`)
//
// A seeded generator streams each source CSV (account id, an as_of time, 10 features: float64,
// int64, float32 and bool) into a temp dir; nothing is committed. For each size a server with the
// embedded default (SQLite file in its data dir, served from off-heap memory) is started twice:
// the first start loads the source (load time), the second only opens the file (start time, and
// the time until every group is in memory). Then wrk drives POST /v1/score for a random entity of
// the range per request against both servers in interleaved rounds; reported: throughput (and the
// ratio big / small), server CPU per request, JS heap used and RSS of each server, and a check that
// scores and event windows are the same after the restart.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { NativeTable } from '../src/features/native-cache.js';
import { GraphBuilder } from '../src/inference/onnx-writer.js';
import { table, writeSection } from './results.js';
import { cpuMs, have, killOnExit, median, runWrk, serverPin, type WrkResult } from './wrk.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FEATURES = [
  'balance',
  'limit_used',
  'tenure_months',
  'open_accounts',
  'utilisation',
  'avg_payment',
  'max_dpd',
  'income_est',
  'has_mortgage',
  'score_ext',
];
const DTYPES = ['float64', 'float64', 'int64', 'int64', 'float32', 'float64', 'int64', 'float64', 'bool', 'float32'];
const WEIGHTS = [1e-5, 1e-4, 0.01, 0.05, 0.5, 1e-4, 0.02, 1e-6, 0.3, 0.001];
const DAY = 86_400_000;

/** xorshift32: the same rows for the same seed on every machine. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export const accountId = (i: number): string => `A${String(i).padStart(8, '0')}`;

/** Streams `rows` accounts as CSV (header first) into `path`, as of days before `now`. */
export async function writeAccounts(path: string, rows: number, seed = 42, now = Date.now()): Promise<void> {
  const next = rng(seed);
  const out = createWriteStream(path, { highWaterMark: 1 << 20 });
  const write = (s: string) => (out.write(s) ? Promise.resolve() : new Promise<void>((r) => out.once('drain', () => r())));
  await write(`account_id,as_of,${FEATURES.join(',')}\n`);
  const day0 = Math.floor(now / DAY) * DAY;
  let chunk = '';
  for (let i = 0; i < rows; i++) {
    const asOf = new Date(day0 - Math.floor(next() * 20) * DAY).toISOString();
    const balance = Math.round(next() * 5_000_000) / 100;
    const limitUsed = Math.round(next() * 10_000) / 100;
    const tenure = Math.floor(next() * 360);
    const open = Math.floor(next() * 12);
    const util = Math.fround(next());
    const avgPay = Math.round(next() * 300_000) / 100;
    const dpd = Math.floor(next() * next() * 120);
    // An empty cell now and then: a missing value, served by its fallback.
    const income = next() < 0.02 ? '' : String(Math.round(20_000 + next() * 180_000));
    const mortgage = next() < 0.35 ? 'true' : 'false';
    const ext = Math.fround(300 + next() * 550);
    chunk += `${accountId(i)},${asOf},${balance},${limitUsed},${tenure},${open},${util},${avgPay},${dpd},${income},${mortgage},${ext}\n`;
    if (chunk.length > 1 << 16) {
      await write(chunk);
      chunk = '';
    }
  }
  await write(chunk);
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
}

/** Definitions, model repository and server config for one size, in `dir`. */
async function writeSetup(dir: string, csv: string, durable = true): Promise<string> {
  const features = FEATURES.map((name, i) => ({
    name,
    version: 1,
    entity: 'account',
    type: 'offline',
    dtype: DTYPES[i],
    ttl: '60d',
    source: 'accounts',
    fallback: { default: DTYPES[i] === 'bool' ? false : 0 },
  }));
  await writeFile(
    join(dir, 'features.yaml'),
    JSON.stringify({
      entities: [{ name: 'account', key: 'account_id', pattern: 'A[0-9]{8}' }],
      sources: { accounts: { path: csv, entity: 'account', timestampColumn: 'as_of' } },
      features,
    }),
  );
  const g = new GraphBuilder('linear');
  g.input('input', 'FP32', [-1, FEATURES.length]);
  g.initializer('w', 'FP32', [FEATURES.length, 1], Float32Array.from(WEIGHTS));
  g.node('MatMul', ['input', 'w'], ['y']);
  g.output('y', 'FP32', [-1, 1]);
  await mkdir(join(dir, 'models', 'accounts', '1'), { recursive: true });
  await writeFile(join(dir, 'models', 'accounts', '1', 'model.onnx'), g.toModelBytes());
  await writeFile(join(dir, 'models', 'accounts', 'model.yaml'), JSON.stringify({ features: FEATURES }));
  const config = join(dir, 'server.json');
  writeFileSync(
    config,
    JSON.stringify({
      modelRepository: join(dir, 'models'),
      dataDir: join(dir, 'data'),
      features: { definitions: join(dir, 'features.yaml'), embedded: { durable } },
    }),
  );
  return config;
}

interface Server {
  proc: ChildProcess;
  port: number;
  /** Seconds from spawn to ready, and to the log line saying every group is in memory. */
  readySeconds: number;
  inMemory: Promise<number>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

async function start(config: string): Promise<Server> {
  const port = await freePort();
  const pin = serverPin();
  const argv = [
    ...pin.slice(1),
    process.execPath,
    'bin/scoreline.js',
    'serve',
    '--config',
    config,
    '--port',
    String(port),
    // Both stores' servers run side by side: neither needs a gRPC port (the default one is shared).
    '--grpc-port',
    'off',
    '--host',
    '127.0.0.1',
    '--log-level',
    'info',
  ];
  const t0 = performance.now();
  const proc = spawn(pin[0] ?? argv.shift()!, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const inMemory = new Promise<number>((resolve) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (line.includes('feature store in memory')) resolve((performance.now() - t0) / 1000);
    });
  });
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`server for ${config} exited with ${proc.exitCode}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/v2/health/ready`)).ok) break;
    } catch {
      // starting
    }
    if (i > 36_000) throw new Error('server did not become ready within an hour');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, port, readySeconds: (performance.now() - t0) / 1000, inMemory };
}

async function stop(s: Server): Promise<void> {
  const exited = new Promise((r) => s.proc.once('exit', r));
  s.proc.kill('SIGTERM');
  await exited;
}

const post = async (port: number, path: string, body: unknown): Promise<unknown> =>
  (
    await fetch(`http://127.0.0.1:${port}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
  ).json();

/** Scores (with feature values) of a few accounts, and their event window, to compare across a restart. */
async function probe(port: number, n: number): Promise<string> {
  const out: unknown[] = [];
  for (const i of [0, 1, Math.floor(n / 2), n - 1]) {
    const r = (await post(port, '/v1/score/accounts', { entity: { account_id: accountId(i) }, debug: true })) as {
      score: number;
      features?: Record<string, { value: unknown; status: string }>;
    };
    out.push([r.score, Object.values(r.features ?? {}).map((f) => [f.value, f.status])]);
  }
  return JSON.stringify(out);
}

function memoryOf(pid: number): { rssMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { rssMb: Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? NaN) / 1024 };
}

async function heapMb(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Number(/^scoreline_nodejs_heap_size_used_bytes (\S+)$/m.exec(text)?.[1] ?? NaN) / 2 ** 20;
}

function scoreScript(name: string, entities: number): string {
  const file = join(tmpdir(), `scoreline-bench-big-${name}-${process.pid}.lua`);
  writeFileSync(
    file,
    `wrk.method = "POST"\nwrk.path = "/v1/score/accounts"\nwrk.headers["Content-Type"] = "application/json"\nmath.randomseed(7)\n` +
      `local bad = 0\nfunction response(status, headers, body) if status >= 300 then bad = bad + 1 end end\n` +
      `request = function()\n  return wrk.format(nil, nil, nil, '{"entity":{"account_id":"A' .. string.format("%08d", math.random(0, ${entities - 1})) .. '"}}')\nend\n`,
  );
  return file;
}

interface Size {
  entities: number;
  dir: string;
  config: string;
  csvMb: number;
  generateSeconds: number;
  loadSeconds: number;
  fileMb: number;
  startSeconds: number;
  inMemorySeconds: number;
  server: Server | null;
  same: boolean;
  results: WrkResult[];
  cpuUs: number[];
  heapMb: number;
  rssMb: number;
}

const MAP_ENTITIES_MAX = 1_000_000;
let MAP_ENTITIES = MAP_ENTITIES_MAX;
let fileRead = NaN;
let tableRead = [NaN, NaN];
let mapHeapMb = NaN;
let mapEmptyHeapMb = NaN;

/**
 * CPU microseconds per random read of a native table holding `entries` groups of 184 bytes (the
 * bench's group), keyed as the store keys them: what one /v1/score pays for its group at that size.
 */
function tableReadCost(entries: number): number {
  const t = new NativeTable(`bench:table-read:${entries}`);
  t.clear();
  const value = new Uint8Array(184).fill(7);
  const key = (i: number) => `account:${accountId(i)}:v1`;
  for (let i = 0; i < entries; i += 4096) {
    const keys: string[] = [];
    for (let j = i; j < Math.min(entries, i + 4096); j++) keys.push(key(j));
    t.insertMany(
      keys,
      keys.map(() => value),
    );
  }
  const next = rng(11);
  const keys = Array.from({ length: 500_000 }, () => key(Math.floor(next() * entries)));
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const c0 = process.cpuUsage();
    for (const k of keys) if (t.get(k) === undefined) throw new Error(`${k} missing`);
    const c = process.cpuUsage(c0);
    best = Math.min(best, (c.user + c.system) / keys.length);
  }
  t.clear();
  return best;
}

/** CPU microseconds per random point read of group rows from a features.db. */
function pointReadCost(file: string, entities: number): number {
  const db = new Database(file, { readonly: true });
  try {
    const get = db.prepare<[string], Buffer>('SELECT value FROM groups WHERE key = ?').pluck();
    const next = rng(9);
    const keys = Array.from({ length: 200_000 }, () => `account:${accountId(Math.floor(next() * entities))}:v1`);
    for (const k of keys.slice(0, 20_000)) get.get(k);
    const c0 = process.cpuUsage();
    let found = 0;
    for (const k of keys) if (get.get(k) !== undefined) found++;
    const c = process.cpuUsage(c0);
    if (found !== keys.length) throw new Error(`${keys.length - found} of ${keys.length} keys not found in ${file}`);
    return (c.user + c.system) / keys.length;
  } finally {
    db.close();
  }
}

export async function runBigStoreBench(opts: { entities: number; seconds: number; rounds: number; keep?: string }): Promise<string> {
  if (!have('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
  const base = opts.keep ?? mkdtempSync(join(tmpdir(), 'scoreline-bench-big-'));
  MAP_ENTITIES = Math.min(MAP_ENTITIES_MAX, opts.entities);
  const load0 = loadavg()[0]!;
  const sizes: Size[] = [];
  killOnExit(() => sizes.map((s) => s.server?.proc));
  try {
    for (const entities of [10_000, opts.entities]) {
      const dir = join(base, String(entities));
      rmSync(join(dir, 'data'), { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      const csv = join(dir, 'accounts.csv');
      let t = performance.now();
      // With --keep, a CSV generated by an earlier run is used again.
      if (opts.keep === undefined || !existsSync(csv)) await writeAccounts(csv, entities);
      const generateSeconds = (performance.now() - t) / 1000;
      const config = await writeSetup(dir, csv);
      const size: Size = {
        entities,
        dir,
        config,
        csvMb: statSync(csv).size / 2 ** 20,
        generateSeconds,
        loadSeconds: 0,
        fileMb: 0,
        startSeconds: 0,
        inMemorySeconds: 0,
        server: null,
        same: false,
        results: [],
        cpuUs: [],
        heapMb: 0,
        rssMb: 0,
      };
      sizes.push(size);
      console.log(
        `${entities.toLocaleString('en-US')} entities: CSV ${size.csvMb.toFixed(0)} MB generated in ${generateSeconds.toFixed(1)} s`,
      );
      // First start: loads the source into the file.
      let s = await start(config);
      size.loadSeconds = s.readySeconds;
      await s.inMemory;
      const before = await probe(s.port, entities);
      await stop(s);
      size.fileMb = statSync(join(dir, 'data', 'features.db')).size / 2 ** 20;
      // Second start: opens the file; the groups are copied into memory in the background.
      t = performance.now();
      s = await start(config);
      size.startSeconds = s.readySeconds;
      size.inMemorySeconds = await s.inMemory;
      size.same = (await probe(s.port, entities)) === before;
      size.server = s;
      console.log(
        `  first start (load) ${size.loadSeconds.toFixed(1)} s, file ${size.fileMb.toFixed(0)} MB; restart: ready in ${size.startSeconds.toFixed(2)} s, all in memory after ${size.inMemorySeconds.toFixed(1)} s; same answers after the restart: ${size.same}`,
      );
    }
    // The first starts wrote gigabytes: flush them now, so the kernel's writeback does not run during the rounds.
    spawnSync('sync');
    const scripts = sizes.map((s) => scoreScript(String(s.entities), s.entities));
    for (const [i, s] of sizes.entries()) await runWrk(`http://127.0.0.1:${s.server!.port}`, scripts[i]!, { connections: 32, seconds: 2 });
    for (let r = 0; r < opts.rounds; r++) {
      const order = r % 2 === 0 ? [0, 1] : [1, 0];
      for (const i of order) {
        const s = sizes[i]!;
        const pid = s.server!.proc.pid!;
        const cpu0 = cpuMs(pid);
        const res = await runWrk(`http://127.0.0.1:${s.server!.port}`, scripts[i]!, { connections: 32, seconds: opts.seconds });
        s.cpuUs.push(((cpuMs(pid) - cpu0) * 1000) / res.requests);
        s.results.push(res);
        console.log(
          `round ${r + 1} ${s.entities.toLocaleString('en-US').padStart(12)} entities ${res.rps.toFixed(0).padStart(8)} rps  p99 ${res.p99ms.toFixed(3)} ms  errors ${res.errors}  cpu ${s.cpuUs.at(-1)!.toFixed(2)} us/req`,
        );
      }
    }
    for (const s of sizes) {
      s.heapMb = await heapMb(s.server!.port);
      s.rssMb = memoryOf(s.server!.proc.pid!).rssMb;
    }
    // What a read from the file costs (before the copy into memory, or beyond memoryBytes): random
    // point reads of the big store's file, as the server does them (better-sqlite3, one row by key).
    const [small, big] = sizes as [Size, Size];
    await stop(big.server!);
    big.server = null;
    fileRead = pointReadCost(join(big.dir, 'data', 'features.db'), big.entities);
    tableRead = [tableReadCost(small.entities), tableReadCost(big.entities)];
    // The store this replaces: every group in JS Maps (features.embedded.durable false), at 1,000,000.
    const mapDir = join(base, 'in-process');
    mkdirSync(mapDir, { recursive: true });
    const mapCsv = join(mapDir, 'accounts.csv');
    if (opts.keep === undefined || !existsSync(mapCsv)) await writeAccounts(mapCsv, MAP_ENTITIES);
    const mapConfig = await writeSetup(mapDir, mapCsv, false);
    const m = await start(mapConfig);
    try {
      mapHeapMb = await heapMb(m.port);
      mapEmptyHeapMb = sizes[0]!.heapMb;
    } finally {
      await stop(m);
    }
  } finally {
    for (const s of sizes) if (s.server) await stop(s.server).catch(() => undefined);
    if (opts.keep === undefined) rmSync(base, { recursive: true, force: true });
  }
  const [small, big] = sizes as [Size, Size];
  const mapBytesPerEntity = ((mapHeapMb - mapEmptyHeapMb) * 2 ** 20) / MAP_ENTITIES;
  const rps = (s: Size) => median(s.results.map((x) => x.rps));
  const ratio = rps(big) / rps(small);
  const rows = sizes.map((s) => [
    s.entities.toLocaleString('en-US'),
    rps(s).toFixed(0),
    median(s.results.map((x) => x.p50ms)).toFixed(3),
    median(s.results.map((x) => x.p99ms)).toFixed(3),
    s.results.reduce((a, x) => a + x.errors, 0),
    median(s.cpuUs).toFixed(2),
    s.heapMb.toFixed(0),
    s.rssMb.toFixed(0),
    s.fileMb.toFixed(0),
    s.loadSeconds.toFixed(1),
    s.startSeconds.toFixed(2),
    s.inMemorySeconds.toFixed(1),
    s.same ? 'yes' : '**no**',
  ]);
  const n = big.entities.toLocaleString('en-US');
  return (
    table(
      [
        'entities',
        'RPS (median)',
        'p50 ms',
        'p99 ms',
        'errors',
        'server CPU us/request',
        'JS heap used MB',
        'RSS MB',
        'features.db MB',
        'first start (load) s',
        'restart: ready s',
        'restart: all in memory s',
        'same answers after restart',
      ],
      rows,
    ) +
    `\n\nGoals at ${n} entities x 10 stored features, embedded default: throughput **${ratio.toFixed(3)}x** the 10,000-entity case (goal within 10%: ${ratio >= 0.9 ? 'met' : 'missed'}; server CPU per request ${(median(big.cpuUs) / median(small.cpuUs)).toFixed(3)}x; ` +
    `per round, big / small: throughput ${small.results.map((x, i) => (big.results[i]!.rps / x.rps).toFixed(3)).join(', ')}, CPU per request ${small.cpuUs.map((c, i) => (big.cpuUs[i]! / c).toFixed(3)).join(', ')}); ` +
    `JS heap **${big.heapMb.toFixed(0)} MB** (goal < 200 MB: ${big.heapMb < 200 ? 'met' : 'missed'}); RSS ${big.rssMb.toFixed(0)} MB; ` +
    `restart ready in **${big.startSeconds.toFixed(2)} s** (goal < 30 s or lazy: ${big.startSeconds < 30 ? 'met' : 'missed'}; every group in memory after ${big.inMemorySeconds.toFixed(1)} s, reads before that go to the file); ` +
    `nothing lost on restart: ${big.same && small.same ? 'met' : 'missed'} (the same scores and feature values for probed entities before and after).` +
    `\n\nwrk: 1 thread, 32 connections, ${opts.seconds} s per run, ${opts.rounds} interleaved rounds (medians), pinned to the last CPU, the servers to the other(s); every request names a random entity of the range (uniform: no locality for any cache).` +
    `\n- Sources: ${small.csvMb.toFixed(1)} MB and ${big.csvMb.toFixed(0)} MB of CSV from a seeded generator (account id, as_of, 10 features: float64, int64, float32, bool; 2% empty cells), written to a temp dir, not kept.` +
    `\n- First start: loads the CSV into <dataDir>/features.db (SQLite, WAL) and memory. Restart: opens the file and is ready; a worker thread copies every group into the native table (off the JS heap), reads of groups not copied yet go to the file.` +
    `\n- JS heap used (scoreline_nodejs_heap_size_used_bytes) and RSS (/proc/<pid>/status) after the rounds. CPU per request: all threads of the server (/proc/<pid>/stat).` +
    `\n- Where the difference goes: one random read of the native table (the group each /v1/score reads; best of 3 rounds of 500,000, in this process) costs **${tableRead[0]!.toFixed(2)} us** of CPU at ${small.entities.toLocaleString('en-US')} entries (in CPU caches) and **${tableRead[1]!.toFixed(2)} us** at ${n} (two cache and TLB misses in ${(big.rssMb / 1024).toFixed(1)} GB: the hash slot and the entry).` +
    `\n- A read from the file (before the copy into memory finishes, or beyond features.embedded.memoryBytes): **${fileRead.toFixed(2)} us** of CPU per random point read of the ${n}-entity file (better-sqlite3, as the server does it).` +
    `\n- The store this replaces (every group in JS Maps of Uint8Arrays, now features.embedded.durable: false) at ${MAP_ENTITIES.toLocaleString('en-US')} entities: JS heap ${mapHeapMb.toFixed(0)} MB, about **${mapBytesPerEntity.toFixed(0)} bytes of heap per entity** (${((mapBytesPerEntity * big.entities) / 2 ** 30).toFixed(1)} GB at ${n}).` +
    `\n- 1-minute load average at the start and end: ${load0.toFixed(1)}, ${loadavg()[0]!.toFixed(1)} (${availableParallelism()} cores; above that, other processes shared the machine).`
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      entities: { type: 'string', default: '10000000' },
      seconds: { type: 'string', default: '8' },
      rounds: { type: 'string', default: '3' },
      keep: { type: 'string' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  const text = await runBigStoreBench({
    entities: Number(values.entities),
    seconds: Number(values.seconds),
    rounds: Number(values.rounds),
    ...(values.keep ? { keep: values.keep } : {}),
  });
  console.log(`\n${text}`);
  if (!values['no-write'])
    writeSection(
      'features-big',
      'The embedded feature store at 10,000,000 entities',
      'npx tsc -p . && node dist/bench/features-big.js',
      text,
    );
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
