// Two pieces of the one-row request path, each against what it replaced, in one run:
//   - the tree engine against onnxruntime's session.run on bench:http's GBDT (150 trees of depth 3,
//     61 features), at 1 and 64 rows, with the answers checked to be identical first;
//   - reading an OIP body with scanOip + decodeScanned against JSON.parse + decodeOip, for the GBDT
//     row (61 features) and the demo row (10 features);
//   - gRPC ModelInfer's hand-written codec against @grpc/proto-loader's (with the service's options):
//     reading the one-row request, typed and raw, and writing the demo's answer.
// Median of several rounds, on one thread.
//
//   npm run bench:request-path -- [--no-write]

import { mkdtempSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNativeSession, Tensor } from '../src/inference/ort.js';
import { planTrees } from '../src/inference/tree-plan.js';
import { firstDifference, probeRows, TreeRunner } from '../src/inference/tree-runner.js';
import { datatypeFromOrt, type TensorData } from '../src/inference/tensor.js';
import type { TensorPayload } from '../src/inference/session.js';
import { scanOip } from '../src/server/fast-oip.js';
import { decodeModelInferRequest, encodeModelInferResponse } from '../src/server/grpc-codec.js';
import type { ModelInferResponse } from '../src/server/grpc-infer.js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { GBDT_FEATURES, GBDT_NAME, writeGbdtRepository } from './gbdt.js';
import { table, writeSection } from './results.js';

const ROUNDS = 9;

function median(n: number, fn: () => void): number {
  for (let i = 0; i < n / 5; i++) fn();
  const samples: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    samples.push(Number(process.hrtime.bigint() - t0) / n / 1000);
  }
  return samples.sort((a, b) => a - b)[ROUNDS >> 1]!;
}

const dir = mkdtempSync(join(tmpdir(), 'scoreline-bench-path-'));
const gbdtRow = writeGbdtRepository(dir);
const bytes = readFileSync(join(dir, GBDT_NAME, '1', 'model.onnx'));
const planned = planTrees(bytes);
if (!planned.ok) throw new Error(`the bench GBDT is not planned: ${planned.reason}`);
const runner = new TreeRunner(planned.plan);
const session = createNativeSession(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential' });
const fetches = { label: null, probabilities: null };
const ort = (x: Float32Array, rows: number): TensorPayload[] => {
  const out = session.run({ input: new Tensor('float32', x, [rows, GBDT_FEATURES]) }, fetches, {});
  return ['label', 'probabilities'].map((name) => {
    const t = out[name]!;
    return { name, datatype: datatypeFromOrt(t.type)!, dims: t.dims, data: t.data as TensorData };
  });
};

const treeRows: string[][] = [];
const x = probeRows(planned.plan, 64, 7);
for (const rows of [1, 64]) {
  const input = x.subarray(0, rows * GBDT_FEATURES);
  const d = firstDifference(runner.run(input, rows), ort(input, rows));
  if (d !== null) throw new Error(`the engines disagree: ${d}`);
  const n = rows === 1 ? 20_000 : 1_000;
  const o = median(n, () => ort(input, rows));
  const t = median(n, () => runner.run(input, rows));
  treeRows.push([String(rows), o.toFixed(2), t.toFixed(2), (o / t).toFixed(2)]);
}

const DEMO_ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const readRows: string[][] = [];
for (const [label, row] of [
  [`GBDT, ${GBDT_FEATURES} features`, gbdtRow],
  ['demo, 10 features', DEMO_ROW],
] as const) {
  const text = JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, row.length], data: row }] });
  const buf = Buffer.from(text);
  const target = new Float32Array(row.length);
  let sink = 0;
  // Both end with the row in a Float32Array, as decoding into the batch does.
  const viaJson = median(20_000, () => {
    const body = JSON.parse(buf.toString('utf8')) as { inputs: { data: number[] }[] };
    const data = body.inputs[0]!.data;
    for (let i = 0; i < data.length; i++) target[i] = data[i]!;
    sink += target[0]!;
  });
  const viaScan = median(20_000, () => {
    const data = scanOip(buf)!.inputs[0]!.data;
    for (let i = 0; i < data.length; i++) target[i] = data[i]!;
    sink += target[0]!;
  });
  if (!(sink !== 0 || row[0] === 0)) throw new Error('unreachable');
  readRows.push([`${label} (${buf.length} bytes)`, viaJson.toFixed(2), viaScan.toFixed(2), (viaJson / viaScan).toFixed(2)]);
}

