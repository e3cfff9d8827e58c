// Training data for a retraining job, as plain functions (they run in the job's child process,
// ./worker.ts): data files found by glob, read into a numeric matrix in the model's input order,
// with features a file lacks computed by the same feature definitions the server uses to serve them
// (so training and serving cannot disagree on a derived feature); rows from the prediction log
// joined with their labels; and the out-of-time split on the time column.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, sep } from 'node:path';
import type { FeatureDef } from '../features/definitions.js';
import { castToDtype, type FeatureRegistry } from '../features/plan.js';
import { parseCsvTable } from '../monitoring/reference.js';

/** Rows in the model's input order: X is row-major n x p. */
export interface Rows {
  n: number;
  p: number;
  X: Float64Array;
  y: Float64Array;
  /** Epoch milliseconds. */
  t: Float64Array;
}

export interface FileReport {
  path: string;
  rows: number;
  skipped: number;
  /** The first few reasons rows were skipped. */
  reasons: string[];
  computed: string[];
}

const hasGlob = (s: string) => /[*?[]/.test(s);

function segmentRegex(seg: string): RegExp {
  let re = '';
  for (const c of seg) re += c === '*' ? '[^/]*' : c === '?' ? '[^/]' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${re}$`);
}

/** Files matching an absolute path or glob (`*`, `?` within segments), sorted. */
export function expandGlob(pattern: string): string[] {
  if (!hasGlob(pattern)) {
    try {
      return statSync(pattern).isFile() ? [pattern] : [];
    } catch {
      return [];
    }
  }
  const parts = pattern.split(sep);
  let bases = [parts[0] === '' ? sep : parts[0]!];
  for (let i = 1; i < parts.length; i++) {
    const seg = parts[i]!;
    const last = i === parts.length - 1;
    const next: string[] = [];
    for (const base of bases) {
      if (!hasGlob(seg)) {
        next.push(join(base, seg));
        continue;
      }
      const re = segmentRegex(seg);
      let entries: string[];
      try {
        entries = readdirSync(base);
      } catch {
        continue;
      }
      for (const e of entries.sort()) if (re.test(e)) next.push(join(base, e));
    }
    bases = next;
    if (last)
      return bases.filter((p) => {
        try {
          return statSync(p).isFile();
        } catch {
          return false;
        }
      });
  }
  return bases;
}

/** ISO date, ISO date-time, or epoch milliseconds; NaN when unreadable. */
export function parseTime(v: unknown): number {
  if (typeof v === 'number') return v;
  const s = String(v ?? '').trim();
  if (s === '') return NaN;
  if (/^\d{9,}$/.test(s)) return Number(s);
  if (/^\d{4}-\d{2}-\d{2}$/.test(s)) return Date.parse(`${s}T00:00:00Z`);
  return Date.parse(s);
}

/** How each model column gets its value from a row of a data file. */
export type ColumnSource = { kind: 'column'; name: string } | { kind: 'computed'; def: FeatureDef };

/**
 * Plans the model's columns against a file's header: its own column when present, else the feature
 * definition that computes it (the model.yaml binding's, else the feature of the same name). Throws
 * naming the column that neither provides.
 */
export function planColumns(
  features: readonly string[],
  header: readonly string[],
  defs: FeatureRegistry | null,
  bindings: Readonly<Record<string, string>> = {},
): ColumnSource[] {
  const have = new Set(header);
  return features.map((name) => {
    if (have.has(name)) return { kind: 'column', name };
    const bound = bindings[name];
    if (bound?.startsWith('request.') && have.has(bound.slice(8))) return { kind: 'column', name: bound.slice(8) };
    const ref = bound !== undefined && !bound.startsWith('request.') ? bound : name;
    const def = defs?.get(ref);
    if (def === undefined || (def.expression === null && def.module === null)) {
      throw new Error(
        `training data has no column '${name}'${def ? ` and feature ${def.ref} is not computed from other values` : defs ? ' and no feature definition computes it' : ' (and no feature definitions are loaded to compute it)'}`,
      );
    }
    if (def.expression === null)
      throw new Error(`feature ${def.ref} is computed by a module function; training files must carry column '${name}'`);
    return { kind: 'computed', def };
  });
}

const num = (v: unknown): number => {
  if (typeof v === 'number') return v;
  const s = String(v ?? '').trim();
  return s === '' ? NaN : Number(s);
};

/** A computed feature's value for one row: its dependencies from the row's columns (or computed). */
function computeFeature(def: FeatureDef, row: (col: string) => number, defs: FeatureRegistry, depth = 0): number {
  if (depth > 32) throw new Error(`feature ${def.ref}: dependencies nest too deep`);
  const values: Record<string, number> = {};
  for (const d of def.dependsOn) {
    if (d.kind === 'request') values[d.variable] = row(d.field);
    else {
      const dep = defs.get(d.ref)!;
      const own = row(dep.name);
      values[d.variable] = !Number.isNaN(own) || dep.expression === null ? own : computeFeature(dep, row, defs, depth + 1);
    }
  }
  const v = castToDtype(def.dtype, def.expression!.evaluate(values));
  return typeof v === 'boolean' ? (v ? 1 : 0) : v;
}

/** Reads one data file into rows (model column order); bad rows are skipped with a reason, not guessed. */
export function readDataFile(
  path: string,
  opts: {
    features: readonly string[];
    label: string;
    timeColumn: string;
    defs: FeatureRegistry | null;
    bindings?: Readonly<Record<string, string>>;
  },
): { rows: { x: number[]; y: number; t: number }[]; report: FileReport } {
  const table = parseCsvTable(readFileSync(path), basename(path));
  const col = (name: string) => {
    const i = table.columns.indexOf(name);
    return i < 0 ? null : table.values[i]!;
  };
  const labels = col(opts.label);
  if (labels === null) throw new Error(`${basename(path)} has no label column '${opts.label}'`);
  const times = col(opts.timeColumn);
  if (times === null) throw new Error(`${basename(path)} has no time column '${opts.timeColumn}'`);
  const plan = planColumns(opts.features, table.columns, opts.defs, opts.bindings);
  const n = labels.length;
  const rows: { x: number[]; y: number; t: number }[] = [];
  const reasons: string[] = [];
  let skipped = 0;
  const skip = (r: number, why: string) => {
    skipped++;
    if (reasons.length < 5) reasons.push(`line ${table.lines[r]}: ${why}`);
  };
  const index = new Map(table.columns.map((c, i) => [c, i]));
  for (let r = 0; r < n; r++) {
    const y = num(labels[r]);
    if (y !== 0 && y !== 1) {
      skip(r, `label ${JSON.stringify(labels[r])} is not 0 or 1`);
      continue;
    }
    const t = parseTime(times[r]);
    if (Number.isNaN(t)) {
      skip(r, `time ${JSON.stringify(times[r])} is not a date`);
      continue;
    }
    const cell = (c: string) => {
      const i = index.get(c);
      return i === undefined ? NaN : num(table.values[i]![r]);
    };
    const x: number[] = [];
    let bad: string | null = null;
    for (let j = 0; j < plan.length; j++) {
      const s = plan[j]!;
      const v = s.kind === 'column' ? cell(s.name) : computeFeature(s.def, cell, opts.defs!);
      if (!Number.isFinite(v)) {
        bad = `${opts.features[j]} is ${s.kind === 'column' ? JSON.stringify(table.values[index.get(s.name)!]![r]) : 'not computable from the row'}`;
        break;
      }
      x.push(v);
    }
    if (bad !== null) {
      skip(r, bad);
      continue;
    }
    rows.push({ x, y, t });
  }
  return {
    rows,
    report: {
      path,
      rows: rows.length,
      skipped,
      reasons,
      computed: plan.flatMap((s, j) => (s.kind === 'computed' ? [`${opts.features[j]} (${s.def.ref})`] : [])),
    },
  };
}

export function toRows(list: readonly { x: readonly number[]; y: number; t: number }[], p: number): Rows {
  const n = list.length;
  const X = new Float64Array(n * p);
  const y = new Float64Array(n);
  const t = new Float64Array(n);
  list.forEach((r, i) => {
    X.set(r.x, i * p);
    y[i] = r.y;
    t[i] = r.t;
  });
  return { n, p, X, y, t };
}

export interface Split {
  train: Rows;
  validation: Rows;
  /** Rows at or after this time are validation. */
  cut: number;
}

function pick(rows: Rows, idx: readonly number[]): Rows {
  const { p } = rows;
  const X = new Float64Array(idx.length * p);
  const y = new Float64Array(idx.length);
  const t = new Float64Array(idx.length);
  idx.forEach((i, k) => {
    X.set(rows.X.subarray(i * p, (i + 1) * p), k * p);
    y[k] = rows.y[i]!;
    t[k] = rows.t[i]!;
  });
  return { n: idx.length, p, X, y, t };
}

/**
 * Out-of-time split: train on the older rows, validate on the latest, by time. A fraction holds out
 * the latest share of rows (rows sharing the boundary time stay together, on the validation side);
 * a window holds out the rows within that span of the newest row.
 */
export function ootSplit(rows: Rows, oot: { fraction: number } | { windowMs: number }): Split {
  if (rows.n === 0) return { train: pick(rows, []), validation: pick(rows, []), cut: NaN };
  const order = Array.from({ length: rows.n }, (_, i) => i).sort((a, b) => rows.t[a]! - rows.t[b]! || a - b);
  let cut: number;
  if ('fraction' in oot) {
    const k = Math.max(1, Math.ceil(rows.n * oot.fraction));
    cut = rows.t[order[rows.n - k]!]!;
  } else {
    cut = rows.t[order[rows.n - 1]!]! - oot.windowMs;
  }
  const train: number[] = [];
  const validation: number[] = [];
  for (const i of order) ('fraction' in oot ? rows.t[i]! >= cut : rows.t[i]! > cut) ? validation.push(i) : train.push(i);
  return { train: pick(rows, train), validation: pick(rows, validation), cut };
}

/** Rows as CSV with a header (features, label, time as ISO), for external trainers. */
export function rowsToCsv(rows: Rows, features: readonly string[], label: string, timeColumn: string): string {
  const lines = [[...features, label, timeColumn].join(',')];
  for (let i = 0; i < rows.n; i++) {
    const x = Array.from(rows.X.subarray(i * rows.p, (i + 1) * rows.p), (v) => String(v));
    lines.push([...x, String(rows.y[i]), new Date(rows.t[i]!).toISOString()].join(','));
  }
  return `${lines.join('\n')}\n`;
}
