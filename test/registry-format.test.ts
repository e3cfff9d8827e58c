// Tests for judging model files by content (src/registry/format.ts): real ONNX from the fixture
// writers is accepted with its signature; pickles of every protocol, joblib dumps (zlib, gzip,
// bz2, xz, lz4, old 'ZF') and arbitrary bytes are refused with the reason and the conversion hint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync, gzipSync } from 'node:zlib';
import onnxProto from 'onnx-proto';
import { GraphBuilder } from '../src/inference/onnx-writer.js';
import { assertOnnx, detectFormat } from '../src/registry/format.js';
import type { ScorelineError } from '../src/errors.js';
import { writeDtypesModel, writeFixedBatchModel, writeGatherModel, writeLogisticModel, writeSumModel } from './fixtures/models.js';
import { PICKLE_4 } from './fixtures/registry.js';

const { onnx } = onnxProto;

const PICKLE_0 = Buffer.from('(dp0\nVa\np1\nI1\ns.', 'latin1'); // pickle.dumps({'a': 1}, 0)
const PICKLE_1 = Buffer.from(']q\x00(K\x01K\x02e.', 'latin1'); // pickle.dumps([1, 2], 1)

/** Deterministic bytes that are nothing in particular. */
function noise(length: number, seed = 'noise'): Buffer {
  const out = Buffer.alloc(length);
  for (let off = 0, i = 0; off < length; i++) off += createHash('sha256').update(`${seed}${i}`).digest().copy(out, off);
  return out;
}

async function withModels<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-format-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function refused(fn: () => unknown, code: string): ScorelineError {
  try {
    fn();
  } catch (e) {
    const err = e as ScorelineError;
    assert.equal(err.code, code, err.message);
    assert.equal(err.status, 422);
    return err;
  }
  assert.fail(`expected ${code}`);
}

const HINT = [/skl2onnx \(scikit-learn\)/, /onnxmltools/, /hummingbird/, /onnxmltools \(XGBoost, LightGBM, CatBoost\)/];

function assertPickleRefusal(bytes: Uint8Array, what: RegExp): void {
  const err = refused(() => assertOnnx(bytes, 'upload.pkl'), 'UNSUPPORTED_MODEL_FORMAT');
  assert.match(err.message, /^upload\.pkl is /);
  assert.match(err.message, what);
  assert.match(err.message, /loading a pickle executes arbitrary code/);
  for (const hint of HINT) assert.match(err.message, hint);
}

test('ONNX from every fixture writer is detected as onnx and yields its signature', async () => {
  await withModels(async (dir) => {
    const fixtures = [
      await writeSumModel(dir),
      await writeDtypesModel(dir),
      await writeFixedBatchModel(dir),
      await writeLogisticModel(dir),
      await writeGatherModel(dir),
    ];
    for (const f of fixtures) {
      assert.equal(detectFormat(f.bytes), 'onnx', f.name);
      const meta = assertOnnx(f.bytes, f.modelPath);
      assert.deepEqual(meta.inputs, f.inputs, f.name);
      assert.deepEqual(meta.outputs, f.outputs, f.name);
    }
  });
});

test("ONNX that starts with '(' and ends with '.' (pickle-0 look-alike) is still ONNX", async () => {
  await withModels(async (dir) => {
    const { bytes } = await writeSumModel(dir);
    // 0x28 is ModelProto.model_version's tag; repeated fields merge, so these bytes stay a valid model.
    const lookalike = Buffer.concat([Buffer.from([0x28, 0x05]), bytes, Buffer.from([0x28, 0x2e])]);
    assert.equal(lookalike[0], '('.charCodeAt(0));
    assert.equal(lookalike[lookalike.length - 1], '.'.charCodeAt(0));
    assert.equal(detectFormat(lookalike), 'onnx');
    assert.equal(assertOnnx(lookalike, 'm.onnx').inputs[0]!.name, 'x');
  });
});

test('pickles of protocols 2 to 5 are refused by their PROTO magic', () => {
  for (const protocol of [2, 3, 4, 5]) {
    const bytes = Buffer.from(PICKLE_4);
    bytes[1] = protocol;
    assert.equal(detectFormat(bytes), 'pickle');
    assertPickleRefusal(bytes, new RegExp(`a Python pickle \\(protocol ${protocol}\\)`));
  }
});

test('pickles of protocols 0 and 1 are refused by walking their opcodes to STOP', () => {
  assert.equal(detectFormat(PICKLE_0), 'pickle');
  assert.equal(detectFormat(PICKLE_1), 'pickle');
  assertPickleRefusal(PICKLE_0, /a Python pickle \(protocol 0 or 1\)/);
  assertPickleRefusal(PICKLE_1, /a Python pickle \(protocol 0 or 1\)/);
  // A GLOBAL opcode, the one that makes pickles dangerous: c<module>\n<name>\n
  assert.equal(detectFormat(Buffer.from('cos\nsystem\n(Vecho pwned\ntR.', 'latin1')), 'pickle');
  // Truncated (no STOP) or with bytes after STOP: not a complete pickle, so not claimed as one.
  assert.equal(detectFormat(PICKLE_0.subarray(0, PICKLE_0.length - 1)), 'unknown');
  assert.equal(detectFormat(Buffer.concat([PICKLE_1, Buffer.from('.')])), 'unknown');
});

