// MLflow model folders and archives as the registry reads them: the onnx flavor's file is the
// artifact (its sha256 is the registry's), the column signature names the features when the model
// has one 2-D input of that width, MLmodel and the input example are lineage; tensor signatures
// name nothing; non-numeric columns, width mismatches, flavors without ONNX (pickle-based or not),
// external data and paths outside the folder are refused with the reason. Archives are read in
// memory: links, absolute and '..' entries, devices, garbage and archives unpacking beyond the
// limit are refused before anything is registered. A repository version folder holding an MLflow
// model is imported like a model.onnx.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { isScorelineError } from '../src/errors.js';
import { readMlflowArchive, readMlflowFolder } from '../src/registry/mlflow.js';
import { scanRepository } from '../src/registry/repository.js';
import { writeExternalInitializerModel } from './fixtures/external-data.js';
import { logisticOnnx, MLFLOW_FEATURES, mlflowArchive, mlflowFiles, tarball, writeMlflowFolder } from './fixtures/mlflow.js';
import { throwsCode, withRegistry } from './fixtures/registry.js';
import { tempDir } from './e2e/server.js';

const MAX = 10 * 1024 * 1024;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const read = (archive: Uint8Array, max = MAX) => readMlflowArchive(archive, max, 'upload.tar.gz');

test('an archive of an MLflow folder: the ONNX file is the artifact, the signature names the features, MLmodel and the example are lineage', () => {
  for (const folder of ['model', '']) {
    const m = read(mlflowArchive({}, folder));
    assert.equal(sha(m.bytes), sha(logisticOnnx()));
    assert.equal(m.modelFile, 'model.onnx');
    assert.deepEqual(m.features, MLFLOW_FEATURES);
    const l = m.lineage.mlflow as Record<string, any>;
    assert.equal(l.run_id, 'a1b2c3d4e5f60718293a4b5c6d7e8f90');
    assert.equal(l.mlflow_version, '2.14.1');
    assert.deepEqual(l.flavors, ['onnx', 'python_function']);
    assert.equal(l.onnx_version, '1.16.1');
    assert.deepEqual(
      l.signature.inputs.map((c: { name: string }) => c.name),
      MLFLOW_FEATURES,
    );
    assert.deepEqual(l.signature.outputs, [{ type: 'tensor', 'tensor-spec': { dtype: 'float32', shape: [-1, 2] } }]);
    assert.deepEqual(l.input_example.value, { columns: MLFLOW_FEATURES, data: [[41, 52000, 0.3]] });
    assert.equal(l.mlmodel_sha256, sha(mlflowFiles().get('MLmodel')!));
  }
  // Uncompressed tar too, and every numeric column type.
  const types = ['boolean', 'integer', 'long'].map((type, i) => ({ type, name: MLFLOW_FEATURES[i] }));
  assert.deepEqual(
    readMlflowArchive(
      tarball(
        [...mlflowFiles({ inputs: types })].map(([path, data]) => ({ path, data })),
        false,
      ),
      MAX,
      'x',
    ).features,
    MLFLOW_FEATURES,
  );
});

test('signatures that name no features: tensor specs, unnamed columns, none at all; the model still registers', () => {
  const tensor = read(mlflowArchive({ inputs: [{ type: 'tensor', 'tensor-spec': { dtype: 'float32', shape: [-1, 3] } }] }));
  assert.equal(tensor.features, null);
  assert.equal(read(mlflowArchive({ inputs: [{ type: 'double' }, { type: 'double' }, { type: 'double' }] })).features, null);
  const none = read(mlflowArchive({ inputs: null }));
  assert.equal(none.features, null);
  assert.equal((none.lineage.mlflow as Record<string, unknown>).signature, null);
});

