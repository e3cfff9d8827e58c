// GET /openapi.json against the server that publishes it (the demo: OIP, v1, entity scoring with
// feature definitions, events, monitoring, admin, model control): the document is structurally
// OpenAPI 3.1 (checked here, no meta-schema fetched) and every schema in it compiles as JSON
// Schema 2020-12; every documented path and method is answered by a route (a WebSocket upgrade
// for the stream), and every other method on those paths is 405, so the document is the server's
// surface. Every body route answers malformed JSON and oversized bodies. Bodies the server checks with the document's schemas are refused with the schema's own
// message; the bodies checked by their own parsers (OIP inference,
// v1 :predict, events) are held to their schemas: a body the schema refuses is a 400, and a body
// the server answers 200 is one the schema accepts.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import WebSocket from 'ws';
import { request, ROOT, startServer, tempDir, type TestServer } from './server.js';

let server: TestServer;
let token: string;
let doc: any;

const METHODS = ['get', 'post', 'put', 'delete'] as const;
const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];

before(async () => {
  const dir = await tempDir('scoreline-openapi-');
  const dataDir = join(dir, 'data');
  // The demo (models, feature definitions, events) with small body limits, for the 413 checks.
  const config = join(dir, 'scoreline.yaml');
  writeFileSync(
    config,
    [
      `modelRepository: ${join(ROOT, 'examples', 'models')}`,
      `features: { definitions: ${join(ROOT, 'examples', 'features', 'features.yaml')} }`,
      'server: { maxBodyBytes: 65536 }',
      'admin: { maxModelBytes: 65536 }',
    ].join('\n'),
  );
  server = await startServer(['--config', config, '--data-dir', dataDir]);
  token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  const r = await request(`${server.url}/openapi.json`);
  assert.equal(r.status, 200);
  doc = r.body;
});

after(async () => {
  await server.stop();
});

const ajv = () => {
  const a = new Ajv2020({ strict: false, allowUnionTypes: true });
  a.addVocabulary(['x-error', 'x-missing', 'x-additional']);
  return a;
};

function* operations(): Generator<[string, string, any]> {
  for (const [path, item] of Object.entries<any>(doc.paths)) for (const m of METHODS) if (item[m] !== undefined) yield [path, m, item[m]];
}

test('the document is OpenAPI 3.1: info, paths, operations with unique ids, parameters for every template, responses; its schemas compile as 2020-12', () => {
  assert.match(doc.openapi, /^3\.1\.\d+$/);
  // The gRPC service is on a port of its own: named, not described; keys are off on this server.
  assert.match(doc.info.description, new RegExp(`over gRPC .* on port ${server.grpcPort}`));
  assert.match(doc.info.description, /API keys are off/);
  assert.ok(
    doc.paths['/v1/models/{model}:explain']?.post && doc.paths['/v1/models/{model}/versions/{version}:explain']?.post,
    'v1 :explain',
  );
  assert.ok(doc.paths['/admin/cluster']?.get, '/admin/cluster');
  assert.equal(typeof doc.info.title, 'string');
  assert.equal(typeof doc.info.version, 'string');
  assert.equal(typeof doc.paths, 'object');
  assert.ok(Object.keys(doc.paths).length >= 40, `${Object.keys(doc.paths).length} paths`);
  const ids = new Set<string>();
  const a = ajv();
  const schemas: unknown[] = [];
  for (const [path, method, op] of operations()) {
    const at = `${method.toUpperCase()} ${path}`;
    assert.ok(path.startsWith('/'), at);
    assert.equal(typeof op.operationId, 'string', at);
    assert.ok(!ids.has(op.operationId), `${at}: operationId ${op.operationId} is not unique`);
    ids.add(op.operationId);
    const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    const inPath = op.parameters.filter((p: any) => p.in === 'path');
    assert.deepEqual(
      inPath.map((p: any) => p.name),
      templated,
      `${at}: path parameters`,
    );
    for (const p of op.parameters) {
      assert.ok(['path', 'query', 'header', 'cookie'].includes(p.in), at);
      if (p.in === 'path') assert.equal(p.required, true, at);
      schemas.push(p.schema);
    }
    assert.ok(Object.keys(op.responses).length > 0, `${at}: no responses`);
    for (const [status, r] of Object.entries<any>(op.responses)) {
      assert.match(status, /^[1-5]\d\d$/, at);
      assert.equal(typeof r.description, 'string', `${at} ${status}`);
      for (const media of Object.values<any>(r.content ?? {})) if (media.schema) schemas.push(media.schema);
    }
    if (op.requestBody) for (const media of Object.values<any>(op.requestBody.content)) schemas.push(media.schema);
    for (const s of op.security ?? [])
      for (const name of Object.keys(s)) assert.ok(doc.components.securitySchemes[name], `${at}: security scheme ${name}`);
  }
  for (const s of schemas) a.compile(s as object);
});

