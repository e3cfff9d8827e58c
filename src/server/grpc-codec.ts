// The wire codec of ModelInfer: a ModelInferRequest read from its protobuf bytes, and a
// ModelInferResponse written to them, by hand instead of through @grpc/proto-loader's generic
// reflection (which builds a message object and then a plain copy of it, every field defaulted).
// The objects are the ones proto-loader gives and takes with the service's options (snake_case
// fields, int64 as decimal strings, repeated fields as arrays), so the rest of the gRPC service
// does not know which codec ran; a test checks both codecs agree on every field and datatype.
// Parameters maps (which scoreline does not read) and unknown fields are skipped by wire type, as
// protobuf requires; a known field with the wrong wire type, a length past the message's end or a
// varint longer than 10 bytes is an error, which gRPC answers as a request it could not read.

import type { ModelInferRequest, ModelInferResponse, TensorContents } from './grpc-infer.js';

const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;
const FIXED32 = 5;

const TWO_32 = 4294967296;

/** A cursor over one message's bytes (a field's sub-message reads a range of the same buffer). */
class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    pos: number,
    readonly end: number,
  ) {
    this.pos = pos;
  }

  /** The low 32 bits of a varint (its remaining bytes read and dropped), unsigned. */
  uint32(): number {
    const buf = this.buf;
    if (this.pos < this.end) {
      const b = buf[this.pos]!;
      if (b < 0x80) {
        this.pos++;
        return b;
      }
    }
    let value = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw truncated();
      const b = buf[this.pos++]!;
      if (i < 5) value += (b & 0x7f) * mul;
      if (b < 0x80) return value % TWO_32;
      mul *= 128;
    }
    throw new Error('a varint longer than 10 bytes');
  }

  /** A varint as its two 32-bit halves (unsigned), in `lo` and `hi`. */
  long(): void {
    const buf = this.buf;
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw truncated();
      const b = buf[this.pos++]!;
      const bits = b & 0x7f;
      if (i < 4) lo += bits * 2 ** (7 * i);
      else if (i === 4) {
        lo += (bits & 0x0f) * 2 ** 28;
        hi += bits >> 4;
      } else hi += bits * 2 ** (7 * i - 32);
      if (b < 0x80) {
        long.lo = lo;
        long.hi = hi % TWO_32;
        return;
      }
    }
    throw new Error('a varint longer than 10 bytes');
  }

  /** A length-delimited field's length, checked against what is left. */
  length(): number {
    const n = this.uint32();
    if (n > this.end - this.pos) throw truncated();
    return n;
  }

  string(): string {
    const n = this.length();
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  bytes(): Buffer {
    const n = this.length();
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  /** A length-delimited field as a reader of its bytes (this one moves past them). */
  sub(): Reader {
    const n = this.length();
    const r = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case VARINT:
        this.uint32();
        return;
      case FIXED64:
        this.advance(8);
        return;
      case LEN:
        this.advance(this.length());
        return;
      case FIXED32:
        this.advance(4);
        return;
      default:
        throw new Error(`wire type ${wireType} is not one protobuf has`);
    }
  }

  advance(n: number): void {
    if (n > this.end - this.pos) throw truncated();
    this.pos += n;
  }
}

const long = { lo: 0, hi: 0 };
const truncated = () => new Error('the message ends inside a field');

/** The last varint read by Reader.long() as a decimal string, as signed or unsigned 64-bit. */
function longString(signed: boolean): string {
  const { lo, hi } = long;
  if (hi < 0x200000) return String(hi * TWO_32 + lo);
  const v = (BigInt(hi) << 32n) | BigInt(lo);
  return String(signed ? BigInt.asIntN(64, v) : v);
}

const wrongType = (field: string, wireType: number) => new Error(`field ${field} has wire type ${wireType}, which it cannot have`);

