// PostgreSQL stopped for 30 s under load, with three replicas serving: not one inference request
// fails (the request path never waits on the store), admin writes answer 503 with Retry-After and
// name the store, and change nothing; no replica exits; a replica started during the outage waits
// for the store, saying why, and joins when it is back; afterwards a leader is elected again, the
// monitoring every replica kept during the outage is in the merged view, and a deployment made
// through one replica reaches the others, without restarting any of them.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { logisticToOnnx } from '../../src/retraining/logistic.js';
import { FEATURES, TRUE_INTERCEPT, TRUE_WEIGHTS, writeWeakModel } from '../fixtures/retraining.js';
import { postgresSkip } from '../fixtures/postgres.js';
import { request, tempDir } from './server.js';
import { alive, startCluster, until, type TestCluster } from './cluster.js';
import { elapse } from '../fixtures/wait.js';

const skip = postgresSkip();
const OUTAGE_MS = 30_000;
let c: TestCluster;

before(async () => {
  if (skip) return;
  const repo = await tempDir();
  await writeWeakModel(repo, 'risk', { data: 'none.csv', timeColumn: 'date' });
  c = await startCluster(3, { modelRepository: repo, inference: { workers: 0 } });
});

after(async () => {
  await c?.close();
});

const infer = (i: number) =>
  request(`${c.url(i)}/v2/models/risk/infer`, {
    json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 4], data: [0.1, 0.2, 0.3, 0.4] }] },
  });

