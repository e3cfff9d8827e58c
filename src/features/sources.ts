// Offline sources: reading a source file (CSV with a header, or JSONL) row by row in constant
// memory, turning each row into the stored-group values of the features fed by that source (with
// the row's event timestamp), and materializing them into an online store in pipelined batches.
// CSV is read by the one CSV reader (src/csv.ts), so a file batch scoring accepts is accepted here.

import { createReadStream, statSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { CsvRecords, type CsvRecord } from '../csv.js';
import type { FeatureValue } from './codec.js';
import type { FeatureDef, SourceDef } from './types.js';
import type { FeatureRegistry, StoredGroup } from './plan.js';
import type { GroupWrite, OnlineStore } from './store.js';

export interface SourceRow {
  line: number;
  row: Record<string, unknown> | null;
  error?: string;
  /** Bytes of the file read so far (up to the end of this row's chunk). */
  bytes: number;
}

/** Longest CSV record of a source file; a longer one is rejected (and memory stays bounded). */
const MAX_SOURCE_RECORD_BYTES = 1024 * 1024;

/**
 * Rows of a CSV (header line first) or JSONL file as records of raw values, with line numbers, in
 * batches: one per chunk read from the file, so that a caller's loop does not wait once per row
 * (at millions of rows, a promise per row costs more than parsing it).
 */
export function readRowBatches(path: string, format: 'csv' | 'jsonl'): AsyncGenerator<SourceRow[]> {
  return format === 'csv' ? csvRowBatches(path) : jsonlRowBatches(path);
}

async function* csvRowBatches(path: string): AsyncGenerator<SourceRow[]> {
  const reader = new CsvRecords(path, MAX_SOURCE_RECORD_BYTES);
  let bytes = 0;
  const rows = (records: CsvRecord[]): SourceRow[] =>
    records.map((r) => {
      if (r.fields === null) return { line: r.line, row: null, error: r.error, bytes };
      // A record exists only after the header line.
      const header = reader.header!;
      if (r.fields.length !== header.length)
        return { line: r.line, row: null, error: `${r.fields.length} fields, the header has ${header.length}`, bytes };
      const row: Record<string, unknown> = {};
      for (let i = 0; i < header.length; i++) row[header[i]!] = r.fields[i];
      return { line: r.line, row, bytes };
    });
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    bytes += (chunk as Buffer).length;
    reader.push(chunk as Buffer);
    const out = rows(reader.take());
    if (out.length > 0) yield out;
  }
  reader.end();
  const out = rows(reader.take());
  if (out.length > 0) yield out;
}

/** JSON Lines: one object per line; lines end with \n, \r\n or \r. */
async function* jsonlRowBatches(path: string): AsyncGenerator<SourceRow[]> {
  const decoder = new StringDecoder('utf8');
  let n = 0;
  let bytes = 0;
  let rest = '';
  const parse = (line: string, out: SourceRow[]): void => {
    n++;
    if (line.trim() === '') return;
    try {
      const v = JSON.parse(line) as unknown;
      if (v === null || typeof v !== 'object' || Array.isArray(v)) out.push({ line: n, row: null, error: 'not a JSON object', bytes });
      else out.push({ line: n, row: v as Record<string, unknown>, bytes });
    } catch (e) {
      out.push({ line: n, row: null, error: `invalid JSON: ${(e as Error).message}`, bytes });
    }
  };
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    bytes += (chunk as Buffer).length;
    const text = rest + decoder.write(chunk as Buffer);
    // A \r at the end may be the first half of a \r\n split across chunks: keep it for the next.
    const keep = text.endsWith('\r') ? 1 : 0;
    const lines = text.slice(0, text.length - keep).split(/\r\n|\n|\r/);
    rest = lines.pop()! + (keep ? '\r' : '');
    const out: SourceRow[] = [];
    for (const line of lines) parse(line, out);
    if (out.length > 0) yield out;
  }
  rest += decoder.end();
  const out: SourceRow[] = [];
  for (const line of rest.split(/\r\n|\n|\r/)) if (line !== '') parse(line, out);
  if (out.length > 0) yield out;
}

/** readRowBatches one row at a time. */
export async function* readRows(path: string, format: 'csv' | 'jsonl'): AsyncGenerator<SourceRow> {
  for await (const batch of readRowBatches(path, format)) yield* batch;
}

/** Epoch ms from an ISO date/time string or a number of epoch milliseconds. */
export function parseTimestamp(v: unknown): number | null {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v !== 'string' || v === '') return null;
  if (/^\d+$/.test(v)) return Number(v);
  const ms = Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(v) ? `${v}T00:00:00Z` : v);
  return Number.isNaN(ms) ? null : ms;
}

