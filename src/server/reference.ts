// Freezing a version's drift reference: the reference rows (model.yaml `reference`, a CSV next to
// the version's model folder, or a CSV sent to the admin API) are scored by that version through
// its own batcher (as internal requests, not traffic), and the score bins, feature bins and
// reference AUC are stored in the registry and handed to the version's monitor. What each loaded
// version's monitor was given is remembered, so a reference another replica stores is applied
// here once, and an unchanged one never resets the monitor's windows.

import { badRequest } from '../errors.js';
import { writeElement, type LoadedModel } from '../inference/index.js';
import { baselinesOf, freezeReference, parseCsvTable, type ReferenceRecord, type ReferenceTable } from '../monitoring/index.js';
import { monitorOf, type ServerContext } from './context.js';
import { scoreOf } from './encode.js';
import { forgetExplainer } from './explain.js';
import { scoreInternally } from './internal-rows.js';

/** Scores every row of the table (the model's `features` columns, each into its input's column) with this version. */
async function scoreTable(m: LoadedModel, table: ReferenceTable): Promise<Float64Array> {
  const f = m.features;
  if (f === null)
    throw badRequest(`model '${m.name}' has no features list in its model.yaml, so reference rows cannot be mapped to its input`);
  const names = f.names;
  const cols = names.map((n) => {
    const i = table.columns.indexOf(n);
    if (i < 0) throw badRequest(`reference data has no column '${n}'`);
    return table.values[i]!;
  });
  const rows = cols[0]!.length;
  const scores = new Float64Array(rows);
  await scoreInternally(
    m,
    rows,
    (batch, start, n) => {
      const per = m.inputs.map((_, i) => m.batcher.rowElements(batch, i));
      for (let r = 0; r < n; r++) {
        for (let c = 0; c < names.length; c++) {
          const i = f.input[c]!;
          const cell = cols[c]![start + r];
          const where = `reference row ${start + r + 1}, column '${names[c]}'`;
          const at = (batch.rows + r) * per[i]! + f.column[c]!;
          // A category is its text (an empty cell: the empty category, which the model maps as it was trained to).
          if (f.categorical[c]) {
            writeElement(cell === undefined || cell === null ? '' : String(cell), 'BYTES', batch.buffers[i]!, at, where);
            continue;
          }
          const v = Number(cell);
          if (!Number.isFinite(v)) throw badRequest(`${where}: ${JSON.stringify(cell)} is not a number`);
          writeElement(v, m.inputs[i]!.datatype, batch.buffers[i]!, at, where);
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

/** The stored reference (as JSON) each loaded version's monitor holds. */
const applied = new WeakMap<LoadedModel, string>();
/** Reference work per loaded version, one at a time: the freeze that starts last is the one that stays. */
const queues = new WeakMap<LoadedModel, Promise<unknown>>();

function serial<T>(m: LoadedModel, work: () => Promise<T>): Promise<T> {
  const run = (queues.get(m) ?? Promise.resolve()).catch(() => undefined).then(work);
  queues.set(m, run);
  return run;
}

/** Freezes (and stores) the reference of a version from CSV text. */
export function freezeFromCsv(ctx: ServerContext, m: LoadedModel, csv: string): Promise<ReferenceRecord> {
  return serial(m, () => freeze(ctx, m, csv));
}

async function freeze(ctx: ServerContext, m: LoadedModel, csv: string): Promise<ReferenceRecord> {
  let table: ReferenceTable;
  try {
    table = parseCsvTable(csv);
  } catch (e) {
    throw badRequest(`reference CSV: ${(e as Error).message}`);
  }
  const scores = await scoreTable(m, table);
  let record: ReferenceRecord;
  try {
    const f = m.features;
    const categorical = new Set(f === null ? [] : f.names.filter((_, j) => f.categorical[j]));
    record = freezeReference(m.config.features ?? [], table, scores, m.config.label ?? null, categorical);
  } catch (e) {
    throw badRequest(`reference data: ${(e as Error).message}`);
  }
  // The rows go with the frozen record, so a bundle or another replica can freeze the same reference.
  await ctx.registry.updateVersion(m.name, m.versionNumber, { reference: record, referenceData: Buffer.from(csv, 'utf8') });
  monitorOf(ctx, m).setBaselines(baselinesOf(record));
  // Explanations are measured against the reference rows: the next one rebuilds from these.
  forgetExplainer(m);
  applied.set(m, JSON.stringify(record));
  ctx.log.info({ model: m.name, version: m.version, rows: record.rows, referenceAuc: record.referenceAuc }, 'drift reference frozen');
  return record;
}

/**
 * At load: the stored reference if the registry has one, else the reference rows stored with the
 * version (read from the model repository at import, or inherited from the version it was
 * registered after), frozen now. Never a path: a recorded source is metadata. Problems are logged,
 * never fatal.
 */
export function restoreReference(ctx: ServerContext, m: LoadedModel): Promise<void> {
  return serial(m, () => restore(ctx, m));
}

async function restore(ctx: ServerContext, m: LoadedModel): Promise<void> {
  try {
    const rec = await ctx.registry.getVersion(m.name, m.versionNumber);
    const stored = baselinesOf(rec.reference);
    if (stored !== null) {
      monitorOf(ctx, m).setBaselines(stored);
      applied.set(m, JSON.stringify(rec.reference));
      return;
    }
    const rows = await ctx.registry.referenceData(m.name, m.versionNumber);
    if (rows === null) {
      if (m.config.reference !== undefined)
        ctx.log.warn(
          { model: m.name, version: m.version },
          'model.yaml names reference data, but none is stored with this version; drift has no baseline',
        );
      return;
    }
    await freeze(ctx, m, rows.toString('utf8'));
  } catch (e) {
    ctx.log.error({ model: m.name, version: m.version, err: (e as Error).message }, 'could not freeze the drift reference');
  }
}

/**
 * Applies the stored reference of a loaded version when it differs from the one its monitor holds
 * (another replica froze it): the monitor's windows start over against it. A version without a
 * stored reference keeps what it has.
 */
export function refreshReference(ctx: ServerContext, m: LoadedModel): Promise<void> {
  return serial(m, () => refresh(ctx, m));
}

async function refresh(ctx: ServerContext, m: LoadedModel): Promise<void> {
  const rec = await ctx.registry.getVersion(m.name, m.versionNumber);
  if (rec.reference === null) return;
  const json = JSON.stringify(rec.reference);
  if (applied.get(m) === json) return;
  const b = baselinesOf(rec.reference);
  if (b === null) return;
  monitorOf(ctx, m).setBaselines(b);
  applied.set(m, json);
  ctx.log.info({ model: m.name, version: m.version, rows: b.rows }, 'drift reference changed in the store: applied');
}
