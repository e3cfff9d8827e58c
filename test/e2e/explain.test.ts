// Explanations on real servers: the bundled demo (the logistic credit-default model, `npm start`'s
// config) over v1 `:explain`, entity scoring with "explain" and OIP parameters; and a repository of a
// gradient-boosted trees model (TreeSHAP), a MatMul+Tanh net (KernelSHAP) and a model without
// reference rows. Every explanation adds up to its margin, matches the score it explains, and the
// contributions are what the explainers compute in-process from the same reference rows.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { prepareTreeShap, recogniseScore, treeShap, type TreeModel, type TreeShapModel } from '../../src/explain/index.js';
import { seededRandom } from '../../src/explain/index.js';
import { readOnnxMetadata } from '../../src/onnx/index.js';
import { fitTrees, treesToOnnx } from '../../src/retraining/trees.js';
import { tanhNet } from '../fixtures/explain-models.js';
import { writeLogisticModel } from '../fixtures/models.js';
import { DEMO_REPO, ROOT, request, startServer, tempDir, type TestServer } from './server.js';

const TOKEN = 'explain-test-token';
const sigmoid = (t: number) => 1 / (1 + Math.exp(-t));

/** base + every contribution (+ the rest left out by top_k) is the margin; the link maps it to the score. */
function locallyAccurate(e: any, where: string): void {
  const listed = e.contributions.reduce((s: number, c: any) => s + c.contribution, 0);
  const sum = e.base_value + listed + (e.rest?.contribution ?? 0);
  assert.ok(
    Math.abs(sum - e.margin) <= 1e-9 * Math.max(1, Math.abs(e.margin)),
    `${where}: base + contributions ${sum} != margin ${e.margin}`,
  );
  const score = e.link === 'logit' ? sigmoid(e.margin) : e.margin;
  assert.ok(Math.abs(score - e.score) < 1e-5, `${where}: the margin ${e.margin} maps to ${score}, the score is ${e.score}`);
  const sizes = e.contributions.map((c: any) => Math.abs(c.contribution));
  for (let i = 1; i < sizes.length; i++) assert.ok(sizes[i - 1] >= sizes[i], `${where}: contributions sorted by size`);
}

