// MLflow models and Triton's model control on a real server with a temp repository polled every
// second: an MLflow version folder serves with its signature's column names as features; a tar.gz
// upload registers one (a bad archive registers nothing); the repository index lists versions with
// Triton's states; new version folders are picked up without a restart while changed bytes under a
// registered version are refused and logged once; unload stops serving and keeps polling away
// until load; a model with a deployment is not unloaded until the deployment is removed.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { MLFLOW_FEATURES, mlflowArchive, tarball, writeMlflowFolder, mlflowFiles } from '../fixtures/mlflow.js';
import { sumExpected, writeSumModel } from '../fixtures/models.js';
import { request, startServer, tempDir, type TestServer } from './server.js';

let server: TestServer;
let repo: string;
let token: string;

const admin = (path: string, init: RequestInit & { json?: unknown } = {}) =>
  request(`${server.url}${path}`, {
    method: 'POST',
    ...init,
    headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string> | undefined) },
  });
const ROW = [1, 2, 3, 4];
const sumOf = async (model: string, version?: number) => {
  const r = await request(`${server.url}/v2/models/${model}${version === undefined ? '' : `/versions/${version}`}/infer`, {
    json: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: ROW }] },
  });
  return r.status === 200 ? (r.body.outputs[0].data[0] as number) : r.status;
};

