// The scoreline server: one uWS app on one port for inference (OIP v2, v1 :predict, WebSocket),
// health, metrics and monitoring. start() loads the model repository onto the inference engine and
// listens; close() is the graceful shutdown: refuse new work, finish what is in flight within the
// configured time, close connections and the worker pool.

import type { Logger } from 'pino';
import type { ServerConfig } from '../config.js';
import { methodNotAllowed, routeNotFound } from '../errors.js';
import { InferenceEngine, type LoadedModel } from '../inference/index.js';
import { Monitor } from '../monitoring/index.js';
import { createFeatureService, type FeatureService } from '../features/index.js';
import { scanRepository } from '../registry/repository.js';
import type { ServerContext } from './context.js';
import { sendError } from './http.js';
import { registerObserve } from './observe.js';
import { OIP_PATTERNS, registerOip } from './oip.js';
import { bindModel, registerScore } from './score.js';
import { registerStream, type StreamHandle } from './stream.js';
import { loadUws, type TemplatedApp, type us_listen_socket } from './uws.js';

export interface RunningServer {
  readonly port: number;
  readonly host: string;
  readonly engine: InferenceEngine;
  readonly monitor: Monitor;
  /** Graceful shutdown; resolves true when every in-flight request was answered in time. */
  close(): Promise<boolean>;
}

export interface StartOptions {
  config: ServerConfig;
  log: Logger;
}

export async function startServer({ config, log }: StartOptions): Promise<RunningServer> {
  const uws = loadUws();
  const monitor = new Monitor();
  const engine = new InferenceEngine({
    workers: config.inference.workers,
    tasksPerWorker: config.inference.tasksPerWorker,
    intraOpThreads: config.inference.intraOpThreads,
    inlineBelowMicros: config.inference.inlineBelowMicros,
    batching: config.batching,
    observerFor: (model, version) => monitor.version(model, version),
  });
  let features: FeatureService | null = null;
  let ctx: ServerContext;
  try {
    features = await createFeatureService(config.features, monitor.featureObserver());
    ctx = { config, engine, monitor, log, features, draining: false };
    if (features !== null) {
      registerFeatureMetrics(ctx, features);
      for (const l of features.loaded) log.info({ source: l.source, rows: l.rows, rejected: l.rejected, seconds: l.seconds }, 'feature source loaded into the in-process store');
      const h = features.health();
      if (h.status !== 'ok') log.warn({ reason: h.reason }, 'feature serving starts degraded');
    }
    for (const m of await loadRepository(ctx)) if (features !== null) bindModel(ctx, features, m);
  } catch (e) {
    await features?.close();
    await engine.close();
    throw e;
  }

  const app: TemplatedApp = uws.App();
  registerOip(app, ctx);
  registerScore(app, ctx, features);
  const streams: StreamHandle = registerStream(app, ctx);
  registerObserve(app, ctx, streams);
  for (const pattern of [...OIP_PATTERNS, '/metrics', '/v1/monitoring/:model', '/v1/score/:model', '/v1/events']) {
    app.any(pattern, (res, req) => {
      sendError(res, methodNotAllowed(req.getMethod(), req.getUrl()));
    });
  }
  app.any('/*', (res, req) => {
    sendError(res, routeNotFound(req.getMethod(), req.getUrl()));
  });

  const { host, port } = config.server;
  const listenSocket = await new Promise<us_listen_socket>((resolve, reject) => {
    app.listen(host, port, (s) => (s ? resolve(s) : reject(new Error(`cannot listen on ${host}:${port} (in use or not permitted)`))));
  });
  const boundPort = uws.us_socket_local_port(listenSocket as never);
  log.info({ host, port: boundPort, models: engine.list().map((m) => `${m.name}:${m.version}`) }, `scoreline listening on http://${host}:${boundPort}`);

  let closing: Promise<boolean> | null = null;
  const close = (): Promise<boolean> =>
    (closing ??= (async () => {
      ctx.draining = true;
      uws.us_listen_socket_close(listenSocket);
      const timeout = config.server.shutdownTimeoutMs;
      log.info({ timeoutMs: timeout }, 'shutting down: finishing in-flight requests');
      const drained = await engine.drain(timeout);
      // Let the last answers leave before sockets close.
      await new Promise((r) => setTimeout(r, 20));
      streams.closeAll();
      await engine.close();
      await features?.close();
      log.info({ drained }, drained ? 'shutdown complete' : 'shutdown timed out with requests still in flight');
      return drained;
    })());

  return { port: boundPort, host, engine, monitor, close };
}

function registerFeatureMetrics(ctx: ServerContext, features: FeatureService): void {
  const cache = features.cache;
  if (cache !== null) {
    const stat = (k: 'hits' | 'misses' | 'evictions' | 'expirations') => () => [{ labels: {}, value: cache.stats()[k] }];
    ctx.monitor.callback('scoreline_feature_cache_hits_total', 'Reads answered by the native L1 feature cache.', 'counter', stat('hits'));
    ctx.monitor.callback('scoreline_feature_cache_misses_total', 'Reads the native L1 feature cache could not answer.', 'counter', stat('misses'));
    ctx.monitor.callback('scoreline_feature_cache_evictions_total', 'Entries evicted from the L1 cache to make room.', 'counter', stat('evictions'));
    ctx.monitor.callback('scoreline_feature_cache_expirations_total', 'L1 cache entries dropped because their TTL passed.', 'counter', stat('expirations'));
    ctx.monitor.callback('scoreline_feature_cache_entries', 'Entries in the L1 cache.', 'gauge', () => [{ labels: {}, value: cache.stats().entries }]);
    ctx.monitor.callback('scoreline_feature_cache_hit_ratio', 'L1 hits / (hits + misses) since start.', 'gauge', () => {
      const s = cache.stats();
      return [{ labels: {}, value: s.hits + s.misses === 0 ? 0 : s.hits / (s.hits + s.misses) }];
    });
  }
  ctx.monitor.callback('scoreline_feature_store_up', 'Whether the online feature store is reachable (1) or not (0).', 'gauge', () => [
    { labels: { store: features.store.kind }, value: features.store.available ? 1 : 0 },
  ]);
}

async function loadRepository(ctx: ServerContext): Promise<LoadedModel[]> {
  const dir = ctx.config.modelRepository;
  if (dir === null) return [];
  const scan = scanRepository(dir);
  for (const s of scan.skipped) ctx.log.warn({ entry: s }, 'model repository entry skipped');
  const loaded: LoadedModel[] = [];
  for (const model of scan.models) {
    for (const v of model.versions) {
      const t0 = performance.now();
      const m = await ctx.engine.load({ name: model.name, version: v.version, path: v.path, sha256: v.sha256, config: model.config });
      ctx.log.info(
        {
          model: m.name,
          version: m.version,
          sha256: m.sha256,
          batchable: m.batchable,
          warmup: m.warmupSizes(),
          placement: m.placement,
          batchMicros: Math.round(m.batchMicros),
          ms: Math.round(performance.now() - t0),
        },
        'model version ready',
      );
      loaded.push(m);
    }
  }
  return loaded;
}
