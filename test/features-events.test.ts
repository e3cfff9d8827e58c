// Event ids: parseEvents gives every event an id (the client's, else a generated unique one),
// checks client ids, and keeps each id exactly as long as its event can change a window; the
// in-process store applies an (event type, id) once, repeats in one call included, and forgets ids
// whose time is up (SeenIds: bounded by the events of the longest window).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadFeatureDefinitions } from '../src/features/definitions.js';
import { nextEventId, parseEvents, streamsByEvent } from '../src/features/events.js';
import { MemoryStore, SeenIds } from '../src/features/store.js';
import { retentionMs } from '../src/features/windows.js';

const HOUR = 3_600_000;
const DEFS = `
entities:
  - { name: customer, key: customer_id, pattern: "C[0-9]{3}" }
features:
  - { name: txn_count_24h, version: 1, entity: customer, type: realtime, dtype: int64, event: txn, aggregation: count, window: 24h, fallback: { default: 0 } }
  - { name: txn_sum_1h, version: 1, entity: customer, type: realtime, dtype: float64, event: txn, aggregation: sum, field: amount, window: 1h, fallback: { default: 0 } }
  - { name: refunds_1h, version: 1, entity: customer, type: realtime, dtype: int64, event: refund, aggregation: count, window: 1h, fallback: { default: 0 } }
`;

async function fixture() {
  const registry = await loadFeatureDefinitions(DEFS);
  const streams = streamsByEvent(registry);
  return { registry, streams, parse: (body: unknown, now: number) => parseEvents(registry, streams, body, now) };
}

const txn = (amount: number, extra: Record<string, unknown> = {}) => ({
  event: 'txn',
  entity: { customer_id: 'C001' },
  fields: { amount },
  ...extra,
});

test("every event gets an id: the client's, else a generated one, unique", async () => {
  const { parse } = await fixture();
  const now = Date.now();
  const p = parse({ events: [txn(1, { id: 'a' }), txn(2), txn(3), txn(4, { id: 'a' }), txn(5, { ts: now - 3 * 24 * HOUR })] }, now);
  assert.equal(p.ids.length, 5);
  assert.equal(p.ids[0], 'a');
  assert.equal(p.ids[3], 'a');
  assert.notEqual(p.ids[1], p.ids[2]);
  for (const id of [p.ids[1]!, p.ids[2]!, p.ids[4]!]) assert.match(id, /^ev-[0-9a-f]{16}-[0-9a-z]+$/);
  assert.equal(p.ignored, 1, 'too old for any window: an id, no record');
  assert.deepEqual(
    p.records.map((r) => r.eventId),
    ['a', p.ids[1], p.ids[2], 'a'],
  );
  const ids = new Set(Array.from({ length: 10_000 }, () => nextEventId()));
  assert.equal(ids.size, 10_000);
});

test('an id is kept as long as its event can change the longest window of its type', async () => {
  const { parse } = await fixture();
  const now = Date.now();
  const ts = now - 2 * HOUR;
  const [r] = parse(txn(7, { id: 'k', ts }), now).records;
  // the 1 h series no longer reads it; the 24 h one does, until 24 h + one bucket (24 min) after ts
  assert.equal(r!.keepUntil, ts + retentionMs(24 * HOUR));
  assert.equal(r!.keepUntil, ts + 24 * HOUR + 24 * 60_000);
  assert.deepEqual(
    r!.writes.map((w) => [w.stream, w.value]),
    [['txn', 1]],
  );
  const [refund] = parse({ event: 'refund', id: 'k', entity: { customer_id: 'C001' }, ts: now }, now).records;
  assert.equal(refund!.keepUntil, now + retentionMs(HOUR));
});

test('client ids are checked: a non-empty string of at most 200 characters', async () => {
  const { parse } = await fixture();
  const now = Date.now();
  for (const id of [42, '', 'x'.repeat(201), null, { a: 1 }]) {
    assert.throws(
      () => parse({ events: [txn(1), txn(2, { id })] }, now),
      /events\[1\]\.id must be a non-empty string of at most 200 characters/,
    );
  }
  assert.equal(parse(txn(1, { id: 'x'.repeat(200) }), now).ids[0]!.length, 200);
});

test('the in-process store applies an (event type, id) once, repeats in one call included', async () => {
  const { registry, parse } = await fixture();
  const store = new MemoryStore(registry.streams);
  try {
    const now = Date.now();
    const first = parse({ events: [txn(10, { id: 'a' }), txn(10, { id: 'a' }), txn(5, { id: 'b' })] }, now);
    assert.deepEqual(await store.addEvents(first.records, now), [true, false, true]);
    const retry = parse({ events: [txn(10, { id: 'a' }), txn(5, { id: 'b' })] }, now + 1000);
    assert.deepEqual(await store.addEvents(retry.records, now + 1000), [false, false]);
    // the same id on another event type is another event
    const refund = parse({ event: 'refund', id: 'a', entity: { customer_id: 'C001' } }, now + 1000);
    assert.deepEqual(await store.addEvents(refund.records, now + 1000), [true]);
    assert.equal(store.windowSync('customer', 'C001', 'txn.amount', now + 2000, HOUR, 'sum'), 15);
    assert.equal(store.windowSync('customer', 'C001', 'txn', now + 2000, 24 * HOUR, 'count'), 2);
    assert.equal(store.windowSync('customer', 'C001', 'refund', now + 2000, HOUR, 'count'), 1);
    assert.equal(store.seen.size, 3);
  } finally {
    await store.close();
  }
});

test('SeenIds forgets ids whose time is up, and only those', () => {
  const seen = new SeenIds();
  const t0 = 1_800_000_000_000;
  for (let i = 0; i < 1000; i++) seen.add(`old-${i}`, t0 + HOUR);
  for (let i = 0; i < 10; i++) seen.add(`new-${i}`, t0 + 2 * HOUR);
  assert.equal(seen.has('old-1', t0), true);
  assert.equal(seen.has('old-1', t0 + HOUR), false, 'past its time it no longer counts, pruned or not');
  assert.equal(seen.prune(t0 + HOUR - 1), 0);
  assert.equal(seen.prune(t0 + HOUR + 60_000), 1000);
  assert.equal(seen.size, 10);
  assert.equal(seen.has('new-3', t0 + HOUR + 60_000), true);
  // an id seen again later is kept for its later time
  seen.add('new-3', t0 + 5 * HOUR);
  assert.equal(seen.prune(t0 + 3 * HOUR), 9);
  assert.equal(seen.has('new-3', t0 + 4 * HOUR), true);
  assert.equal(seen.prune(t0 + 6 * HOUR), 1);
  assert.equal(seen.size, 0);
});
