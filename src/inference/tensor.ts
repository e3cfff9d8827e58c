// Tensor datatypes as the Open Inference Protocol names them, their typed-array and onnxruntime
// representations, and the two conversions on the hot path: JSON `data` (flat or nested) into a
// typed array slot, and typed-array rows back into JSON text. BYTES tensors (ONNX strings) are held
// as plain arrays of strings: onnxruntime takes and gives them that way, and there is no fixed width
// to pack them into.

import { badRequest, signatureMismatch, valueOutOfRange } from '../errors.js';
import type { Datatype } from '../onnx/index.js';

export type { Datatype };

export type TypedArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | BigUint64Array
  | BigInt64Array
  | Float32Array
  | Float64Array;

/** A BYTES tensor's elements: one (UTF-8) string each. */
export type StringTensor = string[];

/** What a tensor's elements live in: a typed array, or strings for BYTES. */
export type TensorData = TypedArray | StringTensor;

export type OrtType =
  | 'string'
  | 'bool'
  | 'uint8'
  | 'int8'
  | 'uint16'
  | 'int16'
  | 'uint32'
  | 'int32'
  | 'uint64'
  | 'int64'
  | 'float32'
  | 'float64';

type Kind = 'float32' | 'float64' | 'int' | 'bigint' | 'bool' | 'string';

interface DatatypeInfo {
  readonly ort: OrtType;
  /** Bytes per element (0 for BYTES: variable). */
  readonly bytes: number;
  readonly kind: Kind;
  readonly min: number;
  readonly max: number;
  readonly make: (n: number) => TensorData;
}

const FLT_MAX = 3.4028234663852886e38;

const INFO: Partial<Record<Datatype, DatatypeInfo>> = {
  BOOL: { ort: 'bool', bytes: 1, kind: 'bool', min: 0, max: 1, make: (n) => new Uint8Array(n) },
  UINT8: { ort: 'uint8', bytes: 1, kind: 'int', min: 0, max: 255, make: (n) => new Uint8Array(n) },
  INT8: { ort: 'int8', bytes: 1, kind: 'int', min: -128, max: 127, make: (n) => new Int8Array(n) },
  UINT16: { ort: 'uint16', bytes: 2, kind: 'int', min: 0, max: 65535, make: (n) => new Uint16Array(n) },
  INT16: { ort: 'int16', bytes: 2, kind: 'int', min: -32768, max: 32767, make: (n) => new Int16Array(n) },
  UINT32: { ort: 'uint32', bytes: 4, kind: 'int', min: 0, max: 4294967295, make: (n) => new Uint32Array(n) },
  INT32: { ort: 'int32', bytes: 4, kind: 'int', min: -2147483648, max: 2147483647, make: (n) => new Int32Array(n) },
  UINT64: { ort: 'uint64', bytes: 8, kind: 'bigint', min: 0, max: Number.MAX_SAFE_INTEGER, make: (n) => new BigUint64Array(n) },
  INT64: {
    ort: 'int64',
    bytes: 8,
    kind: 'bigint',
    min: Number.MIN_SAFE_INTEGER,
    max: Number.MAX_SAFE_INTEGER,
    make: (n) => new BigInt64Array(n),
  },
  FP32: { ort: 'float32', bytes: 4, kind: 'float32', min: -FLT_MAX, max: FLT_MAX, make: (n) => new Float32Array(n) },
  FP64: { ort: 'float64', bytes: 8, kind: 'float64', min: -Infinity, max: Infinity, make: (n) => new Float64Array(n) },
  BYTES: { ort: 'string', bytes: 0, kind: 'string', min: 0, max: 0, make: (n) => new Array<string>(n).fill('') },
};

const ALL_DATATYPES = new Set<string>([
  'BOOL',
  'UINT8',
  'INT8',
  'UINT16',
  'INT16',
  'UINT32',
  'INT32',
  'UINT64',
  'INT64',
  'FP16',
  'FP32',
  'FP64',
  'BYTES',
]);

const FROM_ORT: Record<string, Datatype> = {
  bool: 'BOOL',
  uint8: 'UINT8',
  int8: 'INT8',
  uint16: 'UINT16',
  int16: 'INT16',
  uint32: 'UINT32',
  int32: 'INT32',
  uint64: 'UINT64',
  int64: 'INT64',
  float16: 'FP16',
  float32: 'FP32',
  float64: 'FP64',
  string: 'BYTES',
};

export const isDatatype = (s: unknown): s is Datatype => typeof s === 'string' && ALL_DATATYPES.has(s);

/** True for datatypes scoreline can feed to and read from onnxruntime. */
export const isSupported = (dt: Datatype): boolean => INFO[dt] !== undefined;

export function datatypeInfo(dt: Datatype): DatatypeInfo {
  const info = INFO[dt];
  if (info === undefined) throw signatureMismatch(`datatype ${dt} is not supported by this server`);
  return info;
}

