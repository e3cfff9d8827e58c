// ONNX external data against a real server: a model whose tensor data lives in another file (next
// to it, or named to be found in the server's working directory, where `npm start` keeps
// data/admin-token) is refused at registration over HTTP and through the CLI with 422 and the
// reason, leaving nothing registered; a model repository holding one stops the start with the
// reason, and so does a registry that stored one before the check existed; a normal model still
// registers and serves.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import { ModelRegistry } from '../../src/registry/store.js';
import { writeExternalInitializerModel, writeSubgraphModel } from '../fixtures/external-data.js';
import { writeSumModel } from '../fixtures/models.js';
import { CLI, request, startServer, tempDir, type TestServer } from './server.js';

let dir: string;
let dataDir: string;
let server: TestServer;
let token: string;

const register = (bytes: Uint8Array, headers: Record<string, string> = {}) =>
  request(`${server.url}/admin/models/sum/versions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', ...headers },
    body: bytes,
  });

/** The error a start that must fail fails with; a server that starts anyway is stopped, then the test fails. */
async function startFails(args: string[]): Promise<string> {
  let started: TestServer;
  try {
    started = await startServer(args);
  } catch (e) {
    return (e as Error).message;
  }
  await started.stop();
  assert.fail('the server started');
}

/** Every artifact file in the data dir, for "nothing was stored". */
const artifacts = () =>
  readdirSync(join(dataDir, 'artifacts'), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => e.name)
    .sort();

before(async () => {
  dir = await tempDir();
  dataDir = join(dir, 'data');
  await writeSumModel(join(dir, 'models'), 'sum', 1);
  server = await startServer(['--model-repo', join(dir, 'models'), '--data-dir', dataDir]);
  token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
});

after(async () => {
  await server.stop();
});

test('a model with an external-data initializer is refused over HTTP with 422 and the reason; nothing is registered', async () => {
  const stored = artifacts();
  const next = writeExternalInitializerModel(join(dir, 'upload'));
  // The same model pointed at files in the server's working directory, as an attacker would.
  const cwd = [
    writeExternalInitializerModel(join(dir, 'cwd1'), 'package.json'),
    writeExternalInitializerModel(join(dir, 'cwd2'), 'data/admin-token'),
  ];
  for (const m of [next, ...cwd]) {
    const r = await register(m.bytes);
    assert.equal(r.status, 422, r.text);
    assert.match(r.body.error, /keeps the data of tensor 'w' \(initializer of the main graph\) at '[^']+' in a file outside the model/);
    assert.match(r.body.error, /external data is not accepted/);
    assert.match(r.body.error, /onnx\.save_model\(model, path, save_as_external_data=False\)/);
    assert.match(r.body.error, /convert_model_from_external_data/);
  }
  const declared = await register(next.bytes, { 'x-scoreline-source': next.modelPath });
  assert.equal(declared.status, 422);
  assert.ok(
    declared.body.error.startsWith(`'${next.modelPath}' (as its sender names it) keeps the data of tensor 'w'`),
    declared.body.error,
  );

  const show = await request(`${server.url}/admin/models/sum`, { headers: { authorization: `Bearer ${token}` } });
  assert.deepEqual(
    show.body.versions.map((v: { version: number }) => v.version),
    [1],
  );
  assert.deepEqual(artifacts(), stored, 'no artifact written');
});

test('a model whose external data sits in an If subgraph is refused too', async () => {
  const m = writeSubgraphModel(join(dir, 'subgraph'), 'package.json');
  const r = await register(m.bytes);
  assert.equal(r.status, 422, r.text);
  assert.match(
    r.body.error,
    /tensor 'w_then' \(initializer of graph 'then' in attribute 'then_branch' of node 'choose' \(If\) of the main graph\) at 'package\.json'/,
  );
  const show = await request(`${server.url}/admin/models/sum`, { headers: { authorization: `Bearer ${token}` } });
  assert.deepEqual(
    show.body.versions.map((v: { version: number }) => v.version),
    [1],
  );
});

test('`scoreline models register` reports the refusal and fails; a normal model still registers and serves', async () => {
  const m = writeExternalInitializerModel(join(dir, 'cli'));
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, ...args, '--url', server.url, '--token', token], { encoding: 'utf8' });
  const refused = cli('models', 'register', 'sum', m.modelPath);
  assert.equal(refused.status, 1, refused.stdout);
  assert.match(refused.stderr, /422 .*keeps the data of tensor 'w'.*external data is not accepted/);

  const ok = await writeSumModel(join(dir, 'fine'), 'sum', 3);
  const registered = cli('models', 'register', 'sum', ok.modelPath, '--json');
  assert.equal(registered.status, 0, registered.stderr);
  assert.equal(JSON.parse(registered.stdout).version, 2);
  const deployed = cli('deploy', 'sum', '--strategy', 'direct', '--version', '2');
  assert.equal(deployed.status, 0, deployed.stderr);
  const r = await request(`${server.url}/v2/models/sum/versions/2/infer`, { json: { inputs: ok.example.inputs } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body.outputs[0].data, ok.example.outputs[0]!.data);
});

test('a model repository with an external-data version stops the start with the reason', async () => {
  const repo = join(dir, 'bad-repo');
  await writeSumModel(repo, 'sum', 1);
  writeExternalInitializerModel(join(repo, 'sum', '2'));
  writeSubgraphModel(join(repo, 'sum', '3'));
  const data = join(dir, 'bad-repo-data');
  const message = await startFails(['--model-repo', repo, '--data-dir', data]);
  assert.match(message, /server exited with 1 before listening/);
  assert.match(
    message,
    /the model repository has versions the registry refuses: sum\/2: .*keeps the data of tensor 'w' .*external data is not accepted/,
  );
  assert.match(message, /sum\/3: .*tensor 'w_then' \(initializer of graph 'then'/);
  const reg = ModelRegistry.open(data);
  try {
    assert.deepEqual(
      reg.listVersions('sum').map((v) => v.version),
      [1],
    );
  } finally {
    reg.close();
  }
});

test('a registry that stored such a model before the check existed does not load it: the start stops with the reason', async () => {
  const repo = join(dir, 'old-repo');
  const data = join(dir, 'old-data');
  await writeSumModel(repo, 'sum', 1);
  const m = writeSubgraphModel(join(repo, 'sum', '2'), 'package.json');
  // What an older scoreline left behind: the artifact and its version row, imported without a look inside.
  const reg = ModelRegistry.open(data);
  const stored = reg.artifacts.put(m.bytes);
  reg.register('sum', readFileSync(join(repo, 'sum', '1', 'model.onnx')), { version: 1, source: join(repo, 'sum', '1', 'model.onnx') });
  reg.close();
  const db = new Database(join(data, 'registry.db'));
  db.prepare(`INSERT INTO versions (model, version, sha256, size, created_at, signature) SELECT model, 2, ?, ?, created_at, signature
    FROM versions WHERE model = 'sum' AND version = 1`).run(stored.sha256, stored.size);
  db.close();
  const message = await startFails(['--model-repo', repo, '--data-dir', data]);
  assert.match(message, /server exited with 1 before listening/);
  assert.match(message, /version 2 of model 'sum' keeps the data of tensor 'w_then'.*external data is not accepted/);
});
