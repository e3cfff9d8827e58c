// Micro-benchmark of online-feature expressions (src/features/expression.ts), measured in one run
// against the alternatives: the compiled closures reading a record by name, the same bound to
// array slots (what a resolution plan uses), a plain tree-walking interpreter over the same jsep
// AST, and the expression hand-written in TypeScript (the floor).
//
//   npx tsc -p . && node dist/bench/expression.js [--write]
//
// --write puts the table into bench/RESULTS.md (section `expression`).

import { pathToFileURL } from 'node:url';
import jsep from 'jsep';
import { compileExpression } from '../src/features/expression.js';
import { machine, table, writeSection } from './results.js';

const SOURCE = '(monthly_debt + amount / duration_months) / max(income / 12, 1)';
const VARIABLES = ['monthly_debt', 'amount', 'duration_months', 'income'];

type Values = Record<string, number>;

// The interpreter a compiler is measured against: walks the AST on every evaluation.
type Node = { type: string; [k: string]: unknown };
function interpret(node: Node, v: Values): number {
  switch (node.type) {
    case 'Literal':
      return node.value as number;
    case 'Identifier':
      return v[node.name as string]!;
    case 'BinaryExpression': {
      const l = interpret(node.left as Node, v);
      const r = interpret(node.right as Node, v);
      switch (node.operator) {
        case '+':
          return l + r;
        case '-':
          return l - r;
        case '*':
          return l * r;
        default:
          return l / r;
      }
    }
    case 'CallExpression':
      return Math.max(...(node.arguments as Node[]).map((a) => interpret(a, v)));
    default:
      throw new Error(node.type);
  }
}

/** Best-of-rounds nanoseconds per call of `fn(i)`. */
function measure(fn: (i: number) => number, calls = 2_000_000, rounds = 7): number {
  let sink = 0;
  for (let i = 0; i < 300_000; i++) sink += fn(i);
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) sink += fn(i);
    best = Math.min(best, Number(process.hrtime.bigint() - t) / calls);
  }
  if (sink === 42) console.log('');
  return best;
}

export function runExpressionBench(): { name: string; ns: number }[] {
  const expr = compileExpression(SOURCE, VARIABLES);
  const slotsFn = expr.bind((name) => VARIABLES.indexOf(name));
  const ast = jsep(SOURCE) as unknown as Node;
  const values: Values = { monthly_debt: 500, amount: 12_000, duration_months: 24, income: 60_000 };
  const slots = [500, 12_000, 24, 60_000];
  const hand = (v: Values) => (v.monthly_debt! + v.amount! / v.duration_months!) / Math.max(v.income! / 12, 1);

  // Every variant must agree before it is timed.
  const want = hand(values);
  for (const got of [expr.evaluate(values), slotsFn(slots), interpret(ast, values)])
    if (got !== want) throw new Error(`variants disagree: ${String(got)} vs ${want}`);

  return [
    {
      name: 'compiled closures, record by name (evaluate)',
      ns: measure((i) => {
        values.amount = i;
        return expr.evaluate(values) as number;
      }),
    },
    {
      name: 'compiled closures, array slots (bind)',
      ns: measure((i) => {
        slots[1] = i;
        return slotsFn(slots) as number;
      }),
    },
    {
      name: 'tree-walking interpreter over the jsep AST',
      ns: measure((i) => {
        values.amount = i;
        return interpret(ast, values);
      }),
    },
    {
      name: 'hand-written TypeScript',
      ns: measure((i) => {
        values.amount = i;
        return hand(values);
      }),
    },
  ];
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const rows = runExpressionBench();
  const body = `Expression \`${SOURCE}\` (11 AST nodes), best of 7 rounds of 2M evaluations.\n\n${table(
    ['variant', 'ns / evaluation'],
    rows.map((r) => [r.name, r.ns.toFixed(1)]),
  )}`;
  console.log(`${machine()}\n\n${body}`);
  if (process.argv.includes('--write'))
    writeSection('expression', 'Online-feature expressions', 'npx tsc -p . && node dist/bench/expression.js --write', body);
}
