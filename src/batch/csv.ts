// The CSV reader of batch scoring: RFC 4180 records (comma-separated, fields optionally quoted with
// "" for a quote inside, quoted fields may hold commas and newlines, LF or CRLF line ends) parsed
// straight from the file's bytes into the open batch, with no string made for a numeric cell. The
// first non-blank line is the header. A record that cannot be scored is rejected with its line
// number and the reason; blank lines are skipped. A quote left open is rejected at the end of its
// line and parsing resumes on the next, so one stray quote costs one line, not the rest of the file.

import { badRequest } from '../errors.js';
import { describeBadNumber, parseDecimal, storeCell, type CellType } from './cells.js';
import type { ColumnBinding } from './layout.js';
import type { BatchAssembler } from './rows.js';

const LF = 0x0a;
const CR = 0x0d;
/** The first bytes of an over-long line kept in the rejects file (all inside the line: it is longer than the limit). */
const LONG_LINE_SHOWN = 200;
const QUOTE = 0x22;
const COMMA = 0x2c;

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

export class CsvReader implements RecordReader {
  private carry: Buffer | null = null;
  /** Line number (1-based) of the first byte not yet parsed. */
  private line = 1;
  private atStart = true;
  /** Discarding the rest of an over-long line. */
  private skipping = false;
  private binding: ColumnBinding | null = null;
  private featureOf: Int32Array = new Int32Array(0);
  private idOf: Int32Array = new Int32Array(0);
  private columns = 0;
  private readonly fast: boolean;

  constructor(
    private readonly asm: BatchAssembler,
    private readonly opts: CsvReaderOptions,
  ) {
    this.fast = opts.type.kind === 'float32' || opts.type.kind === 'float64';
  }

  push(chunk: Buffer): void {
    const buf = this.carry === null ? chunk : Buffer.concat([this.carry, chunk]);
    this.carry = null;
    this.parse(buf, false);
  }

  end(): void {
    const rest = this.carry;
    this.carry = null;
    if (rest !== null) this.parse(rest, true);
    if (this.binding === null) throw badRequest(`${this.opts.source} is empty: it has no header line`);
    this.asm.finish();
  }

  private parse(buf: Buffer, eof: boolean): void {
    const len = buf.length;
    let pos = 0;
    if (this.atStart && len >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) pos = 3;
    if (this.atStart && (len >= 3 || eof)) this.atStart = false;
    if (this.skipping) {
      const lf = buf.indexOf(LF, pos);
      if (lf < 0) return;
      this.skipping = false;
      this.line++;
      pos = lf + 1;
    }
    while (pos < len) {
      const c = buf[pos];
      if (c === LF || (c === CR && pos + 1 < len && buf[pos + 1] === LF)) {
        pos += c === LF ? 1 : 2;
        this.line++;
        if (this.binding !== null) this.asm.blankLines++;
        continue;
      }
      if (c === CR && pos + 1 >= len && !eof) break;
      const next = this.binding === null ? this.header(buf, pos, len, eof) : this.record(buf, pos, len, eof);
      if (next >= 0) {
        pos = next;
        continue;
      }
      if (!eof && len - pos <= this.opts.maxRecordBytes) break;
      pos = this.giveUp(buf, pos, len, eof);
      if (this.skipping) return;
    }
    if (pos < len) this.carry = buf.subarray(pos);
  }

  /**
   * A record that does not end within maxRecordBytes (or before the end of the file): a line longer
   * than the limit is rejected and skipped; otherwise a quote was left open, and the record is cut
   * at the end of its first line, rejected, and parsing resumes on the next line.
   */
  private giveUp(buf: Buffer, pos: number, len: number, eof: boolean): number {
    const max = this.opts.maxRecordBytes;
    const lf = buf.indexOf(LF, pos);
    const lineEnd = lf < 0 ? len : lf;
    if (this.binding === null) {
      throw badRequest(
        `${this.opts.source}: the header line ${lineEnd - pos > max ? `is longer than ${max} bytes` : 'has a quote that is never closed'}`,
      );
    }
    if (lineEnd - pos > max) {
      this.asm.reject(
        this.line,
        `the line is longer than ${max} bytes`,
        buf.toString('utf8', pos, pos + Math.min(this.opts.maxRecordBytes, LONG_LINE_SHOWN)),
      );
      if (lf < 0) {
        this.skipping = !eof;
        return len;
      }
    } else {
      const end = lineEnd > pos && buf[lineEnd - 1] === CR ? lineEnd - 1 : lineEnd;
      const where = lf < 0 ? 'the file' : 'the line';
      this.asm.reject(this.line, `a quoted field is not closed before the end of ${where}`, buf.toString('utf8', pos, end));
      if (lf < 0) return len;
    }
    this.line++;
    return lf + 1;
  }

