// The demo's second version (examples/credit-default-v2, the README's canary): rebuilt byte for byte
// by `npm run demo:model`, trained on data later than version 1's, better than version 1 on the
// recent applications it keeps as its reference, and scored the same by onnxruntime.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import ort from 'onnxruntime-node';
import { buildDemoChallenger, CHALLENGER_DIR, LATER_DATA } from '../examples/build-demo-challenger.js';
import { HELD_OUT_ROWS, rocAuc } from '../examples/build-demo-model.js';
import { CREDIT_FEATURES, generateCreditData } from '../examples/credit-data.js';
import { ROOT } from './e2e/server.js';

test('the challenger is rebuilt byte for byte, matches the checked-in files, and beats version 1 on recent data', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-challenger-'));
  try {
    const a = await buildDemoChallenger(join(dir, 'a'));
    await buildDemoChallenger(join(dir, 'b'));
    for (const file of ['model.onnx', 'recent.csv']) {
      const bytes = await readFile(join(dir, 'a', file));
      assert.deepEqual(await readFile(join(dir, 'b', file)), bytes, file);
      assert.deepEqual(await readFile(join(ROOT, 'examples', CHALLENGER_DIR, file)), bytes, `${file} is stale: run npm run demo:model`);
    }
    // Later data than version 1's (2024-01-01..2025-12-31).
    const first = generateCreditData({ n: 1, ...LATER_DATA })[0]!;
    assert.ok(first.application_date >= '2026-01-01');
    assert.ok(a.recentAuc > a.championRecentAuc + 0.01, `challenger ${a.recentAuc} vs champion ${a.championRecentAuc}`);

    const lines = (await readFile(a.files.recent, 'utf8')).trimEnd().split('\n');
    assert.equal(lines.length, HELD_OUT_ROWS + 1);
    assert.equal(lines[0], [...CREDIT_FEATURES, 'default'].join(','));
    const values = lines.slice(1).map((l) => l.split(',').map(Number));
    const session = await ort.InferenceSession.create(await readFile(a.files.model));
    const out = await session.run({
      input: new ort.Tensor('float32', Float32Array.from(values.flatMap((v) => v.slice(0, 10))), [values.length, 10]),
    });
    const p1 = Array.from({ length: values.length }, (_, i) => (out.probabilities!.data as Float32Array)[2 * i + 1]!);
    assert.ok(
      Math.abs(
        rocAuc(
          p1,
          values.map((v) => v[10]!),
        ) - a.recentAuc,
      ) < 1e-3,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
