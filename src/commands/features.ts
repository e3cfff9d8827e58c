// `scoreline features validate|apply|materialize`: check feature definitions (and the bindings of
// a model repository against them), and write offline sources into the shared Redis store or the
// embedded store of a data dir.

import { dirname, join, resolve } from 'node:path';
import { loadConfigFile, resolveConfig } from '../config.js';
import { configInvalid } from '../errors.js';
import {
  EmbeddedStore,
  FeatureServer,
  feedsOf,
  fingerprintOf,
  loadFeatureDefinitionsFile,
  materializeSource,
  MemoryStore,
  readPasswordFile,
  RedisStore,
  type FeatureRegistry,
} from '../features/index.js';
import { scanRepository } from '../registry/index.js';
import { parse, stringFlag, intFlag, UsageError, type Command, type Flags } from './command.js';
import { anchorPaths } from './serve.js';
import { progressBar } from './progress.js';

const USAGE = `Usage: scoreline features <validate|apply|materialize> [options]

  validate     check the definitions (types, dependencies, cycles, expressions) and, with
               --model-repo, that every model's input columns bind to known features
  apply        the same checks; prints the compiled plan of every model (what serve will use)
  materialize  write an offline source into the online store, keeping event times: Redis
               (--redis), or the embedded store of a data dir (--data-dir; while no server
               uses it: a running server does not see what is written until it restarts)

Options:
  --definitions FILE   feature definitions (YAML)
  --config FILE        take definitions, Redis and the model repository from a server config
  --model-repo DIR     check the bindings of this model repository
  --redis URL          redis://host:port for materialize (or features.redis in --config)
  --data-dir DIR       materialize into DIR/features.db (or dataDir in --config, without Redis)
  --from FILE          CSV or JSONL to materialize (default: the source's own path)
  --source NAME        which source the file is (default: the only source, or the one whose path is --from)
  --batch N            rows per pipelined write (default 1000)
  --quiet              no progress output
  -h, --help           show this help`;

interface Resolved {
  definitions: string;
  redis: string | null;
  /** The config's features.redis.passwordFile and keyPrefix, when --redis does not override its URL. */
  passwordFile: string | null;
  keyPrefix: string | undefined;
  dataDir: string | null;
  modelRepo: string | null;
}

function settings(values: Flags): Resolved {
  let definitions = stringFlag(values.definitions) ?? null;
  let redis = stringFlag(values.redis) ?? null;
  let modelRepo = stringFlag(values['model-repo']) ?? null;
  let passwordFile: string | null = null;
  let keyPrefix: string | undefined;
  let dataDir = stringFlag(values['data-dir']) ?? null;
  const configPath = stringFlag(values.config);
  if (configPath !== undefined) {
    const cfg = resolveConfig(anchorPaths(loadConfigFile(configPath), dirname(resolve(configPath))), configPath);
    definitions ??= cfg.features.definitions;
    if (dataDir === null) {
      if (redis === null) {
        passwordFile = cfg.features.redis?.passwordFile ?? null;
        // The server reads keys under its configured prefix: materialize must write them there.
        keyPrefix = cfg.features.redis?.keyPrefix;
      }
      redis ??= cfg.features.redis?.url ?? null;
    }
    if (redis === null && cfg.features.embedded.durable) dataDir ??= cfg.dataDir;
    modelRepo ??= cfg.modelRepository;
  }
  if (definitions === null) throw new UsageError('pass --definitions FILE (or --config with features.definitions)');
  return { definitions, redis, passwordFile, keyPrefix, dataDir, modelRepo };
}

function checkBindings(registry: FeatureRegistry, modelRepo: string, print: boolean): void {
  const server = new FeatureServer({ registry, store: new MemoryStore([]), cache: null, cacheTtlMs: 0, negativeTtlMs: 0 });
  const scan = scanRepository(modelRepo);
  for (const m of scan.models) {
    if (!m.config.features) continue;
    let mf: ReturnType<typeof server.compileModel>;
    try {
      mf = server.compileModel(m.config.features, m.config.bindings ?? {}, `model '${m.name}'`);
    } catch (e) {
      // As at serve time: a model with bindings must compile; one without is simply not for entity scoring.
      if (m.config.bindings) throw e;
      console.log(`model ${m.name}: not set up for entity scoring (${(e as Error).message})`);
      continue;
    }
    if (print) {
      console.log(`model ${m.name}:`);
      mf.columnNames.forEach((c, i) => {
        const col = mf.columns[i]!;
        console.log(`  ${c.padEnd(28)} <- ${col.kind === 'request' ? `request.${col.field}` : mf.plan.features[col.slot]!.def.ref}`);
      });
      const order = mf.plan.features.map((p) => `${p.def.ref} (${p.def.type})`);
      console.log(`  resolution order: ${order.join(', ')}`);
    }
  }
}

