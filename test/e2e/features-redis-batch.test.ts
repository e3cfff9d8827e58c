// Entity scoring through a real Redis with batched reads and window snapshots in L1, across real
// servers sharing one redis-server: concurrent requests for different and the same entities get
// exactly what the same requests one at a time get (values, statuses, scores), in fewer round trips,
// each key read once per round trip; a repeat is answered from L1 without Redis. Window snapshots:
// a replica sees its own events at once and another replica's once its snapshot's TTL has passed,
// and says how old the view is (window_age_ms).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { CLI, request, startServer, tempDir, type TestServer } from './server.js';
import { redisAvailable, startRedis, type TestRedis } from './redis.js';
import { waitFor } from '../fixtures/wait.js';

const COLUMNS = ['income', 'age', 'txn_sum_1h', 'lates'];
const HOUR = 3_600_000;
const skip = !redisAvailable() && !process.env.CI ? 'redis-server not installed' : false;

async function writeFixture(dir: string): Promise<{ defs: string; repo: string }> {
  const repo = join(dir, 'models');
  const g = new GraphBuilder('linear');
  g.input('input', 'FP32', [-1, COLUMNS.length]);
  g.initializer('w', 'FP32', [COLUMNS.length, 1], Float32Array.from([0.001, 0.1, 0.01, 2]));
  g.node('MatMul', ['input', 'w'], ['y']);
  g.output('y', 'FP32', [-1, 1]);
  await mkdir(join(repo, 'm', '1'), { recursive: true });
  await writeFile(join(repo, 'm', '1', 'model.onnx'), g.toModelBytes());
  await writeFile(join(repo, 'm', 'model.yaml'), stringify({ features: COLUMNS }));
  const fresh = new Date(Date.now() - HOUR).toISOString();
  const old = new Date(Date.now() - 72 * HOUR).toISOString();
  const rows = ['customer_id,as_of,income,age,lates'];
  // C000..C049: every fifth one stale (its values take their fallbacks), every seventh without an age
  for (let i = 0; i < 50; i++)
    rows.push(`C${String(i).padStart(3, '0')},${i % 5 === 4 ? old : fresh},${4000 + 100 * i},${i % 7 === 3 ? '' : 20 + i},${i % 4}`);
  await writeFile(join(dir, 'people.csv'), `${rows.join('\n')}\n`);
  const defs = join(dir, 'features.yaml');
  await writeFile(
    defs,
    stringify({
      entities: [{ name: 'customer', key: 'customer_id', pattern: 'C[0-9]{3}' }],
      sources: { people: { path: 'people.csv', entity: 'customer', timestampColumn: 'as_of' } },
      features: [
        {
          name: 'income',
          version: 1,
          entity: 'customer',
          type: 'offline',
          dtype: 'float64',
          ttl: '1d',
          source: 'people',
          fallback: { default: 1000 },
        },
        {
          name: 'age',
          version: 1,
          entity: 'customer',
          type: 'offline',
          dtype: 'float64',
          ttl: '1d',
          source: 'people',
          fallback: { default: 41 },
        },
        {
          name: 'txn_sum_1h',
          version: 1,
          entity: 'customer',
          type: 'realtime',
          dtype: 'float64',
          event: 'txn',
          aggregation: 'sum',
          field: 'amount',
          window: '1h',
          fallback: { default: 0 },
        },
        {
          name: 'lates',
          version: 1,
          entity: 'customer',
          type: 'hybrid',
          dtype: 'int64',
          source: 'people',
          event: 'late',
          aggregation: 'count',
          window: '30d',
          ttl: '2d',
          fallback: { default: 0 },
        },
      ],
    }),
  );
  return { defs, repo };
}

async function serverOn(dir: string, name: string, redis: TestRedis, ttlSeconds: number): Promise<TestServer> {
  const { defs, repo } = { defs: join(dir, 'features.yaml'), repo: join(dir, 'models') };
  const config = join(dir, `${name}.yaml`);
  await writeFile(
    config,
    stringify({ modelRepository: repo, features: { definitions: defs, redis: { url: redis.url, timeoutMs: 500 }, cache: { ttlSeconds } } }),
  );
  return startServer(['--config', config]);
}

