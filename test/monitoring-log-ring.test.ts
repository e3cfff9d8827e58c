// The prediction log's shared-memory ring: records wrapping around its end in order and intact, a
// full ring refusing rows (counted as dropped by the log) and taking them again once settled, request
// ids of every length and alphabet (and id/row of multi-row requests) joining their labels, a writer
// thread and a reader thread running at once, and durability sync's committed-row count: commits
// settle only once their rows are in the file, and fail (and only they) when those rows were refused.
// A log thread that dies is replaced and loses nothing: rows it read and did not commit are read
// again, rows it committed and did not settle are skipped (the file's ring mark), and history points
// and alert events it did not acknowledge are sent again.

import assert from 'node:assert/strict';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { createRing, reached, RingReader, RingWriter } from '../src/monitoring/log-ring.js';
import { SegmentAssembler, type StreamDef } from '../src/monitoring/log-segments.js';
import { type AppendSegment, openStore } from '../src/monitoring/log-store.js';
import type { LogWorkerData } from '../src/monitoring/log-worker.js';
import { Batch } from '../src/inference/batcher.js';
import type { LoadedModel, PendingRequest } from '../src/inference/index.js';
import { Monitor, PredictionLog } from '../src/monitoring/index.js';
import { RING_STREAMS, ringRow } from './fixtures/ring-writer.js';
import { tempDir } from './e2e/server.js';
import { waitFor } from './fixtures/wait.js';

interface Row {
  variant: string;
  id: string;
  ts: number;
  score: number;
  inputs: number[];
}

/** The rows of segments, in order, as plain values. */
function rowsOf(segments: AppendSegment[]): Row[] {
  return segments.flatMap((s) => {
    const ids = JSON.parse(s.ids) as string[];
    assert.equal(ids.length, s.n);
    return ids.map((id, i) => ({
      variant: s.variant,
      id,
      ts: s.ts[i]!,
      score: s.scores[i]!,
      inputs: Array.from(s.features.subarray(i * s.width, (i + 1) * s.width)),
    }));
  });
}

const def = (variant: string, width: number): string =>
  JSON.stringify({ model: 'm', version: 1, variant, width, task: 'classification', keyId: null } satisfies StreamDef);

test('log ring: records wrap around the end of a small ring, in order, with their ids, times, scores and inputs', () => {
  const sab = createRing(4096);
  const w = new RingWriter(sab);
  const r = new RingReader(sab);
  const asm = new SegmentAssembler();
  assert.ok(w.define(0, def('a', 2)) && w.define(1, def('b', 0)));
  const expected: Row[] = [];
  const got: Row[] = [];
  let bytes = 0;
  let n = 0;
  // Bursts of 1..23 rows of 40 to ~150 bytes between reads: about 30 times round the ring.
  for (let burst = 0; burst < 400; burst++) {
    for (let k = 0; k <= burst % 23; k++, n++) {
      const stream = n % 4 === 0 ? 1 : 0;
      const id = `r${n}${'.'.repeat((n * 7) % 90)}`;
      const inputs = stream === 0 ? [n, n / 3] : [];
      assert.ok(w.row(stream, inputs.length, id, -1, 1e12 + n, n / 1000, Float32Array.from(inputs), 0), `row ${n} fits after a read`);
      expected.push({ variant: stream === 0 ? 'a' : 'b', id, ts: 1e12 + n, score: n / 1000, inputs: inputs.map(Math.fround) });
      bytes += 32 + 4 * inputs.length + id.length;
    }
    assert.equal(r.read(asm), (burst % 23) + 1);
    r.settle(r.rows, r.position);
    // Within a take, rows come back grouped by stream, each stream in order.
    const taken = rowsOf(asm.take().segments);
    for (const variant of ['a', 'b'])
      assert.deepEqual(
        taken.filter((x) => x.variant === variant),
        expected.slice(got.length).filter((x) => x.variant === variant),
      );
    got.push(...expected.slice(got.length));
  }
  assert.ok(bytes > 25 * 4096, `${bytes} bytes through a 4096-byte ring`);
  assert.equal(r.rows, n);
  assert.equal(w.rows, n);
  assert.ok(r.empty());
});

