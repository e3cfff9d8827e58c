// The JSON Lines reader of batch scoring: one JSON object per line (LF or CRLF), feature values as
// JSON numbers (booleans too for a BOOL input), extra keys ignored. Without a model.yaml feature
// list, the input's columns are the non-id keys of the first object, in its key order. Lines that
// are not an object, lack a feature or an id, or hold a value that is not a usable number are
// rejected with the reason; blank lines are skipped.

import { badRequest } from '../errors.js';
import { shorten, storeCell, type CellType } from './cells.js';
import type { RecordReader } from './csv.js';
import type { BatchAssembler } from './rows.js';

const LF = 0x0a;
const CR = 0x0d;
/** The first bytes of an over-long line kept in the rejects file (all inside the line: it is longer than the limit). */
const LONG_LINE_SHOWN = 200;

export interface JsonlReaderOptions {
  readonly type: CellType;
  /** model.yaml features, or null to take the first object's keys. */
  readonly features: readonly string[] | null;
  /** The input's declared width (-1 when dynamic), checked against the first object's keys. */
  readonly width: number;
  readonly idColumns: readonly string[];
  /** Called once the feature names are known, before the first row is committed. */
  readonly onColumns: (featureNames: readonly string[]) => void;
  readonly maxRecordBytes: number;
  readonly source: string;
}

export class JsonlReader implements RecordReader {
  private carry: Buffer | null = null;
  private line = 1;
  private atStart = true;
  private skipping = false;
  private features: readonly string[] | null;

  constructor(
    private readonly asm: BatchAssembler,
    private readonly opts: JsonlReaderOptions,
  ) {
    this.features = opts.features;
    if (this.features !== null) opts.onColumns(this.features);
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
    this.asm.finish();
  }

  private parse(buf: Buffer, eof: boolean): void {
    const len = buf.length;
    let pos = 0;
    if (this.atStart && len >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) pos = 3;
    if (this.atStart && (len >= 3 || eof)) this.atStart = false;
    while (pos < len) {
      const lf = buf.indexOf(LF, pos);
      if (this.skipping) {
        if (lf < 0) return;
        this.skipping = false;
        this.line++;
        pos = lf + 1;
        continue;
      }
      if (lf < 0 && !eof) {
        if (len - pos > this.opts.maxRecordBytes) {
          this.asm.reject(
            this.line,
            `the line is longer than ${this.opts.maxRecordBytes} bytes`,
            buf.toString('utf8', pos, pos + Math.min(this.opts.maxRecordBytes, LONG_LINE_SHOWN)),
          );
          this.skipping = true;
          return;
        }
        break;
      }
      const stop = lf < 0 ? len : lf;
      if (stop - pos > this.opts.maxRecordBytes) {
        // The same answer as when the line arrives in pieces and the carry outgrows the limit.
        this.asm.reject(
          this.line,
          `the line is longer than ${this.opts.maxRecordBytes} bytes`,
          buf.toString('utf8', pos, pos + Math.min(this.opts.maxRecordBytes, LONG_LINE_SHOWN)),
        );
        this.line++;
        pos = stop + 1;
        continue;
      }
      const end = stop > pos && buf[stop - 1] === CR ? stop - 1 : stop;
      this.object(buf, pos, end);
      this.line++;
      pos = stop + 1;
    }
    if (pos < len) this.carry = buf.subarray(pos);
  }

  private object(buf: Buffer, start: number, end: number): void {
    const text = buf.toString('utf8', start, end);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      if (text.trim() === '') {
        this.asm.blankLines++;
        return;
      }
      this.asm.reject(this.line, `invalid JSON: ${(e as Error).message}`, text);
      return;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      this.asm.reject(this.line, `not a JSON object (${Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value})`, text);
      return;
    }
    const obj = value as Record<string, unknown>;
    const features = this.features ?? this.bindKeys(obj);
    const batch = this.asm.current;
    const data = batch.data;
    const base = batch.rows * batch.width;
    const type = this.opts.type;
    const fast = type.kind === 'float32' || type.kind === 'float64';
    let error: string | null = null;
    for (let j = 0; j < features.length; j++) {
      const name = features[j]!;
      const v = obj[name];
      if (typeof v === 'number' && fast && v >= type.min && v <= type.max) {
        data[base + j] = v;
        continue;
      }
      error = this.badValue(v, name, obj, base + j);
      if (error !== null) break;
    }
    if (error === null) {
      const ids = this.opts.idColumns;
      const idBase = batch.rows * batch.idCount;
      for (let k = 0; k < ids.length; k++) {
        const v = Object.hasOwn(obj, ids[k]!) ? obj[ids[k]!] : undefined;
        if (v === undefined) {
          error = `missing id column '${ids[k]}'`;
          break;
        }
        batch.ids[idBase + k] = v;
      }
    }
    if (error !== null) this.asm.reject(this.line, error, text);
    else this.asm.commit(this.line, buf, start, end);
  }

  private badValue(v: unknown, name: string, obj: Record<string, unknown>, at: number): string | null {
    const type = this.opts.type;
    if (v === undefined || !Object.hasOwn(obj, name)) return `missing feature '${name}'`;
    if (typeof v === 'number') return storeCell(type, v, this.asm.current.data, at, name);
    if (typeof v === 'boolean' && type.kind === 'bool') return storeCell(type, v ? 1 : 0, this.asm.current.data, at, name);
    const shown =
      typeof v === 'string'
        ? JSON.stringify(shorten(v))
        : v === null
          ? 'null'
          : Array.isArray(v)
            ? 'an array'
            : typeof v === 'object'
              ? 'an object'
              : String(v);
    return `feature '${name}' is ${shown}, not a number`;
  }

  /** Without a feature list, the first object's non-id keys are the input's columns. */
  private bindKeys(obj: Record<string, unknown>): readonly string[] {
    const ids = new Set(this.opts.idColumns);
    const names = Object.keys(obj).filter((k) => !ids.has(k));
    if (names.length === 0) throw badRequest(`${this.opts.source} line ${this.line}: the first object has no keys besides the id columns`);
    if (this.opts.width > 0 && names.length !== this.opts.width) {
      throw badRequest(
        `${this.opts.source} line ${this.line}: the first object has ${names.length} keys besides the id columns, but the model's input has ` +
          `${this.opts.width} and its model.yaml lists no features to pick them by name`,
      );
    }
    this.features = names;
    this.opts.onColumns(names);
    return names;
  }
}
