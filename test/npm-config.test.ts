// npm commands in the project are quiet: no "Unknown project config" warning (npm 11 prints one for
// every key of .npmrc it does not know, on every command). onnxruntime-node's install script, which
// downloads CUDA libraries scoreline does not use, is kept from running without such a key: npm
// 11.16+ skips it through package.json's allowScripts, older npm through the package's documented
// ONNXRUNTIME_NODE_INSTALL=skip, which the README's install line and .ci/run set.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT } from './e2e/server.js';

const npmAvailable = spawnSync('npm', ['--version'], { encoding: 'utf8' }).status === 0;

test('npm commands print no config warning', { skip: !npmAvailable && 'npm is not installed' }, () => {
  for (const args of [['pkg', 'get', 'name'], ['run', '--silent', 'env', '--', 'true']]) {
    const r = spawnSync('npm', args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, npm_config_update_notifier: 'false' } });
    assert.equal(r.status, 0, `npm ${args.join(' ')}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /npm warn/i, `npm ${args.join(' ')} warns: ${r.stderr}`);
  }
  if (existsSync(join(ROOT, '.npmrc'))) assert.doesNotMatch(readFileSync(join(ROOT, '.npmrc'), 'utf8'), /^\s*onnxruntime-node-install/m);
});

test('onnxruntime-node\'s install script is denied, and skipped by the documented variable', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { allowScripts: Record<string, boolean> };
  assert.equal(pkg.allowScripts['onnxruntime-node'], false);
  const script = join(ROOT, 'node_modules', 'onnxruntime-node', 'script', 'install.js');
  const r = spawnSync(process.execPath, [script], { cwd: join(ROOT, 'node_modules', 'onnxruntime-node'), encoding: 'utf8', timeout: 20_000, env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' } });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout + r.stderr, '', 'it exits at once, downloading nothing');
  assert.ok(readFileSync(join(ROOT, 'README.md'), 'utf8').includes('ONNXRUNTIME_NODE_INSTALL=skip npm ci'), 'the README installs with it');
  assert.match(readFileSync(join(ROOT, '.ci', 'run'), 'utf8'), /^ONNXRUNTIME_NODE_INSTALL=skip npm ci/m);
});
