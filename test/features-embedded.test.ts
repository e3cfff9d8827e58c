// The embedded feature store (embedded-store.ts) on real SQLite files in temp dirs and the real
// native addon: groups (values of every dtype, nulls, event times), realtime windows and event ids
// survive closing and opening again; partial writes keep the other fields; at 200,000 entities the
// groups live off the JS heap, are copied into memory by the preload worker on open and read back
// exactly, also before the copy finishes; a capped memory copy evicts and reads the rest from the file.

import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { decodeGroup } from '../src/features/codec.js';
import { loadFeatureDefinitions } from '../src/features/definitions.js';
import { EmbeddedStore } from '../src/features/embedded-store.js';
import { NativeTable } from '../src/features/native-cache.js';
import { parseEvents, streamsByEvent } from '../src/features/events.js';
import { StoreUnavailableError } from '../src/features/redis-store.js';
import type { GroupWrite } from '../src/features/store.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const HOUR = 3_600_000;
const DEFS = `
entities:
  - { name: customer, key: customer_id }
sources:
  people: { path: people.csv, entity: customer }
features:
  - { name: income, version: 1, entity: customer, type: offline, dtype: float64, ttl: 30d, source: people, fallback: { default: 0 } }
  - { name: loans, version: 1, entity: customer, type: offline, dtype: int64, ttl: 30d, source: people, fallback: { default: 0 } }
  - { name: util, version: 1, entity: customer, type: offline, dtype: float32, ttl: 30d, source: people, fallback: { default: 0 } }
  - { name: owner, version: 1, entity: customer, type: offline, dtype: bool, ttl: 30d, source: people, fallback: { default: false } }
  - { name: txn_sum_1h, version: 1, entity: customer, type: realtime, dtype: float64, event: txn, aggregation: sum, field: amount, window: 1h, fallback: { default: 0 } }
  - { name: txn_count_24h, version: 1, entity: customer, type: realtime, dtype: int64, event: txn, aggregation: count, window: 24h, fallback: { default: 0 } }
`;

async function fixture() {
  const registry = await loadFeatureDefinitions(DEFS);
  const group = registry.groups[0]!;
  const streams = streamsByEvent(registry);
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-embedded-'));
  return {
    registry,
    group,
    dir,
    path: join(dir, 'features.db'),
    events: (body: unknown, now: number) => parseEvents(registry, streams, body, now).records,
  };
}

const txn = (id: string, amount: number, eventId: string, ts?: number) => ({
  event: 'txn',
  id: eventId,
  entity: { customer_id: id },
  fields: { amount },
  ...(ts ? { ts } : {}),
});

test('groups, windows and event ids survive closing and opening the file again', async () => {
  const { registry, group, path, events } = await fixture();
  const t = Date.now() - 2 * HOUR;
  const now = Date.now();
  let store = new EmbeddedStore({ path, streams: registry.streams });
  await store.writeGroups([
    {
      group,
      id: 'C1',
      values: {
        income: { value: 52_000.5, eventTs: t },
        loans: { value: 3, eventTs: t },
        util: { value: Math.fround(0.1), eventTs: t },
        owner: { value: true, eventTs: t },
      },
    },
    {
      group,
      id: 'C2',
      values: {
        income: { value: null, eventTs: t - 1 },
        loans: { value: 0, eventTs: t - 1 },
        util: { value: 0, eventTs: t - 1 },
        owner: { value: false, eventTs: t - 1 },
      },
    },
  ]);
  assert.deepEqual(
    await store.addEvents(events({ events: [txn('C1', 10, 'a'), txn('C1', 5, 'b', now - 30 * 60_000), txn('C1', 10, 'a')] }, now), now),
    [true, true, false],
  );
  assert.equal(store.windowSync('customer', 'C1', 'txn.amount', now, HOUR, 'sum'), 15);
  await store.close();

  store = new EmbeddedStore({ path, streams: registry.streams });
  try {
    assert.deepEqual(decodeGroup(group.layout, store.groupSync(group, 'C1')!), {
      income: { value: 52_000.5, eventTs: t },
      loans: { value: 3, eventTs: t },
      util: { value: Math.fround(0.1), eventTs: t },
      owner: { value: true, eventTs: t },
    });
    assert.deepEqual(decodeGroup(group.layout, store.groupSync(group, 'C2')!)!.income, { value: null, eventTs: t - 1 });
    assert.equal(store.groupSync(group, 'C3'), null);
    // both series of the stream (1 h and 24 h buckets) came back
    assert.equal(store.windowSync('customer', 'C1', 'txn.amount', now, HOUR, 'sum'), 15);
    assert.equal(store.windowSync('customer', 'C1', 'txn', now, 24 * HOUR, 'count'), 2);
    // ids applied before the restart are still known; a new one counts
    assert.deepEqual(await store.addEvents(events({ events: [txn('C1', 10, 'a'), txn('C1', 1, 'c')] }, now), now), [false, true]);
    assert.equal(store.windowSync('customer', 'C1', 'txn.amount', now, HOUR, 'sum'), 16);
    await store.preloaded();
    assert.equal(store.inMemory, true);
    assert.equal(store.table.stats().entries, 2);
  } finally {
    await store.close();
  }
  // ... and the events of that second life too
  store = new EmbeddedStore({ path, streams: registry.streams });
  try {
    assert.equal(store.windowSync('customer', 'C1', 'txn.amount', now, HOUR, 'sum'), 16);
  } finally {
    await store.close();
  }
});

