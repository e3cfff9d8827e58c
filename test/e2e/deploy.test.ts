// Registry and deployments end to end, against a real server: admin auth, registering versions
// (duplicates, pickle/joblib refused), aliases with history, every strategy's routing measured over
// thousands of requests, validation that refuses bad versions (tampered artifact, wrong signature)
// while the old version keeps serving, automatic canary rollback (errors, latency) and promotion,
// 20 switches under load without a failed request, restart restoring deployments, and the CLI.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { writeDtypesModel, writeSumModel, failingSumBytes } from '../fixtures/models.js';
import { waitFor } from '../fixtures/wait.js';
import { CLI, request, startServer, tempDir, type TestServer } from './server.js';

let dataDir: string;
let repo: string;
let config: string;
let server: TestServer;
let token: string;
/** Version numbers of the registered fixtures. */
const v: Record<string, number> = {};

/** y = k * sum(x), same signature as the `sum` fixture; `salt` changes the bytes, not the answers. */
function sumBytes(k: number, salt = ''): Uint8Array {
  const g = new GraphBuilder('sum');
  g.input('x', 'FP32', [-1, 4]);
  g.initializer('axes', 'INT64', [1], BigInt64Array.of(1n));
  g.initializer('k', 'FP32', [], Float32Array.of(k));
  g.node('ReduceSum', ['x', 'axes'], ['s'], { keepdims: 1 });
  g.node('Mul', ['s', 'k'], ['y']);
  g.output('y', 'FP32', [-1, 1]);
  return g.toModelBytes({ docString: `sum x${k} ${salt}` });
}

/** Same signature and answers as sum x1, but slow (a chain of 256x256 MatMuls). */
function slowBytes(layers: number): Uint8Array {
  const g = new GraphBuilder('sum');
  g.input('x', 'FP32', [-1, 4]);
  g.initializer('up', 'FP32', [4, 256], new Float32Array(4 * 256).fill(1 / 256));
  g.initializer('w', 'FP32', [256, 256], new Float32Array(256 * 256).fill(1 / 256));
  g.initializer('down', 'FP32', [256, 1], new Float32Array(256).fill(1));
  g.node('MatMul', ['x', 'up'], ['h0']);
  for (let i = 0; i < layers; i++) g.node('MatMul', [`h${i}`, 'w'], [`h${i + 1}`]);
  g.node('MatMul', [`h${layers}`, 'down'], ['y']);
  g.output('y', 'FP32', [-1, 1]);
  return g.toModelBytes();
}

const admin = (method: string, path: string, init: { json?: unknown; bytes?: Uint8Array; auth?: string | null } = {}) => {
  const headers: Record<string, string> = {};
  if (init.auth !== null) headers.authorization = `Bearer ${init.auth ?? token}`;
  if (init.bytes) headers['content-type'] = 'application/octet-stream';
  return request(`${server.url}${path}`, {
    method,
    headers,
    ...(init.json !== undefined ? { json: init.json } : {}),
    ...(init.bytes ? { body: init.bytes } : {}),
  });
};

async function register(bytes: Uint8Array): Promise<number> {
  const r = await admin('POST', '/admin/models/sum/versions', { bytes });
  assert.ok(r.status === 201 || r.status === 200, r.text);
  return r.body.version;
}

const infer = (x = [1, 2, 3, 4], headers: Record<string, string> = {}) =>
  request(`${server.url}/v2/models/sum/infer`, { headers, json: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: x }] } });

async function deployment(spec: unknown) {
  const r = await admin('PUT', '/admin/deployments/sum', { json: spec });
  assert.equal(r.status, 200, r.text);
  return r.body;
}

before(async () => {
  const dir = await tempDir();
  dataDir = join(dir, 'data');
  repo = join(dir, 'models');
  await writeSumModel(repo, 'sum', 1, { modelYaml: { batching: { maxBatchSize: 32 } } });
  config = join(dir, 'server.yaml');
  writeFileSync(config, stringify({ deploy: { analysisTickMs: 100, latencyBudgetMicros: 2_000_000, analysis: { minRequests: 20 } } }));
  server = await startServer(['--model-repo', repo, '--data-dir', dataDir, '--config', config]);
  token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
});

