// Feature definitions: every invalid document fails with a message naming the feature, the path
// and the problem (cycles by their path); a valid document compiles into plans with the right
// topological order, stored groups, request fields, realtime windows and compute functions,
// including a module-based online feature imported from a real file.

import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { decodeGroupInto, encodeGroup } from '../src/features/codec.js';
import { loadFeatureDefinitions, loadFeatureDefinitionsFile, parseDuration, parseFeatureDefinitions } from '../src/features/definitions.js';
import type { ScorelineError } from '../src/errors.js';

const HEAD = `
entities:
  - { name: customer, key: customer_id, pattern: "C[0-9]{5}" }
  - { name: merchant, key: merchant_id }
sources:
  customers: { path: data/customers.csv, entity: customer, timestampColumn: as_of }
  merchants: { path: merchants.jsonl, entity: merchant }
features:
`;
const doc = (features: string) => HEAD + features;
const offline = (name: string, extra = '') =>
  `  - { name: ${name}, version: 1, entity: customer, type: offline, dtype: float64, source: customers${extra} }\n`;
const online = (name: string, deps: string, expr: string, extra = '') =>
  `  - { name: ${name}, version: 1, entity: customer, type: online, dtype: float64, dependsOn: [${deps}], expression: "${expr}"${extra} }\n`;
const realtime = (extra: string) => `  - { name: rt, version: 1, entity: customer, type: realtime, dtype: int64, ${extra} }\n`;

