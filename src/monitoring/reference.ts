// The drift reference of a model version, frozen from reference data: the
// score bins from the version's own scores on the reference rows, bins per input feature
// (categories for non-numeric columns), and the reference AUC when the data has labels. Stored as
// JSON in the registry; rebuilt into Baselines for the windowed statistics.

import { numericBaseline, categoricalBaseline, parseBaseline, type DriftBaseline, type NumericBaseline } from './drift.js';
import { auc } from './metrics.js';
import { parseCsv } from '../csv.js';
import type { Baselines } from './buckets.js';

export interface ReferenceRecord {
  readonly rows: number;
  readonly score: NumericBaseline;
  readonly features: readonly { readonly name: string; readonly baseline: DriftBaseline }[];
  readonly referenceAuc: number | null;
  readonly label: string | null;
  readonly frozenAt: string;
}

export interface ReferenceTable {
  readonly columns: readonly string[];
  /** Raw cell values per column. */
  readonly values: readonly (readonly unknown[])[];
  /** The line number of each row in its file (blank lines and fields over several lines counted). */
  readonly lines: readonly number[];
}

/**
 * A CSV (header first, read by the one CSV reader) as columns of raw strings, with each row's line
 * number in the text. A row that cannot be read, or has another number of fields than the header,
 * refuses the whole table: a reference is a whole sample, not a best effort.
 */
export function parseCsvTable(text: string | Buffer, what = 'reference CSV'): ReferenceTable {
  const { header, records } = parseCsv(text, what);
  if (header === null || records.length === 0) throw new RangeError(`${what} needs a header and at least one row`);
  const columns = header;
  const values: unknown[][] = columns.map(() => []);
  const lines: number[] = [];
  for (const r of records) {
    if (r.fields === null) throw new RangeError(`${what} line ${r.line}: ${r.error}`);
    const f = r.fields;
    if (f.length !== columns.length) throw new RangeError(`${what} line ${r.line} has ${f.length} fields, the header ${columns.length}`);
    for (let c = 0; c < columns.length; c++) values[c]!.push(f[c]);
    lines.push(r.line);
  }
  return { columns, values, lines };
}

const numeric = (v: unknown): number | null => {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v !== 'string' || v.trim() === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
};

/** Column values as numbers when every non-empty value is one, else null (categorical). */
export function numericColumn(values: readonly unknown[]): (number | null)[] | null {
  const out: (number | null)[] = [];
  for (const v of values) {
    const n = numeric(v);
    if (n === null && !(v === '' || v === null || v === undefined)) return null;
    out.push(n);
  }
  return out;
}

/**
 * `categorical` names the features that are categories whatever their values look like (a BYTES
 * input: "1" and "2" are purposes, not numbers); any other column is categorical when a value is not a number.
 */
export function freezeReference(
  features: readonly string[],
  table: ReferenceTable,
  scores: ArrayLike<number>,
  label: string | null,
  categorical: ReadonlySet<string> = NO_NAMES,
): ReferenceRecord {
  const col = (name: string) => {
    const i = table.columns.indexOf(name);
    if (i < 0) throw new RangeError(`reference data has no column '${name}' (columns: ${table.columns.join(', ')})`);
    return table.values[i]!;
  };
  const feats = features.map((name) => {
    const raw = col(name);
    const nums = categorical.has(name) ? null : numericColumn(raw);
    return { name, baseline: nums !== null ? (numericBaseline(nums) as DriftBaseline) : categoricalBaseline(raw as string[]) };
  });
  let referenceAuc: number | null = null;
  if (label !== null && table.columns.includes(label)) {
    const labels = (numericColumn(col(label)) ?? []).map((x) => x ?? NaN);
    referenceAuc = auc(scores, labels);
  }
  return { rows: scores.length, score: numericBaseline(scores), features: feats, referenceAuc, label, frozenAt: new Date().toISOString() };
}

const NO_NAMES: ReadonlySet<string> = new Set();

export function baselinesOf(record: unknown): Baselines | null {
  if (record === null || typeof record !== 'object') return null;
  const r = record as ReferenceRecord;
  try {
    return {
      score: parseBaseline(r.score) as NumericBaseline,
      features: (r.features ?? []).map((f) => ({ name: f.name, baseline: parseBaseline(f.baseline) })),
      referenceAuc: typeof r.referenceAuc === 'number' ? r.referenceAuc : null,
      rows: r.rows ?? 0,
    };
  } catch {
    return null;
  }
}
