// Logistic regression trainer: per-feature standardisation, L2 penalty on the weights (not the
// intercept), Newton/IRLS with a backtracking line search, and the export of a fitted model as
// an ONNX graph (label + class probabilities) carrying its features and scaling as metadata.
// Everything here is deterministic: the same data and options give the same model and bytes.
// The loops index flat row-major arrays whose shapes are checked on entry (rows x cols, k = cols + 1),
// so an indexed read inside them is in range and carries a non-null assertion.
import { GraphBuilder, onnxElementType } from '../inference/onnx-writer.js';

export interface LogisticOptions {
  /** L2 penalty on the standardised weights: objective = sum(log loss) + l2/2 * |w|^2 (sklearn C = 1/l2). Default 1. */
  l2?: number;
  /** Newton iterations at most. Default 100. */
  maxIter?: number;
  /** Converged when the largest parameter step is below this. Default 1e-8. */
  tol?: number;
}

/** A fitted model. `weights` apply to standardised features z = (x - mean) / std. */
export interface LogisticModel {
  mean: number[];
  std: number[];
  weights: number[];
  intercept: number;
  l2: number;
  iterations: number;
  converged: boolean;
}

export interface LogisticOnnxOptions {
  featureNames: readonly string[];
  /** Graph name. Default `logistic_regression`. */
  name?: string;
  docString?: string;
}

/**
 * The nodes of a fitted model on a [-1, p] FP32 input: standardise, weigh, add the intercept,
 * sigmoid. Returns the name of the P(class 1) tensor ([-1, 1]), `output`.
 */
export function addLogisticNodes(g: GraphBuilder, model: LogisticModel, input: string, output = 'p1'): string {
  const p = model.weights.length;
  g.initializer('mean', 'FP32', [p], Float32Array.from(model.mean));
  g.initializer('std', 'FP32', [p], Float32Array.from(model.std));
  g.initializer('weights', 'FP32', [p, 1], Float32Array.from(model.weights));
  g.initializer('intercept', 'FP32', [1], Float32Array.of(model.intercept));
  g.node('Sub', [input, 'mean'], ['centered']);
  g.node('Div', ['centered', 'std'], ['standardized']);
  g.node('MatMul', ['standardized', 'weights'], ['weighted_sum']);
  g.node('Add', ['weighted_sum', 'intercept'], ['logit']);
  g.node('Sigmoid', ['logit'], [output]);
  return output;
}

/** A binary classifier's outputs from P(class 1): `label` INT64 [-1] (p1 > threshold) and `probabilities` FP32 [-1, 2]. */
export function addClassifierOutputs(g: GraphBuilder, p1: string, threshold = 0.5): void {
  g.initializer('one', 'FP32', [1], Float32Array.of(1));
  g.initializer('threshold', 'FP32', [1], Float32Array.of(threshold));
  g.initializer('label_shape', 'INT64', [1], BigInt64Array.of(-1n));
  g.node('Sub', ['one', p1], ['p0']);
  g.node('Concat', ['p0', p1], ['probabilities'], { axis: 1 });
  g.node('Greater', [p1, 'threshold'], ['is_positive']);
  g.node('Cast', ['is_positive'], ['label_column'], { to: onnxElementType('INT64') });
  g.node('Reshape', ['label_column', 'label_shape'], ['label']);
  g.output('label', 'INT64', [-1]);
  g.output('probabilities', 'FP32', [-1, 2]);
}

/** Row-major n x p design matrix plus its shape. */
interface DesignMatrix {
  data: Float64Array;
  rows: number;
  cols: number;
}

function designMatrix(X: Float64Array | readonly (readonly number[])[], rows: number): DesignMatrix {
  if (X instanceof Float64Array) {
    if (rows === 0 || X.length % rows !== 0 || X.length === 0) {
      throw new RangeError(`X has ${X.length} values, which is not a multiple of the ${rows} labels`);
    }
    return { data: X, rows, cols: X.length / rows };
  }
  if (X.length !== rows) throw new RangeError(`X has ${X.length} rows but y has ${rows} labels`);
  const cols = X[0]?.length ?? 0;
  if (cols === 0) throw new RangeError('X needs at least one row and one column');
  const data = new Float64Array(rows * cols);
  X.forEach((row, i) => {
    if (row.length !== cols) throw new RangeError(`X row ${i} has ${row.length} values, expected ${cols}`);
    data.set(row, i * cols);
  });
  return { data, rows, cols };
}

/** Numerically stable 1 / (1 + exp(-t)). */
export function sigmoid(t: number): number {
  if (t >= 0) return 1 / (1 + Math.exp(-t));
  const e = Math.exp(t);
  return e / (1 + e);
}

/** log(1 + exp(t)) without overflow. */
function softplus(t: number): number {
  return Math.max(t, 0) + Math.log1p(Math.exp(-Math.abs(t)));
}

