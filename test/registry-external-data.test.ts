// ONNX external data (src/onnx/external-data.ts) on real model bytes: every place a tensor can
// sit (main graph, If/Loop/Scan subgraphs, sparse initializers, Constant and other attribute
// tensors, functions and their attribute defaults, training graphs) is found and named; the
// registry refuses such models at registration, at repository import and at load (for one stored
// before the check existed); a session never reads the data file, not even relative to the working
// directory, where onnxruntime looks for the data of a model loaded from bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import onnxProto from 'onnx-proto';
import { createNativeSession, Tensor } from '../src/inference/ort.js';
import { SessionHost, sessionOptions, type SessionSpec } from '../src/inference/session.js';
import { findExternalData } from '../src/onnx/index.js';
import { assertOnnx } from '../src/registry/format.js';
import { scanRepository } from '../src/registry/repository.js';
import { writeSumModel } from './fixtures/models.js';
import {
  concat,
  externalTensor,
  rawField,
  subgraphModel,
  WEIGHT_BYTES,
  writeExternalInitializerModel,
  writeSubgraphModel,
} from './fixtures/external-data.js';
import { sha, throwsCode, withRegistry as withEnv } from './fixtures/registry.js';

const { onnx } = onnxProto;
const { AttributeType } = onnx.AttributeProto;
const encode = (m: onnxProto.onnx.IModelProto) => new Uint8Array(onnx.ModelProto.encode(m).finish());
const FLOAT = 1;
const vi = (name: string) => ({ name, type: { tensorType: { elemType: FLOAT, shape: { dim: [{ dimParam: 'N' }, { dimValue: 4 }] } } } });
/** A valid one-node model around `graph` parts, with input x and output y. */
const model = (graph: Partial<onnxProto.onnx.IGraphProto>, extra: Partial<onnxProto.onnx.IModelProto> = {}) =>
  encode({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    ...extra,
    graph: { name: 'main', input: [vi('x')], output: [vi('y')], node: [{ opType: 'Identity', input: ['x'], output: ['y'] }], ...graph },
  });
const normal = (name: string) => ({ name, dims: [4], dataType: FLOAT, rawData: new Uint8Array(16) });

function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-external-'));
  return Promise.resolve(fn(dir)).finally(() => rmSync(dir, { recursive: true, force: true }));
}

test('an external initializer of the main graph is found with its name, place and location', async () => {
  await withDir((dir) => {
    const m = writeExternalInitializerModel(dir);
    assert.deepEqual(findExternalData(m.bytes), [{ name: 'w', where: 'initializer of the main graph', location: 'weights.bin' }]);
    const err = throwsCode(() => assertOnnx(m.bytes, 'upload.onnx'), 'EXTERNAL_DATA', 422);
    assert.match(
      err.message,
      /^upload\.onnx keeps the data of tensor 'w' \(initializer of the main graph\) at 'weights\.bin' in a file outside the model/,
    );
    assert.match(err.message, /external data is not accepted/);
    assert.match(err.message, /onnx\.save_model\(model, path, save_as_external_data=False\)/);
    assert.match(err.message, /convert_model_from_external_data/);
  });
});

test('models without external data, the fixtures among them, are not flagged', async () => {
  await withDir(async (dir) => {
    const sum = await writeSumModel(dir, 'sum', 3);
    assert.deepEqual(findExternalData(sum.bytes), []);
    assert.equal(assertOnnx(sum.bytes, 'sum').inputs[0]!.name, 'x');
    // Data inline in every form: raw, typed fields, in a subgraph and a Constant.
    const inline = subgraphModel('unused');
    inline.graph!.node![0]!.attribute![0]!.g!.initializer = [normal('w_then')];
    assert.deepEqual(findExternalData(encode(inline)), []);
    assert.deepEqual(
      findExternalData(
        model({
          initializer: [{ name: 'f', dims: [2], dataType: FLOAT, floatData: [1, 2] }],
          node: [{ opType: 'Constant', output: ['y'], attribute: [{ name: 'value', type: AttributeType.TENSOR, t: normal('') }] }],
        }),
      ),
      [],
    );
  });
});

