// How numbers are rounded for JSON answers and written into messages: one named function per
// precision, so a metric reads the same in every answer, log line and error.

/** Rounded to 6 decimals (monitoring answers); null when absent or not finite. */
export function round6(x: number | null | undefined): number | null {
  return x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 1e6) / 1e6;
}

/** Rounded to 4 decimals (retraining validation records); null when absent or not finite. */
export function round4(x: number | null | undefined): number | null {
  return x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 1e4) / 1e4;
}

/** Exactly 4 decimals for a message (`0.7310`); `n/a` when absent. */
export function fixed4(x: number | null | undefined): string {
  return x === null || x === undefined ? 'n/a' : x.toFixed(4);
}

/** 3 significant digits for a message, trailing zeros dropped (`0.25`, `1230`). */
export function significant3(x: number): string {
  return String(Number(x.toPrecision(3)));
}

/** 4 significant digits for a message, trailing zeros dropped; `n/a` when absent. */
export function significant4(x: number | null | undefined): string {
  return x === null || x === undefined ? 'n/a' : String(Number(x.toPrecision(4)));
}
