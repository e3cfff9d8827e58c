// The output columns of an ONNX-ML TreeEnsembleClassifier or TreeEnsembleRegressor node as
// onnxruntime computes them, each a tree-ensemble margin and a link: leaf weights summed per class or
// target (divided by the number of trees for AVERAGE), base values added by onnxruntime's rules, and
// the post_transform applied per column. Its binary conventions are kept: one weighted class gives one
// score s written as [sigmoid(-s), sigmoid(s)] with LOGISTIC, else [1 - s, s] (all weights positive)
// or [-s, s]. Layouts whose output is not such a column (MIN/MAX aggregation, SOFTMAX, PROBIT, a
// class scored on some leaves only) are unsupported.

import type { Link } from './kernel.js';
import { floatsOrTensor, ints, num, strings, text, type Attributes } from './onnx-attributes.js';
import {
  columnTrees,
  parseEnsemble,
  Unsupported,
  type LeafWeights,
  type ParsedEnsemble,
  type RawEnsemble,
  type TreeModel,
} from './tree-model.js';

/** One output column: its trees (built on first use: a wide ensemble has many columns). */
export interface EnsembleColumn {
  readonly link: Link;
  trees(): TreeModel;
  /** Identity of a logistic column, and of the column it is the complement of. */
  readonly id: object;
  readonly complementOf?: object;
}

/** A TreeEnsemble node's node and leaf-weight attributes (class_* or target_*), as decoded. */
export function rawEnsemble(op: 'TreeEnsembleClassifier' | 'TreeEnsembleRegressor', attrs: Attributes): RawEnsemble {
  const w = op === 'TreeEnsembleClassifier' ? 'class' : 'target';
  return {
    treeIds: ints(attrs, 'nodes_treeids'),
    nodeIds: ints(attrs, 'nodes_nodeids'),
    featureIds: ints(attrs, 'nodes_featureids'),
    values: floatsOrTensor(attrs, 'nodes_values'),
    modes: strings(attrs, 'nodes_modes'),
    trueIds: ints(attrs, 'nodes_truenodeids'),
    falseIds: ints(attrs, 'nodes_falsenodeids'),
    missingTrue: ints(attrs, 'nodes_missing_value_tracks_true'),
    weightTree: ints(attrs, `${w}_treeids`),
    weightNode: ints(attrs, `${w}_nodeids`),
    weightId: ints(attrs, `${w}_ids`),
    weightValue: floatsOrTensor(attrs, `${w}_weights`),
  };
}

/** The columns of the node's score output, and a description ("TreeEnsembleClassifier (150 trees)"). */
export function ensembleColumns(
  op: 'TreeEnsembleClassifier' | 'TreeEnsembleRegressor',
  attrs: Attributes,
  roundInput: boolean,
  features: number,
): { columns: EnsembleColumn[]; source: string } {
  const classifier = op === 'TreeEnsembleClassifier';
  const raw = rawEnsemble(op, attrs);
  const post = text(attrs.get('post_transform')?.s) || 'NONE';
  if (post === 'PROBIT') throw new Unsupported('post_transform PROBIT');
  const base = floatsOrTensor(attrs, 'base_values');
  const parsed = parseEnsemble(raw);
  if (parsed.maxFeature >= features) throw new Unsupported(`the ensemble reads feature ${parsed.maxFeature} of a ${features}-column input`);
  const source = `${op} (${parsed.trees.length} trees)`;
  const column = (
    leaf: (l: LeafWeights) => number,
    scale: number,
    b: number,
    link: Link,
    id: object = {},
    complementOf?: object,
  ): EnsembleColumn => {
    let built: TreeModel | null = null;
    return {
      link,
      id,
      ...(complementOf !== undefined ? { complementOf } : {}),
      trees: () => (built ??= columnTrees(parsed, leaf, scale, b, roundInput)),
    };
  };
  const columns = classifier
    ? classifierColumns(attrs, raw, parsed, base, post, column)
    : regressorColumns(attrs, parsed, base, post, column);
  return { columns, source };
}

type MakeColumn = (
  leaf: (l: LeafWeights) => number,
  scale: number,
  b: number,
  link: Link,
  id?: object,
  complementOf?: object,
) => EnsembleColumn;

