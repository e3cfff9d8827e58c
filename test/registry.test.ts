// Tests for the model registry (src/registry/store.ts, artifacts.ts) on real SQLite files in temp
// dirs and real ONNX bytes from the fixture writers: round trips, idempotent registration, version
// conflicts, alias history, tampered and missing artifacts, version updates, deployment state and
// history, and repository import across restarts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { ArtifactStore } from '../src/registry/artifacts.js';
import { scanRepository } from '../src/registry/repository.js';
import { writeLogisticModel, writeSumModel } from './fixtures/models.js';
import { PICKLE_4, sha, throwsCode, withRegistry as withEnv } from './fixtures/registry.js';

test('register stores the artifact by sha256 and round-trips the version record', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    const bytes = await env.bytes(1);
    const result = reg.register('credit', bytes, {
      source: '/models/credit.onnx',
      description: 'PD model',
      tags: { team: 'risk' },
      metrics: { auc: 0.81 },
      lineage: { trainingJobId: 'job-7', dataWindow: { from: '2023-01', to: '2023-12' } },
      config: { features: ['a', 'b', 'c', 'd'] },
    });
    assert.deepEqual(result, { name: 'credit', version: 1, sha256: sha(bytes), size: bytes.length, created: true });

    const path = join(env.dataDir, 'artifacts', result.sha256.slice(0, 2), `${result.sha256}.onnx`);
    assert.equal(reg.artifacts.path(result.sha256), path);
    assert.deepEqual(readFileSync(path), Buffer.from(bytes));

    const v = reg.getVersion('credit', 1);
    assert.deepEqual(v, {
      model: 'credit',
      version: 1,
      sha256: sha(bytes),
      size: bytes.length,
      createdAt: '2024-01-01T00:00:00.000Z',
      signature: { inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }], outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 1] }] },
      metrics: { auc: 0.81 },
      tags: { team: 'risk' },
      lineage: { source: '/models/credit.onnx', trainingJobId: 'job-7', dataWindow: { from: '2023-01', to: '2023-12' } },
      config: { features: ['a', 'b', 'c', 'd'] },
      reference: null,
      referenceData: null,
      aliases: [],
    });
    assert.deepEqual(reg.listModels(), [
      {
        name: 'credit',
        description: 'PD model',
        createdAt: '2024-01-01T00:00:00.000Z',
        latestVersion: 1,
        versionCount: 1,
        aliases: {},
      },
    ]);
    const loaded = reg.load('credit', 1);
    assert.deepEqual(loaded.bytes, Buffer.from(bytes));
    assert.equal(loaded.record.sha256, sha(bytes));
  });
});

test('versions are numbered in order; the same bytes again return the existing version', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    const [b1, b2, b3] = [await env.bytes(1), await env.bytes(2), await env.bytes(3)];
    assert.equal(reg.register('m', b1).version, 1);
    assert.equal(reg.register('m', b2).version, 2);
    assert.deepEqual(reg.register('m', b1), { name: 'm', version: 1, sha256: sha(b1), size: b1.length, created: false });
    assert.deepEqual(reg.register('m', b1, { version: 1 }).created, false);
    assert.deepEqual(
      reg.listVersions('m').map((v) => v.version),
      [1, 2],
    );
    // A requested number may skip ahead; the next automatic one follows the highest.
    assert.equal(reg.register('m', b3, { version: 7 }).version, 7);
    assert.equal(reg.register('m', await env.bytes(4)).version, 8);
    assert.equal(reg.getModel('m').latestVersion, 8);
    assert.equal(reg.getModel('m').versionCount, 4);
    // The same bytes under another model are a separate version there.
    assert.deepEqual(reg.register('other', b1), { name: 'other', version: 1, sha256: sha(b1), size: b1.length, created: true });
  });
});

test('a requested version taken by other bytes, or bytes registered under another number, is a 409', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    const [b1, b2] = [await env.bytes(1), await env.bytes(2)];
    reg.register('m', b1);
    throwsCode(() => reg.register('m', b2, { version: 1 }), 'CONFLICT', 409, /version 1 of model 'm' already exists with different bytes/);
    throwsCode(() => reg.register('m', b1, { version: 5 }), 'CONFLICT', 409, /identical to version 1 of model 'm'/);
    assert.deepEqual(
      reg.listVersions('m').map((v) => [v.version, v.sha256]),
      [[1, sha(b1)]],
    );
    // Nothing of the refused bytes reached the artifact store.
    assert.equal(reg.artifacts.has(sha(b2)), false);
  });
});

