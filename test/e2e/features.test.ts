// Entity scoring end to end, against real servers: every feature type (offline, online by
// expression and by module, realtime, hybrid) resolving from the in-process store and from a real
// Redis; staleness and each fallback; Redis killed in the middle and coming back; bad entity ids
// and bad event bodies refused with 400 and nothing stored; the bundled demo.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { stringify } from 'yaml';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { CLI, ROOT, request, startServer, tempDir, type TestServer } from './server.js';
import { redisAvailable, startRedis, type TestRedis } from './redis.js';
import { waitFor } from '../fixtures/wait.js';

const COLUMNS = ['income', 'age', 'debt', 'score_band', 'ratio', 'tripled', 'txn_sum_1h', 'txn_max_1h', 'lates', 'amount'];
const WEIGHTS = [0.001, 0.1, 0.01, 1, 10, 0.05, 0.02, 0.03, 2, 0.0001];
const HOUR = 3_600_000;
const now = Date.now();

/** y = x . WEIGHTS, so the score tells exactly which values the model received. */
async function writeLinearModel(repo: string): Promise<void> {
  const g = new GraphBuilder('linear');
  g.input('input', 'FP32', [-1, COLUMNS.length]);
  g.initializer('w', 'FP32', [COLUMNS.length, 1], Float32Array.from(WEIGHTS));
  g.node('MatMul', ['input', 'w'], ['y']);
  g.output('y', 'FP32', [-1, 1]);
  await mkdir(join(repo, 'linear', '1'), { recursive: true });
  await writeFile(join(repo, 'linear', '1', 'model.onnx'), g.toModelBytes());
  await writeFile(join(repo, 'linear', 'model.yaml'), stringify({ features: COLUMNS, bindings: { amount: 'request.amount' } }));
}

const expectedScore = (values: Record<string, number>) => COLUMNS.reduce((s, c, i) => s + Math.fround(values[c]!) * WEIGHTS[i]!, 0);

async function writeFeatures(dir: string): Promise<string> {
  const iso = (ms: number) => new Date(ms).toISOString();
  await writeFile(
    join(dir, 'people.csv'),
    `${[
      'customer_id,as_of,income,age,debt,score_band,lates',
      `C001,${iso(now - HOUR)},5000,30,400,2,1`,
      `C002,${iso(now - 72 * HOUR)},6000,40,500,3,2`,
      `C003,${iso(now - HOUR)},7000,50,,4,0`,
    ].join('\n')}\n`,
  );
  await writeFile(join(dir, 'triple.js'), 'export function triple({ age }) { return age * 3; }\n');
  const defs = {
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
        fallback: 'last_known',
      },
      {
        name: 'debt',
        version: 1,
        entity: 'customer',
        type: 'offline',
        dtype: 'float64',
        ttl: '1d',
        source: 'people',
        dependsOn: ['income'],
        expression: 'income * 0.1',
        fallback: 'compute',
      },
      {
        name: 'score_band',
        version: 1,
        entity: 'customer',
        type: 'offline',
        dtype: 'float64',
        ttl: '1d',
        source: 'people',
        fallback: 'error',
      },
      {
        name: 'ratio',
        version: 1,
        entity: 'customer',
        type: 'online',
        dtype: 'float64',
        dependsOn: ['debt', 'income', 'request.amount'],
        expression: '(debt + amount) / income',
        fallback: { default: -1 },
      },
      {
        name: 'tripled',
        version: 1,
        entity: 'customer',
        type: 'online',
        dtype: 'float64',
        dependsOn: ['age'],
        module: './triple.js',
        function: 'triple',
        fallback: 'error',
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
        name: 'txn_max_1h',
        version: 1,
        entity: 'customer',
        type: 'realtime',
        dtype: 'float64',
        event: 'txn',
        aggregation: 'max',
        field: 'amount',
        window: '1h',
        fallback: { default: -5 },
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
  };
  const path = join(dir, 'features.yaml');
  await writeFile(path, stringify(defs));
  return path;
}

