// The listening socket against real servers: a second server on a taken port fails at start with
// "port P is in use" (uWS's default SO_REUSEPORT would have split the traffic); at
// limits.maxConnections new connections are refused at once and accepted again once some close;
// and a flood of idle connections at a low open-files limit does not make the server spin on accept.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { writeSumModel } from '../fixtures/models.js';
import { CLI, ROOT, startServer, tempDir, type TestServer } from './server.js';
import { elapse, waitFor } from '../fixtures/wait.js';

const servers: TestServer[] = [];
const sockets: Socket[] = [];

after(async () => {
  for (const s of sockets) s.destroy();
  for (const s of servers) await s.stop();
});

async function repo(): Promise<string> {
  const dir = await tempDir();
  await writeSumModel(dir, 'sum', 1);
  return dir;
}

/** Resolves true when a TCP connection is accepted, false when it is refused. */
function tryConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Opens n idle connections (they send nothing) and keeps them open. */
async function idle(port: number, n: number): Promise<void> {
  await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<void>((resolve) => {
          const s = connect({ host: '127.0.0.1', port });
          sockets.push(s);
          s.on('error', () => undefined);
          s.once('connect', () => resolve());
          s.once('error', () => resolve());
          s.setTimeout(3000, () => resolve());
        }),
    ),
  );
}

async function until(what: string, cond: () => Promise<boolean>, ms = 15_000): Promise<void> {
  await waitFor(cond, { timeoutMs: ms, intervalMs: 50, message: what });
}

test('a second server on a taken port fails at start with "port P is in use"', async () => {
  const dir = await repo();
  const first = await startServer(['--model-repo', dir]);
  servers.push(first);
  const second = spawnSync(
    process.execPath,
    [
      CLI,
      'serve',
      '--model-repo',
      dir,
      '--data-dir',
      await tempDir(),
      '--host',
      '127.0.0.1',
      '--port',
      String(first.port),
      '--grpc-port',
      '0',
    ],
    {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 30_000,
    },
  );
  assert.equal(second.status, 1, second.stderr);
  assert.match(second.stderr + second.stdout, new RegExp(`port ${first.port} is in use`));
  // The first still serves, alone.
  assert.equal((await fetch(`${first.url}/v2/health/ready`)).status, 200);
});

test('at limits.maxConnections new connections are refused at once, and accepted again when some close', async () => {
  const dir = await repo();
  const config = join(dir, 'server.yaml');
  writeFileSync(config, 'limits:\n  maxConnections: 40\n');
  const server = await startServer(['--model-repo', dir, '--config', config]);
  servers.push(server);
  const before = sockets.length;
  await idle(server.port, 60);
  await until('the server to refuse new connections', async () => !(await tryConnect(server.port)));
  assert.ok(server.logs.some((l) => l.includes('connection limit reached')));
  for (const s of sockets.splice(before)) s.destroy();
  await until('the server to accept again', () => tryConnect(server.port));
  const ready = await fetch(`${server.url}/v2/health/ready`);
  assert.equal(ready.status, 200);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /scoreline_connection_limit 40\b/);
  assert.match(metrics, /scoreline_connection_limit_reached_total [1-9]/);
  assert.match(metrics, /scoreline_accepting_connections 1\b/);
});

/** CPU seconds (user + system, all threads) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

test('400 idle connections at an open-files limit of 256 do not make the server spin on accept', {
  skip: process.platform !== 'linux',
}, async () => {
  const dir = await repo();
  const dataDir = await tempDir('scoreline-data-');
  // prlimit lowers the child's hard limit too, so Node cannot raise it back at start.
  const proc = spawn(
    'prlimit',
    [
      '--nofile=256:256',
      process.execPath,
      CLI,
      'serve',
      '--model-repo',
      dir,
      '--data-dir',
      dataDir,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--grpc-port',
      '0',
      '--workers',
      '1',
    ],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no start: ${out}`)), 30_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"port":(\d+).*scoreline listening/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  try {
    await idle(port, 400);
    const t0 = cpuSeconds(proc.pid!);
    // Elapsed time is the subject: the CPU the server burns over two idle seconds.
    await elapse(2000);
    const used = cpuSeconds(proc.pid!) - t0;
    // Spinning on a failing accept() costs 0.4 to 1 core; a server that stopped accepting costs next to nothing.
    assert.ok(used < 0.5, `the server used ${used.toFixed(2)} s of CPU in 2 s with 400 idle connections`);
    assert.equal(await tryConnect(port), false, 'new connections are refused while at the limit');
  } finally {
    for (const s of sockets.splice(0)) s.destroy();
    proc.kill('SIGTERM');
    await exited;
  }
});
