// Retraining pieces in process: the configuration's validation, the out-of-time split, data files
// (globs, bad rows skipped with reasons, a derived feature computed by its feature definition),
// the built-in trainer on data with a known signal, and the external trainer contract (success
// with every variable set, non-zero exit, timeout, no model written).

import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadFeatureDefinitions } from '../src/features/definitions.js';
import { auc } from '../src/monitoring/metrics.js';
import { runCommandTrainer } from '../src/retraining/command.js';
import { parseRetrainingConfig } from '../src/retraining/index.js';
import { expandGlob, ootSplit, readDataFile, toRows } from '../src/retraining/data.js';
import { logisticToOnnx, predictProba, trainLogistic } from '../src/retraining/logistic.js';
import { FEATURES, generate, toCsv, WEAK } from './fixtures/retraining.js';
import { tempDir } from './e2e/server.js';

test('configuration: defaults, paths relative to the file, and errors that name the field', () => {
  const c = parseRetrainingConfig({ data: 'data/*.csv', timeColumn: 'date' }, 'm/model.yaml: retraining', '/models/m', 'default');
  assert.deepEqual(c.data, ['/models/m/data/*.csv']);
  assert.equal(c.label, 'default');
  assert.deepEqual(c.oot, { fraction: 0.3 });
  assert.equal('builtin' in c.trainer && c.trainer.builtin, 'logistic-regression');
  assert.deepEqual(c.gate, { metric: 'auc', minDelta: 0.005, ksTolerance: 0.02 });
  assert.deepEqual(c.deploy.steps, [10, 50, 100]);
  assert.equal(c.useFeedback, true);
  const w = parseRetrainingConfig(
    { useFeedback: true, label: 'y', oot: { window: '30d' }, triggers: { schedule: '0 3 * * 1', drift: { psi: 0.2 } } },
    'x',
    '/a',
  );
  assert.deepEqual(w.oot, { windowMs: 30 * 86_400_000 });
  assert.equal(w.triggers.schedule, '0 3 * * 1');
  assert.deepEqual(w.triggers.drift, { psi: 0.2 });
  assert.equal(w.triggers.performance, null);
  const bad: [unknown, RegExp][] = [
    [{ data: 'a.csv' }, /timeColumn: is required/],
    [{ useFeedback: false, label: 'y' }, /needs training data/],
    [{ useFeedback: true }, /label: is required/],
    [{ useFeedback: true, label: 'y', oot: { fraction: 1.5 } }, /oot.fraction/],
    [{ useFeedback: true, label: 'y', oot: { fraction: 0.3, window: '1d' } }, /exactly one of fraction/],
    [{ useFeedback: true, label: 'y', oot: { window: '30 days' } }, /oot.window/],
    [{ useFeedback: true, label: 'y', trainer: { builtin: 'xgboost' } }, /unknown trainer 'xgboost'/],
    [{ useFeedback: true, label: 'y', trainer: { command: [] } }, /trainer.command/],
    [{ useFeedback: true, label: 'y', triggers: { schedule: 'every monday' } }, /not a cron expression/],
    [{ useFeedback: true, label: 'y', deploy: { steps: [50, 20, 100] } }, /must increase/],
    [{ useFeedback: true, label: 'y', deploy: { steps: [100] } }, /must start below 100/],
    [{ useFeedback: true, label: 'y', gate: { metric: 'f1' } }, /gate.metric/],
    [{ useFeedback: true, label: 'y', surprise: 1 }, /unknown field 'surprise'/],
  ];
  for (const [raw, re] of bad) assert.throws(() => parseRetrainingConfig(raw, 'retraining', '/a'), re, JSON.stringify(raw));
});