const INVALID: [string, string, string][] = [
  [
    'cycle, named by its path',
    online('a', 'b', 'b + 1') + online('b', 'c', 'c * 2') + online('c', 'a, income', 'a - income') + offline('income'),
    'features[0] (a@1): dependsOn: dependency cycle: a@1 -> b@1 -> c@1 -> a@1',
  ],
  [
    'self cycle through a bare name (highest version)',
    `${online('a', 'income', 'income')}  - { name: a, version: 2, entity: customer, type: online, dtype: float64, dependsOn: [a], expression: "a" }\n${offline('income')}`,
    'features[1] (a@2): dependsOn: dependency cycle: a@2 -> a@2',
  ],
  [
    'unknown dependency',
    offline('income') + online('dti', 'incme', 'incme / 12'),
    "features[1] (dti@1): dependsOn: unknown feature 'incme' (known: income, dti)",
  ],
  [
    'unknown version',
    offline('income') + online('dti', 'income@3', 'income'),
    "dependsOn: unknown feature version 'income@3' (known versions of income: 1)",
  ],
  ['bad request field', offline('income') + online('dti', 'income, request.2x', 'income'), "dependsOn: bad request field 'request.2x'"],
  ['malformed reference', offline('income') + online('dti', 'Income@v1', 'income'), "dependsOn: 'Income@v1' is not a feature reference"],
  [
    'variable given twice',
    offline('amount') + online('dti', 'amount, request.amount', 'amount'),
    "dependsOn: 'amount' and 'request.amount' would both be the variable 'amount'",
  ],
  [
    'dependency on another entity',
    `  - { name: merchant_risk, version: 1, entity: merchant, type: offline, dtype: float64, source: merchants }\n${online('x', 'merchant_risk', 'merchant_risk')}`,
    "features[1] (x@1): dependsOn: 'merchant_risk@1' is a feature of entity 'merchant', not 'customer'",
  ],
  [
    'bad dtype',
    `  - { name: income, version: 1, entity: customer, type: offline, dtype: float, source: customers }\n`,
    "features[0] (income@1): dtype: must be one of float64, float32, int64, int32, bool (got 'float')",
  ],
  [
    'bad type',
    `  - { name: income, version: 1, entity: customer, type: batch, dtype: float64 }\n`,
    "features[0] (income@1): type: must be one of online, offline, realtime, hybrid (got 'batch')",
  ],
  [
    'bad TTL',
    offline('income', ', ttl: ten days'),
    "features[0] (income@1): ttl: 'ten days' is not a duration (a number with ms, s, m, h or d",
  ],
  ['negative TTL', offline('income', ', ttl: -5m'), "features[0] (income@1): ttl: '-5m' must not be negative"],
  ['TTL without a unit', offline('income', ', ttl: 3600'), 'ttl: 3600 has no unit'],
  ['zero window', realtime('event: txn, aggregation: count, window: 0'), 'features[0] (rt@1): window: must be greater than 0'],
  ['bad window', realtime('event: txn, aggregation: count, window: 24 hours'), "features[0] (rt@1): window: '24 hours' is not a duration"],
  ['window under a bucket', realtime('event: txn, aggregation: count, window: 500ms'), "window: '500ms' is shorter than 1s"],
  ['realtime without event', realtime('aggregation: count, window: 1h'), 'features[0] (rt@1): event: required for a realtime feature'],
  ['sum without field', realtime('event: txn, aggregation: sum, window: 1h'), 'features[0] (rt@1): field: required for aggregation sum'],
  [
    'bool realtime',
    `  - { name: rt, version: 1, entity: customer, type: realtime, dtype: bool, event: txn, aggregation: count, window: 1h }\n`,
    'dtype: a realtime aggregation is numeric; bool is not allowed',
  ],
  [
    'hybrid mean',
    `  - { name: h, version: 1, entity: customer, type: hybrid, dtype: float64, source: customers, event: txn, aggregation: mean, field: amount, window: 1h }\n`,
    'features[0] (h@1): aggregation: a hybrid feature adds its realtime part to the offline value, so only count and sum work, not mean',
  ],
  [
    'offline without source',
    `  - { name: income, version: 1, entity: customer, type: offline, dtype: float64 }\n`,
    'features[0] (income@1): source: required for an offline feature',
  ],
  [
    'unknown source',
    offline('income').replace('source: customers', 'source: custs'),
    "source: unknown source 'custs' (known: customers, merchants)",
  ],
  [
    'source of another entity',
    offline('income').replace('source: customers', 'source: merchants'),
    "source: 'merchants' holds entity 'merchant', not 'customer'",
  ],
  [
    'realtime with a source',
    realtime('event: txn, aggregation: count, window: 1h, source: customers'),
    'source: only offline and hybrid features have a source',
  ],
  [
    'default not an integer',
    `  - { name: n, version: 1, entity: customer, type: offline, dtype: int64, source: customers, fallback: { default: 1.5 } }\n`,
    'features[0] (n@1): fallback.default: 1.5 is not a valid int64 (must be an integer)',
  ],
  [
    'default a string',
    offline('income', ', fallback: { default: forty }'),
    "fallback.default: 'forty' is not a valid float64 (must be a number)",
  ],
  [
    'default a boolean for float64',
    offline('income', ', fallback: { default: true }'),
    'fallback.default: true is not a valid float64 (must be a number)',
  ],
  [
    'default a number for bool',
    `  - { name: b, version: 1, entity: customer, type: offline, dtype: bool, source: customers, fallback: { default: 1 } }\n`,
    'fallback.default: 1 is not a valid bool (must be true or false)',
  ],
  [
    'default beyond int32',
    `  - { name: n, version: 1, entity: customer, type: offline, dtype: int32, source: customers, fallback: { default: 3000000000 } }\n`,
    'fallback.default: 3000000000 is not a valid int32 (must be within the int32 range)',
  ],
  [
    'unknown fallback',
    offline('income', ', fallback: zero'),
    "fallback: 'zero' is not a fallback (use { default: value }, last_known, compute or error)",
  ],
  [
    'compute without expression',
    offline('income', ', fallback: compute'),
    'features[0] (income@1): fallback: compute needs an expression or a module',
  ],
  [
    'online without expression',
    `  - { name: o, version: 1, entity: customer, type: online, dtype: float64 }\n`,
    'features[0] (o@1): expression: an online feature needs an expression or a module with a function',
  ],
  [
    'expression and module',
    online('o', 'income', 'income', ', module: ./o.js, function: f') + offline('income'),
    'features[0] (o@1): module: give either expression or module, not both',
  ],
  [
    'module without function',
    `  - { name: o, version: 1, entity: customer, type: online, dtype: float64, module: ./o.js }\n`,
    'function: required with module',
  ],
  [
    'bad expression',
    offline('income') + online('dti', 'income', 'income +'),
    'features[1] (dti@1): expression: syntax error: Expected expression after + at character 8',
  ],
  [
    'unknown variable',
    offline('income') + online('dti', 'income', 'debt / income'),
    "features[1] (dti@1): expression: unknown variable 'debt' (allowed: income) at character 0",
  ],
  [
    'unknown function',
    offline('income') + online('dti', 'income', 'sigmoid(income)'),
    "features[1] (dti@1): expression: unknown function 'sigmoid' (allowed: min, max, abs",
  ],
  [
    'member access',
    offline('income') + online('dti', 'income', '1 + income.toFixed'),
    'expression: member access is not allowed at character 4',
  ],
  ['duplicate name@version', offline('income') + offline('income'), 'features[1] (income@1): duplicate feature income@1'],
  [
    'unknown entity',
    offline('income').replace('entity: customer', 'entity: custmer'),
    "features[0] (income@1): entity: unknown entity 'custmer' (known: customer, merchant)",
  ],
  ['unknown property', offline('income', ', colum: x'), "features[0] (income@1): unknown property 'colum'"],
  ['bad feature name', offline('Income'), "features[0] (Income@1): name: 'Income' is not a valid name (lowercase letters, digits and _"],
  ['version zero', offline('income').replace('version: 1', 'version: 0'), 'features[0] (income@0): version: must be >= 1'],
  [
    'missing dtype',
    `  - { name: x, version: 1, entity: customer, type: offline, source: customers }\n`,
    "features[0] (x@1): must have required property 'dtype'",
  ],
  [
    'dependsOn without computation',
    `  - { name: x, version: 1, entity: customer, type: offline, dtype: float64, source: customers, dependsOn: [y] }\n${offline('y')}`,
    'features[0] (x@1): dependsOn: only an expression or a module reads dependencies',
  ],
];

