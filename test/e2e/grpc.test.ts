// The Open Inference Protocol over gRPC against a real server, with a client made only from the
// proto (@grpc/proto-loader + @grpc/grpc-js, no server code): all six RPCs, exact values for every
// datatype typed and raw (int64 beyond 2^53 too), BYTES, batched rows in order, versions, errors
// with their gRPC codes and the scoreline status in trailers, the client's deadline, a canary's
// step statistics and A/B stickiness counted from gRPC calls, route="grpc" in the metrics, feedback
// joined to a prediction made over gRPC, and a drain that finishes calls in flight while refusing
// new ones with UNAVAILABLE.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { stringify } from 'yaml';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import {
  DTYPES_EXAMPLE,
  dtypesExpected,
  sumExpected,
  writeDtypesModel,
  writeLogisticModel,
  writeSlowModel,
  writeSumModel,
  writeWordsModel,
  wordsExpected,
} from '../fixtures/models.js';
import { request, ROOT, startServer, tempDir, type JsonResponse, type TestServer } from './server.js';
import { waitFor } from '../fixtures/wait.js';

// The client knows the service from the .proto alone.
const definition = protoLoader.loadSync(join(ROOT, 'src/server/proto/grpc_predict_v2.proto'), {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  arrays: true,
});
const Service = (grpc.loadPackageDefinition(definition) as any).inference.GRPCInferenceService as typeof grpc.Client;

let server: TestServer;
let client: any;
let token: string;
let copyVersion: number;

interface CallError {
  code: grpc.status;
  details: string;
  trailers: Record<string, string>;
}

/** A unary call: its answer, or its error with the trailers flattened. */
function call<T = any>(
  method: string,
  req: unknown,
  opts: { deadlineMs?: number; metadata?: Record<string, string> } = {},
): Promise<T | CallError> {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  const options = opts.deadlineMs === undefined ? {} : { deadline: Date.now() + opts.deadlineMs };
  return new Promise((resolve) =>
    client[method](req, md, options, (err: grpc.ServiceError | null, res: T) => {
      if (err === null) return resolve(res);
      const trailers: Record<string, string> = {};
      for (const [k, v] of Object.entries(err.metadata?.getMap() ?? {})) trailers[k] = String(v);
      resolve({ code: err.code, details: err.details, trailers });
    }),
  );
}

const ok = async <T = any>(method: string, req: unknown, opts?: Parameters<typeof call>[2]): Promise<T> => {
  const r = await call<T>(method, req, opts);
  if (isError(r)) assert.fail(`${method} failed: ${grpc.status[r.code]} ${r.details}`);
  return r as T;
};
const isError = (r: unknown): r is CallError => typeof r === 'object' && r !== null && 'code' in r && 'details' in r;

async function fails(method: string, req: unknown, code: grpc.status, httpStatus: number | null, details: RegExp): Promise<CallError> {
  const r = await call(method, req);
  assert.ok(isError(r), `${method} should fail with ${grpc.status[code]}`);
  assert.equal(grpc.status[r.code], grpc.status[code], r.details);
  assert.match(r.details, details);
  if (httpStatus !== null) assert.equal(r.trailers['scoreline-http-status'], String(httpStatus));
  return r;
}

// Raw tensor contents, as the spec lays them out: flat, row-major, little-endian; BYTES with a
// 4-byte little-endian length before each element.
const le = (a: Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array): Buffer => {
  const out = Buffer.alloc(a.byteLength);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < a.length; i++) {
    if (a instanceof Float32Array) view.setFloat32(i * 4, a[i]!, true);
    else if (a instanceof Float64Array) view.setFloat64(i * 8, a[i]!, true);
    else if (a instanceof Int32Array) view.setInt32(i * 4, a[i]!, true);
    else if (a instanceof BigInt64Array) view.setBigInt64(i * 8, a[i]!, true);
    else view.setUint8(i, a[i]!);
  }
  return out;
};
const rawStrings = (values: readonly string[]): Buffer =>
  Buffer.concat(
    values.flatMap((v) => {
      const len = Buffer.alloc(4);
      len.writeUInt32LE(Buffer.byteLength(v));
      return [len, Buffer.from(v)];
    }),
  );
