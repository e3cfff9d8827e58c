// Bad input never crashes the server, never leaks a stack trace, and gets a precise error with the
// right status. One real server, a table of bad requests, then proof that it still answers.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { writeDtypesModel, writeLogisticModel, writeSumModel } from '../fixtures/models.js';
import { request, startServer, tempDir, type TestServer } from './server.js';
import { elapse, waitFor } from '../fixtures/wait.js';

let server: TestServer;

before(async () => {
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 1, { modelYaml: { batching: { maxBatchSize: 4 } } });
  await writeDtypesModel(repo);
  await writeLogisticModel(repo, 'logistic', 1, { modelYaml: { features: ['f0', 'f1', 'f2'] } });
  const config = join(repo, 'server.yaml');
  await writeFile(config, 'server:\n  maxBodyBytes: 4096\nlimits:\n  maxRowsPerRequest: 10\n');
  server = await startServer(['--model-repo', repo, '--config', config]);
});

after(async () => {
  assert.equal(await server.stop(), 0);
});

const x = (data: unknown, shape: unknown = [1, 4], datatype: unknown = 'FP32') => ({ inputs: [{ name: 'x', datatype, shape, data }] });

/** A valid one-row request for the dtypes model with one input replaced. */
const dtypes = (name: string, data: unknown) => ({
  inputs: [
    { name: 'f32', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] },
    { name: 'f64', datatype: 'FP64', shape: [1, 2], data: [1, 2] },
    { name: 'i32', datatype: 'INT32', shape: [1, 2], data: [1, 2] },
    { name: 'i64', datatype: 'INT64', shape: [1, 2], data: [1, 2] },
    { name: 'b', datatype: 'BOOL', shape: [1, 2], data: [true, false] },
  ].map((i) => (i.name === name ? { ...i, data } : i)),
});

interface Case {
  name: string;
  path?: string;
  body?: string;
  json?: unknown;
  contentType?: string;
  status: number;
  error: RegExp;
}

