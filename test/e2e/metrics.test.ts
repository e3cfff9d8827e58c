// /metrics and /v1/monitoring/{model}: the counts match the traffic sent, percentiles are ordered,
// errors move the error rate, and the exposition passes `promtool check metrics`.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { writeGatherModel, writeSumModel } from '../fixtures/models.js';
import { request, startServer, tempDir, type TestServer } from './server.js';

let server: TestServer;

before(async () => {
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 1);
  await writeGatherModel(repo, 'table', 1);
  server = await startServer(['--model-repo', repo]);
});

after(async () => {
  assert.equal(await server.stop(), 0);
});

const sum = () =>
  request(`${server.url}/v2/models/sum/infer`, { json: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] } });
const gather = (i: number) =>
  request(`${server.url}/v2/models/table/infer`, { json: { inputs: [{ name: 'idx', datatype: 'INT64', shape: [1, 1], data: [i] }] } });

function sample(text: string, name: string, labels: string): number {
  const escaped = labels.replace(/[{}+.]/g, (c) => `\\${c}`);
  const m = new RegExp(`^${name}${escaped} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `${name}${labels} is exposed`);
  return Number(m[1]);
}

test('counts and histograms follow the traffic', async () => {
  await Promise.all(Array.from({ length: 120 }, () => sum()));
  await request(`${server.url}/v2/models/sum/infer`, { json: { inputs: [] } });
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const v = '{model="sum",version="1"';
  const vv = `${v},variant="default"`;
  assert.equal(sample(text, 'scoreline_requests_total', `${vv},route="infer",status="2xx"}`), 120);
  // every answered request of the version is timed, the 4xx included
  assert.equal(sample(text, 'scoreline_request_duration_seconds_count', `${vv},route="infer"}`), 121);
  assert.equal(sample(text, 'scoreline_request_duration_seconds_bucket', `${vv},route="infer",le="+Inf"}`), 121);
  assert.doesNotMatch(text, /^scoreline_unrouted_requests_total\{route="infer"/m, 'the bad request was charged to its model version');
  assert.equal(sample(text, 'scoreline_requests_total', `${vv},route="infer",status="4xx"}`), 1);
  const rows = sample(text, 'scoreline_batch_size_sum', `${v}}`);
  const batches = sample(text, 'scoreline_batch_size_count', `${v}}`);
  assert.equal(rows, 120);
  assert.ok(batches >= 1 && batches <= 120);
  assert.equal(sample(text, 'scoreline_inference_queue_duration_seconds_count', `${v}}`), 120);
  assert.equal(sample(text, 'scoreline_inference_compute_duration_seconds_count', `${v}}`), batches);
  assert.equal(sample(text, 'scoreline_model_ready', `${v}}`), 1);
  // sub-millisecond buckets exist
  assert.match(text, /scoreline_request_duration_seconds_bucket\{[^}]*le="0\.0001"\}/);
});

test('the monitoring snapshot has ordered exact percentiles, volume and error rate', async () => {
  await gather(42); // a model error: 500
  const r = await request(`${server.url}/v1/monitoring/sum`);
  assert.equal(r.status, 200);
  const s = r.body;
  assert.equal(s.model, 'sum');
  assert.equal(s.version, '1');
  assert.equal(s.latency.count, 120);
  const { p50_ms, p95_ms, p99_ms, p999_ms, max_ms } = s.latency;
  assert.ok(
    p50_ms > 0 && p50_ms <= p95_ms && p95_ms <= p99_ms && p99_ms <= p999_ms && p999_ms <= max_ms * 1.001,
    JSON.stringify(s.latency),
  );
  assert.equal(s.volume.requests, 121);
  assert.equal(s.volume.errors, 0);
  const t = (await request(`${server.url}/v1/monitoring/table`)).body;
  assert.equal(t.volume.requests, 1);
  assert.equal(t.volume.errors, 1);
  assert.equal(t.volume.error_rate, 1);
  assert.equal(t.latency.count, 0);
  assert.equal(t.latency.p99_ms, null);
  assert.equal((await request(`${server.url}/v1/monitoring/nope`)).status, 404);
  assert.equal((await request(`${server.url}/v1/monitoring/sum?version=7`)).status, 404);
  assert.equal((await request(`${server.url}/v1/monitoring/sum?window=5m`)).status, 400);
  const hour = await request(`${server.url}/v1/monitoring/sum?window=1h`);
  assert.equal(hour.status, 200);
  assert.equal(hour.body.window, '1h');
  assert.equal(hour.body.volume.requests, 121);
});

test('the exposition passes promtool check metrics', async (t) => {
  const which = spawnSync('sh', ['-c', 'command -v promtool']);
  if (which.status !== 0) {
    if (process.env.CI) assert.fail('promtool is missing: .ci/run installs the Debian package prometheus');
    t.skip('promtool not installed (apt-get install prometheus)');
    return;
  }
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});