test('bad names, versions and formats are refused and leave nothing behind', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    const b1 = await env.bytes(1);
    throwsCode(() => reg.register('../etc', b1), 'BAD_REQUEST', 400, /not a valid model name/);
    throwsCode(() => reg.register('m', b1, { version: 0 }), 'BAD_REQUEST', 400, /integers from 1/);
    throwsCode(() => reg.register('m', b1, { version: 1.5 }), 'BAD_REQUEST', 400);
    throwsCode(
      () => reg.register('m', PICKLE_4, { source: 'model.pkl' }),
      'UNSUPPORTED_MODEL_FORMAT',
      422,
      /model\.pkl is a Python pickle \(protocol 4\).*arbitrary code.*skl2onnx/,
    );
    throwsCode(() => reg.register('m', deflateSync(PICKLE_4)), 'UNSUPPORTED_MODEL_FORMAT', 422, /joblib dump/);
    throwsCode(() => reg.register('m', Buffer.from('not a model at all')), 'NOT_ONNX', 422, /hummingbird/);
    assert.deepEqual(reg.listModels(), []);
    assert.deepEqual(readdirSync(join(env.dataDir, 'artifacts')), []);
    throwsCode(() => reg.getModel('m'), 'MODEL_NOT_FOUND', 404);
  });
});

test('aliases move with a full from/to history and resolve like version numbers', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    for (const v of [1, 2, 3]) reg.register('m', await env.bytes(v));
    const set1 = reg.setAlias('m', 'champion', 1, { reason: 'first model', actor: 'ana' });
    assert.deepEqual(set1, { model: 'm', alias: 'champion', from: null, to: 1, at: set1.at, reason: 'first model', actor: 'ana' });
    reg.setAlias('m', 'challenger', 2, { reason: 'retrained', actor: 'bot' });
    const moved = reg.setAlias('m', 'champion', 2, { reason: 'won the challenge', actor: 'ana' });
    assert.equal(moved.from, 1);
    assert.equal(moved.to, 2);
    // Setting it where it already points is not a move.
    assert.deepEqual(reg.setAlias('m', 'champion', 2).from, 2);

    assert.equal(reg.resolve('m', 'champion').version, 2);
    assert.equal(reg.resolve('m', '3').version, 3);
    assert.equal(reg.resolve('m', 'latest').version, 3);
    assert.deepEqual(reg.getModel('m').aliases, { challenger: 2, champion: 2 });
    assert.deepEqual(reg.getVersion('m', 2).aliases, ['challenger', 'champion']);
    assert.deepEqual(reg.getVersion('m', 1).aliases, []);

    const history = reg.aliasHistory('m', 'champion').map(({ from, to, reason, actor }) => ({ from, to, reason, actor }));
    assert.deepEqual(history, [
      { from: null, to: 1, reason: 'first model', actor: 'ana' },
      { from: 1, to: 2, reason: 'won the challenge', actor: 'ana' },
    ]);
    assert.deepEqual(
      reg.aliasHistory('m').map((e) => `${e.alias}:${e.from}->${e.to}`),
      ['champion:null->1', 'challenger:null->2', 'champion:1->2'],
    );
    const ats = reg.aliasHistory('m').map((e) => e.at);
    assert.deepEqual([...ats].sort(), ats);

    // Restoring a past state is one more move, recorded like any other.
    const previous = reg.aliasHistory('m', 'champion').at(-1)!.from!;
    reg.setAlias('m', 'champion', previous, { reason: 'rollback', actor: 'ana' });
    assert.equal(reg.resolve('m', 'champion').version, 1);

    const deleted = reg.deleteAlias('m', 'challenger', { reason: 'retired' });
    assert.deepEqual([deleted.from, deleted.to], [2, null]);
    throwsCode(() => reg.resolve('m', 'challenger'), 'ALIAS_NOT_FOUND', 404, /model 'm' has no alias 'challenger'/);
    throwsCode(() => reg.deleteAlias('m', 'challenger'), 'ALIAS_NOT_FOUND', 404);
    assert.equal(reg.aliasHistory('m').length, 5);
  });
});