test('subgraphs of If, Loop and Scan are searched, however deep', () => {
  const ifModel = subgraphModel('weights.bin');
  assert.deepEqual(findExternalData(encode(ifModel)), [
    {
      name: 'w_then',
      location: 'weights.bin',
      where: "initializer of graph 'then' in attribute 'then_branch' of node 'choose' (If) of the main graph",
    },
  ]);
  // A Loop body holding a Scan body holding the tensor.
  const scanBody = { name: 'scan_body', initializer: [externalTensor('deep', 'deep.bin')], node: [], output: [] };
  const loopBody = {
    name: 'loop_body',
    initializer: [normal('shallow')],
    node: [{ name: 'inner', opType: 'Scan', attribute: [{ name: 'body', type: AttributeType.GRAPH, g: scanBody }] }],
  };
  const loop = model({ node: [{ name: 'outer', opType: 'Loop', attribute: [{ name: 'body', type: AttributeType.GRAPH, g: loopBody }] }] });
  assert.deepEqual(findExternalData(loop), [
    {
      name: 'deep',
      location: 'deep.bin',
      where:
        "initializer of graph 'scan_body' in attribute 'body' of node 'inner' (Scan) of graph 'loop_body' in attribute 'body' of node 'outer' (Loop) of the main graph",
    },
  ]);
  // GRAPHS attributes too.
  const graphs = model({
    node: [{ name: 'n', opType: 'Custom', attribute: [{ name: 'gs', type: AttributeType.GRAPHS, graphs: [{ name: 'a' }, scanBody] }] }],
  });
  assert.deepEqual(
    findExternalData(graphs).map((t) => t.name),
    ['deep'],
  );
});

test('sparse initializers, Constant nodes and tensor attributes are searched', () => {
  const sparse = model({ sparseInitializer: [{ values: externalTensor('sv', 'v.bin'), indices: normal('si'), dims: [8] }] });
  assert.deepEqual(findExternalData(sparse), [
    { name: 'sv', where: 'values of the sparse initializer of the main graph', location: 'v.bin' },
  ]);

  const constant = model({
    node: [
      {
        name: 'c',
        opType: 'Constant',
        output: ['y'],
        attribute: [{ name: 'value', type: AttributeType.TENSOR, t: externalTensor('', 'c.bin') }],
      },
    ],
  });
  assert.deepEqual(findExternalData(constant), [
    { name: '', where: "attribute 'value' of node 'c' (Constant) of the main graph", location: 'c.bin' },
  ]);
  throwsCode(
    () => assertOnnx(constant, 'm'),
    'EXTERNAL_DATA',
    422,
    /tensor \(unnamed\) \(attribute 'value' of node 'c' \(Constant\) of the main graph\) at 'c\.bin'/,
  );

  const sparseConstant = model({
    node: [
      {
        name: 's',
        opType: 'Constant',
        output: ['y'],
        attribute: [
          {
            name: 'sparse_value',
            type: AttributeType.SPARSE_TENSOR,
            sparseTensor: { values: normal('v'), indices: externalTensor('i', 'i.bin'), dims: [8] },
          },
        ],
      },
    ],
  });
  assert.deepEqual(
    findExternalData(sparseConstant).map((t) => [t.name, t.where]),
    [['i', "indices of the sparse tensor in attribute 'sparse_value' of node 's' (Constant) of the main graph"]],
  );

  const lists = model({
    node: [
      {
        name: 'l',
        opType: 'Custom',
        attribute: [
          { name: 'ts', type: AttributeType.TENSORS, tensors: [normal('a'), externalTensor('b', 'b.bin')] },
          {
            name: 'ss',
            type: AttributeType.SPARSE_TENSORS,
            sparseTensors: [{ values: externalTensor('c', 'c.bin'), indices: normal('ci') }],
          },
        ],
      },
    ],
  });
  assert.deepEqual(
    findExternalData(lists).map((t) => t.name),
    ['b', 'c'],
  );
});