test('log ring: a full ring refuses a row without blocking, and takes rows again once they are settled', () => {
  // 1024 bytes of records, 64 bytes a row: the head may not catch up with the tail, so 15 fit.
  const sab = createRing(1024);
  const w = new RingWriter(sab);
  const r = new RingReader(sab);
  const asm = new SegmentAssembler();
  assert.ok(w.define(0, def('a', 0))); // 16 + 86 bytes of JSON: 104 bytes with padding
  const id = (i: number) => `row-${String(i).padStart(28, '0')}`; // 32 bytes + 32 of header
  let i = 0;
  while (w.row(0, 0, id(i), -1, i, i, null, 0)) i++;
  assert.equal(
    i,
    14,
    'the definition and 14 rows fill 1000 of 1024 bytes; a 15th does not fit before the end, and cannot wrap onto the unread start',
  );
  assert.equal(w.rows, 14);
  assert.equal(r.read(asm), 14);
  assert.equal(w.row(0, 0, id(99), -1, 0, 0, null, 0), false, 'rows read and not settled keep their space');
  r.settle(r.rows, r.position);
  assert.deepEqual(
    JSON.parse(asm.take().segments[0]!.ids),
    Array.from({ length: 14 }, (_, k) => id(k)),
  );
  // Room again: 15 rows now (the head wraps, then stops one record short of the tail).
  let j = 0;
  while (w.row(0, 0, id(100 + j), -1, j, j, null, 0)) j++;
  assert.equal(j, 15);
  assert.equal(r.read(asm), 15);
  r.settle(r.rows, r.position);
  assert.deepEqual(
    JSON.parse(asm.take().segments[0]!.ids),
    Array.from({ length: 15 }, (_, k) => id(100 + k)),
  );
  // A record longer than an eighth of the ring is refused even when the ring is empty.
  assert.equal(w.row(0, 0, 'x'.repeat(200), -1, 0, 0, null, 0), false);
  assert.ok(r.empty());
});

test('prediction log: rows that do not fit in the ring are dropped and counted; every row it took joins its label', async () => {
  const log = new PredictionLog({ dataDir: await tempDir(), sampleRate: 1, retentionDays: 30, flushMs: 60_000, ringBytes: 16 * 1024 });
  const s = log.stream('m', 1, 'default', 3, 'classification');
  const row = Float32Array.of(1, 2, 3);
  const kept: string[] = [];
  const lost: string[] = [];
  // One synchronous burst of 20,000 rows (about 2 MB) into a 16 KB ring: the log thread cannot keep up.
  for (let i = 0; i < 20_000; i++) (s.push(`burst-${i}`, Date.now(), 0.5, row, 0) ? kept : lost).push(`burst-${i}`);
  assert.ok(lost.length > 0, 'some rows did not fit');
  assert.equal(log.dropped, lost.length);
  assert.equal(log.logged, kept.length);
  await log.drain();
  assert.equal(log.backlog, 0);
  const fb = await log.feedback([...kept, ...lost].map((requestId) => ({ requestId, label: 1 })));
  assert.equal(fb.joined, kept.length);
  assert.deepEqual(fb.unknown, lost);
  assert.equal(log.status().dropped, lost.length);
  await log.close();
});

test('prediction log: request ids of every length and alphabet, and id/row of multi-row requests, join their labels', async () => {
  const log = new PredictionLog({ dataDir: await tempDir(), sampleRate: 1, retentionDays: 30, ringBytes: 64 * 1024 });
  const s = log.stream('m', 1, 'default', 1, 'classification');
  const ids = [
    '',
    'a',
    'x'.repeat(5000),
    'é',
    '日本語のID',
    'emoji-😀',
    'quote"back\\slash/',
    'ctl\u0001\n\t\u001f',
    'lone-\ud800-surrogate',
    'low-\udc00-x',
    'end-\ud83d',
    '{"json":[1]}',
  ];
  const now = Date.now();
  ids.forEach((id, i) => {
    assert.ok(s.push(id, now, i / 10, Float32Array.of(i), 0), `id ${JSON.stringify(id.slice(0, 20))}`);
  });
  const parts = [0, 7, 10, 99, 100, 123_456];
  for (const p of parts) assert.ok(s.push('multi', now, 0.5, Float32Array.of(p), 0, p));
  // Longer than an eighth of the 64 KB ring: refused and counted, never a partial id.
  assert.equal(s.push('y'.repeat(10_000), now, 0.5, null, 0), false);
  assert.equal(log.dropped, 1);
  const fb = await log.feedback(
    [...ids, ...parts.map((p) => `multi/${p}`), 'multi', 'multi/1', 'y'.repeat(10_000)].map((requestId) => ({ requestId, label: 1 })),
  );
  assert.deepEqual(
    fb.unknown.map((x) => x.slice(0, 20)),
    ['multi', 'multi/1', 'y'.repeat(20)],
  );
  assert.equal(fb.joined, ids.length + parts.length);
  // Each label joined its own prediction: the inputs stored with it say which.
  const train = await log.training('m');
  assert.deepEqual(
    train.map((r) => r.features[0]).sort((a, b) => a! - b!),
    [...ids.map((_, i) => i), ...parts].sort((a, b) => a - b),
  );
  await log.close();
});

