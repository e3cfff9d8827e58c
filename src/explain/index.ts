// Explanations (reason codes): per-feature contributions to a score in the model's margin, plus the
// base value they are measured from, so that base + sum(contributions) = margin. Pure math over
// arrays, no I/O: reading the score function from an ONNX graph (onnx-graph.ts), exact linear
// contributions (linear.ts), path-dependent TreeSHAP over covers counted on reference rows
// (tree-shap.ts, tree-model.ts), and KernelSHAP for anything else, which asks its caller to run the
// model on coalition rows (kernel.ts).

import { linearContributions, linearMarginOf, prepareLinear, type LinearModel } from './linear.js';
import type { ScoreModel } from './onnx-graph.js';
import { prepareTreeShap, treeShap, type TreeShapModel } from './tree-shap.js';
import { treeMarginOf } from './tree-model.js';

export { recogniseScore, type Margin, type Recognition, type ScoreModel, type ScoreTarget } from './onnx-graph.js';
export { linearContributions, linearMarginOf, prepareLinear, type LinearMargin, type LinearModel } from './linear.js';
export { prepareTreeShap, treeShap, type TreeShapModel } from './tree-shap.js';
export {
  treeMarginOf,
  coverShares,
  takesYes,
  parseEnsemble,
  columnTrees,
  type ShapTree,
  type TreeModel,
  type RawEnsemble,
} from './tree-model.js';
export {
  applyLink,
  kernelShap,
  planCoalitions,
  rowSeed,
  seededRandom,
  solveKernel,
  writeCoalitionRows,
  type CoalitionPlan,
  type KernelExplanation,
  type KernelFit,
  type KernelOptions,
  type Link,
} from './kernel.js';

/** The margin of one row under a recognised score function. */
export function marginOf(model: ScoreModel, x: ArrayLike<number>): number {
  return model.margin.kind === 'linear' ? linearMarginOf(model.margin.linear, x) : treeMarginOf(model.margin.trees, x);
}

/** The score the graph computes from that margin. */
export function scoreFromMargin(model: ScoreModel, margin: number): number {
  return model.link === 'logit' ? 1 / (1 + Math.exp(-margin)) : margin;
}

/** An exact explainer of a recognised score: linear contributions, or TreeSHAP. */
export type ExactExplainer =
  | { readonly method: 'linear'; readonly linear: LinearModel }
  | { readonly method: 'tree_shap'; readonly trees: TreeShapModel };

/** Means (linear) or covers (trees) from the reference rows (row-major, one value per feature). */
export function prepareExact(model: ScoreModel, rows: ArrayLike<number>, count: number, names: readonly string[]): ExactExplainer {
  if (model.margin.kind === 'linear') return { method: 'linear', linear: prepareLinear(model.margin.linear, rows, count, names) };
  return { method: 'tree_shap', trees: prepareTreeShap(model.margin.trees, rows, count, names.length) };
}

/** Writes the row's contributions into `phi` and returns its base value and margin. */
export function explainExact(e: ExactExplainer, x: ArrayLike<number>, phi: Float64Array): { base: number; margin: number } {
  if (e.method === 'linear') return { base: e.linear.base, margin: linearContributions(e.linear, x, phi) };
  return { base: e.trees.expected, margin: treeShap(e.trees, x, phi) };
}

/** Reference rows an exact explainer was prepared on. */
export function referenceRowsOf(e: ExactExplainer): number {
  return e.method === 'linear' ? e.linear.referenceRows : e.trees.referenceRows;
}

/**
 * Feature indices by decreasing |contribution| (ties in feature order), the first `topK` of them
 * (all when null).
 */
export function rankContributions(phi: ArrayLike<number>, topK: number | null): number[] {
  const order = Array.from({ length: phi.length }, (_, i) => i);
  order.sort((a, b) => Math.abs(phi[b]!) - Math.abs(phi[a]!) || a - b);
  return topK === null ? order : order.slice(0, topK);
}
