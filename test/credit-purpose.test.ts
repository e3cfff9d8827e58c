// The bundled demo model with a categorical input: examples/models/credit-purpose is what its
// builder writes (byte-identical, twice), onnxruntime takes `purpose` as strings through the
// LabelEncoder and gives the probabilities of the trained logistic regression on the one-hot
// purpose (the split into numeric model + per-purpose terms is exact), and an unknown purpose adds
// nothing to the log-odds.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import {
  buildPurposeModel,
  designRow,
  PURPOSES,
  purposeProbability,
  splitTerms,
  withPurposes,
  type PurposeApplication,
} from '../examples/build-purpose-model.js';
import { CREDIT_FEATURES, featureVector, generateCreditData } from '../examples/credit-data.js';
import { predictProba, trainLogistic } from '../src/retraining/logistic.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

test('credit-purpose: byte-identical builds matching the checked-in files; onnxruntime scores string purposes as the trained model', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-purpose-'));
  try {
    const first = await buildPurposeModel(join(dir, 'a'));
    await buildPurposeModel(join(dir, 'b'));
    for (const file of ['1/model.onnx', 'reference.csv', 'model.yaml']) {
      const bytes = await readFile(join(dir, 'a', 'credit-purpose', file));
      assert.deepEqual(await readFile(join(dir, 'b', 'credit-purpose', file)), bytes, file);
      assert.deepEqual(
        await readFile(join(repoRoot, 'examples', 'models', 'credit-purpose', file)),
        bytes,
        `${file} is stale: run npm run demo:model`,
      );
    }
    assert.ok(first.heldOutAuc > 0.75 && first.heldOutAuc < 0.9, String(first.heldOutAuc));
    // Business and vacation loans default more often in the generator: their terms are the largest.
    const t = first.terms.purpose;
    assert.ok(t.business > t.car && t.vacation > t.education, JSON.stringify(t));

    const lines = (await readFile(first.files.reference, 'utf8')).trimEnd().split('\n');
    assert.equal(lines[0], [...CREDIT_FEATURES, 'purpose', 'default'].join(','));
    const rows = lines.slice(1, 401).map((l) => l.split(','));
    // The last row's purpose is one the model never saw: it must score as the numeric part alone.
    rows[rows.length - 1]![10] = 'boat';
    const session = await ort.InferenceSession.create(await readFile(first.files.model));
    const out = await session.run({
      input: new ort.Tensor('float32', Float32Array.from(rows.flatMap((r) => r.slice(0, 10).map(Number))), [rows.length, 10]),
      purpose: new ort.Tensor(
        'string',
        rows.map((r) => r[10]!),
        [rows.length, 1],
      ),
    });
    const p1 = out.probabilities!.data as Float32Array;
    rows.forEach((r, i) => {
      const app = {
        ...Object.fromEntries(CREDIT_FEATURES.map((f, j) => [f, Number(r[j])])),
        purpose: r[10],
      } as unknown as PurposeApplication;
      assert.ok(
        Math.abs(p1[2 * i + 1]! - purposeProbability(first.terms, app)) < 1e-5,
        `row ${i}: ${p1[2 * i + 1]} vs ${purposeProbability(first.terms, app)}`,
      );
    });
    const numericOnly = predictProba(first.terms.numeric, rows[rows.length - 1]!.slice(0, 10).map(Number));
    assert.ok(Math.abs(p1[2 * (rows.length - 1) + 1]! - numericOnly) < 1e-5);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the per-purpose terms reproduce the one-hot logistic regression exactly', () => {
  const rows = withPurposes(generateCreditData({ n: 3000, seed: 11 }), 11);
  const fitted = trainLogistic(
    rows.map(designRow),
    rows.map((r) => r.default),
  );
  const terms = splitTerms(fitted);
  for (const r of rows.slice(0, 200)) {
    assert.ok(Math.abs(purposeProbability(terms, r) - predictProba(fitted, designRow(r))) < 1e-12);
  }
  assert.deepEqual(Object.keys(terms.purpose).sort(), [...PURPOSES]);
  assert.equal(featureVector(rows[0]!).length, terms.numeric.weights.length);
});
