// Commands that work on the registry without a server: `score-batch` (score a file across the
// worker pool) and `bundle` (write a deployable container folder). The registry is the store's:
// SQLite in --data-dir, or the PostgreSQL of --store-url / SCORELINE_STORE_URL (then --data-dir
// only caches artifacts).

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigFile } from '../config.js';
import { scoreBatch } from '../batch/index.js';
import { bundleImageTag, parseStrategy, primaryVersion, writeBundle } from '../deploy/index.js';
import { isScorelineError, ScorelineError } from '../errors.js';
import { openStore, storeUrl, type Registry, type Store } from '../store/index.js';
import { scanRepository } from '../registry/index.js';
import { intFlag, parse, stringFlag, UsageError, type Command, type Flags } from './command.js';
import { progressBar } from './progress.js';

const quiet = { warn: () => undefined, info: () => undefined };

/** The store the flags name; a PostgreSQL that cannot be reached fails at once (a command does not wait like a server). */
async function openCommandStore(values: Flags): Promise<Store> {
  const store = await openStore({
    url: storeUrl(stringFlag(values['store-url'])),
    dataDir: stringFlag(values['data-dir']) ?? 'data',
    log: quiet,
    waitForServer: false,
  });
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

const SCORE_USAGE = `Usage: scoreline score-batch --model NAME --input FILE --output FILE [options]

Scores a CSV (with a header) or JSONL file in constant memory across the worker pool. Rows that
cannot be scored go to a rejects file with their line number and the reason. The first line says
which version scores and why.

Options:
  --model NAME        the model; NAME@3 or NAME@champion name a version as --version does
  --version REF       a version number or alias (default: the version the model's deployment serves
                      by default, else the 'champion' alias, else the latest registered version)
  --input FILE        .csv or .jsonl
  --output FILE       .csv or .jsonl (refused if it exists, unless --force)
  --rejects FILE      default: <output>.rejects.csv
  --max-rejects N|P%  fail the run (exit 1, no output written) when more rows than N, or than P% of
                      the rows, are rejected; the rejects file is still written
  --id COLS           comma-separated columns copied to the output (e.g. customer_id)
  --batch-rows N      rows per batch (default 4096)
  --workers N         worker threads (default: cores - 1)
  --data-dir DIR      registry location (default ./data; with a store URL, the artifact cache)
  --store-url URL     the shared PostgreSQL store (default: SCORELINE_STORE_URL, else the data dir's SQLite)
  --model-repo DIR    import this model repository first, as serve does
  --force             overwrite the output and rejects files
  --quiet             no progress bar
  -h, --help          show this help`;

/** `--max-rejects`: a row count or a share of the rows. */
export function parseMaxRejects(raw: string): { count: number } | { percent: number } {
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(raw);
  if (pct !== null) {
    const percent = Number(pct[1]);
    if (percent > 100) throw new UsageError(`--max-rejects ${raw}: a share is at most 100%`);
    return { percent };
  }
  if (/^\d+$/.test(raw)) return { count: Number(raw) };
  throw new UsageError(`--max-rejects must be a row count (e.g. 100) or a share of the rows (e.g. 0.5%), got '${raw}'`);
}

/**
 * The version a batch run scores with when none is named: what the deployment serves by default
 * (what requests that name no version get), else the `champion` alias, else the latest version.
 */
export async function defaultBatchVersion(registry: Registry, name: string): Promise<{ version: number; why: string }> {
  const deployment = await registry.getDeployment<{ spec?: unknown }>(name);
  if (deployment !== undefined) {
    try {
      const p = primaryVersion(parseStrategy(deployment.state.spec, { persisted: true }));
      return { version: p.version, why: `the version its deployment serves by default: ${p.role}` };
    } catch {
      // An unreadable deployment is the server's to report; fall through to the alias.
    }
  }
  const model = await registry.getModel(name);
  const champion = model.aliases.champion;
  if (champion !== undefined) return { version: champion, why: "its 'champion' alias (no deployment)" };
  return { version: model.latestVersion, why: 'its latest version (no deployment and no champion alias)' };
}

const batchRowsMax = 1_000_000;

function rangedInt(value: string | boolean | string[] | undefined, flag: string, min: number, max: number): number | undefined {
  const n = intFlag(value, flag);
  if (n !== undefined && (n < min || n > max)) throw new UsageError(`${flag} must be an integer from ${min} to ${max}, got ${n}`);
  return n;
}

/** Offline commands read the registry in a data dir, not a server: say where a model was looked for. */
async function withRegistryContext<T>(values: Flags, registry: Registry, name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!(isScorelineError(e) && e.code === 'MODEL_NOT_FOUND')) throw e;
    const dir = stringFlag(values['data-dir']) ?? 'data';
    const known = (await registry.listModels()).map((m) => m.name);
    throw new ScorelineError(
      'MODEL_NOT_FOUND',
      `model '${name}' is not in the registry of ${join(dir, 'registry.db')} (${known.length > 0 ? `it holds ${known.join(', ')}` : 'it holds no models'}); ` +
        'point --data-dir at the data dir of the server that registered it, or pass --model-repo DIR to import a model repository first',
    );
  }
}

