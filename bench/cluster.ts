// npm run bench:cluster -- [--seconds 8] [--rounds 3] [--connections 32] [--ship-seconds 10] [--no-write]
// What the shared PostgreSQL store costs the request path: one scoreline replica with its store in a
// throwaway PostgreSQL (started here by examples/local-services.ts, removed on exit) against one with
// the default SQLite store under its data dir, the same config otherwise (the demo credit model,
// monitoring on with its defaults), driven by wrk with the same one-row OIP request in interleaved
// rounds (medians: a small shared machine is noisy). Both servers are pinned off wrk's CPU, and PostgreSQL
// onto it, standing in for a database on its own host (its own CPU per request is reported too).
// Reported per replica: throughput, p50, p99, and server CPU per request (all threads, from /proc),
// steadier than throughput when other work shares the machine; then PG / SQLite throughput.
// With the PostgreSQL store the prediction log is shared: the replica also ships every logged
// prediction into PostgreSQL, which is part of what this measures. Then the rate a shared
// prediction log sustains into PostgreSQL: one PredictionLog in this process fed as fast as it
// takes rows (its local backlog kept bounded, so the figure is shipping, not SQLite filling up),
// rows shipped per second over a fixed span, against bench:http's serving throughput in RESULTS.md.
// Target: PG / SQLite throughput >= 0.95.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { postgresBin, POSTGRES_MISSING, removeAllSync, startPostgres } from '../examples/local-services.js';
import { PredictionLog } from '../src/monitoring/index.js';
import { table, writeSection } from './results.js';
import {
  cpuMs,
  have,
  killOnExit,
  median,
  pinPostgres,
  postgresCpuMs,
  postScript,
  runWrk,
  serverPin,
  waitReady,
  type WrkResult,
} from './wrk.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
// The same row and OIP body as bench/http.ts sends for the demo model.
const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const REQUEST = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 10], datatype: 'FP32', data: ROW }] });
const PATH = '/v2/models/credit-default/infer';
const TARGET = 0.95;