function parseRawStrings(b: Buffer): string[] {
  const out: string[] = [];
  for (let at = 0; at < b.length; ) {
    const n = b.readUInt32LE(at);
    out.push(b.subarray(at + 4, at + 4 + n).toString('utf8'));
    at += 4 + n;
  }
  return out;
}
const readF32 = (b: Buffer) => Array.from({ length: b.length / 4 }, (_, i) => b.readFloatLE(i * 4));

const sumRequest = (rows: number[][], extra: Record<string, unknown> = {}) => ({
  model_name: 'sum',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [rows.length, 4], contents: { fp32_contents: rows.flat() } }],
  ...extra,
});

const admin = (method: string, path: string, init: { json?: unknown; bytes?: Uint8Array } = {}) =>
  request(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(init.bytes ? { 'content-type': 'application/octet-stream' } : {}) },
    ...(init.json !== undefined ? { json: init.json } : {}),
    ...(init.bytes ? { body: init.bytes } : {}),
  });

const metrics = async () => (await fetch(`${server.url}/metrics`)).text();
const metric = (text: string, line: RegExp): number => Number(line.exec(text)?.[1] ?? 0);

before(async () => {
  const dir = await tempDir();
  const repo = join(dir, 'models');
  await writeDtypesModel(repo);
  await writeSumModel(repo, 'sum', 1, { modelYaml: { batching: { maxBatchSize: 8, maxQueueSize: 4000 } } });
  await writeSumModel(repo, 'sum', 2);
  await writeLogisticModel(repo, 'logistic', 1, { modelYaml: { features: ['f0', 'f1', 'f2'], task: 'classification' } });
  await writeSlowModel(repo, 'slow', 1, 1200, { modelYaml: { batching: { maxBatchSize: 64, maxQueueSize: 128 } } });
  await writeWordsModel(repo, 'words', 1);
  const config = join(dir, 'server.yaml');
  writeFileSync(
    config,
    stringify({ server: { maxBodyBytes: 1024 * 1024 }, limits: { maxRowsPerRequest: 500 }, deploy: { analysisTickMs: 100 } }),
  );
  const dataDir = join(dir, 'data');
  server = await startServer(['--model-repo', repo, '--data-dir', dataDir, '--config', config, '--workers', '1']);
  token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  assert.ok(server.grpcPort !== null && server.grpcPort > 0, 'the listening line names the gRPC port');
  client = new Service(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
  // Sum v1 again under another version number (other bytes, same scores): a canary that scores like stable.
  const g = new GraphBuilder('sum');
  g.input('x', 'FP32', [-1, 4]);
  g.initializer('axes', 'INT64', [1], BigInt64Array.of(1n));
  g.node('ReduceSum', ['x', 'axes'], ['y'], { keepdims: 1 });
  g.output('y', 'FP32', [-1, 1]);
  const r = await admin('POST', '/admin/models/sum/versions', { bytes: g.toModelBytes({ docString: 'sum, canary copy' }) });
  assert.equal(r.status, 201, r.text);
  copyVersion = r.body.version;
});

after(async () => {
  client?.close();
  await server?.stop();
});

test('health and metadata: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata', async () => {
  assert.deepEqual(await ok('ServerLive', {}), { live: true });
  assert.deepEqual(await ok('ServerReady', {}), { ready: true });
  const meta = await ok('ServerMetadata', {});
  assert.equal(meta.name, 'scoreline');
  assert.match(meta.version, /^\d+\.\d+\.\d+/);
  assert.deepEqual(meta.extensions, []);
  assert.deepEqual(await ok('ModelReady', { name: 'sum', version: '1' }), { ready: true });
  assert.deepEqual(await ok('ModelReady', { name: 'sum' }), { ready: true });
  await fails('ModelReady', { name: 'nope' }, grpc.status.NOT_FOUND, 404, /model 'nope' is not known/);
  await fails('ModelReady', { name: 'sum', version: '9' }, grpc.status.NOT_FOUND, 404, /model 'sum' has no version '9'/);
  const m = await ok('ModelMetadata', { name: 'words' });
  assert.equal(m.name, 'words');
  assert.deepEqual(m.versions, ['1']);
  assert.equal(m.platform, 'onnx_onnxv1');
  assert.deepEqual(m.inputs, [
    { name: 'x', datatype: 'FP32', shape: ['-1', '2'] },
    { name: 'w', datatype: 'BYTES', shape: ['-1', '1'] },
  ]);
  assert.deepEqual(m.outputs, [
    { name: 'y', datatype: 'FP32', shape: ['-1', '1'] },
    { name: 'w_out', datatype: 'BYTES', shape: ['-1', '1'] },
  ]);
  // Loaded versions, as over HTTP (the registered copy loads when a deployment uses it).
  const sum = await ok('ModelMetadata', { name: 'sum' });
  assert.deepEqual(sum.versions, ['1', '2']);
});

const dtypesInputs = (i64: string[]) => [
  { name: 'f32', datatype: 'FP32', shape: [2, 3], contents: { fp32_contents: DTYPES_EXAMPLE.f32 } },
  { name: 'f64', datatype: 'FP64', shape: [2, 2], contents: { fp64_contents: DTYPES_EXAMPLE.f64 } },
  { name: 'i32', datatype: 'INT32', shape: [2, 2], contents: { int_contents: DTYPES_EXAMPLE.i32 } },
  { name: 'i64', datatype: 'INT64', shape: [2, 2], contents: { int64_contents: i64 } },
  { name: 'b', datatype: 'BOOL', shape: [2, 2], contents: { bool_contents: DTYPES_EXAMPLE.b } },
];

test('ModelInfer with typed contents: every datatype exact, int64 beyond 2^53, the id echoed, outputs filtered', async () => {
  const i64 = ['0', '-5', '9007199254740993', '-9223372036854775808'];
  const r = await ok('ModelInfer', { model_name: 'dtypes', id: 'typed-1', inputs: dtypesInputs(i64) });
  assert.equal(r.model_name, 'dtypes');
  assert.equal(r.model_version, '1');
  assert.equal(r.id, 'typed-1');
  assert.deepEqual(r.raw_output_contents, []);
  const expected = dtypesExpected(DTYPES_EXAMPLE);
  const out = Object.fromEntries(r.outputs.map((o: any) => [o.name, o]));
  assert.deepEqual(out.f32_out.shape, ['2', '3']);
  assert.deepEqual(out.f32_out.contents.fp32_contents, expected.f32_out);
  assert.deepEqual(out.f64_out.contents.fp64_contents, expected.f64_out);
  assert.deepEqual(out.i32_out.contents.int_contents, expected.i32_out);
  // int64 - 1, computed by onnxruntime on the exact values (-2^63 - 1 wraps).
  assert.deepEqual(out.i64_out.contents.int64_contents, ['-1', '-6', '9007199254740992', '9223372036854775807']);
  assert.deepEqual(out.b_out.contents.bool_contents, expected.b_out);

  const filtered = await ok('ModelInfer', {
    model_name: 'dtypes',
    inputs: dtypesInputs(['1', '2', '3', '4']),
    outputs: [{ name: 'i64_out' }],
  });
  assert.deepEqual(
    filtered.outputs.map((o: any) => o.name),
    ['i64_out'],
  );
  assert.deepEqual(filtered.outputs[0].contents.int64_contents, ['0', '1', '2', '3']);
  assert.match(filtered.id, /^[0-9a-f]{12}-[0-9a-z]{6}$/, 'a request without an id gets a generated one');
});

test('ModelInfer with raw_input_contents is answered with raw_output_contents, same values', async () => {
  const r = await ok('ModelInfer', {
    model_name: 'dtypes',
    inputs: dtypesInputs([]).map(({ contents: _, ...t }) => t),
    raw_input_contents: [
      le(Float32Array.from(DTYPES_EXAMPLE.f32)),
      le(Float64Array.from(DTYPES_EXAMPLE.f64)),
      le(Int32Array.from(DTYPES_EXAMPLE.i32)),
      le(BigInt64Array.from(['0', '-5', '9007199254740993', '42'], BigInt)),
      le(Uint8Array.from(DTYPES_EXAMPLE.b, (v) => (v ? 1 : 0))),
    ],
  });
  const expected = dtypesExpected(DTYPES_EXAMPLE);
  assert.equal(r.raw_output_contents.length, 5);
  assert.ok(
    r.outputs.every((o: any) => o.contents === null),
    'raw answers carry no typed contents',
  );
  const raw = Object.fromEntries(r.outputs.map((o: any, i: number) => [o.name, r.raw_output_contents[i] as Buffer]));
  assert.deepEqual(readF32(raw.f32_out), expected.f32_out);
  assert.deepEqual(
    Array.from({ length: 4 }, (_, i) => raw.f64_out.readDoubleLE(i * 8)),
    expected.f64_out,
  );
  assert.deepEqual(
    Array.from({ length: 4 }, (_, i) => raw.i32_out.readInt32LE(i * 4)),
    expected.i32_out,
  );
  assert.deepEqual(
    Array.from({ length: 4 }, (_, i) => raw.i64_out.readBigInt64LE(i * 8)),
    [-1n, -6n, 9007199254740992n, 41n],
  );
  assert.deepEqual(
    Array.from(raw.b_out, (v) => v === 1),
    expected.b_out,
  );
});

test('batched rows, typed and raw, come back in order; versions are routed by model_version', async () => {
  const rows = Array.from({ length: 100 }, (_, i) => [i, i / 2, -i, 0.25]);
  const typed = await ok('ModelInfer', sumRequest(rows, { model_version: '1' }));
  assert.deepEqual(typed.outputs[0].shape, ['100', '1']);
  assert.deepEqual(typed.outputs[0].contents.fp32_contents, sumExpected(rows, 1));
  const raw = await ok('ModelInfer', {
    model_name: 'sum',
    model_version: '2',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [100, 4] }],
    raw_input_contents: [le(Float32Array.from(rows.flat()))],
  });
  assert.equal(raw.model_version, '2');
  assert.deepEqual(readF32(raw.raw_output_contents[0]), sumExpected(rows, 2));
  // Many calls at once, batched together by the server, each answered with its own rows.
  const answers = await Promise.all(
    Array.from({ length: 40 }, (_, k) => ok('ModelInfer', sumRequest([[k, 1, 2, 3]], { model_version: '1', id: `b-${k}` }))),
  );
  answers.forEach((a, k) => {
    assert.equal(a.id, `b-${k}`);
    assert.deepEqual(a.outputs[0].contents.fp32_contents, sumExpected([[k, 1, 2, 3]], 1));
  });
});