/** One value of a repeated scalar field, or all of them when packed. */
function repeated(r: Reader, wireType: number, scalar: number, field: string, read: (r: Reader) => void): void {
  if (wireType === LEN) {
    const packed = r.sub();
    while (packed.pos < packed.end) read(packed);
  } else if (wireType === scalar) read(r);
  else throw wrongType(field, wireType);
}

function readContents(r: Reader): TensorContents {
  const c: Required<TensorContents> = {
    bool_contents: [],
    int_contents: [],
    int64_contents: [],
    uint_contents: [],
    uint64_contents: [],
    fp32_contents: [],
    fp64_contents: [],
    bytes_contents: [],
  };
  while (r.pos < r.end) {
    const tag = r.uint32();
    const wt = tag & 7;
    switch (tag >>> 3) {
      case 1:
        repeated(r, wt, VARINT, 'bool_contents', (x) => c.bool_contents.push(x.uint32() !== 0));
        break;
      case 2:
        repeated(r, wt, VARINT, 'int_contents', (x) => c.int_contents.push(x.uint32() | 0));
        break;
      case 3:
        repeated(r, wt, VARINT, 'int64_contents', (x) => {
          x.long();
          c.int64_contents.push(longString(true));
        });
        break;
      case 4:
        repeated(r, wt, VARINT, 'uint_contents', (x) => c.uint_contents.push(x.uint32()));
        break;
      case 5:
        repeated(r, wt, VARINT, 'uint64_contents', (x) => {
          x.long();
          c.uint64_contents.push(longString(false));
        });
        break;
      case 6:
        if (wt === LEN) {
          // The common case: packed floats, read in one loop.
          const n = r.length();
          if (n % 4 !== 0) throw new Error('packed fp32_contents is not a whole number of floats');
          const out = c.fp32_contents;
          const buf = r.buf;
          for (let p = r.pos, end = r.pos + n; p < end; p += 4) out.push(buf.readFloatLE(p));
          r.pos += n;
        } else repeated(r, wt, FIXED32, 'fp32_contents', (x) => c.fp32_contents.push(readFloat(x)));
        break;
      case 7:
        repeated(r, wt, FIXED64, 'fp64_contents', (x) => c.fp64_contents.push(readDouble(x)));
        break;
      case 8:
        if (wt !== LEN) throw wrongType('bytes_contents', wt);
        c.bytes_contents.push(r.bytes());
        break;
      default:
        r.skip(wt);
    }
  }
  return c;
}

function readFloat(r: Reader): number {
  r.advance(4);
  return r.buf.readFloatLE(r.pos - 4);
}

function readDouble(r: Reader): number {
  r.advance(8);
  return r.buf.readDoubleLE(r.pos - 8);
}

type InputTensor = NonNullable<ModelInferRequest['inputs']>[number];

function readInput(r: Reader): InputTensor {
  const t: InputTensor = { shape: [] };
  while (r.pos < r.end) {
    const tag = r.uint32();
    const wt = tag & 7;
    switch (tag >>> 3) {
      case 1:
        if (wt !== LEN) throw wrongType('inputs.name', wt);
        t.name = r.string();
        break;
      case 2:
        if (wt !== LEN) throw wrongType('inputs.datatype', wt);
        t.datatype = r.string();
        break;
      case 3:
        repeated(r, wt, VARINT, 'inputs.shape', (x) => {
          x.long();
          t.shape!.push(longString(true));
        });
        break;
      case 5:
        if (wt !== LEN) throw wrongType('inputs.contents', wt);
        t.contents = readContents(r.sub());
        break;
      default:
        r.skip(wt);
    }
  }
  return t;
}

function readOutput(r: Reader): { name?: string } {
  const o: { name?: string } = {};
  while (r.pos < r.end) {
    const tag = r.uint32();
    const wt = tag & 7;
    if (tag >>> 3 === 1) {
      if (wt !== LEN) throw wrongType('outputs.name', wt);
      o.name = r.string();
    } else r.skip(wt);
  }
  return o;
}

