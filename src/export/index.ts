// Getting the prediction log out: `scoreline export predictions` writes a model's logged
// predictions (ids, times, version, variant, score, the label when one was joined, and the inputs
// under their feature names) as Parquet, JSON Lines or CSV, for Evidently, Arize or a warehouse.
// Streamed segment by segment from a read-only connection to <data-dir>/monitoring.db, so it runs
// beside a live server in flat memory; or, when the log is shared, from PostgreSQL: every replica's
// shipped predictions with the labels joined there, a cursor's chunk at a time. Outputs other than
// the score are not in the log, so they are not in the export.

import { join } from 'node:path';
import { badRequest } from '../errors.js';
import {
  scanPredictionLog,
  scanSharedPredictionLog,
  type PredictionFilter,
  type PredictionScan,
  type SharedPredictionScan,
} from '../monitoring/index.js';
import { layoutOf } from './layout.js';
import { openSink, type ExportFormat } from './sinks.js';

export { EXPORT_FORMATS, DEFAULT_ROW_GROUP_ROWS, parquetSchema, type ExportFormat } from './sinks.js';
export { FIXED_COLUMNS, layoutOf, type ExportLayout } from './layout.js';

export interface ExportOptions extends PredictionFilter {
  readonly dataDir: string;
  /** Read the shared log in the PostgreSQL store at this URL (every replica's shipped predictions and their labels) instead of the data dir's file. */
  readonly shared?: { readonly url: string };
  readonly format: ExportFormat;
  readonly output: string;
  /** A version's feature names as registered (model.yaml `features`), or null when unknown. */
  readonly featureNames: (version: number) => readonly string[] | null;
  readonly rowGroupRows?: number;
  /** Called after every segment: rows read of the total the scan selected, rows written. */
  readonly progress?: (read: number, total: number, written: number) => void;
}

export interface ExportSummary {
  readonly rows: number;
  readonly labelled: number;
  readonly versions: readonly number[];
  readonly features: readonly string[];
  readonly warnings: readonly string[];
  readonly output: string;
  readonly seconds: number;
  readonly peakRssBytes: number;
}

export async function exportPredictions(o: ExportOptions): Promise<ExportSummary> {
  const t0 = performance.now();
  const scan: PredictionScan | SharedPredictionScan =
    o.shared === undefined ? scanPredictionLog(join(o.dataDir, 'monitoring.db'), o) : await scanSharedPredictionLog(o.shared.url, o);
  try {
    if (scan.total === 0 && !(await scan.hasModel())) {
      const known = await scan.models();
      throw badRequest(
        `the ${o.shared === undefined ? '' : 'shared '}prediction log has no predictions of model '${o.model}'${known.length > 0 ? ` (it has: ${known.join(', ')})` : ' (it is empty)'}`,
      );
    }
    const layout = layoutOf(scan.widths, o.featureNames);
    const sink = await openSink(o.format, o.output, layout, {
      ...(o.rowGroupRows !== undefined ? { rowGroupRows: o.rowGroupRows } : {}),
      metadata: {
        'scoreline.model': o.model,
        'scoreline.version': o.version === undefined ? 'all' : String(o.version),
        'scoreline.from': new Date(o.from).toISOString(),
        'scoreline.to': new Date(o.to).toISOString(),
      },
    });
    let read = 0;
    let rows = 0;
    let labelled = 0;
    try {
      for await (const chunk of scan.chunks()) {
        await sink.write(chunk);
        rows += chunk.rows;
        for (let i = 0; i < chunk.rows; i++) if (chunk.labels[i]! - chunk.labels[i]! === 0) labelled++;
        // Segments are counted whole, as the total counts them.
        read += chunk.segmentRows;
        o.progress?.(read, scan.total, rows);
      }
      await sink.commit();
    } catch (e) {
      await sink.abort();
      throw e;
    }
    return {
      rows,
      labelled,
      versions: [...scan.widths.keys()],
      features: layout.features,
      warnings: layout.warnings,
      output: o.output,
      seconds: (performance.now() - t0) / 1000,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    };
  } finally {
    await scan.close();
  }
}
