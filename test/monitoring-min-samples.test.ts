// Minimum samples of the monitoring statistics: the values each default needs (and why: the PSI's
// null distribution at the minimum, the AUC's standard error against the default alert's drop),
// which count falls short for each performance metric, and a Monitor over a real prediction log
// whose snapshot, evaluation, gauges, history points and alert rules (wired as the server wires
// them) stay silent below the minimum and speak above it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig } from '../src/config.js';
import type { LoadedModel } from '../src/inference/index.js';
import { categoricalBaseline, numericBaseline, NumericDriftCounter, type NumericBaseline } from '../src/monitoring/drift.js';
import {
  baselinesOf,
  DEFAULT_MIN_SAMPLES,
  freezeReference,
  Monitor,
  parseCsvTable,
  PredictionLog,
  psiMinCount,
} from '../src/monitoring/index.js';
import { classificationShortfalls, regressionShortfalls } from '../src/monitoring/sample-size.js';
import { createAlerting } from '../src/server/alerting.js';
import { SqliteStore } from '../src/store/index.js';
import { tempDir } from './e2e/server.js';
import { mulberry32 } from './fixtures/random.js';

const TEN = new Array(10).fill(0.1);

test('psiMinCount: the default minimum, raised for a finite reference and for more bins; null when the reference is too small', () => {
  assert.equal(DEFAULT_MIN_SAMPLES.psi, 300);
  assert.equal(psiMinCount(TEN, 0, 300), 300, 'reference size unknown: no correction');
  // n_eff = n m / (n + m) >= 300
  assert.equal(psiMinCount(TEN, 1000, 300), 429);
  assert.ok((429 * 1000) / (429 + 1000) >= 300 && (428 * 1000) / (428 + 1000) < 300);
  assert.equal(psiMinCount(TEN, 5000, 300), 320);
  assert.equal(psiMinCount(TEN, 300, 300), null, 'a reference of 300 rows never gives 300 effective values');
  assert.equal(psiMinCount(TEN, 301, 300), 90_300);
  // A 0/1 feature's deciles repeat: 2 occupied bins, 1 degree of freedom, the minimum stays.
  assert.equal(psiMinCount(numericBaseline(Array.from({ length: 100 }, (_, i) => i % 2)).refShares, 0, 300), 300);
  // 30 categories (and an empty "other"): 29 degrees of freedom, 29/9 of the minimum.
  const cats = categoricalBaseline(Array.from({ length: 3000 }, (_, i) => `c${i % 30}`));
  assert.equal(cats.refShares.length, 31);
  assert.equal(psiMinCount(cats.refShares, 0, 300), 967);
});

/** PSI of n values drawn from the reference population (uniform) against `baseline`. */
function nullPsi(baseline: NumericBaseline, n: number, rand: () => number): number {
  const c = new NumericDriftCounter(baseline);
  for (let i = 0; i < n; i++) c.add(rand());
  return c.psi()!;
}

test('PSI null distribution: 3 values always look "significant"; at the default minimum noise stays stable', () => {
  const rand = mulberry32(17);
  const exact: NumericBaseline = { kind: 'numeric', edges: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], refShares: TEN };
  // At least 7 empty bins, each contributing about (0.1 - 1e-4) ln(1000) = 0.69: the tester's 8.28.
  for (let t = 0; t < 200; t++) assert.ok(nullPsi(exact, 3, rand) > 4);
  let over = 0,
    watch = 0,
    sum = 0;
  const trials = 3000;
  for (let t = 0; t < trials; t++) {
    const p = nullPsi(exact, DEFAULT_MIN_SAMPLES.psi, rand);
    sum += p;
    if (p > 0.25) over++;
    if (p >= 0.1) watch++;
  }
  assert.equal(over, 0, 'no window of 300 reference values reaches "significant"');
  assert.ok(watch / trials < 0.005, `watch by noise alone in ${watch} of ${trials}`);
  // n PSI ~ chi-square(9): mean 9 / n = 0.03
  assert.ok(Math.abs(sum / trials - 9 / 300) < 0.003, `mean PSI ${sum / trials}`);
  // A reference of 1000 rows is a sample too: its own noise adds, and 429 current values (the
  // corrected minimum) bring the mean back to that of 300 values against an exact reference.
  let sumFinite = 0;
  const refTrials = 400;
  for (let t = 0; t < refTrials; t++) {
    const ref = numericBaseline(Array.from({ length: 1000 }, rand));
    sumFinite += nullPsi(ref, psiMinCount(ref.refShares, 1000, 300)!, rand);
  }
  assert.ok(Math.abs(sumFinite / refTrials - 9 / 300) < 0.004, `mean PSI with a 1000-row reference ${sumFinite / refTrials}`);
});

