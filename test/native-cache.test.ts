// The native feature cache from JS: semantics of the wrapper over the real addon, and one store
// shared by the main thread and real worker_threads. The store is process-wide, so every test
// uses its own key prefix and reads counters as differences.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { BatchReadBuffer, NativeCache } from '../src/features/native-cache.js';
import { isStressValue, stressValue, type WorkerReply, type WorkerRequest } from './native-cache-worker.js';
import { elapse } from './fixtures/wait.js';

const SHARDS = 64;
const MAX_ENTRIES = 100_000;
const MAX_BYTES = 64 * 1024 * 1024;

const cache = new NativeCache();
// First use in this process: this call fixes the shard count.
assert.equal(cache.configure({ shards: SHARDS, maxEntries: MAX_ENTRIES, maxBytes: MAX_BYTES }), true);

const bytes = (text: string): Buffer => Buffer.from(text);
const charge = (key: string, valueLength: number): number => Buffer.byteLength(key) + valueLength + cache.entryOverheadBytes;

function restoreLimits(): void {
  cache.clear();
  assert.equal(cache.configure({ maxEntries: MAX_ENTRIES, maxBytes: MAX_BYTES }), true);
}

test('set, get, overwrite, delete and clear', () => {
  cache.clear();
  assert.equal(cache.get('basic:a'), undefined);
  assert.equal(cache.set('basic:a', bytes('alpha')), true);
  assert.equal(cache.set('basic:b', new Uint8Array([0, 1, 2, 255])), true);
  assert.deepEqual(cache.get('basic:a'), bytes('alpha'));
  assert.deepEqual(cache.get('basic:b'), Buffer.from([0, 1, 2, 255]));

  // A copy is stored: changing the source afterwards changes nothing.
  const source = bytes('mutable');
  cache.set('basic:c', source);
  source.fill(0);
  assert.equal(cache.get('basic:c')?.toString(), 'mutable');

  // A value written from a view with a byte offset stores just the view.
  const backing = bytes('xxhelloxx');
  cache.set('basic:view', backing.subarray(2, 7));
  assert.equal(cache.get('basic:view')?.toString(), 'hello');

  // Values returned by get() are independent of later reads.
  const first = cache.get('basic:a');
  cache.set('basic:a', bytes('ALPHA'));
  assert.equal(first?.toString(), 'alpha');
  assert.equal(cache.get('basic:a')?.toString(), 'ALPHA');

  // Overwrite with a different size, empty value, unicode and long keys.
  cache.set('basic:a', bytes('a much longer value than before'));
  assert.equal(cache.get('basic:a')?.toString(), 'a much longer value than before');
  cache.set('basic:empty', new Uint8Array(0));
  assert.deepEqual(cache.get('basic:empty'), Buffer.alloc(0));
  cache.set('basic:ключ:😀', bytes('unicode'));
  assert.equal(cache.get('basic:ключ:😀')?.toString(), 'unicode');
  assert.equal(cache.get('basic:ключ:'), undefined);
  const longKey = `basic:${'k'.repeat(10_000)}`;
  cache.set(longKey, bytes('long'));
  assert.equal(cache.get(longKey)?.toString(), 'long');
  assert.equal(cache.get(longKey.slice(0, -1)), undefined);

  assert.equal(cache.delete('basic:b'), true);
  assert.equal(cache.delete('basic:b'), false);
  assert.equal(cache.get('basic:b'), undefined);

  cache.clear();
  assert.equal(cache.stats().entries, 0);
  assert.equal(cache.stats().bytes, 0);
  assert.equal(cache.get('basic:a'), undefined);
});

test('get() returns large values and many small ones intact', () => {
  cache.clear();
  const large = Buffer.alloc(100_000);
  for (let i = 0; i < large.length; i++) large[i] = (i * 31) & 255;
  cache.set('large:v', large);
  assert.deepEqual(cache.get('large:v'), large);
  // Enough small reads to roll over the shared slab several times.
  for (let i = 0; i < 500; i++) cache.set(`large:small:${i}`, Buffer.alloc(100 + (i % 200), i & 255));
  const kept: Buffer[] = [];
  for (let i = 0; i < 500; i++) kept.push(cache.get(`large:small:${i}`)!);
  kept.forEach((value, i) => {
    assert.deepEqual(value, Buffer.alloc(100 + (i % 200), i & 255));
  });
});

