// Categorical inputs in monitoring: a BYTES feature's reference freezes categories as bins (even
// when they look like numbers), rows are recorded as the category's index (unseen: "other",
// empty: missing), CSI against a hand-computed value, and a real prediction log keeps the index
// with the numeric columns, read back through a label join. The model is a real LoadedModel with a
// real DynamicBatcher (no onnxruntime needed: the batch's result is given).

import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DynamicBatcher, type BatchScheduler } from '../src/inference/batcher.js';
import { LoadedModel, type PendingRequest } from '../src/inference/index.js';
import { CategoricalDriftCounter, categoricalBaseline } from '../src/monitoring/drift.js';
import { baselinesOf, freezeReference, Monitor, parseCsvTable, PredictionLog, WindowedStats } from '../src/monitoring/index.js';

// Reference: a 50, b 30, c 20 (shares .5 .3 .2, "other" 0). Current: a 20, b 20, c 10, unseen 10.
// CSI = sum (cur - ref) ln(cur / ref), ref "other" raised to 1e-4:
//   a (1/3 - .5) ln((1/3) / .5)     = 0.067577518
//   b (1/3 - .3) ln((1/3) / .3)     = 0.003512017
//   c (1/6 - .2) ln((1/6) / .2)     = 0.006077385
//   other (1/6 - 1e-4) ln((1/6) / 1e-4) = 1.235688292
const HAND_CSI = 0.067577518 + 0.003512017 + 0.006077385 + 1.235688292;
const REFERENCE = [...new Array(50).fill('a'), ...new Array(30).fill('b'), ...new Array(20).fill('c')];
const CURRENT = [...new Array(20).fill('a'), ...new Array(20).fill('b'), ...new Array(10).fill('c'), ...new Array(10).fill('zzz')];

test('a categorical counter fed category indices equals one fed the strings; CSI matches the hand computation', () => {
  const base = categoricalBaseline(REFERENCE);
  assert.deepEqual(base.categories, ['a', 'b', 'c']);
  assert.deepEqual(base.refShares, [0.5, 0.3, 0.2, 0]);
  const byName = new CategoricalDriftCounter(base);
  const byIndex = new CategoricalDriftCounter(base);
  for (const v of CURRENT) {
    byName.add(v);
    byIndex.addIndex(v === 'zzz' ? 3 : base.categories.indexOf(v));
  }
  byIndex.addIndex(NaN);
  byIndex.addIndex(17); // beyond the categories: other
  assert.deepEqual(Array.from(byName.counts), [20, 20, 10, 10]);
  assert.deepEqual(Array.from(byIndex.counts), [20, 20, 10, 11]);
  assert.equal(byIndex.missing, 1);
  assert.ok(Math.abs(byName.psi()! - HAND_CSI) < 1e-8, `${byName.psi()} vs ${HAND_CSI}`);
});

test('a reference freezes a named categorical column as categories even when its values look like numbers', () => {
  const table = parseCsvTable(['x,code,label', '1.5,1,0', '2.5,2,1', '3.5,1,0', '4.5,3,1'].join('\n'));
  const asCategory = freezeReference(['x', 'code'], table, [0.1, 0.9, 0.2, 0.8], 'label', new Set(['code']));
  assert.equal(asCategory.features[0]!.baseline.kind, 'numeric');
  assert.deepEqual(asCategory.features[1]!.baseline, { kind: 'categorical', categories: ['1', '2', '3'], refShares: [0.5, 0.25, 0.25, 0] });
  assert.equal(freezeReference(['x', 'code'], table, [0.1, 0.9, 0.2, 0.8], 'label').features[1]!.baseline.kind, 'numeric');
});

/** A model with a numeric input x [-1, 2] and a categorical w [-1, 1], features [x0, x1, w], and its batcher. */
function wordsModel(): LoadedModel {
  const m = new LoadedModel(
    {
      name: 'words',
      version: 1,
      path: '/nonexistent',
      sha256: '0'.repeat(64),
      config: { features: ['x0', 'x1', 'w'], task: 'classification' },
    },
    {
      inputs: [
        { name: 'x', datatype: 'FP32', shape: [-1, 2] },
        { name: 'w', datatype: 'BYTES', shape: [-1, 1] },
      ],
      outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 1] }],
      irVersion: 8,
      opsets: {},
      producer: 'test',
      props: {},
    },
    { maxBatchSize: 64, maxQueueDelayMicros: 0, maxQueueSize: 1000 },
  );
  const scheduler = { notify() {}, register() {} } as unknown as BatchScheduler;
  m.batcher = new DynamicBatcher(
    { key: 'k', path: '', sha256: '', intraOpThreads: 1, warmup: { inputs: [], sizes: [1] } },
    [
      { name: 'x', datatype: 'FP32', inner: [2] },
      { name: 'w', datatype: 'BYTES', inner: [1] },
    ],
    true,
    m.batching,
    scheduler,
    { onDispatch() {}, onComplete() {} },
    { model: 'words', version: '1' },
  );
  return m;
}