export const ortType = (dt: Datatype): OrtType => datatypeInfo(dt).ort;
export const datatypeFromOrt = (t: string): Datatype | undefined => FROM_ORT[t];
/** Storage for n elements of a numeric datatype. */
export const makeTypedArray = (dt: Datatype, n: number): TypedArray => {
  const d = datatypeInfo(dt).make(n);
  if (isStringTensor(d)) throw signatureMismatch(`datatype ${dt} has no typed array`);
  return d;
};
/** Storage for n elements of any datatype: a typed array, or strings for BYTES. */
export const makeTensorData = (dt: Datatype, n: number): TensorData => datatypeInfo(dt).make(n);
export const isStringTensor = (d: TensorData): d is StringTensor => Array.isArray(d);

/** Elements [start, end) of `data`: a view of a typed array, a copy of strings. */
export function elementsOf<T extends TensorData>(data: T, start: number, end: number): T {
  return (isStringTensor(data) ? data.slice(start, end) : data.subarray(start, end)) as T;
}

/** Copies elements [start, end) of `src` into `target` at `at`; both hold the same datatype. */
export function copyElements(target: TensorData, at: number, src: TensorData, start: number, end: number): void {
  if (isStringTensor(target)) {
    const s = src as StringTensor;
    for (let i = start; i < end; i++) target[at + i - start] = s[i]!;
  } else {
    (target as Float32Array).set((src as Float32Array).subarray(start, end), at);
  }
}

export const elementCount = (shape: readonly number[]): number => {
  let n = 1;
  for (let i = 0; i < shape.length; i++) n *= shape[i]!;
  return n;
};

/**
 * Copies JSON tensor `data` into `target` starting at `offset`, checking every element against the
 * datatype. `data` is either flat (row-major, exactly as many values as the shape holds) or nested
 * exactly as the shape: every level has the size of its dimension and values sit only at the last.
 * Returns the number of elements written. Throws a 400 error starting with `where` (e.g. "input
 * 'x'") on malformed data and a 422 on a value the datatype cannot hold; `target` past `offset` may
 * then hold garbage, which is fine because callers only commit what a successful call wrote.
 */
export function writeTensorData(
  data: unknown,
  dt: Datatype,
  target: TensorData,
  offset: number,
  shape: readonly number[],
  where: string,
): number {
  if (!Array.isArray(data)) throw badRequest(`${where}: data must be an array`);
  const info = datatypeInfo(dt);
  const expected = elementCount(shape);
  if (data.length > 0 && !Array.isArray(data[0])) {
    const mixed = () =>
      badRequest(`${where}: data mixes nested arrays and values; send it flat or nested exactly as the shape [${shape.join(', ')}]`);
    if (data.length !== expected) {
      if (data.some(Array.isArray)) throw mixed();
      throw badRequest(`${where}: data has ${data.length} values but the shape [${shape.join(', ')}] needs ${expected}`);
    }
    for (let i = 0; i < expected; i++) {
      const v = data[i];
      if (Array.isArray(v)) throw mixed();
      putElement(info, v, target, offset + i, where);
    }
    return expected;
  }
  const end = fillNested(data, info, target, offset, shape, 0, where);
  return end - offset;
}

/** Writes nested `arr` at `pos`, level `depth` of `shape`; returns the position after the last value. */
function fillNested(
  arr: unknown[],
  info: DatatypeInfo,
  target: TensorData,
  pos: number,
  shape: readonly number[],
  depth: number,
  where: string,
): number {
  const want = shape[depth];
  if (want === undefined || arr.length !== want) {
    const at = depth === 0 ? 'data' : `data at depth ${depth}`;
    throw badRequest(
      `${where}: ${at} has ${want === undefined ? 'more levels' : `${arr.length} entries`} where the shape [${shape.join(', ')}] has ${want === undefined ? `${shape.length}` : want}; nested data must match the shape exactly`,
    );
  }
  const last = depth === shape.length - 1;
  for (let i = 0; i < want; i++) {
    const v = arr[i];
    if (last) {
      if (Array.isArray(v)) throw badRequest(`${where}: data is nested deeper than the shape [${shape.join(', ')}]`);
      putElement(info, v, target, pos++, where);
    } else {
      if (!Array.isArray(v))
        throw badRequest(
          `${where}: data at depth ${depth + 1} holds a value where the shape [${shape.join(', ')}] needs an array of ${shape[depth + 1]}`,
        );
      pos = fillNested(v, info, target, pos, shape, depth + 1, where);
    }
  }
  return pos;
}

