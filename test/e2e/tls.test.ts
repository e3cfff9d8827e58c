// TLS on the HTTP/WebSocket port with certificates made by openssl in the test, clients pinning the
// CA: HTTPS and WSS serve, plain HTTP does not; SIGHUP re-reads the files and new connections get
// the new certificate while a keep-alive connection and a WebSocket opened before keep working;
// files that are wrong (not a certificate, a key of another certificate) are refused on reload and
// the current certificate stays; the start refuses them with the reason.

import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { stringify } from 'yaml';
import { haveOpenssl, selfSigned, type TestCert } from './certs.js';
import { DEMO_REPO, startServer, tempDir, type TestServer } from './server.js';
import { waitFor } from '../fixtures/wait.js';

const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const OIP = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 10], datatype: 'FP32', data: ROW }] });

interface Answer {
  status: number;
  body: string;
  fingerprint: string;
  localPort: number;
}

function call(port: number, path: string, opts: { ca: Buffer; agent?: Agent; body?: string }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.body === undefined ? 'GET' : 'POST',
        ca: opts.ca,
        agent: opts.agent ?? false,
        headers: opts.body === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        const fingerprint = socket.getPeerCertificate().fingerprint256;
        const localPort = socket.localPort!;
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, body, fingerprint, localPort }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

async function waitForLog(server: TestServer, text: string, from: number): Promise<string> {
  return waitFor(() => server.logs.slice(from).find((l) => l.includes(text)), {
    timeoutMs: 10_000,
    message: () => `a log line '${text}':\n${server.logs.slice(from).join('\n')}`,
  });
}