test('invalid definitions fail with the feature, the path and the reason', () => {
  for (const [name, features, fragment] of INVALID) {
    assert.throws(
      () => parseFeatureDefinitions(doc(features), { source: 'features.yaml' }),
      (e: ScorelineError) => {
        assert.equal(e.code, 'CONFIG_INVALID', name);
        assert.ok(e.message.startsWith('features.yaml'), `${name}: ${e.message}`);
        assert.ok(e.message.includes(fragment), `${name}:\n  expected: ${fragment}\n  got:      ${e.message}`);
        return true;
      },
      name,
    );
  }
});

test('document-level problems: YAML syntax, entities, sources', () => {
  const cases: [string, string][] = [
    ['entities: [\n', 'features.yaml: cannot parse'],
    ['features: []\n', "(root): must have required property 'entities'"],
    [HEAD.replace('C[0-9]{5}', '[C') + offline('income'), 'entities[0] (customer): pattern: Invalid regular expression'],
    [
      HEAD.replace('entity: merchant }', 'entity: shop }') + offline('income'),
      "sources.merchants: entity: unknown entity 'shop' (known: customer, merchant)",
    ],
    [
      HEAD.replace('merchants.jsonl', 'merchants.parquet') + offline('income'),
      "sources.merchants: path: cannot tell the format of 'merchants.parquet'",
    ],
  ];
  for (const [text, fragment] of cases)
    assert.throws(
      () => parseFeatureDefinitions(text, { source: 'features.yaml' }),
      (e: Error) => e.message.includes(fragment) || assert.fail(`${fragment}\n  got: ${e.message}`),
    );
});

test('several problems are reported together', () => {
  const text = doc(offline('income', ', ttl: forever') + realtime('event: txn, aggregation: max, window: 1h'));
  assert.throws(
    () => parseFeatureDefinitions(text),
    (e: Error) => {
      assert.match(e.message, /features\[0\] \(income@1\): ttl: 'forever' is not a duration/);
      assert.match(e.message, /features\[1\] \(rt@1\): field: required for aggregation max/);
      return true;
    },
  );
});