function putElement(info: DatatypeInfo, v: unknown, target: TensorData, pos: number, where: string): void {
  switch (info.kind) {
    case 'string':
      if (typeof v !== 'string') throw elementError(where, v, 'a string');
      (target as StringTensor)[pos] = v;
      return;
    case 'float32':
    case 'float64':
      if (typeof v !== 'number') throw elementError(where, v, 'a number');
      if (!(v >= info.min && v <= info.max)) {
        throw valueOutOfRange(`${where}: value ${v} is not a finite ${info.kind === 'float32' ? 'FP32' : 'FP64'} number`);
      }
      (target as Float32Array)[pos] = v;
      return;
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v)) throw elementError(where, v, 'an integer');
      if (v < info.min || v > info.max) throw valueOutOfRange(`${where}: value ${v} is out of range [${info.min}, ${info.max}]`);
      (target as Int32Array)[pos] = v;
      return;
    case 'bigint':
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw elementError(where, v, 'an integer within +-2^53');
      if (v < info.min) throw valueOutOfRange(`${where}: value ${v} is out of range for an unsigned type`);
      (target as BigInt64Array)[pos] = BigInt(v);
      return;
    case 'bool':
      if (typeof v !== 'boolean') throw elementError(where, v, 'true or false');
      (target as Uint8Array)[pos] = v ? 1 : 0;
      return;
  }
}

/** Writes one JSON scalar into `target[pos]` with the same checks as writeTensorData; `what` names it in errors (e.g. "instance 3 feature 'age'"). */
export function writeElement(v: unknown, dt: Datatype, target: TensorData, pos: number, what: string): void {
  putElement(datatypeInfo(dt), v, target, pos, what);
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

/**
 * Writes one 64-bit integer given exactly (a decimal string or a bigint, as protobuf carries it)
 * into an INT64 or UINT64 slot: the datatype's whole range, where JSON numbers stop at +-2^53.
 */
export function writeInt64Element(
  v: string | number | bigint,
  dt: 'INT64' | 'UINT64',
  target: TensorData,
  pos: number,
  what: string,
): void {
  let b: bigint;
  try {
    b = BigInt(v);
  } catch {
    throw elementError(what, v, 'an integer');
  }
  if (dt === 'INT64' ? b < INT64_MIN || b > INT64_MAX : b < 0n || b > UINT64_MAX) {
    throw valueOutOfRange(`${what}: value ${b} is out of range for ${dt}`);
  }
  (target as BigInt64Array)[pos] = b;
}

/**
 * Checks elements [start, end) of numeric data that arrived as raw bytes against the datatype, with
 * the rule JSON values get: floats must be finite, BOOL bytes 0 or 1 (integers of the right width
 * cannot be out of range).
 */
export function checkRawValues(data: TypedArray, dt: Datatype, start: number, end: number, where: string): void {
  const kind = datatypeInfo(dt).kind;
  if (kind === 'float32' || kind === 'float64') {
    const f = data as Float32Array;
    for (let i = start; i < end; i++) {
      const v = f[i]!;
      if (!Number.isFinite(v))
        throw valueOutOfRange(`${where}: element ${i - start} is ${v}, not a finite ${kind === 'float32' ? 'FP32' : 'FP64'} number`);
    }
  } else if (kind === 'bool') {
    for (let i = start; i < end; i++) {
      if (data[i]! > 1) throw valueOutOfRange(`${where}: element ${i - start} is ${data[i]}; a BOOL byte must be 0 or 1`);
    }
  }
}

function elementError(where: string, v: unknown, want: string) {
  if (typeof v === 'bigint') v = String(v);
  const shown = typeof v === 'string' ? JSON.stringify(v.length > 32 ? `${v.slice(0, 32)}...` : v) : String(v);
  return badRequest(`${where}: element ${shown} is not ${want}`);
}

/** JSON text of elements [start, end) of `data`, without brackets. */
export function jsonElements(data: TensorData, dt: Datatype, start: number, end: number): string {
  if (start >= end) return '';
  if (isStringTensor(data)) {
    let s = JSON.stringify(data[start]);
    for (let i = start + 1; i < end; i++) s += `,${JSON.stringify(data[i])}`;
    return s;
  }
  if (dt === 'BOOL') {
    let s = data[start] ? 'true' : 'false';
    for (let i = start + 1; i < end; i++) s += data[i] ? ',true' : ',false';
    return s;
  }
  let s = String(data[start]);
  for (let i = start + 1; i < end; i++) s += `,${String(data[i])}`;
  return s;
}

/** Elements [start, end) of `data` as JSON values (numbers, booleans for BOOL, strings for BYTES). */
export function jsValues(data: TensorData, dt: Datatype, start: number, end: number): (number | boolean | string)[] {
  if (isStringTensor(data)) return data.slice(start, end);
  const out = new Array<number | boolean>(end - start);
  if (dt === 'BOOL') for (let i = start; i < end; i++) out[i - start] = data[i] !== 0;
  else for (let i = start; i < end; i++) out[i - start] = Number(data[i]);
  return out;
}
