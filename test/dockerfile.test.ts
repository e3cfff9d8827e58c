// The Dockerfile cannot be built here (no registry to pull the base image from), so the image is
// checked as far as this machine allows: the Dockerfile is linted (pinned base, cache-friendly layer
// order, offline-capable native builds, tini, non-root, JSON-form commands, HEALTHCHECK), every
// COPY source exists and passes .dockerignore, .dockerignore keeps state and secrets out of the
// build context, and the runtime stage's /app is assembled for real -- production dependencies of
// this platform only, through scripts/prune-runtime.mjs as the Dockerfile runs it -- and started
// with the image's own ENTRYPOINT + CMD: the demo answers /v1/score and the HEALTHCHECK passes.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { test } from 'node:test';
import { serveConfig } from '../src/cli.js';
import { request, ROOT, startServer } from './e2e/server.js';

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const instructions = dockerfile
  .replace(/\\\n/g, ' ')
  .split('\n')
  .map((l) => l.trim().replace(/\s+/g, ' '))
  .filter((l) => l && !l.startsWith('#'));
/** Instructions per stage (stage 0 is what precedes the first FROM: global ARGs). */
const stages: string[][] = [[]];
for (const l of instructions) {
  if (l.startsWith('FROM ')) stages.push([]);
  stages[stages.length - 1]!.push(l);
}
const args = (list: string[], op: string) => list.filter((l) => l.startsWith(`${op} `)).map((l) => l.slice(op.length + 1).trim());
const [globals, build, runtime] = stages as [string[], string[], string[]];

// ---- .dockerignore, with Docker's semantics: patterns in order, the last match decides, `!` re-includes.
const ignoreRules = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'))
  .map((l) => {
    const negate = l.startsWith('!');
    const pattern = (negate ? l.slice(1) : l).replace(/^\/+|\/+$/g, '');
    const re = pattern
      .split('/')
      .map((part) =>
        part === '**'
          ? '(?:.*)'
          : part
              .replace(/[.+^${}()|[\]\\]/g, '\\$&')
              .replace(/\*/g, '[^/]*')
              .replace(/\?/g, '[^/]'),
      )
      .join('/')
      .replace(/\(\?:\.\*\)\//g, '(?:.*/)?');
    return { negate, re: new RegExp(`^${re}(?:/.*)?$`) };
  });
const ignoreSources = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l.startsWith('!'))
  .map((l) => l.slice(1));
/** Whether a path (relative to the context, '/'-separated) is excluded from the build context. */
function ignored(path: string): boolean {
  let out = false;
  for (const r of ignoreRules) if (r.re.test(path)) out = !r.negate;
  return out;
}

function sizeOf(path: string): number {
  const st = lstatSync(path);
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const e of readdirSync(path)) n += sizeOf(join(path, e));
  return n;
}
/** Bytes of the build context: every file under ROOT that .dockerignore lets in (all of them when `filter` is off). */
function contextBytes(dir = ROOT, filter = true): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    const rel = relative(ROOT, p).split(sep).join('/');
    if (rel === '.git') continue;
    const real = e.isSymbolicLink() ? realpathSync(p) : p;
    if (lstatSync(real).isDirectory()) {
      // An excluded folder is entered only when an exception (`!path`) may let something inside back in.
      const reopened = ignoreSources.some((src) => src.startsWith(`${rel}/`));
      if (!filter || !ignored(rel) || reopened) n += real === p ? contextBytes(p, filter) : sizeOf(real);
    } else if (!filter || !ignored(rel)) {
      n += lstatSync(real).size;
    }
  }
  return n;
}
const MB = (b: number) => `${(b / 1e6).toFixed(1)} MB`;