test('BYTES: strings typed (bytes_contents) and raw (length-prefixed), string outputs, over gRPC and OIP JSON alike', async () => {
  const x = [
    [1, 2],
    [0.5, 0.25],
    [3, 4],
    [-1, 1],
  ];
  const w = ['a', 'c', 'zzz', 'é'];
  const expected = x.map((row, i) => wordsExpected(row, w[i]!));
  const typed = await ok('ModelInfer', {
    model_name: 'words',
    inputs: [
      { name: 'x', datatype: 'FP32', shape: [4, 2], contents: { fp32_contents: x.flat() } },
      { name: 'w', datatype: 'BYTES', shape: [4, 1], contents: { bytes_contents: w.map((s) => Buffer.from(s)) } },
    ],
  });
  assert.deepEqual(typed.outputs[0].contents.fp32_contents, expected);
  assert.equal(typed.outputs[1].datatype, 'BYTES');
  assert.deepEqual(
    typed.outputs[1].contents.bytes_contents.map((b: Buffer) => b.toString('utf8')),
    w,
  );
  const raw = await ok('ModelInfer', {
    model_name: 'words',
    inputs: [
      { name: 'x', datatype: 'FP32', shape: [4, 2] },
      { name: 'w', datatype: 'BYTES', shape: [4, 1] },
    ],
    raw_input_contents: [le(Float32Array.from(x.flat())), rawStrings(w)],
  });
  assert.deepEqual(readF32(raw.raw_output_contents[0]), expected);
  assert.deepEqual(parseRawStrings(raw.raw_output_contents[1]), w);
  const json = await request(`${server.url}/v2/models/words/infer`, {
    json: {
      inputs: [
        { name: 'x', datatype: 'FP32', shape: [4, 2], data: x.flat() },
        { name: 'w', datatype: 'BYTES', shape: [4, 1], data: w },
      ],
    },
  });
  assert.equal(json.status, 200, json.text);
  assert.deepEqual(json.body.outputs[0].data, expected);
  assert.deepEqual(json.body.outputs[1], { name: 'w_out', datatype: 'BYTES', shape: [4, 1], data: w });
  const v1 = await request(`${server.url}/v1/models/words:predict`, {
    json: {
      instances: [
        { x: [1, 2], w: ['b'] },
        { x: [0, 0], w: 'c' },
      ],
    },
  });
  assert.equal(v1.status, 200, v1.text);
  assert.deepEqual(v1.body.predictions, [
    { y: [wordsExpected([1, 2], 'b')], w_out: ['b'] },
    { y: [3], w_out: ['c'] },
  ]);
  const notString = await request(`${server.url}/v2/models/words/infer`, {
    json: {
      inputs: [
        { name: 'x', datatype: 'FP32', shape: [1, 2], data: [1, 2] },
        { name: 'w', datatype: 'BYTES', shape: [1, 1], data: [7] },
      ],
    },
  });
  assert.equal(notString.status, 400);
  assert.match(notString.body.error, /input 'w': element 7 is not a string/);
  await fails(
    'ModelInfer',
    {
      model_name: 'words',
      inputs: [
        { name: 'x', datatype: 'FP32', shape: [1, 2], contents: { fp32_contents: [1, 2] } },
        { name: 'w', datatype: 'BYTES', shape: [1, 1], contents: { bytes_contents: [Buffer.from([0xc3, 0x28])] } },
      ],
    },
    grpc.status.INVALID_ARGUMENT,
    400,
    /input 'w': element 0 is not valid UTF-8/,
  );
  await fails(
    'ModelInfer',
    {
      model_name: 'words',
      inputs: [
        { name: 'x', datatype: 'FP32', shape: [1, 2] },
        { name: 'w', datatype: 'BYTES', shape: [1, 1] },
      ],
      raw_input_contents: [le(Float32Array.of(1, 2)), Buffer.from([9, 0, 0, 0, 65])],
    },
    grpc.status.INVALID_ARGUMENT,
    400,
    /raw BYTES element 0 declares 9 bytes but only 1 remain/,
  );
});

