// Which models the tree engine (tree-runner.ts) can serve, and their plan: a graph that is one
// ai.onnx.ml TreeEnsembleClassifier or TreeEnsembleRegressor reading the graph's only input (float32,
// [batch, features]) and writing the graph's outputs. Supported, with onnxruntime's conventions:
//   - a binary classifier with int64 labels whose every leaf carries one weight for class 0, at most
//     one base value, post_transform LOGISTIC or NONE (scikit-learn's GBDT through skl2onnx, XGBoost
//     and LightGBM binary models, scoreline's own trainer);
//   - a one-target regressor, every leaf carrying one weight, SUM or AVERAGE, post_transform NONE.
// Anything else (more classes, string labels, double thresholds, MIN/MAX, SOFTMAX, PROBIT, another
// operator in the graph) is served by onnxruntime, and the reason is reported.
// Runs on the main thread: it decodes the protobuf, which the workers never load.

import onnxProto from 'onnx-proto';
import { floats, ints, num, strings, text, type Attributes } from '../explain/onnx-attributes.js';
import { rawEnsemble } from '../explain/onnx-ensemble.js';
import { parseEnsemble, Unsupported } from '../explain/tree-model.js';
import { MAX_PLAN_NODES, type TreePlan } from './tree-runner.js';

const { onnx } = onnxProto;

export type TreePlanResult = { readonly ok: true; readonly plan: TreePlan } | { readonly ok: false; readonly reason: string };

/** The tree engine's plan for the model in `bytes`, or why onnxruntime serves it. */
export function planTrees(bytes: Uint8Array): TreePlanResult {
  try {
    return { ok: true, plan: compile(bytes) };
  } catch (e) {
    if (e instanceof Unsupported) return { ok: false, reason: e.message };
    throw e;
  }
}

