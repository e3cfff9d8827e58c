// The scoreline server: one uWS app on one port for inference (OIP v2, v1 :predict, WebSocket),
// health, metrics and monitoring. start() loads the model repository onto the inference engine and
// listens; close() is the graceful shutdown: refuse new work, finish what is in flight within the
// configured time, close connections and the worker pool.

import type { Logger } from 'pino';
import type { ServerConfig } from '../config.js';
import { methodNotAllowed, routeNotFound, upgradeRequired } from '../errors.js';
import { InferenceEngine } from '../inference/index.js';
import { Monitor, PredictionLog } from '../monitoring/index.js';
import { Deployer, Router, versionsOf } from '../deploy/index.js';
import { createFeatureService, type FeatureService } from '../features/index.js';
import { ModelRegistry } from '../registry/store.js';
import { prepareDataDir } from '../registry/data-dir.js';
import { adminGuard, adminToken, registerAdmin } from './admin.js';
import type { ServerContext } from './context.js';
import { OriginPolicy, registerPreflight, sendError, sendJson } from './http.js';
import { registerObserve } from './observe.js';
import { registerDashboard } from './dashboard.js';
import { registerOip } from './oip.js';
import { createAlerting } from './alerting.js';
import { freezeFromCsv, restoreReference } from './reference.js';
import type { ModelConfig } from '../config.js';
import type { RepositoryModel } from '../registry/repository.js';
import { parseRetrainingConfig, type RetrainingConfig } from '../retraining/config.js';
import { Retrainer } from '../retraining/retrainer.js';
import { bindModel, registerScore } from './score.js';
import { registerStream, type StreamHandle } from './stream.js';
import { RepositoryControl } from './repository.js';
import { registerModelControl } from './model-control.js';
import { OPERATIONS } from './api.js';
import { RouteTable } from './routes.js';
import { ConnectionGuard, listenExclusive } from './listener.js';
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
  const dir = prepareDataDir(config.dataDir);
  if (dir.tightened.length > 0) log.warn({ dataDir: config.dataDir, changed: dir.tightened.slice(0, 50), count: dir.tightened.length }, 'the data dir was open to other users: their permissions on it and on scoreline\'s files in it are removed');
  if (dir.failed.length > 0) log.warn({ dataDir: config.dataDir, failed: dir.failed }, 'the data dir is open to other users and could not be tightened');
  const mon = config.monitoring;
  const predictionLog = mon.enabled ? new PredictionLog({ dataDir: config.dataDir, ...mon.predictionLog, logger: log }) : null;
  const monitor = new Monitor({ enabled: mon.enabled, log: predictionLog, sla: mon.sla, minSamples: mon.minSamples });
  const engine = new InferenceEngine({
    workers: config.inference.workers,
    tasksPerWorker: config.inference.tasksPerWorker,
    intraOpThreads: config.inference.intraOpThreads,
    inlineBelowMicros: config.inference.inlineBelowMicros,
    batching: config.batching,
    maxRowsPerRequest: config.limits.maxRowsPerRequest,
    observerFor: (model) => monitor.version(model),
  });
  let features: FeatureService | null = null;
  let ctx: ServerContext;
  let repoModels: readonly RepositoryModel[] = [];
  let repository: RepositoryControl | null = null;
  /** A start that fails part way releases what it opened. */
  const abandon = async () => {
    repository?.close();
    deployer.close();
    await features?.close();
    await engine.close();
    registry.close();
    await monitor.close();
  };
  const registry = ModelRegistry.open(config.dataDir, {
    onArtifactRefusal: (err, sha) => log.error({ sha256: sha, err: err.message }, 'artifact refused: it does not match its sha256'),
  });
  const router = new Router(engine);
  const pinned = new Map<string, Set<number>>();
  const deployer = new Deployer({
    registry,
    engine,
    router,
    log,
    latencyBudgetMicros: config.deploy.latencyBudgetMicros,
    policy: config.deploy.analysis,
    tickMs: config.deploy.analysisTickMs,
    referenceOf: (m) => {
      const b = monitor.find(m)?.stats.baselines;
      return b?.score ? { edges: b.score.edges, refShares: b.score.refShares, rows: b.rows } : null;
    },
    pinned: (name) => pinned.get(name) ?? NONE,
    onLoaded: (m) => {
      if (features !== null) bindModel(ctx, features, m);
      if (mon.enabled) void restoreReference(ctx, m);
    },
  });
  try {
    features = await createFeatureService(config.features, monitor.featureObserver(), log);
    ctx = { config, engine, monitor, log, features, registry, router, deployer, http: { log, origins: new OriginPolicy(config.cors.allowedOrigins) }, draining: false };
    if (features !== null) {
      registerFeatureMetrics(ctx, features);
      for (const l of features.loaded) log.info({ source: l.source, rows: l.rows, rejected: l.rejected, seconds: l.seconds }, 'feature source loaded into the in-process store');
      const h = features.health();
      if (h.status !== 'ok') log.warn({ reason: h.reason }, 'feature serving starts degraded');
    }
    repository = new RepositoryControl(ctx, pinned);
    repoModels = await repository.start();
    await deployer.restore();
  } catch (e) {
    await abandon();
    throw e;
  }
  const alerting = await createAlerting(mon, monitor, log, () => {
    const out = new Map<string, Set<string>>();
    for (const m of engine.list()) {
      if (out.has(m.name)) continue;
      const spec = deployer.state(m.name)?.spec;
      let versions: string[] = [];
      if (spec !== undefined) versions = versionsOf(spec).map(String);
      else {
        try {
          versions = [engine.lookup(m.name).version];
        } catch {
          versions = [];
        }
      }
      out.set(m.name, new Set(versions));
    }
    return out;
  });
  let retrainer: Retrainer;
  try {
    retrainer = new Retrainer({
      dataDir: config.dataDir,
      log,
      registry,
      deployer,
      predictionLog,
      alerts: alerting.manager,
      channels: alerting.channels,
      configs: retrainingConfigs(ctx, repoModels),
      definitionsPath: config.features.definitions,
      freezeReference: async (name, version, csv) => {
        const m = await deployer.ensureLoaded(name, version);
        await freezeFromCsv(ctx, m, csv);
      },
    });
    retrainer.start();
    monitor.callback('scoreline_retraining_jobs', 'Retraining jobs by model and state (queued, running, validating, deploying, succeeded, rejected, failed, rolled_back).', 'gauge', () =>
      retrainer.counts().map((c) => ({ labels: { model: c.model, state: c.state }, value: c.n })),
    );
  } catch (e) {
    await alerting.close();
    await abandon();
    throw e;
  }
  const token = adminToken(config.dataDir);
  log.info({ source: token.source }, 'admin API token');
  registerRegistryMetrics(ctx);

  const raw: TemplatedApp = uws.App();
  // Route modules register through the route table: what they register is what /openapi.json describes.
  const routes = new RouteTable(raw, OPERATIONS);
  const app = routes.app;
  let openapi = '';
  app.get('/openapi.json', (res) => sendJson(res, 200, openapi));
  registerOip(app, ctx);
  registerScore(app, ctx, features);
  const guard = adminGuard(token.token);
  registerAdmin(app, ctx, { registry, deployer, alerting, retrainer, guard, maxModelBytes: config.admin.maxModelBytes });
  registerModelControl(app, ctx, repository!, guard);
  const streams: StreamHandle = registerStream(app, ctx);
  registerObserve(app, ctx, streams, alerting.alertsOf);
  registerDashboard(app);
  const evaluator = setInterval(
    () =>
      void monitor
        .evaluate()
        .then(() => alerting.evaluate())
        .catch((e: Error) => log.error({ err: e.message }, 'monitoring evaluation failed')),
    mon.evaluateSeconds * 1000,
  );
  evaluator.unref();
  routes.verify();
  openapi = JSON.stringify(routes.document());
  const patterns = routes.patterns();
  registerPreflight(raw, ctx.http, patterns);
  const websockets = new Set(routes.operations().filter((op) => op.websocket).map((op) => op.pattern));
  for (const pattern of patterns) {
    raw.any(pattern, (res, req) => {
      const method = req.getMethod();
      sendError(res, method === 'get' && websockets.has(pattern) ? upgradeRequired(req.getUrl()) : methodNotAllowed(method, req.getUrl()));
    });
  }
  raw.any('/*', (res, req) => {
    sendError(res, routeNotFound(req.getMethod(), req.getUrl()));
  });

  const { host, port } = config.server;
  let listenSocket: us_listen_socket;
  try {
    listenSocket = await listenExclusive(raw, host, port);
  } catch (e) {
    clearInterval(evaluator);
    await retrainer.close();
    await alerting.close();
    await abandon();
    throw e;
  }
  const boundPort = uws.us_socket_local_port(listenSocket as never);
  repository!.poll(config.repository.poll);
  const connections = new ConnectionGuard({ uws, app: raw, host, port: boundPort, maxConnections: config.limits.maxConnections, log }, listenSocket);
  monitor.callback('scoreline_connections', 'Open client connections (approximate: open file descriptors above those held at start).', 'gauge', () => [{ labels: {}, value: connections.connections }]);
  monitor.callback('scoreline_connection_limit', 'limits.maxConnections: at it, new connections are refused until some close.', 'gauge', () => [{ labels: {}, value: connections.limit }]);
  monitor.callback('scoreline_accepting_connections', 'Whether the server accepts new connections (0 while at the connection limit).', 'gauge', () => [{ labels: {}, value: connections.accepting ? 1 : 0 }]);
  monitor.callback('scoreline_connection_limit_reached_total', 'Times the connection limit was reached and new connections refused.', 'counter', () => [{ labels: {}, value: connections.pauses }]);
  log.info({ host, port: boundPort, models: engine.list().map((m) => `${m.name}:${m.version}`) }, `scoreline listening on http://${host}:${boundPort}`);

  let closing: Promise<boolean> | null = null;
  const close = (): Promise<boolean> =>
    (closing ??= (async () => {
      ctx.draining = true;
      connections.close();
      repository!.close();
      const timeout = config.server.shutdownTimeoutMs;
      log.info({ timeoutMs: timeout }, 'shutting down: finishing in-flight requests');
      const drained = await engine.drain(timeout);
      // Let the last answers leave before sockets close.
      await new Promise((r) => setTimeout(r, 20));
      streams.closeAll();
      clearInterval(evaluator);
      await retrainer.close();
      await alerting.close();
      deployer.close();
      await engine.close();
      await features?.close();
      await monitor.close();
      registry.close();
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

/** Retraining sections: each repository model's model.yaml, then the server config's (which win). */
function retrainingConfigs(ctx: ServerContext, repo: readonly RepositoryModel[]): Map<string, RetrainingConfig> {
  const out = new Map<string, RetrainingConfig>();
  for (const m of repo) {
    if (m.config.retraining === undefined) continue;
    out.set(m.name, parseRetrainingConfig(m.config.retraining, `${m.dir}/model.yaml: retraining`, m.dir, m.config.label));
  }
  for (const [name, section] of Object.entries(ctx.config.retraining)) {
    let label: string | undefined;
    try {
      const latest = ctx.registry.getModel(name).latestVersion;
      label = (ctx.registry.getVersion(name, latest).config as ModelConfig).label;
    } catch {
      ctx.log.warn({ model: name }, 'retraining configured for a model the registry does not have (yet)');
    }
    out.set(name, parseRetrainingConfig(section, `retraining.${name}`, process.cwd(), label));
  }
  return out;
}

function registerRegistryMetrics(ctx: ServerContext): void {
  ctx.monitor.callback('scoreline_artifact_refusals_total', 'Model artifacts refused on load because their bytes no longer match their sha256, or are missing.', 'counter', () => {
    const c = ctx.registry.counters();
    return [
      { labels: { reason: 'tampered' }, value: c.tamperedRefusals },
      { labels: { reason: 'missing' }, value: c.missingRefusals },
    ];
  });
}

const NONE: ReadonlySet<number> = new Set();
