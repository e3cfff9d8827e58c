// Path-dependent TreeSHAP (Lundberg, Erion and Lee, "Consistent Individualized Feature Attribution
// for Tree Ensembles", 2018, Algorithm 2): exact Shapley values of the set function
// v(S) = E[f(x) | x_S], where a split on a feature outside S is averaged over both children by their
// shares of the node's cover. One walk of each tree carries, along the current path, the proportion
// of feature subsets of each size that reach it (EXTEND), and at every leaf removes one path feature
// at a time (UNWIND) to read that feature's weight. Cost O(trees x leaves x depth^2) per row.

import { coverShares, expectedLeaf, leafOf, takesYes, type ShapTree, type TreeModel } from './tree-model.js';

/** An ensemble column ready for TreeSHAP: cover shares from reference rows and the base value. */
export interface TreeShapModel {
  readonly model: TreeModel;
  readonly shares: readonly Float64Array[];
  /** The margin's expectation under the shares: what the contributions are measured from. */
  readonly expected: number;
  /** Input columns, the length of the contribution vector. */
  readonly features: number;
  /** Reference rows the covers were counted on. */
  readonly referenceRows: number;
  /** The walker and its path scratch, reused for every row. */
  readonly walker: PathWalker;
}

/** Counts covers on the reference rows (row-major, `features` values per row). */
export function prepareTreeShap(model: TreeModel, rows: ArrayLike<number>, count: number, features: number): TreeShapModel {
  if (count < 1) throw new RangeError('TreeSHAP needs at least one reference row to count node covers');
  const shares = coverShares(model, rows, count, features);
  let expected = model.base;
  let depth = 0;
  model.trees.forEach((t, i) => {
    expected += expectedLeaf(t, shares[i]!);
    depth = Math.max(depth, t.depth);
  });
  return { model, shares, expected, features, referenceRows: count, walker: new PathWalker(depth) };
}

/**
 * Writes the row's contributions into `phi` (length `features`, overwritten) and returns its
 * margin; expected + sum(phi) = margin up to rounding. Not re-entrant (shared path scratch), which
 * is fine on one thread.
 */
export function treeShap(e: TreeShapModel, x: ArrayLike<number>, phi: Float64Array): number {
  phi.fill(0);
  const { model, shares, walker } = e;
  let margin = model.base;
  walker.x = x;
  walker.round = model.roundInput;
  walker.phi = phi;
  for (let t = 0; t < model.trees.length; t++) {
    const tree = model.trees[t]!;
    margin += tree.value[leafOf(tree, x, model.roundInput)]!;
    walker.tree = tree;
    walker.share = shares[t]!;
    walker.recurse(0, 0, 0, 1, 1, -1);
  }
  return margin;
}

/**
 * The paths of one walk, one segment of `stride` elements per recursion level: each element is a
 * feature split on the way (-1 for the root's dummy), the fraction of the reference going its way
 * when the feature is unknown (zero) and whether x goes its way (one), and per subset size the
 * proportion of subsets reaching here (weight).
 */
class PathWalker {
  readonly stride: number;
  readonly feature: Int32Array;
  readonly zero: Float64Array;
  readonly one: Float64Array;
  readonly weight: Float64Array;
  tree!: ShapTree;
  share!: Float64Array;
  x!: ArrayLike<number>;
  round = false;
  phi!: Float64Array;

  constructor(depth: number) {
    this.stride = depth + 2;
    const size = this.stride * (depth + 2);
    this.feature = new Int32Array(size);
    this.zero = new Float64Array(size);
    this.one = new Float64Array(size);
    this.weight = new Float64Array(size);
  }

  /** Appends (feature pi, zero fraction pz, one fraction po) to the path of `len` elements at `at`. */
  private extend(at: number, len: number, pz: number, po: number, pi: number): number {
    const weight = this.weight;
    this.feature[at + len] = pi;
    this.zero[at + len] = pz;
    this.one[at + len] = po;
    weight[at + len] = len === 0 ? 1 : 0;
    for (let i = len - 1; i >= 0; i--) {
      weight[at + i + 1]! += (po * weight[at + i]! * (i + 1)) / (len + 1);
      weight[at + i] = (pz * weight[at + i]! * (len - i)) / (len + 1);
    }
    return len + 1;
  }

