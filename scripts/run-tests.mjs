#!/usr/bin/env node
// `npm test`: runs the native cache's C++ test program, then every compiled node:test file
// (dist/test/**/*.test.js), and fails when no test ran at all (none found, or every one skipped).
// Extra arguments select test files by substring, e.g. `npm test -- oip`. SCORELINE_TEST_CONCURRENCY
// sets how many test files run at once (default: node's, one fewer than the cores).

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const filters = process.argv.slice(2);

function collect(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? collect(p) : e.name.endsWith('.test.js') ? [p] : [];
  });
}

let failed = false;
if (filters.length === 0 && existsSync(join(root, 'scripts', 'native-test.sh'))) {
  const r = spawnSync('bash', [join(root, 'scripts', 'native-test.sh')], { stdio: 'inherit', cwd: root });
  if (r.status !== 0) {
    console.error('native cache tests failed');
    failed = true;
  }
}

const files = collect(join(root, 'dist', 'test'))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error('no test files found under dist/test (did the TypeScript build run?)');
  process.exit(1);
}
console.log(`running ${files.length} test files: ${files.map((f) => relative(join(root, 'dist', 'test'), f)).join(', ')}`);

// A test that hangs fails after this long instead of holding CI until its own timeout.
const TEST_TIMEOUT_MS = 240_000;
// The counts are read from this run's TAP file: one left over from an earlier run must not count.
const tapFile = join(root, 'dist', 'test-results.tap');
rmSync(tapFile, { force: true });
const r = spawnSync(
  process.execPath,
  [
    '--test',
    ...(process.env.SCORELINE_TEST_CONCURRENCY ? [`--test-concurrency=${process.env.SCORELINE_TEST_CONCURRENCY}`] : []),
    `--test-timeout=${TEST_TIMEOUT_MS}`,
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tapFile}`,
    ...files,
  ],
  {
    stdio: 'inherit',
    cwd: root,
  },
);
let ran = 0;
try {
  const tap = readFileSync(tapFile, 'utf8');
  const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tap)?.[1] ?? 0);
  // Skipped and todo tests are counted in "tests" but did not run.
  ran = count('tests') - count('skipped') - count('todo');
} catch {
  ran = 0;
}
if (ran <= 0) {
  console.error('no test was executed (none found, or every one skipped): that counts as a failure');
  failed = true;
}
if (r.status !== 0) failed = true;
process.exit(failed ? 1 : 0);
