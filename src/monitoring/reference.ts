// The drift reference of a model version, frozen from reference data: the
// score bins from the version's own scores on the reference rows, bins per input feature
// (categories for non-numeric columns), and the reference AUC when the data has labels. Stored as
// JSON in the registry; rebuilt into Baselines for the windowed statistics.

import { numericBaseline, categoricalBaseline, parseBaseline, type DriftBaseline, type NumericBaseline } from './drift.js';
import { auc } from './metrics.js';
import { splitCsvLine } from '../features/sources.js';
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
}

/** A CSV (header first) as columns of raw strings; quoted fields may not span lines. */
export function parseCsvTable(text: string): ReferenceTable {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines.length < 2) throw new RangeError('reference CSV needs a header and at least one row');
  const columns = splitCsvLine(lines[0]!).map((c) => c.trim());
  const values: unknown[][] = columns.map(() => []);
  for (let r = 1; r < lines.length; r++) {
    const f = splitCsvLine(lines[r]!);
    if (f.length !== columns.length)
      throw new RangeError(`reference CSV line ${r + 1} has ${f.length} fields, the header ${columns.length}`);
    for (let c = 0; c < columns.length; c++) values[c]!.push(f[c]);
  }
  return { columns, values };
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