test('getMany returns hits in order and undefined for misses', () => {
  cache.clear();
  cache.setMany(['many:a', 'many:b', 'many:c'], [bytes('A'), bytes('BB'), bytes('')]);
  const values = cache.getMany(['many:a', 'many:missing', 'many:c', 'many:b', 'many:a']);
  assert.deepEqual(
    values.map((v) => v?.toString()),
    ['A', undefined, '', 'BB', 'A'],
  );
  assert.deepEqual(cache.getMany([]), []);
  assert.deepEqual(
    cache.getMany(['many:b']).map((v) => v?.toString()),
    ['BB'],
  );

  // Keys containing the separator the fast path joins with still work (array fallback).
  cache.set('many:with\u001fsep', bytes('sep'));
  assert.deepEqual(
    cache.getMany(['many:a', 'many:with\u001fsep', 'many:with']).map((v) => v?.toString()),
    ['A', 'sep', undefined],
  );
  assert.equal(cache.getMany(['many:with\u001fsep'])[0]?.toString(), 'sep');

  // Returned values survive later reads.
  const held = cache.getMany(['many:a', 'many:b']);
  cache.getMany(['many:c', 'many:c', 'many:c']);
  assert.deepEqual(
    held.map((v) => v?.toString()),
    ['A', 'BB'],
  );
});

test('getManyInto fills offsets/lengths and grows its buffer', () => {
  cache.clear();
  const keys = Array.from({ length: 50 }, (_, i) => `into:${i}`);
  keys.forEach((key, i) => {
    if (i % 5 !== 0) cache.set(key, Buffer.alloc(1000 + i, i));
  });
  const out = new BatchReadBuffer(256, 2); // far too small: must grow both arrays
  const hits = cache.getManyInto(keys, out);
  assert.equal(hits, 40);
  assert.equal(out.count, 50);
  let expectedOffset = 0;
  for (let i = 0; i < keys.length; i++) {
    if (i % 5 === 0) {
      assert.equal(out.meta[2 * i], -1);
      assert.equal(out.has(i), false);
      assert.equal(out.value(i), undefined);
    } else {
      assert.equal(out.meta[2 * i], expectedOffset);
      assert.equal(out.meta[2 * i + 1], 1000 + i);
      assert.deepEqual(out.value(i), Buffer.alloc(1000 + i, i));
      expectedOffset += 1000 + i;
    }
  }
  assert.equal(out.bytes, expectedOffset);
  assert.ok(out.data.length >= expectedOffset);
});

test('entries expire after their TTL and are never returned', async () => {
  cache.clear();
  const before = cache.stats();
  cache.set('ttl:short', bytes('short'), 100);
  cache.set('ttl:long', bytes('long'), 60_000);
  cache.set('ttl:none', bytes('none'));
  cache.setMany(['ttl:many1', 'ttl:many2'], [bytes('m1'), bytes('m2')], 100);
  assert.equal(cache.get('ttl:short')?.toString(), 'short');
  // Elapsed time is the subject in this test (TTLs on the addon's own clock, which takes no injected one).
  await elapse(150);
  assert.equal(cache.get('ttl:short'), undefined);
  assert.deepEqual(
    cache.getMany(['ttl:many1', 'ttl:long', 'ttl:many2', 'ttl:none']).map((v) => v?.toString()),
    [undefined, 'long', undefined, 'none'],
  );
  const after = cache.stats();
  assert.equal(after.expirations - before.expirations, 3);
  assert.equal(after.entries, 2); // expired entries were removed on access
  // An expired entry is counted once, and a delete of it reports false.
  cache.set('ttl:gone', bytes('x'), 1);
  await elapse(10);
  assert.equal(cache.delete('ttl:gone'), false);
  assert.equal(cache.stats().expirations - before.expirations, 4);
  // Overwriting resets the TTL.
  cache.set('ttl:refresh', bytes('1'), 50);
  await elapse(30);
  cache.set('ttl:refresh', bytes('2'), 500);
  await elapse(40);
  assert.equal(cache.get('ttl:refresh')?.toString(), '2');

  assert.throws(() => cache.set('ttl:bad', bytes('x'), -1), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => cache.set('ttl:bad', bytes('x'), Number.NaN), { code: 'ERR_OUT_OF_RANGE' });
});