describe('the bundled demo (logistic credit-default model)', () => {
  let server: TestServer;
  const features: string[] = readFileSync(join(DEMO_REPO, 'credit-default', 'reference.csv'), 'utf8')
    .split('\n')[0]!
    .split(',')
    .slice(0, 10);
  const applicant = {
    duration_months: 36,
    amount: 9000,
    age: 30,
    income: 30000,
    employment_years: 2,
    credit_history_months: 40,
    existing_loans: 3,
    debt_to_income: 0.9,
    txn_count_24h: 4,
    late_payments_90d: 2,
  };

  before(async () => {
    server = await startServer(['--config', join(ROOT, 'examples', 'scoreline.yaml'), '--workers', '1']);
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });

  /** coefficient_j * (x_j - mean of reference column j), from the model's own metadata and reference.csv. */
  function expectedLinear(x: Record<string, number>): Map<string, number> {
    const props = readOnnxMetadata(readFileSync(join(DEMO_REPO, 'credit-default', '1', 'model.onnx'))).props;
    const { weights } = JSON.parse(props['scoreline.coefficients']!) as { weights: number[] };
    const { std } = JSON.parse(props['scoreline.standardisation']!) as { std: number[] };
    const lines = readFileSync(join(DEMO_REPO, 'credit-default', 'reference.csv'), 'utf8')
      .trim()
      .split('\n')
      .slice(1);
    const out = new Map<string, number>();
    features.forEach((f, j) => {
      const mean = lines.reduce((s, l) => s + Math.fround(Number(l.split(',')[j])), 0) / lines.length;
      out.set(f, (weights[j]! / std[j]!) * (Math.fround(x[f]!) - mean));
    });
    return out;
  }

  test('v1 :explain gives exact linear contributions in log-odds that add up to the margin, for the score :predict gives', async () => {
    const r = await request(`${server.url}/v1/models/credit-default:explain`, { json: { instances: [applicant] } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.model_name, 'credit-default');
    assert.equal(r.body.model_version, '1');
    assert.equal(typeof r.body.request_id, 'string');
    assert.equal(r.body.explanations.length, 1);
    const e = r.body.explanations[0];
    assert.equal(e.method, 'linear');
    assert.equal(e.output, 'probabilities');
    assert.equal(e.column, 1);
    assert.equal(e.link, 'logit');
    assert.equal(e.reference_rows, 5000);
    assert.equal(e.contributions.length, 10);
    assert.equal(e.rest, undefined);
    locallyAccurate(e, 'demo');
    const expected = expectedLinear(applicant);
    for (const c of e.contributions) {
      assert.equal(c.value, (applicant as Record<string, number>)[c.feature]);
      const want = expected.get(c.feature)!;
      assert.ok(Math.abs(c.contribution - want) < 1e-4 * Math.max(1, Math.abs(want)), `${c.feature}: ${c.contribution} vs ${want}`);
    }
    const p = await request(`${server.url}/v1/models/credit-default:predict`, { json: { instances: [applicant] } });
    assert.equal(p.body.predictions[0].probabilities[1], e.score);
    // The same on the versioned path, with the largest two reasons only.
    const v = await request(`${server.url}/v1/models/credit-default/versions/1:explain`, {
      json: { instances: [applicant, applicant], top_k: 2 },
    });
    assert.equal(v.status, 200, v.text);
    assert.equal(v.body.explanations.length, 2);
    const top = v.body.explanations[1];
    assert.deepEqual(top.contributions, e.contributions.slice(0, 2));
    assert.equal(top.rest.features, 8);
    locallyAccurate(top, 'top_k');
  });

  test('entity scoring with "explain" explains the resolved row; OIP parameters explain every row; plain requests carry nothing', async () => {
    const body = { entity: { customer_id: 'C00042' }, context: { amount: 5200, duration_months: 24 } };
    const plain = await request(`${server.url}/v1/score/credit-default`, { json: { ...body, debug: true } });
    assert.equal(plain.status, 200, plain.text);
    assert.equal(plain.body.explanation, undefined);
    const r = await request(`${server.url}/v1/score/credit-default`, { json: { ...body, explain: true, top_k: 3 } });
    assert.equal(r.status, 200, r.text);
    const e = r.body.explanation;
    assert.equal(e.score, r.body.score);
    assert.equal(r.body.score, plain.body.score);
    assert.equal(e.contributions.length, 3);
    locallyAccurate(e, 'score');
    const f = plain.body.features;
    const row: Record<string, number> = { duration_months: 24, amount: 5200 };
    for (const name of features.slice(2)) row[name] = f[`${name}@1`].value;
    const expected = expectedLinear(row);
    for (const c of e.contributions) {
      assert.equal(c.value, row[c.feature]);
      assert.ok(Math.abs(c.contribution - expected.get(c.feature)!) < 1e-4 * Math.max(1, Math.abs(expected.get(c.feature)!)), c.feature);
    }

    const rows = [features.map((n) => (applicant as Record<string, number>)[n]!), features.map((n) => row[n]!)];
    const oip = await request(`${server.url}/v2/models/credit-default/infer`, {
      json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 10], data: rows.flat() }], parameters: { explain: true, top_k: 4 } },
    });
    assert.equal(oip.status, 200, oip.text);
    assert.equal(oip.body.parameters.explanation.length, 2);
    oip.body.parameters.explanation.forEach((x: any, i: number) => {
      assert.equal(x.score, oip.body.outputs[1].data[i * 2 + 1]);
      assert.equal(x.contributions.length, 4);
      locallyAccurate(x, `oip row ${i}`);
    });
    const plainOip = await request(`${server.url}/v2/models/credit-default/infer`, {
      json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 10], data: rows.flat() }] },
    });
    assert.equal(plainOip.body.parameters, undefined);
    assert.deepEqual(plainOip.body.outputs, oip.body.outputs);
  });

  test('a bad top_k or explain flag is 400 on every transport and scores nothing', async () => {
    const before = await request(`${server.url}/metrics`);
    const count = (text: string) =>
      Number(
        /scoreline_requests_total\{model="credit-default",version="1",variant="default",route="explain",status="2xx"\} (\d+)/.exec(
          text,
        )?.[1] ?? 0,
      );
    const cases: [string, unknown, RegExp][] = [
      ['/v1/models/credit-default:explain', { instances: [applicant], top_k: 0 }, /"top_k" must be a positive integer, got 0/],
      ['/v1/models/credit-default:explain', { instances: [applicant], top_k: '3' }, /"top_k" must be a positive integer/],
      [
        '/v1/score/credit-default',
        { entity: { customer_id: 'C00042' }, context: { amount: 1, duration_months: 1 }, explain: true, top_k: 1.5 },
        /"top_k" must be a positive integer, got 1.5/,
      ],
      ['/v1/score/credit-default', { entity: { customer_id: 'C00042' }, explain: 'yes' }, /"explain" must be true or false/],
      ['/v1/score/credit-default', { entity: { customer_id: 'C00042' }, top_k: 3 }, /"top_k" needs "explain": true/],
      [
        '/v2/models/credit-default/infer',
        {
          inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10], data: new Array(10).fill(1) }],
          parameters: { explain: true, top_k: -1 },
        },
        /parameters\."top_k" must be a positive integer/,
      ],
    ];
    for (const [path, body, message] of cases) {
      const r = await request(`${server.url}${path}`, { json: body });
      assert.equal(r.status, 400, `${path} ${JSON.stringify(body)}: ${r.text}`);
      assert.match(r.body.error, message);
    }
    const after = await request(`${server.url}/metrics`);
    assert.ok(count(after.text) >= 1, 'explanations are counted under route="explain"');
    assert.equal(count(after.text), count(before.text), 'refused requests were not answered as explanations');
    assert.match(after.text, /scoreline_unrouted_requests_total\{route="explain",status="4xx"\} [1-9]/);
  });
});

