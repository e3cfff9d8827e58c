// Tests for the ONNX writer and the model fixtures: every model is loaded and run by the real
// onnxruntime-node, and its outputs are compared with values computed independently in JS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { parse } from 'yaml';
import { GraphBuilder, attr, onnxElementType, rawTensorBytes, type TensorDatatype } from '../src/inference/onnx-writer.js';
import {
  DTYPES_EXAMPLE,
  writeDtypesModel,
  writeFixedBatchModel,
  writeLogisticModel,
  writeSumModel,
  type JsonTensor,
  type ModelFixture,
} from './fixtures/models.js';

const { onnx } = onnxProto;

const ORT_TYPE: Record<TensorDatatype, ort.Tensor.Type> = {
  FP32: 'float32',
  FP64: 'float64',
  INT32: 'int32',
  INT64: 'int64',
  BOOL: 'bool',
  BYTES: 'string',
};

function toOrtTensor(t: JsonTensor): ort.Tensor {
  const values = t.data as unknown[];
  switch (t.datatype) {
    case 'FP32':
      return new ort.Tensor('float32', Float32Array.from(values as number[]), t.shape);
    case 'FP64':
      return new ort.Tensor('float64', Float64Array.from(values as number[]), t.shape);
    case 'INT32':
      return new ort.Tensor('int32', Int32Array.from(values as number[]), t.shape);
    case 'INT64':
      return new ort.Tensor(
        'int64',
        BigInt64Array.from(values as number[], (v) => BigInt(v)),
        t.shape,
      );
    case 'BOOL':
      return new ort.Tensor(
        'bool',
        Uint8Array.from(values as boolean[], (v) => (v ? 1 : 0)),
        t.shape,
      );
    case 'BYTES':
      return new ort.Tensor('string', values as string[], t.shape);
  }
}

/** ORT output data as JSON-style values: numbers, or booleans for bool tensors. */
function jsonData(t: ort.Tensor): number[] | boolean[] {
  if (t.type === 'bool') return Array.from(t.data as Uint8Array, (v) => v === 1);
  if (t.type === 'int64') return Array.from(t.data as BigInt64Array, (v) => Number(v));
  return Array.from(t.data as Float32Array);
}

/** The named output of a run; a missing one fails the test with its name. */
function output(result: Record<string, ort.Tensor>, name: string): ort.Tensor {
  const tensor = result[name];
  assert.ok(tensor, `the run has no output ${JSON.stringify(name)}`);
  return tensor;
}

async function runExample(fixture: ModelFixture): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(await readFile(fixture.modelPath));
  const feeds = Object.fromEntries(fixture.example.inputs.map((t) => [t.name, toOrtTensor(t)]));
  return session.run(feeds);
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-onnx-writer-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const decode = (bytes: Uint8Array) => onnx.ModelProto.decode(bytes);
const dimsOf = (info: onnxProto.onnx.IValueInfoProto) =>
  info.type!.tensorType!.shape!.dim!.map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue)));

test('dtypes fixture: all five datatypes run in onnxruntime with exact results', async () => {
  await withTempDir(async (dir) => {
    const fixture = await writeDtypesModel(dir);
    assert.equal(fixture.modelPath, join(dir, 'dtypes', '1', 'model.onnx'));
    const result = await runExample(fixture);
    assert.deepEqual(Object.keys(result).sort(), ['b_out', 'f32_out', 'f64_out', 'i32_out', 'i64_out']);
    for (const expected of fixture.example.outputs) {
      const actual = output(result, expected.name);
      assert.equal(actual.type, ORT_TYPE[expected.datatype], expected.name);
      assert.deepEqual(actual.dims, expected.shape, expected.name);
      assert.deepEqual(jsonData(actual), expected.data, expected.name);
    }
    // Spelled out once, independent of dtypesExpected().
    assert.deepEqual(jsonData(output(result, 'f32_out')), [3, -4, 0.5, 6, 0, -1]);
    assert.deepEqual(jsonData(output(result, 'f64_out')), [1.1, -0.5, 3.25, 1e10 + 1]);
    assert.deepEqual(jsonData(output(result, 'i32_out')), [3, -6, 300_000, -21]);
    assert.deepEqual(Array.from(output(result, 'i64_out').data as BigInt64Array), [-1n, -6n, 2n ** 40n - 1n, 41n]);
    assert.deepEqual(jsonData(output(result, 'b_out')), [false, true, true, false]);
    assert.ok(output(result, 'b_out').data instanceof Uint8Array);
    assert.deepEqual(DTYPES_EXAMPLE.b, [true, false, false, true]);
  });
});

