// Tests for the synthetic credit-application generator, its CLI, the rank-based AUC and the demo
// model build: determinism, column order and ranges, base rate, signal strength, drift (PSI over
// the reference's decile bins), and byte-identical demo artifacts scored by onnxruntime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ort from 'onnxruntime-node';
import {
  CREDIT_COLUMNS,
  CREDIT_FEATURES,
  featureVector,
  generateCreditData,
  parseCliArgs,
  toCsv,
  type CreditApplication,
} from '../examples/credit-data.js';
import { buildDemoModel, demoModelYaml, HELD_OUT_ROWS, rocAuc } from '../examples/build-demo-model.js';
import { predictProba, trainLogistic } from '../src/retraining/logistic.js';

const here = fileURLToPath(new URL('.', import.meta.url)); // dist/test/
const repoRoot = join(here, '..', '..');

/** Quantile with linear interpolation (Hyndman-Fan type 7) of sorted values. */
function quantile(sorted: readonly number[], q: number): number {
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

/** PSI with decile edges of the reference, bin = number of edges <= value, shares floored at 1e-4. */
function psi(reference: readonly number[], current: readonly number[]): number {
  const sorted = [...reference].sort((a, b) => a - b);
  const edges = [1, 2, 3, 4, 5, 6, 7, 8, 9].map((k) => quantile(sorted, k / 10));
  const shares = (values: readonly number[]): number[] => {
    const counts = new Array<number>(10).fill(0);
    for (const v of values) counts[edges.filter((e) => e <= v).length]!++;
    return counts.map((c) => Math.max(c / values.length, 1e-4));
  };
  const ref = shares(reference);
  const cur = shares(current);
  return ref.reduce((sum, r, i) => sum + (cur[i]! - r) * Math.log(cur[i]! / r), 0);
}

const column = (rows: readonly CreditApplication[], name: keyof CreditApplication): number[] => rows.map((r) => r[name] as number);
const mean = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0) / values.length;
const median = (values: readonly number[]): number =>
  quantile(
    [...values].sort((a, b) => a - b),
    0.5,
  );

test('deterministic per seed; different seeds differ', () => {
  const a = generateCreditData({ n: 2_000, seed: 7 });
  assert.deepEqual(generateCreditData({ n: 2_000, seed: 7 }), a);
  assert.equal(toCsv(generateCreditData({ n: 2_000, seed: 7 })), toCsv(a));
  const b = generateCreditData({ n: 2_000, seed: 8 });
  assert.notDeepEqual(b, a);
  assert.ok(a.filter((row, i) => row.amount !== b[i]!.amount).length > 1_500);
});

test('columns come in the documented order, in rows and in CSV', () => {
  const expected = [
    'customer_id',
    'application_date',
    'duration_months',
    'amount',
    'age',
    'income',
    'employment_years',
    'credit_history_months',
    'existing_loans',
    'debt_to_income',
    'txn_count_24h',
    'late_payments_90d',
    'default',
  ];
  assert.deepEqual([...CREDIT_COLUMNS], expected);
  assert.deepEqual([...CREDIT_FEATURES], expected.slice(2, 12));
  const rows = generateCreditData({ n: 3, seed: 1 });
  for (const row of rows) assert.deepEqual(Object.keys(row), expected);
  const lines = toCsv(rows).split('\n');
  assert.equal(lines[0], expected.join(','));
  assert.equal(lines.length, 5); // header, 3 rows, trailing newline
  assert.equal(lines[1], expected.map((c) => String(rows[0]![c as keyof CreditApplication])).join(','));
  assert.equal(lines[1].split(',').length, 13);
});

