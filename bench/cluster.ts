// npm run bench:cluster -- [--seconds 8] [--rounds 3] [--connections 32] [--no-write]
// What the shared PostgreSQL store costs the request path: one scoreline replica with its store in a
// throwaway PostgreSQL (started here by examples/local-services.ts, removed on exit) against one with
// the default SQLite store under its data dir, the same config otherwise (the demo credit model,
// monitoring on with its defaults), driven by wrk with the same one-row OIP request in interleaved
// rounds (medians: a small shared machine is noisy). Both servers are pinned off wrk's CPU.
// Reported per replica: throughput, p50, p99, and server CPU per request (all threads, from /proc),
// steadier than throughput when other work shares the machine; then PG / SQLite throughput.
// The prediction log stays in SQLite (<data-dir>/monitoring.db) with either store, so the
// PostgreSQL replica writes no predictions into PostgreSQL: there is no "log rows/s into the store"
// to measure, and the bench says so rather than print a number for it.
// Target: PG / SQLite throughput >= 0.95.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { postgresBin, POSTGRES_MISSING, removeAllSync, startPostgres } from '../examples/local-services.js';
import { table, writeSection } from './results.js';
import { cpuMs, have, killOnExit, median, postScript, runWrk, serverPin, waitReady, type WrkResult } from './wrk.js';

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
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '8' },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '32' },
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
  // The same config for both but the store: SQLite under the data dir is what `store.url: null` means
  // (SCORELINE_STORE_URL is cleared for the children below, so the environment cannot change that).
  const mk = (name: string, url: string | null): Replica => {
    const config = join(dir, `${name}.yaml`);
    const dataDir = join(dir, name);
    writeFileSync(
      config,
      `modelRepository: ${join(ROOT, 'examples/models')}\ndataDir: ${dataDir}\nstore: { url: ${url === null ? 'null' : JSON.stringify(url)} }\n`,
    );
    return { name, port: 0, config, dataDir, results: [], cpuUs: [] };
  };
  const sqlite = mk('SQLite store', null);
  const postgres = mk('PostgreSQL store', pg.url);
  sqlite.port = 18295;
  postgres.port = 18296;
  replicas.push(sqlite, postgres);
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
        const res = await runWrk(`http://127.0.0.1:${r.port}${PATH}`, script, { connections, seconds });
        r.cpuUs.push(((cpuMs(pid) - cpu0) * 1000) / res.requests);
        r.results.push(res);
        console.log(
          `round ${round + 1} ${r.name.padEnd(17)} ${res.rps.toFixed(0).padStart(8)} rps  p50 ${res.p50ms.toFixed(3)} ms  p99 ${res.p99ms.toFixed(3)} ms  ` +
            `errors ${res.errors}  cpu ${r.cpuUs.at(-1)!.toFixed(2)} us/req`,
        );
      }
    }
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
      ['replica', 'RPS (median)', 'p50 ms', 'p99 ms', 'errors', 'x SQLite', 'server CPU us/request'],
      summary.map((x) => [
        x.name,
        x.rps.toFixed(0),
        x.p50.toFixed(3),
        x.p99.toFixed(3),
        x.errors,
        (x.rps / a.rps).toFixed(3),
        x.cpu.toFixed(2),
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
    `- the store is off the inference path: a request reads the registry and deployments from memory; PostgreSQL is read at start, ` +
    `on its notifications and every resync, and written by the heartbeat\n` +
    `- the prediction log stays in SQLite with either store (\`monitoring.db\` in each replica's data dir: ${logs} after the run), ` +
    `so "prediction-log rows/s into PostgreSQL" does not apply: the log is not in the store\n` +
    `- 1-minute load average at the start and end of the run: ${load0.toFixed(1)}, ${load1.toFixed(1)} (on ${availableParallelism()} cores; ` +
    `above that, other processes shared the machine and throughput is noisier than CPU per request)`;
  console.log(`\n${text}`);
  const args = process.argv.slice(2).filter((x) => x !== '--no-write');
  const command = `npm run bench:cluster${args.length > 0 ? ` -- ${args.join(' ')}` : ''}`;
  if (!values['no-write']) writeSection('cluster', 'Store: one replica on PostgreSQL vs on SQLite', command, text);
}

await main();