test('evicts least recently used entries by count', () => {
  cache.clear();
  const perShard = 10;
  assert.equal(cache.configure({ maxEntries: perShard * SHARDS }), true);
  try {
    const before = cache.stats();
    const total = 5000;
    for (let i = 0; i < total; i++) cache.set(`count:${i}`, bytes(`v${i}`));
    const stats = cache.stats();
    assert.equal(stats.maxEntries, perShard * SHARDS);
    assert.ok(stats.entries <= perShard * SHARDS, `entries ${stats.entries}`);
    assert.ok(stats.entries > perShard * SHARDS * 0.9, `entries ${stats.entries}`);
    assert.equal(stats.evictions - before.evictions, total - stats.entries);
    // The most recent writes are all present, the oldest all gone.
    for (let i = total - perShard; i < total; i++) assert.equal(cache.get(`count:${i}`)?.toString(), `v${i}`);
    for (let i = 0; i < 100; i++) assert.equal(cache.get(`count:${i}`), undefined);

    // A read refreshes an entry: it outlives writes that evict everything older in its shard.
    cache.clear();
    cache.set('count:kept', bytes('kept'));
    for (let i = 0; i < total; i++) {
      if (i % 50 === 0) assert.equal(cache.get('count:kept')?.toString(), 'kept');
      cache.set(`count:${i}`, bytes('x'));
    }
    assert.equal(cache.get('count:kept')?.toString(), 'kept');
  } finally {
    restoreLimits();
  }
});

test('evicts by byte budget, counting key + value + overhead', () => {
  cache.clear();
  const perShardBytes = 2048;
  assert.equal(cache.configure({ maxBytes: perShardBytes * SHARDS }), true);
  try {
    const before = cache.stats();
    const value = Buffer.alloc(300, 7);
    for (let i = 0; i < 3000; i++) cache.set(`bytes:${i}`, value);
    const stats = cache.stats();
    assert.ok(stats.bytes <= perShardBytes * SHARDS);
    const perEntry = charge('bytes:0000', 300); // keys here are 7-10 bytes
    assert.ok(stats.entries <= Math.floor(perShardBytes / charge('bytes:0', 300)) * SHARDS);
    assert.ok(stats.entries >= Math.floor(perShardBytes / perEntry) * SHARDS * 0.9);
    assert.equal(stats.evictions - before.evictions, 3000 - stats.entries);
    assert.equal(cache.get('bytes:2999')?.length, 300);
    // An entry larger than a shard's budget is refused.
    assert.equal(cache.set('bytes:huge', Buffer.alloc(perShardBytes)), false);
    assert.equal(cache.get('bytes:huge'), undefined);
  } finally {
    restoreLimits();
  }
});

test('stats report hits, misses and exact bytes', () => {
  cache.clear();
  const before = cache.stats();
  cache.set('stats:a', Buffer.alloc(100));
  cache.set('stats:bb', Buffer.alloc(50));
  cache.set('stats:a', Buffer.alloc(20)); // overwrite adjusts bytes
  cache.get('stats:a');
  cache.get('stats:nope');
  cache.getMany(['stats:a', 'stats:bb', 'stats:zz']);
  const after = cache.stats();
  assert.equal(after.entries, 2);
  assert.equal(after.bytes, charge('stats:a', 20) + charge('stats:bb', 50));
  assert.equal(after.hits - before.hits, 3);
  assert.equal(after.misses - before.misses, 2);
  assert.equal(after.shards, SHARDS);
  assert.equal(after.maxEntries, MAX_ENTRIES);
  assert.equal(after.maxBytes, MAX_BYTES);
});

