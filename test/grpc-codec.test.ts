// ModelInfer's hand-written wire codec against @grpc/proto-loader's (the reference, with the
// service's options): requests of every datatype, packed and unpacked, raw contents, parameters
// and unknown fields read alike; responses written by hand read back by proto-loader field for
// field; malformed bytes (every truncation of a request, wrong wire types, an endless varint,
// random bytes) are errors, never a hang or a wrong message.

import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import * as protoLoader from '@grpc/proto-loader';
import { decodeModelInferRequest, encodeModelInferResponse } from '../src/server/grpc-codec.js';
import type { ModelInferRequest, ModelInferResponse } from '../src/server/grpc-infer.js';
import { loadService } from '../src/server/grpc.js';

const PROTO = fileURLToPath(new URL('../../src/server/proto/grpc_predict_v2.proto', import.meta.url));
const reference = (
  protoLoader.loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: false, arrays: true, oneofs: true })[
    'inference.GRPCInferenceService'
  ] as protoLoader.ServiceDefinition
).ModelInfer!;

/** A decoded request as plain data, parameters left out (scoreline does not read them), absent strings as ''. */
function plain(req: ModelInferRequest): unknown {
  const contents = (c: Record<string, unknown> | null | undefined) =>
    c == null
      ? null
      : Object.fromEntries(
          Object.entries(c)
            .filter(([, v]) => Array.isArray(v) && v.length > 0)
            .map(([k, v]) => [k, (v as unknown[]).map((x) => (x instanceof Uint8Array ? [...x] : x))]),
        );
  return {
    model_name: req.model_name ?? '',
    model_version: req.model_version ?? '',
    id: req.id ?? '',
    inputs: (req.inputs ?? []).map((t) => ({
      name: t.name ?? '',
      datatype: t.datatype ?? '',
      shape: (t.shape ?? []).map(String),
      contents: contents(t.contents as Record<string, unknown> | null | undefined),
    })),
    outputs: (req.outputs ?? []).map((o) => ({ name: o.name ?? '' })),
    raw: (req.raw_input_contents ?? []).map((b) => [...b]),
  };
}

const parameters = { a: { bool_param: true }, b: { int64_param: '-5' }, c: { string_param: 'x' }, d: { double_param: 0.5 } };

const requests: Record<string, unknown>[] = [
  {
    model_name: 'credit-default',
    inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 10], contents: { fp32_contents: [0.1, -2, 3e38, 0, 1] } }],
  },
  {
    model_name: 'm',
    model_version: '7',
    id: 'req-é€😀',
    parameters,
    inputs: [
      { name: 'b', datatype: 'BOOL', shape: [3], contents: { bool_contents: [true, false, true] }, parameters },
      { name: 'i', datatype: 'INT32', shape: [4], contents: { int_contents: [0, -1, 2147483647, -2147483648] } },
      {
        name: 'l',
        datatype: 'INT64',
        shape: [4],
        contents: { int64_contents: ['0', '-1', '9223372036854775807', '-9223372036854775808'] },
      },
      { name: 'u', datatype: 'UINT32', shape: [3], contents: { uint_contents: [0, 127, 4294967295] } },
      { name: 'ul', datatype: 'UINT64', shape: [3], contents: { uint64_contents: ['0', '9007199254740993', '18446744073709551615'] } },
      { name: 'd', datatype: 'FP64', shape: [4], contents: { fp64_contents: [Math.PI, -0, Number.MAX_VALUE, 5e-324] } },
      {
        name: 's',
        datatype: 'BYTES',
        shape: [3],
        contents: { bytes_contents: [Buffer.from(''), Buffer.from('purpose=car'), Buffer.alloc(300, 7)] },
      },
      { name: 'shape', datatype: 'FP32', shape: ['-1', '9007199254740993', '0'], contents: { fp32_contents: [Infinity, -Infinity] } },
    ],
    outputs: [{ name: 'probabilities', parameters }, { name: 'label' }],
  },
  {
    model_name: 'raw',
    inputs: [
      { name: 'x', datatype: 'FP32', shape: [2, 2] },
      { name: 'y', datatype: 'BYTES', shape: [1] },
    ],
    raw_input_contents: [Buffer.from(Float32Array.of(1, 2, 3, 4).buffer), Buffer.from([1, 0, 0, 0, 65])],
  },
  {},
  { inputs: [{}], outputs: [{}] },
];

