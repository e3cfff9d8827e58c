// Tree ensembles as the explainers see them: the ONNX-ML TreeEnsemble attributes turned into one
// tree per root, evaluated with onnxruntime's rules (a branch is taken when `x CMP threshold` holds,
// or when x is NaN and the node's missing value tracks true; float inputs compared as float32), and
// each model output column as a margin: base + the sum of one leaf value per tree. Node covers
// (ONNX carries none) are counted from reference rows and kept as each node's share of its parent's.

/** Branch comparisons, indexed by a node's `mode`. */
export const BRANCH_MODES = ['BRANCH_LEQ', 'BRANCH_LT', 'BRANCH_GTE', 'BRANCH_GT', 'BRANCH_EQ', 'BRANCH_NEQ'] as const;

/** One tree as parallel arrays over its nodes; node 0 is the root, a leaf has feature -1. */
export interface ShapTree {
  readonly feature: Int32Array;
  readonly threshold: Float64Array;
  /** Index into BRANCH_MODES. */
  readonly mode: Uint8Array;
  /** 1: a NaN input takes the `yes` branch (nodes_missing_value_tracks_true). */
  readonly missingTrue: Uint8Array;
  /** Child when the comparison holds (ONNX true node), and when it does not. */
  readonly yes: Int32Array;
  readonly no: Int32Array;
  /** Leaf contributions to the margin (0 for inner nodes). */
  readonly value: Float64Array;
  /** Edges on the longest root-to-leaf path. */
  readonly depth: number;
}

/** One output column of an ensemble: margin = base + sum over trees of the leaf reached. */
export interface TreeModel {
  readonly trees: readonly ShapTree[];
  readonly base: number;
  /** Inputs are compared as float32 (a float input, or one cast to float before the ensemble). */
  readonly roundInput: boolean;
}

/** Whether node n of the tree sends input value v (already rounded as the model sees it) to its `yes` child. */
export function takesYes(t: ShapTree, n: number, v: number): boolean {
  const th = t.threshold[n]!;
  let hit: boolean;
  switch (t.mode[n]) {
    case 0:
      hit = v <= th;
      break;
    case 1:
      hit = v < th;
      break;
    case 2:
      hit = v >= th;
      break;
    case 3:
      hit = v > th;
      break;
    case 4:
      hit = v === th;
      break;
    default:
      hit = v !== th;
  }
  return hit || (t.missingTrue[n] === 1 && Number.isNaN(v));
}

/** The leaf a row reaches in one tree. */
export function leafOf(t: ShapTree, x: ArrayLike<number>, round: boolean): number {
  let n = 0;
  while (t.feature[n]! >= 0) {
    const raw = x[t.feature[n]!]!;
    n = takesYes(t, n, round ? Math.fround(raw) : raw) ? t.yes[n]! : t.no[n]!;
  }
  return n;
}

/** The margin of one row. */
export function treeMarginOf(model: TreeModel, x: ArrayLike<number>): number {
  let s = model.base;
  for (const t of model.trees) s += t.value[leafOf(t, x, model.roundInput)]!;
  return s;
}

/** The same trees with margin' = offset + scale * margin (a negated or complemented column). */
export function affineTrees(model: TreeModel, scale: number, offset: number): TreeModel {
  if (scale === 1 && offset === 0) return model;
  return {
    trees: model.trees.map((t) => ({ ...t, value: t.value.map((v) => v * scale) })),
    base: offset + scale * model.base,
    roundInput: model.roundInput,
  };
}

/**
 * Each node's share of its parent's cover over `rows` (row-major, `width` values per row): how
 * many of the rows reaching the parent go to this node. The root's share is 1. A node no row
 * reaches splits its (empty) cover evenly, so every node's children shares still add up to 1 and the
 * path-dependent expectation stays defined.
 */
export function coverShares(model: TreeModel, rows: ArrayLike<number>, count: number, width: number): Float64Array[] {
  return model.trees.map((t) => {
    const n = t.feature.length;
    const cover = new Float64Array(n);
    for (let r = 0; r < count; r++) {
      let node = 0;
      cover[0]!++;
      while (t.feature[node]! >= 0) {
        const raw = rows[r * width + t.feature[node]!]!;
        node = takesYes(t, node, model.roundInput ? Math.fround(raw) : raw) ? t.yes[node]! : t.no[node]!;
        cover[node]!++;
      }
    }
    const share = new Float64Array(n);
    share[0] = 1;
    for (let p = 0; p < n; p++) {
      if (t.feature[p]! < 0) continue;
      const c = cover[p]!;
      share[t.yes[p]!] = c > 0 ? cover[t.yes[p]!]! / c : 0.5;
      share[t.no[p]!] = c > 0 ? cover[t.no[p]!]! / c : 0.5;
    }
    return share;
  });
}