test('durations', () => {
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('30s'), 30_000);
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('90d'), 90 * 86_400_000);
  assert.equal(parseDuration('1.5h'), 5_400_000);
  assert.equal(parseDuration(0), 0);
  assert.equal(parseDuration('none'), 0);
  assert.match(String(parseDuration('-1s')), /must not be negative/);
  assert.match(String(parseDuration('3651d')), /longer than 3650d/);
  assert.match(String(parseDuration('1w')), /is not a duration/);
});

const VALID = doc(`
  - { name: age, version: 1, entity: customer, type: offline, dtype: float64, ttl: 90d, source: customers, fallback: { default: 40 } }
  - { name: income, version: 1, entity: customer, type: offline, dtype: float64, source: customers }
  - { name: income, version: 2, entity: customer, type: offline, dtype: float64, source: customers, column: income_v2, fallback: last_known }
  - { name: monthly_debt, version: 1, entity: customer, type: offline, dtype: float64, source: customers }
  - name: risk
    version: 1
    entity: customer
    type: online
    dtype: float32
    dependsOn: [dti, age]
    expression: "clamp(dti * 2 + (age < 25 ? 0.1 : 0), 0, 1)"
  - name: dti
    version: 1
    entity: customer
    type: online
    dtype: float64
    dependsOn: [monthly_debt@1, income, request.amount, request.duration_months]
    expression: "(monthly_debt + amount / duration_months) / max(income / 12, 1)"
    fallback: { default: 0.35 }
  - { name: txn_count_24h, version: 1, entity: customer, type: realtime, dtype: int64, event: transaction, aggregation: count, window: 24h, fallback: { default: 0 } }
  - { name: txn_sum_1h, version: 1, entity: customer, type: realtime, dtype: float64, event: transaction, aggregation: sum, field: amount, window: 1h }
  - { name: late_payments_90d, version: 1, entity: customer, type: hybrid, dtype: int64, ttl: 2d, source: customers, event: late_payment, aggregation: count, window: 90d }
  - name: utilisation
    version: 2
    entity: customer
    type: offline
    dtype: int32
    source: customers
    dependsOn: [request.limit, monthly_debt@1]
    expression: "floor(monthly_debt / limit * 100)"
    fallback: compute
  - { name: merchant_risk, version: 1, entity: merchant, type: offline, dtype: float64, source: merchants }
`);

