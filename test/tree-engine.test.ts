// The tree engine: for every layout it takes, a SessionHost serving through it answers exactly as
// onnxruntime does (bit for bit, every output, one row and batches, thresholds hit exactly, NaN and
// infinities); layouts it does not take are left to onnxruntime with a reason; a plan that disagrees
// with onnxruntime on the probe rows is refused at load; and through the InferenceEngine it runs in
// piscina workers and inline, and can be turned off.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { InferenceEngine, type LoadedModel } from '../src/inference/index.js';
import { SessionHost, type SessionSpec, type TensorPayload } from '../src/inference/session.js';
import { planTrees } from '../src/inference/tree-plan.js';
import { firstDifference, probeRows, type TreePlan } from '../src/inference/tree-runner.js';
import { Monitor } from '../src/monitoring/index.js';
import { fitTrees, treesToOnnx } from '../src/retraining/trees.js';
import { tempDir } from './e2e/server.js';
import { ensembleBytes, gridRows, type EnsembleSpec } from './fixtures/explain-models.js';

const hosts: SessionHost[] = [];
const engines: InferenceEngine[] = [];
after(async () => {
  await Promise.all(hosts.map((h) => h.releaseAll()));
  await Promise.all(engines.map((e) => e.close()));
});

async function writeModel(bytes: Uint8Array, name: string): Promise<{ path: string; sha256: string }> {
  const path = join(await tempDir(), `${name}.onnx`);
  writeFileSync(path, bytes);
  return { path, sha256: createHash('sha256').update(bytes).digest('hex') };
}

function specOf(file: { path: string; sha256: string }, features: number, trees?: TreePlan, intraOpThreads = 1): SessionSpec {
  return {
    key: `${file.sha256}:${trees === undefined ? 'ort' : 'trees'}:${intraOpThreads}:${Math.random()}`,
    path: file.path,
    sha256: file.sha256,
    intraOpThreads,
    warmup: { inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, features] }], sizes: [1, 2, 4, 8, 16, 32, 64] },
    ...(trees !== undefined ? { trees } : {}),
  };
}

function planOf(bytes: Uint8Array): TreePlan {
  const p = planTrees(bytes);
  if (!p.ok) throw new Error(`not planned: ${p.reason}`);
  return p.plan;
}

/** Rows that hit thresholds (the plan's probe, with another seed) and a grid with NaN, as float32. */
function testRows(plan: TreePlan, seed: number): Float32Array {
  const probe = probeRows(plan, 600, seed);
  const grid = Float32Array.from(gridRows(400, plan.features, seed, 0.15));
  const out = new Float32Array(probe.length + grid.length);
  out.set(probe);
  out.set(grid, probe.length);
  return out;
}

/** Serves `bytes` through the tree engine and through onnxruntime; every answer must be identical. */
async function agrees(bytes: Uint8Array, label: string): Promise<void> {
  const plan = planOf(bytes);
  const file = await writeModel(bytes, label.replace(/\W+/g, '-'));
  const trees = new SessionHost();
  const ort = new SessionHost();
  hosts.push(trees, ort);
  const withTrees = specOf(file, plan.features, plan);
  const without = specOf(file, plan.features);
  const loaded = await trees.load(withTrees);
  assert.equal(loaded.engine, 'trees', `${label}: ${loaded.note}`);
  assert.equal((await ort.load(without)).engine, 'onnxruntime');
  const x = testRows(plan, 77);
  const total = x.length / plan.features;
  for (const size of [1, 13, 64]) {
    for (let from = 0; from + size <= total; from += size) {
      const input: TensorPayload[] = [
        {
          name: 'input',
          datatype: 'FP32',
          dims: [size, plan.features],
          data: x.slice(from * plan.features, (from + size) * plan.features),
        },
      ];
      const a = await trees.run(withTrees, input);
      const b = await ort.run(without, input);
      const d = firstDifference(a.outputs, b.outputs);
      assert.equal(d, null, `${label}, rows ${from}..${from + size - 1}: ${d}`);
    }
  }
}

const small = { trees: 25, depth: 4, features: 6 };