test('signatures the model cannot take are refused: non-numeric columns, a width mismatch, a column named twice', () => {
  const cols = (types: string[], names = MLFLOW_FEATURES) => types.map((type, i) => ({ type, name: names[i] }));
  for (const type of ['string', 'binary', 'datetime']) {
    throwsCode(
      () => read(mlflowArchive({ inputs: cols(['double', type, 'double']) })),
      'MLFLOW_MODEL_INVALID',
      422,
      new RegExp(
        `signature column 'income' has type '${type}', which cannot feed the model's numeric input 'input' \\(FP32\\); accepted column types: boolean, integer, long, float, double`,
      ),
    );
  }
  throwsCode(
    () =>
      read(
        mlflowArchive({
          inputs: [
            { type: { type: 'array', items: { type: 'double' } }, name: 'age' },
            { type: 'double', name: 'b' },
            { type: 'double', name: 'c' },
          ],
        }),
      ),
    'MLFLOW_MODEL_INVALID',
    422,
    /column 'age' has type 'array'/,
  );
  throwsCode(
    () => read(mlflowArchive({ inputs: cols(['double', 'double']) })),
    'MLFLOW_MODEL_INVALID',
    422,
    /its signature has 2 input columns but the ONNX input 'input' has 3/,
  );
  throwsCode(
    () => read(mlflowArchive({ inputs: cols(['double', 'double', 'double'], ['a', 'b', 'a']) })),
    'MLFLOW_MODEL_INVALID',
    422,
    /names column 'a' twice/,
  );
  throwsCode(() => read(mlflowArchive({ inputs: ['x'] })), 'MLFLOW_MODEL_INVALID', 422, /signature\.inputs\[0\] must be an object/);
});

test('flavors without ONNX are refused: pickle-based ones as pickles, the others as not ONNX; external data and stray paths too', () => {
  const sklearn = {
    sklearn: { pickled_model: 'model.pkl', serialization_format: 'cloudpickle' },
    python_function: { loader_module: 'mlflow.sklearn', model_path: 'model.pkl' },
  };
  throwsCode(
    () => read(mlflowArchive({ flavors: sklearn })),
    'UNSUPPORTED_MODEL_FORMAT',
    422,
    /upload\.tar\.gz is an MLflow model without the onnx flavor \(flavors: sklearn, python_function\), whose model is a Python pickle; it is refused because loading a pickle executes arbitrary code/,
  );
  throwsCode(
    () => read(mlflowArchive({ flavors: { tensorflow: { saved_model_dir: 'tfmodel' } } })),
    'NOT_ONNX',
    422,
    /without the onnx flavor \(flavors: tensorflow\).*scoreline serves ONNX only/,
  );
  for (const data of ['../model.onnx', '/etc/passwd', 'a/../../b', 'C:\\model.onnx']) {
    throwsCode(
      () => read(mlflowArchive({ flavors: { onnx: { data } } })),
      'MLFLOW_MODEL_INVALID',
      422,
      /is not a plain relative path inside the model's folder/,
    );
  }
  throwsCode(
    () => read(mlflowArchive({ flavors: { onnx: { data: 'missing.onnx' } } })),
    'MLFLOW_MODEL_INVALID',
    422,
    /model file 'missing\.onnx' is not there/,
  );
  throwsCode(
    () => read(mlflowArchive({ onnx: new TextEncoder().encode('not a model') })),
    'NOT_ONNX',
    422,
    /upload\.tar\.gz \(model\.onnx\) is not an ONNX model/,
  );
});

test('an MLflow model saved with ONNX external data is refused, saying how to save it inline', async () => {
  const ext = writeExternalInitializerModel(join(await tempDir(), 'ext'));
  const err = throwsCode(
    () => read(mlflowArchive({ onnx: ext.bytes, inputs: null })),
    'EXTERNAL_DATA',
    422,
    /keeps the data of tensor 'w'/,
  );
  assert.match(err.message, /mlflow\.onnx\.log_model\(\.\.\., save_as_external_data=False\)/);
});

