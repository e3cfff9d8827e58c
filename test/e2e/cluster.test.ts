// Three replicas on one PostgreSQL behave as one scoreline: a model registered and deployed through
// replica 1 is served by replicas 2 and 3 within 2 s; an alias set through one is read through
// another; a drift reference frozen through one is in force on the others; every replica reports
// how it serves a deployment and who leads; the admin token is one for all; a 10% canary put
// through replica 3 splits 10% of the traffic spread over all three (3,000 requests, within 4
// standard deviations); its promotion and a rollback reach every replica. Predictions served by one
// replica get their labels through another, and a third counts them (the prediction log is shared).

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { logisticToOnnx } from '../../src/retraining/logistic.js';
import { FEATURES, generate, toCsv, TRUE_INTERCEPT, TRUE_WEIGHTS, WEAK, writeWeakModel } from '../fixtures/retraining.js';
import { postgresSkip } from '../fixtures/postgres.js';
import { request, tempDir } from './server.js';
import { startCluster, until, type TestCluster } from './cluster.js';

const skip = postgresSkip();
let c: TestCluster;

const STRONG = {
  mean: [0, 0, 0, 0],
  std: [1, 1, 1, 1],
  weights: TRUE_WEIGHTS,
  intercept: TRUE_INTERCEPT,
  l2: 1,
  iterations: 0,
  converged: true,
};
const infer = (i: number, model: string, x = [0.1, 0.2, 0.3, 0.4]) =>
  request(`${c.url(i)}/v2/models/${model}/infer`, { json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 4], data: x }] } });

before(async () => {
  if (skip) return;
  const repo = await tempDir();
  await writeWeakModel(repo, 'risk', { data: 'none.csv', timeColumn: 'date' });
  c = await startCluster(
    3,
    {
      modelRepository: repo,
      inference: { workers: 0 },
      // The split is measured, not judged: the analysis must not end the canary under a loaded machine.
      deploy: { analysis: { maxP99Factor: 1000, p99SlackMs: 60_000, maxErrorRateIncrease: 1, maxScorePsi: 1000 } },
    },
    { SCORELINE_ADMIN_TOKEN: '' },
  );
});

after(async () => {
  await c?.close();
});

test('a model registered and deployed through replica 1 is served by replicas 2 and 3 within 2 s', { skip }, async (t) => {
  const reg = await c.admin(0, 'POST', '/admin/models/g/versions', {
    body: logisticToOnnx(WEAK, { featureNames: FEATURES, name: 'g' }),
    type: 'application/octet-stream',
  });
  assert.equal(reg.status, 201, reg.text);
  // Registered, not deployed: no replica serves it yet (as with one server).
  assert.equal((await infer(1, 'g')).status, 404);
  const put = await c.admin(0, 'PUT', '/admin/deployments/g', { json: { strategy: 'direct', version: 1 } });
  assert.equal(put.status, 200, put.text);
  const t0 = Date.now();
  assert.equal((await infer(0, 'g')).body.model_version, '1');
  for (const i of [1, 2]) {
    await until(`replica ${i + 1} serves g v1`, 2000, async () => ((await infer(i, 'g')).status === 200 ? true : undefined), 20);
  }
  const elapsed = Date.now() - t0;
  t.diagnostic(`replicas 2 and 3 served g ${elapsed} ms after replica 1 answered the deployment`);
  assert.ok(elapsed <= 2000, `propagation took ${elapsed} ms`);
  // Every replica reports how it serves it, by the stored revision.
  const view = await until('three replicas report g', 5000, async () => {
    const v = (await c.admin(2, 'GET', '/admin/deployments/g')).body;
    return v.replicas?.length === 3 && v.replicas.every((r: any) => r.deployment?.revision === 1) ? v : undefined;
  });
  assert.equal(view.revision, 1);
  assert.deepEqual(
    view.replicas.map((r: any) => r.deployment.spec),
    new Array(3).fill({ strategy: 'direct', version: 1 }),
  );
  assert.ok(view.replicas.every((r: any) => r.deployment.problem === null));
});