interface Setup {
  server: TestServer;
  redis: TestRedis | null;
  dir: string;
}

async function setup(withRedis: boolean): Promise<Setup> {
  const dir = await tempDir();
  const repo = join(dir, 'models');
  await writeLinearModel(repo);
  const defs = await writeFeatures(dir);
  const redis = withRedis ? await startRedis() : null;
  const config = join(dir, 'server.yaml');
  await writeFile(
    config,
    stringify({
      modelRepository: repo,
      features: { definitions: defs, ...(redis ? { redis: { url: redis.url, timeoutMs: 200 } } : {}), cache: { ttlSeconds: 60 } },
    }),
  );
  if (redis) {
    const m = spawnSync(process.execPath, [CLI, 'features', 'materialize', '--definitions', defs, '--redis', redis.url, '--quiet'], {
      encoding: 'utf8',
    });
    assert.equal(m.status, 0, m.stderr + m.stdout);
    assert.match(m.stdout + m.stderr, /materialized 3 entity groups from 3 rows/);
  }
  const server = await startServer(['--config', config]);
  return { server, redis, dir };
}

const score = (s: Setup, body: unknown) => request(`${s.server.url}/v1/score/linear`, { json: body });
const events = (s: Setup, body: unknown) => request(`${s.server.url}/v1/events`, { json: body });

function checkFresh(r: { status: number; body: any; text: string }, txns: number[]): void {
  assert.equal(r.status, 200, r.text);
  const f = r.body.features;
  const v = (ref: string) => f[ref].value as number;
  for (const ref of ['income@1', 'age@1', 'debt@1', 'score_band@1', 'lates@1']) assert.equal(f[ref].status, 'present', ref);
  assert.equal(v('income@1'), 5000);
  assert.equal(v('debt@1'), 400);
  assert.ok(f['income@1'].age_ms >= HOUR - 1000 && f['income@1'].age_ms < HOUR + 60_000, `age ${f['income@1'].age_ms}`);
  assert.equal(v('ratio@1'), (400 + 250) / 5000);
  assert.equal(f['ratio@1'].status, 'present');
  assert.equal(v('tripled@1'), 90);
  assert.equal(
    v('txn_sum_1h@1'),
    txns.reduce((a, b) => a + b, 0),
  );
  if (txns.length > 0) assert.equal(v('txn_max_1h@1'), Math.max(...txns));
  else assert.deepEqual([v('txn_max_1h@1'), f['txn_max_1h@1'].status], [-5, 'default']);
  // hybrid: 1 late payment in the batch + the late events sent after it
  const values = {
    income: 5000,
    age: 30,
    debt: 400,
    score_band: 2,
    ratio: 650 / 5000,
    tripled: 90,
    txn_sum_1h: v('txn_sum_1h@1'),
    txn_max_1h: v('txn_max_1h@1'),
    lates: v('lates@1'),
    amount: 250,
  };
  assert.ok(Math.abs(r.body.score - expectedScore(values)) < 1e-3, `score ${r.body.score} vs ${expectedScore(values)}`);
}