const id = (i: number) => `C${String(i).padStart(3, '0')}`;
const score = (s: TestServer, customer: string) =>
  request(`${s.url}/v1/score/m`, { json: { entity: { customer_id: customer }, debug: true } });
const events = (s: TestServer, body: unknown) => request(`${s.url}/v1/events`, { json: body });

/** What must not depend on batching: the score and every feature's value and status. */
function answerOf(r: Awaited<ReturnType<typeof score>>): unknown {
  assert.equal(r.status, 200, r.text);
  return [r.body.score, Object.fromEntries(Object.entries<any>(r.body.features).map(([k, v]) => [k, [v.value, v.status, v.reason]]))];
}

async function metric(s: TestServer, pattern: RegExp): Promise<number> {
  return Number(pattern.exec(await (await fetch(`${s.url}/metrics`)).text())?.[1] ?? 0);
}
const roundTrips = (s: TestServer) => metric(s, /^scoreline_feature_store_roundtrip_seconds_count\{result="ok"\} (\d+)$/m);
const lookups = async (s: TestServer) => ({
  hit: await metric(s, /^scoreline_feature_lookups_total\{result="hit"\} (\d+)$/m),
  miss: await metric(s, /^scoreline_feature_lookups_total\{result="miss"\} (\d+)$/m),
});
const hgetalls = (r: TestRedis) => Number(/cmdstat_hgetall:calls=(\d+)/.exec(r.cli('info', 'commandstats'))?.[1] ?? 0);

