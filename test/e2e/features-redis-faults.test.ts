// Feature serving against a Redis that hangs (SIGSTOP: connected, never answering) and realtime
// events that must count once: the circuit breaker stops requests waiting on the hung store, says so
// in the feature statuses, the readiness answer and scoreline_feature_store_up, and closes when Redis
// answers again; events carry ids, a write whose outcome is unknown says so, and a retry with the same
// id is not counted twice, with Redis and with the in-process store, over HTTP and WebSocket frames.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { stringify } from 'yaml';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { CLI, request, startServer, tempDir, type TestServer } from './server.js';
import { redisAvailable, startRedis, type TestRedis } from './redis.js';
import { waitFor } from '../fixtures/wait.js';

const COLUMNS = ['income', 'txn_count_1h', 'txn_sum_1h'];
const HOUR = 3_600_000;
const TIMEOUT_MS = 200;
const FAILURES = 5;
const skipRedis = !redisAvailable() && !process.env.CI ? 'redis-server not installed' : false;

async function writeFixture(dir: string): Promise<{ defs: string; repo: string }> {
  const repo = join(dir, 'models');
  const g = new GraphBuilder('sum');
  g.input('input', 'FP32', [-1, COLUMNS.length]);
  g.initializer('w', 'FP32', [COLUMNS.length, 1], Float32Array.from([0.001, 1, 0.01]));
  g.node('MatMul', ['input', 'w'], ['y']);
  g.output('y', 'FP32', [-1, 1]);
  await mkdir(join(repo, 'm', '1'), { recursive: true });
  await writeFile(join(repo, 'm', '1', 'model.onnx'), g.toModelBytes());
  await writeFile(join(repo, 'm', 'model.yaml'), stringify({ features: COLUMNS }));
  const iso = new Date(Date.now() - HOUR).toISOString();
  await writeFile(join(dir, 'people.csv'), `customer_id,as_of,income\nC001,${iso},5000\nC002,${iso},6000\nC003,${iso},7000\n`);
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
        // one event type feeding two series: a retry must count in neither
        {
          name: 'txn_count_1h',
          version: 1,
          entity: 'customer',
          type: 'realtime',
          dtype: 'float64',
          event: 'txn',
          aggregation: 'count',
          window: '1h',
          fallback: { default: 0 },
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
      ],
    }),
  );
  return { defs, repo };
}

interface Setup {
  server: TestServer;
  redis: TestRedis | null;
}

async function setup(redis: TestRedis | null, breaker?: { failures: number; probeMs: number }): Promise<Setup> {
  const dir = await tempDir();
  const { defs, repo } = await writeFixture(dir);
  if (redis) {
    const m = spawnSync(process.execPath, [CLI, 'features', 'materialize', '--definitions', defs, '--redis', redis.url, '--quiet'], {
      encoding: 'utf8',
    });
    assert.equal(m.status, 0, m.stderr + m.stdout);
  }
  const config = join(dir, 'server.yaml');
  const redisCfg = redis ? { redis: { url: redis.url, timeoutMs: TIMEOUT_MS, ...(breaker ? { breaker } : {}) } } : {};
  await writeFile(config, stringify({ modelRepository: repo, features: { definitions: defs, ...redisCfg, cache: { ttlSeconds: 60 } } }));
  return { server: await startServer(['--config', config]), redis };
}

const score = (s: Setup, id: string) => request(`${s.server.url}/v1/score/m`, { json: { entity: { customer_id: id }, debug: true } });
const events = (s: Setup, body: unknown) => request(`${s.server.url}/v1/events`, { json: body });
const txn = (customer: string, amount: number, id?: string) => ({
  event: 'txn',
  ...(id === undefined ? {} : { id }),
  entity: { customer_id: customer },
  fields: { amount },
});

async function storeUp(s: Setup): Promise<number> {
  const text = await (await fetch(`${s.server.url}/metrics`)).text();
  return Number(/^scoreline_feature_store_up\{store="redis"\} (\d)$/m.exec(text)?.[1]);
}