test('functions (their nodes and attribute defaults) and training graphs are searched', () => {
  const fn = model(
    {},
    {
      functions: [
        {
          name: 'scale',
          domain: 'local',
          node: [
            { name: 'k', opType: 'Constant', attribute: [{ name: 'value', type: AttributeType.TENSOR, t: externalTensor('k', 'k.bin') }] },
          ],
        },
      ],
    },
  );
  assert.deepEqual(findExternalData(fn), [
    { name: 'k', where: "attribute 'value' of node 'k' (Constant) of function 'scale'", location: 'k.bin' },
  ]);

  // FunctionProto.attribute_proto (field 11) is newer than onnx-proto, which would drop it when decoding.
  const defaults = new Uint8Array(
    onnx.AttributeProto.encode({ name: 'alpha', type: AttributeType.TENSOR, t: externalTensor('alpha', 'a.bin') }).finish(),
  );
  const fnBytes = concat(new Uint8Array(onnx.FunctionProto.encode({ name: 'f', domain: 'local' }).finish()), rawField(11, defaults));
  const withDefaults = concat(model({}), rawField(25, fnBytes));
  assert.equal(onnx.ModelProto.decode(withDefaults).functions[0]!.name, 'f', 'still a valid model');
  assert.deepEqual(findExternalData(withDefaults), [
    { name: 'alpha', where: "default of attribute 'alpha' of function 'f'", location: 'a.bin' },
  ]);

  const training = model({}, { trainingInfo: [{ initialization: { name: 'init', initializer: [externalTensor('t', 't.bin')] } }] });
  assert.deepEqual(
    findExternalData(training).map((t) => [t.name, t.where]),
    [['t', "initializer of initialization graph 'init' of the training info"]],
  );
});

test('either marker counts, and a graph split over two occurrences of its field is searched whole', () => {
  const locationOnly = model({
    initializer: [{ name: 'a', dims: [4], dataType: FLOAT, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL }],
  });
  assert.deepEqual(findExternalData(locationOnly), [{ name: 'a', where: 'initializer of the main graph', location: '' }]);
  const entriesOnly = model({
    initializer: [{ name: 'b', dims: [4], dataType: FLOAT, externalData: [{ key: 'location', value: 'b.bin' }] }],
  });
  assert.deepEqual(
    findExternalData(entriesOnly).map((t) => t.name),
    ['b'],
  );
  // Protobuf merges repeated occurrences of a message field; onnxruntime sees both halves.
  const split = concat(
    model({}),
    rawField(7, new Uint8Array(onnx.GraphProto.encode({ initializer: [externalTensor('late', 'late.bin')] }).finish())),
  );
  assert.deepEqual(
    findExternalData(split).map((t) => t.name),
    ['late'],
  );
  // More than three are summarised.
  const many = model({ initializer: ['a', 'b', 'c', 'd', 'e'].map((n) => externalTensor(n, `${n}.bin`)) });
  throwsCode(
    () => assertOnnx(many, 'm'),
    'EXTERNAL_DATA',
    422,
    /5 tensors \(tensor 'a' .*; tensor 'c' \(initializer of the main graph\) at 'c\.bin'; and 2 more\)/,
  );
});

test('truncated protobuf is refused as not ONNX, not walked past its end', () => {
  const bytes = model({ initializer: [normal('a')] });
  for (const cut of [bytes.length - 1, bytes.length - 7, 5]) {
    const err = throwsCode(() => assertOnnx(bytes.subarray(0, cut), 'cut.onnx'), 'NOT_ONNX', 422);
    assert.match(err.message, /^cut\.onnx is not an ONNX model/);
  }
});

test('the registry refuses external data at registration and at repository import, storing nothing', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    const main = writeExternalInitializerModel(join(env.dir, 'upload'));
    const sub = writeSubgraphModel(join(env.dir, 'upload-sub'));
    for (const m of [main, sub]) {
      throwsCode(
        () => reg.register('sum', m.bytes, { declaredSource: m.modelPath }),
        'EXTERNAL_DATA',
        422,
        new RegExp(`tensor '${m.tensor}'`),
      );
    }
    assert.deepEqual(reg.listModels(), []);
    assert.deepEqual(readdirSync(reg.artifacts.root), [], 'no artifact written');

    const ok = await writeSumModel(env.repoDir, 'sum', 1);
    writeExternalInitializerModel(join(env.repoDir, 'sum', '2'));
    writeSubgraphModel(join(env.repoDir, 'sum', '3'));
    const r = reg.importRepository(scanRepository(env.repoDir));
    assert.deepEqual(
      r.imported.map((v) => v.version),
      [1],
    );
    assert.deepEqual(
      r.skipped.map((s) => [s.version, s.code]),
      [
        [2, 'EXTERNAL_DATA'],
        [3, 'EXTERNAL_DATA'],
      ],
    );
    assert.match(r.skipped[0]!.reason, new RegExp(`^${join(env.repoDir, 'sum', '2', 'model.onnx')} keeps the data of tensor 'w'`));
    assert.match(r.skipped[1]!.reason, /tensor 'w_then' \(initializer of graph 'then' in attribute 'then_branch' of node 'choose' \(If\)/);
    assert.deepEqual(
      reg.listVersions('sum').map((v) => v.sha256),
      [sha(ok.bytes)],
    );
  });
});

