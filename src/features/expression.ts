// Safe arithmetic expressions for online features: parsed by jsep, checked against a whitelist
// (number/boolean literals, the allowed variables, arithmetic, comparisons, logic, ternary, a fixed
// set of math functions) and compiled into nested closures. Nothing is ever evaluated as code.
//
// Semantics are JavaScript's on numbers and booleans (true + 1 === 2, 1 / 0 === Infinity,
// `a || b` returns an operand). A variable whose value is missing (null, undefined, or anything
// that is not a number or boolean) reads as NaN, so missing inputs propagate to NaN unless the
// expression handles them with coalesce() or isnan(). jsep binds unary minus tighter than `**`,
// so `-2 ** 2` is 4 (JavaScript itself refuses that expression).

import jsep from 'jsep';
import { configInvalid } from '../errors.js';

export type Scalar = number | boolean;
export type ScalarInput = Scalar | null | undefined;

export interface CompiledExpression {
  readonly source: string;
  /** Distinct variables the expression reads, in order of first use. */
  readonly variables: readonly string[];
  /** Evaluates against values keyed by variable name. */
  evaluate(values: Readonly<Record<string, ScalarInput>>): Scalar;
  /** Compiles again reading each variable from a fixed array position (no string lookups). */
  bind(slotOf: (variable: string) => number): (slots: ArrayLike<ScalarInput>) => Scalar;
}

const MAX_LENGTH = 4096;

/** name -> [min arity, max arity] */
const FUNCTIONS: ReadonlyMap<string, readonly [number, number]> = new Map([
  ['min', [1, Infinity]],
  ['max', [1, Infinity]],
  ['abs', [1, 1]],
  ['log', [1, 1]],
  ['log1p', [1, 1]],
  ['exp', [1, 1]],
  ['sqrt', [1, 1]],
  ['pow', [2, 2]],
  ['floor', [1, 1]],
  ['ceil', [1, 1]],
  ['round', [1, 1]],
  ['clamp', [3, 3]],
  ['coalesce', [1, Infinity]],
  ['isnan', [1, 1]],
] as const);

export const EXPRESSION_FUNCTIONS: readonly string[] = [...FUNCTIONS.keys()];

const BINARY = new Set(['+', '-', '*', '/', '%', '**', '<', '<=', '>', '>=', '==', '!=', '===', '!==', '&&', '||']);
const UNARY = new Set(['-', '+', '!']);

// ---- parsing with positions ------------------------------------------------------------------
// jsep's AST carries no source positions. Its parser class (exported at runtime as jsep.Jsep, not
// in its typings) is subclassed to stamp each token with where it starts, and to refuse operators
// outside the whitelist at the exact character. Ternary support ships registered in jsep 1.4.0.

interface Node {
  type: string;
  start?: number;
  [key: string]: unknown;
}
interface JsepParser {
  index: number;
  gobbleSpaces(): void;
  gobbleToken(): Node | false;
  gobbleIdentifier(): Node;
  gobbleBinaryOp(): string | false;
  throwError(message: string): never;
  parse(): Node;
}
const runtime = jsep as unknown as { Jsep: new (expr: string) => JsepParser; plugins: { registered: Record<string, unknown> } };
if (!runtime.plugins.registered.ternary) throw new Error('jsep was loaded without its ternary plugin');

class PositionedParser extends runtime.Jsep {
  override gobbleToken(): Node | false {
    this.gobbleSpaces();
    const start = this.index;
    const node = super.gobbleToken();
    if (node && node.start === undefined) node.start = start;
    return node;
  }

  override gobbleIdentifier(): Node {
    const start = this.index;
    const node = super.gobbleIdentifier();
    node.start = start;
    return node;
  }

  override gobbleBinaryOp(): string | false {
    this.gobbleSpaces();
    const start = this.index;
    const op = super.gobbleBinaryOp();
    if (op && !BINARY.has(op)) {
      this.index = start;
      this.throwError(`operator '${op}' is not allowed`);
    }
    return op;
  }
}

function startOf(node: Node): number {
  if (node.start !== undefined) return node.start;
  if (node.type === 'BinaryExpression') return startOf(node.left as Node);
  if (node.type === 'ConditionalExpression') return startOf(node.test as Node);
  return 0;
}

const fail = (message: string, at: number): never => {
  throw configInvalid(`${message} at character ${at}`);
};

