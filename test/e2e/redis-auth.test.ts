// Redis with a password (requirepass), the password read from features.redis.passwordFile as a
// mounted Kubernetes Secret would provide it: materialize and the server authenticate with it, and
// a wrong password is a degraded store and a failed materialize, never a silently unused one.

import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { redisAvailable } from './redis.js';
import { CLI, request, ROOT, startServer, tempDir } from './server.js';
import { waitFor } from '../fixtures/wait.js';

const PASSWORD = 'k8s-secret-0123456789';
let redis: ChildProcess | undefined;
let port = 0;
let dir = '';

const skip = !redisAvailable() && 'redis-server is not installed';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

before(async () => {
  if (skip) return;
  port = await freePort();
  redis = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--requirepass', PASSWORD],
    { stdio: 'ignore' },
  );
  await waitFor(
    () =>
      spawnSync('redis-cli', ['-p', String(port), '--no-auth-warning', '-a', PASSWORD, 'ping'], { encoding: 'utf8' }).stdout.trim() ===
      'PONG',
    {
      timeoutMs: 10_000,
      intervalMs: 50,
      message: 'redis-server to start',
    },
  );
  dir = await tempDir('scoreline-redis-auth-');
  writeFileSync(join(dir, 'password'), `${PASSWORD}\n`);
  writeFileSync(join(dir, 'wrong'), 'not-the-password\n');
});

after(() => {
  redis?.kill('SIGKILL');
});

function config(name: string, passwordFile: string): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    [
      `modelRepository: ${join(ROOT, 'examples', 'models')}`,
      'features:',
      `  definitions: ${join(ROOT, 'examples', 'features', 'features.yaml')}`,
      `  redis: { url: "redis://127.0.0.1:${port}", passwordFile: ${passwordFile}, timeoutMs: 500 }`,
      '',
    ].join('\n'),
  );
  return file;
}

test('materialize and serve authenticate with the password file', { skip }, async () => {
  const cfg = config('ok.yaml', 'password'); // relative to the config file
  const m = spawnSync(process.execPath, [CLI, 'features', 'materialize', '--config', cfg, '--quiet'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(m.status, 0, m.stderr);
  assert.match(m.stdout, /^materialized 10,000 entity groups from 10,000 rows/);
  const server = await startServer(['--config', cfg]);
  try {
    const ready = await request(`${server.url}/v2/health/ready`);
    assert.equal(ready.status, 200, ready.text);
    const score = await request(`${server.url}/v1/score/credit-default`, {
      json: { entity: { customer_id: 'C00042' }, context: { amount: 5200, duration_months: 24 }, debug: true },
    });
    assert.equal(score.status, 200, score.text);
    assert.equal(score.body.features['income@1'].status, 'present', JSON.stringify(score.body.features));
    const metrics = await request(`${server.url}/metrics`);
    assert.match(metrics.text, /^scoreline_feature_store_up\{store="redis"\} 1$/m);
  } finally {
    await server.stop();
  }
});

test('a wrong password fails materialize and leaves the server degraded, with the reason', { skip }, async () => {
  const cfg = config('wrong.yaml', join(dir, 'wrong'));
  const m = spawnSync(process.execPath, [CLI, 'features', 'materialize', '--config', cfg, '--quiet'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(m.status, 1);
  assert.match(m.stderr, /materialize failed/);
  const missing = spawnSync(process.execPath, [CLI, 'features', 'materialize', '--config', config('missing.yaml', 'nope'), '--quiet'], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /cannot read features\.redis\.passwordFile .*nope: ENOENT/);
  const server = await startServer(['--config', cfg]);
  try {
    const metrics = await request(`${server.url}/metrics`);
    assert.match(metrics.text, /^scoreline_feature_store_up\{store="redis"\} 0$/m);
    const ready = await request(`${server.url}/v2/health/ready`);
    assert.match(ready.text, /degraded/);
  } finally {
    await server.stop();
  }
});
