// The small dense linear algebra KernelSHAP needs: a Cholesky factorisation of a symmetric positive
// definite matrix (row-major, k x k) and solves with it. k is the number of features, so O(k^3) is
// cheap next to the model runs that produce the regression's data.

/** The lower Cholesky factor of A (row-major k x k), or null when A is not positive definite. */
export function cholesky(A: Float64Array, k: number): Float64Array | null {
  const L = new Float64Array(k * k);
  let scale = 0;
  for (let i = 0; i < k; i++) scale = Math.max(scale, Math.abs(A[i * k + i]!));
  const floor = 1e-13 * (scale || 1);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * k + j]!;
      for (let m = 0; m < j; m++) s -= L[i * k + m]! * L[j * k + m]!;
      if (i === j) {
        if (!(s > floor)) return null;
        L[i * k + i] = Math.sqrt(s);
      } else {
        L[i * k + j] = s / L[j * k + j]!;
      }
    }
  }
  return L;
}

/** Solves L L^T x = b in place of a copy of b. */
export function choleskySolve(L: Float64Array, k: number, b: ArrayLike<number>): Float64Array {
  const x = Float64Array.from(b);
  for (let i = 0; i < k; i++) {
    let s = x[i]!;
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

/**
 * Cholesky of A, adding a growing ridge to the diagonal when A is only semi-definite (a sampled
 * design that never separates two features). Throws when even a large ridge does not help (NaN).
 */
export function choleskyWithRidge(A: Float64Array, k: number): Float64Array {
  let L = cholesky(A, k);
  if (L !== null) return L;
  let scale = 0;
  for (let i = 0; i < k; i++) scale = Math.max(scale, Math.abs(A[i * k + i]!));
  for (let e = -12; e <= -2 && L === null; e++) {
    const B = Float64Array.from(A);
    for (let i = 0; i < k; i++) B[i * k + i]! += (scale || 1) * 10 ** e;
    L = cholesky(B, k);
  }
  if (L === null) throw new RangeError('the coalition design matrix is not positive definite (non-finite model outputs?)');
  return L;
}