test('log ring: a writer thread and a reader thread at once: every row read once, in order, intact, or counted as dropped', async () => {
  const sab = createRing(64 * 1024);
  const reader = new RingReader(sab);
  const asm = new SegmentAssembler();
  const rows = 300_000;
  const worker = new Worker(new URL('./fixtures/ring-writer.js', import.meta.url), { workerData: { sab, rows } });
  let dropped: number[] | null = null;
  const done = new Promise<void>((resolve, reject) => {
    worker.once('message', (m: { dropped: number[] }) => {
      dropped = m.dropped;
      resolve();
    });
    worker.once('error', reject);
  });
  const seen: number[][] = Array.from({ length: RING_STREAMS }, () => []);
  let reads = 0;
  let bad = 0;
  const check = () => {
    reader.read(asm);
    reader.settle(reader.rows, reader.position);
    reads++;
    for (const r of rowsOf(asm.take().segments)) {
      const i = r.ts;
      const want = ringRow(i);
      const id = want.part >= 0 ? `${want.id}/${want.part}` : want.id;
      if (
        r.variant !== `s${want.stream}` ||
        r.id !== id ||
        r.score !== want.score ||
        r.inputs.join() !== want.inputs.map(Math.fround).join()
      )
        bad++;
      seen[want.stream]!.push(i);
    }
  };
  while (dropped === null) {
    check();
    await new Promise((resolve) => setImmediate(resolve));
  }
  await done;
  check();
  await worker.terminate();
  assert.equal(bad, 0, 'rows read intact');
  for (const s of seen)
    assert.ok(
      s.every((v, k) => k === 0 || v > s[k - 1]!),
      'each stream in order',
    );
  const all = new Set(seen.flat());
  assert.equal(all.size, seen.flat().length, 'no row read twice');
  const lost = dropped! as number[];
  assert.equal(all.size + lost.length, rows, `${all.size} read + ${lost.length} dropped`);
  for (const i of lost) assert.ok(!all.has(i));
  assert.ok(reads > 10, `${reads} reads while the writer wrote`);
  assert.ok(reader.empty());
});

/** Polls `cond` until it holds, failing after `ms`. */
async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

test('prediction log: the log thread writes every burst by itself, asleep in between, while flushes and reads interleave with the writing', async () => {
  const log = new PredictionLog({ dataDir: await tempDir(), sampleRate: 1, retentionDays: 30, flushMs: 5, ringBytes: 256 * 1024 });
  const s = log.stream('m', 1, 'default', 2, 'regression');
  let n = 0;
  const reads: Promise<unknown>[] = [];
  for (let burst = 0; burst < 40; burst++) {
    // Bursts of one row, or of rows arriving over tens of milliseconds (so that some arrive while the
    // log thread writes the ones before), with a flush or a read now and then; then quiet until the log
    // thread has written everything with nothing asking it to: a lost wake would hang here.
    const ticks = burst % 4 === 0 ? 1 : 5 + (burst % 20);
    for (let t = 0; t < ticks; t++) {
      const rows = ticks === 1 ? 1 : 20 + ((burst * 37 + t * 11) % 80);
      for (let k = 0; k < rows; k++, n++) assert.ok(s.push(`b${n}`, Date.now(), n, Float32Array.of(n, -n), 0));
      if (t % 7 === 3) log.flush();
      if (t % 7 === 5) reads.push(log.feedback([{ requestId: `b${n - 1}`, label: 1 }]));
      await new Promise((r) => setTimeout(r, 1));
    }
    await until(`burst ${burst} written`, () => log.backlog === 0);
  }
  for (const r of await Promise.all(reads)) assert.equal((r as { joined: number }).joined, 1);
  assert.equal(log.logged, n);
  assert.equal(log.dropped, 0);
  const fb = await log.feedback(Array.from({ length: n }, (_, i) => ({ requestId: `b${i}`, label: i })));
  assert.equal(fb.joined, n);
  const rows = await log.training('m');
  assert.equal(rows.length, n);
  assert.ok(rows.every((r) => r.features[0] === r.label && r.features[1] === -r.label && r.score === r.label));
  await log.close();
});

