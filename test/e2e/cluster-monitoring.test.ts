// One monitoring view over three replicas: the same rows sent to one replica (model `single`) and
// spread over all three (model `spread`, the same artifact and reference) give the same snapshot on
// any replica: counts exact (requests, errors, predictions per class, score bins, labels), the
// score distribution, the PSI of the score and of every feature, and AUC, KS and the other
// performance figures to 1e-9 (labels sent to another replica than the one that served the
// prediction), as many latencies.
// (The history's sums over replicas are checked in test/monitoring-shared.test.ts.)

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { generate, toCsv, writeWeakModel } from '../fixtures/retraining.js';
import { postgresSkip } from '../fixtures/postgres.js';
import { request, tempDir } from './server.js';
import { startCluster, until, type TestCluster } from './cluster.js';

const skip = postgresSkip();
let c: TestCluster;
const N = 600;

before(async () => {
  if (skip) return;
  const repo = await tempDir();
  for (const m of ['spread', 'single']) await writeWeakModel(repo, m, { data: 'none.csv', timeColumn: 'date' });
  c = await startCluster(3, { modelRepository: repo, inference: { workers: 0 }, store: { shareSeconds: 0.2 } });
});

after(async () => {
  await c?.close();
});

const snapshot = async (i: number, model: string) => (await request(`${c.url(i)}/v1/monitoring/${model}?version=1&window=1h`)).body;

test('the same rows sent to one replica or spread over three: the same snapshot on every replica', { skip }, async (t) => {
  const reference = toCsv(generate(400, 11));
  for (const m of ['spread', 'single']) {
    const r = await c.admin(0, 'PUT', `/admin/models/${m}/versions/1/reference`, { body: reference, type: 'text/csv' });
    assert.equal(r.status, 200, r.text);
  }
  for (const i of [0, 1, 2])
    for (const m of ['spread', 'single'])
      await until(`replica ${i + 1} has ${m}'s reference`, 5000, async () =>
        (await snapshot(i, m)).reference?.rows === 400 ? true : undefined,
      );

  // Rows drawn from a shifted population, so that the PSIs are far from zero.
  const rows = generate(N, 5).map((r) => ({ ...r, x: r.x.map((v) => v + 0.4) }));
  const send = (i: number, model: string, k: number) =>
    request(`${c.url(i)}/v2/models/${model}/infer`, {
      json: { id: `${model}-${k}`, inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 4], data: rows[k]!.x }] },
    });
  let next = 0;
  const worker = async () => {
    for (let k = next++; k < N; k = next++) {
      const a = await send(k % 3, 'spread', k);
      const b = await send(0, 'single', k);
      assert.equal(a.status, 200, a.text);
      assert.equal(b.status, 200, b.text);
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));

  // Labels: spread's each through another replica than the one that served it, single's through replica 1.
  const label = async (i: number, model: string, from: number, to: number) => {
    const items = rows.slice(from, to).map((r, k) => ({ request_id: `${model}-${from + k}`, label: r.label }));
    // A prediction is in the shared log once its replica has shipped it: a label that came too early is sent again.
    await until(`labels of ${model} ${from}..${to} join through replica ${i + 1}`, 15_000, async () => {
      const r = await request(`${c.url(i)}/v1/feedback`, { json: items });
      return r.status === 200 && r.body.joined === items.length ? true : undefined;
    });
  };
  for (let from = 0; from < N; from += 100) {
    await label((from / 100 + 1) % 3, 'spread', from, from + 100);
    await label(0, 'single', from, from + 100);
  }

  const views = await Promise.all(
    [0, 1, 2].flatMap((i) =>
      ['spread', 'single'].map((m) =>
        until(`replica ${i + 1} shows all of ${m}`, 10_000, async () => {
          const s = await snapshot(i, m);
          return s.volume.requests === N && s.latency.count === N && s.predictions.count === N && s.performance.labelled === N
            ? s
            : undefined;
        }),
      ),
    ),
  );
  const want = views[1]!; // single, as replica 1 sees it
  for (const [k, s] of views.entries()) {
    const what = `${s.model} on replica ${Math.floor(k / 2) + 1}`;
    assert.equal(s.replicas.replicas, 3, what);
    assert.equal(s.replicas.state, 'merged', what);
    assert.equal(s.volume.errors, want.volume.errors, what);
    assert.deepEqual(s.predictions.histogram.counts, want.predictions.histogram.counts, what);
    assert.deepEqual(s.predictions.classes, want.predictions.classes, what);
    for (const f of ['mean', 'std', 'min', 'max']) assert.ok(Math.abs(s.predictions[f] - want.predictions[f]) <= 1e-9, `${what}: ${f}`);
    assert.ok(want.drift.score.psi > 0.01, `score PSI ${want.drift.score.psi}`);
    assert.ok(Math.abs(s.drift.score.psi - want.drift.score.psi) <= 1e-9, `${what}: score PSI`);
    assert.equal(s.drift.score.n, want.drift.score.n);
    for (const m of ['auc', 'ks', 'gini', 'accuracy', 'precision', 'recall', 'f1', 'log_loss', 'brier'])
      assert.ok(Math.abs(s.performance[m] - want.performance[m]) <= 1e-9, `${what}: ${m} ${s.performance[m]} vs ${want.performance[m]}`);
    assert.equal(s.performance.positives, want.performance.positives, what);
    for (const [name, f] of Object.entries(want.drift.features) as [string, { psi: number; n: number; missing_rate: number }][]) {
      assert.ok(Math.abs(s.drift.features[name].psi - f.psi) <= 1e-9, `${what}: PSI of ${name}`);
      assert.equal(s.drift.features[name].n, f.n);
      assert.equal(s.drift.features[name].missing_rate, f.missing_rate);
    }
  }
  assert.equal(want.performance.labelled, N);
  t.diagnostic(
    `score PSI ${want.drift.score.psi}, x0 PSI ${want.drift.features.x0.psi}, AUC ${want.performance.auc}, KS ${want.performance.ks}, on every replica`,
  );
});

