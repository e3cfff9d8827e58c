// The one CSV reader of scoreline: RFC 4180 records (comma-separated, fields optionally quoted
// with "" for a quote inside, quoted fields may hold commas and newlines, LF or CRLF line ends, a
// UTF-8 BOM ignored). The first non-blank line is the header; blank lines are skipped. A record
// that cannot be read is rejected with its line number and the reason; a quote left open is
// rejected at the end of its line and parsing resumes on the next, so one stray quote costs one
// line, not the rest of the file. CsvFraming owns that grammar; CsvRecords (and parseCsv for a whole
// text) gives records as strings to references, training data, feature sources and label files,
// and batch scoring's CsvReader (src/batch/csv.ts) extends the same framing to parse numeric cells
// straight from the bytes. Converting cells and counting fields against the header are the callers'.

import { badRequest } from './errors.js';

export const LF = 0x0a;
export const CR = 0x0d;
/** The first bytes of an over-long line kept in the rejects file (all inside the line: it is longer than the limit). */
const LONG_LINE_SHOWN = 200;
export const QUOTE = 0x22;
export const COMMA = 0x2c;

/**
 * What every CSV reader shares: the framing of records in the bytes (a BOM at the start, LF or CRLF
 * line ends, quoted fields over several lines, blank lines skipped, line numbers), input in chunks
 * of any size, and the recovery from an over-long line or a quote left open. The header is read
 * here as text; what a record becomes is the subclass's business.
 */
/** Where scanField() found a field: its text [start, end), whether it holds "" escapes, the LFs inside its quotes, and text after its closing quote. */
export interface FieldSpan {
  start: number;
  end: number;
  escaped: boolean;
  newlines: number;
  trailing: boolean;
}

export function fieldSpan(): FieldSpan {
  return { start: 0, end: 0, escaped: false, newlines: 0, trailing: false };
}

/**
 * Scans the field at `p` into `span` (the one grammar of every CSV reader here): returns the position
 * of the comma, LF or end of buffer after it, or -1 when the buffer ends inside it and the input has
 * not ended. An unquoted field's trailing CR (a CRLF line end) is not part of its text.
 */
export function scanField(buf: Buffer, p: number, len: number, eof: boolean, span: FieldSpan): number {
  span.escaped = false;
  span.newlines = 0;
  span.trailing = false;
  if (p < len && buf[p] === QUOTE) {
    const fs = ++p;
    for (;;) {
      const q = buf.indexOf(QUOTE, p);
      if (q < 0 || (q + 1 >= len && !eof)) return -1;
      if (buf[q + 1] === QUOTE) {
        span.escaped = true;
        p = q + 2;
        continue;
      }
      span.start = fs;
      span.end = q;
      p = q + 1;
      break;
    }
    for (let i = buf.indexOf(LF, span.start); i >= 0 && i < span.end; i = buf.indexOf(LF, i + 1)) span.newlines++;
    if (p < len) {
      let c = buf[p];
      if (c === CR) {
        if (p + 1 >= len && !eof) return -1;
        if (p + 1 >= len || buf[p + 1] === LF) c = buf[++p];
      }
      if (c !== COMMA && c !== LF && p < len) {
        span.trailing = true;
        while (p < len && buf[p] !== COMMA && buf[p] !== LF) p++;
        if (p >= len && !eof) return -1;
      }
    } else if (!eof) return -1;
    return p;
  }
  const fs = p;
  while (p < len) {
    const c = buf[p];
    if (c === COMMA || c === LF) break;
    p++;
  }
  if (p >= len && !eof) return -1;
  span.start = fs;
  span.end = p > fs && buf[p - 1] === CR ? p - 1 : p;
  return p;
}

/** A scanned field's text: quotes removed, "" made ". */
export function fieldText(buf: Buffer, span: FieldSpan): string {
  const s = buf.toString('utf8', span.start, span.end);
  return span.escaped ? s.replaceAll('""', '"') : s;
}

export abstract class CsvFraming {
  private carry: Buffer | null = null;
  /** Line number (1-based) of the first byte not yet parsed. */
  protected line = 1;
  private atStart = true;
  /** Discarding the rest of an over-long line. */
  private skipping = false;
  protected headerRead = false;
  /** The fields of the last record scan() read, the reason it cannot be used (or null), its newlines and where its text ends. */
  protected scanned: string[] = [];
  /** scan()'s field, reused. */
  protected readonly span = fieldSpan();
  protected scanError: string | null = null;
  private scanNewlines = 0;
  protected scanEnd = 0;

  constructor(
    protected readonly source: string,
    /** Longest record accepted; longer ones are rejected and skipped. */
    protected readonly maxRecordBytes: number,
  ) {}

  push(chunk: Buffer): void {
    const buf = this.carry === null ? chunk : Buffer.concat([this.carry, chunk]);
    this.carry = null;
    this.parse(buf, false);
  }

  /** The input ended: parses what is left. */
  protected endInput(): void {
    const rest = this.carry;
    this.carry = null;
    if (rest !== null) this.parse(rest, true);
  }

