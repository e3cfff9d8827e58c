// The worker HTTP threads' keeper (threads.ts) without a server: the thread count 'auto' picks, a
// thread that dies started again after a pause that doubles while its replacements die young,
// and close() stopping them; and /metrics of several threads merged with a `thread` label.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import client from 'prom-client';
import { resolveConfig } from '../src/config.js';
import { AUTO_THREADS_MAX, HttpThreads, ThreadMetrics, threadCount } from '../src/server/threads.js';
import { waitFor } from './fixtures/wait.js';
import { tempDir } from './e2e/server.js';
import { availableParallelism } from 'node:os';

test("http.threads: 'auto' is one per core (at most 8) with the shared store, 1 without; a number is taken as it is; anything else is refused", () => {
  const auto = resolveConfig({ http: { threads: 'auto' } });
  assert.equal(threadCount(auto, true), Math.min(AUTO_THREADS_MAX, availableParallelism()));
  assert.equal(threadCount(auto, false), 1);
  assert.equal(threadCount(resolveConfig({ http: { threads: 3 } }), true), 3);
  assert.equal(resolveConfig({}).http.threads, 1);
  for (const bad of [0, 65, 1.5, 'all', null]) assert.throws(() => resolveConfig({ http: { threads: bad } }), /http/);
});

test('a worker HTTP thread that dies is started again, the pause doubling while it keeps dying young; close() stops the one that lasts', async () => {
  const errors: string[] = [];
  const log = { error: (_: object, msg: string) => void errors.push(msg), info: () => undefined, warn: () => undefined };
  const config = resolveConfig({ server: { requestTimeoutMs: 50, shutdownTimeoutMs: 1000 }, dataDir: await tempDir() });
  const threads = new HttpThreads(
    config,
    { index: 0, count: 2, channel: 'test-threads' },
    log as never,
    new URL('./fixtures/http-thread-exits.js', import.meta.url),
  );
  await threads.start();
  assert.equal(threads.running, 1);
  // Three deaths, then a life that lasts.
  await waitFor(() => threads.restarts === 3 && threads.running === 1, {
    timeoutMs: 10_000,
    message: () => `restarts: ${threads.restarts}`,
  });
  const pauses = errors.map((m) => Number(/starts again in (\d+) ms/.exec(m)?.[1]));
  assert.deepEqual(pauses, [100, 200, 400], errors.join('\n'));
  assert.match(errors[0]!, /HTTP thread 1 exited \(code 3\)/);
  assert.equal(await threads.close(), true);
  assert.equal(threads.running, 0);
});

test('/metrics of several threads: every thread series with its `thread` label, each family declared once', async () => {
  const registries = [new client.Registry(), new client.Registry()];
  registries.forEach((r, i) => {
    const c = new client.Counter({ name: 'x_total', help: 'x', labelNames: ['model'], registers: [r] });
    c.inc({ model: 'm' }, i + 1);
    new client.Gauge({ name: 'y', help: 'y', registers: [r] }).set(7);
  });
  const channel = `test-metrics-${process.pid}`;
  const a = new ThreadMetrics({ index: 0, count: 2, channel }, registries[0]!);
  const b = new ThreadMetrics({ index: 1, count: 2, channel }, registries[1]!);
  try {
    for (const m of [a, b]) {
      const { text } = await m.exposition();
      assert.match(text, /^x_total\{model="m",thread="0"\} 1$/m);
      assert.match(text, /^x_total\{model="m",thread="1"\} 2$/m);
      assert.match(text, /^y\{thread="0"\} 7$/m);
      assert.match(text, /^y\{thread="1"\} 7$/m);
      assert.equal(text.match(/^# TYPE x_total/gm)?.length, 1);
    }
    // A thread that does not answer is left out after the wait, and counted.
    b.close();
    const { text } = await a.exposition();
    assert.match(text, /^x_total\{model="m",thread="0"\} 1$/m);
    assert.doesNotMatch(text, /thread="1"/);
    assert.equal(a.unanswered, 1);
  } finally {
    a.close();
    b.close();
  }
});
