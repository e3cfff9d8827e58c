// The log thread's side of the ring: records read out of it are assembled, per model version,
// variant and API key, into the columnar segments the store writes (timestamps, scores and inputs
// in typed arrays, the request ids as one JSON array text that SQLite expands itself). A segment
// closes at SEGMENT_ROWS rows, at a cut record, and when the reader takes what it has read.

import type { AppendSegment, Task } from './log-store.js';
import type { RecordVisitor, RingReader } from './log-ring.js';

/** Rows per segment: each is one row in `segments` and one statement for its ids. */
export const SEGMENT_ROWS = 1024;
/**
 * Predictions the log thread holds unwritten (its writes failing) beyond which it stops reading the
 * ring: the ring fills and the HTTP thread drops what does not fit, counted.
 */
export const MAX_BACKLOG = 1_000_000;

/** What a stream's definition record carries. */
export interface StreamDef {
  model: string;
  version: number;
  variant: string;
  width: number;
  task: Task | null;
  /** The API key id the stream's predictions came with (null: none, auth off). */
  keyId: string | null;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const HEX = '0123456789abcdef';
/** Bytes copied into a JSON string as they are: not a control byte, quote, backslash or 0xed (see id()). */
const PLAIN = new Uint8Array(256).map((_, c) => (c >= 0x20 && c !== QUOTE && c !== BACKSLASH && c !== 0xed ? 1 : 0));

/** Writes `\uXXXX` for code unit `u` at `p`; returns the next offset. */
function escapeInto(out: Buffer, p: number, u: number): number {
  out[p++] = BACKSLASH;
  out[p++] = 0x75;
  for (let shift = 12; shift >= 0; shift -= 4) out[p++] = HEX.charCodeAt((u >> shift) & 15);
  return p;
}

class Builder {
  n = 0;
  ts: Float64Array;
  scores: Float64Array;
  features: Float32Array;
  /** `["id","id",...` so far. */
  ids: Buffer;
  idBytes = 1;

  constructor(
    readonly def: StreamDef,
    private capacity = 64,
  ) {
    this.ts = new Float64Array(capacity);
    this.scores = new Float64Array(capacity);
    this.features = new Float32Array(capacity * def.width);
    this.ids = Buffer.allocUnsafe(capacity * 24);
    this.ids[0] = 0x5b; // [
  }

  add(ring: RingReader, at: number): void {
    if (this.n === this.capacity) this.grow();
    const n = this.n;
    const i32 = ring.i32;
    const w = at >> 2;
    const d = at >> 3;
    this.ts[n] = ring.f64[d + 2]!;
    this.scores[n] = ring.f64[d + 3]!;
    const width = this.def.width;
    const f = this.features;
    const base = n * width;
    if (i32[w + 3] === 0) f.fill(NaN, base, base + width);
    else {
      const src = ring.f32;
      for (let k = 0; k < width; k++) f[base + k] = src[w + 8 + k]!;
    }
    this.id(ring.u8, at + 32 + 4 * width, i32[w + 2]!);
    this.n = n + 1;
  }

  /** Appends one id as a JSON string: its UTF-8 bytes, with quotes, backslashes and control bytes escaped. */
  private id(src: Uint8Array, from: number, len: number): void {
    if (this.idBytes + len * 6 + 4 > this.ids.length) {
      const more = Buffer.allocUnsafe(Math.max(this.ids.length * 2, this.idBytes + len * 6 + 4));
      this.ids.copy(more, 0, 0, this.idBytes);
      this.ids = more;
    }
    const out = this.ids;
    let p = this.idBytes;
    if (this.n > 0) out[p++] = COMMA;
    out[p++] = QUOTE;
    for (let i = from, end = from + len; i < end; i++) {
      const c = src[i]!;
      if (PLAIN[c] === 1) out[p++] = c;
      else if (c === QUOTE || c === BACKSLASH) {
        out[p++] = BACKSLASH;
        out[p++] = c;
      } else if (c === 0xed && src[i + 1]! >= 0xa0) {
        // A lone surrogate (the writer's three bytes for it): JSON's \uXXXX, which SQLite decodes the same way.
        p = escapeInto(out, p, ((c & 0x0f) << 12) | ((src[i + 1]! & 0x3f) << 6) | (src[i + 2]! & 0x3f));
        i += 2;
      } else if (c === 0xed) out[p++] = c;
      else p = escapeInto(out, p, c);
    }
    out[p++] = QUOTE;
    this.idBytes = p;
  }