test('values stay in their ranges, integers are integers, numbers print plainly', () => {
  const rows = generateCreditData({ n: 20_000, seed: 3, drift: 1 }).concat(generateCreditData({ n: 20_000, seed: 3 }));
  const ranges: Record<string, [number, number, boolean]> = {
    duration_months: [6, 72, true],
    amount: [500, 50_000, false],
    age: [18, 80, true],
    income: [12_000, 250_000, false],
    employment_years: [0, 40, false],
    credit_history_months: [0, 480, true],
    existing_loans: [0, 6, true],
    debt_to_income: [0, 3, false],
    txn_count_24h: [0, 40, true],
    late_payments_90d: [0, 6, true],
  };
  for (const [name, [lo, hi, integer]] of Object.entries(ranges)) {
    const values = column(rows, name as keyof CreditApplication);
    assert.ok(
      values.every((v) => v >= lo && v <= hi),
      `${name} outside [${lo}, ${hi}]`,
    );
    if (integer) assert.ok(values.every(Number.isInteger), `${name} must be integers`);
    assert.ok(
      values.every((v) => /^\d+(\.\d{1,4})?$/.test(String(v))),
      `${name} prints plainly`,
    );
    assert.ok(new Set(values).size > 3, `${name} must vary`);
  }
  assert.ok(rows.every((r) => r.employment_years <= r.age - 18 && r.credit_history_months <= (r.age - 18) * 12));
  assert.ok(rows.every((r) => r.default === 0 || r.default === 1));
  assert.ok(rows.every((r) => /^C\d{5}$/.test(r.customer_id)));
  const dates = rows.slice(20_000).map((r) => r.application_date);
  assert.ok(dates.every((d) => /^\d{4}-\d{2}-\d{2}$/.test(d) && d >= '2024-01-01' && d <= '2025-12-31'));
  assert.deepEqual(dates, [...dates].sort(), 'rows come in date order');
  assert.ok(dates.some((d) => d < '2024-02-01') && dates.some((d) => d > '2025-12-01'), 'dates span the whole period');
  assert.ok(new Set(rows.map((r) => r.customer_id)).size > 9_000);
  // Durations are the usual loan terms.
  assert.ok(column(rows, 'duration_months').every((d) => [6, 12, 18, 24, 30, 36, 48, 60, 72].includes(d)));
});

test('dates follow start and end; bad options are rejected', () => {
  const rows = generateCreditData({ n: 500, seed: 2, start: '2026-03-01', end: '2026-03-10' });
  assert.ok(rows.every((r) => r.application_date >= '2026-03-01' && r.application_date <= '2026-03-10'));
  assert.equal(new Set(rows.map((r) => r.application_date)).size, 10);
  assert.throws(() => generateCreditData({ n: 1, seed: 1, start: '2024-13-01' }), /start must be an ISO date/);
  assert.throws(() => generateCreditData({ n: 1, seed: 1, start: '2025-01-02', end: '2025-01-01' }), /before start/);
  assert.throws(() => generateCreditData({ n: -1, seed: 1 }), /n must be a non-negative integer/);
  assert.throws(() => generateCreditData({ n: 1, seed: 1, drift: -0.5 }), /drift must be a number >= 0/);
  assert.deepEqual(generateCreditData({ n: 0, seed: 1 }), []);
});

test('a customer keeps stable traits across applications', () => {
  const rows = generateCreditData({ n: 30_000, seed: 5 });
  const byCustomer = new Map<string, CreditApplication[]>();
  for (const row of rows) byCustomer.set(row.customer_id, [...(byCustomer.get(row.customer_id) ?? []), row]);
  const repeated = [...byCustomer.values()].filter((apps) => apps.length >= 2);
  assert.ok(repeated.length > 3_000);
  for (const apps of repeated) {
    assert.ok(
      apps.every((a) => a.income === apps[0]!.income || Math.abs(a.age - apps[0]!.age) >= 1),
      'income changes only with age',
    );
    const ages = apps.map((a) => a.age); // apps are in date order, the period spans two years
    assert.ok(
      ages.every((age, i) => i === 0 || (age >= ages[i - 1]! && age - ages[0]! <= 2)),
      `ages ${ages.join(', ')}`,
    );
  }
  const sameAge = repeated.filter((apps) => apps[0]!.age === apps[1]!.age);
  assert.ok(
    sameAge.every((apps) => apps[0]!.income === apps[1]!.income && apps[0]!.credit_history_months === apps[1]!.credit_history_months),
  );
  // Older applicants have worked longer and borrowed longer.
  const young = rows.filter((r) => r.age < 30);
  const old = rows.filter((r) => r.age > 50);
  assert.ok(mean(column(old, 'employment_years')) > 2 * mean(column(young, 'employment_years')));
  assert.ok(mean(column(old, 'credit_history_months')) > 2 * mean(column(young, 'credit_history_months')));
});

