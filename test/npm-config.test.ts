// onnxruntime-node's install script, which downloads CUDA libraries scoreline does not use, never
// runs on `npm ci`: the project's .npmrc carries onnxruntime-node-install=skip (what npm 10, Node
// 20's npm, honours) and package.json's allowScripts denies the script (npm 11.16+). The README
// starts with the plain `npm ci && npm start` and says why npm 11 warns about the .npmrc key.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT } from './e2e/server.js';

test('the install script is kept from running by .npmrc and by allowScripts, and skips at once when told', () => {
  assert.match(readFileSync(join(ROOT, '.npmrc'), 'utf8'), /^onnxruntime-node-install=skip$/m);
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { allowScripts: Record<string, boolean> };
  assert.equal(pkg.allowScripts['onnxruntime-node'], false);
  const script = join(ROOT, 'node_modules', 'onnxruntime-node', 'script', 'install.js');
  const r = spawnSync(process.execPath, [script], {
    cwd: join(ROOT, 'node_modules', 'onnxruntime-node'),
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout + r.stderr, '', 'it exits at once, downloading nothing');
});

test('the README starts with the plain install and start, and explains the npm 11 warning', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)![1]!;
  assert.match(firstBlock, /^npm ci && npm start\b/m);
  assert.match(firstBlock, /^npm test\b/m);
  assert.match(readme, /npm warn Unknown project config "onnxruntime-node-install"/);
});
