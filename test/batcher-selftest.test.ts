// The batcher's face for the deployer: selfTest runs rows through the normal batching path and
// answers with that request's own rows (or its failure), and whenIdle resolves when the last queued
// or running request is answered, or says false at its timeout.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { sampleCheck } from '../src/deploy/checks.js';
import type { ScorelineError } from '../src/errors.js';
import { type BatchObserver, InferenceEngine, type LoadedModel } from '../src/inference/index.js';
import { tempDir } from './e2e/server.js';
import { type ModelFixture, sumExpected, writeGatherModel, writeSumModel } from './fixtures/models.js';
import { waitFor } from './fixtures/wait.js';

const engines: InferenceEngine[] = [];
after(async () => {
  await Promise.all(engines.map((e) => e.close()));
});

const quiet: BatchObserver = { onDispatch() {}, onComplete() {} };

function makeEngine(workers: number, observer: BatchObserver = quiet): InferenceEngine {
  const engine = new InferenceEngine({
    workers,
    tasksPerWorker: 2,
    intraOpThreads: 1,
    batching: { maxBatchSize: 64, maxQueueDelayMicros: 200, maxQueueSize: 4096 },
    observerFor: () => observer,
  });
  engines.push(engine);
  return engine;
}

async function load(engine: InferenceEngine, f: ModelFixture): Promise<LoadedModel> {
  const sha256 = createHash('sha256').update(readFileSync(f.modelPath)).digest('hex');
  return engine.load({ name: f.name, version: f.version, path: f.modelPath, sha256, config: {} });
}

/** An observer that holds every batch's answers until the test releases them. */
function holding(): { observer: BatchObserver; releaseAll: () => number; held: () => number } {
  const releases: (() => void)[] = [];
  return {
    observer: { onDispatch() {}, onComplete: () => new Promise<void>((resolve) => releases.push(resolve)) },
    releaseAll: () => {
      const n = releases.length;
      for (const r of releases.splice(0)) r();
      return n;
    },
    held: () => releases.length,
  };
}

const nextMacrotask = () => new Promise((r) => setImmediate(r));