/** Hanley and McNeil (1982): the standard error of an AUC from P positives and N negatives. */
function hanleyMcNeil(auc: number, P: number, N: number): number {
  const q1 = auc / (2 - auc);
  const q2 = (2 * auc * auc) / (1 + auc);
  return Math.sqrt((auc * (1 - auc) + (P - 1) * (q1 - auc * auc) + (N - 1) * (q2 - auc * auc)) / (P * N));
}

test('AUC minimum: at the default (1000 labelled, 200 of the rarer class) the default 0.05 drop is over 2.2 standard errors', () => {
  const { labelled, perClass } = DEFAULT_MIN_SAMPLES.auc;
  const drop = 0.05; // defaultAlertRules' auc_drop threshold
  // Over credit scorecards' AUCs noise alone crosses the drop in 1.4% (AUC 0.65) to 0.04% (0.9) of windows.
  for (const auc of [0.65, 0.7, 0.75, 0.8, 0.85, 0.9]) {
    const se = hanleyMcNeil(auc, perClass, labelled - perClass);
    assert.ok(drop / se > (auc >= 0.75 ? 2.33 : 2.15), `AUC ${auc}: SE ${se.toFixed(4)}, drop/SE ${(drop / se).toFixed(2)}`);
  }
  // 200 labelled with 30 positives would put the drop within one standard error of noise.
  assert.ok(drop / hanleyMcNeil(0.75, 30, 170) < 1);
});

test('shortfalls: the first count below its minimum, per metric group; precision needs predicted positives', () => {
  const min = DEFAULT_MIN_SAMPLES;
  const few = classificationShortfalls({ labelled: 40, positives: 12, predictedPositives: 15 }, min);
  assert.deepEqual(few.auc, { count: 'labelled', n: 40, min: 1000 });
  assert.deepEqual(few.gini, few.auc);
  assert.deepEqual(few.accuracy, { count: 'labelled', n: 40, min: 400 });
  assert.deepEqual(few.precision, few.accuracy);
  // Enough rows, too few of the rare class for the ranking metrics only.
  const rare = classificationShortfalls({ labelled: 1200, positives: 150, predictedPositives: 160 }, min);
  assert.deepEqual(rare.auc, { count: 'positives', n: 150, min: 200 });
  assert.equal(rare.accuracy, null);
  assert.equal(rare.recall, null);
  assert.equal(rare.precision, null);
  assert.deepEqual(classificationShortfalls({ labelled: 1200, positives: 1150, predictedPositives: 600 }, min).ks, {
    count: 'negatives',
    n: 50,
    min: 200,
  });
  // A high threshold flags few rows: precision is a share of those.
  const strict = classificationShortfalls({ labelled: 1200, positives: 300, predictedPositives: 20 }, min);
  assert.deepEqual(strict.precision, { count: 'predicted_positives', n: 20, min: 100 });
  assert.equal(strict.recall, null);
  assert.equal(strict.auc, null);
  assert.deepEqual(regressionShortfalls(150, min).rmse, { count: 'labelled', n: 150, min: 200 });
  assert.equal(regressionShortfalls(200, min).r2, null);
});

// ---- a Monitor over a real prediction log -------------------------------------------------------