// gRPC: the same messages through both codecs (the answers checked to agree first).
const reference = (
  protoLoader.loadSync(fileURLToPath(new URL('../../src/server/proto/grpc_predict_v2.proto', import.meta.url)), {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    arrays: true,
    oneofs: true,
  })['inference.GRPCInferenceService'] as protoLoader.ServiceDefinition
).ModelInfer!;
const grpcRows: string[][] = [];
const typed = (row: readonly number[]) => ({
  model_name: 'credit-default',
  inputs: [{ name: 'input', datatype: 'FP32', shape: [1, row.length], contents: { fp32_contents: row } }],
});
const raw = (row: readonly number[]) => ({
  model_name: 'credit-default',
  inputs: [{ name: 'input', datatype: 'FP32', shape: [1, row.length] }],
  raw_input_contents: [Buffer.from(Float32Array.from(row).buffer)],
});
for (const [label, msg] of [
  ['read: demo request, typed contents', typed(DEMO_ROW)],
  ['read: demo request, raw contents', raw(DEMO_ROW)],
  [`read: GBDT request, typed contents`, typed(gbdtRow)],
] as const) {
  const wire = reference.requestSerialize(msg);
  const ours = decodeModelInferRequest(wire);
  const theirs = reference.requestDeserialize(wire) as typeof ours;
  if (
    JSON.stringify(ours.inputs![0]!.contents?.fp32_contents ?? ours.raw_input_contents) !==
    JSON.stringify(theirs.inputs![0]!.contents?.fp32_contents ?? theirs.raw_input_contents)
  )
    throw new Error(`the codecs read ${label} differently`);
  const p = median(50_000, () => reference.requestDeserialize(wire));
  const h = median(50_000, () => decodeModelInferRequest(wire));
  grpcRows.push([`${label} (${wire.length} bytes)`, p.toFixed(2), h.toFixed(2), (p / h).toFixed(2)]);
}
const answer: ModelInferResponse = {
  model_name: 'credit-default',
  model_version: '1',
  id: 'app-19',
  outputs: [
    { name: 'label', datatype: 'INT64', shape: [1], contents: { int64_contents: ['0'] } },
    { name: 'probabilities', datatype: 'FP32', shape: [1, 2], contents: { fp32_contents: [0.8302813768386841, 0.16971862316131592] } },
  ],
};
if (!encodeModelInferResponse(answer).equals(Buffer.from(reference.responseSerialize(answer))))
  throw new Error('the codecs write the answer differently');
{
  const p = median(50_000, () => reference.responseSerialize(answer));
  const h = median(50_000, () => encodeModelInferResponse(answer));
  grpcRows.push(['write: demo answer, typed contents', p.toFixed(2), h.toFixed(2), (p / h).toFixed(2)]);
}

const text =
  `Tree engine vs onnxruntime on bench:http's GBDT (150 trees of depth 3, 61 features), answers identical bit for bit:\n\n` +
  `${table(['rows per run', 'onnxruntime session.run (us)', 'tree engine (us)', 'ratio'], treeRows)}\n\n` +
  `Reading the one-row OIP body into float32 values:\n\n` +
  `${table(['body', 'JSON.parse (us)', 'scanOip (us)', 'ratio'], readRows)}\n\n` +
  `gRPC ModelInfer messages, @grpc/proto-loader's codec (the service's options) against scoreline's (grpc-codec.ts), the same objects:\n\n` +
  `${table(['message', 'proto-loader (us)', 'grpc-codec (us)', 'ratio'], grpcRows)}\n\n` +
  `One thread, median of ${ROUNDS} rounds. Load average at start: ${loadavg()[0]!.toFixed(2)}.`;
console.log(text);
if (!process.argv.includes('--no-write'))
  writeSection(
    'request-path',
    'The request path: tree engine vs onnxruntime, OIP byte reader vs JSON.parse, gRPC codec vs proto-loader',
    'npm run bench:request-path',
    text,
  );