  /** Parses the header record; returns the position after it, or -1 when it needs more bytes. */
  private header(buf: Buffer, pos: number, len: number, eof: boolean): number {
    const names: string[] = [];
    let p = pos;
    let newlines = 0;
    for (;;) {
      let value: string;
      if (p < len && buf[p] === QUOTE) {
        const start = ++p;
        for (;;) {
          const q = buf.indexOf(QUOTE, p);
          if (q < 0 || (q + 1 >= len && !eof)) return -1;
          if (buf[q + 1] === QUOTE) {
            p = q + 2;
            continue;
          }
          value = buf.toString('utf8', start, q).replaceAll('""', '"');
          p = q + 1;
          break;
        }
        for (let i = start; i < p; i++) if (buf[i] === LF) newlines++;
        if (p < len && buf[p] === CR) p++;
      } else {
        const start = p;
        while (p < len && buf[p] !== COMMA && buf[p] !== LF) p++;
        if (p >= len && !eof) return -1;
        value = buf.toString('utf8', start, p > start && buf[p - 1] === CR ? p - 1 : p);
      }
      names.push(value.trim());
      if (p >= len) break;
      if (buf[p] === COMMA) {
        p++;
        continue;
      }
      if (buf[p] === LF) {
        p++;
        newlines++;
        break;
      }
      throw badRequest(`${this.opts.source} line ${this.line}: the header has text after a closing quote`);
    }
    this.line += newlines;
    const b = this.opts.bind(names);
    this.binding = b;
    this.featureOf = b.featureOf;
    this.idOf = b.idOf;
    this.columns = names.length;
    return p;
  }

  /**
   * Parses one record into the open batch and commits or rejects it. Returns the position after the
   * record, or -1 when the buffer ends inside it (and the input has not ended) or it is too long.
   */
  private record(buf: Buffer, pos: number, len: number, eof: boolean): number {
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
    for (;;) {
      let fs = p;
      let fe: number;
      let escaped = false;
      if (p < len && buf[p] === QUOTE) {
        fs = ++p;
        for (;;) {
          const q = buf.indexOf(QUOTE, p);
          if (q < 0 || (q + 1 >= len && !eof)) return -1;
          if (buf[q + 1] === QUOTE) {
            escaped = true;
            p = q + 2;
            continue;
          }
          fe = q;
          p = q + 1;
          break;
        }
        for (let i = buf.indexOf(LF, fs); i >= 0 && i < fe; i = buf.indexOf(LF, i + 1)) newlines++;
        if (p < len) {
          let c = buf[p];
          if (c === CR) {
            if (p + 1 >= len && !eof) return -1;
            if (p + 1 >= len || buf[p + 1] === LF) c = buf[++p];
          }
          if (c !== COMMA && c !== LF && p < len) {
            error ??= `unexpected text after the closing quote of field ${col + 1}`;
            while (p < len && buf[p] !== COMMA && buf[p] !== LF) p++;
            if (p >= len && !eof) return -1;
          }
        } else if (!eof) return -1;
      } else {
        while (p < len) {
          const c = buf[p];
          if (c === COMMA || c === LF) break;
          p++;
        }
        if (p >= len && !eof) return -1;
        fe = p > fs && buf[p - 1] === CR ? p - 1 : p;
      }
      if (col < columns) {
        const f = featureOf[col]!;
        if (f >= 0 && error === null) {
          const v = escaped ? NaN : parseDecimal(buf, fs, fe);
          if (fast && v >= min && v <= max) data[base + f] = v;
          else error = this.badCell(buf, fs, fe, escaped, v, base + f, f);
        }
        const k = idOf[col]!;
        if (k >= 0) ids[idBase + k] = escaped ? buf.toString('utf8', fs, fe).replaceAll('""', '"') : buf.toString('utf8', fs, fe);
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
