// `npm run demo:cluster`: scoreline scaled out on this machine. A throwaway PostgreSQL (the shared
// store) and Redis (the shared online features), three replicas of the scoreline CLI sharing them,
// each with its own data dir and port; then, printed as it happens:
//
//   1. the cluster as every replica sees it (GET /admin/cluster): one leader, three replicas;
//   2. version 2 of credit-default registered and deployed through replica 1, and replicas 2 and 3
//      serving it moments later, without being told anything but through the store;
//   3. traffic spread over all three: the same customer gets the same score from each;
//   4. feedback that joins on any replica (the prediction log is shared through PostgreSQL), and the
//      monitoring snapshot of every replica: the same merged view of all three (traffic and labels);
//   5. the leader killed with SIGKILL, and another replica leading within the lease.
//
// Everything stops and the temp dirs go on exit, also on Ctrl-C. Needs the PostgreSQL server
// binaries (apt-get install postgresql) and redis-server (apt-get install redis-server).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import {
  postgresBin,
  POSTGRES_MISSING,
  redisAvailable,
  REDIS_MISSING,
  removeAllSync,
  startPostgres,
  startRedis,
  type LocalPostgres,
  type LocalRedis,
} from './local-services.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'bin', 'scoreline.js');
const MODEL = 'credit-default';
const TOKEN = 'demo-cluster-token';
// Shorter than the defaults (2 s, 8 s) so the failover shows within the demo's time.
const HEARTBEAT_SECONDS = 1;
const LEASE_SECONDS = 4;

const say = (s: string) => console.log(s);
const step = (s: string) => console.log(`\n== ${s}`);

interface Replica {
  name: string;
  proc: ChildProcess;
  url: string;
  dataDir: string;
  logs: string[];
}

let work: string | null = null;
let pg: LocalPostgres | null = null;
let redis: LocalRedis | null = null;
const replicas: Replica[] = [];

/** Stops everything this demo started and removes its files; safe to call more than once, and from an exit handler. */
function cleanupSync(): void {
  for (const r of replicas) if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill('SIGKILL');
  if (redis !== null && redis.proc.exitCode === null && redis.proc.signalCode === null) redis.proc.kill('SIGKILL');
  redis = null;
  pg?.removeSync();
  pg = null;
  // Also one still starting when the signal came.
  removeAllSync();
  if (work !== null) rmSync(work, { recursive: true, force: true });
  work = null;
}

/** A graceful stop first (SIGTERM: the replicas drain and resign), then the rest. */
async function cleanup(): Promise<void> {
  await Promise.all(replicas.map((r) => stopReplica(r, 'SIGTERM')));
  await redis?.kill();
  cleanupSync();
}

process.on('exit', cleanupSync);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the replicas, Redis and PostgreSQL, removing the temp dirs`);
    cleanupSync();
    process.exit(130);
  });
}

function stopReplica(r: Replica, signal: NodeJS.Signals): Promise<void> {
  if (r.proc.exitCode !== null || r.proc.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((resolve) => r.proc.once('exit', () => resolve()));
  r.proc.kill(signal);
  return exited;
}

async function startReplica(i: number, config: string, storeUrl: string): Promise<Replica> {
  const name = `replica-${i + 1}`;
  const dataDir = join(work!, name);
  const proc = spawn(
    process.execPath,
    [CLI, 'serve', '--config', config, '--data-dir', dataDir, '--host', '127.0.0.1', '--port', '0', '--grpc-port', '0'],
    {
      cwd: ROOT,
      env: { ...process.env, SCORELINE_STORE_URL: storeUrl, SCORELINE_ADMIN_TOKEN: TOKEN, SCORELINE_REPLICA_ID: name },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const logs: string[] = [];
  const r: Replica = { name, proc, url: '', dataDir, logs };
  replicas[i] = r;
  createInterface({ input: proc.stderr! }).on('line', (l) => logs.push(l));
  r.url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 60 s:\n${logs.slice(-20).join('\n')}`)), 60_000);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before listening:\n${logs.slice(-20).join('\n')}`));
    });
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      logs.push(line);
      if (logs.length > 500) logs.splice(0, 100);
      try {
        const rec = JSON.parse(line) as { msg?: string; port?: number; level?: number };
        if (rec.msg?.startsWith('scoreline listening') && rec.port) {
          clearTimeout(timer);
          resolve(`http://127.0.0.1:${rec.port}`);
        } else if ((rec.level ?? 0) >= 50) {
          console.error(`  [${name}] ${rec.msg}`);
        }
      } catch {
        // not a log line
      }
    });
  });
  return r;
}

