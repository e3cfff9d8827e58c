// What batch scoring writes: the scored rows (id columns, then every model output flattened into
// columns, CSV or JSON Lines) and the rejects file (`line,reason,raw` CSV), both in input order, each
// through a file sink that respects backpressure and appears under its name only when the run
// succeeds (written to a temp file, renamed at the end).

import { createWriteStream, type WriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { once } from 'node:events';
import type { Datatype, RunResult, TensorPayload, TypedArray } from '../inference/index.js';
import type { Reject, RowBatch } from './rows.js';

export type OutputFormat = 'csv' | 'jsonl';

/** Rows [start, start + rows) of a batch, scored by one run whose outputs start at that first row. */
export interface Segment {
  readonly start: number;
  readonly rows: number;
  readonly result: RunResult;
}

/** A row of the batch the model refused (found by re-running the batch in parts). */
export interface ModelReject {
  readonly row: number;
  readonly reason: string;
}

/** One output column group: a model output's name and its values per row. */
export interface OutputColumns {
  readonly name: string;
  readonly datatype: Datatype;
  /** Values per row (the product of the dims after the batch dimension). */
  readonly perRow: number;
  /** Column names: the output's name when it has one value per row, else name_0, name_1, ... */
  readonly columns: readonly string[];
}

export function outputColumns(outputs: readonly { name: string; datatype: Datatype; dims: readonly number[] }[]): OutputColumns[] {
  return outputs.map((o) => {
    let perRow = 1;
    for (let i = 1; i < o.dims.length; i++) perRow *= o.dims[i]!;
    // A dynamic inner dimension (-1, from the signature when no row was scored) gives one column.
    const columns = perRow === 1 || perRow < 0 ? [o.name] : Array.from({ length: perRow }, (_, j) => `${o.name}_${j}`);
    return { name: o.name, datatype: o.datatype, perRow, columns };
  });
}

type Format = (data: TypedArray, i: number) => string;

function formatter(dt: Datatype, json: boolean): Format {
  switch (dt) {
    case 'FP32':
    case 'FP64':
      // The same text the HTTP responses carry: the shortest decimal of the value as a double.
      return json
        ? (d, i) => {
            const v = d[i] as number;
            return v - v === 0 ? String(v) : 'null';
          }
        : (d, i) => String(d[i]);
    case 'BOOL':
      return (d, i) => (d[i] ? 'true' : 'false');
    default:
      return (d, i) => String(d[i]);
  }
}

const NEEDS_QUOTES = /[",\r\n]/;

export function csvCell(v: unknown): string {
  if (v === undefined || v === null) return '';
  const s = typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
  return NEEDS_QUOTES.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** Turns scored rows into output text. */
export class RowFormatter {
  private readonly formats: Format[];
  private readonly jsonKeys: string[][];
  private readonly idKeys: string[];

  constructor(
    readonly format: OutputFormat,
    readonly idColumns: readonly string[],
    readonly outputs: readonly OutputColumns[],
  ) {
    this.formats = outputs.map((o) => formatter(o.datatype, format === 'jsonl'));
    let first = idColumns.length === 0;
    const key = (name: string) => {
      const k = `${first ? '' : ','}${JSON.stringify(name)}:`;
      first = false;
      return k;
    };
    this.idKeys = idColumns.map((c, k) => `${k === 0 ? '' : ','}${JSON.stringify(c)}:`);
    this.jsonKeys = outputs.map((o) => o.columns.map(key));
  }

  header(): string {
    if (this.format === 'jsonl') return '';
    return `${[...this.idColumns, ...this.outputs.flatMap((o) => o.columns)].map(csvCell).join(',')}\n`;
  }

  /** The text of every scored row of the batch, in row order. */
  rows(batch: RowBatch, segments: readonly Segment[]): string {
    const idCount = batch.idCount;
    const ids = batch.ids;
    const outs = this.outputs;
    const formats = this.formats;
    const json = this.format === 'jsonl';
    let text = '';
    for (const seg of segments) {
      const tensors: TensorPayload[] = seg.result.outputs;
      for (let r = 0; r < seg.rows; r++) {
        const row = seg.start + r;
        let line = json ? '{' : '';
        for (let k = 0; k < idCount; k++) {
          const v = ids[row * idCount + k];
          line += json ? `${this.idKeys[k]}${JSON.stringify(v ?? null)}` : k === 0 ? csvCell(v) : `,${csvCell(v)}`;
        }
        let sep = idCount > 0;
        for (let o = 0; o < outs.length; o++) {
          // Numeric: batch scoring refuses models with BYTES outputs when it loads them.
          const data = tensors[o]!.data as TypedArray;
          const fmt = formats[o]!;
          const perRow = outs[o]!.perRow;
          const at = r * perRow;
          if (json) {
            const keys = this.jsonKeys[o]!;
            for (let j = 0; j < perRow; j++) line += keys[j] + fmt(data, at + j);
          } else {
            for (let j = 0; j < perRow; j++) {
              line += sep ? `,${fmt(data, at + j)}` : fmt(data, at + j);
              sep = true;
            }
          }
        }
        text += json ? `${line}}\n` : `${line}\n`;
      }
    }
    return text;
  }
}

export const REJECTS_HEADER = 'line,reason,raw\n';

/** The batch's rejects, from parsing and from the model, merged in line order. */
export function rejectLines(batch: RowBatch, model: readonly ModelReject[]): string {
  const parsed = batch.rejects;
  if (parsed.length === 0 && model.length === 0) return '';
  const line = (r: Reject) => `${r.line},${csvCell(r.reason)},${csvCell(r.raw)}\n`;
  let text = '';
  let i = 0;
  let j = 0;
  while (i < parsed.length || j < model.length) {
    const m = model[j];
    const mLine = m === undefined ? Infinity : batch.lines[m.row]!;
    if (i < parsed.length && parsed[i]!.line < mLine) text += line(parsed[i++]!);
    else {
      text += line({ line: mLine, reason: m!.reason, raw: batch.raw(m!.row) });
      j++;
    }
  }
  return text;
}

/** A file written through a temp name and renamed into place on commit; write() waits when the disk is behind. */
export class FileSink {
  readonly temp: string;
  private readonly stream: WriteStream;
  private failure: Error | null = null;

  private constructor(readonly path: string) {
    this.temp = `${path}.${process.pid}.partial`;
    this.stream = createWriteStream(this.temp, { highWaterMark: 1 << 20 });
    this.stream.on('error', (e) => (this.failure ??= e));
  }

  static async open(path: string): Promise<FileSink> {
    const sink = new FileSink(path);
    try {
      await once(sink.stream, 'open');
    } catch (e) {
      throw new Error(`cannot write ${path}: ${(e as Error).message}`);
    }
    return sink;
  }

  /** Text, or bytes the caller will not touch again (the stream keeps them until they are written). */
  async write(text: string | Uint8Array): Promise<void> {
    if (this.failure !== null) throw this.failure;
    if (text.length === 0) return;
    if (!this.stream.write(text)) await once(this.stream, 'drain');
  }

  /** Flushes, closes and renames the temp file to its final name. */
  async commit(): Promise<void> {
    if (this.failure !== null) throw this.failure;
    this.stream.end();
    await once(this.stream, 'close');
    if (this.failure !== null) throw this.failure;
    await rename(this.temp, this.path);
  }

  /** Drops the temp file (the run failed). */
  async abort(): Promise<void> {
    this.stream.destroy();
    await rm(this.temp, { force: true });
  }
}
