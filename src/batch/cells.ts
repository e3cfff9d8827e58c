// Batch scoring's cell values: decimal text read straight from file bytes into numbers (exactly as
// Number() would read it, without making a string on the common path), and a number checked and
// stored into one typed-array slot of the model input's datatype, with the reason when it cannot be.

import type { Datatype, TypedArray } from '../inference/index.js';

const SPACE = 0x20;
const TAB = 0x09;
const PLUS = 0x2b;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const LOWER_E = 0x65;

/** Exact powers of ten in float64: mantissa * or / POW10[k] is correctly rounded for k <= 22 (Clinger's fast path). */
const POW10 = Array.from({ length: 23 }, (_, k) => Number(`1e${k}`));
/** 2^53 is 9.007e15: up to 15 significant digits the mantissa is an exact integer. */
const MAX_FAST_DIGITS = 15;

/**
 * The decimal number in bytes [start, end) of `buf`, or NaN when the text is not one: optional spaces
 * and sign, digits with an optional fraction, an optional exponent. `NaN`, `Infinity`, hex and empty
 * text all give NaN. The result is what Number() gives for the same text; only numbers with more than
 * 15 significant digits or an exponent beyond +-22 take the slow path through a string.
 */
export function parseDecimal(buf: Buffer, start: number, end: number): number {
  while (start < end && (buf[start] === SPACE || buf[start] === TAB)) start++;
  while (end > start && (buf[end - 1] === SPACE || buf[end - 1] === TAB)) end--;
  let p = start;
  let negative = false;
  if (p < end) {
    const c = buf[p]!;
    if (c === MINUS) {
      negative = true;
      p++;
    } else if (c === PLUS) p++;
  }
  let mantissa = 0;
  let significant = 0;
  let digits = 0;
  let fraction = 0;
  for (; p < end; p++) {
    const d = buf[p]! - ZERO;
    if (d < 0 || d > 9) break;
    digits++;
    if (mantissa !== 0 || d !== 0) {
      mantissa = mantissa * 10 + d;
      significant++;
    }
  }
  if (p < end && buf[p] === DOT) {
    for (p++; p < end; p++) {
      const d = buf[p]! - ZERO;
      if (d < 0 || d > 9) break;
      digits++;
      fraction++;
      if (mantissa !== 0 || d !== 0) {
        mantissa = mantissa * 10 + d;
        significant++;
      }
    }
  }
  if (digits === 0) return NaN;
  let exponent = 0;
  if (p < end && (buf[p]! | 0x20) === LOWER_E) {
    p++;
    let expNegative = false;
    if (p < end && (buf[p] === MINUS || buf[p] === PLUS)) expNegative = buf[p++] === MINUS;
    const first = p;
    for (; p < end; p++) {
      const d = buf[p]! - ZERO;
      if (d < 0 || d > 9) break;
      if (exponent < 100_000) exponent = exponent * 10 + d;
    }
    if (p === first) return NaN;
    if (expNegative) exponent = -exponent;
  }
  if (p !== end) return NaN;
  if (mantissa === 0) return negative ? -0 : 0;
  const e10 = exponent - fraction;
  // The grammar is checked above, so Number() sees only decimal text here (and keeps the sign).
  if (significant > MAX_FAST_DIGITS || e10 > 22 || e10 < -22) return Number(buf.toString('latin1', start, end));
  const value = e10 >= 0 ? mantissa * POW10[e10]! : mantissa / POW10[-e10]!;
  return negative ? -value : value;
}

const NON_FINITE = /^[+-]?(nan|inf|infinity)$/i;

/** Why a cell's text is not a usable number (for the rejects file). */
export function describeBadNumber(text: string, column: string): string {
  const t = text.trim();
  if (t === '') return `missing value for '${column}'`;
  if (NON_FINITE.test(t)) return `non-finite value ${JSON.stringify(shorten(t))} for '${column}'`;
  return `${JSON.stringify(shorten(t))} is not a number (column '${column}')`;
}

export const shorten = (s: string, max = 40): string => (s.length > max ? `${s.slice(0, max)}...` : s);

const FLT_MAX = 3.4028234663852886e38;

type Kind = 'float32' | 'float64' | 'int' | 'bigint' | 'bool';

/** How numbers go into the input tensor: its element kind and range. */
export interface CellType {
  readonly datatype: Datatype;
  readonly kind: Kind;
  readonly min: number;
  readonly max: number;
}

const TYPES: Partial<Record<Datatype, Omit<CellType, 'datatype'>>> = {
  FP32: { kind: 'float32', min: -FLT_MAX, max: FLT_MAX },
  FP64: { kind: 'float64', min: -Number.MAX_VALUE, max: Number.MAX_VALUE },
  BOOL: { kind: 'bool', min: 0, max: 1 },
  UINT8: { kind: 'int', min: 0, max: 255 },
  INT8: { kind: 'int', min: -128, max: 127 },
  UINT16: { kind: 'int', min: 0, max: 65535 },
  INT16: { kind: 'int', min: -32768, max: 32767 },
  UINT32: { kind: 'int', min: 0, max: 4294967295 },
  INT32: { kind: 'int', min: -2147483648, max: 2147483647 },
  UINT64: { kind: 'bigint', min: 0, max: Number.MAX_SAFE_INTEGER },
  INT64: { kind: 'bigint', min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER },
};

/** The cell type of an input datatype, or undefined when batch scoring cannot feed it (FP16, BYTES). */
export function cellType(datatype: Datatype): CellType | undefined {
  const t = TYPES[datatype];
  return t === undefined ? undefined : { datatype, ...t };
}

/**
 * Stores `v` (a number already parsed; NaN when the text was not one) at `target[pos]`. Returns null
 * when stored, else the reason. Floats must be finite and in range; integer types need integers in
 * range; BOOL takes 0 or 1 (text readers map true/false to those first).
 */
export function storeCell(type: CellType, v: number, target: TypedArray, pos: number, column: string): string | null {
  switch (type.kind) {
    case 'float32':
    case 'float64':
      if (!(v >= type.min && v <= type.max)) {
        return Number.isNaN(v)
          ? `not a number (column '${column}')`
          : `value ${v} is out of the ${type.datatype} range (column '${column}')`;
      }
      (target as Float64Array)[pos] = v;
      return null;
    case 'int':
    case 'bigint':
    case 'bool':
      if (!Number.isInteger(v)) return `${v} is not ${type.kind === 'bool' ? '0 or 1' : 'an integer'} (column '${column}')`;
      if (v < type.min || v > type.max)
        return `value ${v} is out of the ${type.datatype} range [${type.min}, ${type.max}] (column '${column}')`;
      if (type.kind === 'bigint') (target as BigInt64Array)[pos] = BigInt(v);
      else (target as Int32Array)[pos] = v;
      return null;
  }
}