function parse(source: string): Node {
  if (source.length > MAX_LENGTH) fail(`expression is longer than ${MAX_LENGTH} characters`, MAX_LENGTH);
  let ast: Node;
  try {
    ast = new PositionedParser(source).parse();
  } catch (e) {
    const err = e as Error & { index?: number; description?: string };
    if (typeof err.index !== 'number') throw configInvalid(`expression cannot be parsed: ${err.message}`);
    return fail(`syntax error: ${err.description ?? err.message}`, err.index);
  }
  if (ast.type === 'Compound') {
    const body = ast.body as Node[];
    if (body.length === 0) fail('expression is empty', 0);
    fail('only one expression is allowed', startOf(body[1]!));
  }
  return ast;
}

// ---- checking ------------------------------------------------------------------------------

function check(node: Node, allowed: ReadonlySet<string>, used: string[]): void {
  const at = startOf(node);
  switch (node.type) {
    case 'Literal': {
      const v = node.value;
      if (typeof v === 'number' || typeof v === 'boolean') return;
      fail(v === null ? 'null is not allowed' : 'string literals are not allowed', at);
      return;
    }
    case 'Identifier': {
      const name = node.name as string;
      if (!allowed.has(name)) {
        const known = allowed.size ? [...allowed].join(', ') : 'none';
        fail(`unknown variable '${name}' (allowed: ${known})`, at);
      }
      if (!used.includes(name)) used.push(name);
      return;
    }
    case 'UnaryExpression':
      if (!UNARY.has(node.operator as string)) fail(`operator '${node.operator as string}' is not allowed`, at);
      check(node.argument as Node, allowed, used);
      return;
    case 'BinaryExpression':
      check(node.left as Node, allowed, used);
      check(node.right as Node, allowed, used);
      return;
    case 'ConditionalExpression':
      check(node.test as Node, allowed, used);
      check(node.consequent as Node, allowed, used);
      check(node.alternate as Node, allowed, used);
      return;
    case 'CallExpression': {
      const callee = node.callee as Node;
      if (callee.type !== 'Identifier') fail('only calls of the allowed functions by name are allowed', at);
      const name = callee.name as string;
      const arity = FUNCTIONS.get(name);
      if (!arity) {
        fail(`unknown function '${name}' (allowed: ${EXPRESSION_FUNCTIONS.join(', ')})`, at);
        return;
      }
      const args = node.arguments as Node[];
      if (args.length < arity[0] || args.length > arity[1]) {
        const want = arity[0] === arity[1] ? `${arity[0]}` : `at least ${arity[0]}`;
        fail(`${name}() takes ${want} argument${arity[0] === 1 ? '' : 's'}, got ${args.length}`, at);
      }
      for (const a of args) check(a, allowed, used);
      return;
    }
    case 'MemberExpression':
      fail('member access is not allowed', at);
      return;
    case 'ThisExpression':
      fail("'this' is not allowed", at);
      return;
    case 'ArrayExpression':
      fail('array literals are not allowed', at);
      return;
    case 'SequenceExpression':
      fail('comma sequences are not allowed', at);
      return;
    default:
      fail(`${node.type} is not allowed`, at);
  }
}

// ---- code generation -------------------------------------------------------------------------

type Fn<I> = (input: I) => Scalar;
type Reader<I> = (variable: string) => Fn<I>;

const constants = new WeakMap<Fn<never>, Scalar>();
function constant<I>(value: Scalar): Fn<I> {
  const f: Fn<I> = () => value;
  constants.set(f as Fn<never>, value);
  return f;
}
const isConstant = <I>(f: Fn<I>) => constants.has(f as Fn<never>);
/** Folds a node whose children are all constant: evaluating it ignores the input. */
const fold = <I>(f: Fn<I>, children: Fn<I>[]): Fn<I> => (children.every(isConstant) ? constant<I>(f(undefined as I)) : f);

const num = (x: Scalar) => x as number;

function unary<I>(op: string, a: Fn<I>): Fn<I> {
  switch (op) {
    case '-':
      return (v) => -num(a(v));
    case '+':
      return (v) => +num(a(v));
    default:
      return (v) => !a(v);
  }
}