describe('TLS on the HTTP port, reloaded on SIGHUP', { skip: haveOpenssl() ? false : 'openssl is not installed' }, () => {
  let dir: string;
  let a: TestCert;
  let b: TestCert;
  let server: TestServer;
  let certFile: string;
  let keyFile: string;

  before(async () => {
    dir = await tempDir('scoreline-tls-');
    a = selfSigned(dir, 'a');
    b = selfSigned(dir, 'b');
    certFile = join(dir, 'server.crt');
    keyFile = join(dir, 'server.key');
    copyFileSync(a.certFile, certFile);
    copyFileSync(a.keyFile, keyFile);
    const config = join(dir, 'config.yaml');
    // Relative paths: resolved against the config file's directory.
    writeFileSync(config, stringify({ modelRepository: DEMO_REPO, tls: { cert: 'server.crt', key: 'server.key' } }));
    server = await startServer(['--config', config]);
  });
  after(async () => {
    await server?.stop();
  });

  test('HTTPS serves with the certificate; plain HTTP gets no answer; an untrusting client refuses it', async () => {
    const health = await call(server.port, '/v2/health/ready', { ca: a.cert });
    assert.equal(health.status, 200);
    assert.equal(health.fingerprint, a.fingerprint256);
    const infer = await call(server.port, '/v2/models/credit-default/infer', { ca: a.cert, body: OIP });
    assert.equal(infer.status, 200, infer.body);
    assert.equal(JSON.parse(infer.body).model_name, 'credit-default');
    assert.ok(server.logs.some((l) => l.includes(`scoreline listening on https://127.0.0.1:${server.port}`)));
    const plain = await new Promise<string>((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port: server.port, path: '/v2/health/live' }, (res) =>
        resolve(`answered ${res.statusCode}`),
      );
      req.on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? e.message));
      req.setTimeout(3000, () => req.destroy(new Error('timeout')));
      req.end();
    });
    assert.doesNotMatch(plain, /^answered/, 'plain HTTP is not served');
    // A client that does not trust the certificate refuses it.
    await assert.rejects(call(server.port, '/v2/health/live', { ca: b.cert }), /self[- ]signed|unable to verify/i);
  });

  test('SIGHUP: new connections get the new certificate; a keep-alive connection and a WebSocket opened before keep working', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: a.cert });
    const first = await call(server.port, '/v2/health/live', { ca: a.cert, agent });
    const ws = await new Promise<WebSocket>((resolve, reject) => {
      const s = new WebSocket(`wss://127.0.0.1:${server.port}/v1/stream`, { ca: a.cert });
      s.once('open', () => resolve(s));
      s.once('error', reject);
    });
    const frames: any[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    try {
      copyFileSync(b.keyFile, keyFile);
      copyFileSync(b.certFile, certFile);
      const mark = server.logs.length;
      server.proc.kill('SIGHUP');
      const line = JSON.parse(await waitForLog(server, 'TLS certificate reloaded', mark));
      assert.equal(line.fingerprint256, b.fingerprint256);
      assert.equal(line.previous, a.fingerprint256);

      const fresh = await call(server.port, '/v2/health/ready', { ca: b.cert });
      assert.equal(fresh.status, 200);
      assert.equal(fresh.fingerprint, b.fingerprint256, 'a new connection gets the new certificate');
      await assert.rejects(
        call(server.port, '/v2/health/live', { ca: a.cert }),
        /self[- ]signed|unable to verify/i,
        'and no longer the old one',
      );

      const again = await call(server.port, '/v2/models/credit-default/infer', { ca: a.cert, agent, body: OIP });
      assert.equal(again.status, 200, 'the keep-alive connection still serves');
      assert.equal(again.localPort, first.localPort, 'on the same connection');
      assert.equal(again.fingerprint, a.fingerprint256);

      ws.send(JSON.stringify({ id: 7, model: 'credit-default', inputs: JSON.parse(OIP).inputs }));
      await waitFor(() => frames.length > 0, {
        timeoutMs: 10_000,
        intervalMs: 10,
        message: 'an answer on the WebSocket opened before the reload',
      });
      assert.equal(frames[0]?.id, 7);
      assert.ok(frames[0]?.outputs, 'the WebSocket opened before the reload still answers');
      assert.equal(ws.readyState, WebSocket.OPEN);
    } finally {
      ws.close();
      agent.destroy();
    }
  });

  test('a reload with wrong files is refused and the current certificate stays', async () => {
    const serving = (await call(server.port, '/v2/health/live', { ca: b.cert })).fingerprint;
    assert.equal(serving, b.fingerprint256);
    const c = selfSigned(dir, 'c');
    for (const [cert, key, reason] of [
      [Buffer.from('-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n'), b.key, 'is not a PEM certificate'],
      [c.cert, b.key, 'is not the private key of the certificate'],
    ] as const) {
      writeFileSync(certFile, cert);
      writeFileSync(keyFile, key);
      const mark = server.logs.length;
      server.proc.kill('SIGHUP');
      const line = JSON.parse(await waitForLog(server, 'TLS reload refused', mark));
      assert.match(line.err, new RegExp(reason));
      assert.equal(line.serving, b.fingerprint256);
      const still = await call(server.port, '/v2/health/live', { ca: b.cert });
      assert.equal(still.status, 200);
      assert.equal(still.fingerprint, b.fingerprint256);
    }
    // Fixed files are taken by the next SIGHUP.
    writeFileSync(certFile, c.cert);
    writeFileSync(keyFile, c.key);
    const mark = server.logs.length;
    server.proc.kill('SIGHUP');
    await waitForLog(server, 'TLS certificate reloaded', mark);
    assert.equal((await call(server.port, '/v2/health/live', { ca: c.cert })).fingerprint, c.fingerprint256);
    const metrics = await call(server.port, '/metrics', { ca: c.cert });
    const expiry = Number(/^scoreline_tls_certificate_expiry_timestamp_seconds (\d+)/m.exec(metrics.body)?.[1]);
    assert.ok(Math.abs(expiry - (Date.now() / 1000 + 2 * 86_400)) < 3600, `expiry ${expiry}: two days from now`);
  });
});

describe('TLS files the start refuses', { skip: haveOpenssl() ? false : 'openssl is not installed' }, () => {
  test("a missing file, and a key that is not the certificate's", async () => {
    const dir = await tempDir('scoreline-tls-');
    const a = selfSigned(dir, 'a');
    const b = selfSigned(dir, 'b');
    const config = join(dir, 'c.yaml');
    writeFileSync(config, stringify({ modelRepository: DEMO_REPO, tls: { cert: a.certFile, key: join(dir, 'missing.key') } }));
    await assert.rejects(startServer(['--config', config]), /tls.key: cannot read .*missing.key: ENOENT/);
    writeFileSync(config, stringify({ modelRepository: DEMO_REPO, tls: { cert: a.certFile, key: b.keyFile } }));
    await assert.rejects(startServer(['--config', config]), /is not the private key of the certificate/);
  });
});

test('without TLS, SIGHUP leaves the server running and says there is nothing to reload', async () => {
  const server = await startServer(['--model-repo', DEMO_REPO]);
  try {
    const mark = server.logs.length;
    server.proc.kill('SIGHUP');
    await waitForLog(server, 'the server has no tls section: nothing to reload', mark);
    const r = await fetch(`${server.url}/v2/health/live`);
    assert.equal(r.status, 200);
  } finally {
    assert.equal(await server.stop(), 0);
  }
});
