// The dynamic batcher and executors in process, with real onnxruntime: requests decoded into shared
// batches come back with their own rows, a model error fails only the offending request, a worker
// that dies under a batch loses nothing, queues are bounded and deadlines enforced.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { InferenceEngine, type PoolExecutor, type LoadedModel, type PendingRequest, type RunResult } from '../src/inference/index.js';
import { Monitor } from '../src/monitoring/index.js';
import { decodeOip } from '../src/server/decode.js';
import { outputsJson } from '../src/server/encode.js';
import type { ScorelineError } from '../src/errors.js';
import { sumExpected, writeGatherModel, writeSlowModel, writeSumModel, type ModelFixture } from './fixtures/models.js';
import { tempDir } from './e2e/server.js';
import { waitFor } from './fixtures/wait.js';

interface Engine {
  engine: InferenceEngine;
  monitor: Monitor;
}

const engines: InferenceEngine[] = [];
after(async () => {
  await Promise.all(engines.map((e) => e.close()));
});

function makeEngine(
  workers: number,
  batching: Partial<{ maxBatchSize: number; maxQueueDelayMicros: number; maxQueueSize: number }> = {},
): Engine {
  const monitor = new Monitor({ processMetrics: false });
  const engine = new InferenceEngine({
    workers,
    tasksPerWorker: 2,
    intraOpThreads: 1,
    batching: { maxBatchSize: 64, maxQueueDelayMicros: 200, maxQueueSize: 4096, ...batching },
    observerFor: (m) => monitor.version(m),
  });
  engines.push(engine);
  return { engine, monitor };
}

async function load(engine: InferenceEngine, f: ModelFixture): Promise<LoadedModel> {
  const sha256 = createHash('sha256').update(readFileSync(f.modelPath)).digest('hex');
  return engine.load({ name: f.name, version: f.version, path: f.modelPath, sha256, config: {} });
}

/** Decodes and commits one OIP request; resolves with its outputs JSON or rejects with the error. */
function submit(model: LoadedModel, body: unknown, timeoutMs = 5000): Promise<{ outputs: any[]; batchRows: number }> {
  const now = performance.now();
  const decoded = decodeOip(model, body, 1e6);
  return new Promise((resolve, reject) => {
    const p: PendingRequest = {
      rows: decoded.rows,
      enqueuedAt: now,
      deadline: now + timeoutMs,
      settled: false,
      resolve(result: RunResult, rowStart: number) {
        resolve({ outputs: JSON.parse(outputsJson(model, result, rowStart, decoded.rows, null)), batchRows: result.outputs[0]!.dims[0]! });
      },
      reject(err: ScorelineError) {
        reject(err);
      },
    };
    model.batcher.commit(decoded.batch, p);
  });
}

const row = (i: number) => [i, i * 0.5, -i, 1];
const sumBody = (i: number) => ({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: row(i) }] });

for (const workers of [0, 2]) {
  describe(`${workers === 0 ? 'inline' : `${workers} workers`}`, () => {
    test('2,000 concurrent requests each get their own answer, in shared batches', async () => {
      const { engine } = makeEngine(workers);
      const model = await load(engine, await writeSumModel(await tempDir(), 'sum', 3));
      const results = await Promise.all(Array.from({ length: 2000 }, (_, i) => submit(model, sumBody(i))));
      let batched = 0;
      results.forEach((r, i) => {
        assert.deepEqual(r.outputs[0].data, sumExpected([row(i)], 3), `request ${i}`);
        if (r.batchRows > 1) batched++;
      });
      assert.ok(batched > 1000, `most requests rode in a shared batch (${batched})`);
    });

    test('a model error fails only the request that caused it', async () => {
      const { engine } = makeEngine(workers);
      const model = await load(engine, await writeGatherModel(await tempDir()));
      const body = (idx: number) => ({ inputs: [{ name: 'idx', datatype: 'INT64', shape: [1, 1], data: [idx] }] });
      const results = await Promise.allSettled([3, 5, 42, 7, 0].map((i) => submit(model, body(i))));
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
      );
      assert.deepEqual((results[0] as PromiseFulfilledResult<any>).value.outputs[0].data, [103]);
      assert.deepEqual((results[3] as PromiseFulfilledResult<any>).value.outputs[0].data, [107]);
      const err = (results[2] as PromiseRejectedResult).reason as ScorelineError;
      assert.equal(err.status, 500);
      assert.match(err.message, /inference failed/);
    });
  });
}