  /** The header's names (trimmed). */
  protected abstract onHeader(names: string[]): void;
  /** Parses one record from pos; returns the position after it, or -1 when it needs more bytes or is over the limit. */
  protected abstract record(buf: Buffer, pos: number, len: number, eof: boolean): number;
  protected abstract reject(line: number, reason: string, raw: string): void;
  protected blankLine(): void {}

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
        if (this.headerRead) this.blankLine();
        continue;
      }
      if (c === CR && pos + 1 >= len && !eof) break;
      const next = this.headerRead ? this.record(buf, pos, len, eof) : this.readHeader(buf, pos, len, eof);
      if (next >= 0) {
        pos = next;
        continue;
      }
      if (!eof && len - pos <= this.maxRecordBytes) break;
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
    const max = this.maxRecordBytes;
    const lf = buf.indexOf(LF, pos);
    const lineEnd = lf < 0 ? len : lf;
    if (!this.headerRead) {
      throw badRequest(
        `${this.source}: the header line ${lineEnd - pos > max ? `is longer than ${max} bytes` : 'has a quote that is never closed'}`,
      );
    }
    if (lineEnd - pos > max) {
      this.reject(this.line, `the line is longer than ${max} bytes`, buf.toString('utf8', pos, pos + Math.min(max, LONG_LINE_SHOWN)));
      if (lf < 0) {
        this.skipping = !eof;
        return len;
      }
    } else {
      const end = lineEnd > pos && buf[lineEnd - 1] === CR ? lineEnd - 1 : lineEnd;
      const where = lf < 0 ? 'the file' : 'the line';
      this.reject(this.line, `a quoted field is not closed before the end of ${where}`, buf.toString('utf8', pos, end));
      if (lf < 0) return len;
    }
    this.line++;
    return lf + 1;
  }

  /** Parses the header record; returns the position after it, or -1 when it needs more bytes. */
  private readHeader(buf: Buffer, pos: number, len: number, eof: boolean): number {
    const p = this.scan(buf, pos, len, eof);
    if (p < 0) return -1;
    if (this.scanError !== null) throw badRequest(`${this.source} line ${this.line}: the header has text after a closing quote`);
    this.line += this.scanNewlines;
    this.headerRead = true;
    this.onHeader(this.scanned.map((name) => name.trim()));
    return p;
  }

  /**
   * Reads one record's fields as text into `scanned` (quotes removed, "" made "); returns the
   * position after the record, or -1 when the buffer ends inside it and the input has not ended.
   * Text after a closing quote makes `scanError`; the line count is left to the caller (see accept()).
   */
  protected scan(buf: Buffer, pos: number, len: number, eof: boolean): number {
    const fields: string[] = [];
    let p = pos;
    let newlines = 0;
    let error: string | null = null;
    let end: number;
    const span = this.span;
    for (;;) {
      p = scanField(buf, p, len, eof, span);
      if (p < 0) return -1;
      newlines += span.newlines;
      if (span.trailing) error ??= `unexpected text after the closing quote of field ${fields.length + 1}`;
      fields.push(fieldText(buf, span));
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
    if (p - pos > this.maxRecordBytes) return -1;
    if (end > pos && buf[end - 1] === CR) end--;
    this.scanned = fields;
    this.scanError = error;
    this.scanNewlines = newlines;
    this.scanEnd = end;
    return p;
  }

  /** Moves past the record scan() read: returns its first line number. */
  protected accept(): number {
    const line = this.line;
    this.line += this.scanNewlines;
    return line;
  }
}

/** A record as text: its fields, or why it could not be read. */
export type CsvRecord =
  | { readonly line: number; readonly fields: string[]; readonly error: null }
  | { readonly line: number; readonly fields: null; readonly error: string; readonly raw: string };

/**
 * Records as arrays of strings, for the readers that want text (references, training data, feature
 * sources, label files): the same framing as batch scoring, so a file one accepts the others accept.
 * Counting fields against the header and converting cells are left to the caller, with its own words.
 */
export class CsvRecords extends CsvFraming {
  /** The header's names (trimmed), once its line is read. */
  header: string[] | null = null;
  private out: CsvRecord[] = [];

  constructor(source: string, maxRecordBytes = Number.POSITIVE_INFINITY) {
    super(source, maxRecordBytes);
  }

  /** The records read since the last call. */
  take(): CsvRecord[] {
    const out = this.out;
    this.out = [];
    return out;
  }

  /** The input ended: reads what is left (a file with no header leaves `header` null). */
  end(): void {
    this.endInput();
  }

  protected onHeader(names: string[]): void {
    this.header = names;
  }

  protected record(buf: Buffer, pos: number, len: number, eof: boolean): number {
    const p = this.scan(buf, pos, len, eof);
    if (p < 0) return -1;
    const line = this.accept();
    if (this.scanError !== null) this.reject(line, this.scanError, buf.toString('utf8', pos, this.scanEnd));
    else this.out.push({ line, fields: this.scanned, error: null });
    return p;
  }

  protected reject(line: number, reason: string, raw: string): void {
    this.out.push({ line, fields: null, error: reason, raw });
  }
}

export interface CsvTable {
  /** Null when the text has no header line (it is empty or blank). */
  readonly header: string[] | null;
  readonly records: CsvRecord[];
}

/** A whole CSV text (header first) as records; the synchronous face of CsvRecords. */
export function parseCsv(text: string | Buffer, source: string): CsvTable {
  const reader = new CsvRecords(source);
  reader.push(typeof text === 'string' ? Buffer.from(text, 'utf8') : text);
  reader.end();
  return { header: reader.header, records: reader.take() };
}
