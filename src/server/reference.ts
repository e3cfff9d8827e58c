// Freezing a version's drift reference: the reference rows (model.yaml `reference`, a CSV next to
// the version's model folder, or a CSV sent to the admin API) are scored by that version through
// its own batcher (as internal requests, not traffic), and the score bins, feature bins and
// reference AUC are stored in the registry and handed to the version's monitor.

import { badRequest } from '../errors.js';
import type { LoadedModel } from '../inference/index.js';
import { baselinesOf, freezeReference, parseCsvTable, type ReferenceRecord, type ReferenceTable } from '../monitoring/index.js';
import { monitorOf, type ServerContext } from './context.js';
import { scoreOf } from './encode.js';
import { forgetExplainer } from './explain.js';
import { scoreInternally } from './internal-rows.js';

/** Scores every row of the table (the model's `features` columns, in order) with this version. */
async function scoreTable(m: LoadedModel, table: ReferenceTable): Promise<Float64Array> {
  const names = m.config.features;
  if (!names) throw badRequest(`model '${m.name}' has no features list in its model.yaml, so reference rows cannot be mapped to its input`);
  const cols = names.map((n) => {
    const i = table.columns.indexOf(n);
    if (i < 0) throw badRequest(`reference data has no column '${n}'`);
    return table.values[i]!;
  });
  const rows = cols[0]!.length;
  const scores = new Float64Array(rows);
  const width = names.length;
  await scoreInternally(
    m,
    rows,
    (buf, at, start, n) => {
      for (let r = 0; r < n; r++) {
        for (let c = 0; c < width; c++) {
          const v = Number(cols[c]![start + r]);
          if (!Number.isFinite(v)) throw badRequest(`reference row ${start + r + 1}, column '${names[c]}': ${JSON.stringify(cols[c]![start + r])} is not a number`);
          buf[at + r * width + c] = v;
        }
      }
    },
    (start, n, result, rowStart) => {
      for (let r = 0; r < n; r++) scores[start + r] = scoreOf(m, result, rowStart + r);
    },
    performance.now() + 120_000,
  );
  return scores;
}

/** Freezes (and stores) the reference of a version from CSV text. */
export async function freezeFromCsv(ctx: ServerContext, m: LoadedModel, csv: string): Promise<ReferenceRecord> {
  let table: ReferenceTable;
  try {
    table = parseCsvTable(csv);
  } catch (e) {
    throw badRequest(`reference CSV: ${(e as Error).message}`);
  }
  const scores = await scoreTable(m, table);
  let record: ReferenceRecord;
  try {
    record = freezeReference(m.config.features ?? [], table, scores, m.config.label ?? null);
  } catch (e) {
    throw badRequest(`reference data: ${(e as Error).message}`);
  }
  // The rows go with the frozen record, so a bundle or another replica can freeze the same reference.
  ctx.registry.updateVersion(m.name, m.versionNumber, { reference: record, referenceData: Buffer.from(csv, 'utf8') });
  monitorOf(ctx, m).setBaselines(baselinesOf(record));
  // Explanations are measured against the reference rows: the next one rebuilds from these.
  forgetExplainer(m);
  ctx.log.info({ model: m.name, version: m.version, rows: record.rows, referenceAuc: record.referenceAuc }, 'drift reference frozen');
  return record;
}

/**
 * At load: the stored reference if the registry has one, else the reference rows stored with the
 * version (read from the model repository at import, or inherited from the version it was
 * registered after), frozen now. Never a path: a recorded source is metadata. Problems are logged,
 * never fatal.
 */
export async function restoreReference(ctx: ServerContext, m: LoadedModel): Promise<void> {
  try {
    const rec = ctx.registry.getVersion(m.name, m.versionNumber);
    const stored = baselinesOf(rec.reference);
    if (stored !== null) {
      monitorOf(ctx, m).setBaselines(stored);
      return;
    }
    const rows = ctx.registry.referenceData(m.name, m.versionNumber);
    if (rows === null) {
      if (m.config.reference !== undefined) ctx.log.warn({ model: m.name, version: m.version }, 'model.yaml names reference data, but none is stored with this version; drift has no baseline');
      return;
    }
    await freezeFromCsv(ctx, m, rows.toString('utf8'));
  } catch (e) {
    ctx.log.error({ model: m.name, version: m.version, err: (e as Error).message }, 'could not freeze the drift reference');
  }
}