test('lint: pinned glibc base, apt hygiene, no ADD, absolute WORKDIR, JSON-form commands, non-root', () => {
  const arg = args(globals, 'ARG').find((a) => a.startsWith('NODE_IMAGE='));
  assert.ok(arg, 'the base image is one ARG both stages use');
  assert.match(arg, /^NODE_IMAGE=node:20-bookworm-slim@sha256:[0-9a-f]{64}$/, 'pinned by digest, glibc (bookworm), not Alpine');
  assert.match(
    dockerfile,
    /# The base image is pinned by digest[\s\S]*imagetools inspect node:20-bookworm-slim[\s\S]*skopeo inspect/,
    'the comment says how to update the digest',
  );
  assert.equal(stages.length, 3, 'two stages');
  for (const s of [build, runtime]) assert.match(s[0]!, /^FROM \$\{NODE_IMAGE\}/);
  assert.equal(instructions.filter((l) => l.startsWith('ADD ')).length, 0, 'COPY, never ADD');
  for (const w of args(instructions, 'WORKDIR')) assert.match(w, /^\//);
  for (const r of args(instructions, 'RUN').filter((x) => x.includes('apt-get install'))) {
    assert.match(
      r,
      /apt-get update && apt-get install -y --no-install-recommends /,
      `update and install in one layer, no recommends: ${r}`,
    );
    assert.match(r, /rm -rf \/var\/lib\/apt\/lists\/\*/, 'package lists removed in the same layer');
  }
  for (const op of ['CMD', 'ENTRYPOINT']) for (const v of args(runtime, op)) assert.doesNotThrow(() => JSON.parse(v), `${op} in JSON form`);
  assert.deepEqual(args(runtime, 'USER'), ['node']);
  assert.ok(runtime.findIndex((l) => l.startsWith('USER ')) < runtime.findIndex((l) => l.startsWith('ENTRYPOINT ')));
  assert.deepEqual(
    args(runtime, 'EXPOSE').flatMap((e) => e.split(/\s+/)),
    ['8080', '8081'],
    'HTTP and OIP gRPC',
  );
  assert.deepEqual(args(runtime, 'VOLUME'), ['/data']);
});

test('init: tini is PID 1 in front of the CLI; HEALTHCHECK is noted as Docker-format for podman', () => {
  assert.ok(args(runtime, 'RUN').some((r) => /apt-get install -y --no-install-recommends tini\b/.test(r)));
  assert.deepEqual(JSON.parse(args(runtime, 'ENTRYPOINT')[0]!), ['/usr/bin/tini', '--', 'node', 'bin/scoreline.js']);
  assert.match(dockerfile, /podman build --format docker/);
  assert.match(dockerfile, /`docker run --init`/);
  assert.equal(args(runtime, 'HEALTHCHECK').length, 1);
});

test('layers: dependencies and the addon build before the sources, so an edit in src/ does not rerun npm ci', () => {
  const idx = (re: RegExp) => build.findIndex((l) => re.test(l));
  const npmCi = idx(/^RUN npm ci /);
  assert.ok(npmCi > 0);
  assert.ok(idx(/^COPY package\.json package-lock\.json binding\.gyp \.\/$/) < npmCi);
  assert.ok(idx(/^COPY native native$/) < npmCi);
  for (const late of [/^COPY src src$/, /^COPY bin bin$/, /^COPY examples examples$/, /^COPY tsconfig\.json/])
    assert.ok(idx(late) > npmCi, `${late} after npm ci`);
});

test('offline-capable native builds: Node headers from the image, SQLite from source, no dependency install scripts', () => {
  const ci = args(build, 'RUN').find((r) => r.startsWith('npm ci'))!;
  assert.match(ci, /^npm ci --ignore-scripts /, "no dependency's install script runs (onnxruntime-node's downloads CUDA)");
  assert.match(
    ci,
    /cd node_modules\/better-sqlite3 && node "\$NODE_GYP" rebuild --release/,
    'better-sqlite3 compiled from its bundled SQLite, not prebuild-install',
  );
  assert.match(ci, /&& node "\$NODE_GYP" rebuild --release$/, "scoreline's addon");
  const env = args(build, 'ENV').join(' ');
  assert.match(env, /npm_config_nodedir=\/usr\/local/, "node-gyp takes the image's headers");
  assert.match(
    env,
    /NODE_GYP=\/usr\/local\/lib\/node_modules\/npm\/node_modules\/node-gyp\/bin\/node-gyp\.js/,
    "npm's own node-gyp, nothing fetched",
  );
  assert.ok(
    args(build, 'ARG').some((a) => a.startsWith('NPM_CONFIG_REGISTRY=')),
    'a registry mirror can be given',
  );
  const prune = args(build, 'RUN').find((r) => r.includes('prune-runtime.mjs'))!;
  assert.ok(prune.indexOf('tsc -p') < prune.indexOf('prune-runtime.mjs'), 'pruned after the TypeScript build (tsc is a devDependency)');
});

test('every COPY source exists and is in the build context; .dockerignore keeps state and secrets out', () => {
  for (const c of args(build, 'COPY')) {
    for (const src of c.split(/\s+/).slice(0, -1)) {
      assert.ok(existsSync(join(ROOT, src)), `COPY source ${src} is missing`);
      assert.ok(!ignored(src.replace(/\/$/, '')), `COPY source ${src} is excluded by .dockerignore`);
    }
  }
  for (const state of [
    'node_modules',
    'node_modules/typescript/package.json',
    'data',
    'data/admin-token',
    'data/registry.db',
    'dist',
    'build',
    'test',
    'bench',
    '.git',
    'examples/data/admin-token',
    'src/data',
    'scoreline.log',
    '.env',
    'examples/.env.local',
    'test-artifacts',
    'scripts/native-test.sh',
  ]) {
    assert.ok(ignored(state), `${state} is kept out of the build context`);
  }
  for (const needed of [
    'src/server/dashboard.html',
    'src/retraining/data.ts',
    'examples/models/credit-default/1/model.onnx',
    'examples/features/customers.csv',
    'native/cache.cc',
  ]) {
    assert.ok(!ignored(needed), `${needed} is in the build context`);
  }
});

test("the runtime stage's /app, assembled as the Dockerfile does, serves the demo with the image's command", {
  timeout: 180_000,
}, async (t) => {
  // Build context size with and without .dockerignore.
  const context = contextBytes();
  const unfiltered = contextBytes(ROOT, false);
  t.diagnostic(`build context: ${MB(context)} with .dockerignore, ${MB(unfiltered)} without`);
  assert.ok(context < 10e6, `build context ${MB(context)}`);

  // What prune-runtime.mjs removes from this checkout's dependencies (dry run: node_modules is shared).
  const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'prune-runtime.mjs'), '--root', ROOT, '--dry-run'], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as {
    removedBytes: number;
    nodeModulesBytesAfter: number;
    removed: { path: string; bytes: number; why: string }[];
  };
  const removed = new Set(report.removed.map((x) => join(ROOT, x.path)));
  for (const dev of ['typescript', 'playwright-core', 'fastify', '@biomejs/biome']) {
    assert.ok(removed.has(join(ROOT, 'node_modules', dev)), `devDependency ${dev} is pruned`);
  }
  const ort = join(ROOT, 'node_modules', 'onnxruntime-node', 'bin', 'napi-v6');
  for (const p of readdirSync(ort).filter((x) => x !== process.platform))
    assert.ok(removed.has(join(ort, p)), `onnxruntime ${p} binaries are pruned`);

  // Assemble /app: the files the runtime stage copies, node_modules without what the prune removes.
  const app = join(tmpdir(), `scoreline-image-${process.pid}`);
  rmSync(app, { recursive: true, force: true });
  const modules = realpathSync(join(ROOT, 'node_modules'));
  try {
    mkdirSync(app);
    cpSync(modules, join(app, 'node_modules'), {
      recursive: true,
      verbatimSymlinks: true,
      filter: (src) => !removed.has(src === modules ? join(ROOT, 'node_modules') : join(ROOT, 'node_modules', relative(modules, src))),
    });
    for (const c of args(runtime, 'COPY').filter((x) => x.startsWith('--from=build '))) {
      const [from, to] = c.slice('--from=build '.length).split(/\s+/) as [string, string];
      if (from === '/app/node_modules') continue;
      const src = join(ROOT, relative('/app', from));
      assert.ok(existsSync(src), `the build stage makes ${from}`);
      cpSync(src, join(app, to === './' ? relative('/app', from) : to), { recursive: true });
    }
    // The build stage's `cp src/server/dashboard.html dist/src/server/dashboard.html`.
    assert.match(args(build, 'RUN').join('\n'), /cp src\/server\/dashboard\.html dist\/src\/server\/dashboard\.html/);
    cpSync(join(ROOT, 'src', 'server', 'dashboard.html'), join(app, 'dist', 'src', 'server', 'dashboard.html'));
    // ... and its copy of the gRPC definition into dist/.
    cpSync(join(ROOT, 'src', 'server', 'proto'), join(app, 'dist', 'src', 'server', 'proto'), { recursive: true });
    assert.ok(!existsSync(join(app, 'node_modules', 'typescript')) && !existsSync(join(app, 'src')));
    const appBytes = sizeOf(app);
    const oldApp =
      sizeOf(modules) +
      [
        'dist',
        'build',
        'src',
        'examples',
        'bin',
        'native',
        'scripts',
        'package.json',
        'package-lock.json',
        'tsconfig.json',
        'binding.gyp',
      ].reduce((a, p) => a + (existsSync(join(ROOT, p)) ? sizeOf(join(ROOT, p)) : 0), 0);
    t.diagnostic(
      `runtime /app: ${MB(appBytes)} (node_modules ${MB(sizeOf(join(app, 'node_modules')))}); the previous Dockerfile's /app (everything, devDependencies, every platform): ${MB(oldApp)}`,
    );
    assert.ok(appBytes < oldApp / 3);

    // The image's ENTRYPOINT + CMD, tini left out (the host has none in the test), in /app.
    const entry = JSON.parse(args(runtime, 'ENTRYPOINT')[0]!) as string[];
    const cmd = JSON.parse(args(runtime, 'CMD')[0]!) as string[];
    assert.deepEqual(entry.slice(2), ['node', 'bin/scoreline.js']);
    const config = serveConfig(cmd.slice(1).map((a) => (a === 'examples/scoreline.yaml' ? join(app, a) : a)));
    assert.ok(config);
    assert.equal(config.dataDir, '/data');
    assert.equal(config.server.port, 8080);
    assert.equal(config.grpc.port, 8081, 'the gRPC port EXPOSE names');
    assert.ok(config.features.definitions !== null, 'the default command serves the demo with its feature definitions');
    const dataDir = join(app, 'data-volume');
    const server = await startServer(
      [...cmd.slice(1).map((a) => (a === '/data' ? dataDir : a === '8080' ? '0' : a))],
      {},
      { cli: join(app, 'bin', 'scoreline.js'), cwd: app },
    );
    try {
      const score = await request(`${server.url}/v1/score/credit-default`, {
        json: { entity: { customer_id: 'C00042' }, context: { amount: 5200, duration_months: 24 } },
      });
      assert.equal(score.status, 200, score.text);
      const ev = await request(`${server.url}/v1/events`, {
        json: { event: 'transaction', entity: { customer_id: 'C00042' }, fields: { amount: 1 } },
      });
      assert.equal(ev.status, 200, ev.text);
      const fb = await request(`${server.url}/v1/feedback`, { json: { request_id: score.body.request_id, label: 0 } });
      assert.equal(fb.body.joined, 1, fb.text);
      assert.equal((await request(`${server.url}/dashboard`)).status, 200);
      const hc = /CMD (\[.*\])$/.exec(args(runtime, 'HEALTHCHECK')[0]!)![1]!;
      const [exe, ...hcArgs] = JSON.parse(hc) as string[];
      assert.equal(exe, 'node');
      const pointed = hcArgs.map((a) => a.replace('127.0.0.1:8080', `127.0.0.1:${server.port}`));
      assert.equal(spawnSync(process.execPath, pointed, { timeout: 10_000 }).status, 0, 'HEALTHCHECK passes against the ready server');
      await server.stop();
      assert.equal(spawnSync(process.execPath, pointed, { timeout: 10_000 }).status, 1, 'and fails once the server is gone');
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});

test("one image name: the Dockerfile, the README, the manifests and the bundle base say scoreline:<version>; a bundle's CLI line and README agree", async () => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const image = `scoreline:${version}`;
  assert.ok(dockerfile.includes(`docker build -t ${image} .`));
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  // Image references (a tag starting with a digit), not volume names like scoreline-data:/data.
  const tags = [...readme.matchAll(/(?:docker|podman) (?:build|run)[^\n]*? (scoreline(?:-[a-z0-9-]+)?:[0-9][\w.-]*)/g)].map((m) => m[1]);
  assert.ok(tags.length >= 3);
  assert.deepEqual([...new Set(tags)], [image], 'the README builds and runs one image name');
  assert.match(
    readFileSync(join(ROOT, 'deploy', 'kubernetes', 'scoreline-deployment.yaml'), 'utf8'),
    new RegExp(`image: ${image.replace('.', '\\.')}\\n`),
  );
  const { DEFAULT_BASE_IMAGE } = await import('../src/deploy/bundle.js');
  assert.equal(DEFAULT_BASE_IMAGE, image);

  const { ModelRegistry } = await import('../src/registry/store.js');
  const { writeSumModel } = await import('./fixtures/models.js');
  const dir = join(tmpdir(), `scoreline-bundle-tag-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  try {
    const registry = ModelRegistry.open(join(dir, 'data'));
    registry.register('sum', (await writeSumModel(join(dir, 'repo'), 'sum', 1)).bytes);
    registry.close();
    const r = spawnSync(
      process.execPath,
      [join(ROOT, 'bin', 'scoreline.js'), 'bundle', '--model', 'sum', '--out', join(dir, 'bundle'), '--data-dir', join(dir, 'data')],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    const line = /^build it: docker build -t (\S+) /m.exec(r.stdout);
    assert.ok(line, r.stdout);
    assert.equal(line[1], 'scoreline-sum:1');
    assert.ok(
      readFileSync(join(dir, 'bundle', 'README.md'), 'utf8').includes(`docker build -t ${line[1]} .`),
      'the bundle README builds the same tag',
    );
    assert.ok(readFileSync(join(dir, 'bundle', 'Dockerfile'), 'utf8').includes(`FROM ${image}`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