/** A concrete URL for a documented path: the demo model, version 1, alias champion; 'nope' where a call would change state. */
function urlOf(path: string, method: string): string {
  const destructive = /unload$/.test(path) || (method === 'delete' && path.startsWith('/admin/deployments'));
  return path
    .replace('{model}', destructive ? 'nope' : 'credit-default')
    .replace('{name}', destructive ? 'nope' : 'credit-default')
    .replace('{version}', '1')
    .replace('{alias}', 'champion')
    .replace('{id}', 'no-such-job');
}

// A route that never answers fails its test here, not at the runner's timeout.
const call = (method: string, url: string, body?: string, contentType = 'application/json') =>
  request(`${server.url}${url}`, {
    method: method.toUpperCase(),
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': contentType } : {}) },
    ...(body !== undefined ? { body } : {}),
    signal: AbortSignal.timeout(20_000),
  });

const noRoute = (r: { status: number; body: any }) => r.status === 405 || (r.status === 404 && /^no route for /.test(r.body?.error ?? ''));

test('every documented path and method is answered by a route; no other method on those paths is; every error body is the documented Error', async () => {
  const isError = ajv().compile(doc.components.schemas.Error);
  for (const [path, method, op] of operations()) {
    const url = urlOf(path, method);
    if (op.parameters.some((p: any) => p.in === 'header' && p.name === 'Upgrade')) {
      const ws = new WebSocket(`${server.url.replace('http', 'ws')}${url}`);
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      ws.close();
      const plain = await call('get', url);
      assert.equal(plain.status, 426, plain.text);
      continue;
    }
    const body = op.requestBody ? (op.requestBody.content['application/json'] ? '{}' : '') : undefined;
    const r = await call(method, url, body);
    assert.ok(!noRoute(r), `${method.toUpperCase()} ${url} is documented but answered ${r.status} ${r.text}`);
    if (r.status >= 400) {
      assert.ok(isError(r.body), `${method.toUpperCase()} ${url}: ${r.text} is not an Error`);
      assert.ok(
        op.responses[String(r.status)] !== undefined,
        `${method.toUpperCase()} ${url} answered ${r.status}, which it does not document`,
      );
    }
  }
  const matches = (template: string, url: string) =>
    new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{[^}]+\\?\}/g, '[^/]+')}$`).test(url);
  for (const [path, item] of Object.entries<any>(doc.paths)) {
    const url = urlOf(path, 'get');
    for (const m of METHODS) {
      if (item[m] !== undefined) continue;
      // A URL another documented path also matches (/v1/models/{model}:predict is /v1/models/{model} too) belongs to that route.
      if (Object.entries<any>(doc.paths).some(([other, it]) => other !== path && it[m] !== undefined && matches(other, url))) continue;
      const r = await call(m, url, m === 'get' || m === 'delete' ? undefined : '{}');
      // 405, or the 404 of a URL no route takes (POST /v1/models/{model} without :predict).
      assert.ok(noRoute(r), `${m.toUpperCase()} ${url} is not documented but answered ${r.status} ${r.text}`);
      assert.ok(isError(r.body), `${m.toUpperCase()} ${url}: ${r.text}`);
    }
  }
  const unknown = await call('get', '/v2/not-a-route');
  assert.ok(noRoute(unknown) && unknown.status === 404);
});

test("bodies the server checks with the document's schemas are refused with the schema's own message", async () => {
  let checked = 0;
  for (const [path, method, op] of operations()) {
    const media = op.requestBody?.content['application/json'];
    if (media === undefined || op.requestBody['x-checked-by'] !== 'schema') continue;
    const r = await call(method, urlOf(path, method), '"not an object"');
    assert.equal(r.status, 400, `${method.toUpperCase()} ${path}: ${r.text}`);
    const messages = JSON.stringify(media.schema);
    assert.ok(
      messages.includes(JSON.stringify(r.body.error).slice(1, -1)),
      `${method.toUpperCase()} ${path}: '${r.body.error}' is not one of its schema's messages`,
    );
    checked++;
  }
  assert.ok(checked >= 10, `${checked} schema-checked bodies`);
});