/** A JSON answer as the demo reads it: fields it prints or compares, never trusted for their type. */
type Json = Record<string, unknown>;
interface ClusterView {
  leader: string | null;
  replicas: { id: string; address: string; leader: boolean }[];
}
interface FeedbackAnswer {
  joined: number;
  unknown: number;
}
interface Snapshot {
  latency?: { p99_ms?: number | null };
  volume?: { requests?: number; errors?: number };
  performance?: { labelled?: number };
  /** How many replicas the view merges (a shared store only). */
  replicas?: { replicas?: number };
}

async function call<T = Json>(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  type = 'application/json',
): Promise<{ status: number; json: T }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': type } : {}) },
    ...(body !== undefined ? { body: body instanceof Uint8Array ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json: T;
  try {
    json = JSON.parse(text) as T;
  } catch {
    json = { text } as T;
  }
  return { status: res.status, json };
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch {
      // not yet: a replica starting, switching, or just killed
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const score = (r: Replica, customer: string, id?: string) =>
  call<{ score: number; model_version: string }>(r.url, 'POST', `/v1/score/${MODEL}`, {
    ...(id ? { id } : {}),
    entity: { customer_id: customer },
    context: { amount: 5200, duration_months: 24 },
  });

function showCluster(view: { leader: string | null; replicas: { id: string; address: string; leader: boolean }[] }): void {
  say(`  leader: ${view.leader}`);
  for (const r of [...view.replicas].sort((a, b) => a.id.localeCompare(b.id))) say(`  ${r.leader ? '*' : ' '} ${r.id} at ${r.address}`);
}

async function main(): Promise<void> {
  // Everything that is missing, said at once, before anything starts.
  const missing = [postgresBin() === null ? POSTGRES_MISSING : null, redisAvailable() ? null : REDIS_MISSING].filter((m) => m !== null);
  const v2 = join(ROOT, 'examples', 'credit-default-v2', 'model.onnx');
  if (!existsSync(v2)) missing.push(`${v2} is missing (npm run demo:model builds it)`);
  if (missing.length > 0) {
    for (const m of missing) console.error(`demo:cluster: ${m}`);
    process.exitCode = 1;
    return;
  }

  work = mkdtempSync(join(tmpdir(), 'scoreline-demo-cluster-'));
  say(`work dir ${work} (removed on exit)`);
  step('PostgreSQL (the shared store) and Redis (the shared online features)');
  pg = await startPostgres();
  say(`PostgreSQL at ${pg.url} (files in ${pg.dir})`);
  redis = await startRedis();
  say(`Redis at ${redis.url} (pid ${redis.proc.pid})`);

  // The demo config (npm start's), with the shared Redis and a short lease; paths made absolute.
  const config = join(work, 'scoreline.yaml');
  writeFileSync(
    config,
    stringify({
      modelRepository: join(ROOT, 'examples', 'models'),
      features: { definitions: join(ROOT, 'examples', 'features', 'features.yaml'), redis: { url: redis.url } },
      // Three replicas on one machine: one inference worker each.
      inference: { workers: 1 },
      store: { heartbeatSeconds: HEARTBEAT_SECONDS, leaseSeconds: LEASE_SECONDS },
    }),
  );
  const m = spawnSync(
    process.execPath,
    [CLI, 'features', 'materialize', '--config', config, '--from', join(ROOT, 'examples', 'features', 'customers.csv'), '--quiet'],
    { cwd: ROOT, encoding: 'utf8' },
  );
  if (m.status !== 0) throw new Error(`features materialize failed: ${m.stderr}${m.stdout}`);
  say(`the demo customers' features loaded into Redis (${redis.cli('dbsize')} keys)`);

  step('three replicas, each with its own data dir, sharing the store');
  // One after the other: the first migrates the schema, the others find it current.
  for (let i = 0; i < 3; i++) {
    const r = await startReplica(i, config, pg.url);
    say(`${r.name} listening at ${r.url} (data dir ${r.dataDir})`);
  }
  const first = await until('every replica heard from', 10_000, async () => {
    const v = (await call<ClusterView>(replicas[0]!.url, 'GET', '/admin/cluster')).json;
    return v.replicas?.length === 3 && v.leader ? v : undefined;
  });
  say(`GET /admin/cluster (heartbeat ${HEARTBEAT_SECONDS} s, lease ${LEASE_SECONDS} s):`);
  showCluster(first);

  step(`version 2 of ${MODEL} registered and deployed through replica-1 only`);
  const reg = await call(
    replicas[0]!.url,
    'POST',
    `/admin/models/${MODEL}/versions`,
    new Uint8Array(readFileSync(v2)),
    'application/octet-stream',
  );
  if (reg.status !== 201 && reg.status !== 200) throw new Error(`register: ${reg.status} ${JSON.stringify(reg.json)}`);
  say(`replica-1: registered ${MODEL} v${reg.json.version} (sha256 ${String(reg.json.sha256).slice(0, 12)}...), stored in PostgreSQL`);
  const put = await call(replicas[0]!.url, 'PUT', `/admin/deployments/${MODEL}`, { strategy: 'direct', version: reg.json.version });
  if (put.status !== 200) throw new Error(`deploy: ${put.status} ${JSON.stringify(put.json)}`);
  const t0 = Date.now();
  say(`replica-1: deployed v${reg.json.version} (direct)`);
  for (const r of replicas.slice(1)) {
    await until(`${r.name} serves v2`, 10_000, async () =>
      (await score(r, 'C00042')).json.model_version === String(reg.json.version) ? true : undefined,
    );
    say(`${r.name}: serving v${reg.json.version} ${Date.now() - t0} ms after the deployment (notified through the store, loaded from it)`);
  }

  step('traffic over all three replicas');
  const served = new Map<string, number>();
  const answers = new Map<string, Set<number>>();
  const customers = Array.from({ length: 20 }, (_, k) => `C${String(k + 1).padStart(5, '0')}`);
  for (let k = 0; k < 300; k++) {
    const r = replicas[k % 3]!;
    const customer = customers[k % customers.length]!;
    const res = await score(r, customer, `demo-${k}`);
    if (res.status !== 200) throw new Error(`${r.name}: ${res.status} ${JSON.stringify(res.json)}`);
    served.set(r.name, (served.get(r.name) ?? 0) + 1);
    answers.set(customer, (answers.get(customer) ?? new Set()).add(res.json.score));
  }
  say(`300 scoring requests: ${[...served].map(([n, c]) => `${n} ${c}`).join(', ')}`);
  const same = [...answers.values()].every((s) => s.size === 1);
  say(
    same
      ? `each of ${customers.length} customers got one score from all three replicas (one model version, features from one Redis)`
      : 'WARNING: a customer got different scores from different replicas',
  );
  if (!same) process.exitCode = 1;

  step('feedback joins on any replica (each ships its prediction log to PostgreSQL, where labels join)');
  // demo-0 and demo-3 were served by replica-1 (k % 3 == 0).
  const own = (await call<FeedbackAnswer>(replicas[0]!.url, 'POST', '/v1/feedback', { request_id: 'demo-0', label: 0 })).json;
  // Another replica finds a prediction once its replica has shipped it (within a flush and a shipping round).
  const other = await until('replica-2 to join the label of demo-3', 5000, async () => {
    const a = (await call<FeedbackAnswer>(replicas[1]!.url, 'POST', '/v1/feedback', { request_id: 'demo-3', label: 0 })).json;
    return a.joined === 1 ? a : undefined;
  }).catch(() => ({ joined: 0, unknown: 1 }));
  say(`label for demo-0 sent to replica-1, which served it: joined ${own.joined}, unknown ${own.unknown}`);
  say(`label for demo-3 sent to replica-2, but replica-1 served it: joined ${other.joined}, unknown ${other.unknown}`);

  step('monitoring: one view on every replica (each shares its minute buckets through PostgreSQL every second)');
  const snapshot = async (r: Replica) =>
    (await call<Snapshot>(r.url, 'GET', `/v1/monitoring/${MODEL}?version=${String(reg.json.version)}`)).json;
  // Each replica writes its buckets every second and performance figures are cached for two:
  // wait (bounded) until every replica shows the same requests, of all three replicas, and both labels.
  const labels = own.joined + other.joined;
  const merged = await until('every replica to show the traffic of all three', 10_000, async () => {
    const snaps = await Promise.all(replicas.map(snapshot));
    const ok =
      new Set(snaps.map((x) => x.volume?.requests)).size === 1 &&
      snaps.every((x) => x.replicas?.replicas === 3 && (x.performance?.labelled ?? 0) >= labels);
    return ok ? snaps : undefined;
  }).catch(() => null);
  const snaps = merged ?? (await Promise.all(replicas.map(snapshot)));
  replicas.forEach((r, i) => {
    const snap = snaps[i]!;
    const p99 = snap.latency?.p99_ms;
    say(
      `${r.name} (merged from ${snap.replicas?.replicas ?? 1} replicas): ${snap.volume?.requests} requests, ${snap.volume?.errors} errors, p99 ${typeof p99 === 'number' ? `${p99} ms` : 'n/a'}, ${snap.performance?.labelled ?? 0} labelled`,
    );
  });

  step('the leader killed with SIGKILL');
  const view = (await call<ClusterView>(replicas[0]!.url, 'GET', '/admin/cluster')).json;
  const leader = replicas.find((r) => r.name === view.leader);
  if (leader === undefined) throw new Error(`no replica of this demo leads: ${JSON.stringify(view)}`);
  const survivors = replicas.filter((r) => r !== leader);
  await stopReplica(leader, 'SIGKILL');
  const killedAt = Date.now();
  say(`${leader.name} killed (it led)`);
  const after = await until('a new leader', 4 * LEASE_SECONDS * 1000, async () => {
    const v = (await call<ClusterView>(survivors[0]!.url, 'GET', '/admin/cluster')).json;
    return v.leader && v.leader !== leader.name ? v : undefined;
  });
  const took = Date.now() - killedAt;
  say(
    `${after.leader} leads ${took} ms after the kill (lease ${LEASE_SECONDS} s + heartbeat ${HEARTBEAT_SECONDS} s at most: ${took <= (LEASE_SECONDS + HEARTBEAT_SECONDS) * 1000 + 1000 ? 'within it' : 'LATER than that'})`,
  );
  showCluster(after);
  for (const r of survivors) {
    const res = await score(r, 'C00042');
    say(`${r.name}: still serving, ${MODEL} v${res.json.model_version} score ${Number(res.json.score).toFixed(4)}`);
  }

  step('stopping');
  await cleanup();
  say('replicas stopped, Redis and PostgreSQL stopped, temp dirs removed');
}

main().catch(async (e: Error) => {
  console.error(`demo:cluster failed: ${e.message}`);
  for (const r of replicas)
    if (r.logs.length > 0 && r.proc.exitCode !== null && r.proc.signalCode === null)
      console.error(`[${r.name} log]\n${r.logs.slice(-20).join('\n')}`);
  process.exitCode = 1;
  await cleanup().catch(() => cleanupSync());
});
