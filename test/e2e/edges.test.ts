// HTTP and WebSocket edges against a real server on the demo: cross-site writes are refused
// (POST bodies must be JSON, a foreign Origin is 403 on HTTP and on the WebSocket upgrade, an
// allowed one gets CORS headers and preflights), entity scoring holds values to the model's
// datatype like every other path (422 naming the field), and a WebSocket frame refused during
// shutdown carries its id.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import WebSocket from 'ws';
import { writeSlowModel } from '../fixtures/models.js';
import { request, ROOT, startServer, tempDir, type TestServer } from './server.js';
import { waitFor } from '../fixtures/wait.js';

let server: TestServer;
const ALLOWED = 'https://risk-console.example';
const FOREIGN = 'https://evil.example';

before(async () => {
  const dir = await tempDir();
  const config = join(dir, 'server.yaml');
  writeFileSync(
    config,
    stringify({
      modelRepository: join(ROOT, 'examples', 'models'),
      features: { definitions: join(ROOT, 'examples', 'features', 'features.yaml') },
      cors: { allowedOrigins: [ALLOWED] },
    }),
  );
  server = await startServer(['--config', config, '--workers', '1']);
});

after(async () => {
  await server?.stop();
});

/** A POST with raw bytes (fetch adds no content type to bytes) and the given headers. */
const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  request(`${server.url}${path}`, { method: 'POST', headers, body: Buffer.from(JSON.stringify(body)) });

const scoreBody = { entity: { customer_id: 'C00042' }, context: { amount: 5200, duration_months: 24 } };

test('cross-site writes: no content type is 415, a foreign Origin is 403, and nothing is stored', async () => {
  const feedback = [{ request_id: 'never-seen', label: 1 }];
  for (const [path, body] of [
    ['/v1/feedback', feedback],
    ['/v1/events', { event: 'transaction', entity: { customer_id: 'C00042' } }],
    ['/v1/score/credit-default', scoreBody],
  ] as const) {
    const bare = await post(path, body);
    assert.equal(bare.status, 415, `${path} without a content type: ${bare.text}`);
    assert.match(bare.body.error, /content-type '\(none\)' is not supported; send application\/json/);
    const foreign = await post(path, body, { 'content-type': 'application/json', origin: FOREIGN });
    assert.equal(foreign.status, 403, `${path} from ${FOREIGN}: ${foreign.text}`);
    assert.match(foreign.body.error, /origin 'https:\/\/evil\.example' are not allowed; list it in cors\.allowedOrigins/);
    assert.equal(foreign.headers.get('access-control-allow-origin'), null);
  }
  // A form post from another site (text/plain needs no preflight) is refused too.
  const form = await post('/v1/feedback', feedback, { 'content-type': 'text/plain', origin: FOREIGN });
  assert.equal(form.status, 403);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.doesNotMatch(metrics, /scoreline_feedback_total\{result="unknown"\} [1-9]/, 'no refused label reached the log');
});

test("an allowed origin gets CORS headers and preflights; this server's own origin needs no listing", async () => {
  const ok = await post('/v1/score/credit-default', scoreBody, { 'content-type': 'application/json', origin: ALLOWED });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.headers.get('access-control-allow-origin'), ALLOWED);
  const pre = await fetch(`${server.url}/v1/score/credit-default`, {
    method: 'OPTIONS',
    headers: { origin: ALLOWED, 'access-control-request-method': 'POST' },
  });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-origin'), ALLOWED);
  assert.match(pre.headers.get('access-control-allow-headers') ?? '', /content-type/);
  const bad = await fetch(`${server.url}/v1/score/credit-default`, { method: 'OPTIONS', headers: { origin: FOREIGN } });
  assert.equal(bad.status, 403);
  const same = await post('/v1/score/credit-default', scoreBody, {
    'content-type': 'application/json',
    origin: `http://127.0.0.1:${server.port}`,
  });
  assert.equal(same.status, 200, same.text);
});

test('WebSocket upgrades from a foreign origin are refused; allowed and origin-less clients connect', async () => {
  const url = `ws://127.0.0.1:${server.port}/v1/stream`;
  const open = (headers: Record<string, string>) =>
    new Promise<number>((resolve) => {
      const ws = new WebSocket(url, { headers });
      ws.once('open', () => {
        ws.close();
        resolve(101);
      });
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.once('error', () => resolve(0));
    });
  assert.equal(await open({ origin: FOREIGN }), 403);
  assert.equal(await open({ origin: ALLOWED }), 101);
  assert.equal(await open({}), 101);
});

test('entity scoring holds values to the model datatype like every path: 422 naming the field', async () => {
  const huge = await post(
    '/v1/score/credit-default',
    { ...scoreBody, context: { amount: 1.7e308, duration_months: 24 } },
    { 'content-type': 'application/json' },
  );
  assert.equal(huge.status, 422, huge.text);
  assert.match(huge.body.error, /feature 'amount': value 1\.7e\+308 is not a finite FP32 number/);
  const override = await post(
    '/v1/score/credit-default',
    { ...scoreBody, features: { income: 1e39 } },
    { 'content-type': 'application/json' },
  );
  assert.equal(override.status, 422, override.text);
  assert.match(override.body.error, /feature 'income'.*1e\+39 is not a finite FP32 number/);
  // The same value over OIP is refused the same way.
  const oip = await post(
    '/v2/models/credit-default/infer',
    { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10], data: [24, 1.7e308, 35, 52000, 6, 120, 1, 0.2, 3, 0] }] },
    { 'content-type': 'application/json' },
  );
  assert.equal(oip.status, 422, oip.text);
  assert.match(oip.body.error, /value 1\.7e\+308 is not a finite FP32 number/);
});

test('a WebSocket frame refused during shutdown carries its id', async () => {
  const repo = await tempDir();
  await writeSlowModel(repo, 'slow', 1, 3000, { modelYaml: { batching: { maxBatchSize: 1 } } });
  const s = await startServer(['--model-repo', repo, '--workers', '1']);
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/v1/stream`);
  await new Promise((r) => ws.once('open', r));
  const answers: any[] = [];
  ws.on('message', (d) => answers.push(JSON.parse(d.toString())));
  const frame = (id: string) => ({
    id,
    model: 'slow',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 256], data: new Array(256).fill(1) }],
  });
  // Slow work in flight keeps the server draining (not yet closed) while the late frame arrives.
  for (let i = 0; i < 16; i++) ws.send(JSON.stringify(frame(`busy-${i}`)));
  await waitFor(() => answers.length > 0, { timeoutMs: 10_000, intervalMs: 10, message: 'the first answer of the slow work' });
  s.proc.kill('SIGTERM');
  await waitFor(() => s.logs.some((l) => l.includes('shutting down: finishing in-flight requests')), {
    intervalMs: 5,
    message: () => `the server to start draining:\n${s.logs.join('\n')}`,
  });
  ws.send(JSON.stringify(frame('late-1')));
  const late = await waitFor(() => answers.find((a) => a.id === 'late-1'), {
    timeoutMs: 10_000,
    intervalMs: 10,
    message: () => `an answer for the late frame: ${JSON.stringify(answers.slice(-3))}`,
  });
  assert.equal(late.status, 503);
  assert.match(late.error, /shutting down/);
  assert.equal(await s.exited, 0);
});
