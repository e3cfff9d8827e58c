// Open Inference Protocol conformance and numeric correctness against a real server: every REST
// endpoint, responses validated with ajv against the OpenAPI schemas of the spec, exact values for
// every datatype, id echo, output filter, batched and nested data, versions, and v1 :predict.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import YAML from 'yaml';
import {
  DTYPES_EXAMPLE,
  dtypesExpected,
  sumExpected,
  writeDtypesModel,
  writeFixedBatchModel,
  writeLogisticModel,
  writeSumModel,
  type LogisticFixture,
} from '../fixtures/models.js';
import { ROOT, request, startServer, tempDir, type TestServer } from './server.js';

const spec = YAML.parse(readFileSync(`${ROOT}/test/fixtures/open_inference_rest.yaml`, 'utf8')) as { components: object };
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addSchema({ $id: 'oip', components: spec.components });
const schema = (name: string) => ajv.getSchema(`oip#/components/schemas/${name}`)!;

function conforms(name: string, body: unknown): void {
  const validate = schema(name);
  assert.ok(validate(body), `${name}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body)}`);
}

let server: TestServer;
let logistic: LogisticFixture;

before(async () => {
  const repo = await tempDir();
  await writeDtypesModel(repo);
  await writeSumModel(repo, 'sum', 1);
  await writeSumModel(repo, 'sum', 2);
  await writeFixedBatchModel(repo);
  logistic = await writeLogisticModel(repo, 'logistic', 1, { modelYaml: { features: ['f0', 'f1', 'f2'], batching: { maxBatchSize: 8 } } });
  server = await startServer(['--model-repo', repo, '--workers', '1']);
});

after(async () => {
  assert.equal(await server.stop(), 0);
});

const infer = (model: string, body: unknown, version?: string) =>
  request(`${server.url}/v2/models/${model}${version ? `/versions/${version}` : ''}/infer`, { json: body });

describe('health and metadata', () => {
  test('server metadata', async () => {
    const r = await request(`${server.url}/v2`);
    assert.equal(r.status, 200);
    conforms('metadata_server_response', r.body);
    assert.equal(r.body.name, 'scoreline');
    assert.deepEqual(r.body.extensions, []);
  });

  test('live and ready', async () => {
    assert.deepEqual((await request(`${server.url}/v2/health/live`)).body, { live: true });
    const ready = await request(`${server.url}/v2/health/ready`);
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { ready: true });
  });

  test('model metadata lists datatypes, shapes with -1 and every version', async () => {
    const r = await request(`${server.url}/v2/models/dtypes`);
    assert.equal(r.status, 200);
    conforms('metadata_model_response', r.body);
    assert.deepEqual(r.body, {
      name: 'dtypes',
      versions: ['1'],
      platform: 'onnx_onnxv1',
      inputs: [
        { name: 'f32', datatype: 'FP32', shape: [-1, 3] },
        { name: 'f64', datatype: 'FP64', shape: [-1, 2] },
        { name: 'i32', datatype: 'INT32', shape: [-1, 2] },
        { name: 'i64', datatype: 'INT64', shape: [-1, 2] },
        { name: 'b', datatype: 'BOOL', shape: [-1, 2] },
      ],
      outputs: [
        { name: 'f32_out', datatype: 'FP32', shape: [-1, 3] },
        { name: 'f64_out', datatype: 'FP64', shape: [-1, 2] },
        { name: 'i32_out', datatype: 'INT32', shape: [-1, 2] },
        { name: 'i64_out', datatype: 'INT64', shape: [-1, 2] },
        { name: 'b_out', datatype: 'BOOL', shape: [-1, 2] },
      ],
    });
    const v = await request(`${server.url}/v2/models/sum/versions/2`);
    conforms('metadata_model_response', v.body);
    assert.deepEqual(v.body.versions, ['1', '2']);
    const fixed = await request(`${server.url}/v2/models/fixed`);
    assert.deepEqual(fixed.body.inputs, [{ name: 'x', datatype: 'FP32', shape: [1, 3] }]);
  });

  test('model readiness, with and without a version', async () => {
    assert.deepEqual((await request(`${server.url}/v2/models/sum/ready`)).body, { name: 'sum', ready: true });
    const r = await request(`${server.url}/v2/models/sum/versions/1/ready`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { name: 'sum', ready: true });
    assert.equal((await request(`${server.url}/v2/models/sum/versions/9/ready`)).status, 404);
    assert.equal((await request(`${server.url}/v2/models/nope/ready`)).status, 404);
  });

  test('v1 model list and status', async () => {
    const list = await request(`${server.url}/v1/models`);
    assert.deepEqual(list.body.models.sort(), ['dtypes', 'fixed', 'logistic', 'sum']);
    assert.deepEqual((await request(`${server.url}/v1/models/logistic`)).body, { name: 'logistic', ready: true });
  });
});