test('archives are refused whole when an entry is a link, absolute, climbs out, is a device, or when they are not archives or unpack too large', () => {
  const files = [...mlflowFiles()].map(([path, data]) => ({ path, data }));
  const cases: [string, Parameters<typeof tarball>[0], RegExp][] = [
    ['symlink', [...files, { path: 'evil', type: '2', link: '/etc/passwd' }], /entry 'evil' is a link/],
    ['hard link', [...files, { path: 'evil', type: '1', link: '/etc/shadow' }], /entry 'evil' is a link/],
    ['absolute', [{ path: '/tmp/MLmodel', data: files[0]!.data }, ...files], /entry '\/tmp\/MLmodel' points outside the archive/],
    ['dot-dot', [...files, { path: 'model/../../x', data: new Uint8Array(1) }], /points outside the archive/],
    ['device', [...files, { path: 'dev', type: '3' }], /entry 'dev' is a CharacterDevice/],
  ];
  for (const [name, entries, message] of cases) {
    const e = throwsCode(() => read(tarball(entries)), 'BAD_REQUEST', 400, message);
    assert.ok(isScorelineError(e), name);
  }
  throwsCode(
    () => read(Buffer.from('definitely not a tarball, not even gzip; '.repeat(40))),
    'BAD_REQUEST',
    400,
    /is not a readable tar or tar\.gz archive|holds no files/,
  );
  throwsCode(
    () => read(tarball([{ path: 'readme.txt', data: new Uint8Array(10) }])),
    'MLFLOW_MODEL_INVALID',
    422,
    /there is no MLmodel at the top of the archive or in its one top-level folder/,
  );
  throwsCode(() => read(mlflowArchive({ example: { data: 'x'.repeat(8192) } }), 4096), 'BODY_TOO_LARGE', 413);
});

test('a repository version folder holding an MLflow model is imported: artifact, features from the signature (model.yaml wins), lineage', async () => {
  await withRegistry(async (env) => {
    writeMlflowFolder(join(env.repoDir, 'credit', '1'));
    writeMlflowFolder(join(env.repoDir, 'credit', '2'), {
      graph: 'second',
      inputs: [{ type: 'tensor', 'tensor-spec': { dtype: 'float32', shape: [-1, 3] } }],
    });
    writeMlflowFolder(join(env.repoDir, 'named', '1'));
    writeFileSync(join(env.repoDir, 'named', 'model.yaml'), 'features: [a, b, c]\n');
    writeMlflowFolder(join(env.repoDir, 'pickled', '1'), { flavors: { sklearn: { pickled_model: 'model.pkl' } } });
    const scan = scanRepository(env.repoDir);
    assert.deepEqual(
      scan.refused.map((r) => [r.model, r.version, r.code]),
      [['pickled', 1, 'UNSUPPORTED_MODEL_FORMAT']],
    );
    const reg = env.open();
    const r = reg.importRepository(scan);
    assert.deepEqual(
      r.imported.map((v) => `${v.name}/${v.version}`),
      ['credit/1', 'credit/2', 'named/1'],
    );
    assert.deepEqual(
      r.skipped.map((s) => [s.model, s.code]),
      [['pickled', 'UNSUPPORTED_MODEL_FORMAT']],
    );
    const v1 = reg.getVersion('credit', 1);
    assert.equal(v1.sha256, sha(logisticOnnx()));
    assert.deepEqual(v1.config.features, MLFLOW_FEATURES);
    assert.equal(v1.lineage.source, join(env.repoDir, 'credit', '1', 'model.onnx'));
    assert.equal((v1.lineage.mlflow as Record<string, unknown>).run_id, 'a1b2c3d4e5f60718293a4b5c6d7e8f90');
    assert.equal(reg.getVersion('credit', 2).config.features, undefined, 'a tensor signature names no features');
    assert.deepEqual(reg.getVersion('named', 1).config.features, ['a', 'b', 'c']);
    assert.deepEqual(readMlflowFolder(join(env.repoDir, 'credit', '1')).features, MLFLOW_FEATURES);

    // Versions are immutable: other bytes under version 1 are refused, without being read as a model.
    mkdirSync(join(env.repoDir, 'credit', '1'), { recursive: true });
    writeFileSync(join(env.repoDir, 'credit', '1', 'model.onnx'), logisticOnnx('changed'));
    const again = reg.importRepository(scanRepository(env.repoDir));
    const conflict = again.skipped.find((s) => s.model === 'credit');
    assert.equal(conflict?.code, 'CONFLICT');
    assert.match(conflict!.reason, /version 1 of model 'credit' already exists with different bytes .* versions are immutable/);
    assert.equal(reg.getVersion('credit', 1).sha256, sha(logisticOnnx()));
  });
});