async function validate(values: Flags, print: boolean): Promise<number> {
  const s = settings(values);
  const registry = await loadFeatureDefinitionsFile(s.definitions);
  const byType = new Map<string, number>();
  for (const f of registry.features) byType.set(f.type, (byType.get(f.type) ?? 0) + 1);
  console.log(
    `${s.definitions}: ${registry.features.length} features (${[...byType].map(([t, n]) => `${n} ${t}`).join(', ')}), ` +
      `${registry.entities.size} entities, ${registry.sources.size} sources, ${registry.groups.length} stored groups, ${registry.streams.length} event series: valid`,
  );
  if (s.modelRepo !== null) checkBindings(registry, s.modelRepo, print);
  return 0;
}

async function materialize(values: Flags): Promise<number> {
  const s = settings(values);
  if (s.redis !== null && stringFlag(values['data-dir']) !== undefined && stringFlag(values.redis) !== undefined)
    throw new UsageError('pass --redis URL or --data-dir DIR, not both');
  if (s.redis === null && s.dataDir === null)
    throw new UsageError('materialize writes to Redis or to a data dir: pass --redis URL or --data-dir DIR (or --config with either)');
  const registry = await loadFeatureDefinitionsFile(s.definitions);
  const from = stringFlag(values.from);
  const name = stringFlag(values.source);
  const sources = [...registry.sources.values()];
  const source =
    name !== undefined
      ? registry.sources.get(name)
      : sources.length === 1
        ? sources[0]
        : sources.find((x) => from !== undefined && x.path.endsWith(from));
  if (source === undefined) {
    throw new UsageError(
      name !== undefined
        ? `no source '${name}' (sources: ${sources.map((x) => x.name).join(', ')})`
        : `which source is it? pass --source (sources: ${sources.map((x) => x.name).join(', ')})`,
    );
  }
  const password = s.passwordFile !== null ? readPasswordFile(s.passwordFile) : undefined;
  const store =
    s.redis !== null
      ? new RedisStore({
          url: s.redis,
          ...(password !== undefined ? { password } : {}),
          ...(s.keyPrefix !== undefined ? { keyPrefix: s.keyPrefix } : {}),
          streams: registry.streams,
          timeoutMs: 5000,
        })
      : new EmbeddedStore({ path: join(s.dataDir!, 'features.db'), streams: registry.streams, memory: false });
  try {
    if (store instanceof RedisStore) await store.ready(5000);
    const bar = progressBar(`materialize ${source.name}`, { quiet: values.quiet === true });
    const result = await materializeSource(registry, source, store, {
      ...(from !== undefined ? { file: from } : {}),
      batchRows: intFlag(values.batch, '--batch') ?? 1000,
      onProgress: (p) => bar.update(p.bytesRead, p.bytesTotal, `${p.rows.toLocaleString('en-US')} rows`),
    });
    bar.done('');
    // The source's own file, loaded in full: a server starting on this data dir need not read it again.
    if (store instanceof EmbeddedStore && result.rejected === 0 && (from === undefined || resolve(from) === resolve(source.path))) {
      store.markSourceLoaded(
        source.name,
        fingerprintOf(
          source.path,
          feedsOf(registry, source).map((f) => f.group),
        ),
      );
    }
    console.log(
      `materialized ${result.written.toLocaleString('en-US')} entity groups from ${result.rows.toLocaleString('en-US')} rows of ${from ?? source.path} ` +
        `in ${result.seconds.toFixed(2)} s; ${result.rejected} rejected`,
    );
    for (const r of result.rejects.slice(0, 20)) console.error(`  line ${r.line}: ${r.reason}`);
    return result.rejected > 0 ? 1 : 0;
  } catch (e) {
    throw configInvalid(`materialize failed: ${(e as Error).message}`);
  } finally {
    await store.close();
  }
}

export const features: Command = {
  summary: 'validate feature definitions, materialize offline sources',
  usage: USAGE,
  async run(argv) {
    const [sub, ...rest] = argv;
    const { values, positionals } = parse(rest, {
      definitions: { type: 'string' },
      config: { type: 'string' },
      'model-repo': { type: 'string' },
      redis: { type: 'string' },
      'data-dir': { type: 'string' },
      from: { type: 'string' },
      source: { type: 'string' },
      batch: { type: 'string' },
      quiet: { type: 'boolean' },
    });
    if (sub === undefined || sub === '--help' || sub === '-h' || values.help) {
      console.log(USAGE);
      return sub === undefined ? 2 : 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    switch (sub) {
      case 'validate':
        return validate(values, false);
      case 'apply':
        return validate(values, true);
      case 'materialize':
        return materialize(values);
      default:
        throw new UsageError(`unknown subcommand '${sub}'`);
    }
  },
};