test('binary classifiers through the tree engine answer as onnxruntime, bit for bit: LOGISTIC (mixed and positive weights), NONE, every branch mode with missing values', async () => {
  await agrees(
    ensembleBytes({ kind: 'classifier', ...small, seed: 1, outputs: 2, weightIds: [0], postTransform: 'LOGISTIC', baseValues: [-0.7] }),
    'logistic, mixed weights',
  );
  await agrees(ensembleBytes({ kind: 'classifier', ...small, seed: 2, outputs: 2, weightIds: [0], postTransform: 'NONE' }), 'none');
  await agrees(
    ensembleBytes({ kind: 'classifier', ...small, seed: 3, outputs: 2, weightIds: [0], postTransform: 'LOGISTIC', positive: true }),
    'logistic, positive weights',
  );
  const modes = ['BRANCH_LEQ', 'BRANCH_LT', 'BRANCH_GTE', 'BRANCH_GT', 'BRANCH_EQ', 'BRANCH_NEQ'];
  await agrees(
    ensembleBytes({
      kind: 'classifier',
      ...small,
      seed: 15,
      outputs: 2,
      weightIds: [0],
      postTransform: 'LOGISTIC',
      modes,
      missingTrue: 0.5,
    }),
    'every mode, missing values',
  );
  await agrees(
    ensembleBytes({ kind: 'classifier', ...small, seed: 8, outputs: 2, weightIds: [0], postTransform: 'LOGISTIC', shuffleIds: true }),
    'shuffled node ids',
  );
});

test("scoreline's own GBDT (fitTrees, 60 trees of depth 4 over 20 features) through the tree engine answers as onnxruntime", async () => {
  const n = 3000;
  const p = 20;
  const X = new Float64Array(n * p);
  const y = new Float64Array(n);
  let s = 7;
  const rnd = () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < p; j++) X[i * p + j] = (rnd() - 0.5) * (1 + j);
    y[i] = X[i * p]! + X[i * p + 3]! * X[i * p + 5]! + (rnd() - 0.5) > 0 ? 1 : 0;
  }
  const model = fitTrees(X, y, { trees: 60, depth: 4, learningRate: 0.1 });
  await agrees(treesToOnnx(model, { featureNames: Array.from({ length: p }, (_, j) => `f${j}`) }), 'fitTrees');
});

test('regressors through the tree engine answer as onnxruntime: SUM with a base value, AVERAGE, every branch mode with missing values', async () => {
  await agrees(ensembleBytes({ kind: 'regressor', ...small, seed: 11, outputs: 1, baseValues: [2.5] }), 'sum');
  await agrees(ensembleBytes({ kind: 'regressor', ...small, seed: 12, outputs: 1, aggregate: 'AVERAGE', baseValues: [0.5] }), 'average');
  const modes = ['BRANCH_LEQ', 'BRANCH_LT', 'BRANCH_GTE', 'BRANCH_GT', 'BRANCH_EQ', 'BRANCH_NEQ'];
  await agrees(ensembleBytes({ kind: 'regressor', ...small, seed: 14, outputs: 1, modes, missingTrue: 0.5 }), 'modes');
});

test('layouts the tree engine does not take are left to onnxruntime, each with its reason', () => {
  const reasons: [EnsembleSpec | string, RegExp][] = [
    [{ kind: 'classifier', ...small, seed: 4, outputs: 2, postTransform: 'NONE', positive: true }, /class ids other than 0/],
    [{ kind: 'classifier', ...small, seed: 6, outputs: 3, postTransform: 'LOGISTIC', weightIds: [0] }, /3 classes, not 2/],
    [{ kind: 'classifier', ...small, seed: 5, outputs: 2, weightIds: [0], postTransform: 'SOFTMAX' }, /post_transform SOFTMAX/],
    [{ kind: 'regressor', ...small, seed: 13, outputs: 2, baseValues: [1, -1] }, /more than one target/],
    [{ kind: 'regressor', ...small, seed: 18, outputs: 1, aggregate: 'MAX' }, /aggregate_function MAX/],
    [{ kind: 'regressor', ...small, seed: 16, outputs: 1, inputType: 'FP64' }, /not float32/],
    [{ kind: 'regressor', ...small, seed: 17, outputs: 1, inputType: 'FP64', castToFloat: true }, /2 nodes/],
    ['examples/models/credit-default/1/model.onnx', /not one tree ensemble|not a TreeEnsemble/],
  ];
  for (const [spec, reason] of reasons) {
    const bytes = typeof spec === 'string' ? readFileSync(spec) : ensembleBytes(spec);
    const p = planTrees(bytes);
    assert.equal(p.ok, false, JSON.stringify(spec));
    assert.match((p as { reason: string }).reason, reason, JSON.stringify(spec));
  }
});

