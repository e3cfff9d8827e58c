// `scoreline export predictions`: a model's prediction log as Parquet, JSON Lines or CSV, read from
// the data dir (read-only; safe while the server runs), or with a shared PostgreSQL store from there
// (every replica's shipped predictions, with their labels), with progress on stderr. Feature names
// come from the registry: the data dir's, or the shared store's.

import { existsSync } from 'node:fs';
import { extname, join } from 'node:path';
import { EXPORT_FORMATS, exportPredictions, type ExportFormat } from '../export/index.js';
import { isScorelineError } from '../errors.js';
import { openStore, storeUrl, type Store } from '../store/index.js';
import { intFlag, parse, stringFlag, UsageError, type Command } from './command.js';
import { progressBar } from './progress.js';

const USAGE = `Usage: scoreline export predictions --model NAME --output FILE [options]

Writes the predictions the server logged for a model: request_id, ts, model, version, variant,
score, label and labelled_at (when a label was joined through /v1/feedback), then one column per
input feature (model.yaml \`features\`). Outputs other than the score are not logged, so they are
not exported. Reads <data-dir>/monitoring.db read-only: safe while the server runs. With a shared
PostgreSQL store (--store-url, SCORELINE_STORE_URL) it reads the shared log there instead: every
replica's predictions, with the labels sent to any replica, as far as each replica has shipped them
(seconds behind). --local reads one replica's own file even then (its labels column is empty).

Options:
  --model NAME          the model
  --version N           only this version (default: every version)
  --from TIME           first prediction time, ISO 8601 or epoch ms (default: the oldest)
  --to TIME             end of the window, exclusive (default: now)
  --format FORMAT       parquet | jsonl | csv (default: from --output's extension)
  --output FILE         written under a temporary name, moved into place when complete
  --data-dir DIR        the server's data dir (default ./data)
  --store-url URL       the shared PostgreSQL store: the predictions and feature names are read from
                        it (default: SCORELINE_STORE_URL, else the data dir's registry)
  --local               read the data dir's own file even with a shared store
  --row-group-rows N    Parquet rows per row group (default 65536)
  --quiet               no progress output
  -h, --help            show this help`;

function time(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const t = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (Number.isNaN(t)) throw new UsageError(`${flag} must be an ISO 8601 time or epoch milliseconds, got '${value}'`);
  return t;
}

export const exportCommand: Command = {
  summary: 'export logged predictions (Parquet, JSONL, CSV)',
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      model: { type: 'string' },
      version: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      format: { type: 'string' },
      output: { type: 'string' },
      'data-dir': { type: 'string' },
      'store-url': { type: 'string' },
      'row-group-rows': { type: 'string' },
      local: { type: 'boolean' },
      quiet: { type: 'boolean' },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals[0] !== 'predictions')
      throw new UsageError(
        positionals.length === 0 ? 'say what to export: predictions' : `cannot export '${positionals[0]}'; only predictions`,
      );
    if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`);
    const model = stringFlag(values.model);
    const output = stringFlag(values.output);
    if (!model || !output) throw new UsageError('--model and --output are required');
    const format = (stringFlag(values.format) ?? extname(output).slice(1).toLowerCase()) as ExportFormat;
    if (!EXPORT_FORMATS.includes(format))
      throw new UsageError(`--format must be one of ${EXPORT_FORMATS.join(', ')} (or --output ending in one)`);
    const version = intFlag(values.version, '--version');
    if (version === 0) throw new UsageError('--version must be a positive integer');
    const from = time(stringFlag(values.from), '--from', 0);
    const to = time(stringFlag(values.to), '--to', Date.now());
    if (!(from < to)) throw new UsageError('--from must be before --to');
    const dataDir = stringFlag(values['data-dir']) ?? 'data';
    const rowGroupRows = intFlag(values['row-group-rows'], '--row-group-rows');
    if (rowGroupRows === 0) throw new UsageError('--row-group-rows must be a positive integer');

    // Feature names as registered; a data dir without a registry (and no store URL) exports the inputs unnamed.
    const url = storeUrl(stringFlag(values['store-url']));
    const quiet = { warn: () => undefined, info: () => undefined };
    const store: Store | null =
      url !== null || existsSync(join(dataDir, 'registry.db')) ? await openStore({ url, dataDir, log: quiet, waitForServer: false }) : null;
    const bar = progressBar('export', { quiet: values.quiet === true });
    try {
      const byVersion = new Map<number, string[]>();
      try {
        for (const v of (await store?.registry.listVersions(model)) ?? []) {
          const features = v.config.features;
          if (Array.isArray(features) && features.every((f) => typeof f === 'string')) byVersion.set(v.version, features as string[]);
        }
      } catch (e) {
        // A model the registry does not know (any more) still has its log: exported unnamed.
        if (!isScorelineError(e) || e.code !== 'MODEL_NOT_FOUND') throw e;
      }
      const names = (v: number): readonly string[] | null => byVersion.get(v) ?? null;
      const shared = store?.kind === 'postgres' && url !== null && values.local !== true ? { url } : undefined;
      const s = await exportPredictions({
        dataDir,
        ...(shared !== undefined ? { shared } : {}),
        model,
        ...(version !== undefined ? { version } : {}),
        from,
        to,
        format,
        output,
        featureNames: names,
        ...(rowGroupRows !== undefined ? { rowGroupRows } : {}),
        progress: (read, total, rows) => bar.update(read, total, `${rows.toLocaleString('en-US')} rows`),
      });
      bar.done('');
      for (const w of s.warnings) console.error(`warning: ${w}`);
      console.log(
        `exported ${s.rows.toLocaleString('en-US')} predictions of ${model}${shared !== undefined ? ` from the shared log (${store!.location})` : ''} (versions ${s.versions.join(', ') || 'none'}; ` +
          `${s.labelled.toLocaleString('en-US')} labelled; ${s.features.length} feature columns) to ${s.output} as ${format} ` +
          `in ${s.seconds.toFixed(2)} s (peak RSS ${(s.peakRssBytes / 2 ** 20).toFixed(0)} MB)`,
      );
      return 0;
    } finally {
      await store?.close();
    }
  },
};
