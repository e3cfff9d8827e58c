// Reads which function of its input a model's score is, from the ONNX graph itself, so the exact
// explainers can be used: a margin linear in the input (scoreline's logistic regression chain
// Sub/Div/MatMul/Add, Gemm, ai.onnx.ml LinearClassifier/LinearRegressor/Scaler) or a tree ensemble
// (TreeEnsembleClassifier/Regressor), and how the score follows from it (itself, or the logistic of
// it). The graph is interpreted backwards from the score output over a small set of operators, each
// with onnxruntime's semantics, including its binary-classifier quirks; anything else (an unknown
// operator, a softmax, MIN/MAX aggregation, a transform that is not per column) is reported as
// unsupported, and the caller falls back to KernelSHAP.

import onnxProto from 'onnx-proto';
import type { Link } from './kernel.js';
import type { LinearMargin } from './linear.js';
import { floats, ints, num, strings, tensorData, tensorDims, text, type AttributeProto, type TensorProto } from './onnx-attributes.js';
import { ensembleColumns } from './onnx-ensemble.js';
import { affineTrees, Unsupported, type TreeModel } from './tree-model.js';

const { onnx } = onnxProto;
type NodeProto = onnxProto.onnx.INodeProto;

export type Margin = { readonly kind: 'linear'; readonly linear: LinearMargin } | { readonly kind: 'trees'; readonly trees: TreeModel };

/** The score as a function of the input: score = margin (identity) or 1 / (1 + e^-margin) (logit). */
export interface ScoreModel {
  readonly margin: Margin;
  readonly link: Link;
  /** What was recognised, e.g. "TreeEnsembleClassifier (150 trees)". */
  readonly source: string;
}

export type Recognition = { readonly ok: true; readonly model: ScoreModel } | { readonly ok: false; readonly reason: string };

/** The model's score: which input, how wide, which output and column (null: the last). */
export interface ScoreTarget {
  readonly input: string;
  readonly inputType: 'FP32' | 'FP64';
  readonly features: number;
  readonly output: string;
  readonly column: number | null;
}

/** One output column: its margin (built on demand: a wide ensemble has many) and link. */
interface Column {
  readonly link: Link;
  margin(): Margin;
  readonly source: string;
  /** Identity of a logistic column, and of the column it is the complement of (1 - it). */
  readonly id: object;
  readonly complementOf?: object;
}

type Value =
  | { readonly kind: 'input'; readonly rounded: boolean }
  | { readonly kind: 'columns'; readonly columns: readonly Column[]; readonly rank: 1 | 2 }
  | { readonly kind: 'const'; readonly dims: readonly number[]; readonly data: Float64Array };

/** Reads the score function of the model in `bytes`, or why it cannot be read. */
export function recogniseScore(bytes: Uint8Array, target: ScoreTarget): Recognition {
  try {
    return { ok: true, model: new Interpreter(bytes, target).score() };
  } catch (e) {
    if (e instanceof Unsupported) return { ok: false, reason: e.message };
    throw e;
  }
}

class Interpreter {
  private readonly producers = new Map<string, { node: NodeProto; index: number }>();
  private readonly initializers = new Map<string, TensorProto>();
  private readonly values = new Map<string, Value>();
  private readonly M: number;

  constructor(
    bytes: Uint8Array,
    private readonly target: ScoreTarget,
  ) {
    const graph = onnx.ModelProto.decode(bytes).graph;
    if (!graph) throw new Unsupported('the model has no graph');
    for (const t of graph.initializer ?? []) if (t.name) this.initializers.set(t.name, t);
    for (const node of graph.node ?? [])
      (node.output ?? []).forEach((o, index) => {
        if (o) this.producers.set(o, { node, index });
      });
    this.M = target.features;
  }

  score(): ScoreModel {
    const v = this.value(this.target.output);
    if (v.kind !== 'columns') throw new Unsupported(`output '${this.target.output}' is not computed from the input by supported operators`);
    const cols = v.columns;
    const c = Math.min(this.target.column ?? cols.length - 1, cols.length - 1);
    const col = cols[c]!;
    return { margin: col.margin(), link: col.link, source: col.source };
  }