const cases: Case[] = [
  { name: 'malformed JSON', body: '{"inputs": [', status: 400, error: /not valid JSON/ },
  {
    name: 'NaN literal',
    body: '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[NaN,1,2,3]}]}',
    status: 400,
    error: /not valid JSON/,
  },
  {
    name: 'Infinity via overflow',
    body: '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1e999,1,2,3]}]}',
    status: 422,
    error: /Infinity is not a finite FP32/,
  },
  { name: 'FP32 overflow', json: x([1e39, 1, 2, 3]), status: 422, error: /1e\+39 is not a finite FP32/ },
  { name: 'empty body', body: '', status: 400, error: /empty/ },
  { name: 'whitespace body', body: '   ', status: 400, error: /empty/ },
  { name: 'body is an array', json: [1, 2], status: 400, error: /JSON object/ },
  { name: 'inputs missing', json: { id: 'a' }, status: 400, error: /"inputs" must be a non-empty array/ },
  { name: 'inputs empty', json: { inputs: [] }, status: 400, error: /"inputs" must be a non-empty array/ },
  { name: 'id not a string', json: { id: 7, ...x([1, 2, 3, 4]) }, status: 400, error: /"id" must be a string/ },
  { name: 'unknown datatype', json: x([1, 2, 3, 4], [1, 4], 'FLOAT'), status: 400, error: /unknown datatype "FLOAT"/ },
  { name: 'wrong datatype', json: x([1, 2, 3, 4], [1, 4], 'FP64'), status: 422, error: /datatype FP64 does not match the model's FP32/ },
  { name: 'wrong shape', json: x([1, 2, 3], [1, 3]), status: 422, error: /shape \[1, 3\] does not fit the model's \[-1, 4\]/ },
  { name: 'wrong rank', json: x([1, 2, 3, 4], [4]), status: 422, error: /does not fit/ },
  { name: 'negative dimension', json: x([1, 2, 3, 4], [-1, 4]), status: 400, error: /positive integers/ },
  { name: 'data shorter than shape', json: x([1, 2, 3], [1, 4]), status: 400, error: /data has 3 values but the shape \[1, 4\] needs 4/ },
  {
    name: 'data longer than shape',
    json: x([1, 2, 3, 4, 5], [1, 4]),
    status: 400,
    error: /data has 5 values but the shape \[1, 4\] needs 4/,
  },
  {
    name: 'ragged nested data',
    json: x([[1, 2], [3, 4, 5], [[6]], 7], [1, 4]),
    status: 400,
    error: /data has 4 entries where the shape \[1, 4\] has 1; nested data must match the shape exactly/,
  },
  { name: 'nested deeper than the shape', json: x([[1, 2, [3], 4]], [1, 4]), status: 400, error: /nested deeper than the shape \[1, 4\]/ },
  {
    name: 'short inner row',
    json: x([[1, 2, 3]], [1, 4]),
    status: 400,
    error: /data at depth 1 has 3 entries where the shape \[1, 4\] has 4/,
  },
  { name: 'values mixed with rows', json: x([1, [2, 3, 4]], [1, 4]), status: 400, error: /mixes nested arrays and values/ },
  { name: 'string element', json: x([1, 'two', 3, 4]), status: 400, error: /element "two" is not a number/ },
  { name: 'null element', json: x([1, null, 3, 4]), status: 400, error: /element null is not a number/ },
  { name: 'data not an array', json: x('1,2,3,4'), status: 400, error: /data must be an array/ },
  {
    name: 'unknown input',
    json: { inputs: [{ name: 'y', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] },
    status: 422,
    error: /has no input 'y'/,
  },
  {
    name: 'duplicate input',
    json: { inputs: [x([1, 2, 3, 4]).inputs[0], x([1, 2, 3, 4]).inputs[0]] },
    status: 400,
    error: /appears more than once/,
  },
  { name: 'unknown output requested', json: { ...x([1, 2, 3, 4]), outputs: [{ name: 'z' }] }, status: 422, error: /has no output 'z'/ },
  {
    name: 'more rows than limits.maxRowsPerRequest',
    json: x(new Array(48).fill(1), [12, 4]),
    status: 413,
    error: /12 rows, more than limits\.maxRowsPerRequest \(10\)/,
  },
  { name: 'lying shape', json: x([1], [1_000_000_000, 4]), status: 400, error: /declares more elements than the request body holds/ },
  {
    name: 'wrong content type',
    json: x([1, 2, 3, 4]),
    contentType: 'text/plain',
    status: 415,
    error: /content-type 'text\/plain' is not supported/,
  },
  {
    name: 'form content type',
    json: x([1, 2, 3, 4]),
    contentType: 'application/x-www-form-urlencoded',
    status: 415,
    error: /not supported/,
  },
  {
    name: 'no content type',
    json: x([1, 2, 3, 4]),
    contentType: '',
    status: 415,
    error: /content-type '\(none\)' is not supported; send application\/json/,
  },
  {
    name: 'body over the limit',
    body: JSON.stringify(x(new Array(2000).fill(1.25), [500, 4])),
    status: 413,
    error: /exceeds the limit of 4096 bytes/,
  },
  { name: 'unknown model', path: '/v2/models/nope/infer', json: x([1, 2, 3, 4]), status: 404, error: /model 'nope' is not known/ },
  {
    name: 'unknown version',
    path: '/v2/models/sum/versions/9/infer',
    json: x([1, 2, 3, 4]),
    status: 404,
    error: /model 'sum' has no version '9'/,
  },
  {
    name: 'INT64 beyond 2^53',
    path: '/v2/models/dtypes/infer',
    json: dtypes('i64', [2 ** 60, 1]),
    status: 400,
    error: /is not an integer within/,
  },
  {
    name: 'missing input',
    path: '/v2/models/dtypes/infer',
    json: { inputs: [{ name: 'i64', datatype: 'INT64', shape: [1, 2], data: [1, 1] }] },
    status: 422,
    error: /input 'f32' of model 'dtypes' is missing/,
  },
  { name: 'BOOL as number', path: '/v2/models/dtypes/infer', json: dtypes('b', [1, 0]), status: 400, error: /is not true or false/ },
  { name: 'INT32 out of range', path: '/v2/models/dtypes/infer', json: dtypes('i32', [2 ** 31, 0]), status: 422, error: /out of range/ },
  {
    name: 'v1 without instances',
    path: '/v1/models/logistic:predict',
    json: { rows: [] },
    status: 400,
    error: /"instances" must be a non-empty array/,
  },
  { name: 'v1 wrong suffix', path: '/v1/models/logistic:classify', json: { instances: [[1, 2, 3]] }, status: 404, error: /no route/ },
  {
    name: 'v1 instance of wrong width',
    path: '/v1/models/logistic:predict',
    json: { instances: [[1, 2]] },
    status: 400,
    error: /instance 0: data has 2 values but the shape \[3\] needs 3/,
  },
  {
    name: 'v1 feature beyond FP32',
    path: '/v1/models/logistic:predict',
    json: { instances: [{ f0: 1, f1: 1e39, f2: 3 }] },
    status: 422,
    error: /instance 0 feature 'f1': value 1e\+39 is not a finite FP32/,
  },
];

test('bad-input table: status, precise message, no stack trace', async () => {
  for (const c of cases) {
    const type = c.contentType ?? 'application/json';
    const headers: Record<string, string> = type === '' ? {} : { 'content-type': type };
    const r = await request(`${server.url}${c.path ?? '/v2/models/sum/infer'}`, {
      method: 'POST',
      headers,
      // A string body makes fetch add text/plain; bytes go without a content type.
      body: type === '' ? Buffer.from(c.body ?? JSON.stringify(c.json)) : (c.body ?? JSON.stringify(c.json)),
    });
    assert.equal(r.status, c.status, `${c.name}: expected ${c.status}, got ${r.status} ${r.text}`);
    assert.equal(r.headers.get('content-type'), 'application/json', c.name);
    assert.equal(typeof r.body?.error, 'string', `${c.name}: ${r.text}`);
    assert.match(r.body.code, /^SCORELINE_[A-Z_]+$/, `${c.name}: ${r.text}`);
    assert.match(r.body.error, c.error, c.name);
    assert.doesNotMatch(r.text, /\bat .+\.js:\d+|node:internal|\/work\//, `${c.name} leaks internals: ${r.text}`);
  }
});

test('wrong method is 405; unknown path is 404', async () => {
  const m = await request(`${server.url}/v2/models/sum/infer`);
  assert.equal(m.status, 405);
  assert.match(m.body.error, /GET is not allowed/);
  const n = await request(`${server.url}/v3/whatever`);
  assert.equal(n.status, 404);
});

test('after all of that the server is healthy and answers correctly', async () => {
  const r = await request(`${server.url}/v2/models/sum/infer`, { json: x([1, 2, 3, 4]) });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body.outputs[0].data, [10]);
  assert.equal((await request(`${server.url}/v2/health/ready`)).status, 200);
  assert.equal(server.proc.exitCode, null);
  const metrics = await fetch(`${server.url}/metrics`).then((res) => res.text());
  assert.match(metrics, /scoreline_requests_total\{model="sum",version="1",variant="default",route="infer",status="4xx"\} (\d+)/);
  const fourxx = Number(
    /scoreline_requests_total\{model="sum",version="1",variant="default",route="infer",status="4xx"\} (\d+)/.exec(metrics)![1],
  );
  assert.ok(fourxx >= 15, `4xx counted per version: ${fourxx}`);
});

test('a body over the limit still arriving is read to its end before the 413, so the client gets the answer instead of a broken pipe', async () => {
  const { connect } = await import('node:net');
  const body = Buffer.alloc(64 * 1024, 0x20); // 16 times the 4096-byte limit
  const socket = connect(server.port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let reply = '';
  let failure: Error | null = null;
  socket.on('data', (b) => (reply += b.toString()));
  socket.on('error', (e) => (failure = e));
  socket.write(
    `POST /v2/models/sum/infer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`,
  );
  socket.write(body.subarray(0, 1024));
  // Elapsed time is the subject: while the body is incomplete the server neither answers nor closes.
  await elapse(300);
  assert.equal(reply, '', 'no answer before the body has arrived');
  socket.write(body.subarray(1024));
  await waitFor(() => reply.includes('\r\n\r\n') && reply.includes('}'), { timeoutMs: 5000, message: () => `a reply: ${reply}` });
  assert.equal(failure, null);
  assert.match(reply, /^HTTP\/1\.1 413 /);
  assert.match(reply, /exceeds the limit of 4096 bytes/);
  socket.destroy();
});
