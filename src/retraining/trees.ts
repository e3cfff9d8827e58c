// Gradient-boosted decision trees for binary classification: a deterministic trainer (logistic
// loss, second-order leaf values, depth-limited trees grown on per-feature quantile bins, no
// sampling) and the export of a fitted ensemble as an ONNX `TreeEnsembleClassifier` (ai.onnx.ml),
// the node scikit-learn's GBDT and LightGBM converters produce. It gives tests and benchmarks a
// model of another family than the logistic regression, shaped like the tree models credit teams
// serve. Same data and options give the same trees and the same bytes.

import { attr, GraphBuilder } from '../inference/onnx-writer.js';

export interface TreeOptions {
  /** Trees in the ensemble. Default 100. */
  trees?: number;
  /** Depth of every tree (a depth-3 tree has up to 8 leaves). Default 3. */
  depth?: number;
  /** Shrinkage applied to every leaf. Default 0.1. */
  learningRate?: number;
  /** Candidate thresholds per feature (quantiles of the training values). Default 32. */
  bins?: number;
  /** L2 penalty on leaf values (XGBoost's lambda). Default 1. */
  l2?: number;
  /** A split must leave at least this much hessian on each side. Default 1. */
  minChildWeight?: number;
}

/** One tree as parallel arrays over its nodes; node 0 is the root, a leaf has feature -1. */
export interface Tree {
  feature: number[];
  /** A row goes left when x[feature] <= threshold. */
  threshold: number[];
  left: number[];
  right: number[];
  /** Leaf values, in the margin (log-odds); 0 for inner nodes. */
  value: number[];
}

export interface TreeEnsemble {
  trees: Tree[];
  /** Log-odds of the training base rate, added to every row's sum of leaves. */
  baseMargin: number;
  features: number;
}

/** The ensemble's margin (log-odds) of one row. */
export function treeMargin(model: TreeEnsemble, row: ArrayLike<number>): number {
  let s = model.baseMargin;
  for (const t of model.trees) {
    let n = 0;
    // Compared in float32, as onnxruntime compares a float input with the float thresholds.
    while (t.feature[n]! >= 0) n = Math.fround(row[t.feature[n]!]!) <= Math.fround(t.threshold[n]!) ? t.left[n]! : t.right[n]!;
    s += t.value[n]!;
  }
  return s;
}

/** P(class 1) of one row. */
export function treeProba(model: TreeEnsemble, row: ArrayLike<number>): number {
  return 1 / (1 + Math.exp(-treeMargin(model, row)));
}

/** Sorted distinct candidate thresholds of one column: its quantiles at 1/bins, ..., (bins-1)/bins. */
function candidates(X: Float64Array, rows: number, cols: number, j: number, bins: number): Float64Array {
  const v = new Float64Array(rows);
  for (let i = 0; i < rows; i++) v[i] = X[i * cols + j]!;
  v.sort();
  const out: number[] = [];
  for (let b = 1; b < bins; b++) {
    const t = v[Math.min(rows - 1, Math.floor((b * rows) / bins))]!;
    if (out.length === 0 || t > out[out.length - 1]!) out.push(t);
  }
  // The largest value cannot split anything.
  while (out.length > 0 && out[out.length - 1]! >= v[rows - 1]!) out.pop();
  return Float64Array.from(out);
}

/**
 * Fits a GBDT on row-major X (rows x cols) and 0/1 labels y. Each tree is grown level by level on
 * the binned features: for every node the split maximising the second-order gain, leaf value
 * -G / (H + l2) times the learning rate.
 */