test('errors have their gRPC codes, the scoreline status in trailers, and change nothing', async () => {
  const before = await metrics();
  await fails('ModelInfer', sumRequest([[1, 2, 3, 4]], { model_name: 'nope' }), grpc.status.NOT_FOUND, 404, /model 'nope' is not known/);
  await fails(
    'ModelInfer',
    sumRequest([[1, 2, 3, 4]], { model_version: '7' }),
    grpc.status.NOT_FOUND,
    404,
    /model 'sum' has no version '7'/,
  );
  await fails(
    'ModelInfer',
    { ...sumRequest([[1, 2, 3, 4]]), model_name: '' },
    grpc.status.INVALID_ARGUMENT,
    400,
    /"model_name" is required/,
  );
  const bad = (inputs: unknown[], extra: Record<string, unknown> = {}) => ({ model_name: 'sum', model_version: '1', inputs, ...extra });
  await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP64', shape: [1, 4], contents: { fp64_contents: [1, 2, 3, 4] } }]),
    grpc.status.INVALID_ARGUMENT,
    422,
    /datatype FP64 does not match the model's FP32/,
  );
  await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [1, 5], contents: { fp32_contents: [1, 2, 3, 4, 5] } }]),
    grpc.status.INVALID_ARGUMENT,
    422,
    /shape \[1, 5\] does not fit the model's \[-1, 4\]/,
  );
  await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [2, 4], contents: { fp32_contents: [1, 2, 3, 4] } }]),
    grpc.status.INVALID_ARGUMENT,
    400,
    /contents.fp32_contents has 4 values but the shape \[2, 4\] needs 8/,
  );
  await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [1, 4], contents: { fp64_contents: [1, 2, 3, 4] } }]),
    grpc.status.INVALID_ARGUMENT,
    400,
    /FP32 data goes in contents.fp32_contents, not contents.fp64_contents/,
  );
  await fails(
    'ModelInfer',
    bad([{ name: 'y', datatype: 'FP32', shape: [1, 4], contents: { fp32_contents: [1, 2, 3, 4] } }]),
    grpc.status.INVALID_ARGUMENT,
    422,
    /model 'sum' has no input 'y'/,
  );
  await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [1, 4], contents: { fp32_contents: [1, 2, 3, 4] } }], {
      raw_input_contents: [le(Float32Array.of(1, 2, 3, 4))],
    }),
    grpc.status.INVALID_ARGUMENT,
    400,
    /has contents while the request uses raw_input_contents/,
  );
  await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [1, 4] }], { raw_input_contents: [le(Float32Array.of(1, 2, 3))] }),
    grpc.status.INVALID_ARGUMENT,
    400,
    /raw content has 12 bytes but the shape \[1, 4\] of FP32 needs 16/,
  );
  await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [1, 4] }], { raw_input_contents: [le(Float32Array.of(1, NaN, 3, 4))] }),
    grpc.status.INVALID_ARGUMENT,
    422,
    /element 1 is NaN, not a finite FP32 number/,
  );
  await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [1, 4], contents: { fp32_contents: [1, Infinity, 3, 4] } }]),
    grpc.status.INVALID_ARGUMENT,
    422,
    /value Infinity is not a finite FP32 number/,
  );
  await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [1, 4], contents: { fp32_contents: [1, 2, 3, 4] } }], { outputs: [{ name: 'z' }] }),
    grpc.status.INVALID_ARGUMENT,
    422,
    /model 'sum' has no output 'z'/,
  );
  await fails(
    'ModelInfer',
    {
      model_name: 'dtypes',
      inputs: dtypesInputs([]).map(({ contents: _, ...t }) => t),
      raw_input_contents: [
        le(new Float32Array(6)),
        le(new Float64Array(4)),
        le(new Int32Array(4)),
        le(new BigInt64Array(4)),
        Buffer.from([0, 1, 2, 0]),
      ],
    },
    grpc.status.INVALID_ARGUMENT,
    422,
    /input 'b': element 2 is 2; a BOOL byte must be 0 or 1/,
  );
  // More rows than limits.maxRowsPerRequest: refused whole, INVALID_ARGUMENT (it can never succeed, so not RESOURCE_EXHAUSTED).
  const tooMany = await fails(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [501, 4], contents: { fp32_contents: new Array(501 * 4).fill(1) } }]),
    grpc.status.INVALID_ARGUMENT,
    413,
    /holds 501 rows, more than limits.maxRowsPerRequest \(500\)/,
  );
  assert.equal(tooMany.trailers['scoreline-code'], 'TOO_MANY_ROWS');
  // A message over server.maxBodyBytes never reaches scoreline: grpc-js refuses it.
  const huge = await call(
    'ModelInfer',
    bad([{ name: 'x', datatype: 'FP32', shape: [400, 4] }], { raw_input_contents: [Buffer.alloc(2 * 1024 * 1024)] }),
  );
  assert.ok(isError(huge) && huge.code === grpc.status.RESOURCE_EXHAUSTED, JSON.stringify(huge));

  // Bytes that are not a ModelInferRequest: INVALID_ARGUMENT with the reason, not grpc-js's bare INTERNAL.
  const garbage = await new Promise<CallError | null>((resolve) => {
    const raw = new grpc.Client(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
    const same = (b: Buffer) => b;
    raw.makeUnaryRequest('/inference.GRPCInferenceService/ModelInfer', same, same, Buffer.from([0x0a, 100, 0x41]), (err) => {
      raw.close();
      const trailers: Record<string, string> = {};
      for (const [k, v] of Object.entries(err?.metadata?.getMap() ?? {})) trailers[k] = String(v);
      resolve(err === null ? null : { code: err.code, details: err.details, trailers });
    });
  });
  assert.ok(garbage !== null, 'garbage bytes are refused');
  assert.equal(grpc.status[garbage.code], 'INVALID_ARGUMENT', garbage.details);
  assert.match(garbage.details, /the message is not a ModelInferRequest: the message ends inside a field/);
  assert.equal(garbage.trailers['scoreline-http-status'], '400');

  const after = await metrics();
  // Unknown model or version, a missing name and the unreadable message: before any version; the rest charged to sum v1 as 4xx on route grpc.
  const unrouted = /^scoreline_unrouted_requests_total\{route="grpc",status="4xx"\} (\d+)$/m;
  assert.equal(metric(after, unrouted) - metric(before, unrouted), 4);
  const charged = /^scoreline_requests_total\{model="sum",version="1",variant="explicit",route="grpc",status="4xx"\} (\d+)$/m;
  assert.equal(metric(after, charged) - metric(before, charged), 11);
  // Nothing was computed for any of them, and the server still answers.
  const ok1 = await ok('ModelInfer', sumRequest([[1, 2, 3, 4]], { model_version: '1' }));
  assert.deepEqual(ok1.outputs[0].contents.fp32_contents, [10]);
});

