// Where exported predictions go: JSON Lines, CSV (the batch scorer's cell quoting) or Parquet, each
// written through a file that appears under its name only once the export succeeded. Values that
// are not numbers in the log (a score or an input that was not finite, no label) are null in every
// format; times are UTC, ISO 8601 with milliseconds in text, TIMESTAMP(MILLIS, UTC) in Parquet.

import { ByteWriter, ParquetWriter, type SchemaElement } from 'hyparquet-writer';
import { csvCell, FileSink } from '../batch/index.js';
import type { PredictionChunk } from '../monitoring/index.js';
import pkg from '../version.js';
import { FIXED_COLUMNS, type ExportLayout } from './layout.js';

export type ExportFormat = 'parquet' | 'jsonl' | 'csv';
export const EXPORT_FORMATS: readonly ExportFormat[] = ['parquet', 'jsonl', 'csv'];

export interface RowSink {
  write(chunk: PredictionChunk): Promise<void>;
  /** Writes what is buffered and the file's end, then moves the file into place. */
  commit(): Promise<void>;
  /** Drops the partial file. */
  abort(): Promise<void>;
}

// x - x is 0 for every finite number and NaN for NaN and the infinities.
const isNumber = (x: number): boolean => x - x === 0;
const orNull = (x: number): number | null => (isNumber(x) ? x : null);
const isoOrNull = (ms: number): string | null => (isNumber(ms) ? new Date(ms).toISOString() : null);
/** JSON text of a number: the shortest decimal that reads back as the same double, or null. */
const jsonNumber = (x: number): string => (isNumber(x) ? String(x) : 'null');
/** CSV cell of a number; empty for none. */
const csvNumber = (x: number): string => (isNumber(x) ? String(x) : '');

class TextSink implements RowSink {
  private readonly keys: string[];

  private constructor(
    private readonly file: FileSink,
    private readonly layout: ExportLayout,
    private readonly json: boolean,
  ) {
    this.keys = [...FIXED_COLUMNS, ...layout.features].map((k, i) => `${i === 0 ? '{' : ','}${JSON.stringify(k)}:`);
  }

  static async open(path: string, layout: ExportLayout, json: boolean): Promise<TextSink> {
    const file = await FileSink.open(path);
    const sink = new TextSink(file, layout, json);
    if (!json) await file.write(`${[...FIXED_COLUMNS, ...layout.features].map(csvCell).join(',')}\n`);
    return sink;
  }

  async write(c: PredictionChunk): Promise<void> {
    const sources = this.layout.sources.get(c.version)!;
    const model = this.json ? JSON.stringify(c.model) : csvCell(c.model);
    const variant = this.json ? JSON.stringify(c.variant) : csvCell(c.variant);
    const keys = this.keys;
    let text = '';
    for (let r = 0; r < c.rows; r++) {
      const id = c.requestIds[r] ?? null;
      const ts = isoOrNull(c.ts[r]!);
      const labelled = isoOrNull(c.labelledAt[r]!);
      const at = r * c.width;
      if (this.json) {
        let line =
          `${keys[0]}${JSON.stringify(id)}${keys[1]}${JSON.stringify(ts)}${keys[2]}${model}${keys[3]}${c.version}${keys[4]}${variant}` +
          `${keys[5]}${jsonNumber(c.scores[r]!)}${keys[6]}${jsonNumber(c.labels[r]!)}${keys[7]}${JSON.stringify(labelled)}`;
        for (let f = 0; f < sources.length; f++) {
          const j = sources[f]!;
          line += keys[8 + f] + (j < 0 ? 'null' : jsonNumber(c.features[at + j]!));
        }
        text += `${line}}\n`;
      } else {
        let line = `${csvCell(id)},${ts ?? ''},${model},${c.version},${variant},${csvNumber(c.scores[r]!)},${csvNumber(c.labels[r]!)},${labelled ?? ''}`;
        for (let f = 0; f < sources.length; f++) {
          const j = sources[f]!;
          line += j < 0 ? ',' : `,${csvNumber(c.features[at + j]!)}`;
        }
        text += `${line}\n`;
      }
    }
    await this.file.write(text);
  }

  commit(): Promise<void> {
    return this.file.commit();
  }

  abort(): Promise<void> {
    return this.file.abort();
  }
}

/** hyparquet-writer's byte writer, handing each finished row group to the file and starting over. */
class RowGroupWriter extends ByteWriter {
  constructor(private readonly file: FileSink) {
    super(1 << 20);
  }