test('out-of-time split: the latest rows by time are held out, ties at the boundary stay together', () => {
  const t = [5, 1, 3, 3, 2, 4, 3, 6, 7, 8].map((d) => Date.UTC(2026, 0, d));
  const rows = toRows(
    t.map((ti, i) => ({ x: [i], y: i % 2, t: ti })),
    1,
  );
  const s = ootSplit(rows, { fraction: 0.3 });
  // the 3 latest are days 8, 7, 6
  assert.deepEqual(
    [...s.validation.t].map((x) => new Date(x).getUTCDate()),
    [6, 7, 8],
  );
  assert.equal(s.train.n, 7);
  assert.ok(Math.max(...s.train.t) < Math.min(...s.validation.t));
  // 50% of 10 = 5 rows: days 4..8; 40%: days 5..8 (4 rows); 60%: the boundary is day 3, all three day-3 rows go to validation
  assert.equal(ootSplit(rows, { fraction: 0.6 }).validation.n, 8);
  const w = ootSplit(rows, { windowMs: 2 * 86_400_000 });
  assert.deepEqual(
    [...w.validation.t].map((x) => new Date(x).getUTCDate()),
    [7, 8],
  );
  // rows keep their values through the split
  assert.deepEqual([...s.validation.X], [7, 8, 9]);
});

test('data files: a glob, bad rows skipped with reasons, a derived feature computed by its definition', async () => {
  const dir = await tempDir();
  await mkdir(join(dir, 'in'), { recursive: true });
  await writeFile(
    join(dir, 'in', 'a.csv'),
    'debt,income,amount,label,when\n100,1200,50,1,2026-01-02\n0,1000,0,0,2026-01-03\n5,x,1,1,2026-01-04\n1,1,1,2,2026-01-05\n1,1,1,0,someday\n',
  );
  await writeFile(join(dir, 'in', 'b.csv'), 'debt,income,amount,label,when\n200,2400,100,0,1767398400000\n');
  await writeFile(join(dir, 'in', 'c.txt'), 'ignored');
  assert.deepEqual(
    expandGlob(join(dir, 'in', '*.csv')).map((p) => p.slice(dir.length)),
    ['/in/a.csv', '/in/b.csv'],
  );
  assert.deepEqual(expandGlob(join(dir, '*', '?.csv')).length, 2);
  assert.deepEqual(expandGlob(join(dir, 'in', 'none-*.csv')), []);
  const defs = await loadFeatureDefinitions(
    `entities: [{ name: c, key: id }]
sources:
  s: { path: s.csv, entity: c }
features:
  - { name: debt, version: 1, entity: c, type: offline, dtype: float64, source: s }
  - { name: income, version: 1, entity: c, type: offline, dtype: float64, source: s }
  - name: dti
    version: 1
    entity: c
    type: online
    dtype: float64
    dependsOn: [debt, income, request.amount]
    expression: "(debt + amount) / (income / 12)"
`,
    { baseDir: dir, source: 'defs.yaml' },
  );
  const a = readDataFile(join(dir, 'in', 'a.csv'), { features: ['income', 'dti'], label: 'label', timeColumn: 'when', defs });
  assert.equal(a.report.rows, 2);
  assert.equal(a.report.skipped, 3);
  assert.deepEqual(a.report.computed, ['dti (dti@1)']);
  assert.match(a.report.reasons.join('\n'), /income is "x"/);
  assert.match(a.report.reasons.join('\n'), /label "2" is not 0 or 1/);
  assert.match(a.report.reasons.join('\n'), /time "someday" is not a date/);
  assert.deepEqual(a.rows[0], { x: [1200, 1.5], y: 1, t: Date.UTC(2026, 0, 2) });
  const b = readDataFile(join(dir, 'in', 'b.csv'), { features: ['income', 'dti'], label: 'label', timeColumn: 'when', defs });
  assert.equal(b.rows[0]!.t, 1767398400000);
  assert.throws(
    () => readDataFile(join(dir, 'in', 'a.csv'), { features: ['income', 'age'], label: 'label', timeColumn: 'when', defs }),
    /no column 'age' and no feature definition computes it/,
  );
  assert.throws(
    () => readDataFile(join(dir, 'in', 'a.csv'), { features: ['income'], label: 'target', timeColumn: 'when', defs }),
    /no label column 'target'/,
  );
});