/** The tree's expected leaf value when every split is averaged by its shares (the empty coalition). */
export function expectedLeaf(t: ShapTree, share: Float64Array): number {
  const walk = (n: number): number =>
    t.feature[n]! < 0 ? t.value[n]! : share[t.yes[n]!]! * walk(t.yes[n]!) + share[t.no[n]!]! * walk(t.no[n]!);
  return walk(0);
}

/** The ONNX-ML TreeEnsemble node and leaf-weight attributes, as decoded from the graph. */
export interface RawEnsemble {
  readonly treeIds: readonly number[];
  readonly nodeIds: readonly number[];
  readonly featureIds: readonly number[];
  readonly values: readonly number[];
  readonly modes: readonly string[];
  readonly trueIds: readonly number[];
  readonly falseIds: readonly number[];
  readonly missingTrue: readonly number[];
  /** Leaf weights: tree, node, class or target id, weight (class_* or target_* attributes). */
  readonly weightTree: readonly number[];
  readonly weightNode: readonly number[];
  readonly weightId: readonly number[];
  readonly weightValue: readonly number[];
}

/** A leaf's weights in attribute order, and its own nodes_values entry (used when it has none). */
export interface LeafWeights {
  readonly ids: number[];
  readonly values: number[];
  readonly nodeValue: number;
}

/** Trees with the leaf weights attached, before a column is chosen. */
export interface ParsedEnsemble {
  /** `leaves[n]` is set for every leaf node (empty weights when it has none), null for inner nodes. */
  readonly trees: readonly (Omit<ShapTree, 'value'> & { readonly leaves: readonly (LeafWeights | null)[] })[];
  readonly maxFeature: number;
}

/** Why a graph is not explained by the exact methods (it falls back to KernelSHAP). */
export class Unsupported extends Error {
  override readonly name = 'Unsupported';
}

/** Cap on nodes after expanding shared subtrees (LightGBM's set-membership chains) into a tree. */
const MAX_EXPANDED_NODES = 2_000_000;

/**
 * One tree per root as onnxruntime builds them: a tree's nodes are consecutive in the attributes
 * and its first node is its root. A node reachable along several paths (LightGBM encodes set
 * membership as chains of EQ nodes sharing a child) is copied per path, since covers and TreeSHAP
 * work on trees. Weights on inner nodes are ignored, as onnxruntime ignores them.
 */
