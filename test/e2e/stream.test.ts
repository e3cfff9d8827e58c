// WebSocket /v1/stream against a real server: pipelined frames answered by id, bad frames answered
// with errors on a connection that stays usable, and a reader that stops reading is cut off
// instead of growing server memory.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { sumExpected, writeSlowModel, writeSumModel } from '../fixtures/models.js';
import { request, startServer, tempDir, type TestServer } from './server.js';
import { waitFor } from '../fixtures/wait.js';

let server: TestServer;
let wsUrl: string;

before(async () => {
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 1);
  await writeSumModel(repo, 'sum', 2);
  await writeSlowModel(repo, 'wide', 1, 1);
  const config = join(repo, 'server.yaml');
  await writeFile(config, 'websocket:\n  maxInflightPerConnection: 1024\n  maxBackpressureBytes: 65536\n');
  server = await startServer(['--model-repo', repo, '--config', config]);
  wsUrl = `ws://127.0.0.1:${server.port}/v1/stream`;
});

after(async () => {
  assert.equal(await server.stop(), 0);
});

function connect(): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** Collects `n` JSON answers. */
function answers(ws: WebSocket, n: number): Promise<any[]> {
  return new Promise((resolve, reject) => {
    const got: any[] = [];
    const onMessage = (data: WebSocket.RawData) => {
      got.push(JSON.parse(data.toString()));
      if (got.length === n) {
        ws.off('message', onMessage);
        resolve(got);
      }
    };
    ws.on('message', onMessage);
    ws.once('close', (code) => reject(new Error(`closed with ${code} after ${got.length} answers`)));
  });
}

const row = (i: number) => [i, 1, 2, -i / 2];

test('500 pipelined frames are each answered once, by id, with the version that ran them', async () => {
  const ws = await connect();
  const n = 500;
  const done = answers(ws, n);
  for (let i = 0; i < n; i++) {
    const version = i % 3 === 0 ? { version: '1' } : {};
    ws.send(
      JSON.stringify({ id: `r${i}`, model: 'sum', ...version, inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: row(i) }] }),
    );
  }
  const got = await done;
  const byId = new Map(got.map((a) => [a.id, a]));
  assert.equal(byId.size, n);
  for (let i = 0; i < n; i++) {
    const a = byId.get(`r${i}`);
    const v = i % 3 === 0 ? 1 : 2;
    assert.equal(a.model_version, String(v));
    assert.deepEqual(a.outputs, [{ name: 'y', datatype: 'FP32', shape: [1, 1], data: sumExpected([row(i)], v) }]);
  }
  ws.close();
});

test('bad frames get error answers and the connection keeps working', async () => {
  const ws = await connect();
  const got = answers(ws, 7);
  ws.send('{"id": 1, "model": ');
  ws.send(Buffer.from([1, 2, 3]), { binary: true });
  ws.send(JSON.stringify({ id: 3, inputs: [] }));
  ws.send(JSON.stringify({ id: 4, model: 'nope', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] }));
  ws.send(JSON.stringify({ id: 5, model: 'sum', inputs: [{ name: 'x', datatype: 'FP64', shape: [1, 4], data: [1, 2, 3, 4] }] }));
  ws.send(JSON.stringify({ id: { no: 1 }, model: 'sum', inputs: [] }));
  ws.send(JSON.stringify({ id: 7, model: 'sum', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] }));
  const all = await got;
  const errors = all.filter((a) => a.error !== undefined);
  assert.equal(errors.length, 6);
  const byStatus = errors.map((e) => [e.id, e.status]).sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  assert.deepEqual(byStatus, [
    [3, 400],
    [4, 404],
    [5, 422],
    [null, 400],
    [null, 400],
    [null, 400],
  ]);
  assert.ok(errors.some((e) => /not valid JSON/.test(e.error)));
  assert.ok(errors.some((e) => /binary frames are not supported/.test(e.error)));
  const ok = all.find((a) => a.id === 7);
  assert.deepEqual(ok.outputs[0].data, [20]);
  ws.close();
});

test('a reader that stops reading is disconnected; server memory stays bounded', async () => {
  const ws = await connect();
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  // Stop reading: answers pile up in the kernel, then in uWS, then in the server's outbox.
  (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
  const frame = JSON.stringify({
    model: 'wide',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 256], data: new Array(256).fill(0.123456789) }],
  });
  const rssBefore = await serverRss();
  for (let i = 0; i < 4000; i++) ws.send(frame);
  // Wait until the server has dealt with the flood.
  let pending = 0;
  await waitFor(
    async () => {
      pending = await gauge('scoreline_websocket_pending_answers');
      return (await gauge('scoreline_websocket_connections')) === 0;
    },
    { timeoutMs: 10_000, intervalMs: 100, message: () => `the server to close the slow reader (outboxes hold ${pending})` },
  );
  assert.equal(await gauge('scoreline_websocket_pending_answers'), 0);
  const grown = (await serverRss()) - rssBefore;
  assert.ok(grown < 100 * 1024 * 1024, `server RSS grew by ${(grown / 1048576).toFixed(1)} MB`);
  (ws as unknown as { _socket: { resume(): void } })._socket.resume();
  assert.equal(await closed, 1008);
  // and the server still serves
  const r = await request(`${server.url}/v2/models/sum/infer`, {
    json: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 1, 1, 1] }] },
  });
  assert.equal(r.status, 200);
});

async function metrics(): Promise<string> {
  return (await fetch(`${server.url}/metrics`)).text();
}

async function gauge(name: string): Promise<number> {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(await metrics());
  assert.ok(m, `${name} is exposed`);
  return Number(m[1]);
}

async function serverRss(): Promise<number> {
  const m = /^scoreline_process_resident_memory_bytes (\S+)$/m.exec(await metrics());
  assert.ok(m);
  return Number(m[1]);
}