test('base rate is 10-15% and a logistic regression reaches an AUC of 0.75-0.85', () => {
  for (const seed of [1, 2, 3]) {
    const rows = generateCreditData({ n: 15_000, seed });
    const rate = mean(column(rows, 'default'));
    assert.ok(rate >= 0.1 && rate <= 0.15, `seed ${seed}: base rate ${rate}`);
    const train = rows.slice(0, 10_000);
    const test = rows.slice(10_000);
    const model = trainLogistic(
      train.map(featureVector),
      train.map((r) => r.default),
      { l2: 1 },
    );
    const auc = rocAuc(
      test.map((r) => predictProba(model, featureVector(r))),
      test.map((r) => r.default),
    );
    assert.ok(auc >= 0.75 && auc <= 0.85, `seed ${seed}: AUC ${auc}`);
    // The signal has the expected directions on the raw scale.
    const defaults = rows.filter((r) => r.default === 1);
    const goods = rows.filter((r) => r.default === 0);
    assert.ok(mean(column(defaults, 'debt_to_income')) > mean(column(goods, 'debt_to_income')));
    assert.ok(mean(column(defaults, 'late_payments_90d')) > mean(column(goods, 'late_payments_90d')));
    assert.ok(median(column(defaults, 'income')) < median(column(goods, 'income')));
  }
});

test('drift 1 moves the score and several features past PSI 0.25; no drift stays stable', () => {
  const reference = generateCreditData({ n: 10_000, seed: 40 });
  const model = trainLogistic(
    reference.map(featureVector),
    reference.map((r) => r.default),
    { l2: 1 },
  );
  const score = (rows: readonly CreditApplication[]): number[] => rows.map((r) => predictProba(model, featureVector(r)));
  const stable = generateCreditData({ n: 10_000, seed: 41 });
  const drifted = generateCreditData({ n: 10_000, seed: 42, drift: 1 });
  const mild = generateCreditData({ n: 10_000, seed: 42, drift: 0.3 });
  for (const feature of ['income', 'debt_to_income', 'amount', 'late_payments_90d'] as const) {
    const shifted = psi(column(reference, feature), column(drifted, feature));
    assert.ok(shifted > 0.25, `${feature}: PSI at drift 1 is ${shifted}`);
    assert.ok(psi(column(reference, feature), column(stable, feature)) < 0.1, `${feature}: PSI without drift`);
    assert.ok(psi(column(reference, feature), column(mild, feature)) < shifted, `${feature}: PSI grows with drift`);
  }
  for (const feature of CREDIT_FEATURES) assert.ok(psi(column(reference, feature), column(stable, feature)) < 0.05, feature);
  const scorePsi = psi(score(reference), score(drifted));
  assert.ok(scorePsi > 0.25, `score PSI ${scorePsi}`);
  assert.ok(psi(score(reference), score(stable)) < 0.05);
  assert.ok(median(column(drifted, 'income')) < 0.75 * median(column(reference, 'income')));
  assert.ok(median(column(drifted, 'amount')) > 1.5 * median(column(reference, 'amount')));
  assert.ok(mean(column(drifted, 'debt_to_income')) > 1.5 * mean(column(reference, 'debt_to_income')));
  assert.ok(mean(column(drifted, 'late_payments_90d')) > 2 * mean(column(reference, 'late_payments_90d')));
  assert.ok(mean(column(drifted, 'default')) > mean(column(reference, 'default')), 'worse applicants default more');
});

test('rocAuc is the Mann-Whitney statistic with ties counted one half', () => {
  assert.equal(rocAuc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75); // scikit-learn's documented example
  assert.equal(rocAuc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]), 0.875);
  assert.equal(rocAuc([1, 2, 3], [0, 1, 1]), 1);
  assert.equal(rocAuc([1, 2, 3], [1, 0, 0]), 0);
  assert.equal(rocAuc([7, 7, 7, 7], [1, 0, 1, 0]), 0.5);
  const rows = generateCreditData({ n: 600, seed: 9 });
  const scores = rows.map((r) => Math.round(r.debt_to_income * 20)); // many ties
  const labels = rows.map((r) => r.default);
  let wins = 0;
  let pairs = 0;
  scores.forEach((s, i) => {
    scores.forEach((t, j) => {
      if (labels[i] === 1 && labels[j] === 0) {
        pairs++;
        wins += s > t ? 1 : s === t ? 0.5 : 0;
      }
    });
  });
  assert.ok(Math.abs(rocAuc(scores, labels) - wins / pairs) < 1e-12);
  assert.throws(() => rocAuc([1, 2], [1, 1]), /at least one positive and one negative/);
  assert.throws(() => rocAuc([1, 2], [1]), /2 scores but 1 labels/);
});

