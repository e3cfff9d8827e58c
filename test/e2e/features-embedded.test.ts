// The embedded feature store across restarts of a real server on a real data dir: what was loaded
// and the events that were answered survive a clean stop and a kill -9 (the same values, statuses
// and windows; event ids still recognised); a source file that did not change is not read again,
// one that changed is; `scoreline features materialize --data-dir` loads it ahead of the server;
// `features.embedded.durable: false` keeps nothing.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { CLI, request, startServer, tempDir, type TestServer } from './server.js';

const COLUMNS = ['income', 'loans', 'txn_sum_1h', 'lates'];
const HOUR = 3_600_000;

async function writeFixture(dir: string, incomeOfC001 = 5000): Promise<{ config: string; csv: string }> {
  const repo = join(dir, 'models');
  const g = new GraphBuilder('linear');
  g.input('input', 'FP32', [-1, COLUMNS.length]);
  g.initializer('w', 'FP32', [COLUMNS.length, 1], Float32Array.from([0.001, 1, 0.01, 2]));
  g.node('MatMul', ['input', 'w'], ['y']);
  g.output('y', 'FP32', [-1, 1]);
  await mkdir(join(repo, 'm', '1'), { recursive: true });
  await writeFile(join(repo, 'm', '1', 'model.onnx'), g.toModelBytes());
  await writeFile(join(repo, 'm', 'model.yaml'), stringify({ features: COLUMNS }));
  const csv = join(dir, 'people.csv');
  await writePeople(csv, incomeOfC001);
  await writeFile(
    join(dir, 'features.yaml'),
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
          fallback: { default: 1 },
        },
        {
          name: 'loans',
          version: 1,
          entity: 'customer',
          type: 'offline',
          dtype: 'int64',
          ttl: '1d',
          source: 'people',
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
  const config = join(dir, 'server.yaml');
  await writeFile(
    config,
    stringify({ modelRepository: repo, dataDir: join(dir, 'data'), features: { definitions: join(dir, 'features.yaml') } }),
  );
  return { config, csv };
}

async function writePeople(csv: string, incomeOfC001: number): Promise<void> {
  const iso = new Date(Date.now() - HOUR).toISOString();
  await writeFile(
    csv,
    `customer_id,as_of,income,loans,lates\nC001,${iso},${incomeOfC001},2,1\nC002,${iso},6000,0,\nC003,${iso},7000,5,3\n`,
  );
}

const score = (s: TestServer, id: string) => request(`${s.url}/v1/score/m`, { json: { entity: { customer_id: id }, debug: true } });
const events = (s: TestServer, body: unknown) => request(`${s.url}/v1/events`, { json: body });

/** Values and statuses of every feature of three customers (ages move between two requests). */
async function snapshot(s: TestServer): Promise<unknown> {
  const out: Record<string, unknown> = {};
  for (const id of ['C001', 'C002', 'C003', 'C004']) {
    const r = await score(s, id);
    assert.equal(r.status, 200, r.text);
    out[id] = [r.body.score, Object.fromEntries(Object.entries<any>(r.body.features).map(([k, v]) => [k, [v.value, v.status]]))];
  }
  return out;
}

const loadedLines = (s: TestServer) => s.logs.filter((l) => l.includes('feature source loaded into the feature store')).length;
const unchangedLines = (s: TestServer) => s.logs.filter((l) => l.includes('feature source unchanged')).length;

test('the embedded store keeps what it loaded and the events it answered, across a stop and a kill -9', async () => {
  const dir = await tempDir();
  const { config, csv } = await writeFixture(dir);
  let s = await startServer(['--config', config, '--data-dir', join(dir, 'data')]);
  let before: unknown;
  try {
    assert.equal(loadedLines(s), 1);
    const sent = await events(s, {
      events: [
        { event: 'txn', id: 't1', entity: { customer_id: 'C001' }, fields: { amount: 12.5 } },
        { event: 'txn', id: 't2', entity: { customer_id: 'C001' }, fields: { amount: 30 }, ts: Date.now() - 10 * 60_000 },
        { event: 'late', id: 'l1', entity: { customer_id: 'C003' } },
      ],
    });
    assert.deepEqual([sent.body.accepted, sent.body.duplicates], [3, 0]);
    before = await snapshot(s);
    const c1 = (await score(s, 'C001')).body.features;
    assert.deepEqual([c1['income@1'].value, c1['loans@1'].value, c1['txn_sum_1h@1'].value, c1['lates@1'].value], [5000, 2, 42.5, 1]);
    assert.equal((await score(s, 'C003')).body.features['lates@1'].value, 4);
  } finally {
    await s.stop();
  }
  assert.ok(existsSync(join(dir, 'data', 'features.db')));

  // A clean restart: the source is unchanged and not read again; everything is as it was.
  s = await startServer(['--config', config, '--data-dir', join(dir, 'data')]);
  try {
    assert.equal(loadedLines(s), 0, s.logs.join('\n'));
    assert.equal(unchangedLines(s), 1);
    assert.deepEqual(await snapshot(s), before);
    const retry = await events(s, { event: 'txn', id: 't1', entity: { customer_id: 'C001' }, fields: { amount: 12.5 } });
    assert.deepEqual([retry.body.accepted, retry.body.duplicates], [0, 1], 'an event id applied before the restart is still known');
    // answered, then the process is killed: the event was committed before the answer
    const answered = await events(s, { event: 'txn', id: 't3', entity: { customer_id: 'C002' }, fields: { amount: 8 } });
    assert.equal(answered.body.accepted, 1);
  } finally {
    await s.stop('SIGKILL');
  }
  s = await startServer(['--config', config, '--data-dir', join(dir, 'data')]);
  try {
    assert.equal((await score(s, 'C002')).body.features['txn_sum_1h@1'].value, 8);
    assert.equal((await score(s, 'C001')).body.features['txn_sum_1h@1'].value, 42.5);
  } finally {
    await s.stop();
  }

  // A changed source file is loaded again.
  await writePeople(csv, 9100);
  s = await startServer(['--config', config, '--data-dir', join(dir, 'data')]);
  try {
    assert.equal(loadedLines(s), 1);
    assert.equal((await score(s, 'C001')).body.features['income@1'].value, 9100);
  } finally {
    await s.stop();
  }
});

test('with features.embedded.durable false nothing is kept', async () => {
  const dir = await tempDir();
  const { config } = await writeFixture(dir);
  const memoryOnly = join(dir, 'memory.yaml');
  await writeFile(
    memoryOnly,
    stringify({
      modelRepository: join(dir, 'models'),
      dataDir: join(dir, 'data'),
      features: { definitions: join(dir, 'features.yaml'), embedded: { durable: false } },
    }),
  );
  void config;
  let s = await startServer(['--config', memoryOnly, '--data-dir', join(dir, 'data')]);
  try {
    assert.equal((await events(s, { event: 'txn', id: 'm1', entity: { customer_id: 'C001' }, fields: { amount: 3 } })).body.accepted, 1);
    assert.equal((await score(s, 'C001')).body.features['txn_sum_1h@1'].value, 3);
  } finally {
    await s.stop();
  }
  assert.equal(existsSync(join(dir, 'data', 'features.db')), false);
  s = await startServer(['--config', memoryOnly, '--data-dir', join(dir, 'data')]);
  try {
    assert.equal(loadedLines(s), 1, 'loaded again at every start');
    assert.equal((await score(s, 'C001')).body.features['txn_sum_1h@1'].value, 0);
  } finally {
    await s.stop();
  }
});

test('scoreline features materialize --data-dir loads the store before the server starts', async () => {
  const dir = await tempDir();
  const { config } = await writeFixture(dir, 4321);
  const data = join(dir, 'data');
  const m = spawnSync(process.execPath, [CLI, 'features', 'materialize', '--config', config, '--data-dir', data, '--quiet'], {
    encoding: 'utf8',
  });
  assert.equal(m.status, 0, m.stderr + m.stdout);
  assert.match(m.stdout, /materialized 3 entity groups from 3 rows/);
  const s = await startServer(['--config', config, '--data-dir', data]);
  try {
    assert.equal(loadedLines(s), 0, 'the server did not read the source again');
    assert.equal(unchangedLines(s), 1);
    const f = (await score(s, 'C001')).body.features;
    assert.deepEqual([f['income@1'].value, f['income@1'].status, f['loans@1'].value], [4321, 'present', 2]);
  } finally {
    await s.stop();
  }
  const both = spawnSync(
    process.execPath,
    [CLI, 'features', 'materialize', '--config', config, '--data-dir', data, '--redis', 'redis://127.0.0.1:1'],
    { encoding: 'utf8' },
  );
  assert.equal(both.status, 2, both.stderr);
  assert.match(both.stderr, /not both/);
});