for (const workers of [0, 2]) {
  const lane = workers === 0 ? 'inline' : `${workers} workers`;

  test(`${lane}: selfTest answers with its own rows, also when sharing a batch with other requests`, async () => {
    const model = await load(makeEngine(workers), await writeSumModel(await tempDir(), 'sum', 3));
    const rows = [
      [1, 2, 3, 4],
      [0.5, -0.5, 0.25, 0.75],
    ];
    const other = [
      [-8, 0, 0, 1],
      [2, 2, 2, 2],
      [9, 9, 9, 9],
    ];
    // Committed in one turn, so they ride in one batch of five rows.
    const [mine, theirs] = await Promise.all([
      model.batcher.selfTest(2, [Float32Array.from(rows.flat())]),
      model.batcher.selfTest(3, [Float32Array.from(other.flat())]),
    ]);
    assert.equal(mine.outputs.length, 1);
    assert.equal(mine.outputs[0]!.name, 'y');
    assert.deepEqual(mine.outputs[0]!.dims, [2, 1]);
    assert.deepEqual([...mine.outputs[0]!.data], sumExpected(rows, 3));
    assert.deepEqual(theirs.outputs[0]!.dims, [3, 1]);
    assert.deepEqual([...theirs.outputs[0]!.data], sumExpected(other, 3));
    assert.ok(mine.computeMs >= 0);
  });

  test(`${lane}: selfTest rejects with the model's error, and refuses rows that do not fit at once`, async () => {
    const model = await load(makeEngine(workers), await writeGatherModel(await tempDir()));
    const ok = await model.batcher.selfTest(2, [BigInt64Array.of(3n, 7n)]);
    assert.deepEqual([...ok.outputs[0]!.data], [103, 107]);
    // Index 42 is outside the 10-entry table: onnxruntime fails the run.
    await assert.rejects(model.batcher.selfTest(2, [BigInt64Array.of(3n, 42n)]), (e: ScorelineError) => {
      assert.equal(e.status, 500);
      assert.match(e.message, /inference failed/);
      return true;
    });
    assert.throws(
      () => model.batcher.selfTest(2, [BigInt64Array.of(3n)]),
      (e: ScorelineError) => e.code === 'SIGNATURE_MISMATCH' && /needs 2 elements for 2 rows; 1 were given/.test(e.message),
    );
    assert.equal(model.batcher.pending, 0);
    assert.equal(await model.batcher.whenIdle(1000), true);
  });

  test(`${lane}: whenIdle resolves at once when idle, and right after the last held request is answered`, async () => {
    const hold = holding();
    const model = await load(makeEngine(workers, hold.observer), await writeSumModel(await tempDir(), 'sum', 2));
    const first = await Promise.race([model.batcher.whenIdle(60_000), nextMacrotask().then(() => 'a turn later')]);
    assert.equal(first, true, 'an idle batcher resolves before the next turn');

    const events: string[] = [];
    const answered = [1, 2, 3].map((i) =>
      model.batcher.selfTest(1, [Float32Array.of(i, i, i, i)]).then(() => {
        events.push(`answer ${i}`);
        // The idle wake must not need another turn of the event loop (a poll would).
        if (events.filter((e) => e.startsWith('answer')).length === 3) setImmediate(() => events.push('next turn'));
      }),
    );
    const idle = model.batcher.whenIdle(60_000).then((v) => {
      events.push(`idle ${v}`);
      return v;
    });
    await waitFor(() => hold.held() > 0, { timeoutMs: 10_000, intervalMs: 2, message: 'a batch to run and be held' });
    for (let t = 0; t < 20; t++) await nextMacrotask();
    assert.equal(events.length, 0, `nothing answered and not idle while the batch is held: ${events.join(', ')}`);
    assert.equal(model.batcher.pending, 3);
    assert.equal(model.batcher.idle, false);
    // Release every held batch (the three may ride in one batch or more) until all are answered.
    await waitFor(
      () => {
        hold.releaseAll();
        return events.includes('next turn');
      },
      { timeoutMs: 10_000, intervalMs: 2, message: () => `the held requests to be answered (${events.join(', ')})` },
    );
    assert.equal(await idle, true);
    await Promise.all(answered);
    assert.deepEqual(events.slice(-2), ['idle true', 'next turn'], events.join(', '));
    assert.equal(model.batcher.pending, 0);
  });

  test(`${lane}: whenIdle says false at its timeout while a request is held, and true once it is answered`, async () => {
    const hold = holding();
    const model = await load(makeEngine(workers, hold.observer), await writeSumModel(await tempDir(), 'sum', 2));
    const answered = model.batcher.selfTest(1, [Float32Array.of(1, 2, 3, 4)]);
    await waitFor(() => hold.held() > 0, { timeoutMs: 10_000, intervalMs: 2, message: 'the batch to run and be held' });
    assert.equal(await model.batcher.whenIdle(30), false);
    const later = model.batcher.whenIdle(60_000);
    assert.equal(hold.releaseAll(), 1);
    assert.equal(await later, true);
    assert.deepEqual([...(await answered).outputs[0]!.data], sumExpected([[1, 2, 3, 4]], 2));
  });
}

test('sampleCheck reports the model error on its sample rows', async () => {
  // The sample rows hold indices up to 10; the gather model's table has 10 entries.
  const model = await load(makeEngine(0), await writeGatherModel(await tempDir()));
  const problem = await sampleCheck(model);
  assert.ok(problem !== null);
  assert.match(problem, /inference failed/);
});

test('sampleCheck judges only its own rows, not traffic in the same batch', async () => {
  const model = await load(makeEngine(0), await writeSumModel(await tempDir(), 'sum', 1));
  // A request whose sum is not finite rides in the same batch as the sample rows (one turn).
  const traffic = model.batcher.selfTest(1, [Float32Array.of(Number.POSITIVE_INFINITY, 0, 0, 0)]);
  const problem = await sampleCheck(model);
  assert.equal((await traffic).outputs[0]!.data[0], Number.POSITIVE_INFINITY);
  assert.equal(problem, null);
});

test('selfTest rows are internal: the observer (monitoring, canary statistics) is told they are not traffic', async () => {
  const seen: boolean[] = [];
  const observer: BatchObserver = {
    onDispatch() {},
    onComplete(batch) {
      for (const r of batch.requests) seen.push(r.internal === true);
    },
  };
  const model = await load(makeEngine(0, observer), await writeSumModel(await tempDir(), 'sum', 3));
  await model.batcher.selfTest(2, [Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8])]);
  assert.deepEqual(seen, [true]);
});
