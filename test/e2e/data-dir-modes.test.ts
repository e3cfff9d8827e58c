// The data dir is private: a real server creates it 0700 with registry.db, monitoring.db (every
// logged prediction's inputs), their -wal/-shm files, the admin token and the artifacts 0600 in
// 0700 folders; a data dir left open to group and others is tightened at the next start, with a
// warning, and files that are not scoreline's are left as they are.

import assert from 'node:assert/strict';
import { chmodSync, existsSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { prepareDataDir } from '../../src/registry/data-dir.js';
import { identityRequest, writeIdentityModel } from '../fixtures/identity.js';
import { request, startServer, tempDir } from './server.js';

const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);

/** Every path under `dir` (files and folders), depth first. */
const walk = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => [join(dir, e.name), ...(e.isDirectory() ? walk(join(dir, e.name)) : [])]);

test('a new data dir is 0700 and its databases, token and artifacts 0600; a loose one is tightened at start with a warning', async () => {
  const repo = await tempDir('scoreline-repo-');
  await writeIdentityModel(repo, 'ident');
  const dataDir = join(await tempDir('scoreline-parent-'), 'nested', 'data');
  let server = await startServer(['--model-repo', repo, '--data-dir', dataDir]);
  assert.equal((await request(`${server.url}/v2/models/ident/infer`, { json: identityRequest('m1', 0.5) })).status, 200);
  await request(`${server.url}/v1/feedback`, { json: { request_id: 'm1', label: 1 } });

  const files = [
    'registry.db',
    'registry.db-wal',
    'registry.db-shm',
    'monitoring.db',
    'monitoring.db-wal',
    'monitoring.db-shm',
    'admin-token',
  ];
  assert.equal(mode(dataDir), '700');
  assert.equal(mode(join(dataDir, '..')), '700', 'folders created on the way are private too');
  for (const f of files) {
    assert.ok(existsSync(join(dataDir, f)), `${f} exists while the server runs`);
    assert.equal(mode(join(dataDir, f)), '600', f);
  }
  const artifacts = walk(join(dataDir, 'artifacts'));
  assert.ok(
    artifacts.some((p) => p.endsWith('.onnx')),
    'the model artifact is stored',
  );
  for (const p of [join(dataDir, 'artifacts'), ...artifacts]) assert.equal(mode(p), statSync(p).isDirectory() ? '700' : '600', p);
  assert.equal(await server.stop(), 0);

  // An existing data dir with looser modes (as older versions made it), and a file that is not ours.
  chmodSync(dataDir, 0o755);
  for (const f of ['registry.db', 'monitoring.db', 'admin-token']) chmodSync(join(dataDir, f), 0o644);
  for (const p of artifacts) chmodSync(p, statSync(p).isDirectory() ? 0o755 : 0o444);
  writeFileSync(join(dataDir, 'notes.txt'), 'the operator keeps this here\n', { mode: 0o644 });
  chmodSync(join(dataDir, 'notes.txt'), 0o644);

  server = await startServer(['--model-repo', repo, '--data-dir', dataDir]);
  try {
    assert.equal(mode(dataDir), '700');
    for (const f of ['registry.db', 'monitoring.db', 'admin-token']) assert.equal(mode(join(dataDir, f)), '600', f);
    for (const p of artifacts) assert.equal(mode(p), statSync(p).isDirectory() ? '700' : '400', p);
    assert.equal(mode(join(dataDir, 'notes.txt')), '644', "files that are not scoreline's are left alone");
    const warning = server.logs
      .map((l) => JSON.parse(l))
      .find((l: { msg?: string }) => l.msg?.startsWith('the data dir was open to other users'));
    assert.ok(warning, server.logs.join('\n'));
    assert.equal(warning.level, 40);
    assert.ok(
      warning.changed.some((c: { path: string; from: string; to: string }) => c.path === dataDir && c.from === '755' && c.to === '700'),
    );
    // The predictions logged before are still there.
    const fb = await request(`${server.url}/v1/feedback`, { json: { request_id: 'm1', label: 0 } });
    assert.equal(fb.body.joined, 1);
  } finally {
    await server.stop();
  }
});

test('prepareDataDir reports nothing for a private data dir, and never follows a symlink out of it', async () => {
  const dataDir = join(await tempDir('scoreline-parent-'), 'data');
  assert.deepEqual(prepareDataDir(dataDir), { created: true, tightened: [], failed: [] });
  const outside = join(await tempDir('scoreline-outside-'), 'shared.db');
  writeFileSync(outside, '');
  chmodSync(outside, 0o644);
  symlinkSync(outside, join(dataDir, 'monitoring.db'));
  assert.deepEqual(prepareDataDir(dataDir), { created: false, tightened: [], failed: [] });
  assert.equal(mode(outside), '644');
});
