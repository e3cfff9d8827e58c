// http.threads: 2 on the shared PostgreSQL store. Requests on new connections are served by both
// threads (the kernel spreads them), and everything a user sees is one server: /metrics from any
// thread carries every thread's series told apart by a `thread` label, the monitoring snapshot
// counts every request, a deployment made through one thread routes the requests of both, and a
// label joins a prediction whichever thread served it. A second scoreline cannot join the port, a
// config asking for threads without the shared store is refused, and SIGTERM stops every thread.

import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, test } from 'node:test';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { writeSumModel } from '../fixtures/models.js';
import { postgresSkip } from '../fixtures/postgres.js';
import { CLI, tempDir } from './server.js';
import { startCluster, until, type TestCluster } from './cluster.js';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const skip = postgresSkip();
let c: TestCluster;
let repo = '';

before(async () => {
  if (skip) return;
  repo = await tempDir();
  await writeSumModel(repo, 'sum', 1);
  c = await startCluster(1, { modelRepository: repo, inference: { workers: 0 }, store: { shareSeconds: 0.2 }, http: { threads: 2 } });
  await until('both HTTP threads to answer /metrics', 30_000, async () => (threadsIn(await metrics()).size === 2 ? true : undefined));
});

after(async () => {
  await c?.close();
});

/** One request on a connection of its own (no keep-alive), so that the kernel picks the thread. */
function fresh(method: string, path: string, body?: unknown): Promise<{ status: number; body: any; text: string }> {
  const url = new URL(path, c.url(0));
  const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method,
        agent: false,
        headers: {
          connection: 'close',
          authorization: `Bearer ${c.token}`,
          ...(data !== undefined ? { 'content-type': 'application/json', 'content-length': data.length } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = null;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON (/metrics)
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, text });
        });
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

const metrics = async () => (await fresh('GET', '/metrics')).text;

/** The `thread` labels of the scoreline_http_threads gauge in an exposition. */
function threadsIn(text: string): Set<string> {
  return new Set([...text.matchAll(/^scoreline_http_threads\{thread="(\d+)"\} 2$/gm)].map((m) => m[1]!));
}

/** scoreline_requests_total of sum v1 (2xx) per thread. */
function servedByThread(text: string, version = '1'): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^scoreline_requests_total\{([^}]*)\} (\d+)$/gm)) {
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    if (labels.model === 'sum' && labels.version === version && labels.status === '2xx')
      out.set(labels.thread!, (out.get(labels.thread!) ?? 0) + Number(m[2]));
  }
  return out;
}

const infer = (id: string) =>
  fresh('POST', '/v2/models/sum/infer', { id, inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] });

/** `n` requests `prefix-k`, 8 at a time, each on a connection of its own; their answers. */
async function send(prefix: string, n: number): Promise<{ status: number; body: any }[]> {
  const out: { status: number; body: any }[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let k = next++; k < n; k = next++) out[k] = await infer(`${prefix}-${k}`);
    }),
  );
  return out;
}

const N = 300;

