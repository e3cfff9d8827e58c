// Safe expressions: values, precedence, ternary, every whitelisted function, missing inputs, the
// slot-bound form, and every rejected construct with its message and character position.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileExpression, EXPRESSION_FUNCTIONS, type Scalar } from '../src/features/expression.js';

const VARS = ['a', 'b', 'c', 'x', 'flag', 'income', 'debt'];
const VALUES = { a: 2, b: 3, c: 4, x: -1.5, flag: true, income: 60_000, debt: 500 };
const run = (source: string, values: Record<string, Scalar | null | undefined> = VALUES) =>
  compileExpression(source, VARS).evaluate(values);

test('arithmetic and precedence', () => {
  const cases: [string, Scalar][] = [
    ['1 + 2 * 3', 7],
    ['(1 + 2) * 3', 9],
    ['10 - 4 - 3', 3],
    ['a + b * c', 14],
    ['a * b + c', 10],
    ['c / a / a', 1],
    ['7 % 4', 3],
    ['2 ** 3 ** 2', 512], // right-associative
    ['-a ** 2', 4], // jsep binds unary minus first
    ['-(a ** 2)', -4],
    ['+flag + 1', 2],
    ['1 / 0', Infinity],
    ['1.5e3 + .5', 1500.5],
    ['debt * 12 / income', 0.1],
    ['x', -1.5],
  ];
  for (const [source, want] of cases) assert.equal(run(source), want, source);
});

test('comparisons, logic and ternary', () => {
  const cases: [string, Scalar][] = [
    ['a < b', true],
    ['a <= 2', true],
    ['a > b', false],
    ['c >= 4', true],
    ['a == 2', true],
    ['a != 2', false],
    ['flag == 1', true],
    ['flag === 1', false],
    ['flag !== false', true],
    ['a < b && b < c', true],
    ['a > b || c > b', true],
    ['!flag', false],
    ['!(a > b)', true],
    ['0 || 5', 5],
    ['a && 0', 0],
    ['a < b ? 10 : 20', 10],
    ['a > b ? 10 : 20', 20],
    ['x < 0 ? -1 : x == 0 ? 0 : 1', -1],
    ['(a > 1 ? b : c) * 2', 6],
    ['a + b > 4 ? 1 : 0', 1],
  ];
  for (const [source, want] of cases) assert.equal(run(source), want, source);
});

test('whitelisted functions', () => {
  const cases: [string, Scalar][] = [
    ['min(a, b)', 2],
    ['min(c, b, a, x)', -1.5],
    ['max(a)', 2],
    ['max(a, b, c)', 4],
    ['abs(x)', 1.5],
    ['log(1)', 0],
    ['log1p(0)', 0],
    ['exp(0)', 1],
    ['sqrt(c)', 2],
    ['pow(a, 10)', 1024],
    ['floor(x)', -2],
    ['ceil(x)', -1],
    ['round(2.5)', 3],
    ['round(-2.5)', -2], // Math.round: halves go up
    ['clamp(c, 0, 3)', 3],
    ['clamp(x, 0, 3)', 0],
    ['clamp(a, 0, 3)', 2],
    ['coalesce(a, b)', 2],
    ['isnan(a)', false],
    ['isnan(0 / 0)', true],
    ['max(income / 12, 1)', 5000],
  ];
  for (const [source, want] of cases) assert.equal(run(source), want, source);
  assert.deepEqual(EXPRESSION_FUNCTIONS, [
    'min',
    'max',
    'abs',
    'log',
    'log1p',
    'exp',
    'sqrt',
    'pow',
    'floor',
    'ceil',
    'round',
    'clamp',
    'coalesce',
    'isnan',
  ]);
});

test('missing inputs read as NaN; coalesce and isnan handle them', () => {
  const values = { a: null, b: undefined, c: 4 };
  assert.ok(Number.isNaN(run('a + c', values)));
  assert.ok(Number.isNaN(run('b * 2', values)));
  assert.equal(run('coalesce(a, b, c)', values), 4);
  assert.equal(run('coalesce(a, 0)', values), 0);
  assert.ok(Number.isNaN(run('coalesce(a, b)', values)));
  assert.equal(run('isnan(a)', values), true);
  assert.equal(run('isnan(c)', values), false);
  assert.equal(run('isnan(a) ? -1 : a', values), -1);
  assert.equal(run('a > 0', values), false);
  // Not a number or boolean: treated as missing, never used as is.
  assert.ok(Number.isNaN(run('a + 1', { a: '5' as unknown as number })));
  // Names on Object.prototype do not leak in.
  const e = compileExpression('constructor + 1', ['constructor']);
  assert.ok(Number.isNaN(e.evaluate({})));
  assert.equal(e.evaluate({ constructor: 1 }), 2);
});

