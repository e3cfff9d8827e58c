// Monitoring end to end, against a real server whose model returns its input as the score: the
// performance of /v1/monitoring equals metrics computed here from scratch (AUC by counting pairs),
// a one-class window has no AUC, labels sent after a restart still join the predictions logged
// before it, score drift against the frozen reference fires an alert that reaches a webhook (which
// fails once, so the delivery is retried) exactly once, and the alert survives the restart.

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { request, startServer, tempDir, type TestServer } from './server.js';
import { mkdir } from 'node:fs/promises';
import { mulberry32 as rng } from '../fixtures/random.js';
import { elapse, waitFor } from '../fixtures/wait.js';

let server: TestServer;
let dataDir: string;
let repo: string;
let configPath: string;
let hook: Server;
const TOKEN = 'monitoring-test-token';
const received: { event: string; alert: { rule: string; state: string; labels: Record<string, string> } }[] = [];
let hookCalls = 0;

/** score = x: an Identity graph, so every logged score is the float32 of the input sent. */
async function writeIdentity(name: string): Promise<void> {
  const g = new GraphBuilder(name);
  g.input('x', 'FP32', [-1, 1]);
  g.node('Identity', ['x'], ['score']);
  g.output('score', 'FP32', [-1, 1]);
  await mkdir(join(repo, name, '1'), { recursive: true });
  await writeFile(join(repo, name, '1', 'model.onnx'), g.toModelBytes());
  // The frozen reference: x uniform on [0, 1), labels alternating.
  const rows = Array.from({ length: 1000 }, (_, i) => `${i / 1000},${i % 2}`);
  await writeFile(join(repo, name, 'reference.csv'), ['x,label', ...rows].join('\n'));
  await writeFile(
    join(repo, name, 'model.yaml'),
    stringify({ features: ['x'], reference: 'reference.csv', label: 'label', task: 'classification', threshold: 0.5 }),
  );
}

const env = { SCORELINE_ADMIN_TOKEN: TOKEN };
const start = () => startServer(['--config', configPath, '--data-dir', dataDir], env);

before(async () => {
  repo = await tempDir();
  dataDir = await tempDir('scoreline-data-');
  await writeIdentity('ident');
  await writeIdentity('oneclass');
  hook = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c));
    req.on('end', () => {
      hookCalls++;
      if (hookCalls === 1) {
        res.writeHead(500).end('try again');
        return;
      }
      received.push(JSON.parse(body));
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
  const port = (hook.address() as { port: number }).port;
  configPath = join(repo, 'scoreline.yaml');
  await writeFile(
    configPath,
    stringify({
      modelRepository: repo,
      monitoring: {
        evaluateSeconds: 0.2,
        alerts: {
          rules: [
            {
              name: 'score_drift',
              metric: 'score_psi',
              comparison: '>',
              threshold: 0.25,
              severity: 'critical',
              forSeconds: 0,
              cooldownSeconds: 3600,
            },
          ],
          webhooks: [{ url: `http://127.0.0.1:${port}/alerts`, retries: 3, timeoutMs: 2000 }],
        },
      },
    }),
  );
  server = await start();
});

after(async () => {
  await server.stop();
  await new Promise<void>((resolve) => hook.close(() => resolve()));
});

const score = (model: string, id: string, x: number) =>
  request(`${server.url}/v2/models/${model}/infer`, { json: { id, inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [x] }] } });
const feedback = (items: { request_id: string; label: number }[]) => request(`${server.url}/v1/feedback`, { json: items });
/**
 * The monitoring snapshot once `fresh` holds for it. Performance is cached for two seconds (dashboards
 * poll), so an answer can lag the labels just sent: poll until it shows them.
 */
const snapshot = async (model: string, window: string, fresh: (s: any) => boolean, what: string) => {
  let last: any;
  return waitFor(
    async () => {
      const r = await request(`${server.url}/v1/monitoring/${model}?window=${window}`);
      assert.equal(r.status, 200, r.text);
      last = r.body;
      return fresh(r.body) ? r.body : undefined;
    },
    {
      timeoutMs: 10_000,
      intervalMs: 100,
      message: () => `the ${window} snapshot of ${model} to show ${what}: ${JSON.stringify(last?.performance ?? last)}`,
    },
  );
};

/** The textbook definitions, computed independently of src/monitoring/metrics.ts. */
function expected(scores: number[], labels: number[]) {
  let wins = 0;
  let pairs = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < scores.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      wins += scores[i]! > scores[j]! ? 1 : scores[i] === scores[j] ? 0.5 : 0;
    }
  }
  let tp = 0,
    fp = 0,
    tn = 0,
    fn = 0;
  scores.forEach((s, i) => {
    const p = s >= 0.5;
    if (labels[i] === 1) p ? tp++ : fn++;
    else p ? fp++ : tn++;
  });
  // KS: the largest gap between the score CDFs of the two classes, over every distinct score.
  let ks = 0;
  const pos = labels.filter((l) => l === 1).length;
  const neg = labels.length - pos;
  for (const t of new Set(scores)) {
    const cp = scores.filter((s, i) => labels[i] === 1 && s <= t).length / pos;
    const cn = scores.filter((s, i) => labels[i] === 0 && s <= t).length / neg;
    ks = Math.max(ks, Math.abs(cp - cn));
  }
  const precision = tp / (tp + fp);
  const recall = tp / (tp + fn);
  return {
    auc: wins / pairs,
    ks,
    accuracy: (tp + tn) / scores.length,
    precision,
    recall,
    f1: (2 * precision * recall) / (precision + recall),
  };
}