  private value(name: string): Value {
    let v = this.values.get(name);
    if (v !== undefined) return v;
    if (name === this.target.input) v = { kind: 'input', rounded: this.target.inputType === 'FP32' };
    else if (this.initializers.has(name)) v = constant(this.initializers.get(name)!);
    else {
      const p = this.producers.get(name);
      if (p === undefined) throw new Unsupported(`tensor '${name}' is neither the input, an initializer nor a node output`);
      v = this.interpret(p.node, p.index);
    }
    this.values.set(name, v);
    return v;
  }

  private interpret(node: NodeProto, index: number): Value {
    const op = node.opType ?? '';
    const domain = node.domain ?? '';
    const inputs = node.input ?? [];
    const arg = (i: number) => this.value(inputs[i] ?? '');
    const attrs = new Map((node.attribute ?? []).map((a) => [a.name ?? '', a] as const));
    if (domain === 'ai.onnx.ml') return this.interpretMl(op, node, index, attrs);
    if (domain !== '' && domain !== 'ai.onnx') throw new Unsupported(`operator ${domain}.${op} is not supported`);
    switch (op) {
      case 'Identity':
        return arg(0);
      case 'Constant': {
        const t = attrs.get('value')?.t;
        if (!t) throw new Unsupported('a Constant without a tensor value');
        return constant(t);
      }
      case 'Cast': {
        const to = num(attrs.get('to')?.i);
        const x = arg(0);
        const FLOAT = onnx.TensorProto.DataType.FLOAT;
        const DOUBLE = onnx.TensorProto.DataType.DOUBLE;
        if (to !== FLOAT && to !== DOUBLE) throw new Unsupported(`Cast to element type ${to} is not supported`);
        if (x.kind === 'input') return { kind: 'input', rounded: x.rounded || to === FLOAT };
        return x;
      }
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div':
        return this.arithmetic(op, arg(0), arg(1));
      case 'Neg':
        return mapColumns(this.columnsOf(arg(0)), (c) => affine(c, -1, 0));
      case 'Sigmoid': {
        const x = this.columnsOf(arg(0));
        return {
          kind: 'columns',
          rank: x.rank,
          columns: x.columns.map((c) => {
            if (c.link !== 'identity') throw new Unsupported('Sigmoid of a probability');
            return { link: 'logit', margin: c.margin, source: c.source, id: {} };
          }),
        };
      }
      case 'MatMul':
        return this.matmul(arg(0), arg(1), 1, null, 0, false, 'MatMul');
      case 'Gemm': {
        if (num(attrs.get('transA')?.i) !== 0) throw new Unsupported('Gemm with transA');
        const alpha = attrs.has('alpha') ? (attrs.get('alpha')!.f ?? 1) : 1;
        const beta = attrs.has('beta') ? (attrs.get('beta')!.f ?? 1) : 1;
        const c = inputs.length > 2 && inputs[2] ? arg(2) : null;
        return this.matmul(arg(0), arg(1), alpha, c, beta, num(attrs.get('transB')?.i) === 1, 'Gemm');
      }
      case 'Concat': {
        const axis = num(attrs.get('axis')?.i);
        const parts = inputs.map((n) => this.columnsOf(this.value(n)));
        if (parts.some((p) => p.rank !== 2) || (axis !== 1 && axis !== -1))
          throw new Unsupported('Concat other than of [N, k] tensors along axis 1');
        return { kind: 'columns', rank: 2, columns: parts.flatMap((p) => p.columns) };
      }
      case 'Flatten':
      case 'Squeeze':
      case 'Unsqueeze':
      case 'Reshape': {
        const x = this.columnsOf(arg(0));
        if (x.columns.length !== 1) throw new Unsupported(`${op} of a tensor of ${x.columns.length} columns`);
        const rank = op === 'Squeeze' ? 1 : op === 'Reshape' ? reshapeRank(arg(1)) : 2;
        return { kind: 'columns', rank, columns: x.columns };
      }
      default:
        throw new Unsupported(`operator ${op} is not supported`);
    }
  }

  /** The input as M identity columns, or the columns of a computed tensor. */
  private columnsOf(v: Value): Extract<Value, { kind: 'columns' }> {
    if (v.kind === 'columns') return v;
    if (v.kind === 'input') {
      const columns = Array.from({ length: this.M }, (_, j): Column => {
        return { link: 'identity', margin: () => linear(unit(this.M, j), 0), source: 'input', id: {} };
      });
      return { kind: 'columns', rank: 2, columns };
    }
    throw new Unsupported('a constant where a computed tensor is expected');
  }