function compile(bytes: Uint8Array): TreePlan {
  const model = onnx.ModelProto.decode(bytes);
  const graph = model.graph;
  if (!graph) throw new Unsupported('the model has no graph');
  const nodes = graph.node ?? [];
  if (nodes.length !== 1) throw new Unsupported(`the graph has ${nodes.length} nodes, not one tree ensemble`);
  const node = nodes[0]!;
  const op = node.opType ?? '';
  if (node.domain !== 'ai.onnx.ml' || (op !== 'TreeEnsembleClassifier' && op !== 'TreeEnsembleRegressor')) {
    throw new Unsupported(`the graph's node is ${node.domain || 'ai.onnx'}.${op}, not a TreeEnsemble`);
  }
  const initialized = new Set((graph.initializer ?? []).map((t) => t.name));
  const inputs = (graph.input ?? []).filter((v) => !initialized.has(v.name ?? ''));
  if (inputs.length !== 1) throw new Unsupported(`the graph has ${inputs.length} inputs, not one`);
  const input = inputs[0]!;
  const tt = input.type?.tensorType;
  if (tt?.elemType !== onnx.TensorProto.DataType.FLOAT) throw new Unsupported('the input is not float32');
  const dims = tt.shape?.dim ?? [];
  const features = dims.length === 2 ? num(dims[1]!.dimValue) : 0;
  if (!(features > 0)) throw new Unsupported('the input is not [batch, features] with a fixed number of features');
  if ((node.input ?? []).length !== 1 || node.input![0] !== input.name)
    throw new Unsupported("the ensemble does not read the graph's input");
  const outputs = (graph.output ?? []).map((o) => o.name ?? '');
  const produced = node.output ?? [];
  if (outputs.length !== produced.length || produced.some((o) => !outputs.includes(o))) {
    throw new Unsupported("the graph's outputs are not the ensemble's outputs");
  }

  const attrs: Attributes = new Map((node.attribute ?? []).map((a) => [a.name ?? '', a] as const));
  for (const name of attrs.keys()) {
    if (name.endsWith('_as_tensor')) throw new Unsupported(`attribute ${name} (double-precision trees)`);
  }
  const classifier = op === 'TreeEnsembleClassifier';
  const w = classifier ? 'class' : 'target';
  // No `_as_tensor` attribute is left (refused above): every value is a float32 list.
  const raw = rawEnsemble(op, attrs);
  if (raw.treeIds.length === 0) throw new Unsupported('the ensemble has no nodes');
  const post = text(attrs.get('post_transform')?.s) || 'NONE';
  const base = floats(attrs, 'base_values');

  let labels: [number, number] = [0, 1];
  let logistic = false;
  let average = false;
  if (classifier) {
    if (strings(attrs, 'classlabels_strings').length > 0) throw new Unsupported('string class labels');
    const ls = ints(attrs, 'classlabels_int64s');
    if (ls.length !== 2) throw new Unsupported(`${ls.length} classes, not 2`);
    if (!ls.every(Number.isSafeInteger)) throw new Unsupported('class labels beyond 2^53');
    labels = [ls[0]!, ls[1]!];
    if (post !== 'LOGISTIC' && post !== 'NONE') throw new Unsupported(`post_transform ${post}`);
    logistic = post === 'LOGISTIC';
    if (produced.length !== 2) throw new Unsupported('a classifier without both label and probabilities outputs');
  } else {
    if (num(attrs.get('n_targets')?.i) !== 1) throw new Unsupported('a regressor of more than one target');
    if (post !== 'NONE') throw new Unsupported(`post_transform ${post}`);
    const aggregate = text(attrs.get('aggregate_function')?.s) || 'SUM';
    if (aggregate !== 'SUM' && aggregate !== 'AVERAGE') throw new Unsupported(`aggregate_function ${aggregate}`);
    average = aggregate === 'AVERAGE';
  }

  if (raw.weightId.some((id) => id !== 0)) throw new Unsupported(`${w} ids other than 0`);
  if (base.length > 1) throw new Unsupported(`${base.length} base values`);
  const parsed = parseEnsemble(raw);
  if (parsed.maxFeature >= features) throw new Unsupported(`the ensemble reads feature ${parsed.maxFeature} of a ${features}-column input`);
  const total = parsed.trees.reduce((n, t) => n + t.feature.length, 0);
  if (total > MAX_PLAN_NODES) throw new Unsupported(`${total} nodes (the tree engine takes at most ${MAX_PLAN_NODES})`);
  const roots = new Int32Array(parsed.trees.length);
  const feature = new Int32Array(total);
  const threshold = new Float32Array(total);
  const mode = new Uint8Array(total);
  const missingTrue = new Uint8Array(total);
  const yes = new Int32Array(total);
  const no = new Int32Array(total);
  const leaf = new Float32Array(total);
  let at = 0;
  parsed.trees.forEach((t, i) => {
    roots[i] = at;
    for (let n = 0; n < t.feature.length; n++) {
      const k = at + n;
      feature[k] = t.feature[n]!;
      if (t.feature[n]! < 0) {
        const lw = t.leaves[n]!;
        if (lw.values.length !== 1) throw new Unsupported(`a leaf of tree ${i} carries ${lw.values.length} weights, not one`);
        leaf[k] = lw.values[0]!;
        continue;
      }
      threshold[k] = t.threshold[n]!;
      mode[k] = t.mode[n]!;
      missingTrue[k] = t.missingTrue[n]!;
      yes[k] = at + t.yes[n]!;
      no[k] = at + t.no[n]!;
    }
    at += t.feature.length;
  });
  let allPositive = false;
  if (classifier) {
    allPositive = raw.weightValue.every((v) => v >= 0);
  }
  const outputNames = classifier ? [produced[0]!, produced[1]!] : [produced[0]!];
  return {
    kind: classifier ? 'binary' : 'regressor',
    input: input.name ?? '',
    features,
    outputs: outputNames,
    roots,
    feature,
    threshold,
    mode,
    missingTrue,
    yes,
    no,
    leaf,
    base: Math.fround(base[0] ?? 0),
    labels,
    allPositive,
    logistic,
    average,
  };
}