test('dtypes fixture: declared inputs and outputs match the graph, -1 as symbolic N', async () => {
  await withTempDir(async (dir) => {
    const fixture = await writeDtypesModel(dir, 'types', 3);
    assert.equal(fixture.modelPath, join(dir, 'types', '3', 'model.onnx'));
    const graph = decode(fixture.bytes).graph!;
    assert.deepEqual(
      graph.input!.map((i) => i.name),
      fixture.inputs.map((i) => i.name),
    );
    for (const [i, info] of graph.input!.entries()) {
      assert.equal(info.type!.tensorType!.elemType, onnxElementType(fixture.inputs[i]!.datatype));
      assert.deepEqual(dimsOf(info), ['N', fixture.inputs[i]!.shape[1]]);
    }
    assert.deepEqual(
      graph.output!.map((o) => o.name),
      fixture.outputs.map((o) => o.name),
    );
    const session = await ort.InferenceSession.create(fixture.bytes);
    assert.deepEqual(session.inputNames, ['f32', 'f64', 'i32', 'i64', 'b']);
    assert.deepEqual(session.outputNames, ['f32_out', 'f64_out', 'i32_out', 'i64_out', 'b_out']);
  });
});

test('sum fixture: each version multiplies the row sum by its version number', async () => {
  await withTempDir(async (dir) => {
    const answers: number[][] = [];
    for (const version of [1, 2, 3]) {
      const fixture = await writeSumModel(dir, 'sum', version);
      assert.equal(fixture.modelPath, join(dir, 'sum', String(version), 'model.onnx'));
      const result = await runExample(fixture);
      assert.deepEqual(output(result, 'y').dims, [3, 1]);
      assert.deepEqual(jsonData(output(result, 'y')), fixture.example.outputs[0]!.data);
      answers.push(jsonData(output(result, 'y')) as number[]);
    }
    assert.deepEqual(answers, [
      [10, 1, -8],
      [20, 2, -16],
      [30, 3, -24],
    ]);
    assert.equal(Number(decode(await readFile(join(dir, 'sum', '2', 'model.onnx'))).modelVersion), 2);
  });
});

test('fixed-batch fixture: static [1, 3] shape, y = x + 1, larger batches rejected by onnxruntime', async () => {
  await withTempDir(async (dir) => {
    const fixture = await writeFixedBatchModel(dir);
    const result = await runExample(fixture);
    assert.deepEqual(output(result, 'y').dims, [1, 3]);
    assert.deepEqual(jsonData(output(result, 'y')), [2, -1.5, 41]);
    assert.deepEqual(dimsOf(decode(fixture.bytes).graph!.input![0]!), [1, 3]);
    const session = await ort.InferenceSession.create(fixture.bytes);
    await assert.rejects(session.run({ x: new ort.Tensor('float32', new Float32Array(6), [2, 3]) }));
  });
});

test('logistic fixture: onnxruntime probabilities match the JS expectation, labels at 0.5', async () => {
  await withTempDir(async (dir) => {
    const fixture = await writeLogisticModel(dir, 'tiny', 2);
    const result = await runExample(fixture);
    const [expectedLabel, expectedProbabilities] = fixture.example.outputs;
    assert.deepEqual(output(result, 'label').dims, [3]);
    assert.deepEqual(jsonData(output(result, 'label')), expectedLabel!.data);
    assert.deepEqual(jsonData(output(result, 'label')), [0, 1, 0]);
    const probabilities = jsonData(output(result, 'probabilities')) as number[];
    (expectedProbabilities!.data as number[]).forEach((p, i) => {
      assert.ok(Math.abs(probabilities[i]! - p) < 1e-6, `probability ${i}: ${probabilities[i]} vs ${p}`);
    });
    // sigmoid(-0.3), sigmoid(1.2), sigmoid(-3.3) by hand
    const hand = [-0.3, 1.2, -3.3].map((t) => 1 / (1 + Math.exp(-t)));
    hand.forEach((p, i) => {
      assert.ok(Math.abs(probabilities[2 * i + 1]! - p) < 1e-6);
    });
    assert.ok(Math.abs(fixture.expectedProbability([5, 0, 1]) - 1 / (1 + Math.exp(-(-0.3 + 1.6 + 1 + 1.2)))) < 1e-12);
  });
});