test('joblib dumps compressed with zlib or gzip are refused when they inflate to a pickle', () => {
  const zlib = deflateSync(PICKLE_4);
  assert.equal(zlib[0], 0x78);
  assert.equal(detectFormat(zlib), 'joblib');
  assertPickleRefusal(zlib, /a joblib dump \(a zlib-compressed Python pickle\)/);

  const gzip = gzipSync(PICKLE_4);
  assert.equal(detectFormat(gzip), 'joblib');
  assertPickleRefusal(gzip, /a joblib dump \(a gzip-compressed Python pickle\)/);

  // Only the first KiB is inflated: a large incompressible dump is judged by its head.
  const large = deflateSync(Buffer.concat([PICKLE_4.subarray(0, 11), noise(200_000), Buffer.from('.')]));
  assert.ok(large.length > 100_000);
  assert.equal(detectFormat(large), 'joblib');
});

test('compressed blobs that are not pickles are not called joblib', () => {
  const json = deflateSync(Buffer.from(JSON.stringify({ weights: [1, 2, 3] })));
  assert.equal(detectFormat(json), 'unknown');
  const err = refused(() => assertOnnx(json, 'weights.bin'), 'NOT_ONNX');
  assert.match(err.message, /^weights\.bin is not an ONNX model/);
  assert.equal(detectFormat(gzipSync(Buffer.from('hello'))), 'unknown');
});

test('bz2, xz and lz4 frames and the old ZF container are refused as joblib by magic', () => {
  const bz2 = Buffer.concat([Buffer.from('BZh9'), Buffer.from([0x31, 0x41, 0x59, 0x26, 0x53, 0x59]), noise(64)]);
  const xz = Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), noise(64)]);
  const lz4 = Buffer.concat([Buffer.from([0x04, 0x22, 0x4d, 0x18]), noise(64)]);
  const zf = Buffer.concat([Buffer.from('ZF0x1f    '), deflateSync(PICKLE_4)]);
  for (const [bytes, what] of [
    [bz2, /a file compressed with bz2, the way joblib/],
    [xz, /compressed with xz/],
    [lz4, /compressed with lz4/],
    [zf, /old zlib container \('ZF' header\)/],
  ] as const) {
    assert.equal(detectFormat(bytes), 'joblib');
    assertPickleRefusal(bytes, what);
  }
  // 'BZh' without a bz2 block header is not enough.
  assert.equal(detectFormat(Buffer.concat([Buffer.from('BZh9'), noise(32)])), 'unknown');
});

test('random bytes named .onnx are refused as not ONNX, with the conversion hint', () => {
  const bytes = noise(4096);
  assert.equal(detectFormat(bytes), 'unknown');
  const err = refused(() => assertOnnx(bytes, 'model.onnx'), 'NOT_ONNX');
  assert.match(err.message, /^model\.onnx is not an ONNX model \(/);
  assert.match(err.message, /scoreline serves ONNX only/);
  for (const hint of HINT) assert.match(err.message, hint);
});

test('an empty file is refused as not ONNX', () => {
  const err = refused(() => assertOnnx(new Uint8Array(0), 'empty.onnx'), 'NOT_ONNX');
  assert.match(err.message, /\(the file is empty\)/);
  assert.equal(detectFormat(new Uint8Array(0)), 'unknown');
});

test('ONNX without a graph, with an empty graph, or with no inputs is refused', () => {
  const noGraph = onnx.ModelProto.encode({ irVersion: 8, producerName: 'x' }).finish();
  assert.match(refused(() => assertOnnx(noGraph, 'a.onnx'), 'NOT_ONNX').message, /no graph outputs/);

  const emptyGraph = onnx.ModelProto.encode({
    irVersion: 8,
    graph: { name: 'empty' },
    opsetImport: [{ domain: '', version: 17 }],
  }).finish();
  assert.equal(detectFormat(emptyGraph), 'unknown');
  assert.match(
    refused(() => assertOnnx(emptyGraph, 'b.onnx'), 'NOT_ONNX').message,
    /^b\.onnx is not an ONNX model \(it has no graph outputs\)/,
  );

  const g = new GraphBuilder('constant');
  g.initializer('c', 'FP32', [1], Float32Array.of(1));
  g.node('Identity', ['c'], ['y']);
  g.output('y', 'FP32', [1]);
  const noInputs = g.toModelBytes();
  assert.equal(detectFormat(noInputs), 'unknown');
  assert.match(refused(() => assertOnnx(noInputs, 'c.onnx'), 'NOT_ONNX').message, /\(its graph has no inputs\)/);
});
