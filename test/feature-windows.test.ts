// Realtime window math against hand-computed cases: bucket widths and starts, which buckets a
// window includes at its edges, the five aggregations (and their values over no events), the hybrid
// lower bound, bucket encodings, and the in-process WindowStore: same answers as aggregateWindow,
// pruning to a bounded number of buckets, and out-of-range events.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  aggregateWindow,
  bucketIncluded,
  bucketOf,
  bucketStart,
  bucketWidthMs,
  classifyEventTime,
  decodeAggregate,
  decodeBucketField,
  emptyAggregate,
  addValue,
  encodeAggregate,
  encodeBucketField,
  mergeAggregate,
  retentionMs,
  streamName,
  windowKey,
  WindowStore,
  type Aggregate,
} from '../src/features/windows.js';

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

const agg = (...values: number[]): Aggregate => {
  const a = emptyAggregate();
  for (const v of values) addValue(a, v);
  return a;
};

test('bucket widths: window / 60 in whole seconds, at least 1 s', () => {
  assert.equal(bucketWidthMs(5 * M), 5 * S);
  assert.equal(bucketWidthMs(H), M);
  assert.equal(bucketWidthMs(24 * H), 24 * M);
  assert.equal(bucketWidthMs(90 * D), 36 * H);
  assert.equal(bucketWidthMs(7 * M), 7 * S);
  assert.equal(bucketWidthMs(100 * S), S); // 1.67 s rounds down to 1 s
  assert.equal(bucketWidthMs(30 * S), S); // 0.5 s is raised to the 1 s minimum
  assert.equal(bucketWidthMs(S), S);
  assert.equal(retentionMs(H), H + M);
});

test('bucket starts are epoch-aligned', () => {
  assert.equal(bucketStart(1_234_567, 5 * S), 1_230_000);
  assert.equal(bucketStart(1_230_000, 5 * S), 1_230_000);
  assert.equal(bucketStart(1_234_999, 5 * S), 1_230_000);
  assert.equal(bucketStart(1_235_000, 5 * S), 1_235_000);
  assert.equal(bucketOf(1_700_000_123_456, 5 * M), 1_700_000_120_000);
  assert.equal(bucketOf(1_700_000_123_456, 24 * H), 1_699_999_200_000); // 24-minute buckets
  assert.equal(bucketOf(1_700_000_123_456, 24 * H) % (24 * M), 0);
});

test('window edges: [now - W, now], oldest partial bucket whole, future buckets not yet', () => {
  // 5 minute window, 5 s buckets, now exactly on a boundary: now - W = 700 000.
  const now = 1_000_000;
  const w = 5 * S;
  assert.equal(bucketIncluded(695_000, w, now, now - 5 * M), false); // ends at 700 000, the edge
  assert.equal(bucketIncluded(700_000, w, now, now - 5 * M), true); // starts on the edge
  assert.equal(bucketIncluded(1_000_000, w, now, now - 5 * M), true); // the bucket holding now
  assert.equal(bucketIncluded(1_005_000, w, now, now - 5 * M), false); // starts after now

  const buckets: [number, Aggregate][] = [
    [690_000, agg(100)],
    [695_000, agg(50)],
    [700_000, agg(1, 2)],
    [850_000, agg(10)],
    [1_000_000, agg(7)],
    [1_005_000, agg(1000)],
  ];
  assert.equal(aggregateWindow(buckets, now, 5 * M, 'count'), 4);
  assert.equal(aggregateWindow(buckets, now, 5 * M, 'sum'), 20);
  assert.equal(aggregateWindow(buckets, now, 5 * M, 'mean'), 5);
  assert.equal(aggregateWindow(buckets, now, 5 * M, 'min'), 1);
  assert.equal(aggregateWindow(buckets, now, 5 * M, 'max'), 10);

  // 2.5 s later, now - W = 702 500 falls inside [700 000, 705 000): that bucket counts whole.
  assert.equal(aggregateWindow(buckets, now + 2_500, 5 * M, 'sum'), 20);
  // 5 s later it has left the window, and the bucket starting at 1 005 000 has begun.
  assert.equal(aggregateWindow(buckets, now + 5_000, 5 * M, 'sum'), 1017);
  assert.equal(aggregateWindow(buckets, now + 5_000, 5 * M, 'max'), 1000);
});