test('fixtures write model.yaml from a plain object only when asked', async () => {
  await withTempDir(async (dir) => {
    const config = { features: ['a', 'b'], batching: { maxBatchSize: 8, maxQueueDelayMicros: 100 } };
    const withConfig = await writeSumModel(dir, 'configured', 1, { modelYaml: config });
    assert.equal(withConfig.configPath, join(dir, 'configured', 'model.yaml'));
    assert.deepEqual(parse(await readFile(withConfig.configPath!, 'utf8')), config);
    const without = await writeSumModel(dir, 'plain', 1);
    assert.equal(without.configPath, undefined);
    await assert.rejects(readFile(join(dir, 'plain', 'model.yaml')), { code: 'ENOENT' });
    await assert.rejects(writeSumModel(dir, 'bad', 0), /positive integers/);
  });
});

function attributeGraph(): GraphBuilder {
  const g = new GraphBuilder('attributes');
  g.input('x', 'FP32', [2, 3]);
  g.node('LeakyRelu', ['x'], ['leaky'], { alpha: attr.float(2) });
  g.node('Transpose', ['leaky'], ['transposed'], { perm: [1, 0] });
  g.node('Constant', [], ['floats'], { value_floats: [1.5, 2.5] });
  g.node('Constant', [], ['mask'], { value: { datatype: 'BOOL', dims: [2], data: Uint8Array.of(1, 0) } });
  g.node('Constant', [], ['int64s'], { value: attr.tensor({ datatype: 'INT64', dims: [2], data: BigInt64Array.of(-3n, 9n) }) });
  g.initializer('pads', 'INT64', [4], BigInt64Array.of(0n, 1n, 0n, 1n));
  g.node('Pad', ['x', 'pads'], ['padded'], { mode: 'reflect' });
  g.node('Concat', ['x', 'x'], ['stacked'], { axis: 0 });
  g.node('Elu', ['x'], ['elu'], { alpha: 0.5 });
  for (const name of ['transposed', 'floats', 'padded', 'stacked', 'elu']) g.output(name, 'FP32', name === 'floats' ? [2] : [-1, -1]);
  g.output('mask', 'BOOL', [2]);
  g.output('int64s', 'INT64', [2]);
  return g;
}

test('attributes: int, float, ints, floats, string and tensor are encoded with their types and honoured by onnxruntime', async () => {
  const bytes = attributeGraph().toModelBytes();
  const { AttributeType } = onnx.AttributeProto;
  const attributes = decode(bytes).graph!.node!.flatMap((n) => n.attribute!.map((a) => [`${n.opType}.${a.name}`, a] as const));
  const byName = new Map(attributes);
  assert.equal(byName.get('LeakyRelu.alpha')!.type, AttributeType.FLOAT);
  assert.equal(byName.get('LeakyRelu.alpha')!.f, 2);
  assert.equal(byName.get('Transpose.perm')!.type, AttributeType.INTS);
  assert.deepEqual(byName.get('Transpose.perm')!.ints!.map(Number), [1, 0]);
  assert.equal(byName.get('Pad.mode')!.type, AttributeType.STRING);
  assert.equal(new TextDecoder().decode(byName.get('Pad.mode')!.s!), 'reflect');
  assert.equal(byName.get('Concat.axis')!.type, AttributeType.INT);
  assert.equal(byName.get('Elu.alpha')!.type, AttributeType.FLOAT);
  assert.equal(byName.get('Constant.value_floats')!.type, AttributeType.FLOATS);
  const tensors = attributes.filter(([key]) => key === 'Constant.value').map(([, a]) => a);
  assert.deepEqual(
    tensors.map((a) => a.type),
    [AttributeType.TENSOR, AttributeType.TENSOR],
  );

  const session = await ort.InferenceSession.create(bytes);
  const x = Float32Array.of(1, -2, 3, -4, 5, -6);
  const out = await session.run({ x: new ort.Tensor('float32', x, [2, 3]) });
  assert.deepEqual(output(out, 'transposed').dims, [3, 2]);
  assert.deepEqual(jsonData(output(out, 'transposed')), [1, -8, -4, 5, 3, -12]); // LeakyRelu(alpha 2) then transpose
  assert.deepEqual(jsonData(output(out, 'floats')), [1.5, 2.5]);
  assert.deepEqual(jsonData(output(out, 'mask')), [true, false]);
  assert.deepEqual(Array.from(output(out, 'int64s').data as BigInt64Array), [-3n, 9n]);
  assert.deepEqual(output(out, 'padded').dims, [2, 5]);
  assert.deepEqual(jsonData(output(out, 'padded')), [-2, 1, -2, 3, -2, 5, -4, 5, -6, 5]); // reflect pad on the last axis
  assert.deepEqual(output(out, 'stacked').dims, [4, 3]);
  const elu = jsonData(output(out, 'elu')) as number[];
  [1, -2, 3, -4, 5, -6].forEach((v, i) => {
    assert.ok(Math.abs(elu[i]! - (v > 0 ? v : 0.5 * (Math.exp(v) - 1))) < 1e-6);
  });
});