/** Population mean and standard deviation per column; a zero deviation becomes 1. */
function columnScaling(X: DesignMatrix): { mean: number[]; std: number[] } {
  const { data, rows, cols } = X;
  const mean = new Array<number>(cols).fill(0);
  const std = new Array<number>(cols).fill(0);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) mean[j]! += data[i * cols + j]!;
  for (let j = 0; j < cols; j++) mean[j] = mean[j]! / rows;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const d = data[i * cols + j]! - mean[j]!;
      std[j]! += d * d;
    }
  }
  for (let j = 0; j < cols; j++) {
    const s = Math.sqrt(std[j]! / rows);
    std[j] = s > 0 ? s : 1;
  }
  return { mean, std };
}

/**
 * Solves A x = b for a symmetric positive definite A (k x k, row-major) by Cholesky. When A is only
 * semi-definite (e.g. a constant feature with l2 = 0) a growing ridge is added until it factors.
 */
function solveSpd(A: Float64Array, b: Float64Array, k: number): Float64Array {
  let maxDiag = 0;
  for (let i = 0; i < k; i++) maxDiag = Math.max(maxDiag, A[i * k + i]!);
  for (let ridge = 0, attempt = 0; attempt < 12; attempt++, ridge = (maxDiag || 1) * 1e-12 * 10 ** attempt) {
    const L = new Float64Array(k * k);
    let ok = true;
    for (let i = 0; i < k && ok; i++) {
      for (let j = 0; j <= i; j++) {
        let s = A[i * k + j]! + (i === j ? ridge : 0);
        for (let m = 0; m < j; m++) s -= L[i * k + m]! * L[j * k + m]!;
        if (i === j) {
          if (!(s > 1e-14 * (maxDiag || 1))) {
            ok = false;
            break;
          }
          L[i * k + i] = Math.sqrt(s);
        } else {
          L[i * k + j] = s / L[j * k + j]!;
        }
      }
    }
    if (!ok) continue;
    const x = new Float64Array(k);
    for (let i = 0; i < k; i++) {
      let s = b[i]!;
      for (let m = 0; m < i; m++) s -= L[i * k + m]! * x[m]!;
      x[i] = s / L[i * k + i]!;
    }
    for (let i = k - 1; i >= 0; i--) {
      let s = x[i]!;
      for (let m = i + 1; m < k; m++) s -= L[m * k + i]! * x[m]!;
      x[i] = s / L[i * k + i]!;
    }
    return x;
  }
  throw new Error('logistic regression: the Hessian is not positive definite even with a ridge; check the data for NaN or extreme values');
}

/** Penalised negative log-likelihood; beta[0] is the intercept. */
function objective(Z: DesignMatrix, y: ArrayLike<number>, beta: Float64Array, l2: number): number {
  const { data, rows, cols } = Z;
  let loss = 0;
  for (let i = 0; i < rows; i++) {
    let eta = beta[0]!;
    for (let j = 0; j < cols; j++) eta += data[i * cols + j]! * beta[j + 1]!;
    loss += softplus(eta) - y[i]! * eta;
  }
  let penalty = 0;
  for (let j = 1; j <= cols; j++) penalty += beta[j]! * beta[j]!;
  return loss + 0.5 * l2 * penalty;
}

