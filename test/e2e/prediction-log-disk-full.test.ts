// The prediction log on a full disk, against a real server whose data dir is a 20 MB tmpfs filled by
// a filler file: requests are still answered and the server stays ready, the failure is counted and
// reported (/v1/monitoring, /metrics, one error line per episode), admin writes answer 507, a start
// on the full disk exits with one line naming the data dir and ENOSPC, and once the filler is gone
// the log writes what it held by itself: every prediction acknowledged before, during and after
// the episode joins its label (or is counted as dropped).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { identityBytes, identityRequest, writeIdentityModel } from '../fixtures/identity.js';
import { CLI, ROOT, request, startServer, tempDir, type TestServer } from './server.js';
import { waitFor } from '../fixtures/wait.js';

const TOKEN = 'disk-full-test-token';
const root = process.getuid?.() === 0;
let mnt = '';
let mounted = false;
let repo = '';
let server: TestServer | null = null;

before(async () => {
  if (!root) return;
  repo = await tempDir('scoreline-repo-');
  await writeIdentityModel(repo, 'ident', 'classification', 2);
  mnt = await tempDir('scoreline-tmpfs-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=20m', 'tmpfs', mnt]);
  mounted = true;
});

after(async () => {
  await server?.stop('SIGKILL');
  if (mounted) execFileSync('umount', [mnt]);
  if (mnt !== '') rmSync(mnt, { recursive: true, force: true });
});

/** Writes until the filesystem refuses even 512 bytes. */
function fill(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(1 << 20, 7);
  let size = chunk.length;
  try {
    while (size >= 512) {
      try {
        writeSync(fd, chunk, 0, size);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
        size >>= 1;
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** Scores `n` requests `${prefix}-i`, `concurrency` at a time; the ids answered 200, and any other statuses. */
async function load(url: string, prefix: string, n: number, concurrency = 16): Promise<{ ok: string[]; other: number[] }> {
  const ok: string[] = [];
  const other: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < n; i = next++) {
        const id = `${prefix}-${i}`;
        const r = await request(`${url}/v2/models/ident/infer`, { json: identityRequest(id, (i % 100) / 100) });
        if (r.status === 200) ok.push(id);
        else other.push(r.status);
      }
    }),
  );
  return { ok, other };
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text);
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

async function until(what: string, cond: () => Promise<boolean>, ms = 30_000): Promise<void> {
  await waitFor(cond, { timeoutMs: ms, intervalMs: 50, message: what });
}

const logLines = (s: TestServer) =>
  s.logs.flatMap((l) => {
    try {
      return [JSON.parse(l) as { level: number; msg: string; [k: string]: unknown }];
    } catch {
      return [];
    }
  });

