// One inference path for every transport, against a real server: a canary served only over the
// WebSocket stream is analysed, rolled back and promoted exactly as one served over HTTP; A/B
// stickiness by header holds for a WebSocket connection; shadow pairs and per-variant metrics count
// WebSocket requests; and a request of more rows than maxBatchSize is served in order over every
// transport, its rows logged one by one.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import WebSocket from 'ws';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { sumExpected, writeSumModel, failingSumBytes } from '../fixtures/models.js';
import { request, startServer, tempDir, type TestServer } from './server.js';
import { waitFor } from '../fixtures/wait.js';

let server: TestServer;
let token: string;
let wsUrl: string;
const v: Record<string, number> = {};

/** y = k * sum(x) on x [-1, 4]; `salt` changes the bytes only. */
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

const admin = async (method: string, path: string, init: { json?: unknown; bytes?: Uint8Array } = {}) =>
  request(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(init.bytes ? { 'content-type': 'application/octet-stream' } : {}) },
    ...(init.json !== undefined ? { json: init.json } : {}),
    ...(init.bytes ? { body: init.bytes } : {}),
  });

before(async () => {
  const dir = await tempDir();
  const repo = join(dir, 'models');
  await writeSumModel(repo, 'sum', 1, { modelYaml: { batching: { maxBatchSize: 8, maxQueueSize: 2000 } } });
  const config = join(dir, 'server.yaml');
  writeFileSync(config, stringify({ deploy: { analysisTickMs: 100, analysis: { minRequests: 20 } } }));
  const dataDir = join(dir, 'data');
  server = await startServer(['--model-repo', repo, '--data-dir', dataDir, '--config', config, '--workers', '1']);
  token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  wsUrl = `ws://127.0.0.1:${server.port}/v1/stream`;
  for (const [name, bytes] of [
    ['x2', sumBytes(2)],
    ['copy', sumBytes(1, 'copy')],
    ['failing', failingSumBytes()],
  ] as const) {
    const r = await admin('POST', '/admin/models/sum/versions', { bytes });
    assert.equal(r.status, 201, r.text);
    v[name] = r.body.version;
  }
});

after(async () => {
  await server?.stop();
});

function connect(headers: Record<string, string> = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, { headers });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** Sends frames and resolves with their answers (all of them, in arrival order). */
function exchange(ws: WebSocket, frames: unknown[]): Promise<any[]> {
  return new Promise((resolve, reject) => {
    const got: any[] = [];
    const onMessage = (data: WebSocket.RawData) => {
      got.push(JSON.parse(data.toString()));
      if (got.length === frames.length) {
        ws.off('message', onMessage);
        resolve(got);
      }
    };
    ws.on('message', onMessage);
    ws.once('close', (code) => reject(new Error(`closed with ${code} after ${got.length} answers`)));
    for (const f of frames) ws.send(JSON.stringify(f));
  });
}

const frame = (id: number, x: number[]) => ({ id, model: 'sum', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: x }] });

const deploy = async (spec: unknown) => {
  const r = await admin('PUT', '/admin/deployments/sum', { json: spec });
  assert.equal(r.status, 200, r.text);
};

/** Streams frames over one connection until the deployment leaves canary (bounded). */
async function streamUntilDirect(x: number[]): Promise<{ action: string; reason: string; stats: any }> {
  const ws = await connect();
  try {
    let id = 0;
    return await waitFor(
      async () => {
        const before = (await admin('GET', '/admin/deployments/sum')).body;
        if (before.strategy.strategy === 'direct') return { ...before.history.at(-1), stats: before.step_stats };
        await exchange(
          ws,
          Array.from({ length: 40 }, () => frame(id++, x)),
        );
        return undefined;
      },
      { timeoutMs: 30_000, intervalMs: 0, message: () => `the canary to reach a verdict (${id} frames sent)` },
    );
  } finally {
    ws.close();
  }
}

test('a canary served only over WebSocket is rolled back on its errors, like one served over HTTP', async () => {
  await deploy({ strategy: 'canary', stable: 1, canary: v.failing, percent: 30, steps: [60, 100], stepSeconds: 30 });
  const last = await streamUntilDirect([1000, 1, 2, 3]);
  assert.equal(last.action, 'canary-rollback');
  assert.match(last.reason, /canary analysis failed: error_rate/);
});

test('a good canary served only over WebSocket passes every step and is promoted', async () => {
  await deploy({ strategy: 'canary', stable: 1, canary: v.copy, percent: 20, steps: [50, 100], stepSeconds: 1 });
  const last = await streamUntilDirect([1, 2, 3, 4]);
  assert.equal(last.action, 'canary-promote', JSON.stringify(last));
  const view = (await admin('GET', '/admin/deployments/sum')).body;
  assert.deepEqual(view.strategy, { strategy: 'direct', version: v.copy });
  // Every analysis of the rollout was made on WebSocket traffic alone, with enough of it.
  assert.ok(view.analysis.length >= 2 && view.analysis.every((a: any) => a.verdict === 'pass' && a.canaryRequests >= 20));
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(
    metrics,
    new RegExp(`scoreline_requests_total\\{model="sum",version="${v.copy}",variant="canary",route="stream",status="2xx"\\} [1-9]`),
  );
});