test('requests on new connections are served by both threads; /metrics of any thread has every thread, the snapshot every request', {
  skip,
}, async () => {
  const answers = await send('spread', N);
  assert.ok(
    answers.every((a) => a.status === 200),
    JSON.stringify(answers.find((a) => a.status !== 200)),
  );
  const text = await metrics();
  const served = servedByThread(text);
  assert.deepEqual([...served.keys()].sort(), ['0', '1'], `both threads served: ${JSON.stringify([...served])}`);
  assert.equal(
    [...served.values()].reduce((a, b) => a + b, 0),
    N,
  );
  // Every family once, its series told apart by thread.
  const types = [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
  assert.equal(new Set(types).size, types.length, 'each family is declared once');
  // The monitoring view of any thread counts the requests of both.
  for (let k = 0; k < 4; k++)
    await until(`a snapshot (asked on a new connection) counts all ${N} requests`, 15_000, async () => {
      const s = (await fresh('GET', '/v1/monitoring/sum?version=1&window=1h')).body;
      return s?.volume?.requests === N ? true : undefined;
    });
  // A label joins its prediction whichever thread served it (the log is shared through PostgreSQL).
  const items = answers.map((_, k) => ({ request_id: `spread-${k}`, label: k % 2 }));
  await until('every label to join', 20_000, async () => {
    const r = await fresh('POST', '/v1/feedback', items);
    return r.status === 200 && r.body.joined === N ? true : undefined;
  });
});

test('a deployment made through one thread routes the requests of every thread', { skip }, async () => {
  const g = new GraphBuilder('sum');
  g.input('x', 'FP32', [-1, 4]);
  g.initializer('axes', 'INT64', [1], BigInt64Array.of(1n));
  g.node('ReduceSum', ['x', 'axes'], ['y'], { keepdims: 1 });
  g.output('y', 'FP32', [-1, 1]);
  const registered = await c.admin(0, 'POST', '/admin/models/sum/versions', {
    body: g.toModelBytes({ docString: 'sum, version 2' }),
    type: 'application/octet-stream',
  });
  assert.equal(registered.status, 201, registered.text);
  const v2 = String(registered.body.version);
  const put = await fresh('PUT', '/admin/deployments/sum', { strategy: 'direct', version: Number(v2) });
  assert.equal(put.status, 200, put.text);
  await until('both threads to route to the new version', 20_000, async () => {
    const answers = await send(`v${v2}-probe`, 40);
    return answers.every((a) => a.status === 200 && a.body.model_version === v2) ? true : undefined;
  });
  const served = servedByThread(await metrics(), v2);
  assert.equal(served.size, 2, `both threads served version ${v2}: ${JSON.stringify([...served])}`);
});

test('a second scoreline cannot join the port the threads share, with threads (the port lock) or without (the exclusive bind)', {
  skip,
}, async () => {
  const port = String(new URL(c.url(0)).port);
  for (const [threads, refusal] of [
    ['2', /cannot listen on 127\.0\.0\.1:\d+: another scoreline process serves it/],
    ['1', /port \d+ is in use/],
  ] as const) {
    const args = [CLI, 'serve', '--model-repo', repo, '--data-dir', await tempDir(), '--port', port, '--host', '127.0.0.1'];
    const r = spawnSync(process.execPath, [...args, '--grpc-port', 'off', '--threads', threads], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, SCORELINE_STORE_URL: c.pg.url, SCORELINE_ADMIN_TOKEN: c.token },
    });
    assert.notEqual(r.status, 0, `threads ${threads}`);
    assert.match(r.stdout + r.stderr, refusal, `threads ${threads}`);
  }
});

test('http.threads above 1 without the shared store is refused at start, saying why', async () => {
  const dir = await tempDir();
  const config = join(dir, 'scoreline.yaml');
  await writeFile(config, 'http:\n  threads: 2\n');
  const models = await tempDir();
  await writeSumModel(models, 'sum', 1);
  const r = spawnSync(
    process.execPath,
    [CLI, 'serve', '--config', config, '--model-repo', models, '--data-dir', join(dir, 'data'), '--port', '0', '--grpc-port', 'off'],
    {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, SCORELINE_STORE_URL: '' },
    },
  );
  assert.notEqual(r.status, 0);
  assert.match(r.stdout + r.stderr, /http\.threads: 2 needs the shared PostgreSQL store/);
});

test('SIGTERM stops every thread: each finishes its requests and shuts down, and the process exits 0', { skip }, async () => {
  const server = c.replicas[0]!.server;
  const code = await server.stop('SIGTERM');
  assert.equal(code, 0, server.logs.slice(-20).join('\n'));
  const complete = server.logs.filter((l) => /"msg":"shutdown complete"/.test(l));
  assert.equal(complete.length, 2, 'both threads shut down cleanly');
});