const close = (actual: number, want: number, what: string) => assert.ok(Math.abs(actual - want) <= 6e-5, `${what}: ${actual} vs ${want}`);

const sentScores: number[] = [];
const sentLabels: number[] = [];
/** Ids scored but not labelled by the first test, with their true labels: the restart test sends them. */
let pendingTruth: [string, number][] = [];

// Enough labels for every metric's minimum sample (monitoring.minSamples: AUC 1000 labelled and 200
// of each class), so the metrics below are the ones gauges and alerts act on.
const LABELLED = 1000;
const SCORED = 1200;

test('performance from delayed labels equals AUC by pair counting, KS and the confusion metrics', async () => {
  const rand = rng(7);
  const ids: string[] = [];
  const truth: number[] = [];
  for (let i = 0; i < SCORED; i++) {
    // Scores on a 1/40 grid, so ties between classes happen and must count one half.
    const x = Math.round(rand() * 40) / 40;
    ids.push(`perf-${i}`);
    truth.push(rand() < x ? 1 : 0);
    sentScores.push(Math.fround(x));
  }
  for (let i = 0; i < SCORED; i += 50) {
    const rs = await Promise.all(ids.slice(i, i + 50).map((id, k) => score('ident', id, sentScores[i + k]!)));
    rs.forEach((r, k) => {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.id, ids[i + k]);
    });
  }
  // Labels for the first LABELLED only, plus one id that was never scored.
  const fb = await feedback([
    ...ids.slice(0, LABELLED).map((id, i) => ({ request_id: id, label: truth[i]! })),
    { request_id: 'never-scored', label: 1 },
  ]);
  assert.equal(fb.status, 200, fb.text);
  assert.equal(fb.body.joined, LABELLED);
  assert.equal(fb.body.received, LABELLED + 1);
  assert.equal(fb.body.unknown, 1);
  assert.deepEqual(fb.body.unknown_ids, ['never-scored']);
  sentLabels.push(...truth.slice(0, LABELLED));
  const s = await snapshot('ident', 'all', (x) => x.performance.labelled === LABELLED, `${LABELLED} labelled`);
  const want = expected(sentScores.slice(0, LABELLED), sentLabels);
  assert.equal(s.performance.labelled, LABELLED);
  const positives = sentLabels.filter((l) => l === 1).length;
  assert.deepEqual([s.performance.positives, s.performance.negatives], [positives, LABELLED - positives]);
  assert.ok(positives >= 200 && LABELLED - positives >= 200, `${positives} positives`);
  for (const k of ['auc', 'ks', 'gini', 'accuracy', 'precision', 'recall', 'f1', 'log_loss', 'brier']) {
    assert.equal(s.performance.bands[k], 'sufficient', `${k} band`);
    assert.equal(s.performance.shortfall[k], null, `${k} shortfall`);
  }
  close(s.performance.auc, want.auc, 'auc');
  close(s.performance.gini, 2 * want.auc - 1, 'gini');
  close(s.performance.ks, want.ks, 'ks');
  close(s.performance.accuracy, want.accuracy, 'accuracy');
  close(s.performance.precision, want.precision, 'precision');
  close(s.performance.recall, want.recall, 'recall');
  close(s.performance.f1, want.f1, 'f1');
  assert.equal(s.reference.rows, 1000);
  close(s.reference.auc, 0.501, 'reference auc');
  assert.equal(s.predictions.count, SCORED);
  // The grid is the reference population (uniform on [0, 1]), in numbers enough to say so.
  assert.equal(s.drift.score.n, SCORED);
  assert.equal(s.drift.score.min_n, 429);
  assert.equal(s.drift.score.band, 'stable', `score PSI ${s.drift.score.psi}`);
  // remember the unlabelled ones for the restart test
  pendingTruth = ids.slice(LABELLED).map((id, k) => [id, truth[LABELLED + k]!]);

  // Bad feedback changes nothing.
  const bad = await feedback([{ request_id: 'perf-0', label: 'yes' as unknown as number }]);
  assert.equal(bad.status, 400);
  // Elapsed time is the subject here: only once the two-second performance cache has expired does the
  // snapshot recompute, and only a recomputed answer shows that nothing was stored.
  await elapse(2100);
  assert.equal((await snapshot('ident', 'all', () => true, 'anything')).performance.labelled, LABELLED);
});