  private arithmetic(op: string, a: Value, b: Value): Value {
    if (b.kind === 'const' && a.kind !== 'const') {
      const x = this.columnsOf(a);
      const k = broadcast(b, x);
      return mapColumns(x, (c, j) => {
        const v = k(j);
        if (op === 'Add') return affine(c, 1, v);
        if (op === 'Sub') return affine(c, 1, -v);
        if (op === 'Mul') return affine(c, v, 0);
        if (v === 0) throw new Unsupported('division by a zero constant');
        return affine(c, 1 / v, 0);
      });
    }
    if (a.kind === 'const' && b.kind !== 'const') {
      const x = this.columnsOf(b);
      const k = broadcast(a, x);
      return mapColumns(x, (c, j) => {
        const v = k(j);
        if (op === 'Add') return affine(c, 1, v);
        if (op === 'Mul') return affine(c, v, 0);
        if (op === 'Sub') {
          // 1 - sigmoid(m) = sigmoid(-m): the complementary probability of a binary classifier.
          if (c.link === 'logit' && v === 1)
            return { link: 'logit', margin: () => scaleMargin(c.margin(), -1, 0), source: c.source, id: {}, complementOf: c.id };
          return affine(c, -1, v);
        }
        throw new Unsupported('a constant divided by a computed tensor');
      });
    }
    throw new Unsupported(`${op} of two computed tensors`);
  }

  /** x . W * alpha + beta * C, with W constant ([k, n], or [n, k] when transposed, or [k]). */
  private matmul(a: Value, w: Value, alpha: number, c: Value | null, beta: number, transB: boolean, source: string): Value {
    const x = this.columnsOf(a);
    if (w.kind !== 'const') throw new Unsupported('MatMul by a computed tensor');
    if (x.rank !== 2) throw new Unsupported('MatMul of a rank-1 tensor');
    const k = x.columns.length;
    const rows = transB ? w.dims[1] : w.dims[0];
    const n = w.dims.length === 1 ? 1 : transB ? w.dims[0]! : w.dims[1]!;
    if (w.dims.length > 2 || rows !== k) throw new Unsupported(`MatMul of ${k} columns by a [${w.dims.join(', ')}] matrix`);
    const at = (i: number, o: number) => (w.dims.length === 1 ? w.data[i]! : transB ? w.data[o * k + i]! : w.data[i * n + o]!);
    let bias: ((o: number) => number) | null = null;
    if (c !== null) {
      if (c.kind !== 'const') throw new Unsupported('Gemm with a computed C');
      bias = broadcast(c, { kind: 'columns', rank: 2, columns: new Array<Column>(n) });
    }
    const inputs = x.columns;
    const columns = Array.from(
      { length: n },
      (_, o): Column => ({
        link: 'identity',
        source,
        id: {},
        margin: () => {
          const weights = new Float64Array(this.M);
          let intercept = bias === null ? 0 : beta * bias(o);
          for (let i = 0; i < k; i++) {
            if (inputs[i]!.link !== 'identity') throw new Unsupported('MatMul of a probability');
            const m = inputs[i]!.margin();
            if (m.kind !== 'linear') throw new Unsupported('MatMul of a tree ensemble output');
            const f = alpha * at(i, o);
            if (f === 0) continue;
            addScaled(weights, m.linear.weights, f);
            intercept += f * m.linear.intercept;
          }
          return linear(weights, intercept);
        },
      }),
    );
    return { kind: 'columns', rank: w.dims.length === 1 ? 1 : 2, columns };
  }