describe('inference', () => {
  test('every datatype gives the exact expected values, id echoed, model_version set', async () => {
    const r = await infer('dtypes', {
      id: 'req-42',
      inputs: [
        { name: 'f32', datatype: 'FP32', shape: [2, 3], data: DTYPES_EXAMPLE.f32 },
        { name: 'f64', datatype: 'FP64', shape: [2, 2], data: DTYPES_EXAMPLE.f64 },
        { name: 'i32', datatype: 'INT32', shape: [2, 2], data: DTYPES_EXAMPLE.i32 },
        { name: 'i64', datatype: 'INT64', shape: [2, 2], data: DTYPES_EXAMPLE.i64 },
        { name: 'b', datatype: 'BOOL', shape: [2, 2], data: DTYPES_EXAMPLE.b },
      ],
    });
    assert.equal(r.status, 200, r.text);
    conforms('inference_response', r.body);
    assert.equal(r.body.id, 'req-42');
    assert.equal(r.body.model_name, 'dtypes');
    assert.equal(r.body.model_version, '1');
    const expected = dtypesExpected(DTYPES_EXAMPLE);
    const byName = Object.fromEntries(r.body.outputs.map((o: any) => [o.name, o]));
    assert.deepEqual(byName.f32_out, { name: 'f32_out', datatype: 'FP32', shape: [2, 3], data: expected.f32_out });
    assert.deepEqual(byName.f64_out, { name: 'f64_out', datatype: 'FP64', shape: [2, 2], data: expected.f64_out });
    assert.deepEqual(byName.i32_out, { name: 'i32_out', datatype: 'INT32', shape: [2, 2], data: expected.i32_out });
    assert.deepEqual(byName.i64_out, { name: 'i64_out', datatype: 'INT64', shape: [2, 2], data: expected.i64_out });
    assert.deepEqual(byName.b_out, { name: 'b_out', datatype: 'BOOL', shape: [2, 2], data: expected.b_out });
  });

  test('outputs filter returns only the named outputs, in the requested order', async () => {
    const r = await infer('dtypes', {
      inputs: [
        { name: 'f32', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] },
        { name: 'f64', datatype: 'FP64', shape: [1, 2], data: [1, 2] },
        { name: 'i32', datatype: 'INT32', shape: [1, 2], data: [1, 2] },
        { name: 'i64', datatype: 'INT64', shape: [1, 2], data: [1, 2] },
        { name: 'b', datatype: 'BOOL', shape: [1, 2], data: [true, true] },
      ],
      outputs: [{ name: 'b_out' }, { name: 'i32_out' }],
    });
    assert.equal(r.status, 200, r.text);
    conforms('inference_response', r.body);
    // no id in the request: the server names it (predictions are logged under it for feedback)
    assert.match(r.body.id, /^[0-9a-f]{12}-[0-9a-z]{6,}$/);
    assert.deepEqual(
      r.body.outputs.map((o: any) => [o.name, o.data]),
      [
        ['b_out', [false, false]],
        ['i32_out', [3, 6]],
      ],
    );
  });

  test('flat and nested data give the same answer; batch [N, F] splits back per row', async () => {
    const rows = [
      [1, 2, 3, 4],
      [0.5, -0.5, 0.25, 0.75],
      [-8, 0, 0, 0],
    ];
    const flat = await infer('sum', { inputs: [{ name: 'x', datatype: 'FP32', shape: [3, 4], data: rows.flat() }] });
    const nested = await infer('sum', { inputs: [{ name: 'x', datatype: 'FP32', shape: [3, 4], data: rows }] });
    assert.equal(flat.status, 200, flat.text);
    conforms('inference_response', flat.body);
    assert.deepEqual(flat.body.outputs, nested.body.outputs);
    assert.deepEqual(flat.body.outputs[0], { name: 'y', datatype: 'FP32', shape: [3, 1], data: sumExpected(rows, 2) });
  });

  test('without a version the highest is used; a version in the path selects it', async () => {
    const body = { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 1, 1, 1] }] };
    const latest = await infer('sum', body);
    assert.equal(latest.body.model_version, '2');
    assert.deepEqual(latest.body.outputs[0].data, [8]);
    const v1 = await infer('sum', body, '1');
    assert.equal(v1.body.model_version, '1');
    assert.deepEqual(v1.body.outputs[0].data, [4]);
  });

  test('a model without a dynamic batch dimension is served one tensor at a time', async () => {
    const r = await infer('fixed', { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3], data: [1, -2.5, 40] }] });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.outputs[0], { name: 'y', datatype: 'FP32', shape: [1, 3], data: [2, -1.5, 41] });
  });

  test('logistic probabilities match the float64 reference to 1e-6', async () => {
    const rows = [
      [1, 10, 0],
      [3, 15, 1],
      [-3, 0, -2],
      [0.5, 12, 0.3],
    ];
    const r = await infer('logistic', { inputs: [{ name: 'input', datatype: 'FP32', shape: [4, 3], data: rows }] });
    assert.equal(r.status, 200, r.text);
    const probs = r.body.outputs.find((o: any) => o.name === 'probabilities').data as number[];
    const labels = r.body.outputs.find((o: any) => o.name === 'label').data as number[];
    rows.forEach((row, i) => {
      const p = logistic.expectedProbability(row);
      assert.ok(Math.abs(probs[2 * i + 1]! - p) < 1e-6, `row ${i}: ${probs[2 * i + 1]} vs ${p}`);
      assert.ok(Math.abs(probs[2 * i]! - (1 - p)) < 1e-6);
      assert.equal(labels[i], p > 0.5 ? 1 : 0);
    });
  });
});