describe('a trees model (TreeSHAP), a net (KernelSHAP) and a model without reference rows', () => {
  let server: TestServer;
  const M = 6;
  const names = Array.from({ length: M }, (_, j) => `f${j}`);
  let treesBytes: Uint8Array;
  let reference: Float64Array;

  function syntheticRows(n: number, seed: number, shift = 0): { X: Float64Array; y: Float64Array } {
    const r = seededRandom(seed);
    const X = new Float64Array(n * M).map(() => Math.fround(Math.round((r() * 4 - 2 + shift) * 100) / 100));
    const y = Float64Array.from({ length: n }, (_, i) =>
      sigmoid(X[i * M]! - X[i * M + 1]! * X[i * M + 2]! + 0.5 * X[i * M + 5]!) > r() ? 1 : 0,
    );
    return { X, y };
  }
  const csv = (X: Float64Array, y: Float64Array) =>
    `${[[...names, 'y'].join(','), ...Array.from(y, (v, i) => [...X.subarray(i * M, (i + 1) * M), v].join(','))].join('\n')}\n`;

  before(async () => {
    const repo = await tempDir();
    const train = syntheticRows(4000, 1);
    const trees = fitTrees(train.X, train.y, { trees: 40, depth: 3 });
    treesBytes = treesToOnnx(trees, { featureNames: names });
    const ref = syntheticRows(800, 2);
    reference = ref.X;
    await mkdir(join(repo, 'gbdt', '1'), { recursive: true });
    await writeFile(join(repo, 'gbdt', '1', 'model.onnx'), treesBytes);
    await writeFile(join(repo, 'gbdt', 'reference.csv'), csv(ref.X, ref.y));
    await writeFile(
      join(repo, 'gbdt', 'model.yaml'),
      stringify({
        features: names,
        reference: 'reference.csv',
        label: 'y',
        task: 'classification',
        score: { output: 'probabilities', index: 1 },
        batching: { maxBatchSize: 32 },
      }),
    );

    const netNames = names.slice(0, 5);
    await mkdir(join(repo, 'net', '1'), { recursive: true });
    await writeFile(join(repo, 'net', '1', 'model.onnx'), tanhNet(5, 8, 3));
    const netRef = syntheticRows(300, 4);
    const netCsv = `${[[...netNames, 'y'].join(','), ...Array.from(netRef.y, (v, i) => [...netRef.X.subarray(i * M, i * M + 5), v].join(','))].join('\n')}\n`;
    await writeFile(join(repo, 'net', 'reference.csv'), netCsv);
    await writeFile(
      join(repo, 'net', 'model.yaml'),
      stringify({
        features: netNames,
        reference: 'reference.csv',
        label: 'y',
        task: 'classification',
        score: { output: 'score' },
        batching: { maxBatchSize: 64 },
      }),
    );

    await writeLogisticModel(repo, 'noref', 1, { modelYaml: { features: ['f0', 'f1', 'f2'] } });
    server = await startServer(['--model-repo', repo, '--workers', '1'], { SCORELINE_ADMIN_TOKEN: TOKEN });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });

  /** TreeSHAP computed here, from the model bytes and the reference rows the server was given. */
  function inProcess(ref: Float64Array): TreeShapModel {
    const r = recogniseScore(treesBytes, { input: 'input', inputType: 'FP32', features: M, output: 'probabilities', column: 1 });
    assert.ok(r.ok);
    return prepareTreeShap((r.model.margin as { trees: TreeModel }).trees, ref, ref.length / M, M);
  }

  const instances = (X: Float64Array, n: number) =>
    Array.from({ length: n }, (_, i) => Object.fromEntries(names.map((f, j) => [f, X[i * M + j]!])));

  test('TreeSHAP over covers counted on the reference rows: exact, locally accurate, the same as computed in-process', async () => {
    const rows = syntheticRows(5, 9).X;
    const r = await request(`${server.url}/v1/models/gbdt:explain`, { json: { instances: instances(rows, 5) } });
    assert.equal(r.status, 200, r.text);
    const local = inProcess(reference);
    const phi = new Float64Array(M);
    r.body.explanations.forEach((e: any, i: number) => {
      assert.equal(e.method, 'tree_shap');
      assert.equal(e.link, 'logit');
      assert.equal(e.source, 'TreeEnsembleClassifier (40 trees)');
      assert.equal(e.reference_rows, 800);
      locallyAccurate(e, `gbdt row ${i}`);
      const margin = treeShap(local, rows.subarray(i * M, (i + 1) * M), phi);
      assert.ok(Math.abs(e.margin - margin) < 1e-9);
      assert.ok(Math.abs(e.base_value - local.expected) < 1e-9);
      for (const c of e.contributions) assert.ok(Math.abs(c.contribution - phi[names.indexOf(c.feature)]!) < 1e-9, c.feature);
    });
    const p = await request(`${server.url}/v1/models/gbdt:predict`, { json: { instances: instances(rows, 5) } });
    r.body.explanations.forEach((e: any, i: number) => {
      assert.equal(e.score, p.body.predictions[i].probabilities[1]);
    });
    const oip = await request(`${server.url}/v2/models/gbdt/versions/1/infer`, {
      json: {
        inputs: [{ name: 'input', datatype: 'FP32', shape: [5, M], data: Array.from(rows) }],
        parameters: { explain: true, top_k: 2 },
      },
    });
    assert.equal(oip.status, 200, oip.text);
    oip.body.parameters.explanation.forEach((e: any, i: number) => {
      assert.deepEqual(e.contributions, r.body.explanations[i].contributions.slice(0, 2));
      locallyAccurate(e, `gbdt oip row ${i}`);
    });
  });

  test('a new reference for the version is what the next explanation is measured against', async () => {
    const shifted = syntheticRows(400, 5, 0.7);
    const put = await request(`${server.url}/admin/models/gbdt/versions/1/reference`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'text/csv' },
      body: csv(shifted.X, shifted.y),
    });
    assert.equal(put.status, 200, put.text);
    const rows = syntheticRows(1, 9).X;
    const r = await request(`${server.url}/v1/models/gbdt:explain`, { json: { instances: instances(rows, 1) } });
    assert.equal(r.status, 200, r.text);
    const e = r.body.explanations[0];
    assert.equal(e.reference_rows, 400);
    const local = inProcess(shifted.X);
    assert.ok(Math.abs(e.base_value - local.expected) < 1e-9, `base ${e.base_value} vs ${local.expected}`);
    assert.ok(Math.abs(e.base_value - inProcess(reference).expected) > 1e-3, 'the base moved with the reference');
    locallyAccurate(e, 'new reference');
  });

  test('KernelSHAP explains the net: every coalition of its 5 features enumerated over 50 background rows, locally accurate in log-odds', async () => {
    const rows = syntheticRows(2, 11).X;
    const body = { instances: [0, 1].map((i) => Object.fromEntries(names.slice(0, 5).map((f, j) => [f, rows[i * M + j]!]))) };
    const r = await request(`${server.url}/v1/models/net:explain`, { json: body });
    assert.equal(r.status, 200, r.text);
    for (const e of r.body.explanations) {
      assert.equal(e.method, 'kernel_shap');
      assert.equal(e.link, 'logit');
      assert.equal(e.kernel.exact, true);
      assert.equal(e.kernel.coalitions, 30);
      assert.equal(e.kernel.background_rows, 50);
      assert.equal(e.kernel.model_rows, 1500);
      assert.equal(e.kernel.max_standard_error, 0);
      assert.match(e.kernel.reason, /Tanh is not supported/);
      assert.ok(e.contributions.every((c: any) => c.standard_error === 0));
      locallyAccurate(e, 'net');
    }
    const p = await request(`${server.url}/v1/models/net:predict`, { json: body });
    r.body.explanations.forEach((e: any, i: number) => {
      assert.equal(e.score, p.body.predictions[i][0]);
    });
    // Reproducible: the same row gets the same reasons.
    const again = await request(`${server.url}/v1/models/net:explain`, { json: body });
    assert.deepEqual(again.body.explanations, r.body.explanations);
  });

  test('a version without reference rows answers 422 saying why, and still scores', async () => {
    const r = await request(`${server.url}/v1/models/noref:explain`, { json: { instances: [[1, 2, 3]] } });
    assert.equal(r.status, 422, r.text);
    assert.match(r.body.error, /model 'noref' version 1 has no reference rows, and explanations are measured against them/);
    assert.match(r.body.error, /PUT \/admin\/models\/noref\/versions\/1\/reference/);
    const oip = await request(`${server.url}/v2/models/noref/infer`, {
      json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }], parameters: { explain: true } },
    });
    assert.equal(oip.status, 422, oip.text);
    const plain = await request(`${server.url}/v1/models/noref:predict`, { json: { instances: [[1, 2, 3]] } });
    assert.equal(plain.status, 200, plain.text);
    const unknown = await request(`${server.url}/v1/models/nothere:explain`, { json: { instances: [[1]] } });
    assert.equal(unknown.status, 404);
  });
});
