// Realtime window snapshots in the L1 cache (window-cache.ts), over the real native addon: a snapshot
// aggregates exactly as aggregateWindow over the same buckets, local events are applied to cached
// snapshots without extending their life, writes of unknown outcome and duplicates drop them, and a
// read sent before a local write is not cached (it may lack the write). The cache is process-wide:
// every test uses its own entity ids.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NativeCache } from '../src/features/native-cache.js';
import type { StreamSpec } from '../src/features/plan.js';
import type { EventRecord } from '../src/features/store.js';
import {
  addToSnapshot,
  aggregateSnapshot,
  encodeSnapshot,
  seriesCacheKey,
  snapshotReadAt,
  snapshotView,
  WindowCache,
} from '../src/features/window-cache.js';
import { AGGREGATIONS, aggregateWindow, bucketStart, bucketWidthMs, retentionMs, type Aggregate } from '../src/features/windows.js';

const HOUR = 3_600_000;
const cache = new NativeCache();
const STREAMS: StreamSpec[] = [{ entity: 'customer', event: 'txn', field: 'amount', stream: 'txn.amount', windowsMs: [HOUR, 24 * HOUR] }];

function randomBuckets(seed: number, now: number, widthMs: number, n: number): [number, Aggregate][] {
  let s = seed;
  const next = () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
  const out: [number, Aggregate][] = [];
  const starts = new Set<number>();
  while (out.length < n) {
    const start = bucketStart(now - Math.floor(next() * 1.3 * 60 * widthMs), widthMs);
    if (starts.has(start)) continue;
    starts.add(start);
    const a = Math.round(next() * 1000) / 10;
    const b = Math.round(next() * 1000) / 10;
    out.push([start, { count: 1 + Math.floor(next() * 5), sum: a + b, min: Math.min(a, b), max: Math.max(a, b) }]);
  }
  return out;
}

test('a snapshot aggregates exactly as aggregateWindow over the same buckets', () => {
  const now = 1_764_190_000_000;
  for (const windowMs of [HOUR, 24 * HOUR]) {
    const width = bucketWidthMs(windowMs);
    for (let seed = 1; seed <= 20; seed++) {
      const buckets = randomBuckets(seed, now, width, 1 + (seed % 40));
      const f = snapshotView(encodeSnapshot(buckets, now - 5000))!;
      assert.equal(snapshotReadAt(f), now - 5000);
      for (const agg of AGGREGATIONS) {
        for (const at of [now, now + 7 * width, now + windowMs / 2]) {
          assert.equal(aggregateSnapshot(f, at, windowMs, agg), aggregateWindow(buckets, at, windowMs, agg), `${agg} ${windowMs} ${seed}`);
          assert.equal(
            aggregateSnapshot(f, at, windowMs, agg, now - windowMs / 3),
            aggregateWindow(buckets, at, windowMs, agg, now - windowMs / 3),
          );
        }
      }
    }
  }
  // empty series: counts 0, the rest null
  const empty = snapshotView(encodeSnapshot([], now))!;
  assert.deepEqual(
    AGGREGATIONS.map((a) => aggregateSnapshot(empty, now, HOUR, a)),
    [0, 0, null, null, null],
  );
  // not a snapshot
  assert.equal(snapshotView(new Uint8Array(7)), null);
  assert.equal(snapshotView(new Uint8Array(24)), null);
  // unaligned bytes are read through a copy
  const bytes = encodeSnapshot(randomBuckets(3, now, 60_000, 5), now);
  const shifted = new Uint8Array(bytes.byteLength + 1).subarray(1);
  shifted.set(bytes);
  assert.equal(aggregateSnapshot(snapshotView(shifted)!, now, HOUR, 'sum'), aggregateSnapshot(snapshotView(bytes)!, now, HOUR, 'sum'));
});

test('an event added to a snapshot lands in its bucket; buckets no window reads are dropped', () => {
  const now = 1_764_190_000_000;
  const width = bucketWidthMs(HOUR);
  const buckets: [number, Aggregate][] = [
    [bucketStart(now, width), { count: 1, sum: 5, min: 5, max: 5 }],
    [bucketStart(now - 2 * HOUR, width), { count: 9, sum: 90, min: 1, max: 20 }],
  ];
  const f = snapshotView(encodeSnapshot(buckets, now - 1000))!;
  const same = snapshotView(addToSnapshot(f, now, 7, width, retentionMs(HOUR), now))!;
  assert.equal(snapshotReadAt(same), now - 1000, 'the read time is kept');
  assert.deepEqual(
    [aggregateSnapshot(same, now, HOUR, 'count'), aggregateSnapshot(same, now, HOUR, 'sum'), aggregateSnapshot(same, now, HOUR, 'max')],
    [2, 12, 7],
  );
  assert.equal(same[2], 1, 'the bucket two hours old is gone');
  const other = snapshotView(addToSnapshot(same, now - 10 * width, -3, width, retentionMs(HOUR), now))!;
  assert.deepEqual([aggregateSnapshot(other, now, HOUR, 'count'), aggregateSnapshot(other, now, HOUR, 'min')], [3, -3]);
});