function parseValue(def: FeatureDef, raw: unknown): number | boolean | null | undefined {
  if (raw === undefined) return undefined;
  if (raw === null || raw === '') return null;
  if (def.dtype === 'bool') {
    if (raw === true || raw === 'true' || raw === '1' || raw === 1) return true;
    if (raw === false || raw === 'false' || raw === '0' || raw === 0) return false;
    return undefined;
  }
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' ? Number(raw) : NaN;
  if (!Number.isFinite(n)) return undefined;
  if ((def.dtype === 'int64' || def.dtype === 'int32') && !Number.isInteger(n)) return undefined;
  return def.dtype === 'float32' ? Math.fround(n) : n;
}

interface SourceFeeds {
  readonly group: StoredGroup;
  readonly features: readonly FeatureDef[];
}

/** The groups a source writes into, and which of their features come from it. */
export function feedsOf(registry: FeatureRegistry, source: SourceDef): SourceFeeds[] {
  const byGroup = new Map<StoredGroup, FeatureDef[]>();
  for (const f of registry.features) {
    if (f.source?.name !== source.name) continue;
    const g = registry.groupOf(f.ref)!.group;
    byGroup.set(g, [...(byGroup.get(g) ?? []), f]);
  }
  return [...byGroup].map(([group, features]) => ({ group, features }));
}

export interface MaterializeProgress {
  rows: number;
  written: number;
  rejected: number;
  bytesRead: number;
  bytesTotal: number;
}

export interface MaterializeResult extends MaterializeProgress {
  source: string;
  seconds: number;
  /** The first rejected rows with their reasons (at most 100 kept). */
  rejects: { line: number; reason: string }[];
}

/**
 * Writes every row of a source file into the store (batches of `batchRows`, each one pipelined
 * round trip), keeping each value's event timestamp: the row's timestampColumn, else the file's
 * modification time. Rows with a bad id, timestamp or value are rejected with their line number.
 */
export async function materializeSource(
  registry: FeatureRegistry,
  source: SourceDef,
  store: OnlineStore,
  opts: { file?: string; batchRows?: number; onProgress?: (p: MaterializeProgress) => void } = {},
): Promise<MaterializeResult> {
  const file = opts.file ?? source.path;
  const format = /\.(jsonl|ndjson)$/i.test(file) ? 'jsonl' : /\.csv$/i.test(file) ? 'csv' : source.format;
  const bytesTotal = statSync(file).size;
  const fallbackTs = Math.round(statSync(file).mtimeMs);
  const entity = registry.entities.get(source.entity)!;
  const feeds = feedsOf(registry, source);
  const batchRows = opts.batchRows ?? 1000;
  const t0 = performance.now();
  const progress: MaterializeProgress = { rows: 0, written: 0, rejected: 0, bytesRead: 0, bytesTotal };
  const rejects: { line: number; reason: string }[] = [];
  const reject = (line: number, reason: string) => {
    progress.rejected++;
    if (rejects.length < 100) rejects.push({ line, reason });
  };
  let batch: GroupWrite[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await store.writeGroups(batch);
    progress.written += batch.length;
    batch = [];
    opts.onProgress?.(progress);
  };
  /** A row's group writes, or why it is rejected. */
  const writesOf = (row: Record<string, unknown>): GroupWrite[] | string => {
    let id: string;
    try {
      id = registry.entityId(entity.name, row);
    } catch (e) {
      return (e as Error).message;
    }
    let ts = fallbackTs;
    if (source.timestampColumn !== null) {
      const parsed = parseTimestamp(row[source.timestampColumn]);
      if (parsed === null) return `${source.timestampColumn}: not a timestamp (${JSON.stringify(row[source.timestampColumn])})`;
      ts = parsed;
    }
    const writes: GroupWrite[] = [];
    for (const feed of feeds) {
      const values: Record<string, FeatureValue> = {};
      for (const f of feed.features) {
        const column = f.column ?? f.name;
        const v = parseValue(f, row[column]);
        if (v === undefined)
          return row[column] === undefined
            ? `column '${column}' is missing`
            : `${column}: ${JSON.stringify(row[column])} is not a ${f.dtype}`;
        values[f.name] = { value: v, eventTs: ts };
      }
      writes.push({ group: feed.group, id, values });
    }
    return writes;
  };
  for await (const rows of readRowBatches(file, format)) {
    for (const { line, row, error, bytes } of rows) {
      progress.rows++;
      progress.bytesRead = Math.min(bytes, bytesTotal);
      const writes = row === null ? error! : writesOf(row);
      if (typeof writes === 'string') {
        reject(line, writes);
        continue;
      }
      for (const w of writes) batch.push(w);
      if (batch.length >= batchRows) await flush();
    }
  }
  await flush();
  progress.bytesRead = bytesTotal;
  opts.onProgress?.(progress);
  return { ...progress, source: source.name, seconds: (performance.now() - t0) / 1000, rejects };
}