test('CLI writes the same CSV as the function and rejects bad arguments', async () => {
  assert.throws(() => parseCliArgs(['--n', 'ten']), /--n must be an integer, got "ten"/);
  assert.throws(() => parseCliArgs(['--n', '5', '--colour', 'red']), /unknown argument "--colour"/);
  assert.throws(() => parseCliArgs(['--n']), /--n needs a value/);
  assert.throws(() => parseCliArgs(['--n', '5', '--drift', 'lots']), /--drift must be a number >= 0/);
  assert.deepEqual(parseCliArgs(['--n', '5', '--seed', '3', '--drift', '0.5']), {
    n: 5,
    seed: 3,
    drift: 0.5,
    out: undefined,
    start: undefined,
    end: undefined,
  });
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-credit-'));
  try {
    const out = join(dir, 'apps.csv');
    await promisify(execFile)(process.execPath, [
      join(repoRoot, 'dist', 'examples', 'credit-data.js'),
      '--n',
      '300',
      '--seed',
      '7',
      '--out',
      out,
      '--drift',
      '1.0',
    ]);
    assert.equal(await readFile(out, 'utf8'), toCsv(generateCreditData({ n: 300, seed: 7, drift: 1 })));
    await assert.rejects(
      promisify(execFile)(process.execPath, [join(repoRoot, 'dist', 'examples', 'credit-data.js'), '--n', '-3']),
      (error: { code?: number; stderr?: string }) => {
        assert.equal(error.code, 2);
        assert.match(error.stderr ?? '', /n must be a non-negative integer/);
        return true;
      },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('demo model build is byte-identical twice, matches the checked-in files, and scores in onnxruntime', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-demo-'));
  try {
    const first = await buildDemoModel(join(dir, 'a'));
    const second = await buildDemoModel(join(dir, 'b'));
    const bundled = join(repoRoot, 'examples', 'models', 'credit-default');
    const relative = ['1/model.onnx', 'reference.csv', 'model.yaml'];
    for (const file of relative) {
      const bytes = await readFile(join(dir, 'a', 'credit-default', file));
      assert.deepEqual(await readFile(join(dir, 'b', 'credit-default', file)), bytes, file);
      assert.deepEqual(await readFile(join(bundled, file)), bytes, `${file} is stale: run npm run demo:model`);
    }
    assert.equal(first.heldOutAuc, second.heldOutAuc);
    assert.ok(first.trainAuc > 0.75 && first.trainAuc < 0.85 && first.heldOutAuc > 0.75 && first.heldOutAuc < 0.85);
    assert.equal(await readFile(first.files.config, 'utf8'), demoModelYaml());
    assert.match(
      demoModelYaml(),
      /^features: \[duration_months, amount, age, income, employment_years, credit_history_months, existing_loans, debt_to_income, txn_count_24h, late_payments_90d\]$/m,
    );

    const lines = (await readFile(first.files.reference, 'utf8')).trimEnd().split('\n');
    assert.equal(lines.length, HELD_OUT_ROWS + 1);
    assert.equal(lines[0], [...CREDIT_FEATURES, 'default'].join(','));
    const values = lines.slice(1).map((line) => line.split(',').map(Number));
    assert.ok(values.every((v) => v.length === 11 && v.every(Number.isFinite)));
    const session = await ort.InferenceSession.create(await readFile(first.files.model));
    const input = new ort.Tensor('float32', Float32Array.from(values.flatMap((v) => v.slice(0, 10))), [values.length, 10]);
    const { probabilities } = await session.run({ input });
    assert.ok(probabilities, 'the graph has a probabilities output');
    const p1 = Array.from({ length: values.length }, (_, i) => (probabilities.data as Float32Array)[2 * i + 1]!);
    const ortAuc = rocAuc(
      p1,
      values.map((v) => v[10]!),
    );
    assert.ok(Math.abs(ortAuc - first.heldOutAuc) < 1e-3, `onnxruntime AUC ${ortAuc} vs ${first.heldOutAuc}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
