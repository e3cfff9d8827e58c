// `scoreline serve`: builds the server config from --config and flags, starts the server, shuts it
// down gracefully on SIGTERM / SIGINT, and re-reads its TLS certificate on SIGHUP.

import { dirname, isAbsolute, join, resolve } from 'node:path';
import { loadConfigFile, mergeConfig, resolveConfig, type DeepPartial, type ServerConfig } from '../config.js';
import { insufficientStorage, isDiskFull } from '../errors.js';
import { createLogger } from '../logger.js';
import { intFlag, parse, UsageError, type Command } from './command.js';

const SERVE_USAGE = `Usage: scoreline serve [options]

Serve the models of a repository (Triton layout: DIR/<model>/<version>/model.onnx).

Options:
  --model-repo DIR     model repository to serve (a version folder holds model.onnx or an MLflow model)
  --repository-poll S  rescan the repository every S seconds for new version folders (0: only at start)
  --port N             port to listen on (default 8080; 0 picks a free port)
  --grpc-port N|off    port of the OIP gRPC service (default 8081; 0 picks a free port; off: none)
  --host HOST          address to bind (default 0.0.0.0)
  --data-dir DIR       directory for scoreline's state (default ./data)
  --workers N          inference worker threads; 0 runs inference on the HTTP thread
  --threads N|auto     HTTP threads sharing the port (default 1; more need the PostgreSQL store;
                       auto: one per core, at most 8, with PostgreSQL)
  --config FILE        YAML or JSON configuration file (flags override it)
  --log-level LEVEL    fatal | error | warn | info | debug | trace | silent
  -h, --help           show this help`;

/** Paths inside a config file are relative to the file; flags stay relative to the working directory. */
export function anchorPaths(raw: unknown, dir: string): unknown {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const c = { ...(raw as Record<string, unknown>) };
  const fix = (v: unknown) => (typeof v === 'string' && !isAbsolute(v) ? join(dir, v) : v);
  if ('modelRepository' in c) c.modelRepository = fix(c.modelRepository);
  if ('dataDir' in c) c.dataDir = fix(c.dataDir);
  const t = c.tls;
  if (t !== null && typeof t === 'object' && !Array.isArray(t)) {
    const tls = { ...(t as Record<string, unknown>) };
    if ('cert' in tls) tls.cert = fix(tls.cert);
    if ('key' in tls) tls.key = fix(tls.key);
    c.tls = tls;
  }
  const f = c.features;
  if (f !== null && typeof f === 'object' && !Array.isArray(f)) {
    const features = { ...(f as Record<string, unknown>) };
    if ('definitions' in features) features.definitions = fix(features.definitions);
    const redis = features.redis;
    if (redis !== null && typeof redis === 'object' && !Array.isArray(redis) && 'passwordFile' in redis) {
      features.redis = { ...(redis as Record<string, unknown>), passwordFile: fix((redis as Record<string, unknown>).passwordFile) };
    }
    c.features = features;
  }
  // Retraining sections resolve their data paths and run trainer commands in the file's directory.
  const r = c.retraining;
  if (r !== null && typeof r === 'object' && !Array.isArray(r)) {
    c.retraining = Object.fromEntries(
      Object.entries(r as Record<string, unknown>).map(([model, section]) =>
        section !== null && typeof section === 'object' && !Array.isArray(section)
          ? [model, { ...(section as Record<string, unknown>), workingDir: fix((section as Record<string, unknown>).workingDir ?? '.') }]
          : [model, section],
      ),
    );
  }
  return c;
}

