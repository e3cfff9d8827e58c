// A canary that has stepped up (promote, or its analysis passing a step) is a deployment whose
// percent equals one of its steps. Read back after a restart, it must be restored as it was; it
// used to be refused as "unreadable" (a new deployment's percent must be below its first step),
// and the server then served the latest version instead. Offline commands read it the same way.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeSumModel } from '../fixtures/models.js';
import { request, startServer, tempDir } from './server.js';

test('a stepped canary survives a restart, and a new one at its first step is still refused', async () => {
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 1);
  await writeSumModel(repo, 'sum', 2);
  const dataDir = await tempDir('scoreline-data-');
  let server = await startServer(['--model-repo', repo, '--data-dir', dataDir]);
  const token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  const admin = (path: string, json?: unknown) =>
    request(`${server.url}${path}`, {
      method: json === undefined ? 'GET' : path.endsWith('/promote') ? 'POST' : 'PUT',
      json,
      headers: { authorization: `Bearer ${token}` },
    });
  try {
    const refused = await admin('/admin/deployments/sum', {
      strategy: 'canary',
      stable: 1,
      canary: 2,
      percent: 50,
      steps: [50, 100],
      stepSeconds: 300,
    });
    assert.equal(refused.status, 400);
    assert.match(refused.body.error, /percent \(50\) must be below the first step \(50\)/);
    assert.equal(
      (await admin('/admin/deployments/sum', { strategy: 'canary', stable: 1, canary: 2, percent: 10, steps: [50, 100], stepSeconds: 300 }))
        .status,
      200,
    );
    const stepped = await admin('/admin/deployments/sum/promote', {});
    assert.equal(stepped.status, 200, stepped.text);
    assert.deepEqual(stepped.body.traffic, { 1: 50, 2: 50 });
  } finally {
    assert.equal(await server.stop(), 0);
  }
  server = await startServer(['--model-repo', repo, '--data-dir', dataDir]);
  try {
    const after = await admin('/admin/deployments/sum');
    assert.equal(after.status, 200);
    assert.deepEqual(after.body.strategy, { strategy: 'canary', stable: 1, canary: 2, percent: 50, steps: [50, 100], stepSeconds: 300 });
    assert.ok(!server.logs.some((l) => l.includes('persisted deployment is unreadable')), 'restored, not skipped');
  } finally {
    await server.stop();
  }
});