test('a window with one class only has no AUC, KS or Gini, but has accuracy', async () => {
  for (let i = 0; i < 20; i++) assert.equal((await score('oneclass', `one-${i}`, i / 20)).status, 200);
  const fb = await feedback(Array.from({ length: 20 }, (_, i) => ({ request_id: `one-${i}`, label: 0 })));
  assert.equal(fb.body.joined, 20);
  const s = await snapshot('oneclass', '1h', (x) => x.performance.labelled === 20, '20 labelled');
  assert.equal(s.performance.labelled, 20);
  assert.equal(s.performance.auc, null);
  assert.equal(s.performance.ks, null);
  assert.equal(s.performance.gini, null);
  assert.equal(s.performance.accuracy, 0.5); // scores >= 0.5 (10 of 20) are wrong
  // ... shown, but 20 labels of one class are too few for any metric to speak.
  assert.deepEqual([s.performance.positives, s.performance.negatives], [0, 20]);
  assert.equal(s.performance.bands.auc, 'insufficient_data');
  assert.deepEqual(s.performance.shortfall.auc, { count: 'labelled', n: 20, min: 1000 });
  assert.equal(s.performance.bands.accuracy, 'insufficient_data');
  assert.deepEqual(s.performance.shortfall.accuracy, { count: 'labelled', n: 20, min: 400 });
});

test('score drift fires one alert, delivered to the webhook after a retry, listed at /admin/alerts and in /metrics', async () => {
  // The reference is uniform on [0, 1); shift the traffic to [0.95, 1).
  const rand = rng(11);
  const batch = 50;
  for (let i = 0; i < 1500; i += batch) {
    await Promise.all(Array.from({ length: batch }, (_, k) => score('ident', `drift-${i + k}`, 0.95 + rand() * 0.05)));
  }
  await waitFor(() => received.length > 0, {
    timeoutMs: 15_000,
    intervalMs: 100,
    message: `the drift alert at the webhook (${hookCalls} calls so far)`,
  });
  assert.equal(received.length, 1, `webhook got ${received.length} notifications`);
  assert.ok(hookCalls >= 2, 'the first delivery failed with 500 and was retried');
  const n = received[0]!;
  assert.equal(n.event, 'fired');
  assert.equal(n.alert.rule, 'score_drift');
  assert.deepEqual(n.alert.labels, { model: 'ident', version: '1' });
  // Several more evaluations (every 0.2 s) while the drift holds: still one notification (deduplicated).
  // Elapsed time is the subject: a second notification must NOT come within this window.
  await elapse(1200);
  assert.equal(received.filter((x) => x.event === 'fired').length, 1);

  const s = await snapshot('ident', '1h', (x) => x.drift.score.n === SCORED + 1500, `the drift of ${SCORED + 1500} scores`);
  assert.ok(s.drift.score.psi > 0.25, `score psi ${s.drift.score.psi}`);
  assert.equal(s.drift.score.band, 'significant');
  assert.equal(s.drift.score.n, SCORED + 1500);
  assert.equal(s.alerts.length, 1);
  assert.equal(s.alerts[0].state, 'firing');

  const unauth = await request(`${server.url}/admin/alerts`);
  assert.equal(unauth.status, 401);
  const a = await request(`${server.url}/admin/alerts?model=ident`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(a.status, 200, a.text);
  assert.equal(a.body.firing.length, 1);
  assert.equal(a.body.firing[0].rule, 'score_drift');
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /^scoreline_alerts_firing\{severity="critical"\} 1$/m);
  assert.match(metrics, /^scoreline_drift_psi\{model="ident",version="1",feature="x"\} [0-9.]+$/m);
  assert.match(metrics, /^scoreline_model_auc\{model="ident",version="1"\} [0-9.]+$/m);
});

test('after a restart, labels for predictions logged before it still join, and the firing alert is restored without a second notification', async () => {
  assert.equal(await server.stop(), 0);
  const firedBefore = received.length;
  server = await start();
  const pending = pendingTruth;
  assert.equal(pending.length, SCORED - LABELLED, 'the first test scored the predictions these labels are for');
  const fb = await feedback(pending.map(([id, label]) => ({ request_id: id, label })));
  assert.equal(fb.status, 200, fb.text);
  assert.equal(fb.body.joined, SCORED - LABELLED);
  sentLabels.push(...pending.map(([, l]) => l));
  const s = await snapshot('ident', 'all', (x) => x.performance.labelled === SCORED, `${SCORED} labelled`);
  assert.equal(s.performance.labelled, SCORED);
  close(s.performance.auc, expected(sentScores, sentLabels).auc, `auc over all ${SCORED}`);
  const a = await request(`${server.url}/admin/alerts?model=ident`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(a.body.firing.length, 1, a.text);
  // Elapsed time is the subject: the restored alert must NOT be notified over several evaluations.
  await elapse(600);
  assert.equal(received.length, firedBefore, 'a restored alert is not notified again');
});
