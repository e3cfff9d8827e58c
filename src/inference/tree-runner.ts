// scoreline's tree engine: evaluates a plain tree ensemble (one ONNX-ML TreeEnsembleClassifier or
// TreeEnsembleRegressor, see tree-plan.ts) in JavaScript with onnxruntime's arithmetic, so a small
// batch skips onnxruntime's fixed cost per run (tensor wrapping, the native call, output tensors),
// which for a 150-tree model is most of the time of a one-row request. Scores are summed as float32
// in tree order, as onnxruntime does with one intra-op thread; inputs are float32, compared with
// float32 thresholds. A host only uses it after checking its answers against onnxruntime's, bit for
// bit (verifyTreeRunner): onnxruntime stays the reference, this is a faster way to the same numbers.
// Loaded by every piscina worker: depends on its plan and, for the logistic, the native addon.

import { loadNativeBinding, type NativeBinding } from '../features/native-cache.js';
import type { TensorPayload } from './session.js';

/** A compiled ensemble: flat arrays over every tree's nodes, structured-clone safe. */
export interface TreePlan {
  readonly kind: 'binary' | 'regressor';
  readonly input: string;
  readonly features: number;
  /** Classifier: [label output, probabilities output]; regressor: [the one output]. */
  readonly outputs: readonly string[];
  /** First node of each tree, in the order onnxruntime sums them. */
  readonly roots: Int32Array;
  /** Per node: the feature compared, -1 for a leaf. */
  readonly feature: Int32Array;
  readonly threshold: Float32Array;
  /** 0..5: BRANCH_LEQ, LT, GTE, GT, EQ, NEQ. */
  readonly mode: Uint8Array;
  readonly missingTrue: Uint8Array;
  /** Child when the comparison holds, and when it does not (node indices). */
  readonly yes: Int32Array;
  readonly no: Int32Array;
  /** A leaf's weight (float32), 0 for inner nodes. */
  readonly leaf: Float32Array;
  /** The one base value (float32), 0 when there is none. */
  readonly base: number;
  /** Binary classifier: int64 labels of class 0 and 1, whether every weight is >= 0, LOGISTIC or NONE. */
  readonly labels: readonly [number, number];
  readonly allPositive: boolean;
  readonly logistic: boolean;
  /** Regressor: AVERAGE divides the sum by the number of trees. */
  readonly average: boolean;
}

const f32 = Math.fround;

/** Nodes per generated function: V8 stops optimizing functions past about 60 KB of bytecode. */
const CHUNK_NODES = 1500;
/** Plans larger than this are left to onnxruntime (tree-plan.ts refuses them). */
export const MAX_PLAN_NODES = 200_000;

const COMPARE = ['<=', '<', '>=', '>', '===', '!=='] as const;

/**
 * The trees as JavaScript: each tree one nested conditional expression, so a split is a compare and
 * a jump with no loads of feature, mode or child indices. Only integers from the plan's typed arrays
 * (feature and node indices) are written into the source; thresholds and leaf weights are read from
 * the plan's arrays. Trees are added in plan order, each sum rounded to float32 as onnxruntime does.
 */
function compileSum(plan: TreePlan): (x: Float32Array, o: number) => number {
  const { feature, mode, missingTrue, yes, no } = plan;
  const expression = (root: number): string => {
    // Iterative: a deep unbalanced tree must not overflow the stack.
    const out: string[] = [];
    const stack: (number | string)[] = [root];
    while (stack.length > 0) {
      const item = stack.pop()!;
      if (typeof item === 'string') {
        out.push(item);
        continue;
      }
      const k = item;
      if (feature[k]! < 0) {
        out.push(`L[${k}]`);
        continue;
      }
      const v = `x[o + ${feature[k]!}]`;
      const test = `${v} ${COMPARE[mode[k]!]} T[${k}]`;
      out.push(missingTrue[k] === 1 ? `(${test} || ${v} !== ${v} ? ` : `(${test} ? `);
      stack.push(')', no[k]!, ' : ', yes[k]!);
    }
    return out.join('');
  };
  const chunks: ((x: Float32Array, o: number, s: number) => number)[] = [];
  let body: string[] = [];
  let nodes = 0;
  const flush = () => {
    if (body.length === 0) return;
    const source = `return function (x, o, s) {\n${body.join('\n')}\nreturn s;\n};`;
    chunks.push(new Function('T', 'L', 'f', source)(plan.threshold, plan.leaf, Math.fround));
    body = [];
    nodes = 0;
  };
  for (let t = 0; t < plan.roots.length; t++) {
    const root = plan.roots[t]!;
    const next = t + 1 < plan.roots.length ? plan.roots[t + 1]! : plan.feature.length;
    if (nodes > 0 && nodes + (next - root) > CHUNK_NODES) flush();
    body.push(`s = f(s + ${expression(root)});`);
    nodes += next - root;
  }
  flush();
  if (chunks.length === 1) {
    const only = chunks[0]!;
    return (x, o) => only(x, o, 0);
  }
  return (x, o) => {
    let s = 0;
    for (let c = 0; c < chunks.length; c++) s = chunks[c]!(x, o, s);
    return s;
  };
}

