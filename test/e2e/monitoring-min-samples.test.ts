// Minimum samples end to end, against a real server whose model returns its input as the score,
// with the default minimums and alert rules that fire at once (forSeconds 0): three requests give a
// score PSI and a feature CSI with band insufficient_data and n = 3, no gauge and no alert; traffic
// from the reference population in numbers gives band stable; 40 labels ranked backwards fire no
// auc_drop alert, 1040 labels with a real drop do; a server configured with a lower minimum uses it.

import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { mulberry32 as rng } from '../fixtures/random.js';
import { waitFor } from '../fixtures/wait.js';
import { request, startServer, tempDir, type TestServer } from './server.js';

const TOKEN = 'min-samples-test-token';
let server: TestServer;
let repo: string;

/** score = x, with a 1000-row reference: x uniform on [0, 1), P(label 1 | x) = x (reference AUC about 0.83). */
async function writeIdentity(name: string, seed: number): Promise<void> {
  const g = new GraphBuilder(name);
  g.input('x', 'FP32', [-1, 1]);
  g.node('Identity', ['x'], ['score']);
  g.output('score', 'FP32', [-1, 1]);
  await mkdir(join(repo, name, '1'), { recursive: true });
  await writeFile(join(repo, name, '1', 'model.onnx'), g.toModelBytes());
  const rand = rng(seed);
  const rows = Array.from({ length: 1000 }, () => {
    const x = rand();
    return `${x},${rand() < x ? 1 : 0}`;
  });
  await writeFile(join(repo, name, 'reference.csv'), ['x,label', ...rows].join('\n'));
  await writeFile(
    join(repo, name, 'model.yaml'),
    stringify({ features: ['x'], reference: 'reference.csv', label: 'label', task: 'classification', threshold: 0.5 }),
  );
}

async function writeConfig(file: string, extra: Record<string, unknown> = {}): Promise<string> {
  const path = join(repo, file);
  await writeFile(
    path,
    stringify({
      modelRepository: repo,
      monitoring: {
        evaluateSeconds: 0.2,
        alerts: {
          rules: [
            {
              name: 'auc_drop',
              metric: 'auc_drop',
              comparison: '>',
              threshold: 0.05,
              severity: 'critical',
              forSeconds: 0,
              cooldownSeconds: 3600,
            },
            {
              name: 'score_psi',
              metric: 'score_psi',
              comparison: '>',
              threshold: 0.25,
              severity: 'critical',
              forSeconds: 0,
              cooldownSeconds: 3600,
            },
          ],
        },
        ...extra,
      },
    }),
  );
  return path;
}

before(async () => {
  repo = await tempDir();
  await writeIdentity('drifty', 1);
  await writeIdentity('ranked', 2);
  server = await startServer(['--config', await writeConfig('scoreline.yaml')], { SCORELINE_ADMIN_TOKEN: TOKEN });
});

after(async () => {
  await server.stop();
});

/** One request of many rows (at most the batcher's 64): the prediction log names row j `${id}/${j}`. */
const scoreRows = async (s: TestServer, model: string, id: string, xs: number[]) => {
  const r = await request(`${s.url}/v2/models/${model}/infer`, {
    json: { id, inputs: [{ name: 'x', datatype: 'FP32', shape: [xs.length, 1], data: xs }] },
  });
  assert.equal(r.status, 200, r.text);
};
/**
 * The 1h monitoring snapshot once `fresh` holds for it. Performance is cached for two seconds
 * (dashboards poll), so an answer can lag the labels just sent: poll until it shows them.
 */
const snapshot = async (s: TestServer, model: string, fresh: (body: any) => boolean, what: string) => {
  let last: any;
  return waitFor(
    async () => {
      const r = await request(`${s.url}/v1/monitoring/${model}?window=1h`);
      assert.equal(r.status, 200, r.text);
      last = r.body;
      return fresh(r.body) ? r.body : undefined;
    },
    {
      timeoutMs: 10_000,
      intervalMs: 100,
      message: () =>
        `the snapshot of ${model} to show ${what}: ${JSON.stringify({ drift: last?.drift?.score, performance: last?.performance })}`,
    },
  );
};
const firing = async (model: string) =>
  (await request(`${server.url}/admin/alerts?model=${model}`, { headers: { authorization: `Bearer ${TOKEN}` } })).body.firing as {
    rule: string;
    labels: Record<string, string>;
  }[];

/** Polls /metrics until a line matches (the periodic evaluation has run on what was sent). */
async function metricsUntil(s: TestServer, line: RegExp, ms = 15_000): Promise<string> {
  let text = '';
  await waitFor(
    async () => {
      text = await (await fetch(`${s.url}/metrics`)).text();
      return line.test(text);
    },
    {
      timeoutMs: ms,
      intervalMs: 100,
      message: () =>
        `/metrics to show ${line}:\n${text
          .split('\n')
          .filter((l) => /drift|model_auc|labelled/.test(l))
          .join('\n')}`,
    },
  );
  return text;
}