test('rows of a BYTES feature are recorded as category indices: CSI in the windows, the index in the prediction log', async () => {
  const m = wordsModel();
  assert.deepEqual(m.features!.input, [0, 0, 1]);
  assert.deepEqual(m.features!.categorical, [false, false, true]);
  const log = new PredictionLog({ dataDir: await mkdtemp(join(tmpdir(), 'scoreline-cat-')), sampleRate: 1, retentionDays: 30, flushMs: 5 });
  const monitor = new Monitor({ log, processMetrics: false });
  try {
    const vm = monitor.version(m);
    const refTable = parseCsvTable(['x0,x1,w', ...REFERENCE.map((w, i) => `${i},${i % 7},${w}`)].join('\n'));
    vm.setBaselines(
      baselinesOf(
        freezeReference(
          ['x0', 'x1', 'w'],
          refTable,
          REFERENCE.map((_, i) => i / 100),
          null,
          new Set(['w']),
        ),
      ),
    );

    // One batch: the current rows, then one with an empty category (missing).
    const values = [...CURRENT, ''];
    const batch = m.batcher.reserve(values.length);
    values.forEach((w, r) => {
      (batch.buffers[0] as Float32Array)[2 * r] = r;
      (batch.buffers[0] as Float32Array)[2 * r + 1] = 0.5;
      (batch.buffers[1] as string[])[r] = w;
    });
    const req: PendingRequest = {
      rows: values.length,
      enqueuedAt: 0,
      deadline: Infinity,
      settled: false,
      requestId: 'cat',
      resolve() {},
      reject() {},
    };
    m.batcher.commit(batch, req);
    const scores = Float32Array.from(values, (_, r) => r / values.length);
    await vm.onComplete(batch, { outputs: [{ name: 'y', datatype: 'FP32', dims: [values.length, 1], data: scores }], computeMs: 1 });

    const drift = vm.stats.drift(vm.stats.view('all'), 1);
    assert.equal(drift.features.w!.n, 60);
    assert.ok(Math.abs(drift.features.w!.missing_rate! - 1 / 61) < 1e-12);
    assert.ok(Math.abs(drift.features.w!.psi! - HAND_CSI) < 1e-8, `${drift.features.w!.psi} vs ${HAND_CSI}`);
    assert.equal(drift.features.x0!.n, 61, 'numeric columns of the same rows are recorded too');

    // Labels join by id/row; the joined rows carry their inputs: x0, x1 and the category's index.
    const rows = [0, 20, 45, 55, 60];
    const joined = await log.feedback(rows.map((r) => ({ requestId: `cat/${r}`, label: r % 2 })));
    assert.equal(joined.joined, rows.length, JSON.stringify(joined));
    const training = await log.training('words');
    const byX0 = new Map(training.map((t) => [t.features[0], t.features]));
    assert.deepEqual(byX0.get(0), [0, 0.5, 0]); // a
    assert.deepEqual(byX0.get(20), [20, 0.5, 1]); // b
    assert.deepEqual(byX0.get(45), [45, 0.5, 2]); // c
    assert.deepEqual(byX0.get(55), [55, 0.5, 3]); // unseen: other = categories.length
    assert.ok(Number.isNaN(byX0.get(60)![2]), 'an empty category is logged as missing');
  } finally {
    await monitor.close();
  }
});

test('windowed stats merge categorical minutes like numeric ones', () => {
  const base = categoricalBaseline(REFERENCE);
  const stats = new WindowedStats({ score: null, features: [{ name: 'w', baseline: base }], referenceAuc: null, rows: 100 }, 0);
  const row = new Float32Array(1);
  CURRENT.forEach((v, i) => {
    row[0] = v === 'zzz' ? 3 : base.categories.indexOf(v);
    // Half the rows in the first minute, half in the second.
    stats.recordPrediction(i < 30 ? 1000 : 61_000, 0.5, row, 0);
  });
  const all = stats.view('all', 61_000);
  assert.deepEqual(Array.from(all.features[0]!.counts), [20, 20, 10, 10]);
  assert.ok(Math.abs(stats.drift(all, 1).features.w!.psi! - HAND_CSI) < 1e-8);
});
