// Graceful shutdown: on SIGTERM (and SIGINT) the server stops accepting, answers every request it
// already holds, closes the pool and exits 0; requests that arrive during the drain get 503.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { writeSlowModel } from '../fixtures/models.js';
import { until } from './cluster.js';
import { request, startServer, tempDir } from './server.js';

const body = (v: number) => ({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 256], data: new Array(256).fill(v) }] });

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal}: in-flight requests are answered, then the process exits 0`, async (t) => {
    const repo = await tempDir();
    // ~10 ms per row: 24 one-row batches keep the worker busy for about a quarter of a second.
    await writeSlowModel(repo, 'slow', 1, 3000, { modelYaml: { batching: { maxBatchSize: 1 } } });
    const server = await startServer(['--model-repo', repo, '--workers', '1']);
    // A failed assertion must not leave the server (and this file) running.
    t.after(() => server.stop('SIGKILL'));
    const inflight = Array.from({ length: 24 }, (_, i) => request(`${server.url}/v2/models/slow/infer`, { json: body(i) }));
    // The signal is sent once requests are queued behind the slow batches (however long they take to
    // arrive on a loaded machine), so the drain has something to answer.
    await until('requests queued behind the slow batches', 10_000, async () => {
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const waiting = Number(/^scoreline_inference_queue_depth\{model="slow",version="1"\} (\d+)/m.exec(metrics)?.[1] ?? 0);
      return waiting > 0 ? true : undefined;
    }, 5);
    server.proc.kill(signal);
    const results = await Promise.all(inflight);
    results.forEach((r, i) => {
      assert.equal(r.status, 200, `request ${i}: ${r.text}`);
      assert.ok(Math.abs(r.body.outputs[0].data[0] - i) < 1e-3);
    });
    assert.equal(await server.exited, 0);
    assert.ok(server.logs.some((l) => l.includes('shutdown complete')), server.logs.join('\n'));
    await assert.rejects(fetch(`${server.url}/v2/health/live`), 'nothing listens after exit');
  });
}

test('during the drain new requests get 503 and readiness turns false', async () => {
  const repo = await tempDir();
  await writeSlowModel(repo, 'slow', 1, 3000, { modelYaml: { batching: { maxBatchSize: 1 } } });
  const server = await startServer(['--model-repo', repo, '--workers', '1']);
  // A keep-alive connection opened before the signal can still send during the drain.
  assert.equal((await request(`${server.url}/v2/health/ready`)).status, 200);
  const inflight = Array.from({ length: 16 }, (_, i) => request(`${server.url}/v2/models/slow/infer`, { json: body(i) }));
  await new Promise((r) => setTimeout(r, 60));
  server.proc.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 20));
  const late = await request(`${server.url}/v2/models/slow/infer`, { json: body(1) }).catch(() => null);
  if (late !== null) {
    assert.equal(late.status, 503);
    assert.match(late.body.error, /shutting down/);
  }
  const ready = await request(`${server.url}/v2/health/ready`).catch(() => null);
  if (ready !== null) assert.equal(ready.status, 503);
  assert.ok(late !== null || ready !== null, 'a keep-alive connection reached the draining server');
  for (const r of await Promise.all(inflight)) assert.equal(r.status, 200);
  assert.equal(await server.exited, 0);
});