function binary<I>(op: string, l: Fn<I>, r: Fn<I>): Fn<I> {
  switch (op) {
    case '+':
      return (v) => num(l(v)) + num(r(v));
    case '-':
      return (v) => num(l(v)) - num(r(v));
    case '*':
      return (v) => num(l(v)) * num(r(v));
    case '/':
      return (v) => num(l(v)) / num(r(v));
    case '%':
      return (v) => num(l(v)) % num(r(v));
    case '**':
      return (v) => num(l(v)) ** num(r(v));
    case '<':
      return (v) => l(v) < r(v);
    case '<=':
      return (v) => l(v) <= r(v);
    case '>':
      return (v) => l(v) > r(v);
    case '>=':
      return (v) => l(v) >= r(v);
    // Operands are numbers or booleans only, where == differs from === just by treating
    // true/false as 1/0; both keep JavaScript's meaning by comparing the operands as numbers.
    case '==':
      return (v) => +l(v) === +r(v);
    case '!=':
      return (v) => +l(v) !== +r(v);
    case '===':
      return (v) => l(v) === r(v);
    case '!==':
      return (v) => l(v) !== r(v);
    case '&&':
      return (v) => l(v) && r(v);
    default:
      return (v) => l(v) || r(v);
  }
}

function call<I>(name: string, args: Fn<I>[]): Fn<I> {
  const [a, b, c] = args as [Fn<I>, Fn<I>, Fn<I>];
  switch (name) {
    case 'min':
    case 'max': {
      const m = name === 'min' ? Math.min : Math.max;
      if (args.length === 1) return (v) => m(num(a(v)));
      if (args.length === 2) return (v) => m(num(a(v)), num(b(v)));
      return (v) => {
        let acc = num(args[0]!(v));
        for (let i = 1; i < args.length; i++) acc = m(acc, num(args[i]!(v)));
        return acc;
      };
    }
    case 'abs':
      return (v) => Math.abs(num(a(v)));
    case 'log':
      return (v) => Math.log(num(a(v)));
    case 'log1p':
      return (v) => Math.log1p(num(a(v)));
    case 'exp':
      return (v) => Math.exp(num(a(v)));
    case 'sqrt':
      return (v) => Math.sqrt(num(a(v)));
    case 'pow':
      return (v) => num(a(v)) ** num(b(v));
    case 'floor':
      return (v) => Math.floor(num(a(v)));
    case 'ceil':
      return (v) => Math.ceil(num(a(v)));
    case 'round':
      return (v) => Math.round(num(a(v)));
    case 'clamp':
      return (v) => Math.min(Math.max(num(a(v)), num(b(v))), num(c(v)));
    case 'isnan':
      return (v) => {
        const x = a(v);
        return Number.isNaN(x);
      };
    default: // coalesce: missing values read as NaN, so the first value that is not NaN wins
      return (v) => {
        for (let i = 0; i < args.length; i++) {
          const x = args[i]!(v);
          if (!Number.isNaN(x)) return x;
        }
        return NaN;
      };
  }
}

function generate<I>(node: Node, read: Reader<I>): Fn<I> {
  switch (node.type) {
    case 'Literal':
      return constant<I>(node.value as Scalar);
    case 'Identifier':
      return read(node.name as string);
    case 'UnaryExpression': {
      const a = generate(node.argument as Node, read);
      return fold(unary(node.operator as string, a), [a]);
    }
    case 'BinaryExpression': {
      const l = generate(node.left as Node, read);
      const r = generate(node.right as Node, read);
      return fold(binary(node.operator as string, l, r), [l, r]);
    }
    case 'ConditionalExpression': {
      const t = generate(node.test as Node, read);
      const c = generate(node.consequent as Node, read);
      const a = generate(node.alternate as Node, read);
      if (isConstant(t)) return t(undefined as I) ? c : a;
      return (v) => (t(v) ? c(v) : a(v));
    }
    default: {
      // CallExpression, the only other node check() lets through
      const args = (node.arguments as Node[]).map((n) => generate(n, read));
      return fold(call((node.callee as Node).name as string, args), args);
    }
  }
}

const asScalar = (x: unknown): Scalar => (typeof x === 'number' || typeof x === 'boolean' ? x : NaN);

/**
 * Parses and checks `source` and compiles it. Errors (ScorelineError CONFIG_INVALID) name the
 * problem and its character position, e.g. `unknown function 'foo' ... at character 4`.
 */
export function compileExpression(source: string, allowedVariables: Iterable<string>): CompiledExpression {
  const ast = parse(source);
  const variables: string[] = [];
  check(ast, new Set(allowedVariables), variables);

  const byName = generate<Readonly<Record<string, ScalarInput>>>(ast, (name) => (values) => asScalar(values[name]));
  return {
    source,
    variables,
    evaluate: byName,
    bind(slotOf) {
      return generate<ArrayLike<ScalarInput>>(ast, (name) => {
        const i = slotOf(name);
        if (!Number.isInteger(i) || i < 0) throw new RangeError(`no slot for variable '${name}'`);
        return (slots) => asScalar(slots[i]);
      });
    },
  };
}