test('PostgreSQL stopped 30 s under load: no failed inference, admin writes 503 naming the store, no replica exits, everything reconciles after', {
  skip,
}, async (t) => {
  assert.equal((await c.admin(0, 'PUT', '/admin/deployments/risk', { json: { strategy: 'direct', version: 1 } })).status, 200);
  const strong = logisticToOnnx(
    { mean: [0, 0, 0, 0], std: [1, 1, 1, 1], weights: TRUE_WEIGHTS, intercept: TRUE_INTERCEPT, l2: 1, iterations: 0, converged: true },
    { featureNames: FEATURES, name: 'risk' },
  );

  // Load: eight requests in flight at all times, spread over the three replicas.
  const statuses = new Map<number, number>();
  let sent = 0;
  let answered = 0;
  let stop = false;
  const worker = async (w: number) => {
    while (!stop) {
      const i = (sent++ + w) % 3;
      let status: number;
      try {
        const r = await infer(i);
        status = r.status;
        if (status === 200) answered++;
      } catch {
        status = -1; // refused or reset: as failed as a 5xx
      }
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
  };
  const load = Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
  try {
    await until('load runs', 5000, async () => (sent > 100 ? true : undefined));
    await c.pg.stop();
    const down = Date.now();
    const location = new RegExp(`the store \\(PostgreSQL at postgres@127\\.0\\.0\\.1:${c.pg.port}/scoreline\\) cannot be reached`);
    const writes: [number, string, string, { json?: unknown; body?: Uint8Array; type?: string }][] = [
      [0, 'PUT', '/admin/models/risk/aliases/champion', { json: { version: 1 } }],
      [1, 'PUT', '/admin/deployments/risk', { json: { strategy: 'direct', version: 1 } }],
      [2, 'POST', '/admin/models/risk/versions', { body: strong, type: 'application/octet-stream' }],
      [0, 'POST', '/admin/deployments/risk/rollback', { json: {} }],
    ];
    for (const [i, method, path, init] of writes) {
      const r = await c.admin(i, method, path, init);
      assert.equal(r.status, 503, `${method} ${path}: ${r.text}`);
      assert.ok(Number(r.headers.get('retry-after')) > 0, `${method} ${path} has Retry-After`);
      assert.match(r.body.error, location);
    }
    // The outage lasts 30 s, every replica serving throughout. Half way, a fourth replica starts: it
    // waits for the store and says why, and listens once the store is back.
    let late: Promise<unknown> | null = null;
    const lateLog: string[] = [];
    while (Date.now() - down < OUTAGE_MS) {
      if (late === null && Date.now() - down > OUTAGE_MS / 2) {
        late = c.start(3, {}, (l) => lateLog.push(l));
        late.catch(() => undefined);
        await until('the late replica says why it waits', 10_000, async () =>
          lateLog.some((l) => /cannot reach the store \(PostgreSQL at .*\): .*ECONNREFUSED.*; retrying in \d+ ms/.test(l))
            ? true
            : undefined,
        );
        assert.equal(c.replicas[3], undefined, 'it does not listen without the store');
      }
      for (const r of c.replicas.slice(0, 3)) assert.ok(alive(r), 'no replica exits');
      assert.equal((await c.admin(1, 'PUT', '/admin/models/risk/aliases/champion', { json: { version: 1 } })).status, 503);
      // Elapsed time is the subject: the outage lasts OUTAGE_MS, checked every half second.
      await elapse(500);
    }
    const during = sent;
    await c.pg.start();
    t.diagnostic(`${during} requests sent during the 30 s outage and before it`);
    await late;

    // Back: writes succeed again, a leader is elected, the refused alias was never set.
    await until(
      'admin writes succeed again',
      15_000,
      async () => ((await c.admin(2, 'GET', '/admin/models/risk/aliases/champion')).status === 200 ? true : undefined),
      200,
    );
    assert.equal(
      (await c.admin(2, 'GET', '/admin/models/risk/aliases/champion')).body.version,
      null,
      'nothing refused during the outage was written',
    );
    const view = await until(
      'a leader and four replicas',
      20_000,
      async () => {
        const v = (await c.admin(0, 'GET', '/admin/cluster')).body;
        return v.leader && v.replicas?.length === 4 ? v : undefined;
      },
      200,
    );
    assert.equal(view.replicas.filter((r: { leader: boolean }) => r.leader).length, 1);

    // Monitoring: what every replica served during the outage waited and was written after; the
    // merged view on any replica counts every answered request, none dropped.
    stop = true;
    await load;
    const merged = await until(
      'the merged view counts every answered request',
      15_000,
      async () => {
        const r = await request(`${c.url(2)}/v1/monitoring/risk?version=1&window=1h`);
        if (r.status !== 200) throw new Error(`${r.status}: ${r.text}`);
        const s = r.body;
        if (s.volume?.requests === answered && s.latency.count === answered) return s;
        // What the view said last goes into the timeout's message.
        throw new Error(
          `${answered} answered, the view has ${s.volume?.requests} requests and ${s.latency?.count} latencies; ` +
            `replicas ${JSON.stringify(s.replicas)}, statuses ${JSON.stringify([...statuses])}`,
        );
      },
      200,
    );
    assert.equal(merged.replicas.state, 'merged');
    const metrics = await Promise.all([0, 1, 2].map(async (i) => (await request(`${c.url(i)}/metrics`)).text));
    const count = (text: string, name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
    assert.ok(
      metrics.every((m) => count(m, 'scoreline_monitoring_share_errors_total') > 0),
      'every replica counted its failed shares',
    );
    assert.ok(metrics.every((m) => count(m, 'scoreline_monitoring_share_dropped_total') === 0));
    assert.ok(metrics.every((m) => count(m, 'scoreline_monitoring_share_pending') === 0));
    t.diagnostic(`${answered} answered requests in the merged view after the outage`);
    const reg = await c.admin(1, 'POST', '/admin/models/risk/versions', { body: strong, type: 'application/octet-stream' });
    assert.equal(reg.status, 201, reg.text);
    assert.equal(
      (await c.admin(1, 'PUT', '/admin/deployments/risk', { json: { strategy: 'direct', version: reg.body.version } })).status,
      200,
    );
    for (const i of [0, 2, 3]) {
      await until(
        `replica ${i + 1} serves v${reg.body.version}`,
        2000,
        async () => ((await infer(i)).body?.model_version === String(reg.body.version) ? true : undefined),
        20,
      );
    }
  } finally {
    stop = true;
    await load;
  }
  const failed = [...statuses].filter(([s]) => s !== 200);
  assert.deepEqual(failed, [], `statuses: ${JSON.stringify([...statuses])}`);
  assert.ok((statuses.get(200) ?? 0) > 1000, `only ${statuses.get(200)} requests answered`);
  for (const r of c.replicas) assert.ok(alive(r), 'no replica exits');
});
