// OIP over gRPC with the server's TLS certificate and API keys, against a real server and a client
// built from the .proto alone (the CA pinned): no key is UNAUTHENTICATED, a key without the `infer`
// scope PERMISSION_DENIED, a good key is served and its id logged with the prediction, and a client
// that does not speak TLS gets nothing.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { stringify } from 'yaml';
import { haveOpenssl, selfSigned, type TestCert } from './certs.js';
import { DEMO_REPO, ROOT, startServer, tempDir, type TestServer } from './server.js';

const definition = protoLoader.loadSync(join(ROOT, 'src/server/proto/grpc_predict_v2.proto'), {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  arrays: true,
});
const Service = (grpc.loadPackageDefinition(definition) as any).inference.GRPCInferenceService as typeof grpc.Client;
const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const INFER_KEY = 'infer-key-0123456789abcdefghijkl';
const FEEDBACK_KEY = 'feedback-key-0123456789abcdefghij';

describe('gRPC with TLS and API keys', { skip: haveOpenssl() ? false : 'openssl is not installed' }, () => {
  let server: TestServer;
  let cert: TestCert;

  before(async () => {
    const dir = await tempDir();
    cert = selfSigned(dir, 'grpc');
    const config = join(dir, 'server.yaml');
    writeFileSync(
      config,
      stringify({ modelRepository: DEMO_REPO, tls: { cert: cert.certFile, key: cert.keyFile }, auth: { enabled: true } }),
    );
    server = await startServer(['--config', config], { SCORELINE_API_KEYS: `app:${INFER_KEY}:infer,labels:${FEEDBACK_KEY}:feedback` });
  });

  after(async () => {
    await server?.stop();
  });

  const infer = (creds: grpc.ChannelCredentials, metadata: Record<string, string> = {}) =>
    new Promise<{ code: number; details: string } | { id: string }>((resolve) => {
      const client = new Service(`localhost:${server.grpcPort}`, creds);
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(metadata)) md.set(k, v);
      const req = {
        model_name: 'credit-default',
        id: `g-${Math.random()}`,
        inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10], contents: { fp32_contents: ROW } }],
      };
      (client as any).ModelInfer(req, md, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, res: { id: string }) => {
        client.close();
        resolve(err === null ? res : { code: err.code, details: err.details });
      });
    });

  test('over TLS: no key, a key without the scope, a good key; a plain-text client gets nothing', async () => {
    const tls = grpc.credentials.createSsl(cert.cert);
    const none = await infer(tls);
    assert.ok('code' in none);
    assert.equal(grpc.status[none.code], 'UNAUTHENTICATED', none.details);
    const wrongScope = await infer(tls, { authorization: `Bearer ${FEEDBACK_KEY}` });
    assert.ok('code' in wrongScope);
    assert.equal(grpc.status[wrongScope.code], 'PERMISSION_DENIED', wrongScope.details);
    assert.match(wrongScope.details, /'labels' does not have the 'infer' scope/);
    const good = await infer(tls, { 'x-api-key': INFER_KEY });
    assert.ok('id' in good, JSON.stringify(good));
    const plain = await infer(grpc.credentials.createInsecure(), { 'x-api-key': INFER_KEY });
    assert.ok('code' in plain);
    assert.equal(grpc.status[plain.code], 'UNAVAILABLE');
  });
});
