// API keys on the data plane, against a real server: keys from the config (SHA-256 digests made by
// `scoreline keys create`) and from SCORELINE_API_KEYS; 401 without a valid key, 403 without the
// route's scope, on every transport (OIP, v1 :predict, entity scoring, events, feedback,
// monitoring, /metrics when not public, WebSocket upgrades and frames); health and metadata open;
// refusals change nothing; the key id (never the key) in the prediction log, the access log and
// /metrics; x-request-id checked, echoed and used as the prediction id.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import WebSocket from 'ws';
import { stringify } from 'yaml';
import { CLI, DEMO_REPO, request, ROOT, startServer, tempDir, type TestServer } from './server.js';
import { waitFor } from '../fixtures/wait.js';

const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const OIP = { inputs: [{ name: 'input', shape: [1, 10], datatype: 'FP32', data: ROW }] };

/** A key made by the CLI, as an operator would. */
function createKey(id: string, scopes: string): { id: string; key: string; hash: string; scopes: string[]; env: string } {
  const r = spawnSync(process.execPath, [CLI, 'keys', 'create', '--id', id, '--scopes', scopes, '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

describe('auth on: keys from the config and the environment', () => {
  let server: TestServer;
  let dataDir: string;
  const scorer = createKey('scorer', 'infer');
  const labeller = createKey('labeller', 'feedback,events');
  const watcher = createKey('watcher', 'monitoring:read');
  const envKey = 'env-key-0123456789abcdefghij';

  before(async () => {
    const dir = await tempDir('scoreline-auth-');
    dataDir = join(dir, 'data');
    const config = join(dir, 'config.yaml');
    await writeFile(
      config,
      stringify({
        modelRepository: DEMO_REPO,
        dataDir,
        features: { definitions: join(ROOT, 'examples', 'features', 'features.yaml') },
        auth: {
          enabled: true,
          metricsPublic: false,
          apiKeys: [scorer, labeller, watcher].map((k) => ({ id: k.id, hash: k.hash, scopes: k.scopes })),
        },
        accessLog: { sampleRate: 1 },
        monitoring: { predictionLog: { flushMs: 10 } },
      }),
    );
    server = await startServer(['--config', config, '--data-dir', dataDir], { SCORELINE_API_KEYS: `batch-job:${envKey}:infer+feedback` });
  });
  after(async () => {
    await server?.stop();
  });

  test('no key is 401 with a Bearer challenge, on every data route, and the request is not served', async () => {
    const routes: [string, unknown][] = [
      ['/v2/models/credit-default/infer', OIP],
      ['/v1/models/credit-default:predict', { instances: [ROW] }],
      ['/v1/score/credit-default', { entity: { customer_id: 'C00042' } }],
      ['/v1/events', { event: 'transaction', entity: 'C00042', fields: { amount: 1 } }],
      ['/v1/feedback', { request_id: 'x', label: 1 }],
    ];
    for (const [path, json] of routes) {
      const r = await request(`${server.url}${path}`, { json });
      assert.equal(r.status, 401, `${path}: ${r.text}`);
      assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="scoreline"', path);
      assert.match(r.body.error, /needs an API key/);
    }
    for (const path of ['/v1/monitoring', '/v1/monitoring/credit-default', '/v1/monitoring/credit-default/history', '/metrics']) {
      const r = await request(`${server.url}${path}`);
      assert.equal(r.status, 401, path);
    }
  });

  test('a wrong key or a malformed Authorization header is 401 and names no key', async () => {
    for (const headers of [
      bearer('slk_not-a-key-of-this-server-at-all'),
      { 'x-api-key': scorer.key.slice(0, -1) },
      { authorization: `Basic ${scorer.key}` },
      { authorization: 'Bearer' },
    ]) {
      const r = await request(`${server.url}/v2/models/credit-default/infer`, { json: OIP, headers });
      assert.equal(r.status, 401, JSON.stringify(headers));
      assert.ok(!r.text.includes(scorer.key.slice(4, 20)), 'the error does not echo the key');
    }
  });

  test('a valid key serves its scopes (Bearer or x-api-key), and is refused 403 elsewhere', async () => {
    const oip = await request(`${server.url}/v2/models/credit-default/infer`, { json: OIP, headers: bearer(scorer.key) });
    assert.equal(oip.status, 200, oip.text);
    const v1 = await request(`${server.url}/v1/models/credit-default:predict`, {
      json: { instances: [ROW] },
      headers: { 'x-api-key': scorer.key },
    });
    assert.equal(v1.status, 200, v1.text);
    const score = await request(`${server.url}/v1/score/credit-default`, {
      json: { entity: { customer_id: 'C00042' }, context: { amount: 5200, duration_months: 24 } },
      headers: bearer(scorer.key),
    });
    assert.equal(score.status, 200, score.text);

    for (const [path, json] of [
      ['/v1/feedback', { request_id: oip.body.id, label: 1 }],
      ['/v1/events', { event: 'transaction', entity: 'C00042', fields: { amount: 3 } }],
    ] as const) {
      const r = await request(`${server.url}${path}`, { json, headers: bearer(scorer.key) });
      assert.equal(r.status, 403, path);
      assert.match(r.body.error, /API key 'scorer' does not have the '(feedback|events)' scope/);
    }
    const mon = await request(`${server.url}/v1/monitoring/credit-default`, { headers: bearer(scorer.key) });
    assert.equal(mon.status, 403);
    const infer = await request(`${server.url}/v2/models/credit-default/infer`, { json: OIP, headers: bearer(labeller.key) });
    assert.equal(infer.status, 403);

    const fb = await request(`${server.url}/v1/feedback`, { json: { request_id: oip.body.id, label: 1 }, headers: bearer(labeller.key) });
    assert.equal(fb.status, 200, fb.text);
    assert.equal(fb.body.joined, 1);
    for (const path of ['/v1/monitoring', '/v1/monitoring/credit-default', '/metrics']) {
      const r = await request(`${server.url}${path}`, { headers: bearer(watcher.key) });
      assert.equal(r.status, 200, path);
    }
  });

  test("the environment's keys work with their scopes", async () => {
    const r = await request(`${server.url}/v2/models/credit-default/infer`, { json: OIP, headers: bearer(envKey) });
    assert.equal(r.status, 200);
    const e = await request(`${server.url}/v1/events`, {
      json: { event: 'transaction', entity: 'C1', fields: { amount: 1 } },
      headers: bearer(envKey),
    });
    assert.equal(e.status, 403);
  });

  test('health, metadata and the dashboard page stay open; the admin API keeps its own token', async () => {
    for (const path of [
      '/v2',
      '/v2/health/live',
      '/v2/health/ready',
      '/v2/models/credit-default',
      '/v2/models/credit-default/ready',
      '/v1/models',
      '/v1/models/credit-default',
      '/dashboard',
    ]) {
      const r = await request(`${server.url}${path}`);
      assert.equal(r.status, 200, path);
    }
    const admin = await request(`${server.url}/admin/models`, { headers: bearer(scorer.key) });
    assert.equal(admin.status, 403, 'an API key is not the admin token');
  });

  test('a refusal before the body closes the connection and changes nothing', async () => {
    const before = await request(`${server.url}/v1/monitoring/credit-default`, { headers: bearer(watcher.key) });
    const body = JSON.stringify(OIP);
    const closed = await new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
      const req = httpRequest(
        `${server.url}/v2/models/credit-default/infer`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode!, connection: res.headers.connection }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    assert.equal(closed.status, 401);
    assert.equal(closed.connection, 'close');
    const afterSnap = await request(`${server.url}/v1/monitoring/credit-default`, { headers: bearer(watcher.key) });
    assert.equal(afterSnap.body.volume.requests, before.body.volume.requests, 'no request reached the model');
  });

  test('WebSocket: the upgrade needs a key; each frame needs its scope', async () => {
    const url = `ws://127.0.0.1:${server.port}/v1/stream`;
    const refused = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode!));
      ws.once('open', () => reject(new Error('opened without a key')));
      ws.once('error', () => undefined);
    });
    assert.equal(refused, 401);
    const ws = await new Promise<WebSocket>((resolve, reject) => {
      const s = new WebSocket(url, { headers: bearer(scorer.key) });
      s.once('open', () => resolve(s));
      s.once('error', reject);
    });
    try {
      const got: any[] = [];
      ws.on('message', (d) => got.push(JSON.parse(d.toString())));
      ws.send(JSON.stringify({ id: 1, model: 'credit-default', ...OIP }));
      ws.send(JSON.stringify({ id: 2, event: 'transaction', entity: 'C00042', fields: { amount: 5 } }));
      await waitFor(() => got.length >= 2, {
        timeoutMs: 10_000,
        intervalMs: 10,
        message: () => `two answers on the socket: ${JSON.stringify(got)}`,
      });
      const byId = new Map(got.map((a) => [a.id, a]));
      assert.ok(byId.get(1)?.outputs, JSON.stringify(byId.get(1)));
      assert.equal(byId.get(2)?.status, 403);
      assert.match(byId.get(2)?.error, /'events' scope/);
    } finally {
      ws.close();
    }
  });

  test('x-request-id: echoed, the prediction id when the body has none, 400 when it is not printable ASCII or too long', async () => {
    const r = await request(`${server.url}/v1/models/credit-default:predict`, {
      json: { instances: [ROW] },
      headers: { ...bearer(scorer.key), 'x-request-id': 'loan-app-7781' },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-request-id'), 'loan-app-7781');
    assert.equal(r.body.request_id, 'loan-app-7781');
    const fb = await request(`${server.url}/v1/feedback`, {
      json: { request_id: 'loan-app-7781', label: 0 },
      headers: bearer(labeller.key),
    });
    assert.equal(fb.body.joined, 1, 'feedback joins on it');
    const named = await request(`${server.url}/v2/models/credit-default/infer`, {
      json: { ...OIP, id: 'body-id' },
      headers: { ...bearer(scorer.key), 'x-request-id': 'header-id' },
    });
    assert.equal(named.body.id, 'body-id', "the body's id wins");
    assert.equal(named.headers.get('x-request-id'), 'header-id');
    // (fetch sends a header's characters as latin-1 bytes; uWS drops a non-ASCII byte at the very end of a value.)
    for (const bad of ['x'.repeat(129), 'caf\u00e9-1']) {
      const b = await request(`${server.url}/v2/models/credit-default/infer`, {
        json: OIP,
        headers: { ...bearer(scorer.key), 'x-request-id': bad },
      });
      assert.equal(b.status, 400, bad);
      assert.match(b.body.error, /x-request-id/);
    }
    const ok128 = await request(`${server.url}/v2/health/live`, { headers: { 'x-request-id': 'y'.repeat(128) } });
    assert.equal(ok128.status, 200);
    assert.equal(ok128.headers.get('x-request-id'), 'y'.repeat(128));
  });

  test('the API description says what each route needs, and the gate holds every route to it', async () => {
    const doc = (await request(`${server.url}/openapi.json`)).body;
    assert.match(doc.info.description, /API keys are required/);
    const keyFor = (scope: string) => (scope === 'monitoring:read' ? scorer.key : watcher.key);
    let keyed = 0;
    for (const [path, item] of Object.entries<any>(doc.paths)) {
      for (const method of ['get', 'post', 'put', 'delete']) {
        const op = item[method];
        if (op === undefined || op.parameters.some((p: any) => p.name === 'Upgrade')) continue;
        const url = path
          .replace(/\{model\}|\{name\}/g, 'credit-default')
          .replace('{version}', '1')
          .replace('{alias}', 'champion')
          .replace('{id}', 'j');
        const type = Object.keys(op.requestBody?.content ?? {})[0];
        const call = (headers: Record<string, string>) =>
          request(`${server.url}${url}`, {
            method: method.toUpperCase(),
            headers: { ...headers, ...(type !== undefined ? { 'content-type': type } : {}) },
            ...(type !== undefined ? { body: '{}' } : {}),
          });
        const at = `${method.toUpperCase()} ${path}`;
        const scopes: string[] | undefined = op.security?.find((s: any) => s.apiKey !== undefined)?.apiKey;
        if (scopes !== undefined) {
          assert.equal(scopes.length, 1, at);
          assert.equal((await call({})).status, 401, `${at} without a key`);
          const wrong = await call(bearer(keyFor(scopes[0]!)));
          assert.equal(wrong.status, 403, `${at} with a key without '${scopes[0]}': ${wrong.text}`);
          assert.match(wrong.body.error, new RegExp(`'${scopes[0]}' scope`), at);
          assert.ok(op.responses['401'] && op.responses['403'], `${at} documents its refusals`);
          keyed++;
        } else if (op.security?.some((s: any) => s.adminToken !== undefined)) {
          const r = await call({});
          assert.equal(r.status, 401, `${at} without the admin token`);
          assert.equal(r.body.code, 'SCORELINE_UNAUTHORIZED', at);
        } else {
          assert.equal(method, 'get', `${at} is open, so it must only read`);
          assert.notEqual((await call({})).status, 401, `${at} is documented open`);
        }
      }
    }
    assert.ok(keyed >= 10, `${keyed} routes need a key`);
  });

  test('the key id, never the key: prediction log, access log, metrics', async () => {
    const r = await request(`${server.url}/v2/models/credit-default/infer`, {
      json: { ...OIP, id: 'keyed-prediction' },
      headers: bearer(scorer.key),
    });
    assert.equal(r.status, 200);
    const m = await request(`${server.url}/metrics`, { headers: bearer(watcher.key) });
    assert.match(m.text, /scoreline_auth_refusals_total\{reason="missing"\} [1-9]/);
    assert.match(m.text, /scoreline_auth_refusals_total\{reason="scope"\} [1-9]/);
    assert.equal(await server.stop(), 0);
    const db = new Database(join(dataDir, 'monitoring.db'), { readonly: true });
    try {
      const seg = db
        .prepare('SELECT s.key_id AS key_id FROM prediction_ids p JOIN segments s ON s.id = p.loc / 65536 WHERE p.request_id = ?')
        .get('keyed-prediction') as { key_id: string } | undefined;
      assert.equal(seg?.key_id, 'scorer');
      const ids = (db.prepare('SELECT DISTINCT key_id FROM segments').pluck().all() as string[]).sort();
      assert.deepEqual(ids, ['batch-job', 'scorer']);
    } finally {
      db.close();
    }
    const access = server.logs.map((l) => JSON.parse(l)).filter((l) => l.component === 'access');
    const line = access.find((l) => l.request_id === 'keyed-prediction');
    assert.ok(line, 'the access log has the request');
    assert.deepEqual(
      {
        method: line.method,
        path: line.path,
        status: line.status,
        model: line.model,
        version: line.version,
        variant: line.variant,
        key_id: line.key_id,
      },
      {
        method: 'POST',
        path: '/v2/models/credit-default/infer',
        status: 200,
        model: 'credit-default',
        version: '1',
        variant: 'default',
        key_id: 'scorer',
      },
    );
    assert.equal(typeof line.duration_ms, 'number');
    assert.ok(access.some((l) => l.status === 401 && l.key_id === null));
    assert.ok(access.some((l) => l.status === 403 && l.key_id === 'labeller'));
    const all = server.logs.join('\n');
    for (const k of [scorer.key, labeller.key, watcher.key, envKey]) assert.ok(!all.includes(k), 'no key in any log line');
  });
});

describe('auth settings the server refuses or warns about', () => {
  test('auth on without any key does not start', async () => {
    const dir = await tempDir();
    const config = join(dir, 'c.yaml');
    await writeFile(config, stringify({ modelRepository: DEMO_REPO, auth: { enabled: true } }));
    await assert.rejects(startServer(['--config', config]), /auth.enabled is true but no API key is configured/);
  });

  test('a short or malformed SCORELINE_API_KEYS entry does not start, and the error names no key', async () => {
    const dir = await tempDir();
    const config = join(dir, 'c.yaml');
    await writeFile(config, stringify({ modelRepository: DEMO_REPO, auth: { enabled: true } }));
    await assert.rejects(
      startServer(['--config', config], { SCORELINE_API_KEYS: 'a:short-secret-1:infer' }),
      (e: Error) => /shorter than 24 characters/.test(e.message) && !e.message.includes('short-secret-1'),
    );
    await assert.rejects(
      startServer(['--config', config], { SCORELINE_API_KEYS: 'a:0123456789abcdefghijklmnop:infer+admin' }),
      /unknown scope 'admin'/,
    );
    await assert.rejects(
      startServer(['--config', config], { SCORELINE_API_KEYS: 'a:0123456789abcdefghijklmnop' }),
      /must be id:key:scope1\+scope2/,
    );
  });

  test('keys configured with auth off: the server starts open and says so', async () => {
    const server = await startServer(['--model-repo', DEMO_REPO], { SCORELINE_API_KEYS: 'a:0123456789abcdefghijklmnop:infer' });
    try {
      const r = await request(`${server.url}/v2/models/credit-default/infer`, { json: OIP });
      assert.equal(r.status, 200);
      assert.ok(server.logs.some((l) => l.includes('auth.enabled is false: the data plane is open')));
    } finally {
      await server.stop();
    }
  });

  test('the key printed by `scoreline keys create` hashes to the entry it prints', () => {
    const k = createKey('ci', 'infer,monitoring:read');
    assert.match(k.key, /^slk_[A-Za-z0-9_-]{43}$/);
    assert.equal(k.hash, `sha256:${createHash('sha256').update(k.key).digest('hex')}`);
    assert.deepEqual(k.scopes, ['infer', 'monitoring:read']);
    assert.equal(k.env, `ci:${k.key}:infer+monitoring:read`);
    const bad = spawnSync(process.execPath, [CLI, 'keys', 'create', '--id', 'bad id', '--scopes', 'infer'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /the id must be 1-64 letters/);
  });
});
