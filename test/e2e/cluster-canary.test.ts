// Canary analysis over two replicas judges the whole cluster's traffic: every request below goes to
// the follower, none to the leader, and still the leader (which alone makes the automatic
// transitions) counts them in GET /admin/deployments/{m} (with `replicas: 2`), advances a healthy
// canary a step on them, and rolls back a canary that fails every request. A new step starts from
// zero: the statistics of the step before never count for it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { writeSumModel, failingSumBytes } from '../fixtures/models.js';
import { postgresSkip } from '../fixtures/postgres.js';
import { request, tempDir } from './server.js';
import { startCluster, until, type TestCluster } from './cluster.js';

const skip = postgresSkip();
let c: TestCluster;
let leader = -1;
let follower = -1;
const v: Record<string, number> = {};

/** y = sum(x), the repository's version 1 answers; `salt` changes the bytes only. */
function sumBytes(salt: string): Uint8Array {
  const g = new GraphBuilder('sum');
  g.input('x', 'FP32', [-1, 4]);
  g.initializer('axes', 'INT64', [1], BigInt64Array.of(1n));
  g.initializer('k', 'FP32', [], Float32Array.of(1));
  g.node('ReduceSum', ['x', 'axes'], ['s'], { keepdims: 1 });
  g.node('Mul', ['s', 'k'], ['y']);
  g.output('y', 'FP32', [-1, 1]);
  return g.toModelBytes({ docString: `sum ${salt}` });
}

const infer = (i: number, x: number[]) =>
  request(`${c.url(i)}/v2/models/sum/infer`, { json: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: x }] } });

/** Sends `n` requests to replica i, 10 at a time. */
async function send(i: number, n: number, x = [1, 2, 3, 4]): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      while (next++ < n) await infer(i, x);
    }),
  );
}

/** PUTs a deployment through the leader and waits until the follower routes by it. */
async function deploy(spec: unknown): Promise<any> {
  const put = await c.admin(leader, 'PUT', '/admin/deployments/sum', { json: spec });
  assert.equal(put.status, 200, put.text);
  await until('the follower to adopt the deployment', 10_000, async () =>
    (await c.admin(follower, 'GET', '/admin/deployments/sum')).body.revision === put.body.revision ? true : undefined,
  );
  return put.body;
}

const view = async (i: number) => (await c.admin(i, 'GET', '/admin/deployments/sum')).body;
const total = (stats: Record<string, { requests: number }>) => Object.values(stats).reduce((s, x) => s + x.requests, 0);

before(async () => {
  if (skip) return;
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 1, { modelYaml: { batching: { maxBatchSize: 32 } } });
  c = await startCluster(2, {
    modelRepository: repo,
    inference: { workers: 0 },
    store: { shareSeconds: 0.2 },
    deploy: { analysisTickMs: 100, latencyBudgetMicros: 2_000_000, analysis: { minRequests: 20 } },
  });
  const cluster = await until('a leader', 15_000, async () => {
    const b = (await c.admin(0, 'GET', '/admin/cluster')).body;
    return b.leader && b.replicas.length === 2 ? b : undefined;
  });
  const port = Number(cluster.replicas.find((r: any) => r.leader).address.split(':')[1]);
  leader = c.replicas.findIndex((r) => r.server.port === port);
  assert.ok(leader >= 0, JSON.stringify(cluster));
  follower = 1 - leader;
  for (const [name, bytes] of [
    ['copy', sumBytes('copy')],
    ['failing', failingSumBytes()],
  ] as const) {
    const r = await c.admin(leader, 'POST', '/admin/models/sum/versions', { body: bytes, type: 'application/octet-stream' });
    assert.equal(r.status, 201, r.text);
    v[name] = r.body.version;
  }
});

after(async () => {
  await c?.close();
});

test("the leader counts a follower's canary requests (replicas: 2) and advances the canary a step on them alone", { skip }, async () => {
  // A step that is never due: its figures can be read before anything moves.
  await deploy({ strategy: 'canary', stable: 1, canary: v.copy, percent: 50, steps: [60, 100], stepSeconds: 3600 });
  await send(follower, 60);
  const seen = await until("the leader's view to hold the follower's 60 requests", 10_000, async () => {
    const b = await view(leader);
    return total(b.step_stats) === 60 ? b : undefined;
  });
  for (const st of Object.values(seen.step_stats) as any[]) assert.equal(st.replicas, 2, JSON.stringify(seen.step_stats));
  assert.equal(seen.step_sharing.replicas, 2);
  assert.equal(seen.step_sharing.state, 'merged');
  assert.equal(seen.live_analysis.canaryRequests + seen.live_analysis.stableRequests, 60);
  assert.equal(seen.live_analysis.replicas, 2);
  // Any replica answers with the same figures.
  assert.equal(total((await view(follower)).step_stats), 60);

  // A new step: the statistics of the one before never count for it.
  await deploy({ strategy: 'canary', stable: 1, canary: v.copy, percent: 50, steps: [60, 100], stepSeconds: 1 });
  const fresh = await view(leader);
  assert.equal(total(fresh.step_stats), 0, JSON.stringify(fresh.step_stats));

  // Traffic to the follower only, until the leader's analysis passes and moves the canary to 60%.
  await until(
    "the leader to advance the canary on the follower's traffic",
    45_000,
    async () => {
      const b = await view(leader);
      if (b.strategy.percent === 60) return true;
      await send(follower, 20);
      return undefined;
    },
    0,
  );
  const moved = await view(leader);
  const step = moved.history.at(-1);
  assert.equal(step.action, 'canary-step', JSON.stringify(step));
  const decided = moved.analysis.at(-1);
  assert.equal(decided.verdict, 'pass');
  assert.equal(decided.replicas, 2);
  assert.ok(decided.canaryRequests >= 20 && decided.stableRequests >= 100, JSON.stringify(decided));
});

test('a canary failing every request, served by the follower only, is rolled back by the leader', { skip }, async () => {
  await deploy({ strategy: 'canary', stable: 1, canary: v.failing, percent: 50, steps: [100], stepSeconds: 3600 });
  await until(
    'the leader to roll the failing canary back',
    30_000,
    async () => {
      const b = await view(leader);
      if (b.strategy.strategy === 'direct') return true;
      await send(follower, 20, [1000, 1, 2, 3]);
      return undefined;
    },
    0,
  );
  const b = await view(leader);
  assert.deepEqual(b.strategy, { strategy: 'direct', version: 1 });
  const last = b.history.at(-1);
  assert.equal(last.action, 'canary-rollback');
  assert.match(last.reason, /canary analysis failed: error_rate/);
  const decided = b.analysis.at(-1);
  assert.equal(decided.verdict, 'fail');
  assert.equal(decided.replicas, 2);
  assert.ok(decided.canaryRequests > 0, JSON.stringify(decided));
});