export class TreeRunner {
  private readonly labels: readonly [bigint, bigint];
  /** The addon's binaryLogistic: the C library's expf, as onnxruntime computes it. */
  private readonly native: NativeBinding | null;

  /** The float32 sum of the leaves the row at offset o reaches (before base values and transforms). */
  private readonly sum: (x: Float32Array, o: number) => number;

  constructor(readonly plan: TreePlan) {
    this.sum = compileSum(plan);
    this.labels = [BigInt(plan.labels[0]), BigInt(plan.labels[1])];
    this.native = plan.kind === 'binary' && plan.logistic ? loadNativeBinding() : null;
  }

  /** Runs `rows` rows of `x` (row-major, plan.features wide): the outputs onnxruntime would give. */
  run(x: Float32Array, rows: number): TensorPayload[] {
    const p = this.plan;
    if (p.kind === 'regressor') {
      const out = new Float32Array(rows);
      const n = p.roots.length;
      for (let r = 0; r < rows; r++) {
        let s = this.sum(x, r * p.features);
        if (p.average) s = f32(s / n);
        out[r] = f32(s + p.base);
      }
      return [{ name: p.outputs[0]!, datatype: 'FP32', dims: [rows, 1], data: out }];
    }
    const label = new BigInt64Array(rows);
    const prob = new Float32Array(rows * 2);
    const [negative, positive] = this.labels;
    const sums = new Float32Array(rows);
    for (let r = 0; r < rows; r++) sums[r] = f32(this.sum(x, r * p.features) + p.base);
    if (this.native !== null) this.native.binaryLogistic(sums, prob);
    // With every weight >= 0 onnxruntime reads the score as a probability: positive above 0.5.
    const cut = p.allPositive ? 0.5 : 0;
    for (let r = 0; r < rows; r++) {
      const s = sums[r]!;
      label[r] = s > cut ? positive : negative;
      if (p.logistic) continue;
      // No transform: [1 - s, s] for a probability, else [-s, s].
      prob[2 * r] = p.allPositive ? f32(1 - s) : -s;
      prob[2 * r + 1] = s;
    }
    return [
      { name: p.outputs[0]!, datatype: 'INT64', dims: [rows], data: label },
      { name: p.outputs[1]!, datatype: 'FP32', dims: [rows, 2], data: prob },
    ];
  }
}

/** Deterministic rows that probe every split: thresholds themselves, their float32 neighbours, NaN, +-Infinity, wide values. */
export function probeRows(plan: TreePlan, rows: number, seed = 0x5eed): Float32Array {
  const cuts: number[][] = Array.from({ length: plan.features }, () => []);
  for (let k = 0; k < plan.feature.length; k++) if (plan.feature[k]! >= 0) cuts[plan.feature[k]!]!.push(plan.threshold[k]!);
  let state = seed >>> 0;
  const uniform = () => {
    // mulberry32
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const bits = new Float32Array(1);
  const word = new Int32Array(bits.buffer);
  const neighbour = (v: number, up: boolean) => {
    bits[0] = v;
    if (v === 0) return up ? 1.4e-45 : -1.4e-45;
    word[0]! += v > 0 === up ? 1 : -1;
    return bits[0]!;
  };
  const x = new Float32Array(rows * plan.features);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < plan.features; j++) {
      const c = cuts[j]!;
      const u = uniform();
      let v: number;
      if (c.length > 0 && u < 0.6) {
        const th = c[Math.floor(uniform() * c.length)]!;
        const w = uniform();
        v = w < 0.34 ? th : neighbour(th, w < 0.67);
      } else if (u < 0.64) v = Number.NaN;
      else if (u < 0.65) v = uniform() < 0.5 ? Number.POSITIVE_INFINITY : Number.NEGATIVE_INFINITY;
      else {
        const spread = c.length > 0 ? Math.max(1, ...c.map(Math.abs)) : 1;
        v = (uniform() * 2 - 1) * spread * 1.5;
      }
      x[r * plan.features + j] = v;
    }
  }
  return x;
}

/** The first difference between two answers to the same batch, or null when they are identical bit for bit. */
export function firstDifference(a: readonly TensorPayload[], b: readonly TensorPayload[]): string | null {
  if (a.length !== b.length) return `${a.length} outputs against ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b.find((t) => t.name === x.name);
    if (y === undefined) return `output '${x.name}' is missing`;
    if (x.datatype !== y.datatype) return `output '${x.name}' is ${x.datatype} against ${y.datatype}`;
    if (x.dims.join(',') !== y.dims.join(',')) return `output '${x.name}' has shape [${x.dims}] against [${y.dims}]`;
    const xs = x.data as ArrayLike<number | bigint>;
    const ys = y.data as ArrayLike<number | bigint>;
    if (xs.length !== ys.length) return `output '${x.name}' has ${xs.length} values against ${ys.length}`;
    for (let k = 0; k < xs.length; k++) {
      // Object.is: NaN equals NaN, +0 and -0 differ, bigints by value.
      if (!Object.is(xs[k], ys[k])) return `output '${x.name}' value ${k} is ${String(xs[k])} against ${String(ys[k])}`;
    }
  }
  return null;
}