  flush(): Promise<void> {
    const bytes = this.getBytes().slice();
    this.index = 0;
    return this.file.write(bytes);
  }

  override finish(): Promise<void> {
    return this.flush();
  }
}

const STRING = { type: 'BYTE_ARRAY', converted_type: 'UTF8', logical_type: { type: 'STRING' } } as const;
const TIMESTAMP = {
  type: 'INT64',
  converted_type: 'TIMESTAMP_MILLIS',
  logical_type: { type: 'TIMESTAMP', isAdjustedToUTC: true, unit: 'MILLIS' },
} as const;

/** The Parquet schema of an export: flat, one leaf per column. */
export function parquetSchema(layout: ExportLayout): SchemaElement[] {
  const req = 'REQUIRED' as const;
  const opt = 'OPTIONAL' as const;
  return [
    { name: 'root', num_children: FIXED_COLUMNS.length + layout.features.length },
    { name: 'request_id', ...STRING, repetition_type: opt },
    { name: 'ts', ...TIMESTAMP, repetition_type: req },
    { name: 'model', ...STRING, repetition_type: req },
    { name: 'version', type: 'INT32', repetition_type: req },
    { name: 'variant', ...STRING, repetition_type: req },
    { name: 'score', type: 'DOUBLE', repetition_type: opt },
    { name: 'label', type: 'DOUBLE', repetition_type: opt },
    { name: 'labelled_at', ...TIMESTAMP, repetition_type: opt },
    ...layout.features.map((name) => ({ name, type: 'FLOAT' as const, repetition_type: opt })),
  ];
}

/** Rows per Parquet row group: ~10-30 MB of column buffers for a few dozen features. */
export const DEFAULT_ROW_GROUP_ROWS = 65_536;

class ParquetSink implements RowSink {
  private readonly writer: ParquetWriter;
  private columns: unknown[][] = [];
  private rows = 0;

  constructor(
    private readonly file: FileSink,
    private readonly layout: ExportLayout,
    private readonly groupRows: number,
    metadata: Record<string, string>,
  ) {
    this.writer = new ParquetWriter({
      writer: new RowGroupWriter(file),
      schema: parquetSchema(layout),
      kvMetadata: Object.entries(metadata).map(([key, value]) => ({ key, value })),
      createdBy: `scoreline ${pkg.version}`,
    });
    this.reset();
  }

  private reset(): void {
    this.columns = Array.from({ length: FIXED_COLUMNS.length + this.layout.features.length }, () => []);
    this.rows = 0;
  }

  async write(c: PredictionChunk): Promise<void> {
    const sources = this.layout.sources.get(c.version)!;
    let cols = this.columns;
    for (let r = 0; r < c.rows; r++) {
      cols[0]!.push(c.requestIds[r] ?? null);
      cols[1]!.push(BigInt(Math.round(c.ts[r]!)));
      cols[2]!.push(c.model);
      cols[3]!.push(c.version);
      cols[4]!.push(c.variant);
      cols[5]!.push(orNull(c.scores[r]!));
      cols[6]!.push(orNull(c.labels[r]!));
      const at = c.labelledAt[r]!;
      cols[7]!.push(isNumber(at) ? BigInt(Math.round(at)) : null);
      const base = r * c.width;
      for (let f = 0; f < sources.length; f++) {
        const j = sources[f]!;
        cols[8 + f]!.push(j < 0 ? null : orNull(c.features[base + j]!));
      }
      if (++this.rows >= this.groupRows) {
        await this.writeGroup();
        cols = this.columns;
      }
    }
  }

  private async writeGroup(): Promise<void> {
    if (this.rows === 0) return;
    const names = [...FIXED_COLUMNS, ...this.layout.features];
    const columnData = names.map((name, i) => ({ name, data: this.columns[i]! as never }));
    const rows = this.rows;
    this.reset();
    await this.writer.write({ columnData, rowGroupSize: rows });
  }

  async commit(): Promise<void> {
    await this.writeGroup();
    await this.writer.finish();
    await this.file.commit();
  }

  abort(): Promise<void> {
    return this.file.abort();
  }
}

export async function openSink(
  format: ExportFormat,
  path: string,
  layout: ExportLayout,
  options: { rowGroupRows?: number; metadata?: Record<string, string> } = {},
): Promise<RowSink> {
  if (format !== 'parquet') return TextSink.open(path, layout, format === 'jsonl');
  return new ParquetSink(await FileSink.open(path), layout, options.rowGroupRows ?? DEFAULT_ROW_GROUP_ROWS, options.metadata ?? {});
}
