// The pieces of OIP over gRPC and of BYTES tensors that need no server: the HTTP -> gRPC status
// table, raw BYTES framing both ways (and its malformed forms), string tensors in the JSON codec,
// exact 64-bit integers, raw numeric values checked like JSON ones, grpc.port in the config and
// --grpc-port on the command line, and a second server refused on a taken gRPC port.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { resolveConfig } from '../src/config.js';
import { serveConfig } from '../src/cli.js';
import { checkRawValues, jsonElements, jsValues, makeTensorData, writeInt64Element, writeTensorData } from '../src/inference/index.js';
import { grpcCodeOf, GRPC_CODES, loadService } from '../src/server/grpc.js';
import { joinRawBytes, splitRawBytes } from '../src/server/grpc-infer.js';
import { writeSumModel } from './fixtures/models.js';
import { CLI, startServer, tempDir } from './e2e/server.js';

test('every HTTP status scoreline answers has its gRPC code', () => {
  const expected: Record<number, status> = {
    400: status.INVALID_ARGUMENT,
    401: status.UNAUTHENTICATED,
    403: status.PERMISSION_DENIED,
    404: status.NOT_FOUND,
    413: status.INVALID_ARGUMENT,
    422: status.INVALID_ARGUMENT,
    429: status.RESOURCE_EXHAUSTED,
    500: status.INTERNAL,
    503: status.UNAVAILABLE,
    504: status.DEADLINE_EXCEEDED,
  };
  for (const [http, code] of Object.entries(expected)) assert.equal(grpcCodeOf(Number(http)), code, `HTTP ${http}`);
  // Every status the error module can produce is in the table, not left to the fallback.
  for (const http of [400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503, 504, 507])
    assert.ok(GRPC_CODES[http] !== undefined, `HTTP ${http}`);
  assert.equal(grpcCodeOf(502), status.INTERNAL);
  assert.equal(grpcCodeOf(418), status.INVALID_ARGUMENT);
});

test('the service is the OIP one, loaded from the proto inside the package', () => {
  const service = loadService();
  assert.deepEqual(Object.keys(service).sort(), [
    'ModelInfer',
    'ModelMetadata',
    'ModelReady',
    'ServerLive',
    'ServerMetadata',
    'ServerReady',
  ]);
  assert.equal(service.ModelInfer!.path, '/inference.GRPCInferenceService/ModelInfer');
});

test('raw BYTES: a 4-byte little-endian length before each element, both ways; malformed framing is a 400', () => {
  const values = ['', 'a', 'purpose=car', 'é€', 'x'.repeat(300)];
  const raw = joinRawBytes(values);
  assert.equal(
    raw.length,
    values.reduce((n, v) => n + 4 + Buffer.byteLength(v), 0),
  );
  assert.deepEqual([...raw.subarray(0, 9)], [0, 0, 0, 0, 1, 0, 0, 0, 0x61]);
  assert.equal(raw.readUInt32LE(raw.length - 304), 300);
  assert.deepEqual(
    splitRawBytes(raw, 'w').map((b) => Buffer.from(b).toString('utf8')),
    values,
  );
  assert.deepEqual(splitRawBytes(new Uint8Array(0), 'w'), []);
  const err = (bytes: number[], message: RegExp) =>
    assert.throws(
      () => splitRawBytes(Uint8Array.from(bytes), "input 'w'"),
      (e: { status: number; message: string }) => e.status === 400 && message.test(e.message),
    );
  err([1, 0, 0], /input 'w': raw BYTES content ends inside the length of element 0/);
  err([2, 0, 0, 0, 65], /element 0 declares 2 bytes but only 1 remain/);
  err([0, 0, 0, 0, 5, 0, 0, 0, 65], /element 1 declares 5 bytes/);
});

test('BYTES tensors: strings in, strings out as JSON, anything else refused', () => {
  const t = makeTensorData('BYTES', 4) as string[];
  assert.deepEqual(t, ['', '', '', '']);
  assert.equal(writeTensorData([['car'], ['vacation']], 'BYTES', t, 1, [2, 1], "input 'purpose'"), 2);
  assert.deepEqual(t, ['', 'car', 'vacation', '']);
  assert.equal(jsonElements(t, 'BYTES', 1, 3), '"car","vacation"');
  assert.equal(jsonElements(['say "hi"\n'], 'BYTES', 0, 1), '"say \\"hi\\"\\n"');
  assert.deepEqual(jsValues(t, 'BYTES', 0, 2), ['', 'car']);
  assert.throws(
    () => writeTensorData([1], 'BYTES', t, 0, [1], "input 'purpose'"),
    (e: { status: number; message: string }) => e.status === 400 && /input 'purpose': element 1 is not a string/.test(e.message),
  );
  assert.throws(() => writeTensorData([null], 'BYTES', t, 0, [1], 'x'), /element null is not a string/);
});