describe('batched Redis reads and window snapshots', { skip }, () => {
  let redis: TestRedis | undefined;
  let dir: string;
  let batched: TestServer;
  let oneByOne: TestServer;
  let shortTtl: TestServer;
  before(async () => {
    redis = await startRedis();
    dir = await tempDir();
    const { defs } = await writeFixture(dir);
    const m = spawnSync(process.execPath, [CLI, 'features', 'materialize', '--definitions', defs, '--redis', redis.url, '--quiet'], {
      encoding: 'utf8',
    });
    assert.equal(m.status, 0, m.stderr + m.stdout);
    [batched, oneByOne, shortTtl] = await Promise.all([
      serverOn(dir, 'a', redis, 60),
      serverOn(dir, 'b', redis, 60),
      serverOn(dir, 'c', redis, 2),
    ]);
  });
  after(async () => {
    await Promise.all([batched?.stop(), oneByOne?.stop(), shortTtl?.stop()]);
    await redis?.kill();
  });

  test('concurrent requests for different and the same entities get what one-at-a-time requests get, in fewer round trips', async () => {
    // 160 requests: the 40 stored customers, one of them asked for 40 times, and customers the store lacks
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(id(i), id(7), id(900 + (i % 10)));
    for (let i = 0; i < 40; i++) ids.push(id(7));
    const trips0 = await roundTrips(batched);
    const calls0 = hgetalls(redis!);
    const together = await Promise.all(ids.map((c) => score(batched, c)));
    const trips = (await roundTrips(batched)) - trips0;
    const calls = hgetalls(redis!) - calls0;
    const alone: unknown[] = [];
    for (const c of ids) alone.push(answerOf(await score(oneByOne, c)));
    assert.deepEqual(together.map(answerOf), alone);
    // stale and missing values took their fallbacks in both
    assert.deepEqual((alone[ids.indexOf(id(4))] as any)[1]['income@1'], [1000, 'default', undefined]);
    assert.deepEqual((alone[ids.indexOf(id(3))] as any)[1]['age@1'], [41, 'default', undefined]);
    assert.deepEqual((alone[ids.indexOf(id(905))] as any)[1]['lates@1'], [0, 'default', undefined]);
    assert.ok(trips >= 1 && trips < ids.length / 4, `${trips} round trips for ${ids.length} concurrent requests`);
    // each key once per round trip: at most 3 keys (group, two series) per distinct customer per trip
    assert.ok(calls <= trips * 3 * 50, `${calls} HGETALLs in ${trips} round trips`);
    assert.ok(calls < ids.length * 3, `${calls} HGETALLs for ${ids.length} requests of 3 keys: repeats were read once`);

    // The same requests again: everything (groups and windows) from L1, nothing from Redis, on both servers.
    for (const s of [batched, oneByOne]) {
      const [t0, l0, c0] = [await roundTrips(s), await lookups(s), hgetalls(redis!)];
      const again = await Promise.all(ids.map((c) => score(s, c)));
      assert.deepEqual(again.map(answerOf), alone);
      const l1 = await lookups(s);
      assert.deepEqual([(await roundTrips(s)) - t0, hgetalls(redis!) - c0], [0, 0]);
      assert.deepEqual([l1.hit - l0.hit, l1.miss - l0.miss], [ids.length * 3, 0], 'a group and two window snapshots per request, all hits');
    }
  });

  test('30 concurrent requests for one customer not in L1: every round trip reads its keys once', async () => {
    const [t0, c0] = [await roundTrips(batched), hgetalls(redis!)];
    const answers = await Promise.all(Array.from({ length: 30 }, () => score(batched, id(41))));
    const trips = (await roundTrips(batched)) - t0;
    assert.ok(trips >= 1 && trips < 30, `${trips} round trips`);
    assert.equal(hgetalls(redis!) - c0, 3 * trips, 'a group and two series per round trip, however many requests shared it');
    assert.equal(new Set(answers.map((r) => JSON.stringify(answerOf(r)))).size, 1);
  });

  test("a replica sees its own events at once, another replica's when its snapshot's TTL has passed", async () => {
    const customer = id(42);
    const sum = async (s: TestServer) => {
      const r = await score(s, customer);
      assert.equal(r.status, 200, r.text);
      return r.body.features['txn_sum_1h@1'] as { value: number; status: string; window_age_ms: number };
    };
    // Both replicas hold a snapshot (empty window).
    assert.equal((await sum(shortTtl)).value, 0);
    assert.equal((await sum(batched)).value, 0);
    // shortTtl writes: it sees its event at once, from its snapshot.
    assert.equal(
      (await events(shortTtl, { event: 'txn', id: 'own-1', entity: { customer_id: customer }, fields: { amount: 5 } })).body.accepted,
      1,
    );
    const own = await sum(shortTtl);
    assert.deepEqual([own.value, own.status], [5, 'present']);
    // batched writes: it sees its own event at once, on top of its snapshot, which was read before
    // shortTtl's event (it sees that one when its own snapshot expires, after 60 s) ...
    const written = performance.now();
    assert.equal(
      (await events(batched, { event: 'txn', id: 'other-1', entity: { customer_id: customer }, fields: { amount: 7 } })).body.accepted,
      1,
    );
    assert.equal((await sum(batched)).value, 7);
    // ... and shortTtl sees it only once its snapshot (read before the write) has expired (2 s).
    const seen = await waitFor(
      async () => {
        const r = await sum(shortTtl);
        const askedAt = performance.now();
        if (r.value === 12) return r;
        assert.equal(r.value, 5, 'before, it has its own event and not the other');
        // the view it answers from is older than the other replica's write, and younger than the TTL
        assert.ok(r.window_age_ms <= 2000 + 50 && r.window_age_ms >= askedAt - written - 1000, `window_age_ms ${r.window_age_ms}`);
        return undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100, message: "the other replica's event, once the 2 s snapshot TTL passed" },
    );
    assert.ok(seen.window_age_ms < 1000, `a fresh read from the store, window_age_ms ${seen.window_age_ms}`);
    // the hybrid window follows the same rule
    const lates = async (s: TestServer) => (await score(s, customer)).body.features['lates@1'].value as number;
    const base = await lates(shortTtl);
    assert.equal(await lates(batched), base);
    assert.equal((await events(batched, { event: 'late', id: 'late-1', entity: { customer_id: customer } })).body.accepted, 1);
    assert.equal(await lates(batched), base + 1);
    await waitFor(async () => (await lates(shortTtl)) === base + 1, {
      timeoutMs: 10_000,
      intervalMs: 100,
      message: 'the hybrid window of the other replica to catch up once its snapshot expired',
    });
  });
});