test('ModelInfer requests: the hand-written reader reads every field and datatype as proto-loader does', () => {
  for (const r of requests) {
    const bytes = reference.requestSerialize(r);
    assert.deepEqual(
      plain(decodeModelInferRequest(bytes)),
      plain(reference.requestDeserialize(bytes) as ModelInferRequest),
      JSON.stringify(r),
    );
  }
  // NaN stays NaN (deepEqual treats NaN as equal to itself), one float at a time.
  const nan = reference.requestSerialize({ inputs: [{ contents: { fp32_contents: [Number.NaN] } }] });
  assert.ok(Number.isNaN(decodeModelInferRequest(nan).inputs![0]!.contents!.fp32_contents![0]));
});

/** Protobuf wire bytes by hand: tag and value pieces. */
const varint = (v: number | bigint): number[] => {
  let x = BigInt.asUintN(64, BigInt(v));
  const out: number[] = [];
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return out;
};
const tag = (field: number, wt: number) => varint((field << 3) | wt);
const len = (field: number, body: number[]) => [...tag(field, 2), ...varint(body.length), ...body];
const f32 = (v: number) => [...Buffer.from(Float32Array.of(v).buffer)];
const f64 = (v: number) => [...Buffer.from(Float64Array.of(v).buffer)];

test('ModelInfer requests: unpacked repeated scalars, fields in any order, unknown fields of every wire type are read or skipped as protobuf says', () => {
  const contents = [
    ...tag(6, 5),
    ...f32(1.5),
    ...tag(6, 5),
    ...f32(-2),
    ...tag(2, 0),
    ...varint(-3),
    ...tag(3, 0),
    ...varint(-4n),
    ...tag(7, 1),
    ...f64(0.25),
    ...tag(1, 0),
    1,
    ...tag(99, 0),
    ...varint(12345),
    ...tag(98, 1),
    ...f64(1),
    ...tag(97, 5),
    ...f32(1),
    ...len(96, [1, 2, 3]),
  ];
  const input = [...len(5, contents), ...len(2, [...Buffer.from('FP32')]), ...len(1, [...Buffer.from('x')]), ...tag(3, 0), ...varint(2)];
  const bytes = Buffer.from([...len(5, input), ...len(3, [...Buffer.from('id-1')]), ...tag(50, 0), 1, ...len(1, [...Buffer.from('m')])]);
  const ours = decodeModelInferRequest(bytes);
  assert.deepEqual(plain(ours), plain(reference.requestDeserialize(bytes) as ModelInferRequest));
  assert.deepEqual(ours.inputs![0]!.contents!.fp32_contents, [1.5, -2]);
  assert.deepEqual(ours.inputs![0]!.contents!.int_contents, [-3]);
  assert.deepEqual(ours.inputs![0]!.contents!.int64_contents, ['-4']);
  assert.deepEqual(ours.inputs![0]!.shape, ['2']);
  assert.equal(ours.model_name, 'm');
});

test('ModelInfer requests: malformed bytes are errors, never a hang or a wrong message', () => {
  const full = reference.requestSerialize(requests[1]!);
  // Every cut inside a field fails; a cut between top-level fields is a shorter valid message.
  let failed = 0;
  for (let n = 1; n < full.length; n++) {
    try {
      decodeModelInferRequest(full.subarray(0, n));
    } catch (e) {
      assert.ok(e instanceof Error);
      failed++;
    }
  }
  assert.ok(failed > full.length * 0.9, `${failed} of ${full.length - 1} truncations refused`);
  const bad: [string, number[], RegExp][] = [
    ['model_name as a varint', [...tag(1, 0), 5], /field model_name has wire type 0/],
    ['inputs as fixed32', [...tag(5, 5), 0, 0, 0, 0], /field inputs has wire type 5/],
    ['bytes_contents as a varint', len(5, len(5, [...tag(8, 0), 1])), /bytes_contents has wire type 0/],
    ['fp32_contents as a varint', len(5, len(5, [...tag(6, 0), 1])), /fp32_contents has wire type 0/],
    ['a packed float cut short', len(5, len(5, len(6, [0, 0, 0]))), /not a whole number of floats/],
    ['a length past the end', [...tag(1, 2), 100, 65], /ends inside a field/],
    ['an 11-byte varint', [...tag(99, 0), ...Array(10).fill(0xff), 1], /longer than 10 bytes/],
    ['wire type 7', [...tag(9, 7)], /wire type 7/],
  ];
  for (const [what, bytes, message] of bad) assert.throws(() => decodeModelInferRequest(Buffer.from(bytes)), message, what);
  // Random bytes: decoded or refused, in bounded time.
  let seed = 42;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let k = 0; k < 2000; k++) {
    const b = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 64) }, () => Math.floor(random() * 256)));
    try {
      decodeModelInferRequest(b);
    } catch (e) {
      assert.ok(e instanceof Error);
    }
  }
});