test('64-bit integers are exact over their whole range; raw floats must be finite and raw BOOL bytes 0 or 1', () => {
  const i64 = makeTensorData('INT64', 2) as BigInt64Array;
  writeInt64Element('9223372036854775807', 'INT64', i64, 0, 'x');
  writeInt64Element('-9223372036854775808', 'INT64', i64, 1, 'x');
  assert.deepEqual([...i64], [2n ** 63n - 1n, -(2n ** 63n)]);
  const u64 = makeTensorData('UINT64', 1) as BigUint64Array;
  writeInt64Element('18446744073709551615', 'UINT64', u64, 0, 'x');
  assert.equal(u64[0], 2n ** 64n - 1n);
  assert.throws(
    () => writeInt64Element('-1', 'UINT64', u64, 0, "input 'u'"),
    (e: { status: number; message: string }) => e.status === 422 && /input 'u': value -1 is out of range for UINT64/.test(e.message),
  );
  assert.throws(() => writeInt64Element('9223372036854775808', 'INT64', i64, 0, 'x'), /out of range for INT64/);
  assert.throws(
    () => writeInt64Element('1.5', 'INT64', i64, 0, 'x'),
    (e: { status: number }) => e.status === 400,
  );

  checkRawValues(Float32Array.of(1, -3.4e38, 0), 'FP32', 0, 3, 'x');
  assert.throws(
    () => checkRawValues(Float32Array.of(1, Infinity), 'FP32', 0, 2, "input 'x'"),
    (e: { status: number; message: string }) =>
      e.status === 422 && /input 'x': element 1 is Infinity, not a finite FP32 number/.test(e.message),
  );
  assert.throws(() => checkRawValues(Float64Array.of(0, 0, NaN), 'FP64', 1, 3, 'x'), /element 1 is NaN, not a finite FP64/);
  // Only the request's own range [start, end) is checked.
  checkRawValues(Float32Array.of(NaN, 2), 'FP32', 1, 2, 'x');
  assert.throws(() => checkRawValues(Uint8Array.of(1, 0, 2), 'BOOL', 0, 3, 'b'), /element 2 is 2; a BOOL byte must be 0 or 1/);
  checkRawValues(Int32Array.of(-2147483648), 'INT32', 0, 1, 'x');
});

test('grpc.port: 8081 by default, any port, 0, or null / false for none; --grpc-port N|off', () => {
  assert.equal(resolveConfig({}).grpc.port, 8081);
  assert.equal(resolveConfig({ grpc: { port: 0 } }).grpc.port, 0);
  assert.equal(resolveConfig({ grpc: { port: null } }).grpc.port, null);
  assert.equal(resolveConfig({ grpc: { port: false } }).grpc.port, false);
  assert.throws(() => resolveConfig({ grpc: { port: 70000 } }), /grpc\.port/);
  assert.throws(() => resolveConfig({ grpc: { port: true } }), /grpc\.port/);
  assert.throws(() => resolveConfig({ grpc: { host: 'x' } }), /grpc: unknown property 'host'/);
  assert.equal(serveConfig(['--model-repo', 'examples/models', '--grpc-port', '9001'])!.grpc.port, 9001);
  assert.equal(serveConfig(['--model-repo', 'examples/models', '--grpc-port', 'off'])!.grpc.port, false);
  const bad = spawnSync(process.execPath, [CLI, 'serve', '--model-repo', 'examples/models', '--grpc-port', 'abc'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--grpc-port must be a non-negative integer, got 'abc'/);
});

test('a second server on a taken gRPC port fails at start naming it; with gRPC off there is no gRPC port', async () => {
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 1);
  const first = await startServer(['--model-repo', repo, '--workers', '0']);
  const off = await startServer(['--model-repo', repo, '--workers', '0', '--grpc-port', 'off']);
  try {
    assert.equal(off.grpcPort, null);
    assert.match(off.logs.join('\n'), /scoreline listening on http:\/\/127\.0\.0\.1:\d+"/, 'the listening line names no gRPC port');
    await assert.rejects(startServer(['--model-repo', repo, '--workers', '0', '--grpc-port', String(first.grpcPort)]), (e: Error) => {
      assert.match(e.message, new RegExp(`cannot listen for gRPC on 127\\.0\\.0\\.1:${first.grpcPort}: port ${first.grpcPort} is in use`));
      assert.match(e.message, /server exited with 1 before listening/);
      return true;
    });
  } finally {
    assert.equal(await first.stop(), 0);
    assert.equal(await off.stop(), 0);
  }
});