export function fitTrees(X: Float64Array, y: ArrayLike<number>, options: TreeOptions = {}): TreeEnsemble {
  const rows = y.length;
  if (rows === 0 || X.length % rows !== 0) throw new RangeError(`X has ${X.length} values, not a multiple of the ${rows} labels`);
  const cols = X.length / rows;
  const nTrees = options.trees ?? 100;
  const depth = options.depth ?? 3;
  const lr = options.learningRate ?? 0.1;
  const nBins = options.bins ?? 32;
  const l2 = options.l2 ?? 1;
  const minChild = options.minChildWeight ?? 1;

  // Bin every value once: code b means "above the first b thresholds".
  const cuts = Array.from({ length: cols }, (_, j) => candidates(X, rows, cols, j, nBins));
  const code = new Uint8Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const c = cuts[j]!;
      const x = X[i * cols + j]!;
      let lo = 0;
      let hi = c.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (x <= c[mid]!) hi = mid;
        else lo = mid + 1;
      }
      code[i * cols + j] = lo;
    }
  }

  let pos = 0;
  for (let i = 0; i < rows; i++) pos += y[i]! > 0.5 ? 1 : 0;
  const rate = Math.min(1 - 1e-6, Math.max(1e-6, pos / rows));
  const baseMargin = Math.log(rate / (1 - rate));
  const margin = new Float64Array(rows).fill(baseMargin);
  const grad = new Float64Array(rows);
  const hess = new Float64Array(rows);
  const nodeOf = new Int32Array(rows);
  const trees: Tree[] = [];
  const width = nBins + 1;

  for (let t = 0; t < nTrees; t++) {
    for (let i = 0; i < rows; i++) {
      const p = 1 / (1 + Math.exp(-margin[i]!));
      grad[i] = p - (y[i]! > 0.5 ? 1 : 0);
      hess[i] = Math.max(p * (1 - p), 1e-12);
    }
    const tree: Tree = { feature: [-1], threshold: [0], left: [-1], right: [-1], value: [0] };
    /** Bin index of each inner node's threshold: a row goes left when its code is at most this. */
    const splitBin: number[] = [-1];
    nodeOf.fill(0);
    let level = [0];
    for (let d = 0; d < depth && level.length > 0; d++) {
      // Histograms of gradient and hessian per (node of this level, feature, bin).
      const slot = new Map(level.map((n, k) => [n, k]));
      const G = new Float64Array(level.length * cols * width);
      const H = new Float64Array(level.length * cols * width);
      for (let i = 0; i < rows; i++) {
        const k = slot.get(nodeOf[i]!);
        if (k === undefined) continue;
        const g = grad[i]!;
        const h = hess[i]!;
        const base = k * cols * width;
        for (let j = 0; j < cols; j++) {
          const at = base + j * width + code[i * cols + j]!;
          G[at]! += g;
          H[at]! += h;
        }
      }
      const next: number[] = [];
      for (let k = 0; k < level.length; k++) {
        const node = level[k]!;
        let best = 0;
        let bestFeature = -1;
        let bestBin = -1;
        let gTot = 0;
        let hTot = 0;
        for (let b = 0; b < width; b++) {
          gTot += G[k * cols * width + b]!;
          hTot += H[k * cols * width + b]!;
        }
        const parent = (gTot * gTot) / (hTot + l2);
        for (let j = 0; j < cols; j++) {
          const c = cuts[j]!;
          let gl = 0;
          let hl = 0;
          const base = k * cols * width + j * width;
          for (let b = 0; b < c.length; b++) {
            gl += G[base + b]!;
            hl += H[base + b]!;
            const hr = hTot - hl;
            if (hl < minChild || hr < minChild) continue;
            const gr = gTot - gl;
            const gain = (gl * gl) / (hl + l2) + (gr * gr) / (hr + l2) - parent;
            if (gain > best + 1e-12) {
              best = gain;
              bestFeature = j;
              bestBin = b;
            }
          }
        }
        if (bestFeature < 0) continue;
        const l = tree.feature.length;
        tree.feature.push(-1, -1);
        tree.threshold.push(0, 0);
        tree.left.push(-1, -1);
        tree.right.push(-1, -1);
        tree.value.push(0, 0);
        splitBin.push(-1, -1);
        splitBin[node] = bestBin;
        tree.feature[node] = bestFeature;
        tree.threshold[node] = cuts[bestFeature]![bestBin]!;
        tree.left[node] = l;
        tree.right[node] = l + 1;
        next.push(l, l + 1);
      }
      if (next.length === 0) break;
      for (let i = 0; i < rows; i++) {
        const n = nodeOf[i]!;
        const f = tree.feature[n]!;
        if (f >= 0) nodeOf[i] = code[i * cols + f]! <= splitBin[n]! ? tree.left[n]! : tree.right[n]!;
      }
      level = next;
    }
    // Leaf values from the rows that reached each leaf.
    const gs = new Float64Array(tree.feature.length);
    const hs = new Float64Array(tree.feature.length);
    for (let i = 0; i < rows; i++) {
      gs[nodeOf[i]!]! += grad[i]!;
      hs[nodeOf[i]!]! += hess[i]!;
    }
    for (let n = 0; n < tree.feature.length; n++) if (tree.feature[n]! < 0) tree.value[n] = (-gs[n]! / (hs[n]! + l2)) * lr;
    for (let i = 0; i < rows; i++) margin[i]! += tree.value[nodeOf[i]!]!;
    trees.push(tree);
  }
  return { trees, baseMargin, features: cols };
}