test('A/B by header: a WebSocket connection sticks to the variant of its upgrade header', async () => {
  await deploy({
    strategy: 'ab',
    variants: [
      { name: 'a', version: 1, weight: 50 },
      { name: 'b', version: v.x2, weight: 50 },
    ],
    stickyKey: 'header:x-user-id',
  });
  const seen = new Map<string, Set<string>>();
  for (let u = 0; u < 40; u++) {
    const ws = await connect({ 'x-user-id': `user-${u}` });
    const got = await exchange(
      ws,
      Array.from({ length: 5 }, (_, i) => frame(i, [1, 2, 3, 4])),
    );
    ws.close();
    seen.set(`user-${u}`, new Set(got.map((a) => a.model_version)));
  }
  for (const [user, versions] of seen) assert.equal(versions.size, 1, `${user} saw ${[...versions]}`);
  const onB = [...seen.values()].filter((s) => s.has(String(v.x2))).length;
  assert.ok(onB > 5 && onB < 35, `variant b got ${onB} of 40 users`);
  // The same user over HTTP lands on the same variant.
  const [user, versions] = [...seen][0]!;
  const http = await request(`${server.url}/v2/models/sum/infer`, {
    headers: { 'x-user-id': user },
    json: { inputs: frame(0, [1, 2, 3, 4]).inputs },
  });
  assert.equal(http.status, 200, http.text);
  assert.equal(http.body.model_version, [...versions][0]);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(
    metrics,
    new RegExp(`scoreline_requests_total\\{model="sum",version="${v.x2}",variant="b",route="stream",status="2xx"\\} [1-9]`),
  );
});

test('shadow pairs count WebSocket requests', async () => {
  await deploy({ strategy: 'shadow', primary: 1, shadow: v.x2 });
  const ws = await connect();
  const got = await exchange(
    ws,
    Array.from({ length: 30 }, (_, i) => frame(i, [i, 0, 0, 0])),
  );
  ws.close();
  for (const a of got) assert.equal(a.model_version, '1');
  let shadow: any;
  await waitFor(
    async () => {
      shadow = (await admin('GET', '/admin/deployments/sum')).body.shadow;
      return shadow.pairs >= 30;
    },
    {
      timeoutMs: 5_000,
      message: () => `30 shadow pairs: ${JSON.stringify(shadow)}`,
    },
  );
  assert.equal(shadow.pairs, 30);
  // shadow = 2 x primary: the mean absolute difference is the mean of i over 0..29.
  assert.ok(Math.abs(shadow.mean_abs_diff - 14.5) < 1e-6, JSON.stringify(shadow));
});

const rows = (n: number) => Array.from({ length: n }, (_, i) => [i, i % 7, -i / 4, 1]);

test('a request of more rows than maxBatchSize is answered in order over HTTP, v1 and WebSocket', async () => {
  await deploy({ strategy: 'direct', version: 1 });
  const data = rows(1000);
  const expected = sumExpected(data, 1);
  const oip = await request(`${server.url}/v2/models/sum/infer`, {
    json: { id: 'big-oip', inputs: [{ name: 'x', datatype: 'FP32', shape: [1000, 4], data: data.flat() }] },
  });
  assert.equal(oip.status, 200, oip.text);
  assert.deepEqual(oip.body.outputs[0].shape, [1000, 1]);
  assert.deepEqual(oip.body.outputs[0].data, expected);
  const v1 = await request(`${server.url}/v1/models/sum:predict`, { json: { instances: data.slice(0, 100) } });
  assert.equal(v1.status, 200, v1.text);
  assert.deepEqual(
    v1.body.predictions,
    expected.slice(0, 100).map((y) => [y]),
  );
  const ws = await connect();
  const [answer] = await exchange(ws, [{ id: 'big', model: 'sum', inputs: [{ name: 'x', datatype: 'FP32', shape: [1000, 4], data }] }]);
  ws.close();
  assert.deepEqual(answer.outputs[0].data, expected);
  // Every row was logged under id/row: the last row of the request joins a label.
  const fb = await request(`${server.url}/v1/feedback`, {
    json: [
      { request_id: 'big-oip/999', label: 1 },
      { request_id: 'big-oip/0', label: 0 },
    ],
  });
  assert.equal(fb.status, 200, fb.text);
  assert.equal(fb.body.joined, 2, fb.text);
});