const CHROMIUM = '/usr/bin/chromium';

test('the dashboard of any replica shows the merged view and how many replicas it holds', {
  skip: skip || (existsSync(CHROMIUM) ? false : `Debian Chromium is not installed at ${CHROMIUM}`),
}, async () => {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`${c.url(2)}/dashboard#model=spread&version=1&window=1h`);
    await page.waitForSelector('[data-testid=dashboard][data-state=ready] [data-testid=tile-replicas]', { timeout: 15_000 });
    // Runs in the page (a string: the project compiles without the DOM lib).
    const tiles: Record<string, string> = await page.evaluate(
      `Object.fromEntries([...document.querySelectorAll('[data-testid^=tile-]')].map((e) => [e.getAttribute('data-testid'), e.getAttribute('data-value')]))`,
    );
    assert.equal(tiles['tile-replicas'], '3');
    assert.equal(tiles['tile-requests'], String(N), 'the requests of all three replicas');
  } finally {
    await browser.close();
  }
});

test("a replica's /metrics has the sharing families and passes promtool check metrics", { skip }, async (t) => {
  const text = (await request(`${c.url(1)}/metrics`)).text;
  for (const name of [
    'scoreline_monitoring_shared_cells_total',
    'scoreline_monitoring_share_errors_total',
    'scoreline_monitoring_share_pending',
    'scoreline_monitoring_share_dropped_total',
    'scoreline_prediction_log_shipped_total',
  ])
    assert.match(text, new RegExp(`^${name} \\d+$`, 'm'), name);
  assert.ok(Number(/^scoreline_monitoring_shared_cells_total (\d+)$/m.exec(text)?.[1]) > 0);
  if (spawnSync('sh', ['-c', 'command -v promtool']).status !== 0) {
    if (process.env.CI) assert.fail('promtool is missing: .ci/run installs the Debian package prometheus');
    t.skip('promtool not installed (apt-get install prometheus)');
    return;
  }
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});