test('alias names and targets are validated', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    reg.register('m', await env.bytes(1));
    for (const bad of ['1', '9abc', 'Champion', 'latest', '', 'a b', 'x'.repeat(65)]) {
      throwsCode(() => reg.setAlias('m', bad, 1), 'BAD_REQUEST', 400, /not a valid alias name/);
    }
    throwsCode(() => reg.setAlias('m', 'champion', 4), 'VERSION_NOT_FOUND', 404, /model 'm' has no version '4'/);
    throwsCode(() => reg.setAlias('nope', 'champion', 1), 'MODEL_NOT_FOUND', 404);
    assert.deepEqual(reg.aliasHistory('m'), []);
    throwsCode(() => reg.resolve('m', '2'), 'VERSION_NOT_FOUND', 404);
    throwsCode(() => reg.resolve('nope', '1'), 'MODEL_NOT_FOUND', 404);
  });
});

test('a tampered artifact is refused on every load and counted; other versions keep loading', async () => {
  await withEnv(async (env) => {
    const refusals: string[] = [];
    const reg = env.open({ onArtifactRefusal: (e, digest) => refusals.push(`${e.code} ${digest}`) });
    const [b1, b2] = [await env.bytes(1), await env.bytes(2)];
    reg.register('m', b1);
    reg.register('m', b2);
    const path = reg.artifacts.path(sha(b1));
    chmodSync(path, 0o644);
    const tampered = Buffer.from(b1);
    tampered[tampered.length >> 1]! ^= 0x01;
    writeFileSync(path, tampered);

    throwsCode(
      () => reg.load('m', 1),
      'ARTIFACT_TAMPERED',
      500,
      new RegExp(`artifact ${sha(b1)} was modified on disk \\(its content now hashes to ${sha(tampered)}\\)`),
    );
    throwsCode(() => reg.load('m', 1), 'ARTIFACT_TAMPERED', 500);
    assert.deepEqual(reg.counters(), { tamperedRefusals: 2, missingRefusals: 0 });
    assert.deepEqual(refusals, [`ARTIFACT_TAMPERED ${sha(b1)}`, `ARTIFACT_TAMPERED ${sha(b1)}`]);
    assert.deepEqual(reg.load('m', 2).bytes, Buffer.from(b2));

    // Registering the original bytes again restores the artifact under its address.
    assert.equal(reg.register('m', b1).created, false);
    assert.deepEqual(reg.load('m', 1).bytes, Buffer.from(b1));
    assert.equal(reg.counters().tamperedRefusals, 2);
  });
});

test('a missing artifact is refused with ARTIFACT_MISSING and counted', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    const b1 = await env.bytes(1);
    reg.register('m', b1);
    rmSync(reg.artifacts.path(sha(b1)));
    throwsCode(() => reg.load('m', 1), 'ARTIFACT_MISSING', 500, new RegExp(`artifact ${sha(b1)} is missing`));
    assert.deepEqual(reg.counters(), { tamperedRefusals: 0, missingRefusals: 1 });
    assert.equal(reg.artifacts.has(sha(b1)), false);
  });
});

test('the artifact store writes atomically, is idempotent and refuses hashes that are not hashes', async () => {
  await withEnv(async (env) => {
    const store = new ArtifactStore(env.dataDir);
    const b1 = await env.bytes(1);
    const first = store.put(b1);
    assert.deepEqual(store.put(b1), first);
    assert.deepEqual(first, { sha256: sha(b1), path: store.path(sha(b1)), size: b1.length });
    // One file in the shard folder: no temp files left behind.
    assert.deepEqual(readdirSync(join(env.dataDir, 'artifacts', sha(b1).slice(0, 2))), [`${sha(b1)}.onnx`]);
    assert.equal(store.has(sha(b1)), true);
    assert.deepEqual(store.read(sha(b1)), Buffer.from(b1));
    for (const bad of ['../../etc/passwd', sha(b1).toUpperCase(), sha(b1).slice(1)]) {
      throwsCode(() => store.path(bad), 'BAD_REQUEST', 400, /is not a sha256/);
    }
  });
});