export interface TreeOnnxOptions {
  featureNames: readonly string[];
  /** Graph name. Default `gradient_boosted_trees`. */
  name?: string;
  docString?: string;
}

/**
 * The ensemble as one ONNX TreeEnsembleClassifier on a [-1, p] FP32 input, with the outputs
 * scikit-learn's converter gives a binary GBDT: `label` INT64 [-1] and `probabilities` FP32 [-1, 2]
 * (post_transform LOGISTIC over the margin, base value the base margin). onnxruntime compares in
 * float32: thresholds are written as float32, as converters do.
 */
export function treesToOnnx(model: TreeEnsemble, options: TreeOnnxOptions): Uint8Array {
  if (options.featureNames.length !== model.features)
    throw new RangeError(`${options.featureNames.length} feature names for ${model.features} features`);
  const treeIds: number[] = [];
  const nodeIds: number[] = [];
  const featureIds: number[] = [];
  const values: number[] = [];
  const modes: string[] = [];
  const trueIds: number[] = [];
  const falseIds: number[] = [];
  const classTree: number[] = [];
  const classNode: number[] = [];
  const classWeight: number[] = [];
  model.trees.forEach((t, ti) => {
    for (let n = 0; n < t.feature.length; n++) {
      const leaf = t.feature[n]! < 0;
      treeIds.push(ti);
      nodeIds.push(n);
      featureIds.push(leaf ? 0 : t.feature[n]!);
      values.push(leaf ? 0 : Math.fround(t.threshold[n]!));
      modes.push(leaf ? 'LEAF' : 'BRANCH_LEQ');
      trueIds.push(leaf ? 0 : t.left[n]!);
      falseIds.push(leaf ? 0 : t.right[n]!);
      if (leaf) {
        classTree.push(ti);
        classNode.push(n);
        classWeight.push(t.value[n]!);
      }
    }
  });
  const p = model.features;
  const g = new GraphBuilder(options.name ?? 'gradient_boosted_trees');
  g.input('input', 'FP32', [-1, p]);
  const ml = { domain: 'ai.onnx.ml' };
  g.node(
    'TreeEnsembleClassifier',
    ['input'],
    ['label', 'probabilities'],
    {
      nodes_treeids: attr.ints(treeIds),
      nodes_nodeids: attr.ints(nodeIds),
      nodes_featureids: attr.ints(featureIds),
      nodes_values: attr.floats(values),
      nodes_modes: attr.strings(modes),
      nodes_truenodeids: attr.ints(trueIds),
      nodes_falsenodeids: attr.ints(falseIds),
      nodes_missing_value_tracks_true: attr.ints(treeIds.map(() => 0)),
      class_treeids: attr.ints(classTree),
      class_nodeids: attr.ints(classNode),
      class_ids: attr.ints(classTree.map(() => 0)),
      class_weights: attr.floats(classWeight),
      classlabels_int64s: attr.ints([0, 1]),
      base_values: attr.floats([model.baseMargin]),
      post_transform: attr.string('LOGISTIC'),
    },
    ml,
  );
  g.output('label', 'INT64', [-1]);
  g.output('probabilities', 'FP32', [-1, 2]);
  const metadata: Record<string, string> = {
    'scoreline.model': 'gradient_boosted_trees',
    'scoreline.features': JSON.stringify(options.featureNames),
  };
  return g.toModelBytes({
    domainOpsets: { 'ai.onnx.ml': 3 },
    metadata,
    ...(options.docString !== undefined ? { docString: options.docString } : {}),
  });
}
