// Labels a model cannot have, against a real server with a classification and a regression model:
// 7 or -1e308 for a classifier is rejected with the allowed values named (422 when every label of
// the request is rejected, else 200 with the rejected ids and reasons) and changes nothing in the
// store: the performance figures stay those of the valid labels. A regression model takes any
// finite number; booleans are 1/0.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { identityRequest, writeIdentityModel } from '../fixtures/identity.js';
import { request, startServer, tempDir, type TestServer } from './server.js';
import { elapse, waitFor } from '../fixtures/wait.js';

let server: TestServer;

before(async () => {
  const repo = await tempDir('scoreline-repo-');
  await writeIdentityModel(repo, 'clf', 'classification');
  await writeIdentityModel(repo, 'reg', 'regression');
  server = await startServer(['--model-repo', repo]);
  for (let i = 0; i < 10; i++) {
    assert.equal((await request(`${server.url}/v2/models/clf/infer`, { json: identityRequest(`c${i}`, i / 10) })).status, 200);
    assert.equal((await request(`${server.url}/v2/models/reg/infer`, { json: identityRequest(`r${i}`, i) })).status, 200);
  }
});

after(async () => {
  await server.stop();
});

const feedback = (items: unknown) => request(`${server.url}/v1/feedback`, { json: items });
/**
 * The model's performance once it shows `labelled` labels. Performance is cached for two seconds
 * (dashboards poll), so an answer can lag the labels just sent: poll until it shows them.
 */
const performance = async (model: string, labelled: number) => {
  let last: any;
  return waitFor(
    async () => {
      last = (await request(`${server.url}/v1/monitoring/${model}`)).body.performance;
      return last.labelled === labelled ? last : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 100, message: () => `${labelled} labels in the performance of ${model}: ${JSON.stringify(last)}` },
  );
};

test('a classifier refuses labels other than 0/1 (or true/false): 422 when all are, naming the allowed values', async () => {
  const ok = await feedback([
    { request_id: 'c8', label: true },
    { request_id: 'c9', label: 1 },
    { request_id: 'c1', label: false },
    { request_id: 'c2', label: 0 },
  ]);
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.body.joined, 4);
  assert.equal(ok.body.rejected, 0);
  const before = await performance('clf', 4);
  assert.equal(before.labelled, 4);
  assert.equal(before.auc, 1);

  const bad = await feedback([
    { request_id: 'c1', label: 7 },
    { request_id: 'c8', label: -1e308 },
  ]);
  assert.equal(bad.status, 422, bad.text);
  assert.match(bad.body.error, /every label was rejected/);
  assert.match(bad.body.error, /0\/1 \(or true\/false\)/);
  assert.equal(bad.body.joined, 0);
  assert.equal(bad.body.rejected, 2);
  assert.deepEqual(
    bad.body.rejected_items.map((x: { request_id: string; label: number }) => [x.request_id, x.label]),
    [
      ['c1', 7],
      ['c8', -1e308],
    ],
  );
  assert.match(bad.body.rejected_items[0].reason, /model 'clf' version 1 \(classification\)/);

  // Nothing changed: c1 is still labelled 0 and c8 1 (a flipped label would break the perfect AUC).
  // Elapsed time is the subject: only after the two-second performance cache has expired is the
  // answer recomputed, and only a recomputed answer shows that the refused labels stored nothing.
  await elapse(2100);
  const afterwards = await performance('clf', 4);
  assert.equal(afterwards.labelled, 4);
  assert.equal(afterwards.auc, 1);
  assert.equal(afterwards.accuracy, before.accuracy);
});

test('a request mixing valid and out-of-range labels: 200, the valid ones joined, the others listed as rejected', async () => {
  const r = await feedback([
    { request_id: 'c3', label: 0 },
    { request_id: 'c4', label: 2 },
    { request_id: 'never-scored', label: 5 },
  ]);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.received, 3);
  assert.equal(r.body.joined, 1);
  assert.equal(r.body.unknown, 1);
  assert.deepEqual(r.body.unknown_ids, ['never-scored']);
  assert.equal(r.body.rejected, 1);
  assert.equal(r.body.rejected_items[0].request_id, 'c4');
  assert.equal((await performance('clf', 5)).labelled, 5);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /^scoreline_feedback_total\{result="rejected"\} 3$/m);
});

test('a regression model takes any finite number; a non-finite one is a bad request', async () => {
  const r = await feedback([
    { request_id: 'r1', label: -1e308 },
    { request_id: 'r2', label: 2.5 },
    { request_id: 'r3', label: 7 },
  ]);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.joined, 3);
  assert.equal(r.body.rejected, 0);
  const inf = await request(`${server.url}/v1/feedback`, {
    body: '[{"request_id": "r4", "label": 1e999}]',
    headers: { 'content-type': 'application/json' },
    method: 'POST',
  });
  assert.equal(inf.status, 400, inf.text);
  assert.match(inf.body.error, /finite number/);
  assert.equal((await performance('reg', 3)).labelled, 3);
});