test("durability sync: each turn's commit settles once its rows are in the file; rows the log thread refuses fail their commit, and only theirs", async () => {
  const dir = await tempDir();
  // monitoring.db a directory: every open fails (EISDIR) until it is removed.
  await mkdir(join(dir, 'monitoring.db'));
  const log = new PredictionLog({ dataDir: dir, sampleRate: 1, retentionDays: 30, durability: 'sync', flushMs: 60_000 });
  const s = log.stream('m', 1, 'default', 1, 'classification');
  const push = (id: string) => assert.ok(s.push(id, Date.now(), 0.5, Float32Array.of(1), 0));
  push('refused-1');
  push('refused-2');
  await assert.rejects(
    log.commit(),
    (e: Error & { code?: string }) => e.code === 'STORE_UNAVAILABLE' && /could not commit/.test(e.message),
  );
  assert.equal(log.backlog, 0, 'refused rows are settled, not held');
  assert.equal(log.dropped, 0, 'refused rows were answered with an error, not dropped');
  assert.equal(log.status().state, 'failing');

  await rm(join(dir, 'monitoring.db'), { recursive: true });
  // Commits of successive turns: each waits for its own rows, which are in the file when it settles.
  const db = () => new Database(join(dir, 'monitoring.db'), { readonly: true });
  for (let turn = 0; turn < 5; turn++) {
    for (let k = 0; k < 100; k++) push(`t${turn}-${k}`);
    await log.commit();
    const conn = db();
    assert.equal(conn.prepare("SELECT count(*) FROM prediction_ids WHERE request_id LIKE 't%'").pluck().get(), (turn + 1) * 100);
    conn.close();
  }
  assert.equal(log.status().state, 'ok');
  const fb = await log.feedback(['refused-1', 'refused-2', 't0-0', 't4-99'].map((requestId) => ({ requestId, label: 1 })));
  assert.deepEqual(fb.unknown, ['refused-1', 'refused-2']);
  assert.equal(fb.joined, 2);
  await log.close();
});

test("prediction log: each prediction's segment carries the API key id it came with, requests of several keys in one batch", async () => {
  const dir = await tempDir();
  const log = new PredictionLog({ dataDir: dir, sampleRate: 1, retentionDays: 30 });
  const model = {
    name: 'm',
    version: '1',
    versionNumber: 1,
    state: 'ready',
    config: { task: 'classification', threshold: 0.5 },
    features: { names: ['x'], input: [0], column: [0], categorical: [false], single: true },
    scoreOutput: { output: 0, column: 0 },
  } as unknown as LoadedModel;
  const vm = new Monitor({ log, processMetrics: false }).version(model);
  // Keys change from request to request, back and forth, within batches and across them (the
  // monitor keeps the last stream at hand: a stale one would put rows under the wrong key).
  const keys = [undefined, 'scorer', 'scorer', 'batch-job', undefined, 'scorer', 'batch-job', 'batch-job'];
  const want = new Map<string, string | null>();
  for (let b = 0; b < 3; b++) {
    const batch = new Batch([new Float32Array(keys.length)], [[1]], '', keys.length);
    keys.forEach((keyId, i) => {
      const requestId = `b${b}-r${i}`;
      want.set(requestId, keyId ?? null);
      const r: PendingRequest = {
        rows: 1,
        enqueuedAt: 0,
        deadline: Infinity,
        settled: false,
        requestId,
        variant: 'default',
        keyId,
        resolve: () => undefined,
        reject: () => undefined,
      };
      batch.requests.push(r);
      batch.rowStarts.push(batch.rows);
      batch.rows += 1;
    });
    const scores = Float32Array.from(keys, (_, i) => i / keys.length);
    void vm.onComplete(batch, { outputs: [{ name: 'p', datatype: 'FP32', dims: [keys.length, 1], data: scores }], computeMs: 0 });
  }
  await log.drain();
  assert.equal(log.logged, want.size);
  await log.close();
  const db = new Database(join(dir, 'monitoring.db'), { readonly: true });
  try {
    const got = new Map(
      (
        db.prepare('SELECT p.request_id AS id, s.key_id AS key FROM prediction_ids p JOIN segments s ON s.id = p.loc / 65536').all() as {
          id: string;
          key: string | null;
        }[]
      ).map((r) => [r.id, r.key]),
    );
    assert.deepEqual(got, want);
    assert.deepEqual(db.prepare('SELECT DISTINCT key_id FROM segments ORDER BY key_id').pluck().all(), [null, 'batch-job', 'scorer']);
  } finally {
    db.close();
  }
});