test('a model stored before the check existed is refused at every load', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    const good = reg.register('sum', await env.bytes(1));
    const m = writeExternalInitializerModel(join(env.dir, 'old'));
    // What an older scoreline did: store the artifact and the version row without looking inside.
    const stored = reg.artifacts.put(m.bytes);
    const db = new Database(join(env.dataDir, 'registry.db'));
    db.prepare(`INSERT INTO versions (model, version, sha256, size, created_at, signature) SELECT model, 2, ?, ?, created_at, signature
      FROM versions WHERE model = 'sum' AND version = 1`).run(stored.sha256, stored.size);
    db.close();
    throwsCode(() => reg.load('sum', 2), 'EXTERNAL_DATA', 422, /^version 2 of model 'sum' keeps the data of tensor 'w'/);
    assert.equal(reg.load('sum', 1).record.sha256, good.sha256);
  });
});

/** A SessionSpec for an artifact file, warm-up at batch size 1. */
const specFor = (path: string, bytes: Uint8Array): SessionSpec => ({
  key: `m:1:${sha(bytes)}`,
  path,
  sha256: sha(bytes),
  intraOpThreads: 1,
  warmup: { inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }], sizes: [1] },
});

test('a session never reads external data, not even from the working directory', async () => {
  await withDir(async (dir) => {
    // The data file is in the working directory, where onnxruntime looks for the data of a model
    // loaded from bytes; the artifact lives elsewhere, as in the artifact store.
    const cwd = join(dir, 'cwd');
    const bytes = encode(subgraphModel('weights.bin'));
    const artifact = join(dir, 'artifact.onnx');
    writeFileSync(artifact, bytes);
    const host = new SessionHost();
    const before = process.cwd();
    try {
      writeSubgraphModel(cwd);
      process.chdir(cwd);
      // The premise: without scoreline's options onnxruntime does read it, and the model answers with it.
      const leaky = createNativeSession(bytes, { graphOptimizationLevel: 'all', logSeverityLevel: 4 });
      const y = leaky.run({ x: new Tensor('float32', new Float32Array(4), [1, 4]) }, { y: null }, {}).y!.data as Float32Array;
      assert.deepEqual(Buffer.from(y.buffer, y.byteOffset, y.byteLength), Buffer.from(WEIGHT_BYTES));
      leaky.dispose();

      // The session host refuses it before onnxruntime sees it.
      await assert.rejects(host.load(specFor(artifact, bytes)), /artifact .*artifact\.onnx keeps the data of tensor 'w_then'/);
      // And the options it gives onnxruntime confine external data to the artifact itself, where
      // nothing can be: a model that got past the check would still fail to load, not leak.
      assert.throws(
        () => createNativeSession(bytes, sessionOptions(specFor(artifact, bytes))),
        /artifact\.onnx\/weights\.bin, but it is not regular file|does not exist/,
      );
      const escaping = encode(subgraphModel('../cwd/weights.bin'));
      assert.throws(() => createNativeSession(escaping, sessionOptions(specFor(artifact, escaping))), /outside|escapes/);
    } finally {
      process.chdir(before);
      await host.releaseAll();
    }
  });
});

test('a normal model still loads in a session with those options', async () => {
  await withDir(async (dir) => {
    const sum = await writeSumModel(dir, 'sum', 2);
    const host = new SessionHost();
    try {
      await host.load(specFor(sum.modelPath, sum.bytes));
      const r = await host.run(specFor(sum.modelPath, sum.bytes), [
        { name: 'x', datatype: 'FP32', dims: [1, 4], data: Float32Array.of(1, 2, 3, 4) },
      ]);
      assert.deepEqual(Array.from(r.outputs[0]!.data as Float32Array), [20]);
    } finally {
      await host.releaseAll();
    }
  });
});