  /** Removes element i from the path of `len` elements (undoes its EXTEND). */
  private unwind(at: number, len: number, i: number): void {
    const { weight, feature, zero, one } = this;
    const d = len - 1;
    const o = one[at + i]!;
    const z = zero[at + i]!;
    let n = weight[at + d]!;
    for (let j = d - 1; j >= 0; j--) {
      if (o !== 0) {
        const tmp = weight[at + j]!;
        weight[at + j] = (n * (d + 1)) / ((j + 1) * o);
        n = tmp - (weight[at + j]! * z * (d - j)) / (d + 1);
      } else {
        weight[at + j] = (weight[at + j]! * (d + 1)) / (z * (d - j));
      }
    }
    for (let j = i; j < d; j++) {
      feature[at + j] = feature[at + j + 1]!;
      zero[at + j] = zero[at + j + 1]!;
      one[at + j] = one[at + j + 1]!;
    }
  }

  /** Sum of the path weights with element i unwound, without changing the path. */
  private unwoundSum(at: number, len: number, i: number): number {
    const weight = this.weight;
    const d = len - 1;
    const o = this.one[at + i]!;
    const z = this.zero[at + i]!;
    let total = 0;
    if (o !== 0) {
      let n = weight[at + d]!;
      for (let j = d - 1; j >= 0; j--) {
        const tmp = (n * (d + 1)) / ((j + 1) * o);
        total += tmp;
        n = weight[at + j]! - (tmp * z * (d - j)) / (d + 1);
      }
    } else {
      for (let j = d - 1; j >= 0; j--) total += (weight[at + j]! * (d + 1)) / (z * (d - j));
    }
    return total;
  }

  /** Visits `node` at recursion `level`, extending its parent's path (`parentLen` elements at level - 1). */
  recurse(node: number, level: number, parentLen: number, pz: number, po: number, pi: number): void {
    const { feature, zero, one, weight, tree } = this;
    const at = level * this.stride;
    if (level > 0) {
      const from = at - this.stride;
      for (let i = 0; i < parentLen; i++) {
        feature[at + i] = feature[from + i]!;
        zero[at + i] = zero[from + i]!;
        one[at + i] = one[from + i]!;
        weight[at + i] = weight[from + i]!;
      }
    }
    let len = this.extend(at, parentLen, pz, po, pi);
    const f = tree.feature[node]!;
    if (f < 0) {
      const v = tree.value[node]!;
      if (v === 0) return;
      for (let i = 1; i < len; i++) this.phi[feature[at + i]!]! += this.unwoundSum(at, len, i) * (one[at + i]! - zero[at + i]!) * v;
      return;
    }
    const raw = this.x[f]!;
    const goesYes = takesYes(tree, node, this.round ? Math.fround(raw) : raw);
    const hot = goesYes ? tree.yes[node]! : tree.no[node]!;
    const cold = goesYes ? tree.no[node]! : tree.yes[node]!;
    let iz = 1;
    let io = 1;
    // A feature split on again below its first split: its earlier fractions fold into this one.
    for (let k = 1; k < len; k++) {
      if (feature[at + k] !== f) continue;
      iz = zero[at + k]!;
      io = one[at + k]!;
      this.unwind(at, len, k);
      len--;
      break;
    }
    // A child with neither a share nor the row's path adds nothing (and unwinding it would divide by zero).
    const share = this.share;
    const hz = iz * share[hot]!;
    if (hz !== 0 || io !== 0) this.recurse(hot, level + 1, len, hz, io, f);
    const cz = iz * share[cold]!;
    if (cz !== 0) this.recurse(cold, level + 1, len, cz, 0, f);
  }
}
