// Canary analysis end to end on a real server: a logistic challenger scores differently from the
// gradient-boosted champion (another model family), and is still promoted every time on traffic
// from the population both were trained on, because the analysis compares the challenger's live
// scores with its own reference, never with the champion's; a challenger whose live inputs are
// not in the units it was trained on (training/serving skew) is rolled back on score PSI.

import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { CREDIT_FEATURES, featureVector, generateCreditData, type CreditApplication } from '../../examples/credit-data.js';
import { logisticToOnnx, trainLogistic } from '../../src/retraining/logistic.js';
import { fitTrees, treesToOnnx } from '../../src/retraining/trees.js';
import { request, startServer, tempDir, type TestServer } from './server.js';
import { waitFor } from '../fixtures/wait.js';

const TOKEN = 'canary-test-token';
const P = CREDIT_FEATURES.length;
let server: TestServer;
let traffic: number[][];
let challenger: number;
let skewed: number;

const matrix = (rows: readonly CreditApplication[], scale: (j: number) => number = () => 1) => {
  const X = new Float64Array(rows.length * P);
  rows.forEach((r, i) => {
    featureVector(r).forEach((v, j) => {
      X[i * P + j] = v * scale(j);
    });
  });
  return X;
};
const csv = (rows: readonly CreditApplication[], scale: (j: number) => number = () => 1) =>
  [
    [...CREDIT_FEATURES, 'default'].join(','),
    ...rows.map((r) => [...featureVector(r).map((v, j) => v * scale(j)), r.default].join(',')),
  ].join('\n');

const admin = (method: string, path: string, init: { json?: unknown; body?: Uint8Array | string; type?: string } = {}) =>
  request(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(init.type ? { 'content-type': init.type } : {}) },
    ...(init.json !== undefined ? { json: init.json } : {}),
    ...(init.body !== undefined ? { body: init.body } : {}),
  });

/** Registers a version and freezes its reference from `referenceCsv`; returns the version number. */
async function register(bytes: Uint8Array, referenceCsv: string): Promise<number> {
  const r = await admin('POST', '/admin/models/credit/versions', { body: bytes, type: 'application/octet-stream' });
  assert.equal(r.status, 201, r.text);
  const ref = await admin('PUT', `/admin/models/credit/versions/${r.body.version}/reference`, { body: referenceCsv, type: 'text/csv' });
  assert.equal(ref.status, 200, ref.text);
  return r.body.version as number;
}

before(async () => {
  // One population: training, references and live traffic are disjoint draws from the same generator.
  const train = generateCreditData({ n: 20_000, seed: 101 });
  const y = Float64Array.from(train, (r) => r.default);
  const champion = fitTrees(matrix(train), y, { trees: 60, depth: 3 });
  const logistic = trainLogistic(matrix(train), y);
  // The skewed challenger was trained with income in thousands; live traffic sends it in units.
  const incomeAt = CREDIT_FEATURES.indexOf('income');
  const inThousands = (j: number) => (j === incomeAt ? 1 / 1000 : 1);
  const skewModel = trainLogistic(matrix(train, inThousands), y);
  const reference = generateCreditData({ n: 5_000, seed: 202 });
  traffic = generateCreditData({ n: 20_000, seed: 303 }).map((r) => featureVector(r));

  const repo = await tempDir();
  await mkdir(join(repo, 'credit', '1'), { recursive: true });
  await writeFile(join(repo, 'credit', '1', 'model.onnx'), treesToOnnx(champion, { featureNames: CREDIT_FEATURES }));
  await writeFile(join(repo, 'credit', 'reference.csv'), csv(reference));
  await writeFile(
    join(repo, 'credit', 'model.yaml'),
    stringify({
      features: [...CREDIT_FEATURES],
      reference: 'reference.csv',
      label: 'default',
      task: 'classification',
      score: { output: 'probabilities', index: 1 },
    }),
  );
  const config = join(repo, 'server.yaml');
  await writeFile(config, stringify({ modelRepository: repo, deploy: { analysisTickMs: 100 } }));
  server = await startServer(['--config', config, '--workers', '1'], { SCORELINE_ADMIN_TOKEN: TOKEN });
  challenger = await register(logisticToOnnx(logistic, { featureNames: CREDIT_FEATURES }), csv(reference));
  skewed = await register(logisticToOnnx(skewModel, { featureNames: CREDIT_FEATURES }), csv(reference, inThousands));
});

after(async () => {
  await server?.stop();
});

let next = 0;
const infer = () => {
  const row = traffic[next++ % traffic.length]!;
  return request(`${server.url}/v2/models/credit/infer`, {
    json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, P], data: row }] },
  });
};

/** Runs a canary to its automatic end (bounded), returning the last history entry. */
async function canaryOutcome(canary: number): Promise<{ action: string; reason: string }> {
  assert.equal((await admin('PUT', '/admin/deployments/credit', { json: { strategy: 'direct', version: 1 } })).status, 200);
  const put = await admin('PUT', '/admin/deployments/credit', {
    json: { strategy: 'canary', stable: 1, canary, percent: 50, steps: [100], stepSeconds: 1 },
  });
  assert.equal(put.status, 200, put.text);
  return waitFor(
    async () => {
      const rs = await Promise.all(Array.from({ length: 40 }, infer));
      for (const r of rs) assert.equal(r.status, 200, r.text);
      const view = (await admin('GET', '/admin/deployments/credit')).body;
      return view.strategy.strategy === 'direct' ? (view.history.at(-1) as { action: string; reason: string }) : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 0, message: 'the canary to reach a verdict' },
  );
}

test('a challenger of another model family is promoted 20 times in 20 on traffic from the same population', async () => {
  // The two families really do score differently: the champion's and the challenger's scores of the same rows.
  const rows = traffic.slice(0, 60);
  const score = async (v: number) => {
    const r = await request(`${server.url}/v2/models/credit/versions/${v}/infer`, {
      json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [rows.length, P], data: rows.flat() }] },
    });
    assert.equal(r.status, 200, r.text);
    const probs = r.body.outputs.find((o: { name: string }) => o.name === 'probabilities').data as number[];
    return probs.filter((_, i) => i % 2 === 1);
  };
  const [a, b] = [await score(1), await score(challenger)];
  const meanAbsDiff = a.reduce((s, x, i) => s + Math.abs(x - b[i]!), 0) / a.length;
  assert.ok(meanAbsDiff > 0.01, `families should disagree row by row, mean |diff| ${meanAbsDiff}`);
  const outcomes: string[] = [];
  for (let k = 0; k < 20; k++) {
    const last = await canaryOutcome(challenger);
    outcomes.push(last.action === 'canary-promote' ? 'promoted' : `${last.action}: ${last.reason}`);
  }
  assert.deepEqual(outcomes, new Array(20).fill('promoted'));
  const view = (await admin('GET', '/admin/deployments/credit')).body;
  const psi = view.analysis.at(-1).checks.find((c: { name: string }) => c.name === 'score_psi');
  assert.equal(psi.result, 'pass');
  assert.ok(psi.n >= psi.needed && psi.needed > 100, JSON.stringify(psi));
});

test('a challenger whose live inputs are skewed from its training is rolled back on score PSI', async () => {
  const last = await canaryOutcome(skewed);
  assert.equal(last.action, 'canary-rollback', JSON.stringify(last));
  assert.match(last.reason, /score_psi \d.*against the canary's own reference/);
});