test('model header: IR 8, opset 17 by default, producer, doc string and metadata in order', () => {
  const g = new GraphBuilder('header');
  g.input('x', 'FP32', [-1, 'features']);
  g.node('Identity', ['x'], ['y']);
  g.output('y', 'FP32', [-1, 'features']);
  const model = decode(g.toModelBytes({ docString: 'doc', metadata: { zeta: '1', alpha: '2' }, producerVersion: '0.1.0' }));
  assert.equal(Number(model.irVersion), 8);
  assert.deepEqual(
    model.opsetImport!.map((o) => [o.domain, Number(o.version)]),
    [['', 17]],
  );
  assert.equal(model.producerName, 'scoreline');
  assert.equal(model.producerVersion, '0.1.0');
  assert.equal(model.docString, 'doc');
  assert.deepEqual(
    model.metadataProps!.map((m) => [m.key, m.value]),
    [
      ['zeta', '1'],
      ['alpha', '2'],
    ],
  );
  assert.deepEqual(dimsOf(model.graph!.input![0]!), ['N', 'features']);
  assert.equal(model.graph!.node![0]!.name, 'Identity_0');
  const custom = decode(g.toModelBytes({ opset: 13, domainOpsets: { 'ai.onnx.ml': 3 } }));
  assert.deepEqual(
    custom.opsetImport!.map((o) => [o.domain, Number(o.version)]),
    [
      ['', 13],
      ['ai.onnx.ml', 3],
    ],
  );
});

test('initializer data is stored as little-endian raw_data', () => {
  assert.deepEqual(Array.from(rawTensorBytes('FP32', Float32Array.of(1))), [0x00, 0x00, 0x80, 0x3f]);
  assert.deepEqual(Array.from(rawTensorBytes('FP64', Float64Array.of(-2))), [0, 0, 0, 0, 0, 0, 0, 0xc0]);
  assert.deepEqual(Array.from(rawTensorBytes('INT32', Int32Array.of(258))), [2, 1, 0, 0]);
  assert.deepEqual(
    Array.from(rawTensorBytes('INT64', BigInt64Array.of(-1n, 256n))),
    [255, 255, 255, 255, 255, 255, 255, 255, 0, 1, 0, 0, 0, 0, 0, 0],
  );
  assert.deepEqual(Array.from(rawTensorBytes('BOOL', Uint8Array.of(1, 0, 1))), [1, 0, 1]);
  const g = new GraphBuilder('raw');
  g.initializer('w', 'INT32', [2], Int32Array.of(1, -1));
  g.node('Identity', ['w'], ['y']);
  g.output('y', 'INT32', [2]);
  const tensor = decode(g.toModelBytes()).graph!.initializer![0]!;
  assert.equal(tensor.dataType, onnx.TensorProto.DataType.INT32);
  assert.deepEqual(tensor.dims!.map(Number), [2]);
  assert.deepEqual(Array.from(tensor.rawData!), [1, 0, 0, 0, 255, 255, 255, 255]);
});

