// The common Open Inference Protocol request read straight from its bytes, without JSON.parse and
// the object graph it builds: `{"id": "...", "inputs": [{"name": "...", "datatype": "FP32",
// "shape": [1, 61], "data": [0.5, -3, ...]}]}`, keys in any order, any JSON whitespace. A one-row
// request of 61 features is read in a little over half of JSON.parse's time (npm run
// bench:request-path), and decoded without the per-value checks of an unknown JSON value.
//
// It takes only what it can read exactly as JSON.parse would: FP32 and FP64 inputs with flat data
// whose count matches the shape, numbers of at most 15 significant digits and 22 decimals without
// an exponent (their value is then one exact division, correctly rounded like JSON.parse's),
// strings of printable ASCII without escapes, no key twice, no other keys. Everything else
// (parameters, outputs, nested or boolean data, 17-digit doubles, any doubt) returns null and takes
// the general path, which owns every error message: a body this reader takes, the general path
// would have read to the same values.

/** A request read by scanOip: what decodeScanned (decode.ts) needs. */
export class ScannedOip {
  constructor(
    readonly id: string | undefined,
    readonly inputs: readonly ScannedInput[],
  ) {}
}

export interface ScannedInput {
  readonly name: string;
  readonly datatype: 'FP32' | 'FP64';
  readonly shape: number[];
  readonly data: number[];
}

