// Graceful shutdown: on SIGTERM (and SIGINT) the server stops accepting, answers every request it
// already holds, closes the pool and exits 0; requests that arrive during the drain get 503.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { writeSlowModel } from '../fixtures/models.js';
import { waitFor } from '../fixtures/wait.js';
import { request, startServer, tempDir, type TestServer } from './server.js';

const body = (v: number) => ({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 256], data: new Array(256).fill(v) }] });

/** One-row requests to 'slow' the server holds: queued in the batcher, running on a worker, or answered. */
async function held(server: TestServer): Promise<{ queued: number; running: number; answered: number }> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const sum = (re: RegExp) => [...text.matchAll(re)].reduce((a, m) => a + Number(m[1]), 0);
  return {
    queued: sum(/^scoreline_inference_queue_depth\{model="slow",version="1"\} (\d+)$/gm),
    running: sum(/^scoreline_inference_batches_in_flight (\d+)$/gm),
    answered: sum(/^scoreline_requests_total\{model="slow",[^}]*\} (\d+)$/gm),
  };
}

/** Waits until all `n` requests reached the server (batches are one row each); returns what it saw last. */
async function allArrived(server: TestServer, n: number): Promise<{ queued: number; running: number; answered: number }> {
  let last = { queued: 0, running: 0, answered: 0 };
  await waitFor(
    async () => {
      last = await held(server);
      return last.queued + last.running + last.answered >= n;
    },
    { intervalMs: 5, message: () => `all ${n} requests to reach the server: ${JSON.stringify(last)}` },
  );
  return last;
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal}: in-flight requests are answered, then the process exits 0`, async (t) => {
    const repo = await tempDir();
    // ~10 ms per row: 24 one-row batches keep the worker busy for about a quarter of a second.
    await writeSlowModel(repo, 'slow', 1, 3000, { modelYaml: { batching: { maxBatchSize: 1 } } });
    const server = await startServer(['--model-repo', repo, '--workers', '1']);
    // A failed assertion must not leave the server (and this file) running.
    t.after(() => server.stop('SIGKILL'));
    const inflight = Array.from({ length: 24 }, (_, i) => request(`${server.url}/v2/models/slow/infer`, { json: body(i) }));
    // Every request reaches the server and queues behind the slow batches before the signal.
    const { queued } = await allArrived(server, inflight.length);
    assert.ok(queued > 0, 'requests are still queued when the signal arrives');
    server.proc.kill(signal);
    const results = await Promise.all(inflight);
    results.forEach((r, i) => {
      assert.equal(r.status, 200, `request ${i}: ${r.text}`);
      assert.ok(Math.abs(r.body.outputs[0].data[0] - i) < 1e-3);
    });
    assert.equal(await server.exited, 0);
    assert.ok(
      server.logs.some((l) => l.includes('shutdown complete')),
      server.logs.join('\n'),
    );
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
  await allArrived(server, inflight.length);
  server.proc.kill('SIGTERM');
  await waitFor(() => server.logs.some((l) => l.includes('shutting down: finishing in-flight requests')), {
    intervalMs: 5,
    message: () => `the server to start draining:\n${server.logs.join('\n')}`,
  });
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