test('the queue sheds load with RESOURCE_EXHAUSTED and retry-after; the client deadline is the request deadline', async () => {
  const row = new Array(256).fill(1);
  const slow = (rows: number, id: string, deadlineMs?: number) =>
    call(
      'ModelInfer',
      {
        model_name: 'slow',
        id,
        inputs: [{ name: 'x', datatype: 'FP32', shape: [rows, 256], contents: { fp32_contents: new Array(rows).fill(row).flat() } }],
      },
      deadlineMs === undefined ? {} : { deadlineMs },
    );
  // 128 rows may wait (maxQueueSize): 64-row calls beyond what runs and waits are refused.
  const burst = await Promise.all(Array.from({ length: 8 }, (_, k) => slow(64, `burst-${k}`)));
  const shed = burst.filter(isError);
  assert.ok(shed.length > 0, 'some calls were refused');
  for (const e of shed) {
    assert.equal(grpc.status[e.code], 'RESOURCE_EXHAUSTED', e.details);
    assert.equal(e.trailers['retry-after'], '1');
    assert.equal(e.trailers['scoreline-http-status'], '429');
  }
  assert.ok(
    burst.some((r) => !isError(r)),
    'the queue still served what it took',
  );

  // Behind two long batches (both pipeline slots of the one worker) and a third waiting for a slot, a
  // call waits in the queue for at least one whole batch, and a deadline shorter than that drops it
  // at the server (504), not computed after the client gave up. The deadline is a share of a batch's
  // measured time, so a fast machine cannot finish the batches ahead of it in time.
  const t0 = Date.now();
  assert.ok(!isError(await slow(64, 'timing')));
  const batchMs = Date.now() - t0;
  const before = await metrics();
  const busy = [slow(64, 'busy-1'), slow(64, 'busy-2')];
  await waitFor(async () => /^scoreline_inference_batches_in_flight 2$/m.test(await metrics()), {
    timeoutMs: 10_000,
    intervalMs: 0,
    message: 'the two long batches to start',
  });
  busy.push(slow(64, 'busy-3'));
  await waitFor(async () => /^scoreline_inference_queue_depth\{model="slow",version="1"\} 1$/m.test(await metrics()), {
    timeoutMs: 10_000,
    intervalMs: 0,
    message: 'the third batch to queue',
  });
  const late = await slow(1, 'late', Math.max(20, Math.min(250, Math.floor(batchMs / 2))));
  assert.ok(isError(late) && late.code === grpc.status.DEADLINE_EXCEEDED, JSON.stringify(late));
  for (const b of await Promise.all(busy)) assert.ok(!isError(b), JSON.stringify(b));
  const fivexx = /^scoreline_requests_total\{model="slow",version="1",variant="default",route="grpc",status="5xx"\} (\d+)$/m;
  const twoxx = /^scoreline_requests_total\{model="slow",version="1",variant="default",route="grpc",status="2xx"\} (\d+)$/m;
  let now = '';
  await waitFor(
    async () => {
      now = await metrics();
      return metric(now, fivexx) - metric(before, fivexx) >= 1;
    },
    {
      timeoutMs: 10_000,
      intervalMs: 10,
      message: 'the server to record the expired call as 504',
    },
  );
  assert.equal(metric(now, fivexx) - metric(before, fivexx), 1);
  assert.equal(metric(now, twoxx) - metric(before, twoxx), 3, 'only the three long calls were computed');
});