const POW10 = [
  1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

const QUOTE = 0x22;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** Where numbers are parsed before being copied out; grows (kept up to MAX_SCRATCH values). */
let scratch = new Float64Array(1024);
const MAX_SCRATCH = 1 << 20;

const ascii = (names: readonly string[]) => names.map((n) => Uint8Array.from(n, (ch) => ch.charCodeAt(0)));
/** The keys read, by index: the body's, and an input's. */
const BODY_KEYS = ascii(['id', 'inputs']);
const INPUT_KEYS = ascii(['name', 'datatype', 'shape', 'data']);

/** Gives up: the general path reads this body. */
class Decline extends Error {}
const DECLINE = new Decline();

class Reader {
  i = 0;

  constructor(private readonly b: Buffer) {}

  ws(): void {
    const b = this.b;
    let i = this.i;
    for (;;) {
      const c = b[i];
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
    this.i = i;
  }

  /** The next non-space byte, consumed. */
  take(): number {
    this.ws();
    const c = this.b[this.i];
    if (c === undefined) throw DECLINE;
    this.i++;
    return c;
  }

  expect(c: number): void {
    if (this.take() !== c) throw DECLINE;
  }

  /** Skips a string of printable ASCII without escapes (the opening quote already taken); its end. */
  private skipString(): number {
    const b = this.b;
    let i = this.i;
    for (;;) {
      const c = b[i];
      if (c === undefined || c < 0x20 || c > 0x7e || c === 0x5c) throw DECLINE;
      if (c === QUOTE) break;
      i++;
    }
    this.i = i + 1;
    return i;
  }

  /** A string value (see skipString). */
  string(): string {
    const start = this.i;
    const end = this.skipString();
    return this.b.toString('latin1', start, end);
  }

  /** A key: its index in `keys`, or -1; compared byte by byte, no string is made. */
  key(keys: readonly Uint8Array[]): number {
    const start = this.i;
    const end = this.skipString();
    const b = this.b;
    next: for (let k = 0; k < keys.length; k++) {
      const want = keys[k]!;
      if (want.length !== end - start) continue;
      for (let j = 0; j < want.length; j++) if (b[start + j] !== want[j]) continue next;
      return k;
    }
    return -1;
  }

  /** [n, ...] of positive integers (the '[' already taken). */
  shape(): number[] {
    const values = this.data();
    for (const v of values) if (!Number.isInteger(v) || v < 1) throw DECLINE;
    return values;
  }

  /**
   * A flat array of JSON numbers of at most 15 significant digits, 22 decimals and no exponent, as
   * JSON.parse reads them (the '[' already taken). One loop over locals: this is where a request's
   * bytes are.
   */
  data(): number[] {
    const b = this.b;
    let i = this.i;
    let out = scratch;
    let n = 0;
    let c = b[i];
    while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = b[++i];
    if (c === CLOSE_BRACKET) {
      this.i = i + 1;
      return [];
    }
    for (;;) {
      while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = b[++i];
      const negative = c === MINUS;
      if (negative) c = b[++i];
      if (c === undefined || c < ZERO || c > NINE) throw DECLINE;
      if (c === ZERO && b[i + 1]! >= ZERO && b[i + 1]! <= NINE) throw DECLINE;
      let m = 0;
      let digits = 0;
      while (c !== undefined && c >= ZERO && c <= NINE) {
        m = m * 10 + (c - ZERO);
        if (m > 0) digits++;
        c = b[++i];
      }
      let scale = 0;
      if (c === DOT) {
        c = b[++i];
        while (c !== undefined && c >= ZERO && c <= NINE) {
          m = m * 10 + (c - ZERO);
          if (m > 0) digits++;
          scale++;
          c = b[++i];
        }
        if (scale === 0) throw DECLINE;
      }
      if (c === 0x65 || c === 0x45 || digits > 15 || scale > 22) throw DECLINE;
      // m < 10^15 < 2^53 and 10^scale (scale <= 22) are exact doubles: one correctly rounded division.
      const v = scale === 0 ? m : m / POW10[scale]!;
      if (n === out.length) {
        const grown = new Float64Array(out.length * 2);
        grown.set(out);
        out = grown;
        if (grown.length <= MAX_SCRATCH) scratch = grown;
      }
      out[n++] = negative ? -v : v;
      while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = b[++i];
      if (c === CLOSE_BRACKET) break;
      if (c !== COMMA) throw DECLINE;
      c = b[++i];
    }
    this.i = i + 1;
    // Copied out of the scratch into a plain array: a typed array per request (its own buffer, off
    // the heap) would cost more than the parsing.
    const values = new Array<number>(n);
    for (let k = 0; k < n; k++) values[k] = out[k]!;
    return values;
  }

  input(): ScannedInput {
    let name: string | undefined;
    let datatype: string | undefined;
    let shape: number[] | undefined;
    let data: number[] | undefined;
    if (this.take() !== OPEN_BRACE) throw DECLINE;
    let c = this.take();
    if (c === CLOSE_BRACE) throw DECLINE;
    for (;;) {
      if (c !== QUOTE) throw DECLINE;
      const key = this.key(INPUT_KEYS);
      this.expect(COLON);
      const v = this.take();
      if (key === 0 && name === undefined && v === QUOTE) name = this.string();
      else if (key === 1 && datatype === undefined && v === QUOTE) datatype = this.string();
      else if (key === 2 && shape === undefined && v === OPEN_BRACKET) shape = this.shape();
      else if (key === 3 && data === undefined && v === OPEN_BRACKET) data = this.data();
      else throw DECLINE;
      c = this.take();
      if (c === CLOSE_BRACE) break;
      if (c !== COMMA) throw DECLINE;
      c = this.take();
    }
    if (name === undefined || shape === undefined || data === undefined) throw DECLINE;
    if (datatype !== 'FP32' && datatype !== 'FP64') throw DECLINE;
    let count = 1;
    for (const d of shape) count *= d;
    if (shape.length === 0 || count !== data.length) throw DECLINE;
    return { name, datatype, shape, data };
  }
}

/** The request in `body`, or null when the general path must read it (see the file comment). */
export function scanOip(body: Buffer): ScannedOip | null {
  const r = new Reader(body);
  try {
    let id: string | undefined;
    let inputs: ScannedInput[] | undefined;
    r.expect(OPEN_BRACE);
    let c = r.take();
    if (c === CLOSE_BRACE) return null;
    for (;;) {
      if (c !== QUOTE) return null;
      const key = r.key(BODY_KEYS);
      r.expect(COLON);
      const v = r.take();
      if (key === 0 && id === undefined && v === QUOTE) id = r.string();
      else if (key === 1 && inputs === undefined && v === OPEN_BRACKET) {
        inputs = [];
        for (;;) {
          inputs.push(r.input());
          const d = r.take();
          if (d === CLOSE_BRACKET) break;
          if (d !== COMMA) return null;
        }
      } else return null;
      c = r.take();
      if (c === CLOSE_BRACE) break;
      if (c !== COMMA) return null;
      c = r.take();
    }
    r.ws();
    if (r.i !== body.length || inputs === undefined) return null;
    return new ScannedOip(id, inputs);
  } catch (e) {
    if (e instanceof Decline) return null;
    throw e;
  }
}