test('every body route answers malformed JSON (400) and a body over its limit (413), whether or not it counts refusals', async () => {
  for (const [path, method, op] of operations()) {
    const content = op.requestBody?.content;
    if (content === undefined) continue;
    const url = urlOf(path, method);
    if (content['application/json'] !== undefined) {
      const r = await call(method, url, '[5');
      assert.equal(r.status, 400, `${method.toUpperCase()} ${url}: ${r.text}`);
      assert.match(r.body.error, /not valid JSON/);
    }
    const type = Object.keys(content)[0]!;
    const big = await call(method, url, 'x'.repeat(1100 * 1024), type);
    assert.equal(big.status, 413, `${method.toUpperCase()} ${url} (${type}): ${big.text}`);
  }
});

test('bodies checked by their own parsers agree with their schemas: refused by the schema means 400, answered 200 means the schema accepts', async () => {
  const x = (over: Record<string, unknown> = {}) => ({ name: 'input', datatype: 'FP32', shape: [1, 10], data: ROW, ...over });
  const cases: [string, unknown][] = [
    ['/v2/models/credit-default/infer', { inputs: [x()] }],
    ['/v2/models/credit-default/infer', { id: 'a', parameters: {}, inputs: [x({ data: [ROW] })], outputs: [{ name: 'probabilities' }] }],
    ['/v2/models/credit-default/infer', { inputs: [x({ data: ROW.slice(1) })] }],
    ['/v2/models/credit-default/infer', {}],
    ['/v2/models/credit-default/infer', { inputs: [] }],
    ['/v2/models/credit-default/infer', { inputs: 'x' }],
    ['/v2/models/credit-default/infer', { inputs: [5] }],
    ['/v2/models/credit-default/infer', { id: 5, inputs: [x()] }],
    ['/v2/models/credit-default/infer', { parameters: 5, inputs: [x()] }],
    ['/v2/models/credit-default/infer', { inputs: [x({ datatype: 'FLOAT' })] }],
    ['/v2/models/credit-default/infer', { inputs: [x({ shape: [-1, 10] })] }],
    ['/v2/models/credit-default/infer', { inputs: [x({ shape: 'x' })] }],
    ['/v2/models/credit-default/infer', { inputs: [x({ data: 'x' })] }],
    ['/v2/models/credit-default/infer', { inputs: [{ name: 'input', shape: [1, 10], data: ROW }] }],
    ['/v2/models/credit-default/infer', { inputs: [x()], outputs: [{}] }],
    ['/v1/models/credit-default:predict', { instances: [ROW] }],
    ['/v1/models/credit-default:predict', { instances: [] }],
    ['/v1/models/credit-default:predict', { rows: [ROW] }],
    ['/v1/models/credit-default:predict', { instances: [5] }],
    ['/v1/models/credit-default:explain', { instances: [ROW], top_k: 3 }],
    ['/v1/models/credit-default:explain', { instances: [ROW] }],
    ['/v1/models/credit-default:explain', { instances: [ROW], top_k: 0 }],
    ['/v1/models/credit-default:explain', { instances: [ROW], top_k: 'all' }],
    ['/v1/models/credit-default:explain', { top_k: 3 }],
    ['/v1/events', { event: 'transaction', entity: { customer_id: 'C00001' } }],
    ['/v1/events', { events: [{ event: 'late_payment', entity: { customer_id: 'C00002' }, ts: Date.now() - 1000, id: 'e-1' }] }],
    ['/v1/events', {}],
    ['/v1/events', { events: [] }],
    ['/v1/events', { events: 'x' }],
    ['/v1/events', { event: 5, entity: { customer_id: 'C00001' } }],
    ['/v1/events', { event: 'transaction', entity: 'C00001' }],
    ['/v1/events', { event: 'transaction', entity: { customer_id: 'C00001' }, ts: true }],
    ['/v1/events', { event: 'transaction', entity: { customer_id: 'C00001' }, id: '' }],
    ['/v1/events', { event: 'transaction', entity: { customer_id: 'C00001' }, fields: 5 }],
  ];
  const a = ajv();
  let refused = 0;
  let answered = 0;
  for (const [url, body] of cases) {
    const path = Object.keys(doc.paths).find((p) => new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(url))!;
    const op = doc.paths[path].post;
    assert.equal(op.requestBody['x-checked-by'], 'parser', path);
    const valid = a.validate(op.requestBody.content['application/json'].schema, body);
    const r = await request(`${server.url}${url}`, { json: body });
    if (!valid) {
      assert.equal(r.status, 400, `${url} ${JSON.stringify(body)}: the schema refuses it, the server answered ${r.status} ${r.text}`);
      refused++;
    }
    if (r.status === 200) {
      assert.ok(valid, `${url} ${JSON.stringify(body)}: answered 200 but the schema refuses it: ${a.errorsText()}`);
      answered++;
    }
  }
  assert.ok(refused >= 15 && answered >= 5, `${refused} refused, ${answered} answered`);
});
