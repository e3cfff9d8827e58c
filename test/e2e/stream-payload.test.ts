// WebSocket frames over websocket.maxPayloadBytes: the client gets a close frame with 1009 (message
// too big) and a reason naming the limit, not a dropped connection (1006, what uWS does by itself
// above its maxPayloadLength). Frames up to the limit are answered, and other connections go on.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { writeSumModel } from '../fixtures/models.js';
import { request, startServer, tempDir, type TestServer } from './server.js';

const LIMIT = 4096;
let server: TestServer;
let wsUrl: string;

before(async () => {
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 1);
  const config = join(repo, 'server.yaml');
  await writeFile(config, `websocket:\n  maxPayloadBytes: ${LIMIT}\n`);
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

/** A valid inference frame padded with spaces to exactly `bytes` bytes. */
function frameOf(bytes: number, id: number): string {
  const base = JSON.stringify({ id, model: 'sum', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] });
  assert.ok(base.length <= bytes);
  return `${base.slice(0, -1)}${' '.repeat(bytes - base.length)}}`;
}

const closed = (ws: WebSocket) =>
  new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
const answer = (ws: WebSocket) => new Promise<any>((resolve) => ws.once('message', (d) => resolve(JSON.parse(d.toString()))));

test('a frame at the limit is answered; one byte over closes with 1009 and the reason', async () => {
  const ws = await connect();
  const got = answer(ws);
  ws.send(frameOf(LIMIT, 1));
  const a = await got;
  assert.equal(a.id, 1);
  assert.equal(a.model_version, '1', JSON.stringify(a));

  const bystander = await connect();
  const close = closed(ws);
  ws.send(frameOf(LIMIT + 1, 2));
  const c = await close;
  assert.equal(c.code, 1009);
  assert.equal(c.reason, `frame of ${LIMIT + 1} bytes is over websocket.maxPayloadBytes (${LIMIT})`);
  assert.ok(Buffer.byteLength(c.reason) <= 123);

  // Another connection is unaffected.
  const got2 = answer(bystander);
  bystander.send(frameOf(100, 3));
  assert.equal((await got2).id, 3);
  bystander.close();
  await closed(bystander);
});

test("far over the limit (past uWS's own cut-off) the connection is dropped, and the server carries on", async () => {
  const ws = await connect();
  const close = closed(ws);
  ws.send('x'.repeat(LIMIT * 4 + 1024));
  const c = await close;
  // Documented: uWS ends these itself without a close frame.
  assert.ok(c.code === 1006 || c.code === 1009, `closed with ${c.code}`);
  assert.equal((await request(`${server.url}/v2/health/ready`)).status, 200);
  const metrics = await request(`${server.url}/metrics`);
  assert.match(metrics.text, /scoreline_unrouted_requests_total\{route="stream",status="4xx"\} [1-9]/);
});