test('3 requests: score PSI and feature CSI are shown with n = 3 and band insufficient_data; no gauge, no alert', async () => {
  await scoreRows(server, 'drifty', 'three', [0.12, 0.47, 0.93]);
  const s = await snapshot(server, 'drifty', (b) => b.drift.score.n === 3, '3 scores');
  // Seven empty bins of ten: a PSI that would read "significant" without its sample size.
  assert.ok(s.drift.score.psi > 4, `score PSI ${s.drift.score.psi}`);
  assert.equal(s.drift.score.band, 'insufficient_data');
  assert.equal(s.drift.score.n, 3);
  assert.equal(s.drift.score.min_n, 429, '300 effective values against a 1000-row reference');
  const x = s.drift.features.x;
  assert.ok(x.psi > 4, `CSI of x ${x.psi}`);
  assert.deepEqual([x.band, x.n, x.min_n], ['insufficient_data', 3, 429]);
  const text = await metricsUntil(server, /^scoreline_drift_sample_size\{model="drifty",version="1",feature="__score__"\} 3$/m);
  assert.match(text, /^scoreline_drift_sample_size\{model="drifty",version="1",feature="x"\} 3$/m);
  assert.doesNotMatch(text, /^scoreline_drift_psi\{model="drifty"/m);
  // That evaluation has been handed to the rules (they run right after it): nothing fired.
  assert.deepEqual(await firing('drifty'), []);
  assert.deepEqual((await snapshot(server, 'drifty', () => true, 'anything')).alerts, []);
});

test('traffic from the reference population, in numbers, gives band stable for the score and the feature', async () => {
  const rand = rng(42);
  for (let i = 0; i < 12; i++) await scoreRows(server, 'drifty', `ref-${i}`, Array.from({ length: 50 }, rand));
  const s = await snapshot(server, 'drifty', (b) => b.drift.score.n === 603, '603 scores');
  assert.equal(s.drift.score.n, 603);
  assert.equal(s.drift.score.band, 'stable', `score PSI ${s.drift.score.psi}`);
  assert.ok(s.drift.score.psi < 0.1);
  assert.equal(s.drift.features.x.n, 603);
  assert.equal(s.drift.features.x.band, 'stable', `CSI of x ${s.drift.features.x.psi}`);
  const text = await metricsUntil(server, /^scoreline_drift_psi\{model="drifty",version="1",feature="__score__"\} 0\.0\d*$/m);
  assert.match(text, /^scoreline_drift_psi\{model="drifty",version="1",feature="x"\} 0\.0\d*$/m);
  assert.deepEqual(await firing('drifty'), []);
});

test('auc_drop: 40 labels ranked backwards fire nothing; with the minimum met and a real drop the rule fires', async () => {
  // Ascending scores, the lowest 20 labelled bad: AUC 0, 0.8 below the reference.
  const few = Array.from({ length: 40 }, (_, i) => (i + 0.5) / 40);
  await scoreRows(server, 'ranked', 'few', few);
  let fb = await request(`${server.url}/v1/feedback`, { json: few.map((_, i) => ({ request_id: `few/${i}`, label: i < 20 ? 1 : 0 })) });
  assert.equal(fb.body.joined, 40, fb.text);
  let text = await metricsUntil(server, /^scoreline_model_labelled_predictions\{model="ranked",version="1"\} 40$/m);
  assert.doesNotMatch(text, /^scoreline_model_auc\{model="ranked"/m);
  assert.deepEqual(await firing('ranked'), []);
  let s = await snapshot(server, 'ranked', (b) => b.performance.labelled === 40, '40 labelled');
  assert.deepEqual(s.alerts, [], 'not even pending');
  assert.equal(s.performance.auc, 0, 'the value is shown');
  assert.equal(s.performance.bands.auc, 'insufficient_data');
  assert.deepEqual(s.performance.shortfall.auc, { count: 'labelled', n: 40, min: 1000 });
  assert.deepEqual([s.performance.labelled, s.performance.positives, s.performance.negatives], [40, 20, 20]);
  assert.ok(s.reference.auc > 0.78, `reference AUC ${s.reference.auc}`);

  // 1000 more, weakly ranked (P(bad | x) = 0.35 + 0.3 x, AUC about 0.6): the minimum is met and the drop is real.
  const rand = rng(8);
  const labels: { request_id: string; label: number }[] = [];
  for (let b = 0; b < 20; b++) {
    const xs = Array.from({ length: 50 }, rand);
    await scoreRows(server, 'ranked', `many-${b}`, xs);
    xs.forEach((x, j) => {
      labels.push({ request_id: `many-${b}/${j}`, label: rand() < 0.35 + 0.3 * x ? 1 : 0 });
    });
  }
  fb = await request(`${server.url}/v1/feedback`, { json: labels });
  assert.equal(fb.body.joined, 1000, fb.text);
  const fired = await waitFor(
    async () => {
      const f = await firing('ranked');
      return f.length > 0 ? f : undefined;
    },
    { timeoutMs: 15_000, intervalMs: 100, message: 'the auc_drop alert on ranked' },
  );
  assert.deepEqual(
    fired.map((a) => [a.rule, a.labels]),
    [['auc_drop', { model: 'ranked', version: '1' }]],
  );
  text = await metricsUntil(server, /^scoreline_model_auc\{model="ranked",version="1"\} 0\.\d+$/m);
  assert.match(text, /^scoreline_model_labelled_predictions\{model="ranked",version="1"\} 1040$/m);
  s = await snapshot(server, 'ranked', (b) => b.performance.labelled === 1040, '1040 labelled');
  assert.equal(s.performance.bands.auc, 'sufficient');
  assert.ok(s.reference.auc - s.performance.auc > 0.1, `AUC ${s.performance.auc} vs reference ${s.reference.auc}`);
});

test('monitoring.minSamples.psi from the config file sets the minimum', async () => {
  const other = await startServer(['--config', await writeConfig('low-minimum.yaml', { minSamples: { psi: 20 } })]);
  try {
    const rand = rng(3);
    await scoreRows(other, 'drifty', 'some', Array.from({ length: 30 }, rand));
    const s = await snapshot(other, 'drifty', (b) => b.drift.score.n === 30, '30 scores');
    assert.equal(s.drift.score.n, 30);
    assert.equal(s.drift.score.min_n, 21, '20 effective values against a 1000-row reference');
    assert.notEqual(s.drift.score.band, 'insufficient_data');
  } finally {
    assert.equal(await other.stop(), 0);
  }
});