/** `p`, or a failure after `ms` (a pending timer also keeps the event loop alive: the log thread is unref'd). */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A PredictionLog's private ends, for killing its log thread the ways it can die. */
type Internals = { ring: RingWriter; worker: Worker };

for (const how of ['a bug throws in it (a row of a stream never defined)', 'it exits unasked'] as const) {
  test(`prediction log: when its thread dies (${how}), waiting commits and reads fail at once, and a new thread writes every row but the one that killed it`, async () => {
    const errors: string[] = [];
    const logger = { error: (_: object, msg: string) => void errors.push(msg), warn: () => undefined };
    const log = new PredictionLog({
      dataDir: await tempDir(),
      sampleRate: 1,
      retentionDays: 30,
      durability: 'sync',
      flushMs: 60_000,
      logger,
    });
    const internals = log as unknown as Internals;
    try {
      const s = log.stream('m', 1, 'default', 1, 'classification');
      for (let i = 0; i < 10; i++) assert.ok(s.push(`before-${i}`, Date.now(), 0.5, Float32Array.of(i), 0));
      await log.commit();
      // Rows the thread has not written, a commit and a read waiting on it.
      for (let i = 0; i < 5; i++) assert.ok(s.push(`pending-${i}`, Date.now(), 0.5, Float32Array.of(i), 0));
      const first = internals.worker;
      const exited = new Promise((resolve) => first.once('exit', resolve));
      // The bug kills the thread while a commit and a read wait on it; the exit comes first, and they
      // are asked while no thread runs (the replacement starts after a pause).
      if (how === 'it exits unasked') {
        void first.terminate();
        await within(10_000, 'the log thread to exit', exited);
      } else assert.ok(internals.ring.row(99, 0, 'stray', -1, Date.now(), 0.5, null, 0));
      const commit = log.commit();
      const read = log.feedback([{ requestId: 'before-0', label: 1 }]);
      const stopped = (e: Error & { code?: string }) => e.code === 'STORE_UNAVAILABLE' && /prediction log thread stopped/.test(e.message);
      const [c, r] = await within(10_000, 'the commit and the read to fail', Promise.allSettled([commit, read]));
      assert.ok(c.status === 'rejected' && stopped(c.reason), String((c as PromiseRejectedResult).reason));
      // The read fails either way: the thread gone, or (the bug) it meets the stray row first and says so.
      assert.equal(r.status, 'rejected');
      await within(10_000, 'the log thread to exit', exited);
      // Replaced once either way: the row that killed the thread is skipped, so it does not kill the next one.
      const restarts = 1;
      await waitFor(() => log.restarts === restarts && log.status().state === 'ok', {
        timeoutMs: 10_000,
        message: () => `restart ${restarts} writing: ${JSON.stringify(log.status())}`,
      });
      assert.equal(log.restarts, restarts);
      const st = log.status();
      assert.equal(st.restarts, restarts);
      assert.match(st.last_error!, /prediction log thread stopped/);
      assert.equal(errors.filter((m) => /thread stopped/.test(m)).length, restarts, 'each death said once');
      // Every pending row is written by the new thread; only the stray row is lost, counted.
      const dropped = log.dropped;
      const joined = (await log.feedback(Array.from({ length: 5 }, (_, i) => ({ requestId: `pending-${i}`, label: 1 })))).joined;
      assert.equal(joined, 5, 'the rows the dead thread had not committed are written');
      assert.equal(dropped, how === 'it exits unasked' ? 0 : 1, 'only the row that killed the thread is dropped');
      if (how !== 'it exits unasked')
        assert.ok(
          errors.some((m) => /the prediction it died reading is skipped/.test(m)),
          errors.join('\n'),
        );
      // Rows committed before the death are there; later rows are written and committed as before.
      assert.equal((await log.feedback([{ requestId: 'before-1', label: 0 }])).joined, 1);
      assert.ok(s.push('after', Date.now(), 0.5, Float32Array.of(1), 0));
      await within(10_000, 'a commit after the restart', log.commit());
      assert.equal((await log.feedback([{ requestId: 'after', label: 1 }])).joined, 1);
      assert.equal(log.backlog, 0);
      await log.close();
      assert.equal(log.dropped, dropped, 'close counts nothing twice');
    } finally {
      // A failed assertion must not leave the thread (and this file) running.
      if (!log.closed) await log.close();
    }
  });
}