test('a full disk: answers continue, the failure is counted and reported, admin writes get 507, and the log resumes with nothing acknowledged lost', {
  skip: root ? false : 'needs root to mount a tmpfs',
}, async () => {
  const dataDir = join(mnt, 'data');
  server = await startServer(['--model-repo', repo, '--data-dir', dataDir], { SCORELINE_ADMIN_TOKEN: TOKEN });
  const s = server;
  const admin = (method: string, path: string, init: Parameters<typeof request>[1] = {}) =>
    request(`${s.url}${path}`, {
      ...init,
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(init.headers as Record<string, string> | undefined) },
    });

  const before = await load(s.url, 'before', 500);
  assert.equal(before.ok.length, 500);
  await until('the first predictions written', async () => (await metric(s.url, 'scoreline_prediction_log_backlog')) === 0);

  const filler = join(mnt, 'filler');
  fill(filler);

  // Keep scoring until the log hits the full disk (the WAL has to grow for a segment to fit).
  const during: string[] = [];
  let batch = 0;
  await until('the prediction log to report failing', async () => {
    const r = await load(s.url, `during${batch++}`, 400);
    during.push(...r.ok);
    assert.deepEqual(r.other, [], 'every request is answered while the log fails');
    return (await metric(s.url, 'scoreline_prediction_log_failing')) === 1;
  });
  const more = await load(s.url, 'held', 3000);
  assert.deepEqual(more.other, []);
  during.push(...more.ok);

  assert.equal((await request(`${s.url}/v2/health/ready`)).status, 200, 'the server stays ready');
  assert.ok((await metric(s.url, 'scoreline_prediction_log_errors_total')) >= 1);
  assert.ok((await metric(s.url, 'scoreline_prediction_log_backlog')) >= 3000, 'the failed writes are held');
  const list = await request(`${s.url}/v1/monitoring`);
  assert.equal(list.body.prediction_log.state, 'failing');
  assert.ok(list.body.prediction_log.errors >= 1);
  assert.ok(list.body.prediction_log.backlog >= 3000);
  assert.equal(list.body.prediction_log.dropped, 0);
  assert.match(list.body.prediction_log.last_error, /full|ENOSPC/i);
  const snap = await request(`${s.url}/v1/monitoring/ident`);
  assert.equal(snap.status, 200, snap.text);
  assert.equal(snap.body.prediction_log.state, 'failing');

  // Admin writes on the full disk: 507 with the reason, not 500.
  const reg = await admin('POST', '/admin/models/ident/versions', {
    body: Buffer.from(identityBytes('ident_v3')),
    headers: { 'content-type': 'application/octet-stream' },
  });
  assert.equal(reg.status, 507, reg.text);
  assert.match(reg.body.error, /no space left \(ENOSPC/);
  assert.ok(reg.body.error.includes(dataDir), reg.body.error);
  const dep = await admin('PUT', '/admin/deployments/ident', { json: { strategy: 'direct', version: 2 } });
  assert.equal(dep.status, 507, dep.text);
  assert.match(dep.body.error, /no space left/);

  // A start on the full disk: one line on stderr naming the data dir and ENOSPC.
  const fresh = join(mnt, 'fresh');
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--port', '0', '--grpc-port', '0', '--host', '127.0.0.1', '--workers', '1', '--model-repo', repo, '--data-dir', fresh],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 1, stderr);
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, stderr);
  assert.ok(lines[0]!.includes(fresh) && lines[0]!.includes('ENOSPC'), lines[0]);

  // The disk has room again: the held predictions are written without a restart.
  unlinkSync(filler);
  await until('the log to write again', async () => {
    const st = (await request(`${s.url}/v1/monitoring`)).body.prediction_log;
    return st.state === 'ok' && st.backlog === 0;
  });
  const afterwards = await load(s.url, 'after', 500);
  assert.equal(afterwards.ok.length, 500);

  const errors = logLines(s).filter((l) => l.level === 50 && l.msg.startsWith('prediction log: cannot write'));
  assert.equal(
    errors.length,
    1,
    `one error line for the episode, not one per attempt (${(await request(`${s.url}/v1/monitoring`)).body.prediction_log.errors} attempts)`,
  );
  assert.equal(logLines(s).filter((l) => l.msg.startsWith('prediction log: writing again')).length, 1);

  const acknowledged = [...before.ok, ...during, ...afterwards.ok];
  let joined = 0;
  let unknown = 0;
  for (let i = 0; i < acknowledged.length; i += 10_000) {
    const fb = await request(`${s.url}/v1/feedback`, {
      json: acknowledged.slice(i, i + 10_000).map((id, k) => ({ request_id: id, label: k % 2 })),
    });
    assert.equal(fb.status, 200, fb.text);
    joined += fb.body.joined;
    unknown += fb.body.unknown;
  }
  const dropped = await metric(s.url, 'scoreline_predictions_dropped_total');
  assert.ok(unknown <= dropped, `${unknown} acknowledged predictions missing, ${dropped} counted as dropped`);
  assert.equal(joined, acknowledged.length, 'every acknowledged prediction joins its label');
});
