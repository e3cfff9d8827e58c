// Batch scoring's unit of work: a RowBatch holds up to `capacity` parsed rows in the input tensor's
// typed array (row-major), each row's line number, id values and where its text is, plus the lines
// rejected while it was filling. The BatchAssembler fills one batch at a time, seals it when full (or
// when rejects pile up, so a file of bad lines still streams), and recycles batches once written, so
// the buffers in use stay a fixed handful whatever the file size.

import { makeTypedArray, type TypedArray } from '../inference/index.js';
import type { CellType } from './cells.js';

export interface Reject {
  readonly line: number;
  readonly reason: string;
  readonly raw: string;
}

/** Rejected text is cut to this many characters in the rejects file. */
export const MAX_RAW_CHARS = 65_536;
/** A batch is sealed early once its rejects hold this much text. */
const MAX_REJECT_CHARS = 4 * 1024 * 1024;

export class RowBatch {
  rows = 0;
  data: TypedArray;
  readonly lines: Float64Array;
  /** rows x idCount values, row-major. */
  readonly ids: unknown[];
  /** Each row's source bytes (a buffer and a range), read only when the model rejects the row. */
  readonly src: (Buffer | null)[];
  readonly srcStart: Int32Array;
  readonly srcEnd: Int32Array;
  rejects: Reject[] = [];
  rejectChars = 0;

  constructor(
    readonly capacity: number,
    readonly width: number,
    readonly idCount: number,
    type: CellType,
  ) {
    this.data = makeTypedArray(type.datatype, capacity * Math.max(width, 0));
    this.lines = new Float64Array(capacity);
    this.ids = new Array<unknown>(capacity * idCount);
    this.src = new Array<Buffer | null>(capacity).fill(null);
    this.srcStart = new Int32Array(capacity);
    this.srcEnd = new Int32Array(capacity);
  }

  /** The text of row i as it was in the file (for the rejects file). */
  raw(i: number): string {
    const buf = this.src[i];
    return buf ? clip(buf.toString('utf8', this.srcStart[i], this.srcEnd[i])) : '';
  }

  reset(): void {
    this.rows = 0;
    this.src.fill(null);
    this.ids.fill(undefined);
    this.rejects = [];
    this.rejectChars = 0;
  }
}

export const clip = (s: string): string => (s.length > MAX_RAW_CHARS ? `${s.slice(0, MAX_RAW_CHARS)}...` : s);

export class BatchAssembler {
  /** The batch being filled. Readers write a row's cells straight into current.data, then commit(). */
  current: RowBatch;
  /** Sealed batches, oldest first, waiting to be scored. */
  readonly ready: RowBatch[] = [];
  /** Data rows seen (scored or rejected), rows rejected while parsing, blank lines skipped. */
  rows = 0;
  rejected = 0;
  blankLines = 0;
  private width: number;
  private readonly spare: RowBatch[] = [];

  constructor(
    readonly capacity: number,
    readonly idCount: number,
    private readonly type: CellType,
    width: number,
    /** Spare batches kept for reuse: enough for every batch in flight. */
    private readonly keep: number,
  ) {
    this.width = width;
    this.current = new RowBatch(capacity, width, idCount, type);
  }

  /** Fixes the row width once the columns are known (before the first row is committed). */
  setWidth(width: number): void {
    if (width === this.width) return;
    if (this.current.rows > 0 || this.ready.some((b) => b.rows > 0)) throw new Error('row width changed after rows were read');
    this.width = width;
    const next = new RowBatch(this.capacity, width, this.idCount, this.type);
    next.rejects = this.current.rejects;
    next.rejectChars = this.current.rejectChars;
    this.current = next;
    this.spare.length = 0;
  }

  get rowWidth(): number {
    return this.width;
  }

  /** Accepts the row the reader just wrote into current.data at slot current.rows. */
  commit(line: number, src: Buffer, start: number, end: number): void {
    const b = this.current;
    const r = b.rows;
    b.lines[r] = line;
    b.src[r] = src;
    b.srcStart[r] = start;
    b.srcEnd[r] = end;
    this.rows++;
    if (++b.rows === b.capacity) this.seal();
  }

  reject(line: number, reason: string, raw: string): void {
    const b = this.current;
    const text = clip(raw);
    b.rejects.push({ line, reason, raw: text });
    b.rejectChars += text.length + reason.length;
    this.rows++;
    this.rejected++;
    if (b.rejects.length >= b.capacity || b.rejectChars >= MAX_REJECT_CHARS) this.seal();
  }

  /** Seals the last, partly filled batch. */
  finish(): void {
    if (this.current.rows > 0 || this.current.rejects.length > 0) this.seal();
  }

  /** Hands a written batch back for reuse. */
  recycle(b: RowBatch): void {
    if (b.width !== this.width || this.spare.length >= this.keep) return;
    b.reset();
    this.spare.push(b);
  }

  private seal(): void {
    this.ready.push(this.current);
    this.current = this.spare.pop() ?? new RowBatch(this.capacity, this.width, this.idCount, this.type);
  }
}