test('log ring: rows read and not settled stay in the ring for the next reader; a read that fails part way keeps nothing, and the row it failed on is skipped by the next reader; only rows released early die with their reader', () => {
  const sab = createRing(4096);
  const w = new RingWriter(sab);
  let r = new RingReader(sab);
  const asm = new SegmentAssembler();
  const ids = (a: SegmentAssembler) => rowsOf(a.take().segments).map((x) => x.id);
  assert.ok(w.define(0, def('a', 1)));
  assert.ok(w.row(0, 1, 'r0', -1, 1, 0.5, Float32Array.of(0), 0));
  assert.equal(r.read(asm), 1);
  assert.deepEqual(ids(asm), ['r0']);
  // The reader dies before settling r0: nothing is lost, and the next reader reads it again.
  assert.deepEqual(w.abandon(false), { from: 0, through: 0, refusals: 0 });
  r = new RingReader(sab);
  assert.equal(r.rows, 0);
  const again = new SegmentAssembler();
  assert.equal(r.read(again), 1, 'the definition and r0 are read again');
  assert.deepEqual(ids(again), ['r0']);
  r.settle(r.rows, r.position);
  assert.equal(w.settled(), 1);
  assert.equal(w.used(), 0, 'settling frees the space');
  // A record the reader cannot read: the rows before it are not kept, nor freed.
  assert.ok(w.row(0, 1, 'r1', -1, 2, 0.5, Float32Array.of(1), 0));
  assert.ok(w.row(7, 0, 'bad', -1, 3, 0.5, null, 0)); // a stream never defined
  assert.throws(() => r.read(again), /stream 7, which was never defined/);
  again.discard();
  assert.equal(again.take().rows, 0, 'the rows read before the bad record are not kept');
  assert.equal(w.freed(), 1, 'nor freed');
  // The bad row is marked: the next reader counts it and reads past it.
  assert.ok(w.skipBad());
  assert.equal(w.skipBad(), false, 'marked once');
  assert.deepEqual(w.abandon(false), { from: 1, through: 1, refusals: 0 });
  const skipping = new RingReader(sab);
  const past = new SegmentAssembler();
  past.define(0, def('a', 1));
  assert.equal(skipping.read(past), 2, 'r1, and the skipped row counted');
  assert.deepEqual(ids(past), ['r1']);
  // With `all`, the ring is skipped past everything it holds: r1 and the bad row, counted as one refusal.
  assert.deepEqual(w.abandon(true), { from: 1, through: 3, refusals: 1 });
  r = new RingReader(sab);
  assert.equal(r.rows, 3);
  // Rows released before they are settled (writes failing: held in the reader's memory) die with it.
  assert.ok(w.row(0, 1, 'r3', -1, 4, 0.5, Float32Array.of(3), 0));
  assert.ok(w.row(0, 1, 'r4', -1, 5, 0.5, Float32Array.of(4), 0));
  const fresh = new SegmentAssembler();
  fresh.define(0, def('a', 1));
  assert.equal(r.read(fresh, 4), 1, 'rows before row 4 only');
  r.release();
  assert.equal(w.freed(), 4);
  assert.equal(r.read(fresh), 1);
  assert.deepEqual(ids(fresh), ['r3', 'r4']);
  assert.deepEqual(w.abandon(false), { from: 3, through: 4, refusals: 2 }, 'r3 is lost; r4 is not');
  r = new RingReader(sab);
  assert.equal(r.rows, 4);
  const last = new SegmentAssembler();
  last.define(0, def('a', 1));
  r.read(last);
  assert.deepEqual(ids(last), ['r4']);
});