test('every replica names the same leader and lists the three; one admin token for all, shared through the store', { skip }, async () => {
  const views = await Promise.all([0, 1, 2].map(async (i) => (await c.admin(i, 'GET', '/admin/cluster')).body));
  const leader = views[0].leader;
  assert.ok(typeof leader === 'string' && leader.length > 0, JSON.stringify(views[0]));
  for (const v of views) {
    assert.equal(v.leader, leader);
    assert.equal(v.replicas.length, 3);
    assert.equal(v.replicas.filter((r: any) => r.leader).length, 1);
    for (const r of v.replicas) {
      assert.match(r.address, /^127\.0\.0\.1:\d+$/);
      assert.ok(Date.parse(r.heartbeat_at) >= Date.parse(r.started_at) - 1000, JSON.stringify(r));
    }
  }
  const ports = views[0].replicas.map((r: any) => Number(r.address.split(':')[1])).sort();
  assert.deepEqual(ports, c.replicas.map((r) => r.server.port).sort());
  // Each replica wrote the shared token into its own data dir for the CLI.
  const tokens = await Promise.all(c.replicas.map((r) => readFile(join(r.dataDir, 'admin-token'), 'utf8')));
  assert.equal(new Set(tokens).size, 1);
  assert.equal((await request(`${c.url(1)}/admin/cluster`)).status, 401);
});

test('an alias set through replica 2 is read through replica 3; a reference frozen through replica 1 is in force on 2 and 3', {
  skip,
}, async () => {
  const set = await c.admin(1, 'PUT', '/admin/models/g/aliases/champion', { json: { version: 1, reason: 'first' } });
  assert.equal(set.status, 200, set.text);
  const got = (await c.admin(2, 'GET', '/admin/models/g/aliases/champion')).body;
  assert.equal(got.version, 1);
  assert.equal(got.history.at(-1).reason, 'first');

  const rows = generate(400, 11);
  // g has no model.yaml: a reference needs the feature columns by name, so it goes to the repository's model.
  const ref = await c.admin(0, 'PUT', '/admin/models/risk/versions/1/reference', { body: toCsv(rows), type: 'text/csv' });
  assert.equal(ref.status, 200, ref.text);
  assert.equal(ref.body.rows, 400);
  for (const i of [1, 2]) {
    await until(
      `replica ${i + 1} drifts against the new reference`,
      2000,
      async () => {
        const snap = (await request(`${c.url(i)}/v1/monitoring/risk?version=1`)).body;
        return snap.reference?.rows === 400 ? true : undefined;
      },
      20,
    );
  }
});

test('predictions served by replica 1 get their labels through replica 2, and replica 3 counts them in its performance window', {
  skip,
}, async () => {
  const rows = generate(60, 23);
  for (const [k, r] of rows.entries()) {
    const res = await request(`${c.url(0)}/v2/models/risk/infer`, {
      json: { id: `fb-${k}`, inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 4], data: r.x }] },
    });
    assert.equal(res.status, 200, res.text);
  }
  // The labels go to another replica than the one that served the predictions: all of them join
  // once replica 1 has shipped them (within its flush interval and a shipping round; sent again
  // until then, which replaces a label rather than adding one).
  const fb = await until('the 60 labels to join through replica 2', 15_000, async () => {
    const r = await request(`${c.url(1)}/v1/feedback`, {
      json: [...rows.map((r, k) => ({ request_id: `fb-${k}`, label: r.label })), { request_id: 'fb-never', label: 1 }],
    });
    assert.equal(r.status, 200, r.text);
    return r.body.joined === 60 ? r.body : undefined;
  });
  assert.deepEqual(fb.unknown_ids, ['fb-never']);
  // A third replica, which served none of them, counts every label.
  const perf = await until('replica 3 to count the 60 labels', 15_000, async () => {
    const p = (await request(`${c.url(2)}/v1/monitoring/risk?version=1`)).body.performance;
    return p?.labelled === 60 ? p : undefined;
  });
  assert.ok(perf.auc > 0 && perf.auc < 1, `AUC ${perf.auc}`);
  const status = (await request(`${c.url(0)}/v1/monitoring`)).body.prediction_log;
  assert.equal(status.shipping.state, 'ok');
  assert.ok(status.shipping.shipped >= 60, JSON.stringify(status.shipping));
});