interface Replica {
  name: string;
  port: number;
  config: string;
  dataDir: string;
  proc?: ChildProcess;
  results: WrkResult[];
  /** Server CPU time (all threads) per request served, microseconds, per round. */
  cpuUs: number[];
  /** CPU time of every PostgreSQL process on the machine per request served, microseconds, per round. */
  pgUs: number[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '8' },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '32' },
      'ship-seconds': { type: 'string', default: '10' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  if (!have('wrk')) throw new Error('wrk is not installed (apt-get install -y wrk)');
  if (postgresBin() === null) throw new Error(POSTGRES_MISSING);
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const connections = Number(values.connections);

  const dir = mkdtempSync(join(tmpdir(), 'scoreline-bench-cluster-'));
  const load0 = loadavg()[0]!;
  const replicas: Replica[] = [];
  // Servers first, then PostgreSQL (the PostgreSQL replica must not outlive its store), then files.
  killOnExit(() => replicas.map((r) => r.proc));
  process.once('exit', () => {
    removeAllSync();
    rmSync(dir, { recursive: true, force: true });
  });

  const pg = await startPostgres('scoreline_bench');
  // PostgreSQL stands in for a database on its own host: it runs on wrk's CPU, off the servers' (its
  // backends, forked later, inherit this), so that the replica's figures are the replica's.
  const pgPinned = pinPostgres();
  // The same config for both but the store: SQLite under the data dir is what `store.url: null` means
  // (SCORELINE_STORE_URL is cleared for the children below, so the environment cannot change that).
  const mk = (name: string, url: string | null): Replica => {
    const config = join(dir, `${name}.yaml`);
    const dataDir = join(dir, name);
    writeFileSync(
      config,
      `modelRepository: ${join(ROOT, 'examples/models')}\ndataDir: ${dataDir}\nstore: { url: ${url === null ? 'null' : JSON.stringify(url)} }\n`,
    );
    return { name, port: 0, config, dataDir, results: [], cpuUs: [], pgUs: [] };
  };
  const sqlite = mk('SQLite store', null);
  const postgres = mk('PostgreSQL store', pg.url);
  sqlite.port = 18295;
  postgres.port = 18296;
  replicas.push(sqlite, postgres);
  let shippedByReplica = 0;
  try {
    const env = { ...process.env };
    delete env.SCORELINE_STORE_URL;
    for (const r of replicas) {
      const pin = serverPin();
      const argv = [
        ...pin.slice(1),
        process.execPath,
        'bin/scoreline.js',
        'serve',
        '--config',
        r.config,
        '--port',
        String(r.port),
        '--grpc-port',
        'off',
        '--host',
        '127.0.0.1',
        '--log-level',
        'error',
      ];
      r.proc = spawn(pin[0] ?? argv.shift()!, argv, { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
      await waitReady(r.port, PATH, REQUEST);
    }
    // The PostgreSQL replica really keeps its registry and presence there: it registered itself and
    // its model versions in the store, and the SQLite replica has its registry file instead.
    const [presence] = await pg.query<{ n: string }>('SELECT count(*) AS n FROM replicas');
    const [versions] = await pg.query<{ n: string }>('SELECT count(*) AS n FROM versions');
    console.log(`PostgreSQL store: ${presence?.n} replica(s), ${versions?.n} model version(s) registered`);
    if (!(Number(presence?.n) >= 1 && Number(versions?.n) >= 1)) throw new Error('the PostgreSQL replica did not use its store');

    const script = postScript(REQUEST, 'cluster');
    for (const r of replicas) await runWrk(`http://127.0.0.1:${r.port}${PATH}`, script, { connections, seconds: 2 }); // warm up
    for (let round = 0; round < rounds; round++) {
      // Alternate which goes first, so neither always runs on a machine warmed by the other.
      for (const r of round % 2 === 0 ? replicas : [...replicas].reverse()) {
        const pid = r.proc!.pid!;
        const cpu0 = cpuMs(pid);
        const pg0 = postgresCpuMs();
        const res = await runWrk(`http://127.0.0.1:${r.port}${PATH}`, script, { connections, seconds });
        r.cpuUs.push(((cpuMs(pid) - cpu0) * 1000) / res.requests);
        r.pgUs.push(((postgresCpuMs() - pg0) * 1000) / res.requests);
        r.results.push(res);
        console.log(
          `round ${round + 1} ${r.name.padEnd(17)} ${res.rps.toFixed(0).padStart(8)} rps  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  ` +
            `errors ${res.errors}  cpu ${r.cpuUs.at(-1)!.toFixed(2)} us/req`,
        );
      }
    }
    // What the PostgreSQL replica shipped of its log during the rounds (it ships until it stops).
    shippedByReplica = Number((await pg.query<{ n: string }>('SELECT count(*) AS n FROM predictions'))[0]!.n);
  } finally {
    // Wait for the servers to go before the exit handler removes PostgreSQL from under them.
    await Promise.all(
      replicas.map((r) => {
        const p = r.proc;
        if (p === undefined || p.exitCode !== null || p.signalCode !== null) return undefined;
        const gone = new Promise((res) => p.once('exit', res));
        p.kill('SIGTERM');
        return gone;
      }),
    );
  }
  const ship = await shippingRate(pg.url, join(dir, 'shipping'), Number(values['ship-seconds']));
  const served = servingRps();
  const keepUp = (rps: number) =>
    ship.rate >= rps
      ? `keeps up with it at sample rate 1`
      : `keeps up with it at \`predictionLog.sampleRate\` <= ${(Math.floor((ship.rate / rps) * 100) / 100).toFixed(2)}`;
  // Where each replica's prediction log went: its own data dir, in both cases.
  const logBytes = (r: Replica) => {
    const f = join(r.dataDir, 'monitoring.db');
    return existsSync(f) ? statSync(f).size + (existsSync(`${f}-wal`) ? statSync(`${f}-wal`).size : 0) : 0;
  };
  const logs = replicas.map((r) => `${r.name} ${(logBytes(r) / 2 ** 20).toFixed(1)} MiB`).join(', ');

  const summary = replicas.map((r) => ({
    name: r.name,
    rps: median(r.results.map((x) => x.rps)),
    p50: median(r.results.map((x) => x.p50ms)),
    p99: median(r.results.map((x) => x.p99ms)),
    cpu: median(r.cpuUs),
    pg: median(r.pgUs),
    errors: r.results.reduce((a, x) => a + x.errors, 0),
  }));
  const [a, b] = summary as [(typeof summary)[0], (typeof summary)[0]];
  const ratio = b.rps / a.rps;
  const perRound = sqlite.results.map((x, i) => postgres.results[i]!.rps / x.rps);
  const lo = Math.min(...perRound);
  const hi = Math.max(...perRound);
  const load1 = loadavg()[0]!;
  const met = ratio >= TARGET;
  // A median on the other side of the target from some rounds is noise, not a result: say so.
  const noise =
    lo >= TARGET || hi < TARGET
      ? ''
      : `; single rounds fall either side of the target (${lo.toFixed(3)} to ${hi.toFixed(3)}), so at this load the median alone does not settle it: server CPU per request PG / SQLite is ${(b.cpu / a.cpu).toFixed(3)}`;
  const errors = a.errors + b.errors;
  const text =
    table(
      ['replica', 'RPS (median)', 'p50 ms', 'p99 ms', 'errors', 'x SQLite', 'server CPU us/request', 'PostgreSQL CPU us/request'],
      summary.map((x) => [
        x.name,
        x.rps.toFixed(0),
        x.p50.toFixed(3),
        x.p99.toFixed(3),
        x.errors,
        (x.rps / a.rps).toFixed(3),
        x.cpu.toFixed(2),
        x.pg.toFixed(2),
      ]),
    ) +
    `\n\nOne replica each, the same config but \`store.url\` (examples/models, monitoring on with its defaults); the PostgreSQL is a throwaway ` +
    `local cluster (fsync off) on the same machine. wrk: 1 thread, ${connections} connections, ${seconds} s per run, ${rounds} interleaved rounds (medians), ` +
    `pinned to the last CPU, the servers to the others; request: one row of the demo credit model over OIP (\`POST ${PATH}\`). ` +
    `Server CPU per request: all threads, from /proc.\n\n` +
    `- throughput PG / SQLite = **${ratio.toFixed(3)}** (target >= ${TARGET}): **${met ? 'met' : 'missed'}**${noise}\n` +
    `- per round PG / SQLite: ${perRound.map((x) => x.toFixed(3)).join(', ')}\n` +
    `- p99: SQLite ${a.p99.toFixed(3)} ms, PostgreSQL ${b.p99.toFixed(3)} ms; server CPU per request PG / SQLite ${(b.cpu / a.cpu).toFixed(3)} (${a.cpu.toFixed(2)} -> ${b.cpu.toFixed(2)} us)` +
    (errors > 0 ? `; ${errors} failed requests` : '') +
    `\n` +
    `- PostgreSQL on this machine ${pgPinned ? 'pinned with wrk to the last CPU, standing in for a database on its own host' : 'on the same cores as the servers (taskset unavailable)'}: ` +
    `its processes spent ${b.pg.toFixed(2)} us of CPU per request served by the PostgreSQL replica (ingesting its shipped prediction log, ` +
    `its heartbeat and monitoring buckets); the replica's own CPU per request grew by ${(b.cpu - a.cpu).toFixed(2)} us (${(b.cpu / a.cpu).toFixed(3)}x)\n` +
    `- the store is off the inference path: a request reads the registry and deployments from memory; PostgreSQL is read at start, ` +
    `on its notifications and every resync, and written by the heartbeat\n` +
    `- the prediction log is written to each replica's data dir (\`monitoring.db\`: ${logs} after the run); the PostgreSQL replica ` +
    `also shipped it into PostgreSQL (${shippedByReplica} rows there when the rounds ended), so its figures include shipping\n` +
    `- **prediction-log rows shipped into PostgreSQL: ${ship.rate.toFixed(0)} rows/s** sustained over ${ship.seconds} s ` +
    `(one shared PredictionLog in the bench process fed as fast as it takes rows, demo-model rows of 10 inputs; ${ship.shipped} rows shipped, ` +
    `${ship.inPg} in PostgreSQL, ${ship.dropped} dropped; shipping backlog at the end ${ship.backlog} rows; ` +
    `bench process CPU ${ship.cpuUsPerRow.toFixed(2)} us per shipped row, feeding and SQLite included; load average ${ship.load0.toFixed(1)} -> ${ship.load1.toFixed(1)})\n` +
    (served === null
      ? ''
      : `- against bench:http's serving throughput in this file: demo ${served.demo} rps, shipping ${keepUp(served.demo)}; ` +
        `GBDT ${served.gbdt} rps, ${keepUp(served.gbdt)}; against this bench's PostgreSQL replica (${b.rps.toFixed(0)} rps), ${keepUp(b.rps)}\n`) +
    `- 1-minute load average at the start and end of the run: ${load0.toFixed(1)}, ${load1.toFixed(1)} (on ${availableParallelism()} cores; ` +
    `above that, other processes shared the machine and throughput is noisier than CPU per request)`;
  console.log(`\n${text}`);
  const args = process.argv.slice(2).filter((x) => x !== '--no-write');
  const command = `npm run bench:cluster${args.length > 0 ? ` -- ${args.join(' ')}` : ''}`;
  if (!values['no-write']) writeSection('cluster', 'Store: one replica on PostgreSQL vs on SQLite', command, text);
}

/** Rows a second a shared prediction log ships into PostgreSQL, fed as fast as it takes them. */
async function shippingRate(url: string, dataDir: string, seconds: number) {
  mkdirSync(dataDir, { recursive: true });
  const log = new PredictionLog({ dataDir, sampleRate: 1, retentionDays: 30, shared: { url } });
  const row = Float32Array.from(ROW);
  let i = 0;
  let feeding = true;
  const feed = () => {
    if (!feeding) return;
    const st = log.status();
    // Bounded: what waits locally stays under ~200k rows, so the rate is shipping's.
    if (st.backlog + st.shipping!.backlog_rows < 200_000)
      for (let k = 0; k < 1000; k++, i++)
        log.append(`bench-${i}`, 'credit-default', 1, 'primary', Date.now(), 0.3, row, 0, ROW.length, 'classification');
    setImmediate(feed);
  };
  feed();
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  await sleep(2000); // warm up: partitions created, pool connected
  const load0 = loadavg()[0]!;
  const s0 = log.status().shipping!.shipped;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await sleep(seconds * 1000);
  const shipped = log.status().shipping!.shipped - s0;
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const load1 = loadavg()[0]!;
  feeding = false;
  const backlog = log.status().shipping!.backlog_rows;
  // Then everything logged ships, and PostgreSQL must hold exactly that.
  log.flush();
  const deadline = Date.now() + 120_000;
  while (log.status().backlog + log.status().shipping!.backlog_rows > 0 && Date.now() < deadline) await sleep(50);
  const dropped = log.dropped;
  const total = log.status().shipping!.shipped;
  await log.close();
  const pg = await import('pg');
  const client = new pg.default.Client({ connectionString: url });
  await client.connect();
  const inPg = Number((await client.query("SELECT count(*) AS n FROM predictions WHERE request_id LIKE 'bench-%'")).rows[0].n);
  await client.end();
  if (log.status().shipping!.errors > 0) throw new Error(`shipping failed: ${log.status().shipping!.last_error}`);
  if (inPg !== total) throw new Error(`PostgreSQL holds ${inPg} of the ${total} rows the log says it shipped`);
  return {
    rate: shipped / elapsed,
    seconds,
    shipped,
    inPg,
    dropped,
    backlog,
    cpuUsPerRow: (cpu.user + cpu.system) / shipped,
    load0,
    load1,
  };
}

/** bench:http's scoreline (default) throughput for the demo and GBDT models, from RESULTS.md (null: not there). */
function servingRps(): { demo: number; gbdt: number } | null {
  const file = join(ROOT, 'bench', 'RESULTS.md');
  if (!existsSync(file)) return null;
  const text = readFileSync(file, 'utf8');
  const rps = (heading: string) => {
    const at = text.indexOf(heading);
    if (at < 0) return null;
    const m = /\| scoreline \(default\) \| [\d.]+ \| [\d.]+ \| (\d+) \|/.exec(text.slice(at));
    return m === null ? null : Number(m[1]);
  };
  const demo = rps('### credit-default: logistic regression');
  const gbdt = rps('### gbdt:');
  return demo === null || gbdt === null ? null : { demo, gbdt };
}

await main();