/** The parts of a loaded model version the monitor reads. */
const fakeModel = (name: string): LoadedModel =>
  ({
    name,
    version: '1',
    versionNumber: 1,
    state: 'ready',
    config: { task: 'classification', threshold: 0.5 },
    features: { names: ['x'], input: [0], column: [0], categorical: [false], single: true },
  }) as unknown as LoadedModel;

/** x uniform on [0, 1) with P(label 1 | x) = x: the model (score = x) has a reference AUC near 0.83. */
function reference(rows: number, seed: number) {
  const rand = mulberry32(seed);
  const xs = Array.from({ length: rows }, rand);
  const table = parseCsvTable(['x,label', ...xs.map((x) => `${x},${rand() < x ? 1 : 0}`)].join('\n'));
  return freezeReference(['x'], table, xs, 'label');
}

test('a Monitor below and above the minimum: snapshot bands, evaluation, gauges, history points and the wired alert rules', async () => {
  const log = new PredictionLog({ dataDir: await tempDir(), sampleRate: 1, retentionDays: 30 });
  const monitor = new Monitor({ log, processMetrics: false });
  const cfg = defaultConfig().monitoring;
  cfg.alerts.rules = [
    { name: 'auc_drop', metric: 'auc_drop', comparison: '>', threshold: 0.05, severity: 'critical', forSeconds: 0 },
    { name: 'score_psi', metric: 'score_psi', comparison: '>', threshold: 0.25, severity: 'critical', forSeconds: 0 },
  ];
  const store = SqliteStore.open(await tempDir());
  const alerting = await createAlerting(cfg, monitor, store.alerts, pino({ level: 'silent' }));
  try {
    const vm = monitor.version(fakeModel('m'));
    const record = reference(1000, 3);
    assert.ok(record.referenceAuc! > 0.78, `reference AUC ${record.referenceAuc}`);
    vm.setBaselines(baselinesOf(record));
    const T = Date.now();
    const row = new Float32Array(1);
    const predict = (at: number, x: number) => {
      row[0] = x;
      vm.stats.recordPrediction(at, Math.fround(x), row, 0);
    };

    // Three predictions: a huge PSI, but insufficient data.
    for (const x of [0.12, 0.47, 0.93]) predict(T, x);
    let snap = await monitor.snapshot(vm, '1h');
    assert.ok(snap.drift.score.psi! > 4, `score PSI ${snap.drift.score.psi}`);
    assert.deepEqual({ ...snap.drift.score, psi: null }, { psi: null, band: 'insufficient_data', n: 3, min_n: 429 });
    assert.equal(snap.drift.features.x!.band, 'insufficient_data');
    assert.equal(snap.drift.features.x!.n, 3);
    await monitor.evaluate(T);
    let e = monitor.evaluations.get(vm)!;
    assert.equal(e.scorePsi, null);
    assert.equal(e.scorePsiN, 3);
    assert.deepEqual(e.featurePsi, { x: null });
    assert.deepEqual(e.featureN, { x: 3 });
    alerting.evaluate();
    assert.deepEqual(alerting.manager.active(), [], 'no rule sees a PSI from 3 values');
    let text = await monitor.exposition();
    assert.match(text, /^# HELP scoreline_drift_psi .*Omitted while the hour holds fewer values than monitoring\.minSamples\.psi/m);
    assert.doesNotMatch(text, /^scoreline_drift_psi\{/m);
    assert.match(text, /^scoreline_drift_sample_size\{model="m",version="1",feature="__score__"\} 3$/m);
    assert.match(text, /^scoreline_drift_sample_size\{model="m",version="1",feature="x"\} 3$/m);
    vm.stats.current(T + 60_000); // the minute closes: its history point

    // 600 more from the reference population: enough, and stable.
    const rand = mulberry32(99);
    for (let i = 0; i < 600; i++) predict(T + 60_000, rand());
    snap = await monitor.snapshot(vm, '1h');
    assert.equal(snap.drift.score.band, 'stable', `score PSI ${snap.drift.score.psi}`);
    assert.equal(snap.drift.score.n, 603);
    assert.equal(snap.drift.features.x!.band, 'stable');
    await monitor.evaluate(T + 60_000);
    e = monitor.evaluations.get(vm)!;
    assert.ok(e.scorePsi !== null && e.scorePsi < 0.1);
    assert.ok(e.featurePsi.x !== null && e.featurePsi.x! < 0.1);
    text = await monitor.exposition();
    assert.match(text, /^scoreline_drift_psi\{model="m",version="1",feature="__score__"\} 0\.0\d+/m);
    vm.stats.current(T + 120_000);

    const history = await log.history('m', 1, T - 120_000, T + 120_000);
    assert.equal(history.length, 2, JSON.stringify(history));
    assert.equal(history[0]!.score_psi, null, 'the minute of 3 predictions has no PSI');
    assert.equal(history[0]!.score_psi_n, 3);
    assert.ok(typeof history[1]!.score_psi === 'number' && history[1]!.score_psi < 0.1, JSON.stringify(history[1]));
    assert.equal(history[1]!.score_psi_n, 603);

    // 40 labels ranked backwards: AUC near 0, a drop of 0.8 from the reference, and still no alert.
    for (let i = 0; i < 40; i++) log.append(`few-${i}`, 'm', 1, 'default', T, (i + 0.5) / 40, Float32Array.of((i + 0.5) / 40), 0, 1);
    await log.feedback(Array.from({ length: 40 }, (_, i) => ({ requestId: `few-${i}`, label: i < 20 ? 1 : 0 })));
    await monitor.evaluate(T + 63_000);
    e = monitor.evaluations.get(vm)!;
    assert.equal(e.auc, null);
    assert.equal(e.labelled, 40);
    alerting.evaluate();
    assert.deepEqual(alerting.manager.active({ rule: 'auc_drop' }), [], 'no AUC alert on 40 labels');
    const perf = await monitor.performance(vm, '24h', T + 63_000);
    assert.ok('auc' in perf);
    assert.equal(perf.auc, 0, 'the value is still shown');
    assert.equal(perf.bands.auc, 'insufficient_data');
    assert.deepEqual(perf.shortfall.auc, { count: 'labelled', n: 40, min: 1000 });
    assert.deepEqual([perf.positives, perf.negatives], [20, 20]);
    text = await monitor.exposition();
    assert.doesNotMatch(text, /^scoreline_model_auc\{/m);
    assert.match(text, /^scoreline_model_labelled_predictions\{model="m",version="1"\} 40$/m);

    // 1000 more with a weak ranking (P(label 1 | x) = 0.35 + 0.3 x): AUC about 0.6, a real drop.
    const lab = mulberry32(5);
    const labels: { requestId: string; label: number }[] = [];
    for (let i = 0; i < 1000; i++) {
      const x = lab();
      log.append(`many-${i}`, 'm', 1, 'default', T, Math.fround(x), Float32Array.of(x), 0, 1);
      labels.push({ requestId: `many-${i}`, label: lab() < 0.35 + 0.3 * x ? 1 : 0 });
    }
    await log.feedback(labels);
    await monitor.evaluate(T + 66_000);
    e = monitor.evaluations.get(vm)!;
    assert.equal(e.labelled, 1040);
    assert.ok(e.auc !== null && record.referenceAuc! - e.auc > 0.1, `AUC ${e.auc} vs reference ${record.referenceAuc}`);
    alerting.evaluate();
    const fired = alerting.manager.firing({ rule: 'auc_drop' });
    assert.equal(fired.length, 1);
    assert.deepEqual(fired[0]!.labels, { model: 'm', version: '1' });
    assert.match(await monitor.exposition(), /^scoreline_model_auc\{model="m",version="1"\} 0\.\d+$/m);
    // The firing alert is in the store, as the next leader would read it.
    assert.deepEqual(
      (await store.alerts.open()).map((a) => a.id),
      [fired[0]!.id],
    );
  } finally {
    await alerting.close();
    await monitor.close();
    await store.close();
  }
});