test('an event write the file refuses changes nothing and says it was not stored; the retry counts once', async () => {
  const { registry, path, events } = await fixture();
  const store = new EmbeddedStore({ path, streams: registry.streams });
  try {
    const now = Date.now();
    // SQLite refuses every write from here on, as it would on a full disk or a read-only file.
    store.db.pragma('query_only = ON');
    await assert.rejects(
      store.addEvents(events(txn('C1', 10, 'w1'), now), now),
      (e: Error) => e instanceof StoreUnavailableError && !e.sent && /could not be written/.test(e.message),
    );
    assert.equal(store.windowSync('customer', 'C1', 'txn.amount', now, HOUR, 'sum'), 0);
    store.db.pragma('query_only = OFF');
    assert.deepEqual(await store.addEvents(events(txn('C1', 10, 'w1'), now), now), [true]);
    assert.deepEqual(await store.addEvents(events(txn('C1', 10, 'w1'), now), now), [false]);
    assert.equal(store.windowSync('customer', 'C1', 'txn.amount', now, HOUR, 'sum'), 10);
  } finally {
    await store.close();
  }
});

test('a write naming some features keeps the others; one naming all replaces the group', async () => {
  const { registry, group, path } = await fixture();
  const store = new EmbeddedStore({ path, streams: registry.streams });
  try {
    const v = (value: number | boolean | null, eventTs = 1000) => ({ value, eventTs });
    await store.writeGroups([{ group, id: 'C1', values: { income: v(1), loans: v(2), util: v(0.5), owner: v(false) } }]);
    await store.writeGroups([{ group, id: 'C1', values: { loans: v(7, 2000) } }]);
    assert.deepEqual(decodeGroup(group.layout, store.groupSync(group, 'C1')!), {
      income: v(1),
      loans: v(7, 2000),
      util: v(0.5),
      owner: v(false),
    });
    await store.writeGroups([
      { group, id: 'C1', values: { income: v(null, 3000), loans: v(1, 3000), util: v(0, 3000), owner: v(true, 3000) } },
    ]);
    assert.deepEqual(decodeGroup(group.layout, store.groupSync(group, 'C1')!), {
      income: v(null, 3000),
      loans: v(1, 3000),
      util: v(0, 3000),
      owner: v(true, 3000),
    });
    // a group never written with some fields has them missing
    await store.writeGroups([{ group, id: 'C9', values: { loans: v(4) } }]);
    assert.deepEqual(decodeGroup(group.layout, store.groupSync(group, 'C9')!), {
      income: v(null, 0),
      loans: v(4),
      util: v(null, 0),
      owner: v(null, 0),
    });
  } finally {
    await store.close();
  }
});