/** A ModelInferRequest from its wire bytes; throws on bytes that are not one. */
export function decodeModelInferRequest(buf: Buffer): ModelInferRequest {
  const r = new Reader(buf, 0, buf.length);
  const req: ModelInferRequest = { inputs: [], outputs: [], raw_input_contents: [] };
  while (r.pos < r.end) {
    const tag = r.uint32();
    const wt = tag & 7;
    const field = tag >>> 3;
    if (field >= 1 && field <= 3) {
      if (wt !== LEN) throw wrongType(field === 1 ? 'model_name' : field === 2 ? 'model_version' : 'id', wt);
      const s = r.string();
      if (field === 1) req.model_name = s;
      else if (field === 2) req.model_version = s;
      else req.id = s;
    } else if (field === 5) {
      if (wt !== LEN) throw wrongType('inputs', wt);
      req.inputs!.push(readInput(r.sub()));
    } else if (field === 6) {
      if (wt !== LEN) throw wrongType('outputs', wt);
      req.outputs!.push(readOutput(r.sub()));
    } else if (field === 7) {
      if (wt !== LEN) throw wrongType('raw_input_contents', wt);
      req.raw_input_contents!.push(r.bytes());
    } else r.skip(wt);
  }
  return req;
}

// Writing: sizes first (every length prefix is known before its bytes), then one buffer.

const varintSize = (v: number): number =>
  v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : v < TWO_32 ? 5 : longSize(v);

function longSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** An int64 value (number or decimal string) as an unsigned 64-bit number, or a bigint past 2^53. */
function int64Value(v: string | number): number | bigint {
  if (typeof v === 'number') {
    if (Number.isSafeInteger(v) && v >= 0) return v;
  } else if (v.length < 16 && digitsOnly(v)) {
    // A short decimal without a sign (a label, a dimension): exact as a number.
    return Number(v);
  }
  const big = BigInt.asUintN(64, BigInt(v));
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

function digitsOnly(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

const bigVarintSize = (v: bigint): number => {
  let n = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    n++;
  }
  return n;
};

const int64Size = (v: number | bigint): number => (typeof v === 'number' ? varintSize(v) : bigVarintSize(v));

const stringSize = (field: number, s: string | undefined): number => {
  if (!s) return 0;
  const n = Buffer.byteLength(s, 'utf8');
  return varintSize(field << 3) + varintSize(n) + n;
};

class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  varint(v: number): void {
    const buf = this.buf;
    while (v >= 0x80) {
      buf[this.pos++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    buf[this.pos++] = v;
  }

  bigVarint(v: bigint): void {
    while (v >= 0x80n) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
  }

  int64(v: number | bigint): void {
    if (typeof v === 'number') this.varint(v);
    else this.bigVarint(v);
  }

  tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  string(field: number, s: string | undefined): void {
    if (!s) return;
    this.tag(field, LEN);
    this.varint(Buffer.byteLength(s, 'utf8'));
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  bytes(field: number, b: Uint8Array): void {
    this.tag(field, LEN);
    this.varint(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }
}

/** Packed body sizes and values of one tensor's contents, computed once for both passes. */
interface PlannedContents {
  size: number;
  fields: { field: number; size: number; write: (w: Writer) => void }[];
}

function planContents(c: TensorContents): PlannedContents {
  const fields: PlannedContents['fields'] = [];
  const packed = (field: number, size: number, write: (w: Writer) => void) => {
    if (size > 0) fields.push({ field, size, write });
  };
  if (c.bool_contents?.length) {
    const v = c.bool_contents;
    packed(1, v.length, (w) => {
      for (const b of v) w.buf[w.pos++] = b ? 1 : 0;
    });
  }
  if (c.int_contents?.length) {
    // int32: a negative value is sign-extended to 64 bits, 10 bytes.
    const v = c.int_contents.map((x) => (x < 0 ? int64Value(x) : x));
    packed(
      2,
      v.reduce<number>((n, x) => n + int64Size(x), 0),
      (w) => {
        for (const x of v) w.int64(x);
      },
    );
  }
  for (const [field, values] of [
    [3, c.int64_contents],
    [5, c.uint64_contents],
  ] as const) {
    if (!values?.length) continue;
    const v = values.map(int64Value);
    packed(
      field,
      v.reduce<number>((n, x) => n + int64Size(x), 0),
      (w) => {
        for (const x of v) w.int64(x);
      },
    );
  }
  if (c.uint_contents?.length) {
    const v = c.uint_contents;
    packed(
      4,
      v.reduce((n, x) => n + varintSize(x >>> 0), 0),
      (w) => {
        for (const x of v) w.varint(x >>> 0);
      },
    );
  }
  if (c.fp32_contents?.length) {
    const v = c.fp32_contents;
    packed(6, 4 * v.length, (w) => {
      for (let i = 0; i < v.length; i++) w.pos = w.buf.writeFloatLE(v[i]!, w.pos);
    });
  }
  if (c.fp64_contents?.length) {
    const v = c.fp64_contents;
    packed(7, 8 * v.length, (w) => {
      for (let i = 0; i < v.length; i++) w.pos = w.buf.writeDoubleLE(v[i]!, w.pos);
    });
  }
  let size = 0;
  for (const f of fields) size += 1 + varintSize(f.size) + f.size;
  const bytes = c.bytes_contents ?? [];
  for (const b of bytes) size += 1 + varintSize(b.byteLength) + b.byteLength;
  if (bytes.length > 0)
    fields.push({
      field: 8,
      size: -1,
      write: (w) => {
        for (const b of bytes) w.bytes(8, b);
      },
    });
  return { size, fields };
}

type OutputTensor = ModelInferResponse['outputs'][number];

interface PlannedOutput {
  size: number;
  shape: (number | bigint)[];
  shapeSize: number;
  contents: PlannedContents | null;
}

function planOutput(o: OutputTensor): PlannedOutput {
  const shape = o.shape.map(int64Value);
  const shapeSize = shape.reduce<number>((n, x) => n + int64Size(x), 0);
  const contents = o.contents === undefined ? null : planContents(o.contents);
  let size = stringSize(1, o.name) + stringSize(2, o.datatype);
  if (shape.length > 0) size += 1 + varintSize(shapeSize) + shapeSize;
  if (contents !== null) size += 1 + varintSize(contents.size) + contents.size;
  return { size, shape, shapeSize, contents };
}

/** A ModelInferResponse's wire bytes. */
export function encodeModelInferResponse(res: ModelInferResponse): Buffer {
  const outputs = res.outputs.map(planOutput);
  const raw = res.raw_output_contents ?? [];
  let size = stringSize(1, res.model_name) + stringSize(2, res.model_version) + stringSize(3, res.id);
  for (const o of outputs) size += 1 + varintSize(o.size) + o.size;
  for (const b of raw) size += 1 + varintSize(b.byteLength) + b.byteLength;
  const w = new Writer(Buffer.allocUnsafe(size));
  w.string(1, res.model_name);
  w.string(2, res.model_version);
  w.string(3, res.id);
  for (let k = 0; k < outputs.length; k++) {
    const o = outputs[k]!;
    const t = res.outputs[k]!;
    w.tag(5, LEN);
    w.varint(o.size);
    w.string(1, t.name);
    w.string(2, t.datatype);
    if (o.shape.length > 0) {
      w.tag(3, LEN);
      w.varint(o.shapeSize);
      for (const d of o.shape) w.int64(d);
    }
    if (o.contents !== null) {
      w.tag(5, LEN);
      w.varint(o.contents.size);
      for (const f of o.contents.fields) {
        if (f.size >= 0) {
          w.tag(f.field, LEN);
          w.varint(f.size);
        }
        f.write(w);
      }
    }
  }
  for (const b of raw) w.bytes(6, b);
  if (w.pos !== size) throw new Error(`ModelInferResponse: wrote ${w.pos} bytes of ${size}`);
  return w.buf;
}
