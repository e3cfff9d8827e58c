// Configuration, model repository scanning and the CLI's handling of bad usage: every error names
// what failed and where.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { defaultConfig, parseModelConfig, resolveConfig } from '../src/config.js';
import { storeUrl } from '../src/store/index.js';
import { scanRepository } from '../src/registry/repository.js';
import { writeSumModel } from './fixtures/models.js';
import { CLI, ROOT, tempDir } from './e2e/server.js';

test('defaults, and a partial config merged over them', () => {
  const c = resolveConfig({ server: { port: 9000 }, batching: { maxBatchSize: 8 } });
  assert.equal(c.server.port, 9000);
  assert.equal(c.server.host, defaultConfig().server.host);
  assert.equal(c.batching.maxBatchSize, 8);
  assert.equal(c.batching.maxQueueDelayMicros, 200);
  assert.ok(c.inference.workers >= 1);
  // One minimum changed, the others keep their defaults.
  const m = resolveConfig({ monitoring: { minSamples: { auc: { perClass: 50 } } } }).monitoring.minSamples;
  assert.deepEqual(m, { psi: 300, auc: { labelled: 1000, perClass: 50 }, accuracy: { labelled: 400, perClass: 100 }, regression: 200 });
  assert.deepEqual(defaultConfig().monitoring.minSamples.auc, { labelled: 1000, perClass: 200 }, 'the defaults are not changed by a merge');
});

test('config errors name the failing path', () => {
  const cases: [unknown, RegExp][] = [
    [{ server: { port: 70000 } }, /server\.port: must be <= 65535/],
    [{ server: { port: 'http' } }, /server\.port: must be integer/],
    [{ inference: { workers: -1 } }, /inference\.workers: must be >= 0/],
    [{ batching: { maxBatchSize: 0 } }, /batching\.maxBatchSize: must be >= 1/],
    [{ log: { level: 'loud' } }, /log\.level: must be one of fatal, error/],
    [{ sever: {} }, /\(root\): unknown property 'sever'/],
    [{ websocket: { maxPayloadBytes: 10 } }, /websocket\.maxPayloadBytes: must be >= 1024/],
    [{ monitoring: { minSamples: { psi: 0 } } }, /monitoring\.minSamples\.psi: must be >= 1/],
    [{ monitoring: { minSamples: { auc: { perclass: 30 } } } }, /monitoring\.minSamples\.auc: unknown property 'perclass'/],
    [{ monitoring: { minSamples: { regression: 2.5 } } }, /monitoring\.minSamples\.regression: must be integer/],
  ];
  for (const [value, message] of cases) assert.throws(() => resolveConfig(value, 'test.yaml'), message);
});

test('the prediction log keys: flushMs defaults to 100 and durability to async; bad values name the path', () => {
  assert.deepEqual(defaultConfig().monitoring.predictionLog, { sampleRate: 1, retentionDays: 30, flushMs: 100, durability: 'async' });
  const c = resolveConfig({ monitoring: { predictionLog: { durability: 'sync', flushMs: 20 } } });
  assert.deepEqual(c.monitoring.predictionLog, { sampleRate: 1, retentionDays: 30, flushMs: 20, durability: 'sync' });
  assert.throws(
    () => resolveConfig({ monitoring: { predictionLog: { durability: 'fsync' } } }, 'test.yaml'),
    /monitoring\.predictionLog\.durability: must be one of async, sync \(got 'fsync'\)/,
  );
  assert.throws(
    () => resolveConfig({ monitoring: { predictionLog: { flushMs: 0 } } }, 'test.yaml'),
    /monitoring\.predictionLog\.flushMs: must be >= 1/,
  );
});

test('the store keys: SQLite unless a postgres URL is configured or in SCORELINE_STORE_URL; a lease must outlast two heartbeats', () => {
  assert.deepEqual(defaultConfig().store, {
    url: null,
    address: null,
    heartbeatSeconds: 2,
    shareSeconds: 1,
    leaseSeconds: 8,
    resyncSeconds: 5,
  });
  assert.equal(storeUrl(null, {}), null);
  assert.equal(storeUrl(null, { SCORELINE_STORE_URL: '' }), null);
  assert.equal(storeUrl(null, { SCORELINE_STORE_URL: 'postgres://h/db' }), 'postgres://h/db');
  assert.equal(storeUrl('postgresql://c/db', { SCORELINE_STORE_URL: 'postgres://h/db' }), 'postgresql://c/db', 'the config wins');
  assert.equal(resolveConfig({ store: { url: 'postgres://u@db:5432/s' } }).store.url, 'postgres://u@db:5432/s');
  assert.throws(() => resolveConfig({ store: { url: 'mysql://db/s' } }), /store\.url: must match pattern/);
  assert.throws(
    () => resolveConfig({ store: { leaseSeconds: 3 } }),
    /store\.leaseSeconds \(3\) must be at least twice store\.heartbeatSeconds \(2\)/,
  );
  assert.throws(() => resolveConfig({ store: { replicas: 3 } }), /store: unknown property 'replicas'/);
});