export const scoreBatchCommand: Command = {
  summary: 'score a CSV/JSONL file with a registered model',
  usage: SCORE_USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      model: { type: 'string' },
      version: { type: 'string' },
      input: { type: 'string' },
      output: { type: 'string' },
      rejects: { type: 'string' },
      'max-rejects': { type: 'string' },
      id: { type: 'string' },
      'batch-rows': { type: 'string' },
      workers: { type: 'string' },
      'data-dir': { type: 'string' },
      'store-url': { type: 'string' },
      'model-repo': { type: 'string' },
      force: { type: 'boolean' },
      quiet: { type: 'boolean' },
    });
    if (values.help) {
      console.log(SCORE_USAGE);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const modelFlag = stringFlag(values.model);
    const input = stringFlag(values.input);
    const output = stringFlag(values.output);
    if (!modelFlag || !input || !output) throw new UsageError('--model, --input and --output are required');
    const at = modelFlag.indexOf('@');
    const name = at < 0 ? modelFlag : modelFlag.slice(0, at);
    const named = at < 0 ? stringFlag(values.version) : modelFlag.slice(at + 1);
    if (at >= 0 && values.version !== undefined) throw new UsageError(`--model ${modelFlag} names a version already; leave out --version`);
    if (name === '' || named === '') throw new UsageError(`--model ${modelFlag}: write NAME, with --version REF or as NAME@REF`);
    const batchRows = rangedInt(values['batch-rows'], '--batch-rows', 1, batchRowsMax);
    const workers = rangedInt(values.workers, '--workers', 1, 256);
    const maxRejects = values['max-rejects'] !== undefined ? parseMaxRejects(String(values['max-rejects'])) : undefined;
    const rejects = stringFlag(values.rejects) ?? `${output}.rejects.csv`;
    if (values.force !== true) {
      const existing = [output, rejects].filter((f) => existsSync(f));
      if (existing.length > 0)
        throw new UsageError(`${existing.join(' and ')} already exist${existing.length === 1 ? 's' : ''}; pass --force to overwrite`);
    }
    const store = await openCommandStore(values);
    const registry = store.registry;
    try {
      const chosen = await withRegistryContext(values, registry, name, async () => {
        if (named !== undefined) {
          const r = await registry.resolve(name, named);
          return { version: r.version, why: /^\d+$/.test(named) ? 'as asked' : `its '${named}' alias` };
        }
        return defaultBatchVersion(registry, name);
      });
      console.log(`scoring with ${name} v${chosen.version}: ${chosen.why}`);
      const bar = progressBar('score-batch', { quiet: values.quiet === true });
      const s = await scoreBatch({
        registry,
        model: `${name}@${chosen.version}`,
        input,
        output,
        rejects,
        ...(maxRejects !== undefined ? { maxRejects } : {}),
        ...(stringFlag(values.id) ? { idColumns: stringFlag(values.id)!.split(',').filter(Boolean) } : {}),
        ...(batchRows !== undefined ? { batchRows } : {}),
        ...(workers !== undefined ? { workers } : {}),
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
    const registry = store.registry;
    try {
      const config = stringFlag(values.config);
      const r = await withRegistryContext(values, registry, model, () =>
        writeBundle({
          registry,
          model,
          out,
          force: values.force === true,
          ...(versions ? { versions } : {}),
          ...(stringFlag(values['base-image']) ? { baseImage: stringFlag(values['base-image'])! } : {}),
          ...(config ? { serverConfig: loadConfigFile(config) as Record<string, unknown> } : {}),
        }),
      );
      console.log(
        `bundle of ${model} in ${r.dir}: versions ${r.versions.map((v) => `v${v.version} (${v.sha256.slice(0, 12)})`).join(', ')} (chosen by ${r.selectedBy})`,
      );
      for (const w of r.warnings) console.error(`warning: ${w}`);
      console.log(
        `build it: docker build -t ${bundleImageTag(
          model,
          r.versions.map((v) => v.version),
        )} ${r.dir}`,
      );
      return 0;
    } finally {
      await store.close();
    }
  },
};