const N = 200_000;
const idOf = (i: number) => `C${String(i).padStart(7, '0')}`;
const valuesOf = (i: number) => ({
  income: { value: 20_000 + (i % 9973) * 10.5, eventTs: 1_700_000_000_000 + i },
  loans: { value: i % 11, eventTs: 1_700_000_000_000 + i },
  util: { value: Math.fround((i % 1000) / 1000), eventTs: 1_700_000_000_000 + i },
  owner: { value: i % 3 === 0, eventTs: 1_700_000_000_000 + i },
});

test(`at ${N.toLocaleString('en-US')} entities the groups live off the JS heap and are read back exactly after a restart`, async () => {
  const { registry, group, path } = await fixture();
  let store = new EmbeddedStore({ path, streams: registry.streams });
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  for (let i = 0; i < N; i += 5000) {
    const batch: GroupWrite[] = [];
    for (let j = i; j < i + 5000; j++) batch.push({ group, id: idOf(j), values: valuesOf(j) });
    await store.writeGroups(batch);
  }
  gc();
  const grown = process.memoryUsage().heapUsed - heap0;
  // The in-process Map of Uint8Arrays took ~350 bytes of heap per entity (70 MB here).
  assert.ok(grown < 15 * 2 ** 20, `JS heap grew ${(grown / 2 ** 20).toFixed(1)} MB for ${N} entities`);
  assert.equal(store.size, N);
  await store.close();

  store = new EmbeddedStore({ path, streams: registry.streams });
  try {
    // Correct before the copy into memory has finished (reads then go to the file) ...
    for (const i of [0, 1, N / 2, N - 1]) assert.deepEqual(decodeGroup(group.layout, store.groupSync(group, idOf(i))!), valuesOf(i));
    await store.preloaded();
    // ... and after it, from memory only.
    assert.equal(store.inMemory, true);
    assert.equal(store.table.stats().entries, N);
    for (let k = 0; k < 2000; k++) {
      const i = (k * 7919) % N;
      assert.deepEqual(decodeGroup(group.layout, store.groupSync(group, idOf(i))!), valuesOf(i));
    }
    assert.equal(store.groupSync(group, idOf(N)), null);
  } finally {
    await store.close();
  }
});

test('a memory copy capped below the data evicts, and what it lacks is read from the file', async () => {
  const { registry, group, path } = await fixture();
  let store = new EmbeddedStore({ path, streams: registry.streams });
  const batch: GroupWrite[] = [];
  for (let i = 0; i < 20_000; i++) batch.push({ group, id: idOf(i), values: valuesOf(i) });
  await store.writeGroups(batch);
  await store.close();
  store = new EmbeddedStore({ path, streams: registry.streams, memoryBytes: 1 << 20 });
  try {
    await store.preloaded();
    assert.equal(store.inMemory, false);
    const s = store.table.stats();
    assert.ok(s.entries < 20_000 && s.evictions > 0, `entries ${s.entries}, evictions ${s.evictions}`);
    for (let i = 0; i < 20_000; i += 97) assert.deepEqual(decodeGroup(group.layout, store.groupSync(group, idOf(i))!), valuesOf(i));
    assert.equal(store.groupSync(group, idOf(20_000)), null);
  } finally {
    await store.close();
  }
});

test('a named native table is shared by name; insertMany never overwrites a stored entry', () => {
  const a = new NativeTable('test:shared');
  const b = new NativeTable('test:shared');
  a.clear();
  assert.equal(a.set('k1', Buffer.from('written')), true);
  assert.equal(b.insertMany(['k1', 'k2', 'k\u001f3'], [Buffer.from('loaded'), Buffer.from('two'), Buffer.from('three')]), 2);
  assert.deepEqual(b.get('k1'), Buffer.from('written'));
  assert.deepEqual(a.get('k2'), Buffer.from('two'));
  assert.deepEqual(a.get('k\u001f3'), Buffer.from('three'));
  assert.equal(new NativeTable('test:other').get('k1'), undefined);
  const big = Buffer.alloc(40_000, 7);
  a.set('big', big);
  assert.deepEqual(b.get('big'), big);
  assert.equal(a.stats().entries, 4);
  a.clear();
  assert.equal(b.get('k1'), undefined);
});