test('aggregations over no events: count and sum 0, mean/min/max null', () => {
  const old: [number, Aggregate][] = [[0, agg(5)]];
  for (const buckets of [[], old]) {
    assert.equal(aggregateWindow(buckets, 10 * H, H, 'count'), 0);
    assert.equal(aggregateWindow(buckets, 10 * H, H, 'sum'), 0);
    assert.equal(aggregateWindow(buckets, 10 * H, H, 'mean'), null);
    assert.equal(aggregateWindow(buckets, 10 * H, H, 'min'), null);
    assert.equal(aggregateWindow(buckets, 10 * H, H, 'max'), null);
  }
  // Negative values and a single event.
  const b: [number, Aggregate][] = [[10 * H - M, agg(-3, -8, 4)]];
  assert.deepEqual(
    (['count', 'sum', 'mean', 'min', 'max'] as const).map((a) => aggregateWindow(b, 10 * H, H, a)),
    [3, -7, -7 / 3, -8, 4],
  );
});

test('hybrid lower bound: only buckets overlapping (since, now]', () => {
  const now = 10 * H;
  const buckets: [number, Aggregate][] = [
    [now - 50 * M, agg(1)],
    [now - 30 * M, agg(1, 1)],
    [now - 10 * M, agg(1, 1, 1)],
  ];
  assert.equal(aggregateWindow(buckets, now, H, 'count'), 6);
  assert.equal(aggregateWindow(buckets, now, H, 'count', now - 20 * M), 3);
  // since inside a bucket: the bucket is counted whole (exact to one bucket width).
  assert.equal(aggregateWindow(buckets, now, H, 'count', now - 30 * M + 30 * S), 5);
  assert.equal(aggregateWindow(buckets, now, H, 'count', now - 29 * M), 3);
  // The window still applies when since is older.
  assert.equal(aggregateWindow(buckets, now, 40 * M, 'count', now - 2 * H), 5);
});

test('bucket encodings round-trip; malformed ones are null', () => {
  const a = agg(12.5, -3, 1e21, 0.1);
  const text = encodeAggregate(a);
  assert.equal(text, `4,${12.5 - 3 + 1e21 + 0.1},-3,1e+21`);
  assert.deepEqual(decodeAggregate(text), a);
  assert.equal(encodeAggregate(agg(1)), '1,1,1,1');
  for (const bad of ['', '1,2,3', '0,0,0,0', '1,x,1,1', '1,1,2,1', '1.5,1,1,1', '1,1,,1', '1,Infinity,1,1'])
    assert.equal(decodeAggregate(bad), null, bad);

  const merged = agg(1, 5);
  mergeAggregate(merged, agg(-2, 3));
  assert.deepEqual(merged, { count: 4, sum: 7, min: -2, max: 5 });
  mergeAggregate(merged, emptyAggregate());
  assert.deepEqual(merged, { count: 4, sum: 7, min: -2, max: 5 });

  assert.equal(encodeBucketField(1_700_000_120_000), (1_700_000_120).toString(36));
  assert.equal(decodeBucketField(encodeBucketField(1_700_000_120_000)), 1_700_000_120_000);
  assert.equal(decodeBucketField('x!'), null);
  assert.equal(streamName('transaction', null), 'transaction');
  assert.equal(streamName('transaction', 'amount'), 'transaction.amount');
  assert.equal(windowKey('customer', 'C00042', 'transaction.amount'), 'customer:C00042:transaction.amount');
});

test('event times: future beyond the skew is rejected, older than every window ignored', () => {
  const now = 100 * H;
  assert.equal(classifyEventTime(now, now, H, 5 * S), 'accept');
  assert.equal(classifyEventTime(now + 5 * S, now, H, 5 * S), 'accept');
  assert.equal(classifyEventTime(now + 5 * S + 1, now, H, 5 * S), 'future');
  assert.equal(classifyEventTime(now - H, now, H, 5 * S), 'accept');
  // 1 minute buckets: the bucket [now - 61 m, now - 60 m) ends on the edge and is never read.
  assert.equal(classifyEventTime(now - H - 1, now, H, 5 * S), 'expired');
  assert.equal(classifyEventTime(now - H - 30 * S, now, H, 5 * S), 'expired');
  assert.equal(classifyEventTime(Number.NaN, now, H, 5 * S), 'invalid');
  // With now mid-bucket, an event up to one width older is still read (the partial bucket).
  assert.equal(classifyEventTime(now + 30 * S - H - 20 * S, now + 30 * S, H, 5 * S), 'accept');
});

