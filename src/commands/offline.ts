// Commands that work on the registry without a server: `score-batch` (score a file across the
// worker pool) and `bundle` (write a deployable container folder). The registry is the store's:
// SQLite in --data-dir, or the PostgreSQL of --store-url / SCORELINE_STORE_URL (then --data-dir
// only caches artifacts).

import { loadConfigFile } from '../config.js';
import { scoreBatch } from '../batch/index.js';
import { writeBundle } from '../deploy/index.js';
import { openStore, storeUrl, type Store } from '../store/index.js';
import { scanRepository } from '../registry/repository.js';
import { intFlag, parse, stringFlag, UsageError, type Command, type Flags } from './command.js';
import { progressBar } from './progress.js';

const quiet = { warn: () => undefined, info: () => undefined };

/** The store the flags name; a PostgreSQL that cannot be reached fails at once (a command does not wait like a server). */
async function openCommandStore(values: Flags): Promise<Store> {
  const store = await openStore({ url: storeUrl(stringFlag(values['store-url'])), dataDir: stringFlag(values['data-dir']) ?? 'data', log: quiet, waitForServer: false });
  try {
    const repo = stringFlag(values['model-repo']);
    if (repo !== undefined) {
      const r = await store.registry.importRepository(scanRepository(repo));
      for (const s of r.skipped) console.error(`skipped ${s.model}/${s.version}: ${s.reason}`);
    }
    return store;
  } catch (e) {
    await store.close();
    throw e;
  }
}

const SCORE_USAGE = `Usage: scoreline score-batch --model NAME[@VERSION|@ALIAS] --input FILE --output FILE [options]

Scores a CSV (with a header) or JSONL file in constant memory across the worker pool. Rows that
cannot be scored go to a rejects file with their line number and the reason.

Options:
  --model REF         NAME (latest version), NAME@3, or NAME@champion
  --input FILE        .csv or .jsonl
  --output FILE       .csv or .jsonl
  --rejects FILE      default: <output>.rejects.csv
  --id COLS           comma-separated columns copied to the output (e.g. customer_id)
  --batch-rows N      rows per batch (default 4096)
  --workers N         worker threads (default: cores - 1)
  --data-dir DIR      registry location (default ./data; with a store URL, the artifact cache)
  --store-url URL     the shared PostgreSQL store (default: SCORELINE_STORE_URL, else the data dir's SQLite)
  --model-repo DIR    import this model repository first, as serve does
  --quiet             no progress bar
  -h, --help          show this help`;

export const scoreBatchCommand: Command = {
  summary: 'score a CSV/JSONL file with a registered model',
  usage: SCORE_USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      model: { type: 'string' },
      input: { type: 'string' },
      output: { type: 'string' },
      rejects: { type: 'string' },
      id: { type: 'string' },
      'batch-rows': { type: 'string' },
      workers: { type: 'string' },
      'data-dir': { type: 'string' },
      'store-url': { type: 'string' },
      'model-repo': { type: 'string' },
      quiet: { type: 'boolean' },
    });
    if (values.help) {
      console.log(SCORE_USAGE);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const model = stringFlag(values.model);
    const input = stringFlag(values.input);
    const output = stringFlag(values.output);
    if (!model || !input || !output) throw new UsageError('--model, --input and --output are required');
    const store = await openCommandStore(values);
    try {
      const bar = progressBar('score-batch', { quiet: values.quiet === true });
      const s = await scoreBatch({
        registry: store.registry,
        model,
        input,
        output,
        ...(stringFlag(values.rejects) ? { rejects: stringFlag(values.rejects)! } : {}),
        ...(stringFlag(values.id) ? { idColumns: stringFlag(values.id)!.split(',').filter(Boolean) } : {}),
        ...(intFlag(values['batch-rows'], '--batch-rows') !== undefined ? { batchRows: intFlag(values['batch-rows'], '--batch-rows')! } : {}),
        ...(intFlag(values.workers, '--workers') !== undefined ? { workers: intFlag(values.workers, '--workers')! } : {}),
        progress: (p) => bar.update(p.bytesRead, p.bytesTotal, `${p.rows.toLocaleString('en-US')} rows, ${p.rejected} rejected`),
      });
      bar.done('');
      console.log(
        `scored ${s.scored.toLocaleString('en-US')} of ${s.rows.toLocaleString('en-US')} rows with ${s.model} v${s.version} in ${s.seconds.toFixed(2)} s ` +
          `(${Math.round(s.rowsPerSecond).toLocaleString('en-US')} rows/s, peak RSS ${(s.peakRssBytes / 2 ** 20).toFixed(0)} MB); ` +
          `${s.rejected} rejected -> ${s.rejects}; output ${s.output}`,
      );
      return 0;
    } finally {
      await store.close();
    }
  },
};

const BUNDLE_USAGE = `Usage: scoreline bundle --model NAME --out DIR [options]

Writes a deployable folder: the model's verified artifacts in a model repository, SHA256SUMS, a
server config and a Dockerfile FROM the scoreline image.

Options:
  --model NAME        the model
  --out DIR           the bundle folder (must be empty unless --force)
  --version REF       a version or alias to include (repeatable; default: what its deployment routes to)
  --base-image IMAGE  default scoreline:<version>
  --config FILE       server settings (YAML/JSON) written into the bundle's config.yaml
  --data-dir DIR      registry location (default ./data; with a store URL, the artifact cache)
  --store-url URL     the shared PostgreSQL store (default: SCORELINE_STORE_URL, else the data dir's SQLite)
  --force             replace a previous bundle in DIR
  -h, --help          show this help`;

export const bundleCommand: Command = {
  summary: 'write a deployable container bundle of a model',
  usage: BUNDLE_USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      model: { type: 'string' },
      out: { type: 'string' },
      version: { type: 'string', multiple: true },
      'base-image': { type: 'string' },
      config: { type: 'string' },
      'data-dir': { type: 'string' },
      'store-url': { type: 'string' },
      force: { type: 'boolean' },
    });
    if (values.help) {
      console.log(BUNDLE_USAGE);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const model = stringFlag(values.model);
    const out = stringFlag(values.out);
    if (!model || !out) throw new UsageError('--model and --out are required');
    const versions = (values.version as unknown as string[] | undefined) ?? undefined;
    const store = await openCommandStore(values);
    try {
      const config = stringFlag(values.config);
      const r = await writeBundle({
        registry: store.registry,
        model,
        out,
        force: values.force === true,
        ...(versions ? { versions } : {}),
        ...(stringFlag(values['base-image']) ? { baseImage: stringFlag(values['base-image'])! } : {}),
        ...(config ? { serverConfig: loadConfigFile(config) as Record<string, unknown> } : {}),
      });
      console.log(`bundle of ${model} in ${r.dir}: versions ${r.versions.map((v) => `v${v.version} (${v.sha256.slice(0, 12)})`).join(', ')} (chosen by ${r.selectedBy})`);
      for (const w of r.warnings) console.error(`warning: ${w}`);
      console.log(`build it: docker build -t ${model}-bundle ${r.dir}`);
      return 0;
    } finally {
      await store.close();
    }
  },
};