test('a valid document: refs, entities, groups, streams', async () => {
  const reg = await loadFeatureDefinitions(VALID, { baseDir: '/srv/features' });
  assert.equal(reg.resolveRef('income').ref, 'income@2');
  assert.equal(reg.resolveRef('income@1').ref, 'income@1');
  assert.equal(reg.get('income@3'), undefined);
  assert.throws(() => reg.resolveRef('income@3'), /unknown feature 'income@3' \(known versions of income: 1, 2\)/);
  assert.throws(() => reg.resolveRef('incme'), /unknown feature 'incme' \(known: age, income, monthly_debt/);
  assert.equal(reg.entityOf('merchant_risk').key, 'merchant_id');
  assert.equal(reg.sources.get('customers')!.path, '/srv/features/data/customers.csv');
  assert.equal(reg.sources.get('merchants')!.format, 'jsonl');
  assert.equal(reg.resolveRef('age').ttlMs, 90 * 86_400_000);
  assert.deepEqual(reg.resolveRef('income@2').fallback, { kind: 'last_known' });
  assert.equal(reg.resolveRef('income@2').column, 'income_v2');
  assert.equal(reg.resolveRef('income@1').column, 'income');

  assert.deepEqual(
    reg.groups.map((g) => [g.entity, g.version, g.refs, g.layout.names]),
    [
      [
        'customer',
        1,
        ['age@1', 'income@1', 'monthly_debt@1', 'late_payments_90d@1'],
        ['age', 'income', 'monthly_debt', 'late_payments_90d'],
      ],
      ['customer', 2, ['income@2', 'utilisation@2'], ['income', 'utilisation']],
      ['merchant', 1, ['merchant_risk@1'], ['merchant_risk']],
    ],
  );
  // The hybrid feature's series uses min(window, ttl) = 2 days.
  assert.deepEqual(
    reg.streams.map((s) => [s.entity, s.stream, s.field, s.windowsMs]),
    [
      ['customer', 'transaction', null, [86_400_000]],
      ['customer', 'transaction.amount', 'amount', [3_600_000]],
      ['customer', 'late_payment', null, [2 * 86_400_000]],
    ],
  );
});

test('a plan: closure in topological order, stored reads, windows, request fields, compute', async () => {
  const reg = await loadFeatureDefinitions(VALID);
  const plan = reg.plan(['risk', 'txn_count_24h', 'late_payments_90d', 'utilisation']);
  const order = plan.features.map((p) => p.def.ref);
  assert.deepEqual(order, [
    'age@1',
    'income@2',
    'monthly_debt@1',
    'dti@1',
    'risk@1',
    'txn_count_24h@1',
    'late_payments_90d@1',
    'utilisation@2',
  ]);
  plan.features.forEach((p, i) => {
    assert.equal(p.slot, i);
    for (const d of p.def.dependsOn) if (d.kind === 'feature') assert.ok(order.indexOf(d.ref) < i, `${d.ref} before ${p.def.ref}`);
  });
  assert.deepEqual(plan.refs, ['risk@1', 'txn_count_24h@1', 'late_payments_90d@1', 'utilisation@2']);
  assert.deepEqual([...plan.outputSlots], [4, 5, 6, 7]);
  assert.deepEqual(plan.requestFields, [
    { field: 'amount', slot: 8 },
    { field: 'duration_months', slot: 9 },
    { field: 'limit', slot: 10 },
  ]);
  assert.equal(plan.slotCount, 11);
  assert.deepEqual(plan.entities, ['customer']);
  assert.deepEqual(
    plan.stored.map((s) => [s.group.entity, s.group.version, [...s.fields], [...s.slots]]),
    [
      ['customer', 1, [0, 2, 3], [0, 2, 6]],
      ['customer', 2, [0, 1], [1, 7]],
    ],
  );
  assert.deepEqual(
    plan.windows.map((w) => [w.slot, w.stream, w.aggregation, w.windowMs, w.hybrid]),
    [
      [5, 'transaction', 'count', 86_400_000, false],
      [6, 'late_payment', 'count', 2 * 86_400_000, true],
    ],
  );
  assert.deepEqual(
    plan.computed.map((p) => p.def.ref),
    ['dti@1', 'risk@1', 'utilisation@2'],
  );
  assert.deepEqual([...plan.features[3]!.inputs], [2, 1, 8, 9]);

  // Fill slots as a resolver would and compute in order.
  const slots: (number | boolean | null)[] = new Array(plan.slotCount).fill(null);
  Object.assign(slots, { 0: 23, 1: 60_000, 2: 500, 8: 12_000, 9: 24, 10: 2_000 });
  for (const p of plan.computed) slots[p.slot] = p.computeSlots!(slots);
  assert.equal(slots[3], (500 + 12_000 / 24) / (60_000 / 12)); // 0.2
  assert.equal(slots[4], Math.fround(0.2 * 2 + 0.1));
  assert.equal(slots[7], 25);
  // The record form gives the same values.
  assert.equal(plan.features[3]!.compute!({ monthly_debt: 500, income: 60_000, amount: 12_000, duration_months: 24 }), 0.2);
  // A missing input makes NaN, the resolver's cue for the fallback.
  assert.ok(Number.isNaN(plan.features[3]!.compute!({ monthly_debt: 500, income: 60_000, amount: 12_000 }) as number));

  // A stored read decodes straight into the slot array.
  const group = plan.stored[0]!.group;
  const bytes = encodeGroup(group.layout, {
    age: { value: 31, eventTs: 5 },
    monthly_debt: { value: 0, eventTs: 6 },
    late_payments_90d: { value: 2, eventTs: 7 },
  });
  const values: (number | boolean | null)[] = new Array(plan.slotCount).fill(null);
  const ts = new Float64Array(plan.slotCount);
  assert.equal(decodeGroupInto(group.layout, bytes, values, ts, plan.stored[0]!), true);
  assert.deepEqual([values[0], values[2], values[6], ts[0], ts[2], ts[6]], [31, 0, 2, 5, 6, 7]);
});

test('entity ids: pattern, type, length; bad ones are 400s', async () => {
  const reg = await loadFeatureDefinitions(VALID);
  assert.equal(reg.entityId('customer', { customer_id: 'C00042' }), 'C00042');
  assert.equal(reg.entityId('merchant', { merchant_id: 77 }), '77');
  const bad: [unknown, string][] = [
    [{ customer_id: 'C0042' }, "entity.customer_id 'C0042' is not a valid customer id (must match C[0-9]{5})"],
    [{ customer_id: 'xC00042' }, 'is not a valid customer id'],
    [{}, 'entity.customer_id is required (the customer id)'],
    [{ customer_id: { $gt: '' } }, 'entity.customer_id must be a string, got object'],
    [['C00042'], "entity must be an object holding 'customer_id'"],
    [null, "entity must be an object holding 'customer_id'"],
  ];
  for (const [entity, fragment] of bad)
    assert.throws(
      () => reg.entityId('customer', entity),
      (e: ScorelineError) => e.status === 400 && e.message.includes(fragment),
    );
  assert.throws(() => reg.entityId('merchant', { merchant_id: 'a'.repeat(257) }), /1 to 256 characters, got 257/);
  assert.throws(() => reg.entityId('merchant', { merchant_id: 'a\nb' }), /control characters/);
});

test('a module-based online feature is imported from its file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-features-'));
  await writeFile(
    join(dir, 'dti.mjs'),
    'export function debtToIncome(x) { return (x.monthly_debt + x.amount / x.duration_months) / Math.max(x.income / 12, 1); }\nexport const notAFunction = 1;\n',
  );
  // A .ts path is served by the compiled .js next to it.
  await writeFile(join(dir, 'flag.js'), 'export const isYoung = (x) => x.age < 25;\n');
  const yaml = doc(`${offline('income')}${offline('monthly_debt')}${offline('age')}
  - name: dti
    version: 3
    entity: customer
    type: online
    dtype: float64
    dependsOn: [monthly_debt, income, request.amount, request.duration_months]
    module: ./dti.mjs
    function: debtToIncome
  - { name: young, version: 1, entity: customer, type: online, dtype: bool, dependsOn: [age], module: ./flag.ts, function: isYoung }
`);
  const file = join(dir, 'features.yaml');
  await writeFile(file, yaml);
  const reg = await loadFeatureDefinitionsFile(file);
  const plan = reg.plan(['dti', 'young']);
  const dti = plan.features.find((p) => p.def.ref === 'dti@3')!;
  assert.equal(dti.compute!({ monthly_debt: 500, income: 60_000, amount: 12_000, duration_months: 24 }), 0.2);
  const slots = new Array(plan.slotCount).fill(null);
  for (const p of plan.features) if (p.def.name === 'income') slots[p.slot] = 60_000;
  for (const p of plan.features) if (p.def.name === 'monthly_debt') slots[p.slot] = 500;
  for (const p of plan.features) if (p.def.name === 'age') slots[p.slot] = 22;
  for (const r of plan.requestFields) slots[r.slot] = r.field === 'amount' ? 12_000 : 24;
  assert.equal(dti.computeSlots!(slots), 0.2);
  assert.equal(plan.features.find((p) => p.def.ref === 'young@1')!.computeSlots!(slots), true);

  await writeFile(file, yaml.replace('function: debtToIncome', 'function: dti'));
  await assert.rejects(loadFeatureDefinitionsFile(file), (e: Error) => {
    assert.match(e.message, /features\[3\] \(dti@3\): function: .*dti\.mjs exports no function 'dti' \(its functions: debtToIncome\)/);
    return true;
  });
  await writeFile(file, yaml.replace('./dti.mjs', './missing.mjs'));
  await assert.rejects(loadFeatureDefinitionsFile(file), /features\[3\] \(dti@3\): module: cannot import .*missing\.mjs: file not found/);
  await assert.rejects(loadFeatureDefinitionsFile(join(dir, 'nope.yaml')), /cannot read feature definitions .*nope\.yaml: ENOENT/);
});
