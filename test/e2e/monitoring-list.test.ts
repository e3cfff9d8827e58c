// GET /v1/monitoring lists every version a model serves, with its share of traffic, and says for each
// whether drift can be computed and why not; the snapshot without ?version= is the version the
// deployment stands behind (a canary's stable), not whichever a random pick would route to.

import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { request, ROOT, startServer, tempDir, type TestServer } from './server.js';

let server: TestServer;
let token: string;

before(async () => {
  // The demo model without a reference in its model.yaml: version 1 has no drift baseline.
  const repo = await tempDir();
  const model = join(repo, 'credit-default');
  await mkdir(join(model, '1'), { recursive: true });
  await copyFile(join(ROOT, 'examples', 'models', 'credit-default', '1', 'model.onnx'), join(model, '1', 'model.onnx'));
  const yaml = (await readFile(join(ROOT, 'examples', 'models', 'credit-default', 'model.yaml'), 'utf8')).replace(/^reference: .*\n/m, '');
  await writeFile(join(model, 'model.yaml'), yaml);
  const dataDir = await tempDir('scoreline-data-');
  server = await startServer(['--model-repo', repo, '--data-dir', dataDir]);
  token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
});

after(async () => {
  await server?.stop();
});

const admin = (path: string, init: RequestInit & { json?: unknown } = {}) =>
  request(`${server.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string> | undefined) },
  });

test('every serving version is listed with its traffic, and drift is marked unavailable with the reason', async () => {
  const v2 = await admin('/admin/models/credit-default/versions', {
    method: 'POST',
    body: await readFile(join(ROOT, 'examples', 'credit-default-v2', 'model.onnx')),
    headers: { 'content-type': 'application/octet-stream' },
  });
  assert.equal(v2.status, 201, v2.text);
  assert.equal(v2.body.version, 2);
  const dep = await admin('/admin/deployments/credit-default', {
    method: 'PUT',
    json: { strategy: 'canary', stable: 1, canary: 2, percent: 50 },
  });
  assert.equal(dep.status, 200, dep.text);

  const list = await request(`${server.url}/v1/monitoring`);
  assert.equal(list.status, 200);
  const [entry] = list.body.models;
  assert.equal(entry.name, 'credit-default');
  const reason = (v: number) =>
    `no drift reference: version ${v} was registered without reference rows; freeze one with PUT /admin/models/credit-default/versions/${v}/reference (a CSV) or scoreline models register --reference`;
  assert.deepEqual(entry.versions, [
    { version: '1', state: 'ready', serving: true, primary: true, traffic_percent: 50, drift: { available: false, reason: reason(1) } },
    { version: '2', state: 'ready', serving: true, primary: false, traffic_percent: 50, drift: { available: false, reason: reason(2) } },
  ]);

  // Freezing version 2's reference makes its drift available.
  const ref = await admin('/admin/models/credit-default/versions/2/reference', {
    method: 'PUT',
    body: await readFile(join(ROOT, 'examples', 'credit-default-v2', 'recent.csv')),
    headers: { 'content-type': 'text/csv' },
  });
  assert.equal(ref.status, 200, ref.text);
  const after = (await request(`${server.url}/v1/monitoring`)).body.models[0].versions;
  assert.deepEqual(after[1].drift, { available: true });
  assert.equal(after[0].drift.available, false);
});

test("the snapshot without ?version= is the deployment's primary version, every time", async () => {
  for (let i = 0; i < 20; i++) {
    const snap = await request(`${server.url}/v1/monitoring/credit-default`);
    assert.equal(snap.status, 200, snap.text);
    assert.equal(snap.body.version, '1');
  }
  const two = await request(`${server.url}/v1/monitoring/credit-default?version=2`);
  assert.equal(two.body.version, '2');
});