const responses: ModelInferResponse[] = [
  {
    model_name: 'credit-default',
    model_version: '1',
    id: 'abc-123',
    outputs: [
      { name: 'probabilities', datatype: 'FP32', shape: [1, 2], contents: { fp32_contents: [0.30000001192092896, 0.699999988079071] } },
      { name: 'label', datatype: 'INT64', shape: [1], contents: { int64_contents: ['1'] } },
    ],
  },
  {
    model_name: 'every',
    model_version: '12',
    id: 'é€😀',
    outputs: [
      { name: 'b', datatype: 'BOOL', shape: [2], contents: { bool_contents: [true, false] } },
      { name: 'i', datatype: 'INT32', shape: [3], contents: { int_contents: [-1, 0, 2147483647] } },
      { name: 'l', datatype: 'INT64', shape: [3], contents: { int64_contents: ['-9223372036854775808', '9223372036854775807', '-2'] } },
      { name: 'u', datatype: 'UINT32', shape: [2], contents: { uint_contents: [4294967295, 300] } },
      { name: 'ul', datatype: 'UINT64', shape: [2], contents: { uint64_contents: ['18446744073709551615', '9007199254740993'] } },
      { name: 'd', datatype: 'FP64', shape: [2], contents: { fp64_contents: [Math.E, -1e300] } },
      { name: 's', datatype: 'BYTES', shape: [3], contents: { bytes_contents: [Buffer.from(''), Buffer.from('a'), Buffer.alloc(200, 1)] } },
      { name: 'big', datatype: 'FP32', shape: [2 ** 40, 0], contents: { fp32_contents: [] } },
    ],
  },
  {
    model_name: 'raw',
    model_version: '1',
    id: '',
    outputs: [{ name: 'x', datatype: 'FP32', shape: [2] }],
    raw_output_contents: [Buffer.from(Float32Array.of(1, 2).buffer)],
  },
];

test('ModelInfer responses: the hand-written writer is read back by proto-loader field for field', () => {
  // Larger than the writer's 64 KiB scratch (it grows), then past 1 MiB (it shrinks back after), then small again.
  const large: ModelInferResponse[] = [70_000, 300_000].map((n) => ({
    model_name: 'large',
    model_version: '1',
    id: String(n),
    outputs: [{ name: 'p', datatype: 'FP32', shape: [n], contents: { fp32_contents: Array.from({ length: n }, (_, i) => i / 8) } }],
  }));
  large.push({ ...responses[2]!, raw_output_contents: [Buffer.alloc(3 << 20, 9)] });
  for (const res of [...large, ...responses]) {
    const bytes = encodeModelInferResponse(res);
    const back = reference.responseDeserialize(bytes) as Record<string, unknown> & ModelInferResponse;
    assert.equal(back.model_name ?? '', res.model_name);
    assert.equal(back.model_version ?? '', res.model_version);
    assert.equal(back.id ?? '', res.id);
    assert.equal(back.outputs.length, res.outputs.length);
    res.outputs.forEach((o, k) => {
      const b = back.outputs[k]!;
      assert.equal(b.name, o.name);
      assert.equal(b.datatype, o.datatype);
      assert.deepEqual(b.shape.map(String), o.shape.map(String));
      for (const [field, values] of Object.entries(o.contents ?? {})) {
        const got = (b.contents as Record<string, unknown[]> | undefined)?.[field] ?? [];
        assert.deepEqual(
          got.map((v) => (v instanceof Uint8Array ? [...v] : v)),
          (values as unknown[]).map((v) => (v instanceof Uint8Array ? [...v] : v)),
          `${o.name}.${field}`,
        );
      }
    });
    assert.deepEqual(
      (back.raw_output_contents ?? []).map((b) => [...b]),
      (res.raw_output_contents ?? []).map((b) => [...b]),
    );
  }
});

test('the service reads and writes ModelInfer with the hand-written codec, and every other call with proto-loader', () => {
  const service = loadService();
  // A message that cannot be read reaches the handler with the reason, answered there as a bad request.
  assert.deepEqual(service.ModelInfer!.requestDeserialize(Buffer.from([0x0a, 5, 0x41])), { malformed: 'the message ends inside a field' });
  assert.equal(service.ModelInfer!.requestDeserialize(reference.requestSerialize(requests[0]!)).model_name, 'credit-default');
  assert.equal(service.ModelInfer!.responseSerialize, encodeModelInferResponse);
  assert.equal(service.ModelInfer!.path, '/inference.GRPCInferenceService/ModelInfer');
  assert.notEqual(service.ModelMetadata!.requestDeserialize, service.ModelInfer!.requestDeserialize);
});
