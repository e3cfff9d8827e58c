// The bundled credit-purpose model served end to end: the categorical `purpose` goes in as a string
// over gRPC (typed and raw), OIP JSON and v1 named-feature instances, every answer equals
// onnxruntime's own run of the model file, and /v1/monitoring reports the purpose's CSI against
// the bundled reference's categories, equal to the PSI formula applied to the shares sent.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import ort from 'onnxruntime-node';
import { DEMO_REPO, request, ROOT, startServer, type TestServer } from './server.js';

const MODEL = join(DEMO_REPO, 'credit-purpose');
const FEATURES = [
  'duration_months',
  'amount',
  'age',
  'income',
  'employment_years',
  'credit_history_months',
  'existing_loans',
  'debt_to_income',
  'txn_count_24h',
  'late_payments_90d',
];

let server: TestServer;
let client: any;
const lines = readFileSync(join(MODEL, 'reference.csv'), 'utf8').trimEnd().split('\n');
const header = lines[0]!.split(',');
const reference = lines.slice(1).map((l) => l.split(','));
// Traffic: 100 reference rows, their purposes replaced to a known mix (one the model never saw).
const MIX = [
  ...new Array(40).fill('business'),
  ...new Array(30).fill('car'),
  ...new Array(10).fill('education'),
  ...new Array(20).fill('boat'),
];
const rows = reference.slice(0, 100).map((r) => r.slice(0, 10).map(Number));

before(async () => {
  server = await startServer(['--model-repo', DEMO_REPO, '--workers', '1']);
  const def = protoLoader.loadSync(join(ROOT, 'src/server/proto/grpc_predict_v2.proto'), {
    keepCase: true,
    longs: String,
    defaults: true,
    arrays: true,
  });
  const Service = (grpc.loadPackageDefinition(def) as any).inference.GRPCInferenceService;
  client = new Service(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
});

after(async () => {
  client?.close();
  await server?.stop();
});

const infer = (req: unknown): Promise<any> =>
  new Promise((resolve, reject) => client.ModelInfer(req, (e: Error | null, r: unknown) => (e ? reject(e) : resolve(r))));

test('purpose as a string over every transport scores as onnxruntime does; CSI of purpose against the reference', async () => {
  assert.deepEqual(header.slice(0, 11), [...FEATURES, 'purpose']);
  const session = await ort.InferenceSession.create(readFileSync(join(MODEL, '1', 'model.onnx')));
  const direct = await session.run({
    input: new ort.Tensor('float32', Float32Array.from(rows.flat()), [rows.length, 10]),
    purpose: new ort.Tensor('string', MIX, [rows.length, 1]),
  });
  const expected = Array.from(direct.probabilities!.data as Float32Array);

  const typed = await infer({
    model_name: 'credit-purpose',
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [rows.length, 10], contents: { fp32_contents: rows.flat() } },
      { name: 'purpose', datatype: 'BYTES', shape: [rows.length, 1], contents: { bytes_contents: MIX.map((p) => Buffer.from(p)) } },
    ],
  });
  assert.deepEqual(typed.outputs[1].contents.fp32_contents, expected);

  const raw = await infer({
    model_name: 'credit-purpose',
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [rows.length, 10] },
      { name: 'purpose', datatype: 'BYTES', shape: [rows.length, 1] },
    ],
    raw_input_contents: [
      Buffer.from(Float32Array.from(rows.flat()).buffer),
      Buffer.concat(MIX.flatMap((p) => [Buffer.from([p.length, 0, 0, 0]), Buffer.from(p)])),
    ],
  });
  const rawProbs = raw.raw_output_contents[1] as Buffer;
  assert.deepEqual(
    Array.from({ length: rawProbs.length / 4 }, (_, i) => rawProbs.readFloatLE(i * 4)),
    expected,
  );

  const json = await request(`${server.url}/v2/models/credit-purpose/infer`, {
    json: {
      inputs: [
        { name: 'input', datatype: 'FP32', shape: [rows.length, 10], data: rows.flat() },
        { name: 'purpose', datatype: 'BYTES', shape: [rows.length, 1], data: MIX },
      ],
    },
  });
  assert.equal(json.status, 200, json.text);
  assert.deepEqual(json.body.outputs[1].data, expected);

  // v1: one object per application, purpose by name beside the numeric features.
  const instances = rows.map((r, i) => ({ ...Object.fromEntries(FEATURES.map((f, j) => [f, r[j]])), purpose: MIX[i] }));
  const v1 = await request(`${server.url}/v1/models/credit-purpose:predict`, { json: { instances } });
  assert.equal(v1.status, 200, v1.text);
  assert.deepEqual(
    v1.body.predictions.map((p: any) => p.probabilities),
    Array.from({ length: rows.length }, (_, i) => expected.slice(2 * i, 2 * i + 2)),
  );

  // An instance without its category is refused, naming it.
  const missing = await request(`${server.url}/v1/models/credit-purpose:predict`, {
    json: { instances: [{ ...instances[0], purpose: undefined }] },
  });
  assert.equal(missing.status, 400);
  assert.match(missing.body.error, /instance 0 is missing feature 'purpose'/);

  // CSI: the reference's purpose shares (all 5,000 rows) against the 4 x 100 rows sent.
  const col = header.indexOf('purpose');
  const categories = [...new Set(reference.map((r) => r[col]!))].sort();
  const refShares = [...categories.map((c) => reference.filter((r) => r[col] === c).length / reference.length), 0];
  const curShares = [
    ...categories.map((c) => MIX.filter((p) => p === c).length / MIX.length),
    MIX.filter((p) => !categories.includes(p)).length / MIX.length,
  ];
  const csi = refShares.reduce((s, r, i) => {
    const rr = Math.max(r, 1e-4);
    const cc = Math.max(curShares[i]!, 1e-4);
    return s + (cc - rr) * Math.log(cc / rr);
  }, 0);
  const snap = (await request(`${server.url}/v1/monitoring/credit-purpose`)).body;
  const purpose = snap.drift.features.purpose;
  assert.equal(purpose.n, 4 * rows.length);
  assert.equal(purpose.missing_rate, 0);
  assert.ok(Math.abs(purpose.psi - csi) < 1e-5, `purpose CSI ${purpose.psi}, expected ${csi}`);
  assert.ok(csi > 1, 'an unseen purpose in a fifth of the traffic is a large shift');
  assert.equal(snap.drift.features.income.n, 4 * rows.length, 'the numeric features of the same rows');
});