test('prediction log: a thread that dies while its write waits on a locked file loses nothing: the next one writes the rows it had read and the history points and alert events it had not acknowledged', async () => {
  const errors: string[] = [];
  const logger = { error: (_: object, msg: string) => void errors.push(msg), warn: () => undefined };
  const dir = await tempDir();
  const log = new PredictionLog({ dataDir: dir, sampleRate: 1, retentionDays: 30, flushMs: 5, logger });
  const internals = log as unknown as Internals;
  const lock = new Database(join(dir, 'monitoring.db'));
  try {
    const s = log.stream('m', 1, 'default', 1, 'classification');
    assert.ok(s.push('before-0', Date.now(), 0.5, Float32Array.of(0), 0));
    await log.drain();
    // Another connection holds the write lock: the thread reads the rows and waits on the file.
    lock.exec('BEGIN IMMEDIATE');
    for (let i = 0; i < 5; i++) assert.ok(s.push(`pending-${i}`, Date.now(), 0.5, Float32Array.of(i), 0));
    log.flush();
    await waitFor(() => log.status().state === 'failing', { timeoutMs: 20_000, message: 'the write to fail on the lock' });
    assert.equal(log.backlog, 5);
    // Writes the thread gets while failing: queued behind the rows, retried with them.
    log.putHistory([{ model: 'm', version: 1, at: 60_000, data: JSON.stringify({ requests: 7 }) }]);
    log.saveAlert('rule-1', 'firing', { id: 'rule-1', state: 'firing' }, 120_000);
    await waitFor(() => log.status().errors >= 2, { timeoutMs: 20_000, message: 'the retry to fail on the lock' });
    const first = internals.worker;
    await within(20_000, 'the log thread to stop', first.terminate());
    await waitFor(() => log.restarts === 1, { timeoutMs: 10_000, message: 'a new log thread' });
    lock.exec('COMMIT');
    await waitFor(() => log.status().state === 'ok' && log.backlog === 0, {
      timeoutMs: 20_000,
      message: () => `the new thread to write: ${JSON.stringify(log.status())}`,
    });
    assert.equal(log.dropped, 0, `nothing dropped: ${errors.join('\n')}`);
    const labels = Array.from({ length: 5 }, (_, i) => ({ requestId: `pending-${i}`, label: 1 }));
    assert.equal((await log.feedback(labels)).joined, 5, 'every row the dead thread had read is written');
    assert.deepEqual(
      (await log.history('m', 1, 0, 1e6)).map((p) => [p.at, p.requests]),
      [[60_000, 7]],
    );
    const events = (await log.alertHistory(10, 0)) as { id: string }[];
    assert.deepEqual(
      events.map((e) => e.id),
      ['rule-1'],
      'the alert event once',
    );
    assert.equal(errors.filter((m) => /thread stopped/.test(m) && /no prediction is lost/.test(m)).length, 1, errors.join('\n'));
  } finally {
    if (lock.inTransaction) lock.exec('ROLLBACK');
    lock.close();
    if (!log.closed) await log.close();
  }
});

for (const same of [true, false]) {
  test(`log thread: a replacement skips the rows its predecessor committed and did not settle (the file's ring mark${same ? '' : "; another ring's mark is ignored"})`, async () => {
    const dir = await tempDir();
    const file = join(dir, 'monitoring.db');
    const sab = createRing(64 * 1024);
    const w = new RingWriter(sab);
    assert.ok(w.define(0, def('a', 1)));
    for (let i = 0; i < 10; i++) assert.ok(w.row(0, 1, `r${i}`, -1, 1000 + i, 0.5, Float32Array.of(i), 0));
    // The dead thread: it read and committed 6 rows (with the mark), and died before settling them.
    const r = new RingReader(sab);
    const asm = new SegmentAssembler();
    assert.equal(r.read(asm, 6), 6);
    const { segments, rows } = asm.take();
    const db = new Database(file);
    openStore(db, false).writeGroup([{ kind: 'append', through: 6, position: r.position, segments, rows }], {
      ring: same ? w.id : w.id ^ 1,
      through: 6,
    });
    db.close();
    assert.deepEqual(w.abandon(false), { from: 0, through: 0, refusals: 0 });
    const data: LogWorkerData = { file, durability: 'async', ring: sab, flushMs: 5, restart: { streams: [[0, def('a', 1)]] } };
    const worker = new Worker(new URL('../src/monitoring/log-worker.js', import.meta.url), { workerData: data });
    try {
      w.urgent();
      await waitFor(() => w.settled() === 10, { timeoutMs: 10_000, message: () => `rows settled: ${w.settled()}` });
    } finally {
      await worker.terminate();
    }
    const check = new Database(file, { readonly: true });
    try {
      assert.deepEqual(
        check.prepare('SELECT request_id FROM prediction_ids ORDER BY loc').pluck().all(),
        Array.from({ length: 10 }, (_, i) => `r${i}`),
      );
      assert.equal(check.prepare('SELECT sum(n) FROM segments').pluck().get(), same ? 10 : 16, 'rows stored');
    } finally {
      check.close();
    }
  });
}

