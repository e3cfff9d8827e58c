#!/usr/bin/env node
// Prunes an installed scoreline tree down to what its runtime loads, for the container image's
// runtime stage (Dockerfile) and, with --dry-run, to measure that stage here:
// - devDependencies, as package-lock.json marks them (`dev: true`): typescript, playwright-core,
//   fastify, biome, ...;
// - other platforms' native binaries: onnxruntime-node's bin/napi-v6/<platform>/<arch> (darwin and
//   win32 alone are ~220 MB) and uWebSockets.js's uws_<platform>_<arch>_<abi>.node, keeping this
//   platform's and this Node ABI's;
// - build leftovers: better-sqlite3's SQLite sources and object files, the addon's object files.
//
//   node scripts/prune-runtime.mjs [--root DIR] [--dry-run] [--platform P --arch A --abi N]
//
// Prints a JSON summary: bytes kept and removed, and what was removed.

import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    root: { type: 'string', default: '.' },
    'dry-run': { type: 'boolean', default: false },
    platform: { type: 'string', default: process.platform },
    arch: { type: 'string', default: process.arch },
    abi: { type: 'string', default: process.versions.modules },
  },
});
const root = values.root;
const { platform, arch, abi } = values;
const dry = values['dry-run'];

/** Apparent size of a file or a whole tree (symlinks count as themselves, never followed). */
function sizeOf(path) {
  const st = lstatSync(path);
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const e of readdirSync(path)) total += sizeOf(join(path, e));
  return total;
}

const removed = [];
function remove(path, why) {
  if (!existsSync(path)) return;
  removed.push({ path: relative(root, path), bytes: sizeOf(path), why });
  if (!dry) rmSync(path, { recursive: true, force: true });
}

// 1. devDependencies: the lockfile says which installed paths only development needs.
const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
for (const [path, entry] of Object.entries(lock.packages ?? {})) {
  if (path === '' || entry.dev !== true) continue;
  remove(join(root, path), 'devDependency');
}

// 2. Other platforms' binaries.
const ort = join(root, 'node_modules', 'onnxruntime-node', 'bin', 'napi-v6');
if (existsSync(ort)) {
  for (const p of readdirSync(ort)) {
    if (p !== platform) remove(join(ort, p), 'onnxruntime for another platform');
    else for (const a of readdirSync(join(ort, p))) if (a !== arch) remove(join(ort, p, a), 'onnxruntime for another architecture');
  }
}
const uws = join(root, 'node_modules', '@trufflesuite', 'uws-js-unofficial');
const wanted = `uws_${platform}_${arch}_${abi}.node`;
for (const dir of ['binaries', 'dist']) {
  const d = join(uws, dir);
  if (!existsSync(d)) continue;
  for (const f of readdirSync(d))
    if (/^uws_.*\.node$/.test(f) && f !== wanted) remove(join(d, f), 'uWebSockets.js for another platform or Node ABI');
}

// 3. Build leftovers: sources and object files of the native modules once their .node is built.
const sqlite = join(root, 'node_modules', 'better-sqlite3');
for (const p of [
  'deps',
  'src',
  join('build', 'Release', 'obj'),
  join('build', 'Release', 'obj.target'),
  join('build', 'Release', '.deps'),
  join('build', 'deps'),
]) {
  remove(join(sqlite, p), 'better-sqlite3 build input');
}
for (const p of [join('build', 'Release', 'obj.target'), join('build', 'Release', '.deps')])
  remove(join(root, p), 'scoreline addon build input');

const removedBytes = removed.reduce((a, r) => a + r.bytes, 0);
// node_modules itself may be a symlink (a worktree sharing a checkout's): measure what it points to.
const modules = () => sizeOf(realpathSync(join(root, 'node_modules')));
const before = dry ? modules() : null;
console.log(
  JSON.stringify(
    { root, dryRun: dry, platform, arch, abi, removedBytes, nodeModulesBytesAfter: dry ? before - removedBytes : modules(), removed },
    null,
    2,
  ),
);