test('configure keeps the first shard count and validates limits', () => {
  assert.equal(cache.configure({ shards: SHARDS / 2 }), false);
  assert.equal(cache.configure({ shards: SHARDS }), true);
  assert.equal(cache.stats().shards, SHARDS);
  assert.throws(() => cache.configure({ maxEntries: 0 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => cache.configure({ maxEntries: SHARDS - 1 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => cache.configure({ maxBytes: 1.5 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.equal(cache.stats().maxEntries, MAX_ENTRIES);
  assert.throws(() => cache.set(42 as unknown as string, bytes('x')), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => cache.set('k', 'text' as unknown as Uint8Array), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => cache.setMany(['a', 'b'], [bytes('x')]), { code: 'ERR_OUT_OF_RANGE' });
});

// ---- sharing across threads -------------------------------------------------------------------

class CacheWorker {
  readonly #worker: Worker;
  constructor() {
    this.#worker = new Worker(new URL('./native-cache-worker.js', import.meta.url));
  }
  ask(request: WorkerRequest): Promise<WorkerReply> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#worker.once('error', onError);
      this.#worker.once('message', (reply: WorkerReply) => {
        this.#worker.off('error', onError);
        resolve(reply);
      });
      this.#worker.postMessage(request);
    });
  }
  async close(): Promise<number> {
    const exited = new Promise<number>((resolve) => this.#worker.once('exit', resolve));
    this.#worker.postMessage('exit');
    return exited;
  }
}

test("a worker thread and the main thread see each other's writes", async () => {
  cache.clear();
  cache.set('shared:from-main', bytes('written by main'));
  const worker = new CacheWorker();
  try {
    assert.deepEqual(await worker.ask({ op: 'get', key: 'shared:from-main' }), {
      op: 'get',
      value: bytes('written by main').toString('hex'),
    });
    assert.deepEqual(await worker.ask({ op: 'set', key: 'shared:from-worker', value: bytes('written by worker').toString('hex') }), {
      op: 'set',
      stored: true,
    });
    assert.equal(cache.get('shared:from-worker')?.toString(), 'written by worker');

    // Main overwrites and deletes; the worker sees both at once.
    cache.set('shared:from-worker', bytes('overwritten by main'));
    cache.delete('shared:from-main');
    assert.deepEqual(await worker.ask({ op: 'getMany', keys: ['shared:from-worker', 'shared:from-main'] }), {
      op: 'getMany',
      values: [bytes('overwritten by main').toString('hex'), null],
    });
    assert.deepEqual(await worker.ask({ op: 'stats' }), { op: 'stats', entries: cache.stats().entries });

    // A TTL set by the worker is honoured on the main thread.
    await worker.ask({ op: 'set', key: 'shared:ttl', value: '01', ttlMs: 100 });
    assert.deepEqual(cache.get('shared:ttl'), Buffer.from([1]));
    // Elapsed time is the subject: the 100 ms TTL runs out.
    await elapse(150);
    assert.equal(cache.get('shared:ttl'), undefined);
  } finally {
    assert.equal(await worker.close(), 0);
  }
  // The worker's module instance is gone; its writes stay in the process-wide store.
  assert.equal(cache.get('shared:from-worker')?.toString(), 'overwritten by main');
});

test('concurrent writers and readers on several threads keep values intact', async () => {
  cache.clear();
  const prefix = 'stress:';
  const keys = 300;
  const workers = [new CacheWorker(), new CacheWorker()];
  try {
    const replies = Promise.all(workers.map((w) => w.ask({ op: 'stress', prefix, keys, rounds: 3000 })));
    // The main thread writes and reads the same keys meanwhile, yielding so the workers' replies
    // can arrive.
    let corrupt = 0;
    let hits = 0;
    for (let round = 0; round < 300; round++) {
      const start = (round * 11) % keys;
      const batch = Array.from({ length: 20 }, (_, j) => `${prefix}${(start + j) % keys}`);
      cache.setMany(
        batch,
        batch.map((_, j) => stressValue(prefix, (start + j) % keys, round)),
      );
      cache.getMany(batch).forEach((value, j) => {
        if (value === undefined) return;
        hits++;
        if (!isStressValue(prefix, (start + j) % keys, value)) corrupt++;
      });
      if (round % 20 === 0) await elapse(1); // a pause in the main thread's writing, not a wait for a condition
    }
    const results = (await replies) as Extract<WorkerReply, { op: 'stress' }>[];
    assert.equal(corrupt, 0);
    assert.ok(hits > 0);
    for (const result of results) {
      assert.equal(result.corrupt, 0);
      assert.equal(result.reads, 3000 * 20);
      assert.ok(result.hits > 0);
    }
    const stats = cache.stats();
    assert.ok(stats.entries <= keys);
    for (let i = 0; i < keys; i++) {
      const value = cache.get(`${prefix}${i}`);
      if (value !== undefined) assert.ok(isStressValue(prefix, i, value), `key ${i}`);
    }
  } finally {
    await Promise.all(workers.map((w) => w.close()));
  }
});

test('workers can start and stop repeatedly while the store lives on', async () => {
  cache.clear();
  for (let i = 0; i < 4; i++) {
    const worker = new CacheWorker();
    await worker.ask({ op: 'set', key: `lifecycle:${i}`, value: Buffer.from([i]).toString('hex') });
    assert.equal(await worker.close(), 0);
  }
  assert.deepEqual(
    cache.getMany(['lifecycle:0', 'lifecycle:1', 'lifecycle:2', 'lifecycle:3']).map((v) => v?.[0]),
    [0, 1, 2, 3],
  );
});
