// Batch scoring's CSV reader: the records of the one CSV grammar (src/csv.ts) parsed straight from
// the file's bytes into the open batch, with no string made for a numeric cell. A record that
// cannot be scored is rejected with its line number and the reason; blank lines are counted.

import { badRequest } from '../errors.js';
import { COMMA, CR, CsvFraming, fieldText, scanField } from '../csv.js';
import { describeBadNumber, parseDecimal, storeCell, type CellType } from './cells.js';
import type { ColumnBinding } from './layout.js';
import type { BatchAssembler } from './rows.js';

export interface RecordReader {
  /** Parses what it can of the chunk; sealed batches land in the assembler's `ready` list. */
  push(chunk: Buffer): void;
  /** The input ended: parses what is left and seals the last batch. */
  end(): void;
}

export interface CsvReaderOptions {
  readonly type: CellType;
  /** Called with the header's names; returns the binding or throws (missing columns). */
  readonly bind: (header: string[]) => ColumnBinding;
  /** Longest record accepted; longer ones are rejected and skipped. */
  readonly maxRecordBytes: number;
  readonly source: string;
}

export class CsvReader extends CsvFraming implements RecordReader {
  private binding: ColumnBinding | null = null;
  private featureOf: Int32Array = new Int32Array(0);
  private idOf: Int32Array = new Int32Array(0);
  private columns = 0;
  private readonly fast: boolean;

  constructor(
    private readonly asm: BatchAssembler,
    private readonly opts: CsvReaderOptions,
  ) {
    super(opts.source, opts.maxRecordBytes);
    this.fast = opts.type.kind === 'float32' || opts.type.kind === 'float64';
  }

  end(): void {
    this.endInput();
    if (this.binding === null) throw badRequest(`${this.opts.source} is empty: it has no header line`);
    this.asm.finish();
  }

  protected blankLine(): void {
    this.asm.blankLines++;
  }

  protected reject(line: number, reason: string, raw: string): void {
    this.asm.reject(line, reason, raw);
  }

  protected onHeader(names: string[]): void {
    const b = this.opts.bind(names);
    this.binding = b;
    this.featureOf = b.featureOf;
    this.idOf = b.idOf;
    this.columns = names.length;
  }

  /**
   * Parses one record into the open batch and commits or rejects it. Returns the position after the
   * record, or -1 when the buffer ends inside it (and the input has not ended) or it is too long.
   */
  protected record(buf: Buffer, pos: number, len: number, eof: boolean): number {
    const featureOf = this.featureOf;
    const idOf = this.idOf;
    const columns = this.columns;
    const batch = this.asm.current;
    const data = batch.data as Float32Array;
    const ids = batch.ids;
    const base = batch.rows * batch.width;
    const idBase = batch.rows * batch.idCount;
    const fast = this.fast;
    const min = this.opts.type.min;
    const max = this.opts.type.max;
    let p = pos;
    let col = 0;
    let newlines = 0;
    let error: string | null = null;
    let end: number;
    const span = this.span;
    for (;;) {
      p = scanField(buf, p, len, eof, span);
      if (p < 0) return -1;
      newlines += span.newlines;
      if (span.trailing) error ??= `unexpected text after the closing quote of field ${col + 1}`;
      if (col < columns) {
        const f = featureOf[col]!;
        if (f >= 0 && error === null) {
          const v = span.escaped ? NaN : parseDecimal(buf, span.start, span.end);
          if (fast && v >= min && v <= max) data[base + f] = v;
          else error = this.badCell(buf, span.start, span.end, span.escaped, v, base + f, f);
        }
        const k = idOf[col]!;
        if (k >= 0) ids[idBase + k] = fieldText(buf, span);
      }
      col++;
      if (p >= len) {
        end = len;
        break;
      }
      if (buf[p] === COMMA) {
        p++;
        continue;
      }
      end = p++;
      newlines++;
      break;
    }
    // Over the limit: the caller rejects it the same way whether or not it arrived in one chunk.
    if (p - pos > this.opts.maxRecordBytes) return -1;
    if (end > pos && buf[end - 1] === CR) end--;
    const line = this.line;
    this.line += newlines;
    if (col !== columns) this.asm.reject(line, `expected ${columns} fields as in the header, found ${col}`, buf.toString('utf8', pos, end));
    else if (error !== null) this.asm.reject(line, error, buf.toString('utf8', pos, end));
    else this.asm.commit(line, buf, pos, end);
    return p;
  }

  /** A cell the fast path did not take: stores it if it is valid after all (BOOL text, integer types), else says why not. */
  private badCell(buf: Buffer, fs: number, fe: number, escaped: boolean, v: number, at: number, feature: number): string | null {
    const type = this.opts.type;
    const column = this.binding!.featureNames[feature]!;
    if (Number.isNaN(v)) {
      const text = escaped ? buf.toString('utf8', fs, fe).replaceAll('""', '"') : buf.toString('utf8', fs, fe);
      const word = text.trim().toLowerCase();
      if (type.kind === 'bool' && (word === 'true' || word === 'false'))
        return storeCell(type, word === 'true' ? 1 : 0, this.asm.current.data, at, column);
      return describeBadNumber(text, column);
    }
    return storeCell(type, v, this.asm.current.data, at, column);
  }
}