after(async () => {
  await server.stop();
});

test('the admin token: generated with mode 0600, 401 without it, 403 with a wrong one', async () => {
  assert.equal(statSync(join(dataDir, 'admin-token')).mode & 0o777, 0o600);
  const none = await admin('GET', '/admin/models', { auth: null });
  assert.equal(none.status, 401);
  const wrong = await admin('GET', '/admin/models', { auth: 'not-the-token' });
  assert.equal(wrong.status, 403);
  const ok = await admin('GET', '/admin/models');
  assert.equal(ok.status, 200);
  assert.deepEqual(
    ok.body.models.map((m: any) => m.name),
    ['sum'],
  );
});

test('registering versions: new bytes 201, the same bytes 200 with the same version, unsafe formats refused', async () => {
  const first = await admin('POST', '/admin/models/sum/versions', { bytes: sumBytes(2) });
  assert.equal(first.status, 201, first.text);
  assert.equal(first.body.version, 2);
  assert.match(first.body.sha256, /^[0-9a-f]{64}$/);
  const again = await admin('POST', '/admin/models/sum/versions', { bytes: sumBytes(2) });
  assert.equal(again.status, 200);
  assert.deepEqual(again.body, first.body);
  v.x2 = 2;
  v.x3 = await register(sumBytes(3));
  v.x1copy = await register(sumBytes(1, 'copy'));
  v.failing = await register(failingSumBytes());
  // ~20 ms per row: far over stable's p99 x 1.5 + 5 ms whatever the machine is doing.
  v.slow = await register(slowBytes(6000));
  const pickle = Buffer.concat([Buffer.from([0x80, 0x04, 0x95, 0x05, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('K\x01.', 'latin1')]);
  const p = await admin('POST', '/admin/models/sum/versions', { bytes: pickle });
  assert.equal(p.status, 422);
  assert.match(p.body.error, /pickle/i);
  assert.match(p.body.error, /arbitrary code/);
  assert.match(p.body.error, /skl2onnx/);
  const joblib = await admin('POST', '/admin/models/sum/versions', { bytes: deflateSync(pickle) });
  assert.equal(joblib.status, 422);
  assert.match(joblib.body.error, /joblib/i);
  const junk = await admin('POST', '/admin/models/sum/versions', { bytes: Buffer.from('definitely not a model') });
  assert.equal(junk.status, 422);
  const list = (await admin('GET', '/admin/models/sum')).body;
  assert.deepEqual(
    list.versions.map((x: any) => x.version),
    [1, 2, 3, 4, 5, 6],
  );
});

test('aliases move with a history of from/to', async () => {
  assert.equal((await admin('PUT', '/admin/models/sum/aliases/champion', { json: { version: 1 } })).status, 200);
  const moved = await admin('PUT', '/admin/models/sum/aliases/champion', { json: { version: v.x2, reason: 'better AUC' } });
  assert.deepEqual([moved.body.event.from, moved.body.event.to], [1, v.x2]);
  const h = (await admin('GET', '/admin/models/sum/aliases/champion')).body;
  assert.equal(h.version, v.x2);
  assert.deepEqual(
    h.history.map((e: any) => [e.from, e.to, e.reason]),
    [
      [null, 1, 'set by the admin API'],
      [1, v.x2, 'better AUC'],
    ],
  );
  assert.equal((await admin('PUT', '/admin/models/sum/aliases/champion', { json: { version: 99 } })).status, 404);
});

test('direct: every request without a version goes to it; explicit versions still answer', async () => {
  await deployment({ strategy: 'direct', version: v.x2 });
  for (let i = 0; i < 20; i++) {
    const r = await infer();
    assert.equal(r.body.model_version, String(v.x2));
    assert.deepEqual(r.body.outputs[0].data, [20]);
  }
  const explicit = await request(`${server.url}/v2/models/sum/versions/1/infer`, {
    json: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] },
  });
  assert.deepEqual([explicit.body.model_version, explicit.body.outputs[0].data], ['1', [10]]);
});

