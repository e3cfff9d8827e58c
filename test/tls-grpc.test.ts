// The gRPC port's TLS seam (src/server/tls-grpc.ts) with a real grpc-js server and client and
// certificates made by openssl: clients pinning the CA get the TlsFiles certificate; after a reload
// new connections get the new one while a channel connected before keeps its connection.

import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { grpcCredentials } from '../src/server/tls-grpc.js';
import { TlsFiles } from '../src/server/tls.js';
import { haveOpenssl, selfSigned } from './e2e/certs.js';
import { tempDir } from './e2e/server.js';

const identity = (b: Buffer) => b;
const ECHO: grpc.ServiceDefinition = {
  Echo: {
    path: '/test.Echo/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

function client(port: number, ca: Buffer, seen: string[]): grpc.Client {
  const creds = grpc.credentials.createSsl(ca, null, null, {
    checkServerIdentity: (_host, cert) => {
      seen.push(cert.fingerprint256);
      return undefined;
    },
  });
  return new grpc.Client(`localhost:${port}`, creds);
}

function echo(c: grpc.Client, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    c.makeUnaryRequest('/test.Echo/Echo', identity, identity, Buffer.from(text), { deadline: Date.now() + 5000 }, (err, res) =>
      err ? reject(err) : resolve(res!.toString()),
    );
  });
}

test('gRPC TLS from TlsFiles follows a reload; open channels keep their connection', {
  skip: haveOpenssl() ? false : 'openssl is not installed',
}, async () => {
  const dir = await tempDir('scoreline-grpc-tls-');
  const a = selfSigned(dir, 'a');
  const b = selfSigned(dir, 'b');
  const certFile = join(dir, 'server.crt');
  const keyFile = join(dir, 'server.key');
  copyFileSync(a.certFile, certFile);
  copyFileSync(a.keyFile, keyFile);
  const files = new TlsFiles(certFile, keyFile);
  const server = new grpc.Server();
  server.addService(ECHO, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.from(`echo ${call.request.toString()}`)),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpcCredentials(files), (e, p) => (e ? reject(e) : resolve(p))),
  );
  const clients: grpc.Client[] = [];
  try {
    const seenA: string[] = [];
    const before = client(port, a.cert, seenA);
    clients.push(before);
    assert.equal(await echo(before, 'one'), 'echo one');
    assert.deepEqual(seenA, [a.fingerprint256]);

    copyFileSync(b.keyFile, keyFile);
    copyFileSync(b.certFile, certFile);
    files.reload();

    const seenB: string[] = [];
    const after = client(port, b.cert, seenB);
    clients.push(after);
    assert.equal(await echo(after, 'two'), 'echo two');
    assert.deepEqual(seenB, [b.fingerprint256], 'a new connection gets the new certificate');

    const stale = client(port, a.cert, []);
    clients.push(stale);
    await assert.rejects(echo(stale, 'three'), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE, 'and not the old one');

    assert.equal(await echo(before, 'four'), 'echo four', 'the channel connected before still works');
    assert.deepEqual(seenA, [a.fingerprint256], 'on its first connection');
  } finally {
    for (const c of clients) c.close();
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  }
});