test('variables: distinct, in order of first use; slot binding gives the same values', () => {
  const e = compileExpression('(debt + b) / max(income / 12, debt, 1) + b', VARS);
  assert.deepEqual(e.variables, ['debt', 'b', 'income']);
  assert.deepEqual(compileExpression('1 + 2', VARS).variables, []);
  assert.equal(compileExpression('1 + 2 * 3', []).evaluate({}), 7);

  const order = ['income', 'debt', 'b'];
  const f = e.bind((v) => order.indexOf(v));
  assert.equal(f([60_000, 500, 3]), e.evaluate({ debt: 500, b: 3, income: 60_000 }));
  assert.equal(f([60_000, 500, 3]), (500 + 3) / 5000 + 3);
  assert.ok(Number.isNaN(f([60_000, null, 3])));
  assert.throws(() => e.bind(() => -1), /no slot for variable 'debt'/);
});

test('every construct outside the whitelist is refused with its position', () => {
  const cases: [string, string][] = [
    ['a.b', 'member access is not allowed at character 0'],
    ['1 + a["b"]', 'member access is not allowed at character 4'],
    ['"text"', 'string literals are not allowed at character 0'],
    ["a + 'x'", 'string literals are not allowed at character 4'],
    ['null', 'null is not allowed at character 0'],
    ['this', "'this' is not allowed at character 0"],
    ['[1, 2]', 'array literals are not allowed at character 0'],
    ['a = 1', 'syntax error: Unexpected "=" at character 2'],
    ['a += 1', 'syntax error: Expected expression after + at character 3'],
    [
      'foo(a)',
      "unknown function 'foo' (allowed: min, max, abs, log, log1p, exp, sqrt, pow, floor, ceil, round, clamp, coalesce, isnan) at character 0",
    ],
    ['1 + eval(a)', "unknown function 'eval'"],
    ['a.constructor(1)', 'only calls of the allowed functions by name are allowed at character 0'],
    ['Math.min(a, b)', 'only calls of the allowed functions by name are allowed at character 0'],
    ['zz * 2', "unknown variable 'zz' (allowed: a, b, c, x, flag, income, debt) at character 0"],
    ['a + Math', "unknown variable 'Math' (allowed:"],
    ['~a', "operator '~' is not allowed at character 0"],
    ['a | b', "operator '|' is not allowed at character 2"],
    ['a & b', "operator '&' is not allowed at character 2"],
    ['a ^ b', "operator '^' is not allowed at character 2"],
    ['a << 2', "operator '<<' is not allowed at character 2"],
    ['a >>> 2', "operator '>>>' is not allowed at character 2"],
    ['a ?? b', "operator '??' is not allowed at character 2"],
    ['a; b', 'only one expression is allowed at character 3'],
    ['a b', 'only one expression is allowed at character 2'],
    ['(a, b)', 'comma sequences are not allowed at character 0'],
    ['a ? b', 'syntax error: Expected : at character 5'],
    ['(a + b', 'syntax error: Unclosed ( at character 6'],
    ['a +', 'syntax error: Expected expression after + at character 3'],
    ['', 'expression is empty at character 0'],
    ['min()', 'min() takes at least 1 argument, got 0 at character 0'],
    ['pow(a)', 'pow() takes 2 arguments, got 1 at character 0'],
    ['abs(a, b)', 'abs() takes 1 argument, got 2 at character 0'],
    ['clamp(a, b)', 'clamp() takes 3 arguments, got 2 at character 0'],
    ['a.b?.c', 'member access is not allowed'],
    [`${'1 + '.repeat(2000)}1`, 'expression is longer than 4096 characters'],
  ];
  for (const [source, fragment] of cases) {
    assert.throws(
      () => compileExpression(source, VARS),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, 'CONFIG_INVALID');
        assert.ok(e.message.includes(fragment), `${source}\n  expected: ${fragment}\n  got:      ${e.message}`);
        return true;
      },
    );
  }
});

test('evaluation is fast after warm-up (loose sanity bound; see bench/expression.ts)', () => {
  const e = compileExpression('(debt + a / b) / max(income / 12, 1)', VARS);
  const values = { ...VALUES };
  let sink = 0;
  for (let i = 0; i < 200_000; i++) sink += e.evaluate(values) as number;
  const n = 1_000_000;
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    values.a = i;
    sink += e.evaluate(values) as number;
  }
  const ns = Number(process.hrtime.bigint() - t) / n;
  assert.ok(sink > 0);
  assert.ok(ns < 1000, `${ns.toFixed(0)} ns per evaluation`);
});