test('a canary counts gRPC calls in its step statistics; route="grpc" per variant in the metrics', async () => {
  const deploy = async (spec: unknown) => {
    const r = await admin('PUT', '/admin/deployments/sum', { json: spec });
    assert.equal(r.status, 200, r.text);
  };
  await deploy({ strategy: 'canary', stable: 1, canary: copyVersion, percent: 50, steps: [100], stepSeconds: 3600 });
  const before = await metrics();
  const answers = await Promise.all(Array.from({ length: 80 }, (_, k) => ok('ModelInfer', sumRequest([[k, 0, 0, 0]]))));
  const versions = new Set(answers.map((a) => a.model_version));
  assert.deepEqual([...versions].sort(), ['1', String(copyVersion)].sort(), 'both variants served');
  const view = (await admin('GET', '/admin/deployments/sum')).body;
  const stats = view.step_stats;
  // Only gRPC traffic since the deployment: the step statistics count exactly those calls.
  assert.equal(stats['1'].requests + stats[String(copyVersion)].requests, 80);
  assert.equal(stats[String(copyVersion)].requests, answers.filter((a) => a.model_version === String(copyVersion)).length);
  const after = await metrics();
  const canary = new RegExp(
    `^scoreline_requests_total\\{model="sum",version="${copyVersion}",variant="canary",route="grpc",status="2xx"\\} (\\d+)$`,
    'm',
  );
  const stable = /^scoreline_requests_total\{model="sum",version="1",variant="stable",route="grpc",status="2xx"\} (\d+)$/m;
  assert.equal(metric(after, canary) - metric(before, canary) + metric(after, stable) - metric(before, stable), 80);
  assert.match(after, /^scoreline_request_duration_seconds_count\{model="sum",version="1",variant="stable",route="grpc"\} [1-9]/m);

  // A/B sticky by a metadata header: a user always lands on the same variant, over gRPC as over HTTP.
  await deploy({
    strategy: 'ab',
    variants: [
      { name: 'a', version: 1, weight: 50 },
      { name: 'b', version: 2, weight: 50 },
    ],
    stickyKey: 'header:x-user-id',
  });
  const seen = new Map<string, Set<string>>();
  for (let u = 0; u < 30; u++) {
    const got = await Promise.all(
      Array.from({ length: 4 }, () => ok('ModelInfer', sumRequest([[1, 1, 1, 1]]), { metadata: { 'x-user-id': `user-${u}` } })),
    );
    seen.set(`user-${u}`, new Set(got.map((a) => a.model_version)));
  }
  for (const [user, vs] of seen) assert.equal(vs.size, 1, `${user} saw ${[...vs]}`);
  const onB = [...seen.values()].filter((s) => s.has('2')).length;
  assert.ok(onB > 3 && onB < 27, `variant b got ${onB} of 30 users`);
  const [user, vs] = [...seen][0]!;
  const http = await request(`${server.url}/v2/models/sum/infer`, {
    headers: { 'x-user-id': user },
    json: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 1, 1, 1] }] },
  });
  assert.equal(http.body.model_version, [...vs][0]);
  await deploy({ strategy: 'direct', version: 1 });
});

