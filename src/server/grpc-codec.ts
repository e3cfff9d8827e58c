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
          const values = c.fp32_contents;
          const floats = floatsOf(r.buf, r.pos, n);
          for (let i = 0; i < floats.length; i++) values.push(floats[i]!);
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

let floatScratch = new Float32Array(1024);

/** `n` bytes of little-endian floats at `pos`, as a (reused) float view: copied once, not read one call per value. */
function floatsOf(buf: Buffer, pos: number, n: number): Float32Array {
  const count = n >> 2;
  if (count > floatScratch.length) floatScratch = new Float32Array(Math.max(count, floatScratch.length * 2));
  new Uint8Array(floatScratch.buffer, 0, n).set(buf.subarray(pos, pos + n));
  return floatScratch.subarray(0, count);
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

// Writing: into one scratch buffer, front to back. A length-delimited field gets one byte for its
// length before its body is written; a body of 128 bytes or more (rare in an answer: a large tensor)
// is moved up to make room for the longer varint. The answer is then copied out at its exact size,
// since gRPC keeps the buffer until it is sent.

let out = Buffer.allocUnsafe(64 * 1024);
let at = 0;

/** Room for `n` more bytes (the scratch grows by doubling and stays grown). */
function room(n: number): void {
  if (at + n <= out.length) return;
  let size = out.length * 2;
  while (size < at + n) size *= 2;
  const bigger = Buffer.allocUnsafe(size);
  out.copy(bigger, 0, 0, at);
  out = bigger;
}

function varint(v: number): void {
  room(10);
  const buf = out;
  while (v >= 0x80) {
    buf[at++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[at++] = v;
}

function bigVarint(v: bigint): void {
  room(10);
  while (v >= 0x80n) {
    out[at++] = Number(v & 0x7fn) | 0x80;
    v >>= 7n;
  }
  out[at++] = Number(v);
}

const varintSize = (v: number): number => (v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5);

/** Opens a length-delimited field: its tag, and one byte kept for its length; returns where the body starts. */
function open(field: number): number {
  varint((field << 3) | LEN);
  room(1);
  at++;
  return at;
}

/** Closes the field whose body started at `start`: writes its length, moving the body up if it needs more than one byte. */
function close(start: number): void {
  const n = at - start;
  if (n < 0x80) {
    out[start - 1] = n;
    return;
  }
  const extra = varintSize(n) - 1;
  room(extra);
  out.copy(out, start + extra, start, at);
  at += extra;
  let p = start - 1;
  let v = n;
  while (v >= 0x80) {
    out[p++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  out[p] = v;
}

function string(field: number, s: string | undefined): void {
  if (!s) return;
  const start = open(field);
  room(s.length * 3);
  at += out.write(s, at, 'utf8');
  close(start);
}

function bytes(field: number, b: Uint8Array): void {
  const start = open(field);
  room(b.byteLength);
  out.set(b, at);
  at += b.byteLength;
  close(start);
}

function digitsOnly(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** An int64 value (a number or a decimal string) as its varint: two's complement over 64 bits for a negative one. */
function int64(v: string | number): void {
  if (typeof v === 'number') {
    if (Number.isSafeInteger(v) && v >= 0) varint(v);
    // Not an integer: its integer part, as protobuf's own writer does (0 for NaN and the infinities).
    else bigVarint(BigInt.asUintN(64, BigInt(Number.isFinite(v) ? Math.trunc(v) : 0)));
  }
  // A short decimal without a sign (a label, a dimension): exact as a number.
  else if (v.length < 16 && digitsOnly(v)) varint(Number(v));
  else bigVarint(BigInt.asUintN(64, BigInt(v)));
}

function contents(c: TensorContents): void {
  let start: number;
  if (c.bool_contents?.length) {
    const v = c.bool_contents;
    start = open(1);
    room(v.length);
    for (let i = 0; i < v.length; i++) out[at++] = v[i] ? 1 : 0;
    close(start);
  }
  if (c.int_contents?.length) {
    // int32: a negative value is sign-extended to 64 bits, 10 bytes.
    const v = c.int_contents;
    start = open(2);
    for (let i = 0; i < v.length; i++) int64(v[i]!);
    close(start);
  }
  if (c.int64_contents?.length) {
    const v = c.int64_contents;
    start = open(3);
    for (let i = 0; i < v.length; i++) int64(v[i]!);
    close(start);
  }
  if (c.uint_contents?.length) {
    const v = c.uint_contents;
    start = open(4);
    for (let i = 0; i < v.length; i++) varint(v[i]! >>> 0);
    close(start);
  }
  if (c.uint64_contents?.length) {
    const v = c.uint64_contents;
    start = open(5);
    for (let i = 0; i < v.length; i++) int64(v[i]!);
    close(start);
  }
  if (c.fp32_contents?.length) {
    const v = c.fp32_contents;
    start = open(6);
    room(4 * v.length);
    for (let i = 0; i < v.length; i++) at = out.writeFloatLE(v[i]!, at);
    close(start);
  }
  if (c.fp64_contents?.length) {
    const v = c.fp64_contents;
    start = open(7);
    room(8 * v.length);
    for (let i = 0; i < v.length; i++) at = out.writeDoubleLE(v[i]!, at);
    close(start);
  }
  const b = c.bytes_contents;
  if (b !== undefined) for (let i = 0; i < b.length; i++) bytes(8, b[i]!);
}

/** A ModelInferResponse's wire bytes. */
export function encodeModelInferResponse(res: ModelInferResponse): Buffer {
  at = 0;
  string(1, res.model_name);
  string(2, res.model_version);
  string(3, res.id);
  for (const o of res.outputs) {
    const start = open(5);
    string(1, o.name);
    string(2, o.datatype);
    if (o.shape.length > 0) {
      const shape = open(3);
      for (let i = 0; i < o.shape.length; i++) int64(o.shape[i]!);
      close(shape);
    }
    if (o.contents !== undefined) {
      const c = open(5);
      contents(o.contents);
      close(c);
    }
    close(start);
  }
  const raw = res.raw_output_contents;
  if (raw !== undefined) for (let i = 0; i < raw.length; i++) bytes(6, raw[i]!);
  const answer = Buffer.allocUnsafe(at);
  out.copy(answer, 0, 0, at);
  // A scratch grown for one large answer does not stay large.
  if (out.length > 1 << 20) out = Buffer.allocUnsafe(64 * 1024);
  return answer;
}