test('WindowStore answers like aggregateWindow over its own buckets', () => {
  const store = new WindowStore();
  store.register('transaction.amount', 5 * M);
  store.register('transaction.amount', H);
  const key = windowKey('customer', 'C00001', 'transaction.amount');
  const now = 1_000 * H;
  const events: [number, number][] = [
    [now - 2 * H, 1000], // older than every window
    [now - 59 * M, 40],
    [now - 10 * M, 25],
    [now - 4 * M, 10],
    [now - 4 * M + 1, 30],
    [now - 1 * S, 5],
  ];
  const results = events.map(([ts, v]) => store.add(key, ts, v, now));
  assert.deepEqual(results, ['expired', 'added', 'added', 'added', 'added', 'added']);

  assert.equal(store.read(key, now, H, 'count'), 5);
  assert.equal(store.read(key, now, H, 'sum'), 110);
  assert.equal(store.read(key, now, H, 'mean'), 22);
  assert.equal(store.read(key, now, H, 'min'), 5);
  assert.equal(store.read(key, now, H, 'max'), 40);
  assert.equal(store.read(key, now, 5 * M, 'count'), 3);
  assert.equal(store.read(key, now, 5 * M, 'sum'), 45);
  assert.equal(store.read(key, now, 5 * M, 'max'), 30);
  for (const [w, a] of [
    [H, 'sum'],
    [5 * M, 'min'],
    [5 * M, 'mean'],
  ] as const)
    assert.equal(store.read(key, now, w, a), aggregateWindow(store.buckets(key, w), now, w, a));
  // Hybrid-style lower bound.
  assert.equal(store.read(key, now, H, 'count', now - 5 * M), 3);
  // Unknown keys read as no events; unregistered windows are a programming error.
  assert.equal(store.read(windowKey('customer', 'C99999', 'transaction.amount'), now, H, 'count'), 0);
  assert.equal(store.read(windowKey('customer', 'C99999', 'transaction.amount'), now, H, 'max'), null);
  assert.throws(() => store.read(key, now, 24 * H, 'count'), /window of 86400000 ms is not registered for stream 'transaction.amount'/);
});

test('WindowStore rejects future, ignores expired and unregistered, refuses non-finite values', () => {
  const store = new WindowStore({ maxFutureSkewMs: 2 * S });
  store.register('txn', 5 * M);
  const key = windowKey('customer', 'C1', 'txn');
  const now = 50 * H;
  assert.equal(store.add(key, now + 2 * S, 1, now), 'added');
  assert.equal(store.add(key, now + 3 * S, 1, now), 'future');
  assert.equal(store.add(key, now - 6 * M, 1, now), 'expired');
  assert.equal(store.add(key, now, Number.NaN, now), 'invalid');
  assert.equal(store.add(key, now, Infinity, now), 'invalid');
  assert.equal(store.add(windowKey('customer', 'C1', 'refund'), now, 1, now), 'unregistered');
  assert.equal(store.bucketCount(key), 1);
  // The accepted future event is in the bucket holding now (5 s buckets), so it reads at once.
  assert.equal(store.read(key, now, 5 * M, 'count'), 1);
});

test('WindowStore keeps a bounded number of buckets per key and prunes idle keys', () => {
  const store = new WindowStore();
  store.register('txn', 5 * M);
  store.register('txn', H);
  const key = windowKey('customer', 'C2', 'txn');
  const start = 10 * D;
  let now = start;
  for (let t = 0; t < 3 * H; t += 700) {
    now = start + t;
    assert.equal(store.add(key, now, 1, now), 'added');
  }
  // Per series at most (window + skew) / width + 2 buckets: 5 s -> 63, 1 min -> 63.
  const bound = Math.ceil((5 * M + 5 * S) / (5 * S)) + 2 + Math.ceil((H + 5 * S) / M) + 2;
  assert.ok(store.bucketCount(key) <= bound, `${store.bucketCount(key)} buckets`);
  assert.ok(store.bucketCount(key) >= 60 + 60);
  // Every event of the last hour is still counted (to one bucket width).
  const inHour = Math.floor(H / 700);
  const count = store.read(key, now, H, 'count')!;
  assert.ok(count >= inHour && count <= inHour + Math.ceil(M / 700) + 1, `${count}`);

  store.add(windowKey('customer', 'C3', 'txn'), now, 1, now);
  assert.equal(store.keyCount, 2);
  assert.equal(store.prune(now + 30 * M), 0); // C2 and C3 still have buckets in the hour window
  assert.equal(store.bucketCount(key) <= Math.ceil((H + 5 * S) / M) + 2, true); // the 5 s series emptied
  assert.equal(store.prune(now + 2 * H), 2);
  assert.equal(store.keyCount, 0);
  assert.equal(store.read(key, now + 2 * H, H, 'count'), 0);
});