/** A leaf's summed weights for one class or target. */
const sumOf = (id: number) => (l: LeafWeights) => {
  let s = 0;
  for (let i = 0; i < l.ids.length; i++) if (l.ids[i] === id) s += l.values[i]!;
  return s;
};

function classifierColumns(
  attrs: Attributes,
  raw: RawEnsemble,
  parsed: ParsedEnsemble,
  base: readonly number[],
  post: string,
  column: MakeColumn,
): EnsembleColumn[] {
  const labels = Math.max(ints(attrs, 'classlabels_int64s').length, strings(attrs, 'classlabels_strings').length);
  const ids = new Set(raw.weightId);
  if (labels === 2 && ids.size === 1) {
    if (!ids.has(0)) throw new Unsupported('a binary ensemble whose only weights are for class 1');
    if (base.length === 2) throw new Unsupported('a binary ensemble with weights for one class and two base values');
    const b = base.length === 1 ? base[0]! : 0;
    const s = sumOf(0);
    if (post === 'LOGISTIC') {
      const positive = {};
      return [column(s, -1, -b, 'logit', {}, positive), column(s, 1, b, 'logit', positive)];
    }
    if (raw.weightValue.every((v) => v >= 0)) return [column(s, -1, 1 - b, 'identity'), column(s, 1, b, 'identity')];
    return [column(s, -1, -b, 'identity'), column(s, 1, b, 'identity')];
  }
  if (post !== 'NONE' && post !== 'LOGISTIC') throw new Unsupported(`post_transform ${post} is not applied per column`);
  const link: Link = post === 'LOGISTIC' ? 'logit' : 'identity';
  if (labels === 2 && ids.size === 2 && ids.has(0) && ids.has(1)) {
    // Whether class 1 has a score depends on the leaves a row reaches unless every leaf has one.
    for (const t of parsed.trees)
      for (const l of t.leaves)
        if (l !== null && !l.ids.includes(1)) throw new Unsupported('a binary ensemble with class 1 weights on some leaves only');
    // With two base values onnxruntime scores class 1 as base[1] + the class 0 sum, class 0 as its negation.
    if (base.length === 2) return [column(sumOf(0), -1, -base[1]!, link), column(sumOf(0), 1, base[1]!, link)];
    return [column(sumOf(0), 1, base.length === 1 ? base[0]! : 0, link), column(sumOf(1), 1, 0, link)];
  }
  if (labels > 2 && [...ids].every((i) => Number.isSafeInteger(i) && i >= 0 && i < labels)) {
    return Array.from({ length: labels }, (_, k) => column(sumOf(k), 1, k < base.length ? base[k]! : 0, link));
  }
  throw new Unsupported(`a classifier of ${labels} classes with weights for classes ${[...ids].join(', ')}`);
}

function regressorColumns(
  attrs: Attributes,
  parsed: ParsedEnsemble,
  base: readonly number[],
  post: string,
  column: MakeColumn,
): EnsembleColumn[] {
  const targets = num(attrs.get('n_targets')?.i);
  const aggregate = text(attrs.get('aggregate_function')?.s) || 'SUM';
  if (aggregate !== 'SUM' && aggregate !== 'AVERAGE') throw new Unsupported(`aggregate_function ${aggregate} is not additive over trees`);
  const scale = aggregate === 'AVERAGE' ? 1 / parsed.trees.length : 1;
  if (targets === 1) {
    // One target: a leaf counts its first weight (its own nodes_values entry when it has none),
    // the one base value is added, and no post_transform but PROBIT is applied.
    const first = (l: LeafWeights) => (l.ids.length > 0 ? l.values[0]! : l.nodeValue);
    return [column(first, scale, base.length === 1 ? base[0]! : 0, 'identity')];
  }
  if (!(targets > 1)) throw new Unsupported(`n_targets ${targets}`);
  if (post !== 'NONE' && post !== 'LOGISTIC') throw new Unsupported(`post_transform ${post} is not applied per column`);
  const withBase = base.length === targets;
  return Array.from({ length: targets }, (_, t) =>
    column(sumOf(t), scale, withBase ? base[t]! : 0, post === 'LOGISTIC' ? 'logit' : 'identity'),
  );
}