describe('v1 :predict', () => {
  test('instances as rows and as named features give the same predictions', async () => {
    const rows = [
      [1, 10, 0],
      [3, 15, 1],
    ];
    const asRows = await request(`${server.url}/v1/models/logistic:predict`, { json: { instances: rows } });
    assert.equal(asRows.status, 200, asRows.text);
    const named = await request(`${server.url}/v1/models/logistic:predict`, {
      json: { instances: rows.map(([f0, f1, f2]) => ({ f2, f0, f1 })) },
    });
    assert.equal(named.status, 200, named.text);
    assert.deepEqual(named.body.predictions, asRows.body.predictions);
    assert.notEqual(named.body.request_id, asRows.body.request_id);
    assert.equal(asRows.body.model_version, '1');
    assert.equal(asRows.body.predictions.length, 2);
    rows.forEach((row, i) => {
      const pred = asRows.body.predictions[i];
      const p = logistic.expectedProbability(row);
      assert.equal(pred.label, p > 0.5 ? 1 : 0);
      assert.ok(Math.abs(pred.probabilities[1] - p) < 1e-6);
    });
  });

  test('single-output model: one value per row; versioned path', async () => {
    const r = await request(`${server.url}/v1/models/sum/versions/1:predict`, { json: { instances: [[1, 2, 3, 4]] } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(
      { ...r.body, request_id: undefined },
      { predictions: [[10]], model_name: 'sum', model_version: '1', request_id: undefined },
    );
  });

  test('named-feature errors say which instance and feature', async () => {
    const missing = await request(`${server.url}/v1/models/logistic:predict`, { json: { instances: [{ f0: 1, f1: 2 }] } });
    assert.equal(missing.status, 400);
    assert.match(missing.body.error, /instance 0 is missing feature 'f2'/);
    const unknown = await request(`${server.url}/v1/models/logistic:predict`, { json: { instances: [{ f0: 1, f1: 2, f2: 3, f9: 1 }] } });
    assert.equal(unknown.status, 400);
    assert.match(unknown.body.error, /unknown feature 'f9'/);
    // More instances than maxBatchSize (8) are served, in order: batching splits them, it does not refuse them.
    const many = Array.from({ length: 19 }, (_, i) => [i / 4, 10 + i, i % 3]);
    const big = await request(`${server.url}/v1/models/logistic:predict`, { json: { instances: many } });
    assert.equal(big.status, 200, big.text);
    assert.equal(big.body.predictions.length, 19);
    many.forEach((row, i) => {
      assert.ok(Math.abs(big.body.predictions[i].probabilities[1] - logistic.expectedProbability(row)) < 1e-6, `instance ${i}`);
    });
  });
});