test('model.yaml is validated with the file and the path in the error', () => {
  assert.deepEqual(parseModelConfig('features: [a, b]\nbatching: { maxBatchSize: 4 }\n', 'm/model.yaml'), {
    features: ['a', 'b'],
    batching: { maxBatchSize: 4 },
  });
  assert.throws(() => parseModelConfig('features: a\n', 'm/model.yaml'), /m\/model\.yaml is invalid: features: must be array/);
  assert.throws(() => parseModelConfig('batching: { maxBatchSize: -2 }\n', 'm/model.yaml'), /batching\.maxBatchSize: must be >= 1/);
  assert.throws(() => parseModelConfig('features: [a, a]\n', 'm/model.yaml'), /features: must NOT have duplicate items/);
  assert.throws(() => parseModelConfig('thresold: 0.5\n', 'm/model.yaml'), /unknown property 'thresold'/);
  assert.throws(() => parseModelConfig('features: [a\n', 'm/model.yaml'), /m\/model\.yaml: cannot parse/);
  // a bad retraining section fails the model's load, naming the field
  assert.throws(
    () => parseModelConfig('label: y\nretraining: { useFeedback: true, oot: { fraction: 2 } }\n', 'm/model.yaml'),
    /m\/model\.yaml: retraining\.oot\.fraction/,
  );
  assert.equal(parseModelConfig('label: y\nretraining: { useFeedback: true }\n', 'm/model.yaml').retraining?.useFeedback, true);
});

test('repository scan: Triton layout, versions sorted, odd entries skipped with a reason', async () => {
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 2);
  await writeSumModel(repo, 'sum', 10);
  await mkdir(join(repo, 'sum', 'latest'));
  await mkdir(join(repo, 'empty', '1'), { recursive: true });
  await mkdir(join(repo, 'bad name!'));
  await writeFile(join(repo, 'README.txt'), 'not a model');
  const scan = scanRepository(repo);
  assert.equal(scan.models.length, 1);
  assert.deepEqual(
    scan.models[0]!.versions.map((v) => v.version),
    [2, 10],
  );
  assert.match(scan.models[0]!.versions[0]!.sha256, /^[0-9a-f]{64}$/);
  assert.ok(scan.skipped.some((s) => s.startsWith('sum/latest: version folders are positive integers')));
  assert.ok(scan.skipped.some((s) => s.startsWith('empty: no version folder')));
  assert.ok(scan.skipped.some((s) => s.startsWith('bad name!: not a valid model name')));
  assert.throws(() => scanRepository(join(repo, 'missing')), /does not exist/);
});

test('repository.poll: off by default, seconds from 1 up, anything else names the path', () => {
  assert.equal(resolveConfig({}).repository.poll, 0);
  assert.equal(resolveConfig({ repository: { poll: 5 } }).repository.poll, 5);
  for (const poll of [0.5, -1, 'often', 100_000]) assert.throws(() => resolveConfig({ repository: { poll } }), /repository\.poll: must/);
  assert.throws(() => resolveConfig({ repository: { every: 5 } }), /repository: unknown property 'every'/);
});

test('the hash cache of a repository scan re-hashes only files whose size or time changed', async () => {
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 1);
  const cache = new Map<string, { size: number; mtimeMs: number; sha256: string }>();
  const first = scanRepository(repo, cache).models[0]!.versions[0]!;
  const path = first.path;
  // A cached entry is trusted while size and time match (shown by planting a wrong hash)...
  cache.set(path, { ...cache.get(path)!, sha256: 'f'.repeat(64) });
  assert.equal(scanRepository(repo, cache).models[0]!.versions[0]!.sha256, 'f'.repeat(64));
  // ...and dropped as soon as the file changes.
  const other = await writeSumModel(join(repo, '..', 'other'), 'sum', 7);
  await writeFile(path, other.bytes);
  assert.notEqual(scanRepository(repo, cache).models[0]!.versions[0]!.sha256, first.sha256);
});

function cli(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
}

test('CLI: help, unknown commands and bad flags', () => {
  const help = cli('--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout, /Usage: scoreline <command>/);
  assert.match(cli('serve', '--help').stdout, /--model-repo DIR/);
  const unknown = cli('frobnicate');
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown command 'frobnicate'/);
  const port = cli('serve', '--model-repo', 'examples/models', '--port', 'abc');
  assert.equal(port.status, 2);
  assert.match(port.stderr, /--port must be a non-negative integer, got 'abc'/);
  const flag = cli('serve', '--modle-repo', 'x');
  assert.equal(flag.status, 2);
  assert.match(flag.stderr, /Unknown option '--modle-repo'/);
  const none = cli('serve');
  assert.equal(none.status, 2);
  assert.match(none.stderr, /no model repository/);
  for (const c of ['retrain', 'jobs', 'incident', 'bench']) assert.match(help.stdout, new RegExp(`\\n  ${c} `), `${c} is listed`);
  assert.match(cli('bench', '--help').stdout, /http .*monitoring .*retrain/s);
  const bench = cli('bench', 'nope');
  assert.equal(bench.status, 2);
  assert.match(bench.stderr, /unknown benchmark 'nope'/);
  const retrain = cli('retrain');
  assert.equal(retrain.status, 2);
  assert.match(retrain.stderr, /retrain needs MODEL/);
  assert.match(cli('incident', 'm').stderr, /incident needs --reason/);
});

test('CLI: a bad config file or repository fails fast with exit 1 and the reason', async () => {
  const dir = await tempDir();
  const bad = join(dir, 'bad.yaml');
  await writeFile(bad, 'server:\n  port: 99999\n');
  const r = cli('serve', '--config', bad, '--model-repo', 'examples/models');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /bad\.yaml is invalid: server\.port: must be <= 65535/);
  const missing = cli('serve', '--config', join(dir, 'nope.yaml'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /cannot read config file .*nope\.yaml: ENOENT/);
  const repo = cli('serve', '--model-repo', join(dir, 'no-such-repo'), '--port', '0');
  assert.equal(repo.status, 1);
  assert.match(repo.stderr, /model repository .*no-such-repo does not exist/);
  const garbage = join(dir, 'repo', 'm', '1');
  await mkdir(garbage, { recursive: true });
  await writeFile(join(garbage, 'model.onnx'), 'this is not onnx');
  const model = cli('serve', '--model-repo', join(dir, 'repo'), '--port', '0');
  assert.equal(model.status, 1);
  assert.match(model.stderr, /is not an ONNX model/);
});