test('an idle server dispatches at once, whatever maxQueueDelayMicros says', async () => {
  const { engine } = makeEngine(1, { maxQueueDelayMicros: 2_000_000 });
  const model = await load(engine, await writeSumModel(await tempDir(), 'sum', 1));
  await submit(model, sumBody(1));
  const t0 = performance.now();
  const r = await submit(model, sumBody(2));
  const ms = performance.now() - t0;
  assert.deepEqual(r.outputs[0].data, sumExpected([row(2)], 1));
  assert.ok(ms < 500, `a lone request took ${ms.toFixed(1)} ms with a 2 s queue delay`);
});

test('a full queue refuses with 429 and Retry-After, and what was accepted still completes', async () => {
  const { engine } = makeEngine(1, { maxBatchSize: 1, maxQueueSize: 3 });
  const model = await load(engine, await writeSlowModel(await tempDir(), 'slow', 1, 100));
  const body = { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 256], data: new Array(256).fill(1) }] };
  const attempts: Promise<unknown>[] = [];
  const refused: ScorelineError[] = [];
  for (let i = 0; i < 12; i++) {
    try {
      attempts.push(submit(model, body));
    } catch (e) {
      refused.push(e as ScorelineError);
    }
  }
  assert.ok(refused.length >= 5, `refused ${refused.length} of 12`);
  for (const e of refused) {
    assert.equal(e.status, 429);
    assert.equal(e.retryAfter, 1);
    assert.match(e.message, /queue of model 'slow' version 1 is full \(3 rows waiting\)/);
  }
  const done = await Promise.all(attempts);
  assert.equal(done.length, 12 - refused.length);
});

test('the queue bound counts rows; a request larger than maxBatchSize is split, answered in order, and admitted alone when larger than the bound', async () => {
  const { engine } = makeEngine(1, { maxBatchSize: 8, maxQueueSize: 100 });
  const model = await load(engine, await writeSumModel(await tempDir(), 'sum', 1));
  const body = (n: number, from = 0) => ({
    inputs: [{ name: 'x', datatype: 'FP32', shape: [n, 4], data: Array.from({ length: n }, (_, i) => row(from + i)).flat() }],
  });
  // 90 rows wait (nothing is dispatched before this turn ends); 20 more do not fit, 10 do.
  const first = submit(model, body(90));
  assert.equal(model.batcher.queuedRows, 90);
  assert.throws(
    () => submit(model, body(20)),
    (e: ScorelineError) => e.status === 429 && /is full \(100 rows waiting\)/.test(e.message),
  );
  const fits = submit(model, body(10, 90));
  const [a, b] = await Promise.all([first, fits]);
  assert.deepEqual(
    a.outputs[0].data,
    sumExpected(
      Array.from({ length: 90 }, (_, i) => row(i)),
      1,
    ),
  );
  assert.deepEqual(
    b.outputs[0].data,
    sumExpected(
      Array.from({ length: 10 }, (_, i) => row(90 + i)),
      1,
    ),
  );
  assert.ok(a.batchRows <= 90 && a.outputs[0].shape[0] === 90);
  // Larger than the whole bound: admitted into an empty queue, split into chunks of 8, in order.
  const big = await submit(model, body(250));
  assert.deepEqual(big.outputs[0].shape, [250, 1]);
  assert.deepEqual(
    big.outputs[0].data,
    sumExpected(
      Array.from({ length: 250 }, (_, i) => row(i)),
      1,
    ),
  );
  assert.equal(model.batcher.queuedRows, 0);
  assert.equal(model.batcher.pending, 0);
});