/** Fits the model. X is row-major n x p (Float64Array) or a list of rows; y holds 0/1 labels. */
export function trainLogistic(
  X: Float64Array | readonly (readonly number[])[],
  y: ArrayLike<number>,
  options: LogisticOptions = {},
): LogisticModel {
  const l2 = options.l2 ?? 1;
  const maxIter = options.maxIter ?? 100;
  const tol = options.tol ?? 1e-8;
  if (!(Number.isFinite(l2) && l2 >= 0)) throw new RangeError(`l2 must be a finite number >= 0, got ${l2}`);
  if (!(Number.isSafeInteger(maxIter) && maxIter >= 1)) throw new RangeError(`maxIter must be a positive integer, got ${maxIter}`);
  if (!(tol > 0)) throw new RangeError(`tol must be > 0, got ${tol}`);
  const raw = designMatrix(X, y.length);
  const { rows: n, cols: p } = raw;
  let positives = 0;
  for (let i = 0; i < n; i++) {
    const label = y[i];
    if (label !== 0 && label !== 1) throw new RangeError(`y[${i}] is ${label}; labels must be 0 or 1`);
    positives += label;
  }
  if (positives === 0 || positives === n) throw new RangeError('y must contain both classes (0 and 1)');
  for (let i = 0; i < raw.data.length; i++) {
    if (!Number.isFinite(raw.data[i])) throw new RangeError(`X has a non-finite value at row ${Math.floor(i / p)}, column ${i % p}`);
  }

  const { mean, std } = columnScaling(raw);
  const Z: DesignMatrix = { data: new Float64Array(n * p), rows: n, cols: p };
  for (let i = 0; i < n; i++) for (let j = 0; j < p; j++) Z.data[i * p + j] = (raw.data[i * p + j]! - mean[j]!) / std[j]!;

  const k = p + 1;
  const beta = new Float64Array(k);
  beta[0] = Math.log(positives / (n - positives));
  let current = objective(Z, y, beta, l2);
  let iterations = 0;
  let converged = false;
  const z = new Float64Array(k);
  while (iterations < maxIter) {
    iterations++;
    const gradient = new Float64Array(k);
    const hessian = new Float64Array(k * k);
    for (let i = 0; i < n; i++) {
      z[0] = 1;
      for (let j = 0; j < p; j++) z[j + 1] = Z.data[i * p + j]!;
      let eta = 0;
      for (let j = 0; j < k; j++) eta += z[j]! * beta[j]!;
      const mu = sigmoid(eta);
      const residual = mu - y[i]!;
      const w = mu * (1 - mu);
      for (let a = 0; a < k; a++) {
        gradient[a]! += residual * z[a]!;
        for (let b = 0; b <= a; b++) hessian[a * k + b]! += w * z[a]! * z[b]!;
      }
    }
    for (let a = 1; a < k; a++) {
      gradient[a]! += l2 * beta[a]!;
      hessian[a * k + a]! += l2;
    }
    for (let a = 0; a < k; a++) for (let b = a + 1; b < k; b++) hessian[a * k + b] = hessian[b * k + a]!;

    const step = solveSpd(hessian, gradient, k);
    let newtonStep = 0;
    let descent = 0;
    for (let a = 0; a < k; a++) {
      newtonStep = Math.max(newtonStep, Math.abs(step[a]!));
      descent += gradient[a]! * step[a]!;
    }
    if (newtonStep < tol) {
      // At the optimum the objective no longer changes in floating point: take the step as is.
      for (let a = 0; a < k; a++) beta[a]! -= step[a]!;
      converged = true;
      break;
    }
    // Backtracking (Armijo) keeps plain Newton from overshooting on nearly separable data. Near
    // the optimum the decrease drops below the objective's rounding noise, so changes within that
    // noise count as no increase and the (then excellent) Newton step is taken.
    const noise = 1e-12 * (1 + Math.abs(current));
    for (let t = 1, halvings = 0; halvings < 40; halvings++, t /= 2) {
      const candidate = beta.map((v, a) => v - t * step[a]!);
      const next = objective(Z, y, candidate, l2);
      if (next <= current - 1e-4 * t * descent + noise) {
        beta.set(candidate);
        current = next;
        break;
      }
    }
  }
  return { mean, std, weights: Array.from(beta.subarray(1)), intercept: beta[0]!, l2, iterations, converged };
}

/** Linear predictor (log-odds) of one row of raw features. */
export function logit(model: LogisticModel, row: ArrayLike<number>): number {
  const p = model.weights.length;
  if (row.length !== p) throw new RangeError(`row has ${row.length} features, model expects ${p}`);
  let eta = model.intercept;
  for (let j = 0; j < p; j++) eta += (model.weights[j]! * (row[j]! - model.mean[j]!)) / model.std[j]!;
  return eta;
}

/** Probability of class 1 for one row of raw features. */
export function predictProba(model: LogisticModel, row: ArrayLike<number>): number {
  return sigmoid(logit(model, row));
}

/** The same model as coefficients on the raw (unstandardised) features. */
export function originalScaleCoefficients(model: LogisticModel): { weights: number[]; intercept: number } {
  const weights = model.weights.map((w, j) => w / model.std[j]!);
  const intercept = model.intercept - weights.reduce((s, w, j) => s + w * model.mean[j]!, 0);
  return { weights, intercept };
}

/**
 * ONNX graph: `input` FP32 [N, p] -> Sub(mean) -> Div(std) -> MatMul(W) -> Add(b) -> Sigmoid = p1;
 * outputs `label` INT64 [N] (p1 > 0.5) and `probabilities` FP32 [N, 2] = [1 - p1, p1].
 * Metadata: scoreline.model_type, scoreline.features (JSON list), scoreline.standardisation
 * (JSON {mean, std}), scoreline.coefficients (JSON {weights, intercept}, standardised scale),
 * scoreline.training (JSON {l2, iterations, converged}).
 */
export function logisticToOnnx(model: LogisticModel, options: LogisticOnnxOptions): Uint8Array {
  const p = model.weights.length;
  const { featureNames } = options;
  if (featureNames.length !== p) throw new RangeError(`featureNames has ${featureNames.length} names, model has ${p} features`);
  if (new Set(featureNames).size !== p || featureNames.some((f) => typeof f !== 'string' || f === '')) {
    throw new RangeError('featureNames must be distinct non-empty strings');
  }
  const g = new GraphBuilder(options.name ?? 'logistic_regression');
  g.input('input', 'FP32', [-1, p]);
  addClassifierOutputs(g, addLogisticNodes(g, model, 'input'));
  return g.toModelBytes({
    opset: 17,
    producer: 'scoreline',
    docString: options.docString ?? `logistic regression on ${p} standardised features, L2 = ${model.l2}`,
    metadata: {
      'scoreline.model_type': 'logistic_regression',
      'scoreline.features': JSON.stringify(featureNames),
      'scoreline.standardisation': JSON.stringify({ mean: model.mean, std: model.std }),
      'scoreline.coefficients': JSON.stringify({ weights: model.weights, intercept: model.intercept }),
      'scoreline.training': JSON.stringify({ l2: model.l2, iterations: model.iterations, converged: model.converged }),
    },
  });
}