test('log ring: a row that threw in a read the thread survived is no longer marked once a later read gets past it', () => {
  const sab = createRing(1024);
  const w = new RingWriter(sab);
  const r = new RingReader(sab);
  let fail = true;
  const seen: number[] = [];
  const visitor = {
    row(ring: RingReader, at: number) {
      if (fail) {
        fail = false;
        throw new RangeError('Array buffer allocation failed');
      }
      seen.push(ring.f64[(at >> 3) + 2]!);
    },
    define: () => undefined,
    cut: () => undefined,
  };
  assert.ok(w.define(0, def('a', 1)));
  assert.ok(w.row(0, 1, 'a', -1, 1, 0.5, Float32Array.of(1), 0));
  assert.throws(() => r.read(visitor), /allocation failed/);
  // The thread lives on (a question's read failed): the next read gets through, and the ring moves round.
  r.read(visitor);
  r.settle(r.rows, r.position);
  for (let i = 0; i < 40; i++) {
    assert.ok(w.row(0, 1, `x${i}`, -1, 100 + i, 0.25, Float32Array.of(i), 0));
    r.read(visitor);
    r.settle(r.rows, r.position);
  }
  assert.ok(w.row(0, 1, 'victim', -1, 999, 0.75, Float32Array.of(9), 0));
  // The thread then dies of something else: no row is marked, the victim is read intact.
  assert.equal(w.skipBad(), false);
  seen.length = 0;
  new RingReader(sab).read(visitor);
  assert.deepEqual(seen, [999]);
});

test('prediction log: a row that kills the thread while the log is quiet is settled by the next thread (not left in the backlog, not counted twice)', async () => {
  const errors: string[] = [];
  const logger = { error: (_: object, msg: string) => void errors.push(msg), warn: () => undefined };
  const log = new PredictionLog({ dataDir: await tempDir(), sampleRate: 1, retentionDays: 30, flushMs: 5, logger });
  const internals = log as unknown as Internals;
  try {
    const s = log.stream('m', 1, 'default', 1, 'classification');
    for (let i = 0; i < 3; i++) assert.ok(s.push(`r${i}`, Date.now(), 0.5, Float32Array.of(i), 0));
    await log.drain();
    // The last row logged before a quiet spell is the one that kills the thread.
    assert.ok(internals.ring.row(99, 0, 'stray', -1, Date.now(), 0.5, null, 0));
    internals.ring.urgent();
    await waitFor(() => log.restarts === 1 && log.status().state === 'ok' && log.backlog === 0, {
      timeoutMs: 10_000,
      message: () => `the new thread to settle the skipped row: ${JSON.stringify(log.status())}`,
    });
    assert.equal(log.dropped, 1);
    await log.close();
    assert.equal(log.dropped, 1, 'close counts the skipped row no second time');
    assert.ok(!errors.some((m) => /could not be written before shutdown/.test(m)), errors.join('\n'));
  } finally {
    if (!log.closed) await log.close();
  }
});

test('durability sync: a new log thread that cannot open the file refuses the waiting rows (503) instead of leaving their commits waiting', async () => {
  const dir = await tempDir();
  const logger = { error: () => undefined, warn: () => undefined };
  const log = new PredictionLog({ dataDir: dir, sampleRate: 1, retentionDays: 30, durability: 'sync', flushMs: 5, logger });
  const internals = log as unknown as Internals;
  try {
    const s = log.stream('m', 1, 'default', 1, 'classification');
    assert.ok(s.push('r0', Date.now(), 0.5, Float32Array.of(0), 0));
    await log.commit();
    // The file cannot be opened any more (a directory where it was), and the thread is replaced.
    await rename(join(dir, 'monitoring.db'), join(dir, 'moved.db'));
    await mkdir(join(dir, 'monitoring.db'));
    await within(10_000, 'the log thread to stop', internals.worker.terminate());
    await waitFor(() => log.restarts === 1, { timeoutMs: 10_000, message: 'a new log thread' });
    assert.ok(s.push('r1', Date.now(), 0.5, Float32Array.of(1), 0));
    const commit = await within(
      10_000,
      'the commit to be answered',
      log.commit().then(
        () => null,
        (e: Error & { code?: string }) => e,
      ),
    );
    assert.ok(commit !== null && commit.code === 'STORE_UNAVAILABLE', String(commit));
    assert.match(commit.message, /could not commit this prediction/);
    assert.equal(log.backlog, 0);
  } finally {
    if (!log.closed) await log.close();
  }
});

test('committed-row counts compare across the int32 wrap', () => {
  assert.ok(reached(5, 5));
  assert.ok(reached(6, 5));
  assert.ok(!reached(4, 5));
  // 2^31 - 2 rows, then 3 more: the counter wraps to -2^31 + 1, which is after.
  const before = 2 ** 31 - 2;
  const after = (before + 3) | 0;
  assert.ok(after < 0);
  assert.ok(reached(after, before));
  assert.ok(!reached(before, after));
});
