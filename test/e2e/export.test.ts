// Exporting the prediction log of a running server: predictions scored over HTTP (single rows and a
// multi-row request, logged as id/row), labels joined through /v1/feedback, then
// `scoreline export predictions` run against the live data dir (read-only, beside the server's own
// writes) to JSON Lines and Parquet; every exported row carries the id, the score the client got,
// the inputs under their model.yaml names and the label, and both files agree row for row.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import { TINY_LOGISTIC_FEATURES, writeLogisticModel } from '../fixtures/models.js';
import { CLI, request, ROOT, startServer, tempDir, type TestServer } from './server.js';

let server: TestServer;
let dir: string;
let dataDir: string;
/** request id -> [inputs, score the client was answered] */
const sent = new Map<string, { x: number[]; score: number }>();

before(async () => {
  dir = await tempDir('scoreline-export-e2e-');
  dataDir = join(dir, 'data');
  await writeLogisticModel(join(dir, 'models'), 'pd', 1, { modelYaml: { features: TINY_LOGISTIC_FEATURES } });
  server = await startServer(['--model-repo', join(dir, 'models'), '--data-dir', dataDir]);
  const infer = async (id: string, rows: number[][]) => {
    const r = await request(`${server.url}/v2/models/pd/infer`, {
      json: { id, inputs: [{ name: 'input', datatype: 'FP32', shape: [rows.length, 3], data: rows.flat() }] },
    });
    assert.equal(r.status, 200, r.text);
    const p = r.body.outputs.find((o: { name: string }) => o.name === 'probabilities').data as number[];
    rows.forEach((x, i) => {
      sent.set(rows.length === 1 ? id : `${id}/${i}`, { x, score: p[2 * i + 1]! });
    });
  };
  for (let i = 0; i < 20; i++) await infer(`q${i}`, [[i / 10, 1 - i / 20, i % 3]]);
  await infer('batch', [
    [0.5, 0.25, 2],
    [-1, 3, 0.125],
  ]);
  // Labels join once the predictions are in the log (it flushes every 100 ms): retried until they do.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const fb = await request(`${server.url}/v1/feedback`, {
      json: [
        { request_id: 'q3', label: 1 },
        { request_id: 'batch/1', label: 0 },
      ],
    });
    if (fb.body?.joined === 2) break;
    if (Date.now() > deadline) assert.fail(`labels never joined: ${fb.text}`);
    await new Promise((r) => setTimeout(r, 100));
  }
});

after(async () => {
  await server.stop();
});

const exportTo = (file: string, ...args: string[]) => {
  const r = spawnSync(
    process.execPath,
    [CLI, 'export', 'predictions', '--data-dir', dataDir, '--model', 'pd', '--output', file, '--quiet', ...args],
    { cwd: ROOT, encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
};

test('the live log exports every prediction with its id, answered score, named inputs and joined labels', () => {
  const out = exportTo(join(dir, 'p.jsonl'));
  assert.match(out, /exported 22 predictions of pd \(versions 1; 2 labelled; 3 feature columns\)/);
  const rows = readFileSync(join(dir, 'p.jsonl'), 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, any>);
  assert.equal(rows.length, sent.size);
  for (const r of rows) {
    const s = sent.get(r.request_id);
    assert.ok(s, `unexpected id ${r.request_id}`);
    assert.equal(r.model, 'pd');
    assert.equal(r.version, 1);
    assert.equal(r.variant, 'default');
    assert.equal(r.score, s.score, r.request_id);
    assert.deepEqual([r.f0, r.f1, r.f2], s.x.map(Math.fround));
    assert.ok(Math.abs(Date.parse(r.ts) - Date.now()) < 120_000);
    const label = r.request_id === 'q3' ? 1 : r.request_id === 'batch/1' ? 0 : null;
    assert.equal(r.label, label, r.request_id);
    assert.equal(r.labelled_at === null, label === null);
  }

  exportTo(join(dir, 'p.parquet'));
  const table = tableFromIPC(readParquet(new Uint8Array(readFileSync(join(dir, 'p.parquet')))).intoIPCStream());
  assert.equal(table.numRows, rows.length);
  table.toArray().forEach((rec, i) => {
    const o = rec.toJSON() as Record<string, unknown>;
    const j = rows[i]!;
    assert.deepEqual(
      {
        ...o,
        ts: new Date(o.ts as number).toISOString(),
        labelled_at: o.labelled_at === null ? null : new Date(o.labelled_at as number).toISOString(),
      },
      j,
    );
  });
});