export function serveConfig(argv: string[]): ServerConfig | null {
  const { values, positionals } = parse(argv, {
    'model-repo': { type: 'string' },
    'repository-poll': { type: 'string' },
    port: { type: 'string' },
    'grpc-port': { type: 'string' },
    host: { type: 'string' },
    'data-dir': { type: 'string' },
    workers: { type: 'string' },
    threads: { type: 'string' },
    config: { type: 'string' },
    'log-level': { type: 'string' },
  });
  if (values.help) return null;
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const file =
    values.config !== undefined ? anchorPaths(loadConfigFile(values.config as string), dirname(resolve(values.config as string))) : {};
  const source = values.config !== undefined ? String(values.config) : 'config';
  // The file alone first, so that its errors name the file; the flags are checked as flags.
  resolveConfig(file, source);
  const flags: DeepPartial<ServerConfig> = {};
  if (values['model-repo'] !== undefined) flags.modelRepository = nonEmpty(values['model-repo'], '--model-repo');
  if (values['data-dir'] !== undefined) flags.dataDir = nonEmpty(values['data-dir'], '--data-dir');
  const poll = intFlag(values['repository-poll'] as string | undefined, '--repository-poll');
  if (poll !== undefined) flags.repository = { poll };
  const port = intFlag(values.port as string | undefined, '--port');
  if (port !== undefined && port > 65535) throw new UsageError(`--port must be from 0 to 65535, got ${port}`);
  if (port !== undefined || values.host !== undefined) {
    flags.server = {};
    if (port !== undefined) flags.server.port = port;
    if (values.host !== undefined) flags.server.host = nonEmpty(values.host, '--host');
  }
  const grpcPort = values['grpc-port'] as string | undefined;
  if (grpcPort !== undefined) flags.grpc = { port: grpcPort === 'off' ? false : intFlag(grpcPort, '--grpc-port')! };
  const threads = values.threads as string | undefined;
  if (threads !== undefined) {
    const n = threads === 'auto' ? 'auto' : intFlag(threads, '--threads')!;
    if (n !== 'auto' && (n < 1 || n > 64)) throw new UsageError(`--threads must be from 1 to 64, or auto, got ${n}`);
    flags.http = { threads: n };
  }
  const workers = intFlag(values.workers as string | undefined, '--workers');
  if (workers !== undefined && workers > 256) throw new UsageError(`--workers must be from 0 to 256, got ${workers}`);
  if (workers !== undefined) flags.inference = { workers };
  const level = values['log-level'];
  if (level !== undefined) {
    if (typeof level !== 'string' || !(LOG_LEVELS as readonly string[]).includes(level)) {
      throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got '${String(level)}'`);
    }
    flags.log = { level: level as ServerConfig['log']['level'] };
  }
  const merged = resolveConfig(mergeConfig(file as object, flags), values.config !== undefined ? source : 'flags');
  if (merged.modelRepository === null)
    throw new UsageError('no model repository: pass --model-repo DIR or set modelRepository in --config');
  return merged;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function nonEmpty(value: unknown, flag: string): string {
  if (typeof value !== 'string' || value === '') throw new UsageError(`${flag} needs a value`);
  return value;
}

export const serve: Command = {
  summary: 'serve models over HTTP, WebSocket and gRPC',
  usage: SERVE_USAGE,
  async run(argv) {
    const config = serveConfig(argv);
    if (config === null) {
      console.log(SERVE_USAGE);
      return 0;
    }
    const log = createLogger(config.log.level);
    // Everything the server writes (the data dir's databases and artifacts, retraining files) is
    // private to its user, as a database server does it: logged predictions are customer data.
    process.umask(0o077);
    const { startServer } = await import('../server/index.js');
    const { HttpThreads, lockPort, threadCount } = await import('../server/threads.js');
    const { storeUrl } = await import('../store/index.js');
    // Several HTTP threads are replicas of one shared store in this process: PostgreSQL only.
    const sharedStore = storeUrl(config.store.url) !== null;
    const count = threadCount(config, sharedStore);
    if (count > 1 && !sharedStore)
      throw new UsageError(
        `http.threads: ${count} needs the shared PostgreSQL store (store.url or SCORELINE_STORE_URL): the threads share their state through it; with the embedded store scoreline serves from one HTTP thread`,
      );
    const role = count > 1 ? { index: 0, count, channel: `scoreline-threads-${process.pid}-${Date.now().toString(36)}` } : undefined;
    // Taken before any thread listens on the shared port (a free port, 0, is known only once bound).
    let lock = role !== undefined && config.server.port !== 0 ? await lockPort(config.server.host, config.server.port) : null;
    let server: Awaited<ReturnType<typeof startServer>>;
    let threads: InstanceType<typeof HttpThreads> | null = null;
    try {
      server = await startServer({ config, log, ...(role !== undefined ? { thread: role } : {}) });
    } catch (e) {
      lock?.close();
      // A full disk at start is the operator's to fix: one line naming the data dir, not a stack.
      if (isDiskFull(e)) throw insufficientStorage(resolve(config.dataDir), e);
      throw e;
    }
    if (role !== undefined) {
      try {
        lock ??= await lockPort(config.server.host, server.port);
        threads = new HttpThreads({ ...config, server: { ...config.server, port: server.port } }, role, log);
        await threads.start();
      } catch (e) {
        await threads?.close();
        await server.close();
        lock?.close();
        throw e;
      }
      log.info({ threads: count, port: server.port }, `${count} HTTP threads serve port ${server.port}`);
    }
    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) {
          log.warn({ signal }, 'second signal: exiting now');
          process.exit(1);
        }
        stopping = true;
        log.info({ signal }, 'signal received');
        void Promise.all([threads?.close(), server.close()]).then(() => {
          lock?.close();
          resolve();
        });
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      // The usual daemon reload signal: a renewed certificate is taken without a restart.
      process.on('SIGHUP', () => {
        if (stopping) return;
        server.reloadTls();
        threads?.reloadTls();
      });
    });
    return 0;
  },
};