test('a plan that disagrees with onnxruntime on the probe rows is refused at load, and onnxruntime serves; so is one with intraOpThreads 2', async () => {
  const bytes = ensembleBytes({ kind: 'classifier', ...small, seed: 21, outputs: 2, weightIds: [0], postTransform: 'LOGISTIC' });
  const plan = planOf(bytes);
  // One leaf weight of one tree off by 0.01: only rows reaching that leaf can tell.
  const leaf = plan.leaf.slice();
  const k = plan.feature.findIndex((f, i) => f < 0 && i > plan.roots[3]!);
  leaf[k] = Math.fround(leaf[k]! + 0.01);
  const file = await writeModel(bytes, 'tampered');
  const host = new SessionHost();
  hosts.push(host);
  const loaded = await host.load(specOf(file, plan.features, { ...plan, leaf }));
  assert.equal(loaded.engine, 'onnxruntime');
  assert.match(loaded.note ?? '', /rows \d+\.\.\d+ of the probe: output 'probabilities' value \d+ is/);
  const threads = await host.load(specOf(file, plan.features, plan, 2));
  assert.equal(threads.engine, 'onnxruntime');
  assert.match(threads.note ?? '', /intraOpThreads 2/);
});

test('through the InferenceEngine: in piscina workers and inline the tree engine serves, answers as onnxruntime, and treeEngine: false turns it off', async () => {
  const bytes = ensembleBytes({
    kind: 'classifier',
    ...small,
    seed: 31,
    outputs: 2,
    weightIds: [0],
    postTransform: 'LOGISTIC',
    baseValues: [0.2],
  });
  const plan = planOf(bytes);
  const file = await writeModel(bytes, 'engine');
  const make = (workers: number, treeEngine: boolean) => {
    const monitor = new Monitor({ processMetrics: false });
    const engine = new InferenceEngine({
      workers,
      tasksPerWorker: 2,
      intraOpThreads: 1,
      inlineBelowMicros: 0,
      treeEngine,
      batching: { maxBatchSize: 64, maxQueueDelayMicros: 200, maxQueueSize: 4096 },
      observerFor: (m) => monitor.version(m),
    });
    engines.push(engine);
    return engine;
  };
  const answers: TensorPayload[][] = [];
  const rows = testRows(plan, 5).slice(0, 64 * plan.features);
  for (const [workers, on] of [
    [1, true],
    [0, true],
    [1, false],
  ] as const) {
    const engine = make(workers, on);
    const m: LoadedModel = await engine.load({ name: 'trees', version: 1, path: file.path, sha256: file.sha256, config: {} });
    assert.equal(m.placement, workers > 0 ? 'pool' : 'inline');
    assert.equal(m.engine, on ? 'trees' : 'onnxruntime');
    if (!on) assert.equal(m.engineNote, 'inference.treeEngine is off');
    const lane = workers > 0 ? engine.pool! : engine.lanes.find((l) => l.kind === 'inline')!;
    const spec = { ...specOf(file, plan.features, on ? plan : undefined), key: `${m.name}:${m.version}:${m.sha256}` };
    const result = await lane.executor.run(spec, [{ name: 'input', datatype: 'FP32', dims: [64, plan.features], data: rows }]);
    answers.push(result.outputs);
  }
  assert.equal(firstDifference(answers[0]!, answers[2]!), null, 'pool trees against onnxruntime');
  assert.equal(firstDifference(answers[1]!, answers[2]!), null, 'inline trees against onnxruntime');
});