  private interpretMl(op: string, node: NodeProto, index: number, attrs: Map<string, AttributeProto>): Value {
    const inputs = node.input ?? [];
    const x = this.value(inputs[0] ?? '');
    const post = text(attrs.get('post_transform')?.s) || 'NONE';
    switch (op) {
      case 'LinearRegressor': {
        if (post !== 'NONE') throw new Unsupported(`LinearRegressor with post_transform ${post}`);
        const targets = num(attrs.get('targets')?.i) || 1;
        return this.linearNode(x, floats(attrs, 'coefficients'), floats(attrs, 'intercepts'), targets, 'LinearRegressor');
      }
      case 'LinearClassifier':
        return this.linearClassifier(x, attrs, index, post);
      case 'Scaler': {
        const offset = floats(attrs, 'offset');
        const scale = floats(attrs, 'scale');
        const cols = this.columnsOf(x);
        const pick = (a: readonly number[], j: number, dflt: number) => (a.length === 0 ? dflt : a.length === 1 ? a[0]! : a[j]!);
        if ((offset.length > 1 && offset.length !== cols.columns.length) || (scale.length > 1 && scale.length !== cols.columns.length)) {
          throw new Unsupported('Scaler offsets or scales do not match the columns');
        }
        return mapColumns(cols, (c, j) => affine(affine(c, 1, -pick(offset, j, 0)), pick(scale, j, 1), 0));
      }
      case 'Normalizer': {
        const cols = this.columnsOf(x);
        const [a, b] = cols.columns;
        const complementary =
          cols.columns.length === 2 &&
          a!.link === 'logit' &&
          b!.link === 'logit' &&
          (a!.complementOf === b!.id || b!.complementOf === a!.id);
        // Two complementary probabilities already add up to 1: L1 normalisation leaves them as they are.
        if (text(attrs.get('norm')?.s) === 'L1' && complementary) return cols;
        throw new Unsupported('Normalizer other than L1 over the two complementary probabilities of a binary classifier');
      }
      case 'TreeEnsembleClassifier':
      case 'TreeEnsembleRegressor': {
        if (x.kind !== 'input') throw new Unsupported(`${op} on a transformed input`);
        if (op === 'TreeEnsembleClassifier' && index !== 1) throw new Unsupported('the label output of a classifier');
        const { columns, source } = ensembleColumns(op, attrs, x.rounded, this.M);
        return {
          kind: 'columns',
          rank: 2,
          columns: columns.map(
            (c): Column => ({
              link: c.link,
              source,
              id: c.id,
              ...(c.complementOf !== undefined ? { complementOf: c.complementOf } : {}),
              margin: () => ({ kind: 'trees', trees: c.trees() }),
            }),
          ),
        };
      }
      default:
        throw new Unsupported(`operator ai.onnx.ml.${op} is not supported`);
    }
  }

  /** rows of coefficients (targets x k) over the columns of x, plus intercepts. */
  private linearNode(
    x: Value,
    coefficients: readonly number[],
    intercepts: readonly number[],
    targets: number,
    source: string,
  ): Extract<Value, { kind: 'columns' }> {
    const cols = this.columnsOf(x);
    const k = cols.columns.length;
    if (coefficients.length !== targets * k)
      throw new Unsupported(`${source} has ${coefficients.length} coefficients for ${targets} x ${k}`);
    if (intercepts.length !== 0 && intercepts.length !== targets)
      throw new Unsupported(`${source} has ${intercepts.length} intercepts for ${targets} targets`);
    const w: number[][] = Array.from({ length: k }, (_, i) => Array.from({ length: targets }, (_, t) => coefficients[t * k + i]!));
    const matrix: Value = { kind: 'const', dims: [k, targets], data: Float64Array.from(w.flat()) };
    const bias: Value = {
      kind: 'const',
      dims: [targets],
      data: Float64Array.from(intercepts.length === 0 ? new Array<number>(targets).fill(0) : intercepts),
    };
    return this.matmul(cols, matrix, 1, bias, 1, false, source) as Extract<Value, { kind: 'columns' }>;
  }