test('updateVersion merges metrics and tags and replaces the reference', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    reg.register('m', await env.bytes(1), { metrics: { auc: 0.8 }, tags: { team: 'risk', stage: 'dev' } });
    const reference = { edges: [0.1, 0.2, 0.3], shares: [0.25, 0.25, 0.25, 0.25] };
    let v = reg.updateVersion('m', 1, { metrics: { ks: 0.41, auc: 0.82 }, tags: { stage: null, owner: 'ana' }, reference });
    assert.deepEqual(v.metrics, { auc: 0.82, ks: 0.41 });
    assert.deepEqual(v.tags, { team: 'risk', owner: 'ana' });
    assert.deepEqual(v.reference, reference);
    v = reg.updateVersion('m', 1, { metrics: { gini: 0.64 } });
    assert.deepEqual(v.metrics, { auc: 0.82, ks: 0.41, gini: 0.64 });
    assert.deepEqual(v.reference, reference);
    throwsCode(() => reg.updateVersion('m', 2, {}), 'VERSION_NOT_FOUND', 404);
  });
});

test('deployment state and its history round-trip, opaque to the registry', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    for (const v of [1, 2]) reg.register('m', await env.bytes(v));
    assert.equal(reg.getDeployment('m'), undefined);
    const direct = { strategy: 'direct', version: 1 };
    const canary = { strategy: 'canary', stable: 1, canary: 2, percent: 10, steps: [10, 50, 100], stepSeconds: 60 };
    reg.saveDeployment('m', direct, { action: 'deploy', reason: 'initial' });
    const saved = reg.saveDeployment('m', canary, { action: 'deploy', reason: 'retrained' });
    assert.deepEqual(saved.state, canary);
    assert.deepEqual(reg.getDeployment('m')?.state, canary);
    assert.deepEqual(
      reg.listDeployments().map((d) => [d.model, d.state]),
      [['m', canary]],
    );
    assert.deepEqual(
      reg.deploymentHistory('m').map(({ action, from, to, reason }) => ({ action, from, to, reason })),
      [
        { action: 'deploy', from: null, to: direct, reason: 'initial' },
        { action: 'deploy', from: direct, to: canary, reason: 'retrained' },
      ],
    );
    throwsCode(() => reg.saveDeployment('nope', direct, { action: 'deploy' }), 'MODEL_NOT_FOUND', 404);
    throwsCode(() => reg.saveDeployment('m', undefined, { action: 'deploy' }), 'BAD_REQUEST', 400);
  });
});

test('a model repository imports idempotently across restarts and reports versions it will not overwrite', async () => {
  await withEnv(async (env) => {
    const yaml = { features: ['a', 'b', 'c', 'd'], batching: { maxBatchSize: 32 } };
    const s1 = await writeSumModel(env.repoDir, 'sum', 1, { modelYaml: yaml });
    const s2 = await writeSumModel(env.repoDir, 'sum', 2, { modelYaml: yaml });
    const lr = await writeLogisticModel(env.repoDir, 'pd', 1);

    let reg = env.open();
    const first = reg.importRepository(scanRepository(env.repoDir));
    assert.deepEqual(
      first.imported.map((r) => `${r.name}@${r.version}`),
      ['pd@1', 'sum@1', 'sum@2'],
    );
    assert.deepEqual([first.unchanged, first.skipped], [[], []]);
    assert.deepEqual(reg.getVersion('sum', 2).config, yaml);
    assert.deepEqual(reg.getVersion('sum', 2).lineage, { source: s2.modelPath });
    assert.equal(reg.getVersion('pd', 1).sha256, sha(lr.bytes));
    reg.close();

    reg = env.open();
    rmSync(reg.artifacts.path(sha(s1.bytes))); // a lost artifact is restored from the repository
    const second = reg.importRepository(scanRepository(env.repoDir));
    assert.deepEqual(second.imported, []);
    assert.deepEqual(
      second.unchanged.map((r) => `${r.name}@${r.version}:${r.created}`),
      ['pd@1:false', 'sum@1:false', 'sum@2:false'],
    );
    assert.equal(reg.listVersions('sum').length, 2);
    assert.deepEqual(reg.load('sum', 1).bytes, Buffer.from(s1.bytes));

    // Folder 2 now holds other bytes, folder 3 a copy of version 1, folder 4 a pickle, folder 5 a new model.
    writeFileSync(s2.modelPath, await env.bytes(9));
    writeFileSync((await writeSumModel(env.repoDir, 'sum', 3)).modelPath, s1.bytes);
    const s4 = (await writeSumModel(env.repoDir, 'sum', 4)).modelPath;
    writeFileSync(s4, PICKLE_4);
    await writeSumModel(env.repoDir, 'sum', 5);
    const third = reg.importRepository(scanRepository(env.repoDir));
    assert.deepEqual(
      third.imported.map((r) => `${r.name}@${r.version}`),
      ['sum@5'],
    );
    assert.deepEqual(
      third.skipped.map((s) => [s.model, s.version, s.code]),
      [
        ['sum', 2, 'CONFLICT'],
        ['sum', 3, 'CONFLICT'],
        ['sum', 4, 'UNSUPPORTED_MODEL_FORMAT'],
      ],
    );
    assert.match(third.skipped[0]!.reason, /version 2 of model 'sum' already exists with different bytes/);
    assert.equal(third.skipped[2]!.path, s4);
    // The registry kept what it had.
    assert.equal(reg.getVersion('sum', 2).sha256, sha(s2.bytes));
    assert.deepEqual(
      reg.listVersions('sum').map((v) => v.version),
      [1, 2, 5],
    );
  });
});

