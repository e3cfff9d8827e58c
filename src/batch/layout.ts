// Which columns of an input file feed the model and which are copied to the output: binds the file's
// column names (a CSV header, or the keys of the first JSONL object) to the model's feature list
// from model.yaml, or, for a model without one, takes every non-id column in file order.

import { badRequest } from '../errors.js';

export interface InputColumns {
  /** model.yaml `features`: the input's columns in order; null when the model has none. */
  readonly features: readonly string[] | null;
  /** The input's declared width (shape[1]); -1 when dynamic. */
  readonly width: number;
  /** Columns copied to the output, in order. */
  readonly idColumns: readonly string[];
}

export interface ColumnBinding {
  /** The model input's column names, in input order. */
  readonly featureNames: readonly string[];
  /** Per file column: the input column it fills, or -1. */
  readonly featureOf: Int32Array;
  /** Per file column: the id column it is, or -1. */
  readonly idOf: Int32Array;
}

/** Binds file columns to model columns; throws a 400 naming every column the file lacks. */
export function bindColumns(names: readonly string[], cols: InputColumns, source: string): ColumnBinding {
  const position = new Map<string, number>();
  const duplicates = new Set<string>();
  names.forEach((n, i) => {
    if (position.has(n)) duplicates.add(n);
    else position.set(n, i);
  });
  const ids = new Set(cols.idColumns);
  const featureNames = cols.features ?? names.filter((n) => !ids.has(n));
  if (cols.features === null && cols.width > 0 && featureNames.length !== cols.width) {
    throw badRequest(
      `${source} has ${featureNames.length} columns besides the id columns, but the model's input has ${cols.width} ` +
        `and its model.yaml lists no features to pick them by name`,
    );
  }
  if (featureNames.length === 0) throw badRequest(`${source} has no columns to feed the model besides the id columns`);
  const missingFeatures = featureNames.filter((n) => !position.has(n));
  if (missingFeatures.length > 0) {
    throw badRequest(`${source} lacks the model's feature column${missingFeatures.length > 1 ? 's' : ''}: ${missingFeatures.join(', ')}`);
  }
  const missingIds = cols.idColumns.filter((n) => !position.has(n));
  if (missingIds.length > 0) throw badRequest(`${source} has no id column${missingIds.length > 1 ? 's' : ''} ${missingIds.join(', ')}`);
  const ambiguous = [...duplicates].filter((n) => featureNames.includes(n) || ids.has(n));
  if (ambiguous.length > 0)
    throw badRequest(`${source} names column${ambiguous.length > 1 ? 's' : ''} ${ambiguous.join(', ')} more than once`);

  const featureOf = new Int32Array(names.length).fill(-1);
  const idOf = new Int32Array(names.length).fill(-1);
  featureNames.forEach((n, j) => {
    featureOf[position.get(n)!] = j;
  });
  cols.idColumns.forEach((n, k) => {
    idOf[position.get(n)!] = k;
  });
  return { featureNames, featureOf, idOf };
}