/** Waits for a condition with a deadline (the poll runs every second). */
async function until(what: string, check: () => Promise<boolean> | boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}\n${server.logs.slice(-30).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const ready = async (model: string, version: number) =>
  (await request(`${server.url}/v2/models/${model}/versions/${version}/ready`)).status === 200;
const logged = (msg: string, model: string) =>
  server.logs.filter((l) => l.includes(`"msg":"${msg}`) && l.includes(`"model":"${model}"`)).length;

before(async () => {
  const dir = await tempDir('scoreline-model-control-');
  repo = join(dir, 'models');
  writeMlflowFolder(join(repo, 'credit', '1'), { graph: 'c1' });
  await writeSumModel(repo, 'plain', 1);
  await writeSumModel(repo, 'frozen', 1);
  const dataDir = join(dir, 'data');
  server = await startServer(['--model-repo', repo, '--data-dir', dataDir, '--repository-poll', '1']);
  token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
});

after(async () => {
  await server.stop();
});

test('an MLflow version folder serves with its signature columns as features; MLmodel is the version lineage', async () => {
  const r = await request(`${server.url}/v1/models/credit:predict`, {
    json: { instances: [{ age: 41, income: 52000, utilization: 0.3 }] },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.predictions.length, 1);
  const unknown = await request(`${server.url}/v1/models/credit:predict`, { json: { instances: [{ age: 41, income: 52000, util: 0.3 }] } });
  assert.equal(unknown.status, 400);
  assert.match(unknown.body.error, /instance 0 is missing feature 'utilization'/);
  const show = await request(`${server.url}/admin/models/credit`, { headers: { authorization: `Bearer ${token}` } });
  const v1 = show.body.versions[0];
  assert.deepEqual(v1.config.features, MLFLOW_FEATURES);
  assert.equal(v1.lineage.mlflow.run_id, 'a1b2c3d4e5f60718293a4b5c6d7e8f90');
  assert.deepEqual(v1.lineage.mlflow.input_example.value.columns, MLFLOW_FEATURES);
});

test('a tar.gz of an MLflow folder registers over the admin API; a bad archive or content type registers nothing', async () => {
  const upload = (body: Uint8Array, type = 'application/gzip') =>
    admin('/admin/models/uploaded/versions', { headers: { 'content-type': type }, body });
  const link = await upload(
    tarball([...[...mlflowFiles()].map(([path, data]) => ({ path, data })), { path: 'x', type: '2', link: '/etc/passwd' }]),
  );
  assert.equal(link.status, 400, link.text);
  assert.match(link.body.error, /entry 'x' is a link/);
  const pickled = await upload(mlflowArchive({ flavors: { sklearn: { pickled_model: 'model.pkl' } } }));
  assert.equal(pickled.status, 422);
  assert.match(pickled.body.error, /whose model is a Python pickle; it is refused because loading a pickle executes arbitrary code/);
  assert.equal((await upload(mlflowArchive(), 'text/plain')).status, 415);
  assert.equal(
    (await request(`${server.url}/admin/models/uploaded`, { headers: { authorization: `Bearer ${token}` } })).status,
    404,
    'nothing registered',
  );

  const ok = await upload(mlflowArchive({ graph: 'uploaded', runId: 'feedface' }), 'application/x-tar+gzip');
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.body.version, 1);
  assert.deepEqual(ok.body.features, MLFLOW_FEATURES);
  // Registered, not loaded: model control loads a registry-only model's latest version.
  const load = await admin('/v2/repository/models/uploaded/load');
  assert.equal(load.status, 200, load.text);
  assert.deepEqual(load.body.versions, [1]);
  const p = await request(`${server.url}/v1/models/uploaded:predict`, { json: { instances: [{ age: 30, income: 1, utilization: 0.5 }] } });
  assert.equal(p.status, 200, p.text);
});

test("the repository index answers in Triton's shape, behind the admin token", async () => {
  assert.equal((await request(`${server.url}/v2/repository/index`, { method: 'POST' })).status, 401);
  const r = await admin('/v2/repository/index');
  assert.equal(r.status, 200, r.text);
  const names = r.body.map((e: { name: string; version: string }) => `${e.name}/${e.version}`);
  for (const n of ['credit/1', 'frozen/1', 'plain/1', 'uploaded/1']) assert.ok(names.includes(n), `${n} in ${names}`);
  for (const e of r.body) assert.deepEqual(Object.keys(e), ['name', 'version', 'state', 'reason']);
  assert.deepEqual(
    r.body.find((e: { name: string }) => e.name === 'plain'),
    { name: 'plain', version: '1', state: 'READY', reason: '' },
  );
  const onlyReady = await admin('/v2/repository/index', { json: { ready: true } });
  assert.ok(onlyReady.body.every((e: { state: string }) => e.state === 'READY'));
  assert.equal((await admin('/v2/repository/index', { json: { ready: 'yes' } })).status, 400);
});

test('polling picks up a new version folder without a restart; changed bytes under a registered version are refused, logged once, never served', async () => {
  writeMlflowFolder(join(repo, 'credit', '2'), { graph: 'c2' });
  const changed = await writeSumModel(join(repo, '..', 'scratch'), 'frozen', 5);
  writeFileSync(join(repo, 'frozen', '1', 'model.onnx'), changed.bytes);
  await until('credit v2 picked up', () => ready('credit', 2));
  await until('the frozen refusal logged', () => logged('model repository version refused', 'frozen') > 0);
  // Another new folder, picked up by a later poll: by then frozen/1 has been seen again.
  writeMlflowFolder(join(repo, 'credit', '3'), { graph: 'c3' });
  await until('credit v3 picked up', () => ready('credit', 3));
  assert.equal(logged('model repository version refused', 'frozen'), 1, 'logged once, not at every poll');
  assert.equal(await sumOf('frozen'), sumExpected([ROW], 1)[0], 'the registered bytes still answer');
  const index = await admin('/v2/repository/index');
  assert.deepEqual(index.body.find((e: { name: string }) => e.name === 'frozen').state, 'READY');
});

test('unload stops serving and keeps polling away; load brings every version back; Triton load parameters', async () => {
  const u = await admin('/v2/repository/models/plain/unload', { json: { parameters: { unload_dependents: false } } });
  assert.equal(u.status, 200, u.text);
  assert.deepEqual(u.body, { name: 'plain', versions: [1] });
  assert.equal(await sumOf('plain'), 404);
  const index = await admin('/v2/repository/index');
  assert.deepEqual(
    index.body.find((e: { name: string }) => e.name === 'plain'),
    { name: 'plain', version: '1', state: 'UNAVAILABLE', reason: 'unloaded' },
  );

  // A new folder of the unloaded model, then one of another model: once that one is loaded, a poll
  // has seen plain/2 too, and left it alone.
  await writeSumModel(repo, 'plain', 2);
  writeMlflowFolder(join(repo, 'credit', '4'), { graph: 'c4' });
  await until('credit v4 picked up', () => ready('credit', 4));
  assert.equal((await request(`${server.url}/v2/models/plain/versions/2/ready`)).status, 404);

  const files = await admin('/v2/repository/models/plain/load', { json: { parameters: { 'file:1/model.onnx': 'AAAA' } } });
  assert.equal(files.status, 400);
  assert.match(files.body.error, /model files cannot be uploaded through load/);
  const l = await admin('/v2/repository/models/plain/load', { json: { parameters: { config: '{"max_batch_size": 8}' } } });
  assert.equal(l.status, 200, l.text);
  assert.deepEqual(l.body, { name: 'plain', versions: [1, 2], ignored_parameters: ['config'] });
  assert.equal(await sumOf('plain', 1), sumExpected([ROW], 1)[0]);
  assert.equal(await sumOf('plain'), sumExpected([ROW], 2)[0]);
  assert.equal((await admin('/v2/repository/models/nope/load')).status, 404);
  assert.equal((await admin('/v2/repository/models/nope/unload')).status, 404);
  assert.equal((await request(`${server.url}/v2/repository/models/plain/unload`, { method: 'POST' })).status, 401);
});

test('a model with a deployment is not unloaded (409) until the deployment is removed', async () => {
  const put = await request(`${server.url}/admin/deployments/plain`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${token}` },
    json: { strategy: 'direct', version: 1 },
  });
  assert.equal(put.status, 200, put.text);
  const refused = await admin('/v2/repository/models/plain/unload');
  assert.equal(refused.status, 409);
  assert.match(
    refused.body.error,
    /model 'plain' has a deployment \(direct, routing to version 1\).*Remove the deployment first \(DELETE \/admin\/deployments\/plain\)/,
  );
  assert.equal(await sumOf('plain'), sumExpected([ROW], 1)[0], 'still served as deployed');

  assert.equal((await request(`${server.url}/admin/deployments/plain`, { method: 'DELETE' })).status, 401);
  const del = await request(`${server.url}/admin/deployments/plain?reason=decommission`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(del.status, 200, del.text);
  assert.equal(del.body.strategy, null);
  assert.deepEqual(del.body.history.at(-1), {
    at: del.body.history.at(-1).at,
    action: 'remove',
    reason: 'decommission',
    from: { strategy: 'direct', version: 1 },
    to: null,
  });
  assert.equal(await sumOf('plain'), sumExpected([ROW], 2)[0], 'back to the highest version');
  assert.equal(
    (await request(`${server.url}/admin/deployments/plain`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } })).status,
    409,
  );
  const u = await admin('/v2/repository/models/plain/unload');
  assert.equal(u.status, 200, u.text);
  assert.deepEqual(u.body.versions, [1, 2]);
});