test('a 10% canary put through replica 3 splits 10% of the traffic spread over all three; promotion and rollback reach every replica', {
  skip,
}, async () => {
  const reg = await c.admin(1, 'POST', '/admin/models/g/versions', {
    body: logisticToOnnx(STRONG, { featureNames: FEATURES, name: 'g' }),
    type: 'application/octet-stream',
  });
  assert.equal(reg.status, 201, reg.text);
  const v2 = reg.body.version as number;
  const put = await c.admin(2, 'PUT', '/admin/deployments/g', { json: { strategy: 'canary', stable: 1, canary: v2, percent: 10 } });
  assert.equal(put.status, 200, put.text);
  // Reported at each replica's next heartbeat (every 2 s).
  await until('every replica reports the canary', 5000, async () => {
    const v = (await c.admin(0, 'GET', '/admin/deployments/g')).body;
    return v.replicas.length === 3 && v.replicas.every((r: any) => r.deployment?.spec.strategy === 'canary') ? true : undefined;
  });

  const N = 3000;
  const perReplica = [0, 0, 0].map(() => ({ n: 0, canary: 0 }));
  let failed = 0;
  for (let start = 0; start < N; start += 60) {
    const batch = await Promise.all(
      Array.from({ length: 60 }, (_, k) => {
        const i = (start + k) % 3;
        return infer(i, 'g').then((r) => ({ i, r }));
      }),
    );
    for (const { i, r } of batch) {
      if (r.status !== 200) failed++;
      perReplica[i]!.n++;
      if (r.body?.model_version === String(v2)) perReplica[i]!.canary++;
    }
  }
  assert.equal(failed, 0);
  const canary = perReplica.reduce((s, p) => s + p.canary, 0);
  const sd = Math.sqrt(N * 0.1 * 0.9);
  assert.ok(Math.abs(canary - N * 0.1) <= 4 * sd, `canary share ${canary} of ${N} (expected ${N * 0.1} +- ${Math.round(4 * sd)})`);
  // Each replica splits on its own: none sends all or none of its share.
  for (const [i, p] of perReplica.entries()) {
    const sdi = Math.sqrt(p.n * 0.1 * 0.9);
    assert.ok(Math.abs(p.canary - p.n * 0.1) <= 4 * sdi, `replica ${i + 1}: ${p.canary} of ${p.n}`);
  }

  const promote = await c.admin(0, 'POST', '/admin/deployments/g/promote', { json: {} });
  assert.equal(promote.status, 200, promote.text);
  for (const i of [0, 1, 2]) {
    await until(
      `replica ${i + 1} serves v${v2} alone`,
      2000,
      async () => {
        const rs = await Promise.all(Array.from({ length: 20 }, () => infer(i, 'g')));
        return rs.every((r) => r.body?.model_version === String(v2)) ? true : undefined;
      },
      20,
    );
  }
  const back = await c.admin(1, 'POST', '/admin/deployments/g/rollback', { json: { reason: 'back to the canary' } });
  assert.equal(back.status, 200, back.text);
  assert.equal(back.body.strategy.strategy, 'canary');
  const history = (await c.admin(2, 'GET', '/admin/deployments/g')).body.history.map((h: any) => h.action);
  assert.deepEqual(history, ['deploy', 'deploy', 'promote', 'rollback']);
});

test('a retraining job asked for through a follower is run by the leader, once', { skip }, async () => {
  const leader = (await c.admin(0, 'GET', '/admin/cluster')).body.leader as string;
  const follower = [0, 1, 2].find((i) => !leader.startsWith(`replica-${i + 1}-`))!;
  const r = await c.admin(follower, 'POST', '/admin/retrain/risk', { json: { reason: 'asked through a follower' } });
  assert.equal(r.status, 202, r.text);
  assert.equal(r.body.job.state, 'queued');
  // The repository names no data file that exists: the job fails at its data step, on the leader.
  const job = await until(
    'the leader runs the job to its end',
    20_000,
    async () => {
      const j = (await c.admin(follower, 'GET', `/admin/jobs/${r.body.job.id}`)).body;
      return j.state === 'failed' ? j : undefined;
    },
    100,
  );
  assert.equal(job.owner, leader);
  // Too few: the labelled predictions it trains on are the shared log's, those joined through replica 2 above among them.
  const found = /not enough training rows: (\d+) \(minRows 200\)/.exec(job.error);
  assert.ok(found !== null && Number(found[1]) > 0, job.error);
  assert.deepEqual(
    (await c.admin(2, 'GET', '/admin/jobs?model=risk')).body.jobs.map((j: { id: string }) => j.id),
    [job.id],
  );
});
