// The test helpers themselves: waitFor returns the first truthy value, fails at its deadline with a
// message that says what never happened (and does not hang), and ends at once when the condition
// throws; e2e servers get one inference worker unless the test asks for a number.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { waitFor } from './fixtures/wait.js';
import { tempDir, workerArgs } from './e2e/server.js';

test('waitFor returns the first truthy value the condition gives', async () => {
  let calls = 0;
  const v = await waitFor(() => (++calls === 3 ? { at: calls } : undefined), { intervalMs: 1, message: 'the third call' });
  assert.deepEqual(v, { at: 3 });
  assert.equal(calls, 3);
  assert.equal(await waitFor(async () => 'ready', { message: 'an async value' }), 'ready');
});

test('waitFor fails at its deadline with the message, evaluated then', async () => {
  let seen = 0;
  const started = Date.now();
  await assert.rejects(
    waitFor(
      () => {
        seen += 1;
        return false;
      },
      { timeoutMs: 50, intervalMs: 5, message: () => `something that never comes (checked ${seen} times)` },
    ),
    (e: Error) => {
      assert.match(e.message, /^timed out after 50 ms waiting for something that never comes \(checked \d+ times\)$/);
      assert.ok(seen >= 2, 'polled more than once');
      return true;
    },
  );
  // Bounded: it gave up near its deadline, not at the test runner's timeout.
  assert.ok(Date.now() - started < 5000);
});

test('waitFor stops at the first error the condition throws', async () => {
  let calls = 0;
  await assert.rejects(
    waitFor(
      () => {
        calls++;
        throw new Error('the server answered 500');
      },
      { message: 'never' },
    ),
    /the server answered 500/,
  );
  assert.equal(calls, 1);
});

test('test servers get one inference worker unless the test asks for a number', async () => {
  assert.deepEqual(workerArgs(['--model-repo', 'x']), ['--workers', '1']);
  assert.deepEqual(workerArgs(['--model-repo', 'x', '--workers', '0']), []);
  const dir = await tempDir();
  const withWorkers = join(dir, 'with.yaml');
  writeFileSync(withWorkers, 'inference: { workers: 0 }\n');
  const without = join(dir, 'without.yaml');
  writeFileSync(without, 'monitoring: { evaluateSeconds: 1 }\n');
  assert.deepEqual(workerArgs(['--config', withWorkers]), [], 'the config file names its workers');
  assert.deepEqual(workerArgs(['--config', without]), ['--workers', '1']);
  assert.deepEqual(workerArgs(['--config', join(dir, 'missing.yaml')]), [], 'the server reports an unreadable config itself');
});