/** Round trips to Redis so far that failed (each waited the timeout) and that succeeded. */
async function roundTrips(s: Setup): Promise<{ failed: number; ok: number }> {
  const text = await (await fetch(`${s.server.url}/metrics`)).text();
  const count = (result: string) =>
    Number(new RegExp(`^scoreline_feature_store_roundtrip_seconds_count\\{result="${result}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  return { failed: count('error'), ok: count('ok') };
}

/** The count and sum of a customer's transactions in the last hour, as the model received them. */
async function windows(s: Setup, customer: string): Promise<[number, number]> {
  const r = await score(s, customer);
  assert.equal(r.status, 200, r.text);
  const f = r.body.features;
  assert.equal(f['txn_count_1h@1'].status, 'present', r.text);
  return [f['txn_count_1h@1'].value, f['txn_sum_1h@1'].value];
}

function pause(r: TestRedis): void {
  process.kill(r.proc.pid!, 'SIGSTOP');
}

function resume(r: TestRedis): void {
  process.kill(r.proc.pid!, 'SIGCONT');
}

const logLines = (s: Setup, pattern: RegExp) =>
  s.server.logs.filter((l) => pattern.test(l)).map((l) => JSON.parse(l) as { level: number; msg: string });

describe('a hung Redis (SIGSTOP)', { skip: skipRedis }, () => {
  let redis: TestRedis | undefined;
  let s: Setup;
  before(async () => {
    redis = await startRedis();
    s = await setup(redis, { failures: FAILURES, probeMs: 100 });
  });
  after(async () => {
    // Also when the server did not start: a leftover redis-server would keep the test process alive.
    if (redis) resume(redis);
    await s?.server.stop();
    await redis?.kill();
  });

  test('opens the circuit: requests stop waiting, statuses and store_up say so; it closes when Redis answers', async () => {
    const warm = await score(s, 'C001');
    assert.equal(warm.status, 200, warm.text);
    assert.equal(warm.body.features['income@1'].status, 'present');
    assert.equal(await storeUp(s), 1);
    pause(s.redis!);
    try {
      // 8 clients, 20 requests each: C001 was scored before the pause (its groups and windows are in L1
      // and need no Redis); C002 was not, so its requests need Redis.
      const concurrency = 8;
      const latencies: number[] = [];
      const answers: any[] = [];
      await Promise.all(
        Array.from({ length: concurrency }, async (_, c) => {
          for (let i = 0; i < 20; i++) {
            const t0 = performance.now();
            const r = await score(s, c % 2 === 0 ? 'C001' : 'C002');
            latencies.push(performance.now() - t0);
            answers.push(r);
          }
        }),
      );
      // Every failed round trip waited the full timeout: only the requests that opened the circuit,
      // and those already waiting beside them, may have.
      const waited = (await roundTrips(s)).failed;
      const slow = latencies.filter((ms) => ms >= TIMEOUT_MS * 0.9).length;
      assert.ok(
        waited >= FAILURES && waited <= FAILURES + concurrency,
        `${waited} of ${latencies.length} requests waited the ${TIMEOUT_MS} ms timeout (${slow} took that long)`,
      );
      for (const r of answers) assert.equal(r.status, 200, r.text);
      const last = answers.at(-1)!.body.features;
      assert.deepEqual(last['txn_count_1h@1'], { value: 0, status: 'default', age_ms: null, reason: 'store circuit open' });

      // Served without asking Redis: from L1 (C001, cached before) and from the fallbacks.
      const open = await score(s, 'C003');
      assert.equal(open.status, 200, open.text);
      assert.deepEqual(open.body.features['income@1'], { value: 1000, status: 'default', age_ms: null, reason: 'store circuit open' });
      const cached = (await score(s, 'C001')).body.features;
      assert.equal(cached['income@1'].status, 'present');
      assert.equal(cached['income@1'].reason, undefined);

      assert.equal(await storeUp(s), 0);
      const ready = await request(`${s.server.url}/v2/health/ready`);
      assert.match(ready.body.degraded, /does not answer within 200 ms \(circuit open/);

      // Writes are refused before sending, and said to be not stored.
      const refused = await events(s, txn('C003', 999, 'refused-1'));
      assert.equal(refused.status, 503, refused.text);
      assert.equal(refused.headers.get('retry-after'), '1');
      assert.equal(refused.body.state, 'not_stored');
      assert.deepEqual(refused.body.ids, ['refused-1']);
      assert.match(refused.body.error, /^events were not stored: .*circuit is open/);
      assert.equal((await roundTrips(s)).failed, waited, 'nothing went to Redis (or waited) while the circuit was open');
    } finally {
      resume(s.redis!);
    }

    // Closes once a probe answers and one real request goes through; statuses are back to present.
    let lastScore: any;
    await waitFor(
      async () => {
        const r = await score(s, 'C003');
        lastScore = r;
        return r.status === 200 && Object.values<any>(r.body.features).every((f) => f.status === 'present' && f.reason === undefined);
      },
      { timeoutMs: 10_000, intervalMs: 50, message: () => `the circuit to close after Redis answered again: ${lastScore?.text}` },
    );
    assert.equal(await storeUp(s), 1);
    assert.equal((await request(`${s.server.url}/v2/health/ready`)).body.degraded, undefined);
    // The refused event was not stored; the next one is.
    assert.deepEqual(await windows(s, 'C003'), [0, 0]);
    assert.equal((await events(s, txn('C003', 4))).status, 200);
    assert.deepEqual(await windows(s, 'C003'), [1, 4]);

    const opened = logLines(s, /feature store circuit open/);
    const closing = logLines(s, /feature store circuit closed/);
    assert.equal(opened.length, 1, 'one warning per outage');
    assert.equal(opened[0]!.level, 40);
    assert.equal(closing.length, 1, 'one notice when it recovers');
    assert.equal(closing[0]!.level, 30);
  });
});

describe('event ids with Redis', { skip: skipRedis }, () => {
  let redis: TestRedis | undefined;
  let s: Setup;
  before(async () => {
    redis = await startRedis();
    s = await setup(redis);
  });
  after(async () => {
    // Also when the server did not start: a leftover redis-server would keep the test process alive.
    if (redis) resume(redis);
    await s?.server.stop();
    await redis?.kill();
  });

  test('events without an id get one back; an id repeated in one request counts once', async () => {
    const one = await events(s, txn('C001', 5));
    assert.equal(one.status, 200, one.text);
    assert.equal(one.body.ids.length, 1);
    assert.match(one.body.ids[0], /^ev-[0-9a-f]{16}-[0-9a-z]+$/);
    assert.deepEqual({ ...one.body, ids: undefined }, { accepted: 1, ignored: 0, duplicates: 0, ids: undefined });
    const many = await events(s, {
      events: [
        txn('C001', 1, 'd-1'),
        txn('C001', 1, 'd-1'),
        txn('C001', 2),
        txn('C001', 3),
        { ...txn('C001', 7, 'old'), ts: Date.now() - 400 * 24 * HOUR },
      ],
    });
    assert.equal(many.status, 200, many.text);
    assert.deepEqual([many.body.accepted, many.body.ignored, many.body.duplicates], [3, 1, 1]);
    assert.deepEqual(many.body.ids.slice(0, 2), ['d-1', 'd-1']);
    assert.equal(many.body.ids[4], 'old');
    assert.equal(new Set([one.body.ids[0], many.body.ids[2], many.body.ids[3]]).size, 3, 'generated ids are distinct');
    assert.deepEqual(await windows(s, 'C001'), [4, 11]);
    // a generated id returned in the answer is as good as the client's own for a retry
    const again = await events(s, txn('C001', 5, one.body.ids[0]));
    assert.deepEqual([again.body.accepted, again.body.duplicates], [0, 1]);
    assert.deepEqual(await windows(s, 'C001'), [4, 11]);
    // the id is kept as long as the event can change a window (1 h + one bucket), not forever
    const ttl = Number(s.redis!.cli('pttl', 'sl:e:txn:d-1'));
    assert.ok(ttl > HOUR - 60_000 && ttl <= HOUR + 60_000, `ttl ${ttl}`);
  });

  test('a write that timed out says its state is unknown; the retry with the same id counts once', async () => {
    assert.deepEqual(await windows(s, 'C002'), [0, 0]);
    pause(s.redis!);
    let lost: Awaited<ReturnType<typeof events>>;
    try {
      const t0 = performance.now();
      lost = await events(s, txn('C002', 10, 'retry-1'));
      assert.ok(performance.now() - t0 >= TIMEOUT_MS * 0.9, 'it waited for the store');
    } finally {
      resume(s.redis!);
    }
    assert.equal(lost.status, 503, lost.text);
    assert.equal(lost.headers.get('retry-after'), '1');
    assert.equal(lost.body.state, 'unknown');
    assert.deepEqual(lost.body.ids, ['retry-1']);
    assert.equal(
      lost.body.error,
      'the store did not answer within 200 ms; the write may have been applied; retry with the same id, it is idempotent',
    );
    // It landed when Redis resumed: the retry is recognised and not counted again.
    let retry: Awaited<ReturnType<typeof events>> | undefined;
    await waitFor(
      async () => {
        retry = await events(s, txn('C002', 10, 'retry-1'));
        return retry.status === 200;
      },
      { timeoutMs: 5000, intervalMs: 50, message: () => `the retried event to be stored: ${retry?.text}` },
    );
    assert.deepEqual(retry!.body, { accepted: 0, ignored: 0, duplicates: 1, ids: ['retry-1'] });
    assert.deepEqual(await windows(s, 'C002'), [1, 10]);
  });

  test('event frames over the WebSocket: a string id is the event id, retries count once', async () => {
    const answers = await frames(s, [
      { id: 'w-1', ...txn('C003', 2) },
      { id: 'w-1', ...txn('C003', 2) },
      { id: 7, ...txn('C003', 3) },
    ]);
    assert.deepEqual(answers[0], { id: 'w-1', accepted: 1, ignored: 0, duplicates: 0, ids: ['w-1'] });
    assert.deepEqual(answers[1], { id: 'w-1', accepted: 0, ignored: 0, duplicates: 1, ids: ['w-1'] });
    assert.equal(answers[2].id, 7);
    assert.equal(answers[2].accepted, 1);
    assert.match(answers[2].ids[0], /^ev-/);
    assert.deepEqual(await windows(s, 'C003'), [2, 5]);
  });
});

/** Sends frames one at a time over one connection; the answers in order. */
async function frames(s: Setup, list: unknown[]): Promise<any[]> {
  const ws = new WebSocket(`ws://127.0.0.1:${s.server.port}/v1/stream`);
  await new Promise((r) => ws.once('open', r));
  const out: any[] = [];
  try {
    for (const f of list) {
      const answer = new Promise<any>((resolve) => ws.once('message', (d) => resolve(JSON.parse(d.toString()))));
      ws.send(JSON.stringify(f));
      out.push(await answer);
    }
  } finally {
    ws.close();
  }
  return out;
}

describe('event ids with the in-process store', () => {
  let s: Setup;
  before(async () => {
    s = await setup(null);
  });
  after(async () => {
    await s.server.stop();
  });

  test('duplicates in one request and retries count once; ids are checked', async () => {
    const first = await events(s, { events: [txn('C001', 1, 'm-1'), txn('C001', 1, 'm-1'), txn('C001', 2)] });
    assert.equal(first.status, 200, first.text);
    assert.deepEqual([first.body.accepted, first.body.duplicates], [2, 1]);
    assert.equal(first.body.ids.length, 3);
    const retry = await events(s, { events: [txn('C001', 1, 'm-1'), txn('C001', 2, first.body.ids[2])] });
    assert.deepEqual(retry.body, { accepted: 0, ignored: 0, duplicates: 2, ids: ['m-1', first.body.ids[2]] });
    // the same id on another event type would be another event; here only 'txn' exists
    assert.deepEqual(await windows(s, 'C001'), [2, 3]);
    const ws = await frames(s, [
      { id: 'm-1', ...txn('C001', 1) },
      { id: 'w-2', ...txn('C001', 4) },
    ]);
    assert.deepEqual(
      ws.map((a) => [a.accepted, a.duplicates]),
      [
        [0, 1],
        [1, 0],
      ],
    );
    assert.deepEqual(await windows(s, 'C001'), [3, 7]);
    for (const id of [5, '', 'x'.repeat(201)]) {
      const bad = await events(s, txn('C001', 1, id as string));
      assert.equal(bad.status, 400, bad.text);
      assert.match(bad.body.error, /event\.id must be a non-empty string of at most 200 characters/);
    }
    assert.deepEqual(await windows(s, 'C001'), [3, 7]);
  });
});
