// The columns of a prediction export: the fixed ones every row has, then one per model input
// feature. Versions of a model may log different features: the export's feature columns are their
// union (in version order), and a row has null where its version has no such feature.

/** Columns every exported row has, in order. */
export const FIXED_COLUMNS = ['request_id', 'ts', 'model', 'version', 'variant', 'score', 'label', 'labelled_at'] as const;

export interface ExportLayout {
  /** Feature column names, after the fixed columns. */
  readonly features: readonly string[];
  /** For each version: for each feature column, the logged input it comes from (-1: the version has none). */
  readonly sources: ReadonlyMap<number, Int32Array>;
  /** Things the reader of the file should know (renamed columns, unnamed inputs). */
  readonly warnings: readonly string[];
}

/**
 * Lays out the feature columns of the versions in an export. `names` gives a version's feature names
 * (its model.yaml `features`, as registered), or null when the registry does not know them; a
 * version whose names do not match what it logged gets input_0, input_1, ...
 */
export function layoutOf(widths: ReadonlyMap<number, number>, names: (version: number) => readonly string[] | null): ExportLayout {
  const warnings: string[] = [];
  const columns: string[] = [];
  const columnOf = new Map<string, number>();
  const taken = new Set<string>(FIXED_COLUMNS);
  const perVersion = new Map<number, string[]>();
  for (const [version, width] of [...widths].sort((a, b) => a[0] - b[0])) {
    if (width === 0) {
      perVersion.set(version, []);
      continue;
    }
    let own = names(version);
    if (own === null || own.length !== width) {
      warnings.push(
        own === null
          ? `version ${version}: the registry does not name its ${width} logged inputs; exported as input_0..input_${width - 1}`
          : `version ${version}: logged ${width} inputs but its model.yaml names ${own.length} features; exported as input_0..input_${width - 1}`,
      );
      own = Array.from({ length: width }, (_, j) => `input_${j}`);
    }
    for (const name of own) {
      if (columnOf.has(name)) continue;
      let column = name;
      if (taken.has(column)) {
        // A feature called like a fixed column (a feature named "score") keeps its values under another name.
        column = `feature_${name}`;
        while (taken.has(column)) column = `_${column}`;
        warnings.push(`feature '${name}' is exported as column '${column}' ('${name}' is taken by another column)`);
      }
      columnOf.set(name, columns.length);
      columns.push(column);
      taken.add(column);
    }
    perVersion.set(version, [...own]);
  }
  const sources = new Map<number, Int32Array>();
  for (const [version, own] of perVersion) {
    const map = new Int32Array(columns.length).fill(-1);
    own.forEach((name, j) => {
      map[columnOf.get(name)!] = j;
    });
    sources.set(version, map);
  }
  return { features: columns, sources, warnings };
}