test('feedback joins a prediction made over gRPC by its id, rows of a batched call by id/row', async () => {
  const answer = await ok('ModelInfer', {
    model_name: 'logistic',
    id: 'grpc-feedback-1',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [2, 3], contents: { fp32_contents: [1, 10, 0, 3, 15, 1] } }],
  });
  assert.equal(answer.id, 'grpc-feedback-1');
  let r: JsonResponse | undefined;
  await waitFor(
    async () => {
      r = await request(`${server.url}/v1/feedback`, {
        json: [
          { request_id: 'grpc-feedback-1/0', label: 1 },
          { request_id: 'grpc-feedback-1/1', label: 0 },
        ],
      });
      assert.equal(r.status, 200, r.text);
      return r.body.joined === 2;
    },
    { timeoutMs: 10_000, intervalMs: 50, message: () => `the feedback to join both rows: ${r?.text}` },
  );
  assert.equal(r!.body.unknown, 0);
});

test('draining: a call in flight is answered, a new call is refused with UNAVAILABLE, the server exits 0', async () => {
  const row = new Array(256).fill(1);
  let done = false;
  const inflight = call('ModelInfer', {
    model_name: 'slow',
    id: 'drain',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [64, 256], contents: { fp32_contents: new Array(64).fill(row).flat() } }],
  }).then((r) => {
    done = true;
    return r;
  });
  // Wait until the server is computing it.
  await waitFor(async () => /^scoreline_inference_batches_in_flight [1-9]/m.test(await metrics()), {
    timeoutMs: 10_000,
    intervalMs: 0,
    message: 'the slow call to start',
  });
  server.proc.kill('SIGTERM');
  const refused = await waitFor(
    async () => {
      const r = await call('ModelInfer', sumRequest([[1, 2, 3, 4]], { model_version: '1' }));
      return isError(r) ? r : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 0, message: 'new calls to be refused once draining' },
  );
  assert.equal(grpc.status[refused.code], 'UNAVAILABLE');
  assert.match(refused.details, /shutting down/);
  assert.equal(done, false, 'refused while the slow call was still in flight');
  const answer = await inflight;
  assert.ok(!isError(answer), JSON.stringify(answer));
  assert.equal(answer.id, 'drain');
  assert.equal(await server.exited, 0);
});