test("a repository's reference rows are kept with its versions, verified on read, and never swapped", async () => {
  await withEnv(async (env) => {
    const yaml = { features: ['a', 'b', 'c', 'd'], reference: 'ref.csv', label: 'y' };
    const csv = 'a,b,c,d,y\n1,2,3,4,0\n4,3,2,1,1\n';
    await writeSumModel(env.repoDir, 'sum', 1, { modelYaml: yaml });
    writeFileSync(join(env.repoDir, 'sum', 'ref.csv'), csv);
    // A model whose model.yaml names a file that is not there gets none, and still imports.
    await writeSumModel(env.repoDir, 'lost', 1, { modelYaml: { ...yaml, reference: 'gone.csv' } });

    let reg = env.open();
    assert.deepEqual(reg.importRepository(scanRepository(env.repoDir)).skipped, []);
    const v1 = reg.getVersion('sum', 1);
    assert.equal(v1.referenceData, sha(Buffer.from(csv)));
    assert.equal(reg.referenceData('sum', 1)!.toString(), csv);
    assert.equal(readFileSync(reg.artifacts.path(v1.referenceData!, 'csv'), 'utf8'), csv);
    assert.equal(reg.getVersion('lost', 1).referenceData, null);
    assert.equal(reg.referenceData('lost', 1), null);

    // A later edit of the file does not change what version 1 was registered with; a new version takes the file as it is.
    const edited = `${csv}9,9,9,9,1\n`;
    writeFileSync(join(env.repoDir, 'sum', 'ref.csv'), edited);
    await writeSumModel(env.repoDir, 'sum', 2, { modelYaml: yaml });
    writeFileSync(join(env.repoDir, 'lost', 'gone.csv'), csv);
    reg.close();
    reg = env.open();
    const again = reg.importRepository(scanRepository(env.repoDir));
    assert.deepEqual(
      again.imported.map((r) => `${r.name}@${r.version}`),
      ['sum@2'],
    );
    assert.equal(reg.referenceData('sum', 1)!.toString(), csv);
    assert.equal(reg.referenceData('sum', 2)!.toString(), edited);
    // A version imported while its file was missing gets it once it is there.
    assert.equal(reg.referenceData('lost', 1)!.toString(), csv);

    const path = reg.artifacts.path(v1.referenceData!, 'csv');
    chmodSync(path, 0o644);
    writeFileSync(path, 'a,b,c,d,y\n0,0,0,0,0\n');
    throwsCode(
      () => reg.referenceData('sum', 1),
      'ARTIFACT_TAMPERED',
      500,
      new RegExp(`artifact ${v1.referenceData} was modified on disk`),
    );
  });
});

test('a path the sender of the bytes names is recorded as declaredSource, never as the source', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    reg.register('m', await env.bytes(1), { declaredSource: '/etc/passwd' });
    assert.deepEqual(reg.getVersion('m', 1).lineage, { declaredSource: '/etc/passwd' });
    throwsCode(
      () => reg.register('m', PICKLE_4, { declaredSource: '/home/me/model.pkl' }),
      'UNSUPPORTED_MODEL_FORMAT',
      422,
      /^'\/home\/me\/model\.pkl' \(as its sender names it\) is a Python pickle/,
    );
    // A file the caller read itself is the source; a declared one next to it is ignored.
    reg.register('m', await env.bytes(2), { source: '/repo/m/2/model.onnx', declaredSource: 'elsewhere' });
    assert.deepEqual(reg.getVersion('m', 2).lineage, { source: '/repo/m/2/model.onnx' });
  });
});