test('the built-in trainer recovers a known signal: its AUC is within 0.01 of the true probabilities', () => {
  const train = generate(6000, 1);
  const test_ = generate(4000, 2);
  const model = trainLogistic(
    train.map((r) => r.x),
    train.map((r) => r.label),
    { l2: 1 },
  );
  assert.ok(model.converged);
  const learned = test_.map((r) => predictProba(model, r.x));
  const labels = test_.map((r) => r.label);
  const best = auc(
    test_.map((r) => r.p),
    labels,
  )!;
  const got = auc(learned, labels)!;
  assert.ok(best > 0.8, `Bayes AUC ${best}`);
  assert.ok(Math.abs(got - best) < 0.01, `learned ${got} vs true ${best}`);
  // and the noise feature gets (almost) no weight, the signal features their signs
  const w = model.weights;
  assert.ok(w[0]! > 0 && w[1]! < 0 && w[2]! > 0 && Math.abs(w[3]!) < 0.1, JSON.stringify(w));
  // the weak fixture is indeed weak
  assert.ok(
    auc(
      test_.map((r) => predictProba(WEAK, r.x)),
      labels,
    )! < 0.56,
  );
});

async function contract(script: string, timeoutSeconds = 30) {
  const dir = await tempDir();
  await writeFile(join(dir, 'train.csv'), toCsv(generate(50, 3)));
  await writeFile(join(dir, 'validation.csv'), toCsv(generate(20, 4)));
  const lines: string[] = [];
  const run = runCommandTrainer({
    command: [process.execPath, '-e', script],
    timeoutSeconds,
    env: { EXTRA: 'from config' },
    cwd: dir,
    trainFile: join(dir, 'train.csv'),
    validationFile: join(dir, 'validation.csv'),
    features: FEATURES,
    label: 'label',
    timeColumn: 'date',
    outputDir: join(dir, 'out'),
    log: (l) => lines.push(l),
  });
  return { run, lines, dir };
}

test('external trainer contract: environment, logs, success, non-zero exit, timeout, no model written', async () => {
  const bytes = logisticToOnnx(WEAK, { featureNames: FEATURES });
  const ok = await contract(`
    const fs = require('fs'), path = require('path'), e = process.env;
    for (const k of ['SCORELINE_TRAIN_FILE', 'SCORELINE_VALIDATION_FILE', 'SCORELINE_FEATURES', 'SCORELINE_LABEL', 'SCORELINE_TIME_COLUMN', 'SCORELINE_OUTPUT_DIR', 'EXTRA']) console.log(k + '=' + e[k]);
    console.log('rows=' + (fs.readFileSync(e.SCORELINE_TRAIN_FILE, 'utf8').trim().split('\\n').length - 1));
    console.error('a warning');
    fs.writeFileSync(path.join(e.SCORELINE_OUTPUT_DIR, 'model.onnx'), Buffer.from('${Buffer.from(bytes).toString('base64')}', 'base64'));
  `);
  const model = await ok.run;
  assert.deepEqual([...model], [...bytes]);
  const log = ok.lines.join('\n');
  assert.match(log, /\[trainer\] SCORELINE_FEATURES=x0,x1,x2,x3/);
  assert.match(log, /\[trainer\] SCORELINE_LABEL=label/);
  assert.match(log, /\[trainer\] SCORELINE_TIME_COLUMN=date/);
  assert.match(log, new RegExp(`\\[trainer\\] SCORELINE_OUTPUT_DIR=${join(ok.dir, 'out')}`));
  assert.match(log, /\[trainer\] EXTRA=from config/);
  assert.match(log, /\[trainer\] rows=50/);
  assert.match(log, /\[trainer stderr\] a warning/);

  await assert.rejects((await contract('console.log("bad data"); process.exit(3)')).run, /trainer exited with status 3/);
  const t0 = Date.now();
  await assert.rejects((await contract('setTimeout(() => {}, 60000)', 1)).run, /timed out after 1 s and was killed/);
  assert.ok(Date.now() - t0 < 10_000);
  await assert.rejects((await contract('console.log("done")')).run, /wrote no model.onnx/);
  await assert.rejects(
    (await contract('require("fs").writeFileSync(require("path").join(process.env.SCORELINE_OUTPUT_DIR, "model.onnx"), "not onnx")')).run,
    /not a usable ONNX model/,
  );
  const missing = await contract('');
  await missing.run.catch(() => undefined);
  await assert.rejects(
    runCommandTrainer({
      command: ['/nonexistent/trainer'],
      timeoutSeconds: 5,
      env: {},
      cwd: missing.dir,
      trainFile: '',
      validationFile: '',
      features: FEATURES,
      label: 'label',
      timeColumn: 'date',
      outputDir: join(missing.dir, 'o'),
      log: () => undefined,
    }),
    /cannot start trainer .*ENOENT/,
  );
});
