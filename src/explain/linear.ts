// Exact contributions of a model whose margin is linear in its inputs: margin(x) = b + w . x. With
// features taken as independent, the Shapley value of feature j against a reference distribution is
// w_j * (x_j - mean_j), and the base value is the margin at the mean. Missing reference values are
// left out of their column's mean.

/** A margin linear in the inputs. */
export interface LinearMargin {
  readonly weights: Float64Array;
  readonly intercept: number;
}

/** A linear margin ready to explain: the reference means and the base value b + w . mean. */
export interface LinearModel {
  readonly margin: LinearMargin;
  readonly means: Float64Array;
  readonly base: number;
  readonly referenceRows: number;
}

export function linearMarginOf(m: LinearMargin, x: ArrayLike<number>): number {
  let s = m.intercept;
  for (let j = 0; j < m.weights.length; j++) s += m.weights[j]! * x[j]!;
  return s;
}

/** Column means over the reference rows (row-major), NaN values left out; a column with none is refused. */
export function prepareLinear(margin: LinearMargin, rows: ArrayLike<number>, count: number, names: readonly string[]): LinearModel {
  const p = margin.weights.length;
  const sums = new Float64Array(p);
  const seen = new Float64Array(p);
  for (let r = 0; r < count; r++) {
    for (let j = 0; j < p; j++) {
      const v = rows[r * p + j]!;
      if (Number.isNaN(v)) continue;
      sums[j]! += v;
      seen[j]!++;
    }
  }
  const means = new Float64Array(p);
  for (let j = 0; j < p; j++) {
    if (seen[j] === 0)
      throw new RangeError(`reference column '${names[j]}' has no numeric value, so it has no mean to measure contributions from`);
    means[j] = sums[j]! / seen[j]!;
  }
  return { margin, means, base: linearMarginOf(margin, means), referenceRows: count };
}

/** Writes w_j * (x_j - mean_j) into `phi` and returns the margin of x. */
export function linearContributions(m: LinearModel, x: ArrayLike<number>, phi: Float64Array): number {
  const w = m.margin.weights;
  for (let j = 0; j < w.length; j++) phi[j] = w[j]! * (x[j]! - m.means[j]!);
  return linearMarginOf(m.margin, x);
}
