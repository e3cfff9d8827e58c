// The Dockerfile cannot be built here (no Docker engine), so its parts are checked one by one:
// glibc base image, non-root user, every COPY source exists, the CMD is a valid `serve` command
// line, and the HEALTHCHECK command, run for real against a server, tells ready from not ready.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { serveConfig } from '../src/cli.js';
import { DEMO_REPO, ROOT, startServer } from './e2e/server.js';

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const instructions = dockerfile
  .replace(/\\\n/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const all = (op: string) => instructions.filter((l) => l.startsWith(`${op} `)).map((l) => l.slice(op.length + 1).trim());

test('multi-stage on node:20-bookworm-slim, non-root, port 8080, data volume', () => {
  const froms = all('FROM');
  assert.equal(froms.length, 2);
  for (const f of froms) assert.match(f, /^node:20-bookworm-slim\b/);
  assert.deepEqual(all('USER'), ['node']);
  assert.deepEqual(all('EXPOSE'), ['8080']);
  assert.deepEqual(all('VOLUME'), ['/data']);
  assert.ok(all('RUN').includes('npm ci'), 'the image is built by the same npm ci as CI');
});

test('every COPY source exists in the repository', () => {
  for (const c of all('COPY').filter((c) => !c.startsWith('--from'))) {
    const parts = c.split(/\s+/);
    for (const src of parts.slice(0, -1)) assert.ok(existsSync(join(ROOT, src)), `COPY source ${src} is missing`);
  }
});

test('ENTRYPOINT + CMD is a valid serve command line', () => {
  const entry = JSON.parse(all('ENTRYPOINT')[0]!) as string[];
  const cmd = JSON.parse(all('CMD')[0]!) as string[];
  assert.deepEqual(entry, ['node', 'bin/scoreline.js']);
  assert.equal(cmd[0], 'serve');
  const config = serveConfig(cmd.slice(1));
  assert.ok(config);
  assert.equal(config.server.port, 8080);
  assert.equal(config.dataDir, '/data');
  assert.ok(existsSync(join(ROOT, config.modelRepository!)), 'the CMD serves the bundled demo repository');
});

test('the HEALTHCHECK command passes against a ready server and fails without one', async () => {
  const hc = /CMD (\[.*\])$/.exec(all('HEALTHCHECK')[0]!)![1]!;
  const [exe, ...args] = JSON.parse(hc) as string[];
  assert.equal(exe, 'node');
  const server = await startServer(['--model-repo', DEMO_REPO]);
  try {
    const pointed = args.map((a) => a.replace('127.0.0.1:8080', `127.0.0.1:${server.port}`));
    assert.equal(spawnSync(process.execPath, pointed, { timeout: 10_000 }).status, 0);
  } finally {
    await server.stop();
  }
  const closedPort = args.map((a) => a.replace('127.0.0.1:8080', `127.0.0.1:${server.port}`));
  assert.equal(spawnSync(process.execPath, closedPort, { timeout: 10_000 }).status, 1);
});