export function parseEnsemble(raw: RawEnsemble): ParsedEnsemble {
  const count = raw.treeIds.length;
  for (const [name, a] of [
    ['nodes_nodeids', raw.nodeIds],
    ['nodes_featureids', raw.featureIds],
    ['nodes_values', raw.values],
    ['nodes_modes', raw.modes],
    ['nodes_truenodeids', raw.trueIds],
    ['nodes_falsenodeids', raw.falseIds],
  ] as const) {
    if (a.length !== count) throw new Unsupported(`${name} has ${a.length} entries for ${count} nodes`);
  }
  if (
    raw.weightNode.length !== raw.weightTree.length ||
    raw.weightId.length !== raw.weightTree.length ||
    raw.weightValue.length !== raw.weightTree.length
  ) {
    throw new Unsupported('the leaf weight attributes differ in length');
  }
  const key = (tree: number, node: number) => `${tree}:${node}`;
  const index = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const k = key(raw.treeIds[i]!, raw.nodeIds[i]!);
    if (index.has(k)) throw new Unsupported(`node ${raw.nodeIds[i]} of tree ${raw.treeIds[i]} appears twice`);
    index.set(k, i);
  }
  const weights = new Map<number, LeafWeights>();
  for (let w = 0; w < raw.weightTree.length; w++) {
    const i = index.get(key(raw.weightTree[w]!, raw.weightNode[w]!));
    if (i === undefined)
      throw new Unsupported(`a weight names node ${raw.weightNode[w]} of tree ${raw.weightTree[w]}, which does not exist`);
    let lw = weights.get(i);
    if (lw === undefined) {
      lw = { ids: [], values: [], nodeValue: raw.values[i]! };
      weights.set(i, lw);
    }
    lw.ids.push(raw.weightId[w]!);
    lw.values.push(raw.weightValue[w]!);
  }
  const roots: number[] = [];
  const seen = new Set<number>();
  for (let i = 0; i < count; i++) {
    const tree = raw.treeIds[i]!;
    if (i > 0 && raw.treeIds[i - 1] === tree) continue;
    if (seen.has(tree)) throw new Unsupported(`the nodes of tree ${tree} are not consecutive`);
    seen.add(tree);
    roots.push(i);
  }
  let maxFeature = -1;
  let total = 0;
  const trees = roots.map((root) => {
    const tree = raw.treeIds[root]!;
    const feature: number[] = [];
    const threshold: number[] = [];
    const mode: number[] = [];
    const missing: number[] = [];
    const yes: number[] = [];
    const no: number[] = [];
    const leaves: (LeafWeights | null)[] = [];
    let depth = 0;
    // Iterative copy of the reachable nodes: [attribute index, slot to fill, depth, ancestors].
    const stack: [number, number, number, ReadonlySet<number>][] = [[root, -1, 0, new Set()]];
    while (stack.length > 0) {
      const [i, parentSlot, d, path] = stack.pop()!;
      if (path.has(i)) throw new Unsupported(`tree ${tree} has a cycle through node ${raw.nodeIds[i]}`);
      if (++total > MAX_EXPANDED_NODES) throw new Unsupported(`the ensemble expands to more than ${MAX_EXPANDED_NODES} nodes`);
      const n = feature.length;
      if (parentSlot >= 0) {
        const p = parentSlot >> 1;
        if ((parentSlot & 1) === 0) yes[p] = n;
        else no[p] = n;
      }
      depth = Math.max(depth, d);
      const m = raw.modes[i]!;
      if (m === 'LEAF') {
        feature.push(-1);
        threshold.push(0);
        mode.push(0);
        missing.push(0);
        yes.push(-1);
        no.push(-1);
        leaves.push(weights.get(i) ?? { ids: [], values: [], nodeValue: raw.values[i]! });
        continue;
      }
      const modeIndex = (BRANCH_MODES as readonly string[]).indexOf(m);
      if (modeIndex < 0) throw new Unsupported(`node mode '${m}' is not one of LEAF, ${BRANCH_MODES.join(', ')}`);
      const f = raw.featureIds[i]!;
      if (!(Number.isSafeInteger(f) && f >= 0)) throw new Unsupported(`feature id ${f} is not a column index`);
      maxFeature = Math.max(maxFeature, f);
      feature.push(f);
      threshold.push(raw.values[i]!);
      mode.push(modeIndex);
      missing.push(raw.missingTrue[i] === 1 ? 1 : 0);
      yes.push(-1);
      no.push(-1);
      leaves.push(null);
      const child = (id: number, which: string): number => {
        const c = index.get(key(tree, id));
        if (c === undefined) throw new Unsupported(`node ${raw.nodeIds[i]} of tree ${tree} names a missing ${which} node ${id}`);
        return c;
      };
      const below = new Set(path).add(i);
      stack.push([child(raw.falseIds[i]!, 'false'), n * 2 + 1, d + 1, below], [child(raw.trueIds[i]!, 'true'), n * 2, d + 1, below]);
    }
    return {
      feature: Int32Array.from(feature),
      threshold: Float64Array.from(threshold),
      mode: Uint8Array.from(mode),
      missingTrue: Uint8Array.from(missing),
      yes: Int32Array.from(yes),
      no: Int32Array.from(no),
      depth,
      leaves,
    };
  });
  return { trees, maxFeature };
}

/** One column's trees: each leaf's value chosen from its weights (times `scale`), and the base. */
export function columnTrees(
  parsed: ParsedEnsemble,
  leafValue: (w: LeafWeights) => number,
  scale: number,
  base: number,
  roundInput: boolean,
): TreeModel {
  const trees = parsed.trees.map((t): ShapTree => {
    const value = new Float64Array(t.feature.length);
    for (let n = 0; n < value.length; n++) if (t.feature[n]! < 0) value[n] = leafValue(t.leaves[n]!) * scale;
    return {
      feature: t.feature,
      threshold: t.threshold,
      mode: t.mode,
      missingTrue: t.missingTrue,
      yes: t.yes,
      no: t.no,
      value,
      depth: t.depth,
    };
  });
  return { trees, base, roundInput };
}