test('requests past their deadline get 504 while the batch they wait behind runs', async () => {
  const { engine } = makeEngine(1, { maxBatchSize: 1 });
  const model = await load(engine, await writeSlowModel(await tempDir(), 'slow', 1, 600));
  const body = { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 256], data: new Array(256).fill(1) }] };
  const t0 = performance.now();
  await submit(model, body);
  const perBatch = performance.now() - t0;
  // Enough requests that the queue holds well over the 30 ms deadline of work.
  const n = Math.max(20, Math.ceil(120 / Math.max(perBatch, 0.5)));
  const results = await Promise.allSettled(Array.from({ length: n }, () => submit(model, body, 30)));
  const timedOut = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as ScorelineError);
  assert.ok(timedOut.length >= n / 3, `${timedOut.length} of ${n} timed out (${perBatch.toFixed(1)} ms per batch)`);
  assert.ok(results[0]!.status === 'fulfilled', 'the first request was served in time');
  for (const e of timedOut) {
    assert.equal(e.status, 504);
    assert.match(e.message, /deadline of 30 ms/);
  }
  assert.equal(model.batcher.pending, 0);
});

test('a worker that dies under a batch loses no request: the batch runs again on its replacement', async () => {
  const { engine } = makeEngine(2, { maxBatchSize: 8 });
  const model = await load(engine, await writeSlowModel(await tempDir(), 'slow', 1, 150));
  const pool = engine.pool!.executor as PoolExecutor;
  const body = (i: number) => ({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 256], data: new Array(256).fill(i) }] });
  // The worker ends itself (process.exit in the thread) when its next batch arrives, so a batch is certainly lost with it.
  await pool.dieOnNextRun(pool.threads[0]!.threadId);
  const pending = Array.from({ length: 40 }, (_, i) => submit(model, body(i), 30_000));
  const results = await Promise.all(pending);
  results.forEach((r, i) => {
    assert.ok(Math.abs(r.outputs[0].data[0] - i) < 1e-3, `request ${i}: ${r.outputs[0].data[0]}`);
  });
  assert.ok(model.batcher.retried >= 1, `the lost batch ran again (${model.batcher.retried} retried)`);
  // the pool replaced the worker and still serves
  const again = await submit(model, body(3));
  assert.ok(Math.abs(again.outputs[0].data[0] - 3) < 1e-3);
});

test('an observer whose onComplete returns a promise holds the answers until it settles; a rejection fails the batch with 503', async () => {
  const releases: (() => void)[] = [];
  let fail: Error | null = null;
  const engine = new InferenceEngine({
    workers: 0,
    tasksPerWorker: 2,
    intraOpThreads: 1,
    batching: { maxBatchSize: 64, maxQueueDelayMicros: 200, maxQueueSize: 4096 },
    observerFor: () => ({
      onDispatch() {},
      onComplete() {
        if (fail !== null) return Promise.reject(fail);
        return new Promise<void>((resolve) => releases.push(resolve));
      },
    }),
  });
  engines.push(engine);
  const model = await load(engine, await writeSumModel(await tempDir(), 'sum', 2));

  const settled: number[] = [];
  const held = [1, 2, 3].map((i) =>
    submit(model, sumBody(i)).then((r) => {
      settled.push(i);
      return r;
    }),
  );
  await waitFor(() => releases.length > 0, { timeoutMs: 5000, intervalMs: 2, message: 'the batch to run and onComplete to be called' });
  // Many turns of the event loop later: still not answered, and still pending.
  for (let t = 0; t < 20; t++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(settled, []);
  assert.equal(model.batcher.pending, 3, 'held requests are still pending (graceful shutdown waits for them)');
  // Release every batch's commit (the three may ride in one batch or more).
  await waitFor(
    () => {
      for (const r of releases.splice(0)) r();
      return settled.length === 3;
    },
    { timeoutMs: 5000, intervalMs: 2, message: () => `the three held requests to be answered (${settled.length} so far)` },
  );
  const answers = await Promise.all(held);
  answers.forEach((a, k) => {
    assert.deepEqual(a.outputs[0].data, sumExpected([row(k + 1)], 2));
  });

  fail = new Error('disk I/O error');
  const refused = await Promise.allSettled([4, 5].map((i) => submit(model, sumBody(i))));
  for (const r of refused) {
    assert.equal(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason as ScorelineError;
    assert.equal(e.status, 503);
    assert.equal(e.code, 'STORE_UNAVAILABLE');
    assert.match(e.message, /prediction log could not commit this batch: disk I\/O error/);
  }
  assert.equal(model.batcher.pending, 0);
});
