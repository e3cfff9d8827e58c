// Triton model control with two replicas on one PostgreSQL: it is per replica (a load through one
// imports the folder into the shared store and loads it there only), while a deployment is what
// every replica serves (put through replica 1, replica 2 loads and serves it by propagation); an
// unload through replica 2 is refused while the store holds replica 1's deployment; a deployment
// removed through replica 1 stops routing on replica 2 too, and a deployment put after the removal
// reaches replica 2 again (the store's revision keeps counting across a removal).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { writeSumModel } from '../fixtures/models.js';
import { postgresSkip } from '../fixtures/postgres.js';
import { request, tempDir } from './server.js';
import { startCluster, until, type TestCluster } from './cluster.js';

const skip = postgresSkip();
let c: TestCluster;
let repo: string;

const infer = (i: number, model: string) =>
  request(`${c.url(i)}/v2/models/${model}/infer`, {
    json: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] },
  });
/** How replica `i` serves the model's deployment, as the store's heartbeat table reports it. */
const appliedOn = async (i: number, model: string) => {
  const v = (await c.admin(0, 'GET', `/admin/deployments/${model}`)).body;
  return v.replicas?.find((r: any) => r.address === `127.0.0.1:${c.replicas[i]!.server.port}`)?.deployment;
};

before(async () => {
  if (skip) return;
  // One folder for both (as a shared volume would be), empty at start: models arrive while they run.
  repo = await tempDir('scoreline-cluster-repo-');
  c = await startCluster(2, { modelRepository: repo, inference: { workers: 0 }, store: { heartbeatSeconds: 1 } });
});

after(async () => {
  await c?.close();
});

test('a load through replica 1 loads there only; a deployment through replica 1 is served by replica 2', { skip }, async () => {
  await writeSumModel(repo, 'mc', 1);
  const load = await c.admin(0, 'POST', '/v2/repository/models/mc/load');
  assert.equal(load.status, 200, load.text);
  assert.deepEqual(load.body.versions, [1]);
  assert.equal((await infer(0, 'mc')).body.outputs[0].data[0], 10);
  // Replica 2 sees the folder and the stored version, but has loaded nothing.
  assert.equal((await infer(1, 'mc')).status, 404);
  const index = (await c.admin(1, 'POST', '/v2/repository/index')).body;
  assert.deepEqual(
    index.find((e: any) => e.name === 'mc'),
    { name: 'mc', version: '1', state: 'UNAVAILABLE', reason: 'not loaded' },
  );
  assert.equal((await c.admin(1, 'GET', '/admin/models/mc')).body.versions.length, 1, 'the load imported into the shared store');

  const put = await c.admin(0, 'PUT', '/admin/deployments/mc', { json: { strategy: 'direct', version: 1 } });
  assert.equal(put.status, 200, put.text);
  await until('replica 2 serves mc by propagation', 10_000, async () => ((await infer(1, 'mc')).status === 200 ? true : undefined));
  const ready = (await c.admin(1, 'POST', '/v2/repository/index', { json: { ready: true } })).body;
  assert.ok(ready.some((e: any) => e.name === 'mc' && e.state === 'READY'));
});

test("an unload through replica 2 is refused while the store holds replica 1's deployment; removed through replica 1, it stops routing on both", {
  skip,
}, async () => {
  const refused = await c.admin(1, 'POST', '/v2/repository/models/mc/unload');
  assert.equal(refused.status, 409, refused.text);
  assert.match(refused.body.error, /has a deployment \(direct, routing to version 1\).*DELETE \/admin\/deployments\/mc/);
  await until('both replicas report the deployment', 10_000, async () =>
    (await appliedOn(0, 'mc')) && (await appliedOn(1, 'mc')) ? true : undefined,
  );

  const removed = await c.admin(0, 'DELETE', '/admin/deployments/mc?reason=back%20to%20latest');
  assert.equal(removed.status, 200, removed.text);
  assert.equal(removed.body.strategy, null);
  assert.equal(removed.body.revision, 2);
  assert.deepEqual(removed.body.history.at(-1), {
    at: removed.body.history.at(-1).at,
    action: 'remove',
    reason: 'back to latest',
    from: { strategy: 'direct', version: 1 },
    to: null,
  });
  // Replica 2 drops the deployment it adopted (its heartbeat reports none) and serves its latest ready version.
  await until('replica 2 no longer routes by the removed deployment', 10_000, async () =>
    (await appliedOn(1, 'mc')) === null ? true : undefined,
  );
  assert.equal((await infer(1, 'mc')).status, 200, 'its versions stay loaded');

  const unload = await c.admin(1, 'POST', '/v2/repository/models/mc/unload');
  assert.equal(unload.status, 200, unload.text);
  assert.deepEqual(unload.body.versions, [1]);
  assert.equal((await infer(1, 'mc')).status, 404);
  assert.equal((await infer(0, 'mc')).status, 200, "an unload is this replica's");
});

test('a deployment put after a removal reaches the replica that dropped it (revisions keep counting)', { skip }, async () => {
  const put = await c.admin(0, 'PUT', '/admin/deployments/mc', { json: { strategy: 'direct', version: 1 } });
  assert.equal(put.status, 200, put.text);
  assert.equal(put.body.revision, 3);
  await until('replica 2 serves mc again', 10_000, async () => ((await infer(1, 'mc')).status === 200 ? true : undefined));
  await until('replica 2 reports revision 3', 10_000, async () => ((await appliedOn(1, 'mc'))?.revision === 3 ? true : undefined));
  // A removal based on what replica 2 has adopted is accepted there too.
  const removed = await c.admin(1, 'DELETE', '/admin/deployments/mc');
  assert.equal(removed.status, 200, removed.text);
  await until('replica 1 drops it', 10_000, async () => ((await appliedOn(0, 'mc')) === null ? true : undefined));
  assert.equal((await c.admin(0, 'DELETE', '/admin/deployments/mc')).status, 409, 'nothing left to remove');
});