test('output is deterministic: same calls give byte-identical models and files', async () => {
  const a = attributeGraph().toModelBytes({ metadata: { k: 'v' } });
  const b = attributeGraph().toModelBytes({ metadata: { k: 'v' } });
  assert.ok(a instanceof Uint8Array);
  assert.equal(a.byteOffset, 0);
  assert.equal(a.buffer.byteLength, a.length); // owns its bytes, not a view into a pool
  assert.deepEqual(a, b);
  await withTempDir(async (dir) => {
    const first = await writeDtypesModel(join(dir, 'one'));
    const second = await writeDtypesModel(join(dir, 'two'));
    assert.deepEqual(await readFile(first.modelPath), await readFile(second.modelPath));
    const l1 = await writeLogisticModel(join(dir, 'one'));
    const l2 = await writeLogisticModel(join(dir, 'two'));
    assert.deepEqual(await readFile(l1.modelPath), await readFile(l2.modelPath));
  });
});

test('argument errors are reported clearly', () => {
  const g = new GraphBuilder('errors');
  g.input('x', 'FP32', [-1, 2]);
  assert.throws(
    () => g.input('z', 'FP16' as TensorDatatype, [1]),
    /input "z": unknown datatype "FP16"; expected one of FP32, FP64, INT32, INT64, BOOL/,
  );
  assert.throws(() => g.initializer('w', 'UINT8' as 'BOOL', [1], Uint8Array.of(1)), /unknown datatype "UINT8"/);
  assert.throws(
    () => g.initializer('w', 'FP32', [2, 2], Float32Array.of(1, 2, 3)),
    /initializer "w": shape \[2, 2\] holds 4 elements but data has 3/,
  );
  assert.throws(
    () => g.initializer('w', 'FP32', [2], Float64Array.of(1, 2) as unknown as Float32Array),
    /FP32 data must be a Float32Array, got Float64Array/,
  );
  assert.throws(() => g.initializer('w', 'INT64', [1], Int32Array.of(1) as unknown as BigInt64Array), /INT64 data must be a BigInt64Array/);
  assert.throws(() => g.initializer('w', 'BOOL', [2], Uint8Array.of(1, 2)), /BOOL data must hold only 0 and 1/);
  assert.throws(() => g.initializer('w', 'FP32', [-1], Float32Array.of(1)), /dims must be non-negative integers/);
  assert.throws(() => g.input('y', 'FP32', [-2]), /dimension -2 must be a non-negative integer, -1 \(dynamic\) or a symbol name/);
  assert.throws(() => g.input('y', 'FP32', [1.5]), /dimension 1.5/);
  assert.throws(() => g.input('x', 'FP32', [1]), /name "x" is already defined/);
  assert.throws(() => g.input('', 'FP32', [1]), /name must be a non-empty string/);
  assert.throws(() => g.node('Add', ['x', 'missing'], ['y']), /node "Add_0" \(Add\): input "missing" is not defined/);
  assert.throws(() => g.node('Relu', ['x'], ['x']), /name "x" is already defined/);
  assert.throws(() => g.node('Split', ['x'], ['y', 'y']), /name "y" is already defined/);
  assert.throws(() => g.node('Relu', ['x'], []), /at least one output/);
  assert.throws(() => g.node('Foo', ['x'], ['y'], { values: [] }), /empty list is ambiguous/);
  assert.throws(() => g.node('Foo', ['x'], ['y'], { values: attr.ints([1, 2.5]) }), /expected safe integers, got 2.5/);
  assert.throws(
    () => g.node('Foo', ['x'], ['y'], { t: { datatype: 'FP32', dims: [2], data: Float32Array.of(1) } }),
    /holds 2 elements but data has 1/,
  );
  assert.throws(() => g.output('nothing', 'FP32', [1]), /output "nothing": no input, initializer or node produces it/);
  assert.throws(() => new GraphBuilder('empty').toModelBytes(), /declare at least one output/);
  g.node('Relu', ['x'], ['y']);
  g.output('y', 'FP32', [-1, 2]);
  assert.throws(() => g.output('y', 'FP32', [-1, 2]), /declared twice/);
  assert.throws(() => g.toModelBytes({ opset: 0 }), /opset must be a positive integer/);
  assert.throws(() => g.toModelBytes({ metadata: { n: 1 as unknown as string } }), /metadata "n" must be a string/);
  g.node('LinearRegressor', ['x'], ['r'], {}, { domain: 'ai.onnx.ml' });
  assert.throws(() => g.toModelBytes(), /nodes use domain "ai.onnx.ml": give its opset in domainOpsets/);
});