  private grow(): void {
    const cap = this.capacity * 2;
    const ts = new Float64Array(cap);
    ts.set(this.ts);
    const scores = new Float64Array(cap);
    scores.set(this.scores);
    const features = new Float32Array(cap * this.def.width);
    features.set(this.features);
    this.ts = ts;
    this.scores = scores;
    this.features = features;
    this.capacity = cap;
  }

  segment(): AppendSegment {
    this.ids[this.idBytes++] = 0x5d; // ]
    const { model, version, variant, keyId, task, width } = this.def;
    return {
      model,
      version,
      variant,
      keyId,
      task,
      width,
      n: this.n,
      ids: this.ids.toString('utf8', 0, this.idBytes),
      ts: this.ts,
      scores: this.scores,
      features: this.features,
    };
  }
}

/** Turns the ring's records into segments; `take()` hands over every row read so far. */
export class SegmentAssembler implements RecordVisitor {
  private readonly defs: StreamDef[] = [];
  /** The segment being filled per stream index. */
  private readonly builders: (Builder | null)[] = [];
  /** Rows of each stream's last segment: the next one starts at about that size. */
  private readonly lastRows: number[] = [];
  /** Streams with a segment being filled, in the order they started. */
  private readonly open: number[] = [];
  private done: AppendSegment[] = [];
  /** Rows in `done` and the open builders. */
  rows = 0;

  row(ring: RingReader, at: number, stream: number): void {
    const b = this.builders[stream] ?? this.start(stream);
    b.add(ring, at);
    this.rows++;
    if (b.n === SEGMENT_ROWS) this.close(stream, b);
  }

  private start(stream: number): Builder {
    const def = this.defs[stream];
    // The writer defines a stream before its first row, in the same ring: a row without one is a bug.
    if (def === undefined) throw new Error(`prediction log ring: a row of stream ${stream}, which was never defined`);
    const last = this.lastRows[stream] ?? 0;
    const b = new Builder(def, Math.min(SEGMENT_ROWS, Math.max(64, 2 ** Math.ceil(Math.log2(last + 1)))));
    this.builders[stream] = b;
    this.open.push(stream);
    return b;
  }

  private close(stream: number, b: Builder): void {
    this.done.push(b.segment());
    this.lastRows[stream] = b.n;
    this.builders[stream] = null;
    const k = this.open.indexOf(stream);
    if (k >= 0) this.open.splice(k, 1);
  }

  define(index: number, json: string): void {
    this.defs[index] = JSON.parse(json) as StreamDef;
    this.builders[index] ??= null;
  }

  cut(): void {
    for (const stream of this.open) {
      const b = this.builders[stream]!;
      this.done.push(b.segment());
      this.lastRows[stream] = b.n;
      this.builders[stream] = null;
    }
    this.open.length = 0;
  }

  /**
   * Drops every row read since the last take(): a read of the ring that failed part way leaves the
   * ring where it was, and must leave nothing here either, or a later take() would write rows the
   * ring still holds (and a new reader would read, and count, them again).
   */
  discard(): void {
    for (const stream of this.open) this.builders[stream] = null;
    this.open.length = 0;
    this.done = [];
    this.rows = 0;
  }

  /** Every row read so far, as segments (the open ones closed), in the order they were closed. */
  take(): { segments: AppendSegment[]; rows: number } {
    this.cut();
    const out = { segments: this.done, rows: this.rows };
    this.done = [];
    this.rows = 0;
    return out;
  }
}