test('canary at 20%: the share over 3,000 requests is within 4 standard deviations', async () => {
  await deployment({ strategy: 'canary', stable: 1, canary: v.x3, percent: 20 });
  const n = 3000;
  let canary = 0;
  for (let i = 0; i < n; i += 50) {
    const rs = await Promise.all(Array.from({ length: 50 }, () => infer()));
    for (const r of rs) {
      assert.equal(r.status, 200);
      if (r.body.model_version === String(v.x3)) {
        canary++;
        assert.deepEqual(r.body.outputs[0].data, [30]);
      } else assert.deepEqual(r.body.outputs[0].data, [10]);
    }
  }
  const sd = Math.sqrt(n * 0.2 * 0.8);
  const view = (await admin('GET', '/admin/deployments/sum')).body;
  assert.ok(Math.abs(canary - n * 0.2) < 4 * sd, `canary got ${canary} of ${n}; deployment: ${JSON.stringify(view.history.at(-1))}`);
  assert.deepEqual(view.traffic, { 1: 80, [v.x3!]: 20 });
  assert.equal(view.step_stats[v.x3!].requests + view.step_stats[1].requests, n);
});

test('A/B sticky by header: one user always sees one variant; weights hold over users', async () => {
  await deployment({
    strategy: 'ab',
    variants: [
      { name: 'a', version: 1, weight: 70 },
      { name: 'b', version: v.x2, weight: 30 },
    ],
    stickyKey: 'header:x-user-id',
  });
  const seen = new Map<string, Set<string>>();
  for (let u = 0; u < 400; u++) {
    const user = `user-${u}`;
    const rs = await Promise.all(Array.from({ length: 5 }, () => infer([1, 2, 3, 4], { 'x-user-id': user })));
    seen.set(user, new Set(rs.map((r) => r.body.model_version)));
  }
  for (const [user, versions] of seen) assert.equal(versions.size, 1, `${user} saw ${[...versions]}`);
  const onA = [...seen.values()].filter((s) => s.has('1')).length;
  assert.ok(Math.abs(onA - 280) < 4 * Math.sqrt(400 * 0.7 * 0.3), `variant a got ${onA} of 400 users`);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /scoreline_requests_total\{model="sum",version="1",variant="a",route="infer",status="2xx"\} \d+/);
  assert.match(
    metrics,
    new RegExp(`scoreline_requests_total\\{model="sum",version="${v.x2}",variant="b",route="infer",status="2xx"\\} \\d+`),
  );
});

test('blue-green: all traffic on the active slot; promote switches, rollback switches back', async () => {
  await deployment({ strategy: 'blue-green', blue: 1, green: v.x3, active: 'blue' });
  assert.equal((await infer()).body.model_version, '1');
  assert.equal((await admin('POST', '/admin/deployments/sum/promote')).status, 200);
  for (let i = 0; i < 10; i++) assert.equal((await infer()).body.model_version, String(v.x3));
  assert.equal((await admin('POST', '/admin/deployments/sum/rollback')).status, 200);
  assert.equal((await infer()).body.model_version, '1');
});

test('shadow: the primary answers every request, the shadow is compared off the response path', async () => {
  await deployment({ strategy: 'shadow', primary: 1, shadow: v.x2 });
  for (let i = 0; i < 40; i++) {
    const r = await infer([i, 0, 0, 0]);
    assert.equal(r.body.model_version, '1');
    assert.deepEqual(r.body.outputs[0].data, [i]);
  }
  // The shadow is scored off the response path: its comparisons land after the answers.
  const shadowStats = async () => (await admin('GET', '/admin/deployments/sum')).body.shadow;
  let s = await shadowStats();
  await waitFor(
    async () => {
      s = await shadowStats();
      return s.pairs >= 40;
    },
    { message: () => `40 shadow comparisons: ${JSON.stringify(s)}` },
  );
  assert.equal(s.pairs, 40);
  // shadow = 2 x primary, so the mean absolute difference is the mean of i over 0..39
  assert.ok(Math.abs(s.mean_abs_diff - 19.5) < 1e-6, JSON.stringify(s));
  assert.equal(s.shadow_errors, 0);
  // a shadow that fails never shows
  await deployment({ strategy: 'shadow', primary: 1, shadow: v.failing });
  for (let i = 1; i < 20; i++) assert.equal((await infer([1000 + i, 0, 0, 0])).status, 200);
  await waitFor(
    async () => {
      s = await shadowStats();
      return s.shadow_errors >= 19;
    },
    { message: () => `19 shadow errors: ${JSON.stringify(s)}` },
  );
  assert.equal(s.shadow_errors, 19);
});