for (const withRedis of [false, true]) {
  describe(withRedis ? 'with Redis' : 'embedded store', {
    skip: withRedis && !redisAvailable() && !process.env.CI ? 'redis-server not installed' : false,
  }, () => {
    let s: Setup;
    before(async () => {
      s = await setup(withRedis);
    });
    after(async () => {
      await s.server.stop();
      await s.redis?.kill();
    });

    test('every feature type resolves, with statuses and ages; the model gets exactly those values', async () => {
      const body = { entity: { customer_id: 'C001' }, context: { amount: 250 }, debug: true };
      checkFresh(await score(s, body), []);
      const sent = await events(s, {
        events: [
          { event: 'txn', entity: { customer_id: 'C001' }, fields: { amount: 12.5 } },
          { event: 'txn', entity: { customer_id: 'C001' }, fields: { amount: 40 }, ts: new Date(Date.now() - 60_000).toISOString() },
          { event: 'late', entity: { customer_id: 'C001' } },
        ],
      });
      assert.deepEqual({ ...sent.body, ids: sent.body.ids.length }, { accepted: 3, ignored: 0, duplicates: 0, ids: 3 });
      const r = await score(s, body);
      checkFresh(r, [12.5, 40]);
      assert.equal(r.body.features['lates@1'].value, 2);
      assert.match(r.body.request_id, /^[0-9a-f]{12}-[0-9a-z]{6,}$/);
      assert.equal(r.body.model_version, '1');
      if (withRedis) {
        assert.equal(s.redis!.cli('hget', 'sl:g:customer:C001:v1', 'income').split('|')[0], '5000');
        assert.match(s.redis!.cli('keys', 'sl:s:customer:C001:txn.amount:*'), /sl:s:customer:C001:txn\.amount:60000/);
      }
    });

    test('stale values take their fallbacks: default, last_known, compute, error', async () => {
      const body = { entity: { customer_id: 'C002' }, context: { amount: 100 }, debug: true };
      const refused = await score(s, body);
      assert.equal(refused.status, 422);
      assert.match(refused.body.error, /no usable value for feature score_band@1 of customer C002/);
      const r = await score(s, { ...body, features: { score_band: 7 } });
      assert.equal(r.status, 200, r.text);
      const f = r.body.features;
      assert.deepEqual([f['income@1'].value, f['income@1'].status], [1000, 'default']);
      assert.deepEqual([f['age@1'].value, f['age@1'].status], [40, 'stale']);
      assert.deepEqual([f['debt@1'].value, f['debt@1'].status], [100, 'default']);
      assert.deepEqual([f['score_band@1'].value, f['score_band@1'].status], [7, 'override']);
      assert.equal(f['tripled@1'].value, 120);
      // a missing value (empty cell) takes the fallback too
      const c3 = await score(s, { entity: { customer_id: 'C003' }, context: { amount: 100 }, debug: true });
      assert.deepEqual([c3.body.features['debt@1'].value, c3.body.features['debt@1'].status], [700, 'default']);
      // an entity the store has never seen: defaults where there are any, 422 otherwise
      const unknown = await score(s, { entity: { customer_id: 'C999' }, context: { amount: 1 } });
      assert.equal(unknown.status, 422);
      assert.match(unknown.body.error, /age@1, score_band@1/);
    });

    test('bad entity ids, request fields, overrides and event bodies get 400 and store nothing', async () => {
      const cases: [unknown, RegExp][] = [
        [{ entity: { customer_id: 'X1' }, context: { amount: 1 } }, /'X1' is not a valid customer id \(must match C\[0-9\]\{3\}\)/],
        [{ entity: {}, context: { amount: 1 } }, /entity\.customer_id is required/],
        [{ entity: { customer_id: ['C001'] }, context: { amount: 1 } }, /must be a string, got array/],
        [{ context: { amount: 1 } }, /"entity" is required/],
        [{ entity: { customer_id: 'C001' } }, /context\.amount is required/],
        [{ entity: { customer_id: 'C001' }, context: { amount: 'lots' } }, /context\.amount must be a finite number/],
        [{ entity: { customer_id: 'C001' }, context: { amount: 1 }, features: { nope: 1 } }, /'nope' is not a feature this model uses/],
        [{ entity: { customer_id: 'C001' }, context: { amount: 1 }, features: { lates: 1.5 } }, /features\.lates must be a finite int64/],
      ];
      for (const [body, msg] of cases) {
        const r = await score(s, body);
        assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
        assert.match(r.body.error, msg);
      }
      const before = await score(s, { entity: { customer_id: 'C003' }, context: { amount: 1 }, debug: true });
      const keysBefore = s.redis?.cli('dbsize');
      const bad: [unknown, RegExp][] = [
        [{ event: 'nope', entity: { customer_id: 'C003' } }, /event 'nope' feeds no feature/],
        [{ event: 'txn', entity: { customer_id: 'C003' } }, /fields\.amount must be a finite number/],
        [{ event: 'txn', entity: { customer_id: 'C003' }, fields: { amount: 'x' } }, /fields\.amount must be a finite number/],
        [{ event: 'late', entity: { customer_id: 'bad id' } }, /not a valid customer id/],
        [{ event: 'late', entity: { customer_id: 'C003' }, ts: Date.now() + 3_600_000 }, /ts is in the future/],
        [{ event: 'late', entity: { customer_id: 'C003' }, ts: 'yesterday-ish' }, /ts must be epoch milliseconds or an ISO date-time/],
        [
          {
            events: [
              { event: 'late', entity: { customer_id: 'C003' } },
              { event: 'late', entity: { customer_id: 'C3' } },
            ],
          },
          /events\[1\]: .*not a valid customer id/,
        ],
        [{ events: [] }, /"events" must be a non-empty array/],
        [[1, 2], /body must be an event object/],
      ];
      for (const [body, msg] of bad) {
        const r = await events(s, body);
        assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
        assert.match(r.body.error, msg);
      }
      const afterwards = await score(s, { entity: { customer_id: 'C003' }, context: { amount: 1 }, debug: true });
      assert.deepEqual(valuesOf(afterwards.body.features), valuesOf(before.body.features), 'no bad event changed a feature');
      if (s.redis) assert.equal(s.redis.cli('dbsize'), keysBefore);
      // an event older than every window is accepted and ignored
      const old = await events(s, { event: 'late', entity: { customer_id: 'C003' }, ts: Date.now() - 400 * 24 * HOUR });
      assert.deepEqual({ ...old.body, ids: old.body.ids.length }, { accepted: 0, ignored: 1, duplicates: 0, ids: 1 });
    });

    test('event frames over the WebSocket stream', async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${s.server.port}/v1/stream`);
      await new Promise((r) => ws.once('open', r));
      const answers: any[] = [];
      const got = new Promise<void>((resolve) => ws.on('message', (d) => answers.push(JSON.parse(d.toString())) === 2 && resolve()));
      ws.send(JSON.stringify({ id: 'e1', event: 'txn', entity: { customer_id: 'C003' }, fields: { amount: 7 } }));
      ws.send(JSON.stringify({ id: 'e2', event: 'txn', entity: { customer_id: 'nope' }, fields: { amount: 7 } }));
      await got;
      ws.close();
      assert.deepEqual(
        answers.find((a) => a.id === 'e1'),
        { id: 'e1', accepted: 1, ignored: 0, duplicates: 0, ids: ['e1'] },
      );
      const e2 = answers.find((a) => a.id === 'e2');
      assert.equal(e2.status, 400);
      const r = await score(s, { entity: { customer_id: 'C003' }, context: { amount: 1 }, debug: true });
      assert.equal(r.body.features['txn_sum_1h@1'].value, 7);
    });
  });
}

/** Ages move between two requests; values and statuses must not. */
function valuesOf(features: Record<string, any>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(features)) out[k] = [v.value, v.status];
  return out;
}

describe('Redis goes away in the middle', { skip: !redisAvailable() && !process.env.CI ? 'redis-server not installed' : false }, () => {
  test('cached entities keep scoring, others fall back, readiness says degraded, then it reconnects by itself', async () => {
    const s = await setup(true);
    try {
      const body = { entity: { customer_id: 'C001' }, context: { amount: 250 }, debug: true };
      checkFresh(await score(s, body), []);
      await s.redis!.kill();
      const cached = await score(s, body);
      assert.equal(cached.status, 200, cached.text);
      assert.equal(cached.body.features['income@1'].status, 'present');
      assert.equal(cached.body.features['income@1'].reason, undefined);
      // its windows were cached with its groups: read from L1 (no events: sum 0, max takes its default)
      const sum = cached.body.features['txn_sum_1h@1'];
      assert.deepEqual([sum.value, sum.status, sum.reason], [0, 'present', undefined]);
      assert.ok(sum.window_age_ms >= 0 && sum.window_age_ms < 60_000, `window age ${sum.window_age_ms}`);
      assert.deepEqual([cached.body.features['txn_max_1h@1'].status, cached.body.features['txn_max_1h@1'].reason], ['default', undefined]);
      // a customer not cached: its windows could not be read, and say why
      const uncached = await score(s, {
        entity: { customer_id: 'C003' },
        context: { amount: 1 },
        features: { age: 50, score_band: 4 },
        debug: true,
      });
      assert.equal(uncached.status, 200, uncached.text);
      assert.deepEqual(uncached.body.features['txn_max_1h@1'], {
        value: -5,
        status: 'default',
        age_ms: null,
        reason: 'store not connected',
      });
      const ready = await request(`${s.server.url}/v2/health/ready`);
      assert.equal(ready.status, 200);
      assert.match(ready.body.degraded, /unreachable/);
      const t0 = performance.now();
      const cold = await score(s, { entity: { customer_id: 'C003' }, context: { amount: 1 }, debug: true });
      assert.ok(performance.now() - t0 < 2000, 'fails fast, within the request deadline');
      assert.equal(cold.status, 422);
      assert.match(cold.body.error, /age@1, score_band@1/);
      const ev = await events(s, { event: 'late', entity: { customer_id: 'C001' } });
      assert.equal(ev.status, 503);
      assert.equal(ev.headers.get('retry-after'), '1');
      // refused before sending: certainly not stored
      assert.equal(ev.body.state, 'not_stored');
      assert.equal(ev.body.ids.length, 1);
      assert.match(ev.body.error, /^events were not stored: the feature store \(redis\) is not connected/);
      const metrics = await (await fetch(`${s.server.url}/metrics`)).text();
      assert.match(metrics, /scoreline_feature_store_up\{store="redis"\} 0/);
      assert.match(metrics, /scoreline_feature_store_failures_total \d+/);
      await s.redis!.restart();
      await waitFor(async () => (await request(`${s.server.url}/v2/health/ready`)).body.degraded === undefined, {
        timeoutMs: 10_000,
        intervalMs: 100,
        message: 'the server to reconnect to the restarted Redis without a restart',
      });
      const stored = await events(s, { event: 'late', id: 'after-restart', entity: { customer_id: 'C001' } });
      assert.deepEqual(stored.body, { accepted: 1, ignored: 0, duplicates: 0, ids: ['after-restart'] });
    } finally {
      await s.server.stop();
      await s.redis!.kill().catch(() => undefined);
    }
  });
});

test('the bundled demo: npm start config scores a demo customer from every feature type', async () => {
  const server = await startServer(['--config', join(ROOT, 'examples', 'scoreline.yaml')]);
  try {
    const r = await request(`${server.url}/v1/score/credit-default`, {
      json: { entity: { customer_id: 'C00042' }, context: { amount: 5200, duration_months: 24 }, debug: true },
    });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.body.score > 0 && r.body.score < 1);
    const types = new Set<string>();
    for (const [ref, v] of Object.entries<any>(r.body.features)) {
      assert.equal(v.status, 'present', ref);
      types.add(ref);
    }
    assert.deepEqual(Object.keys(r.body.features).sort(), [
      'age@1',
      'credit_history_months@1',
      'debt_to_income@1',
      'employment_years@1',
      'existing_loans@1',
      'existing_monthly_debt@1',
      'income@1',
      'late_payments_90d@1',
      'txn_count_24h@1',
    ]);
    // the same row through the plain OIP endpoint gives the same score
    const f = r.body.features;
    const row = [
      24,
      5200,
      f['age@1'].value,
      f['income@1'].value,
      f['employment_years@1'].value,
      f['credit_history_months@1'].value,
      f['existing_loans@1'].value,
      f['debt_to_income@1'].value,
      f['txn_count_24h@1'].value,
      f['late_payments_90d@1'].value,
    ];
    const oip = await request(`${server.url}/v2/models/credit-default/infer`, {
      json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10], data: row }] },
    });
    assert.equal(oip.body.outputs[1].data[1], r.body.score);
  } finally {
    await server.stop();
  }
});