  /**
   * onnxruntime: scores = X . coefficients^T + intercepts, one column per intercept. One column with
   * two class labels becomes [sigmoid(-s), sigmoid(s)] with LOGISTIC, else [1 - s, s]; more columns
   * get the post_transform per column.
   */
  private linearClassifier(x: Value, attrs: Map<string, AttributeProto>, index: number, post: string): Value {
    if (index !== 1) throw new Unsupported('the label output of a classifier');
    const intercepts = floats(attrs, 'intercepts');
    const labels = Math.max(ints(attrs, 'classlabels_ints').length, strings(attrs, 'classlabels_strings').length);
    const classes = intercepts.length;
    if (classes === 0) throw new Unsupported('LinearClassifier without intercepts');
    const scores = this.linearNode(x, floats(attrs, 'coefficients'), intercepts, classes, 'LinearClassifier');
    if (post === 'PROBIT') throw new Unsupported('LinearClassifier with post_transform PROBIT');
    if (classes === 1 && labels === 2) {
      const s = scores.columns[0]!;
      if (post === 'LOGISTIC') {
        const positive: Column = { link: 'logit', margin: s.margin, source: s.source, id: {} };
        return {
          kind: 'columns',
          rank: 2,
          columns: [
            { link: 'logit', margin: () => scaleMargin(s.margin(), -1, 0), source: s.source, id: {}, complementOf: positive.id },
            positive,
          ],
        };
      }
      return { kind: 'columns', rank: 2, columns: [affine(s, -1, 1), s] };
    }
    // One column without two labels: onnxruntime applies no post_transform but PROBIT to it.
    if (classes === 1 || post === 'NONE') return scores;
    if (post !== 'LOGISTIC') throw new Unsupported(`LinearClassifier with post_transform ${post}`);
    const logistic = scores.columns.map((c): Column => ({ link: 'logit', margin: c.margin, source: c.source, id: {} }));
    if (classes === 2 && negated(scores.columns[0]!.margin(), scores.columns[1]!.margin())) {
      return { kind: 'columns', rank: 2, columns: [{ ...logistic[0]!, complementOf: logistic[1]!.id }, logistic[1]!] };
    }
    return { kind: 'columns', rank: 2, columns: logistic };
  }
}

function linear(weights: Float64Array, intercept: number): Margin {
  return { kind: 'linear', linear: { weights, intercept } };
}

function unit(M: number, j: number): Float64Array {
  const w = new Float64Array(M);
  w[j] = 1;
  return w;
}

function addScaled(into: Float64Array, w: Float64Array, f: number): void {
  for (let i = 0; i < into.length; i++) into[i]! += f * w[i]!;
}

function scaleMargin(m: Margin, scale: number, offset: number): Margin {
  if (m.kind === 'trees') return { kind: 'trees', trees: affineTrees(m.trees, scale, offset) };
  return linear(
    m.linear.weights.map((w) => w * scale),
    offset + scale * m.linear.intercept,
  );
}

/** offset + scale * column, for a column whose value is its margin. */
function affine(c: Column, scale: number, offset: number): Column {
  if (c.link !== 'identity') throw new Unsupported('arithmetic on a probability');
  return { link: 'identity', source: c.source, id: {}, margin: () => scaleMargin(c.margin(), scale, offset) };
}

function negated(a: Margin, b: Margin): boolean {
  if (a.kind !== 'linear' || b.kind !== 'linear') return false;
  return a.linear.intercept === -b.linear.intercept && a.linear.weights.every((w, i) => w === -b.linear.weights[i]!);
}

function mapColumns(x: Extract<Value, { kind: 'columns' }>, f: (c: Column, j: number) => Column): Value {
  return { kind: 'columns', rank: x.rank, columns: x.columns.map(f) };
}

/** A constant's value for column j of x: one value for all, or one per column ([k] or [1, k]). */
function broadcast(c: Extract<Value, { kind: 'const' }>, x: Extract<Value, { kind: 'columns' }>): (j: number) => number {
  const n = c.data.length;
  if (n === 1) return () => c.data[0]!;
  const k = x.columns.length;
  const perColumn = x.rank === 2 && n === k && (c.dims.length === 1 || (c.dims.length === 2 && c.dims[0] === 1));
  if (!perColumn) throw new Unsupported(`a [${c.dims.join(', ')}] constant does not broadcast over ${k} columns`);
  return (j) => c.data[j]!;
}

function reshapeRank(shape: Value): 1 | 2 {
  if (shape.kind !== 'const' || (shape.data.length !== 1 && shape.data.length !== 2))
    throw new Unsupported('Reshape to a shape that is not [n] or [n, 1]');
  return shape.data.length === 1 ? 1 : 2;
}

function constant(t: TensorProto): Value {
  return { kind: 'const', dims: tensorDims(t), data: tensorData(t) };
}
