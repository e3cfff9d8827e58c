// `npm run demo:cluster` (examples/demo-cluster.ts), run as a user runs it: end to end, where a
// version deployed through replica 1 reaches replicas 2 and 3, traffic goes to all three, feedback
// joins on any replica (the prediction log is shared), monitoring is shown per replica and a killed leader is
// replaced; then nothing it started is left (temp dirs, PostgreSQL, Redis, replicas), also when it is
// interrupted with Ctrl-C; and without redis-server it says what to install and starts nothing.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { redisAvailable } from './e2e/redis.js';
import { ROOT } from './e2e/server.js';
import { postgresSkip } from './fixtures/postgres.js';

const DEMO = join(ROOT, 'dist', 'examples', 'demo-cluster.js');
const skip = postgresSkip() || (!redisAvailable() && 'redis-server is not installed');

/** Whether something accepts connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

interface Left {
  work: string;
  pgDir: string;
  redisPort: number;
  replicaPorts: number[];
}

/** What the demo's output says it started: its dirs, Redis's port and the replicas'. */
function started(out: string): Left {
  const work = /^work dir (\S+) /m.exec(out)?.[1];
  const pg = /^PostgreSQL at postgres:\/\/\S+:(\d+)\/\S+ \(files in (\S+)\)$/m.exec(out);
  const redis = /^Redis at redis:\/\/127\.0\.0\.1:(\d+) /m.exec(out);
  assert.ok(work && pg && redis, out);
  const replicaPorts = [...out.matchAll(/^replica-\d listening at http:\/\/127\.0\.0\.1:(\d+) /gm)].map((m) => Number(m[1]));
  return { work, pgDir: pg[2]!, redisPort: Number(redis[1]), replicaPorts };
}

/** Processes the demo started, found by what their command lines hold: its dirs (PostgreSQL's -D, the replicas' --data-dir) and Redis's port. */
function processesOf(left: Left): string[] {
  const ps = spawnSync('ps', ['-eo', 'pid=,stat=,args='], { encoding: 'utf8' }).stdout.split('\n');
  return ps.filter(
    (l) =>
      !/^\s*\d+\s+Z/.test(l) && (l.includes(left.work) || l.includes(left.pgDir) || l.includes(`redis-server 127.0.0.1:${left.redisPort}`)),
  );
}

async function assertNothingLeft(left: Left): Promise<void> {
  assert.ok(!existsSync(left.work), `${left.work} is removed`);
  assert.ok(!existsSync(left.pgDir), `${left.pgDir} is removed`);
  // A killed process is gone once the kernel has torn it down: a bounded wait, not a sleep.
  const deadline = Date.now() + 5000;
  while (processesOf(left).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(processesOf(left), [], 'no replica, PostgreSQL or Redis process is left');
}

test('the demo, end to end: propagation, traffic on all three, feedback joining on any replica, one merged monitoring view, a new leader after SIGKILL; nothing left', {
  skip,
  timeout: 180_000,
}, async (t) => {
  const r = spawnSync(process.execPath, [DEMO], { cwd: ROOT, encoding: 'utf8', timeout: 170_000 });
  const out = r.stdout;
  // Whatever fails below, the demo's own account is in the report.
  t.diagnostic(`demo output:\n${out}${r.stderr ? `\nstderr:\n${r.stderr}` : ''}`);
  assert.equal(r.status, 0, `${out}\n${r.stderr}`);
  assert.match(out, /^ {2}leader: replica-\d$/m);
  assert.equal([...out.matchAll(/^ {2}[* ] replica-\d at 127\.0\.0\.1:\d+$/gm)].length >= 3, true, 'GET /admin/cluster lists the three');
  assert.match(out, /^replica-1: registered credit-default v2 /m);
  assert.match(out, /^replica-2: serving v2 \d+ ms after the deployment/m);
  assert.match(out, /^replica-3: serving v2 \d+ ms after the deployment/m);
  assert.match(out, /^300 scoring requests: replica-1 100, replica-2 100, replica-3 100$/m);
  assert.match(out, /^each of 20 customers got one score from all three replicas/m);
  assert.match(out, /^label for demo-0 sent to replica-1, which served it: joined 1, unknown 0$/m);
  assert.match(out, /^label for demo-3 sent to replica-2, but replica-1 served it: joined 1, unknown 0$/m);
  // Every replica shows the same merged view: all the traffic of the three, both labels.
  const snaps = [
    ...out.matchAll(/^(replica-\d) \(merged from 3 replicas\): (\d+) requests, 0 errors, p99 (?:[\d.]+ ms|n\/a), (\d+) labelled$/gm),
  ];
  assert.deepEqual(
    snaps.map((m) => m[1]),
    ['replica-1', 'replica-2', 'replica-3'],
    out,
  );
  assert.equal(new Set(snaps.map((m) => m[2])).size, 1, 'the same count on every replica');
  // 300 scores and each follower's first probe of v2; a follower that applies v2's drift reference
  // after that probe restarts its windows against it, and the probe is no longer counted.
  assert.ok(Number(snaps[0]![2]) >= 300 && Number(snaps[0]![2]) <= 302, `${snaps[0]![2]} requests`);
  assert.deepEqual(
    snaps.map((m) => Number(m[3])),
    [2, 2, 2],
    'both labels, joined on two replicas, count on all three',
  );
  const killed = /^(replica-\d) killed \(it led\)$/m.exec(out)?.[1];
  assert.ok(killed, out);
  const next = /^(replica-\d) leads \d+ ms after the kill/m.exec(out)?.[1];
  assert.ok(next && next !== killed, `a survivor leads: ${next}`);
  assert.equal([...out.matchAll(/^replica-\d: still serving, credit-default v2 score 0\.\d+$/gm)].length, 2);
  assert.match(out, /temp dirs removed$/m);
  await assertNothingLeft(started(out));
});

test('Ctrl-C while the replicas start: everything stops, the temp dirs go', { skip, timeout: 120_000 }, async () => {
  const proc = spawn(process.execPath, [DEMO], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  let out = '';
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      out += `${line}\n`;
      if (line.startsWith('replica-1 listening at ')) resolve();
    });
    void exited.then((code) => reject(new Error(`the demo exited (${code}) before a replica started:\n${out}\n${stderr}`)));
  });
  const left = started(out);
  assert.equal(await listening(left.replicaPorts[0]!), true, 'replica-1 is up before the interrupt');
  assert.ok(processesOf(left).length >= 3, 'PostgreSQL, Redis and replica-1 run before the interrupt (the check has teeth)');
  proc.kill('SIGINT');
  assert.equal(await exited, 130);
  assert.match(stderr, /SIGINT: stopping the replicas, Redis and PostgreSQL, removing the temp dirs/);
  await assertNothingLeft(left);
});

test('without redis-server it says what to install, and starts nothing', { timeout: 30_000 }, () => {
  // No PATH: redis-server (and everything else looked up there) is missing.
  const r = spawnSync(process.execPath, [DEMO], { cwd: ROOT, encoding: 'utf8', env: { PATH: '/nonexistent' }, timeout: 20_000 });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /^demo:cluster: redis-server is not on PATH \(install it: apt-get install redis-server\)$/m);
  assert.equal(r.stdout, '', 'no work dir, no server');
});