function record(id: string, eventId: string, amount: number, ts: number): EventRecord {
  return {
    event: 'txn',
    eventId,
    keepUntil: ts + 25 * HOUR,
    writes: [{ entity: 'customer', id, stream: 'txn.amount', ts, value: amount }],
  };
}

const keysOf = (id: string) => STREAMS[0]!.windowsMs.map((w) => seriesCacheKey('customer', id, 'txn.amount', bucketWidthMs(w)));

test('local events update cached snapshots without extending their life; uncertain and duplicate writes drop them', () => {
  const wc = new WindowCache({ cache, ttlMs: 60_000, streams: STREAMS, inFlightMs: 1000 });
  const now = Date.now();
  const id = `wc-local-${now}`;
  // nothing cached: a local write changes nothing in L1
  wc.written([record(id, 'a', 10, now)], [true], now);
  assert.equal(wc.get('customer', id, 'txn.amount', HOUR), undefined);

  for (const w of STREAMS[0]!.windowsMs) wc.put('customer', id, 'txn.amount', w, encodeSnapshot([], now - 20_000), performance.now() + 1);
  const snap = wc.get('customer', id, 'txn.amount', HOUR)!;
  assert.equal(aggregateSnapshot(snap, now, HOUR, 'count'), 0);
  wc.written([record(id, 'b', 10, now), record(id, 'c', 2.5, now - 60_000)], [true, true], now);
  for (const w of STREAMS[0]!.windowsMs) {
    const f = wc.get('customer', id, 'txn.amount', w)!;
    assert.deepEqual([aggregateSnapshot(f, now, w, 'count'), aggregateSnapshot(f, now, w, 'sum')], [2, 12.5]);
    assert.equal(snapshotReadAt(f), now - 20_000, 'still as old as the read from the store');
  }
  // a snapshot past its TTL is dropped by the next local write rather than kept alive
  wc.written([record(id, 'd', 1, now)], [true], now + 41_000);
  assert.equal(wc.get('customer', id, 'txn.amount', HOUR), undefined);

  for (const w of STREAMS[0]!.windowsMs) wc.put('customer', id, 'txn.amount', w, encodeSnapshot([], now), performance.now() + 1);
  wc.uncertain([record(id, 'e', 1, now)]);
  for (const k of keysOf(id)) assert.equal(cache.get(k), undefined, 'a write that may have landed drops the snapshot');
  for (const w of STREAMS[0]!.windowsMs) wc.put('customer', id, 'txn.amount', w, encodeSnapshot([], now), performance.now() + 1);
  wc.written([record(id, 'e', 1, now)], [false], now);
  for (const k of keysOf(id)) assert.equal(cache.get(k), undefined, 'a duplicate drops it too: the store has it, the snapshot may not');
});

test('a read sent before a local write is not cached: it may not hold the write', () => {
  const wc = new WindowCache({ cache, ttlMs: 60_000, streams: STREAMS, inFlightMs: 1000 });
  const now = Date.now();
  const id = `wc-race-${now}`;
  const sent = performance.now();
  wc.written([record(id, 'x', 4, now)], [true], now);
  wc.put('customer', id, 'txn.amount', HOUR, encodeSnapshot([], now), sent);
  assert.equal(wc.get('customer', id, 'txn.amount', HOUR), undefined);
  // a read sent after the write is cached
  wc.put(
    'customer',
    id,
    'txn.amount',
    HOUR,
    encodeSnapshot([[bucketStart(now, 60_000), { count: 1, sum: 4, min: 4, max: 4 }]], now),
    performance.now(),
  );
  assert.equal(aggregateSnapshot(wc.get('customer', id, 'txn.amount', HOUR)!, now, HOUR, 'sum'), 4);
  // another series is not affected by the write
  wc.put('customer', `${id}-other`, 'txn.amount', HOUR, encodeSnapshot([], now), sent);
  assert.notEqual(wc.get('customer', `${id}-other`, 'txn.amount', HOUR), undefined);
});