test('validation refuses a version that does not fit, and nothing moves', async () => {
  await deployment({ strategy: 'direct', version: 1 });
  const other = await tempDir();
  const dt = await writeDtypesModel(other, 'dtypes');
  const wrong = await register(readFileSync(dt.modelPath));
  const r = await admin('PUT', '/admin/deployments/sum', { json: { strategy: 'direct', version: wrong } });
  assert.equal(r.status, 422);
  assert.match(r.body.error, /does not fit the deployment's input contract: 5 inputs, the contract has 1/);
  assert.equal((await infer()).body.model_version, '1');
  const bad = await admin('PUT', '/admin/deployments/sum', { json: { strategy: 'canary', stable: 1, canary: 2, percent: 150 } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error, /percent must be a number from 0 to 100/);
  assert.equal((await admin('PUT', '/admin/deployments/sum', { json: { strategy: 'direct', version: 77 } })).status, 404);
});

test('a tampered artifact is refused, logged and counted; the serving version keeps serving', async () => {
  const tampered = await register(sumBytes(5));
  const sha = (await admin('GET', '/admin/models/sum')).body.versions.find((x: any) => x.version === tampered).sha256 as string;
  const file = join(dataDir, 'artifacts', sha.slice(0, 2), `${sha}.onnx`);
  const bytes = readFileSync(file);
  bytes[bytes.length - 5]! ^= 0xff;
  writeFileSync(file, bytes);
  const r = await admin('PUT', '/admin/deployments/sum', { json: { strategy: 'direct', version: tampered } });
  assert.equal(r.status, 422);
  assert.match(r.body.error, /failed to load: artifact [0-9a-f]{64} was modified on disk/);
  assert.equal((await infer()).body.model_version, '1');
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /scoreline_artifact_refusals_total\{reason="tampered"\} [1-9]/);
  assert.ok(server.logs.some((l) => l.includes('artifact refused')));
});

/** Sends traffic until `stop()` says so; fails after a minute. */
async function traffic(stop: () => Promise<boolean>, x = [1, 2, 3, 4]): Promise<number> {
  let n = 0;
  await waitFor(
    async () => {
      if (await stop()) return true;
      await Promise.all(Array.from({ length: 20 }, () => infer(x)));
      n += 20;
      return false;
    },
    { timeoutMs: 60_000, intervalMs: 0, message: () => `the canary to end (back to a direct deployment) after ${n} requests` },
  );
  return n;
}

test('a canary that errors is rolled back automatically, with the reason on record', async () => {
  await deployment({ strategy: 'canary', stable: 1, canary: v.failing, percent: 30, steps: [60, 100], stepSeconds: 30 });
  await traffic(async () => (await admin('GET', '/admin/deployments/sum')).body.strategy.strategy === 'direct', [1000, 1, 2, 3]);
  const view = (await admin('GET', '/admin/deployments/sum')).body;
  assert.deepEqual(view.strategy, { strategy: 'direct', version: 1 });
  const last = view.history.at(-1);
  assert.equal(last.action, 'canary-rollback');
  assert.match(last.reason, /canary analysis failed: error_rate/);
  assert.equal((await infer()).body.model_version, '1');
});

test('a slow canary is rolled back on p99 latency', async () => {
  await deployment({ strategy: 'canary', stable: 1, canary: v.slow, percent: 50, steps: [100], stepSeconds: 60 });
  await traffic(async () => (await admin('GET', '/admin/deployments/sum')).body.strategy.strategy === 'direct');
  const last = (await admin('GET', '/admin/deployments/sum')).body.history.at(-1);
  assert.equal(last.action, 'canary-rollback');
  assert.match(last.reason, /p99_latency/);
});

test('a good canary passes every step and is promoted', async () => {
  await deployment({ strategy: 'canary', stable: 1, canary: v.x1copy, percent: 10, steps: [50, 100], stepSeconds: 1 });
  await traffic(async () => (await admin('GET', '/admin/deployments/sum')).body.strategy.strategy === 'direct', [1, 2, 3, 4]);
  const view = (await admin('GET', '/admin/deployments/sum')).body;
  assert.deepEqual(view.strategy, { strategy: 'direct', version: v.x1copy });
  const actions = view.history.slice(-2).map((h: any) => h.action);
  assert.deepEqual(actions, ['canary-step', 'canary-promote']);
  assert.ok(view.analysis.length >= 2 && view.analysis.every((a: any) => a.verdict === 'pass'));
});

test('20 deployment switches under continuous load: not one failed request', async () => {
  let stop = false;
  const results: number[] = [];
  const load = Promise.all(
    Array.from({ length: 8 }, async () => {
      while (!stop) {
        const r = await infer();
        results.push(r.status);
      }
    }),
  );
  const specs = [
    { strategy: 'direct', version: 1 },
    { strategy: 'direct', version: v.x2 },
    { strategy: 'blue-green', blue: 1, green: v.x3, active: 'green' },
    { strategy: 'canary', stable: v.x2, canary: v.x3, percent: 50 },
    {
      strategy: 'ab',
      variants: [
        { name: 'a', version: 1, weight: 1 },
        { name: 'b', version: v.x3, weight: 1 },
      ],
    },
  ];
  for (let i = 0; i < 20; i++) {
    await deployment(specs[i % specs.length]);
    // Each deployment serves some of the load before the next switch.
    const served = results.length;
    await waitFor(() => results.length >= served + 16, {
      intervalMs: 5,
      message: () => `requests served by deployment ${i} (${results.length - served} so far)`,
    });
  }
  stop = true;
  await load;
  assert.ok(results.length > 200, `${results.length} requests during the switches`);
  assert.deepEqual([...new Set(results)], [200]);
});

test('a restart restores the deployment exactly; the CLI reads the token from the data dir', async () => {
  await deployment({ strategy: 'canary', stable: 1, canary: v.x3, percent: 25 });
  await server.stop();
  server = await startServer(['--model-repo', repo, '--data-dir', dataDir, '--config', config]);
  const view = (await admin('GET', '/admin/deployments/sum')).body;
  assert.deepEqual(view.strategy, { strategy: 'canary', stable: 1, canary: v.x3, percent: 25 });
  const versions = new Set<string>();
  for (let i = 0; i < 60; i++) versions.add((await infer()).body.model_version);
  assert.deepEqual([...versions].sort(), ['1', String(v.x3)].sort());
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, ...args, '--data-dir', dataDir, '--url', server.url], { encoding: 'utf8' });
  const list = cli('models', 'list');
  assert.equal(list.status, 0, list.stderr);
  assert.match(list.stdout, /sum\s+latest v\d+/);
  const dep = cli('deploy', 'sum', '--strategy', 'direct', '--version', '1', '--reason', 'from the CLI');
  assert.equal(dep.status, 0, dep.stderr);
  assert.match(dep.stdout, /^sum: direct v1, since \S+ \(from the CLI\)\n {2}traffic: v1 100\.0%$/m);
  const st = cli('status', 'sum', '--json');
  assert.equal(JSON.parse(st.stdout).history.at(-1).reason, 'from the CLI');
  const refused = spawnSync(process.execPath, [CLI, 'status', 'sum', '--url', server.url, '--token', 'nope'], { encoding: 'utf8' });
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /403/);
  assert.ok(readdirSync(join(dataDir, 'artifacts')).length > 0);
});
