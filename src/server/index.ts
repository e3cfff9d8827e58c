// The scoreline server: one uWS app on one port for inference (OIP v2, v1 :predict, WebSocket),
// health, metrics and monitoring, and OIP over gRPC on a port of its own (grpc.port). start() loads
// the model repository onto the inference engine and listens; close() is the graceful shutdown:
// refuse new work, finish what is in flight within the configured time, close connections and the
// worker pool. Every route is registered through the gate (request ids, API keys, tracing, access
// log) and the route table (every route described in api.ts, GET /openapi.json generated from it),
// and model control and repository polling work on the model repository while it runs (repository.ts).
// With TLS, reloadTls() builds a new SSL app with the same routes from the re-read certificate
// and moves the port to it; connections already open stay with the previous app (uWS.js v20.30
// cannot change a listening app's certificate, and its SNI contexts need routes of their own and
// never serve clients that send no server name).

import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { ServerConfig } from '../config.js';
import { methodNotAllowed, notReady, routeNotFound, upgradeRequired } from '../errors.js';
import { InferenceEngine, type LoadedModel } from '../inference/index.js';
import { Monitor, PredictionLog, SharedMonitoring } from '../monitoring/index.js';
import { Deployer, Router, versionsOf } from '../deploy/index.js';
import { createFeatureService, type FeatureService } from '../features/index.js';
import { openStore, storeUrl } from '../store/index.js';
import { prepareDataDir, type RepositoryModel } from '../registry/index.js';
import { adminGuard, registerAdmin } from './admin.js';
import { adminTokenFor, importLegacyAlerts, replicaIdOf } from './replica.js';
import type { ServerContext } from './context.js';
import { OriginPolicy, registerPreflight, sendError, sendJson } from './http.js';
import { registerObserve } from './observe.js';
import { registerDashboard } from './dashboard.js';
import { registerOip } from './oip.js';
import { createAlerting, type Alerting } from './alerting.js';
import { Cluster } from './cluster.js';
import { freezeFromCsv, refreshReference, restoreReference } from './reference.js';
import type { ModelConfig } from '../config.js';
import { parseRetrainingConfig, Retrainer, type RetrainingConfig } from '../retraining/index.js';
import { bindModel, registerScore } from './score.js';
import { registerStream } from './stream.js';
import { RepositoryControl } from './repository.js';
import { registerModelControl } from './model-control.js';
import { RouteTable } from './routes.js';
import { ConnectionGuard, listenExclusive } from './listener.js';
import { startGrpc, type GrpcServer } from './grpc.js';
import { loadUws, type TemplatedApp, type us_listen_socket } from './uws.js';
import pkg from '../version.js';
import { AccessLog } from './access-log.js';
import { ApiKeys } from './api-keys.js';
import { Gate, registerGateMetrics } from './gate.js';
import { registerObserveMetrics } from './observe.js';
import { Streams } from './stream.js';
import { TlsFiles } from './tls.js';
import { ThreadMetrics, type ThreadRole } from './threads.js';
import { startTracing } from './tracing.js';

export interface RunningServer {
  readonly port: number;
  /** The gRPC port, or null when grpc.port turns it off. */
  readonly grpcPort: number | null;
  readonly host: string;
  readonly engine: InferenceEngine;
  readonly monitor: Monitor;
  /** Whether the port serves TLS. */
  readonly tls: boolean;
  /**
   * Re-reads the TLS certificate and key (SIGHUP) and serves new connections with them; open ones
   * keep theirs. False (logged) when TLS is off or the new files are refused: the current pair stays.
   */
  reloadTls(): boolean;
  /** Graceful shutdown; resolves true when every in-flight request was answered in time. */
  close(): Promise<boolean>;
  /**
   * Stops serving at once, answering nothing more: for an HTTP thread going down after a bug. Its uWS
   * apps and their sockets are closed, which a worker thread needs before it can end.
   */
  abort(): void;
}

export interface StartOptions {
  config: ServerConfig;
  log: Logger;
  /** One of the process's HTTP threads sharing the port (threads.ts); absent: the only one. */
  thread?: ThreadRole;
}

export async function startServer({ config, log, thread }: StartOptions): Promise<RunningServer> {
  const uws = loadUws();
  // Credentials and certificates first: a mistake there stops the start before anything loads.
  const keys = ApiKeys.forServer(config, process.env.SCORELINE_API_KEYS, log);
  const tls = config.tls === null ? null : new TlsFiles(config.tls.cert, config.tls.key);
  if (tls !== null)
    log.info({ subject: tls.pair.subject, notAfter: tls.pair.notAfter, fingerprint256: tls.pair.fingerprint256 }, 'TLS certificate');
  const tracing = await startTracing(config.tracing, log, pkg.version);
  const access = config.accessLog.enabled && config.accessLog.sampleRate > 0 ? new AccessLog(log, config.accessLog.sampleRate) : null;
  const dir = prepareDataDir(config.dataDir);
  if (dir.tightened.length > 0)
    log.warn(
      { dataDir: config.dataDir, changed: dir.tightened.slice(0, 50), count: dir.tightened.length },
      "the data dir was open to other users: their permissions on it and on scoreline's files in it are removed",
    );
  if (dir.failed.length > 0)
    log.warn({ dataDir: config.dataDir, failed: dir.failed }, 'the data dir is open to other users and could not be tightened');
  // A worker HTTP thread is a replica of its own (SCORELINE_REPLICA_ID names the process's threads apart).
  const replicaId = thread === undefined || thread.index === 0 ? replicaIdOf() : `${replicaIdOf()}-t${thread.index}`;
  const sharedPort = thread !== undefined && thread.count > 1;
  // A shared store that cannot be reached yet is waited for here, with the reason logged at every try.
  const store = await openStore({
    url: storeUrl(config.store.url),
    dataDir: config.dataDir,
    log,
    origin: replicaId,
    onArtifactRefusal: (err, sha) => log.error({ sha256: sha, err: err.message }, 'artifact refused: it does not match its sha256'),
    onCacheRepaired: (sha, path) =>
      log.warn({ sha256: sha, path }, 'the cached copy of an artifact was damaged; fetched again from the store'),
  });
  const shared = store.cluster.shared;
  log.info({ store: store.location, replica: replicaId }, shared ? 'store: shared with the other replicas' : 'store: embedded');
  const registry = store.registry;
  const mon = config.monitoring;
  // With the PostgreSQL store the prediction log is shared through it: labels join on any replica.
  const sharedUrl = store.kind === 'postgres' ? storeUrl(config.store.url) : null;
  const predictionLog = mon.enabled
    ? new PredictionLog({
        dataDir: config.dataDir,
        ...mon.predictionLog,
        logger: log,
        ...(sharedUrl !== null ? { shared: { url: sharedUrl } } : {}),
      })
    : null;
  const monitor = new Monitor({ enabled: mon.enabled, log: predictionLog, sla: mon.sla, minSamples: mon.minSamples });
  const clusterRef: { current: Cluster | null } = { current: null };
  let shareTimer: NodeJS.Timeout | null = null;
  if (mon.enabled && store.monitoring !== null) {
    const records = store.monitoring;
    monitor.shareWith(
      new SharedMonitoring({
        records,
        // Per process life: a replica restarted under the same SCORELINE_REPLICA_ID must neither hide
        // nor overwrite the buckets its previous life wrote.
        replica: `${replicaId}@${Date.now().toString(36)}`,
        log: log.child({ component: 'monitoring' }),
        evaluationOf: (vm) => monitor.evaluationPoint(vm),
      }),
    );
    let sweeps = 0;
    shareTimer = setInterval(() => {
      void monitor.share();
      // Now and then the leader drops cells no window reads any more: minutes after a day (history), hours after the retention.
      if (++sweeps % 600 === 1 && (clusterRef.current?.leads() ?? false)) {
        const now = Date.now();
        records
          .prune(now - 25 * 3_600_000, now - Math.max(8, mon.predictionLog.retentionDays) * 86_400_000)
          .catch((e: Error) => log.warn({ err: e.message }, 'monitoring: old shared cells could not be pruned; tried again later'));
      }
    }, config.store.shareSeconds * 1000);
    shareTimer.unref();
  }
  const engine = new InferenceEngine({
    workers: config.inference.workers,
    tasksPerWorker: config.inference.tasksPerWorker,
    intraOpThreads: config.inference.intraOpThreads,
    inlineBelowMicros: config.inference.inlineBelowMicros,
    treeEngine: config.inference.treeEngine,
    batching: config.batching,
    maxRowsPerRequest: config.limits.maxRowsPerRequest,
    observerFor: (model) => monitor.version(model),
  });
  let features: FeatureService | null = null;
  let ctx: ServerContext;
  let repoModels: readonly RepositoryModel[] = [];
  let cluster: Cluster | null = null;
  let repository: RepositoryControl | null = null;
  /** A start that fails part way releases what it opened. */
  const abandon = async () => {
    repository?.close();
    await tracing?.shutdown();
    await cluster?.close();
    deployer.close();
    await features?.close();
    await engine.close();
    if (shareTimer !== null) clearInterval(shareTimer);
    await monitor.close();
    await store.close();
  };
  /** A version's frozen drift reference, which canary analysis judges its live scores against. */
  const referenceOf = (m: LoadedModel) => {
    const b = monitor.find(m)?.stats.baselines;
    return b?.score ? { edges: b.score.edges, refShares: b.score.refShares, rows: b.rows } : null;
  };
  // Asked per score while a version has no reference yet: no object made for the answer.
  const router = new Router(engine, (m) => monitor.find(m)?.stats.baselines?.score?.edges ?? null);
  const pinned = new Map<string, Set<number>>();
  const deployer = new Deployer({
    registry,
    engine,
    router,
    log,
    latencyBudgetMicros: config.deploy.latencyBudgetMicros,
    policy: config.deploy.analysis,
    tickMs: config.deploy.analysisTickMs,
    referenceOf,
    pinned: (name) => pinned.get(name) ?? NONE,
    onLoaded: (m) => {
      if (features !== null) bindModel(ctx, features, m);
      if (mon.enabled) void restoreReference(ctx, m);
    },
    leads: () => cluster?.leads() ?? false,
    shared,
    ...(store.canary !== null
      ? {
          stepSharing: {
            records: store.canary,
            // Per process life, as for monitoring: a restarted replica's earlier requests of the step stay counted.
            replica: `${replicaId}@${Date.now().toString(36)}`,
            everyMs: config.store.shareSeconds * 1000,
          },
        }
      : {}),
  });
  try {
    features = await createFeatureService(config.features, { observer: monitor.featureObserver(), log, dataDir: config.dataDir });
    ctx = {
      config,
      engine,
      monitor,
      log,
      features,
      registry,
      router,
      deployer,
      http: { log, origins: new OriginPolicy(config.cors.allowedOrigins) },
      draining: false,
      keys,
      tls,
      tracing,
    };
    if (features !== null) {
      registerFeatureMetrics(ctx, features);
      for (const l of features.loaded)
        log.info(
          { source: l.source, rows: l.rows, rejected: l.rejected, seconds: l.seconds },
          'feature source loaded into the feature store',
        );
      const h = features.health();
      if (h.status !== 'ok') log.warn({ reason: h.reason }, 'feature serving starts degraded');
    }
    repository = new RepositoryControl(ctx, pinned);
    repoModels = await repository.start();
    await deployer.restore();
    if (!shared && predictionLog !== null) await importLegacyAlerts(store, predictionLog, log);
  } catch (e) {
    await abandon();
    throw e;
  }
  let alerting: Alerting;
  let retrainer: Retrainer;
  try {
    alerting = await createAlerting(mon, monitor, store.alerts, log, () => {
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
  } catch (e) {
    await abandon();
    throw e;
  }
  try {
    retrainer = new Retrainer({
      dataDir: config.dataDir,
      log,
      registry,
      jobs: store.jobs,
      deployer,
      predictionLog,
      alerts: alerting.manager,
      channels: alerting.channels,
      configs: await retrainingConfigs(ctx, repoModels),
      definitionsPath: config.features.definitions,
      replicaId,
      shared,
      freezeReference: async (name, version, csv) => {
        const m = await deployer.ensureLoaded(name, version);
        await freezeFromCsv(ctx, m, csv);
      },
    });
    monitor.callback(
      'scoreline_retraining_jobs',
      'Retraining jobs by model and state (queued, running, validating, deploying, succeeded, rejected, failed, rolled_back).',
      'gauge',
      () => retrainer.counts().map((c) => ({ labels: { model: c.model, state: c.state }, value: c.n })),
    );
  } catch (e) {
    await alerting.close();
    await abandon();
    throw e;
  }
  const { host, port } = config.server;
  const token = await adminTokenFor(config.dataDir, store);
  log.info({ source: token.source }, 'admin API token');
  registerRegistryMetrics(ctx);

  const streams = new Streams();
  const feedbackCounts = registerObserveMetrics(ctx, streams);
  registerGateMetrics(ctx, keys, tracing, access, tls);
  const gate = new Gate({ keys, metricsPublic: config.auth.metricsPublic, tracing, access, log });
  const admin = adminGuard(token.token);
  const control = repository!;
  /** The API description: the first app's routes (every build registers the same), once the gRPC port is known. */
  let describe: ((grpcPort: number | null) => string) | null = null;
  let openapi: string | null = null;
  /**
   * A new uWS app (SSL with the current certificate when TLS is on) with every route registered:
   * raw app -> the gate (request id, key and scope, tracing, access log) -> the route table (only
   * described routes; their schemas and access rules). The 405/404 answers pass the gate too.
   */
  const buildApp = (): TemplatedApp => {
    const raw = tls === null ? uws.App() : tls.withFiles((files) => uws.SSLApp(files));
    const gated = gate.wrap(raw);
    const routes = new RouteTable(gated);
    const app = routes.app;
    app.get('/openapi.json', (res) => {
      if (openapi === null) sendError(res, notReady('the API description (the server is starting)'));
      else sendJson(res, 200, openapi);
    });
    registerOip(app, ctx);
    registerScore(app, ctx, features);
    registerAdmin(app, ctx, {
      registry,
      deployer,
      alerting,
      retrainer,
      cluster: clusterRef,
      guard: admin,
      maxModelBytes: config.admin.maxModelBytes,
    });
    registerModelControl(app, ctx, control, admin);
    registerStream(app, ctx, streams, keys);
    registerObserve(app, ctx, alerting.alertsOf, feedbackCounts);
    registerDashboard(app);
    routes.verify();
    describe ??= (grpcPort) => JSON.stringify(routes.document({ auth: keys !== null, metricsPublic: config.auth.metricsPublic, grpcPort }));
    const patterns = routes.patterns();
    registerPreflight(gated, ctx.http, patterns);
    const websockets = new Set(
      routes
        .operations()
        .filter((op) => op.websocket)
        .map((op) => op.pattern),
    );
    for (const pattern of patterns) {
      gated.any(pattern, (res, req) => {
        const method = req.getMethod();
        sendError(
          res,
          method === 'get' && websockets.has(pattern) ? upgradeRequired(req.getUrl()) : methodNotAllowed(method, req.getUrl()),
        );
      });
    }
    gated.any('/*', (res, req) => {
      sendError(res, routeNotFound(req.getMethod(), req.getUrl()));
    });
    return raw;
  };
  let app: TemplatedApp;
  /** Every app built (a TLS reload builds another; the old one keeps its connections): closed at the end. */
  const apps: TemplatedApp[] = [];
  const closeApps = () => {
    for (const a of apps.splice(0)) (a as unknown as { close(): void }).close();
  };
  try {
    app = buildApp();
    apps.push(app);
  } catch (e) {
    await retrainer.close();
    await alerting.close();
    await abandon();
    throw e;
  }
  const evaluator = setInterval(
    () =>
      void monitor
        .evaluate()
        .then(() => {
          if (cluster?.leads()) alerting.evaluate();
        })
        .catch((e: Error) => log.error({ err: e.message }, 'monitoring evaluation failed')),
    mon.evaluateSeconds * 1000,
  );
  evaluator.unref();

  let listenSocket: us_listen_socket;
  try {
    listenSocket = await listenExclusive(uws, app, host, port, sharedPort);
  } catch (e) {
    clearInterval(evaluator);
    await retrainer.close();
    await alerting.close();
    await abandon();
    // A worker thread that holds a uWS app cannot end.
    closeApps();
    throw e;
  }
  const boundPort = uws.us_socket_local_port(listenSocket as never);
  let grpcServer: GrpcServer | null = null;
  const grpcPort = config.grpc.port;
  if (grpcPort !== null && grpcPort !== false) {
    try {
      grpcServer = await startGrpc(ctx, host, grpcPort);
    } catch (e) {
      uws.us_listen_socket_close(listenSocket as never);
      clearInterval(evaluator);
      await retrainer.close();
      await alerting.close();
      await abandon();
      closeApps();
      throw e;
    }
  }
  openapi = describe!(grpcServer?.port ?? null);
  control.poll(config.repository.poll);
  const guard = new ConnectionGuard(
    { uws, app, host, port: boundPort, maxConnections: config.limits.maxConnections, log, shared: sharedPort },
    listenSocket,
  );
  if (sharedPort) {
    const gather = new ThreadMetrics(thread, monitor.registry);
    monitor.gatherWith(gather);
    monitor.callback('scoreline_http_threads', 'HTTP threads of the process sharing the port (http.threads).', 'gauge', () => [
      { labels: {}, value: thread.count },
    ]);
    monitor.callback(
      'scoreline_http_threads_unanswered_total',
      "Scrapes of this thread that went out without another thread's series (it did not answer within 2 s).",
      'counter',
      () => [{ labels: {}, value: gather.unanswered }],
    );
  }
  monitor.callback(
    'scoreline_connections',
    'Open client connections (approximate: open file descriptors above those held at start).',
    'gauge',
    () => [{ labels: {}, value: guard.connections }],
  );
  monitor.callback(
    'scoreline_connection_limit',
    'limits.maxConnections: at it, new connections are refused until some close.',
    'gauge',
    () => [{ labels: {}, value: guard.limit }],
  );
  monitor.callback(
    'scoreline_accepting_connections',
    'Whether the server accepts new connections (0 while at the connection limit).',
    'gauge',
    () => [{ labels: {}, value: guard.accepting ? 1 : 0 }],
  );
  if (store.canary !== null) {
    monitor.callback(
      'scoreline_canary_shared_steps_total',
      "Rows of canary step statistics this replica wrote to the shared store (a canary's current step, every share interval it changed).",
      'counter',
      () => [{ labels: {}, value: deployer.stepSharing()?.shared ?? 0 }],
    );
    monitor.callback(
      'scoreline_canary_share_errors_total',
      "Failed writes and reads of canary step statistics in the shared store; the analysis uses this replica's own and the last rows read of the step, and sharing is retried.",
      'counter',
      () => [{ labels: {}, value: deployer.stepSharing()?.errors ?? 0 }],
    );
  }
  monitor.callback(
    'scoreline_connection_limit_reached_total',
    'Times the connection limit was reached and new connections refused.',
    'counter',
    () => [{ labels: {}, value: guard.pauses }],
  );

  // The bound port is known now: the replica reports where it answers, and the first lease attempt
  // decides whether it leads (with SQLite it does, and fails the jobs a killed process left running).
  cluster = new Cluster({
    store,
    deployer,
    retrainer,
    alerting,
    log,
    id: replicaId,
    address: config.store.address ?? `${host === '0.0.0.0' || host === '::' ? hostname() : host}:${boundPort}`,
    refreshReferences: async (only) => {
      if (!mon.enabled) return;
      for (const m of engine.list()) {
        if (m.state !== 'ready' || (only !== undefined && (m.name !== only.model || m.versionNumber !== only.version))) continue;
        await refreshReference(ctx, m);
      }
    },
    heartbeatMs: config.store.heartbeatSeconds * 1000,
    leaseMs: config.store.leaseSeconds * 1000,
    resyncMs: config.store.resyncSeconds * 1000,
  });
  clusterRef.current = cluster;
  try {
    await cluster.start();
  } catch (e) {
    guard.close();
    clearInterval(evaluator);
    await retrainer.close();
    await alerting.close();
    await abandon();
    closeApps();
    throw e;
  }
  log.info(
    {
      host,
      port: boundPort,
      grpcPort: grpcServer?.port ?? null,
      tls: tls !== null,
      replica: replicaId,
      models: engine.list().map((m) => `${m.name}:${m.version}`),
    },
    `scoreline listening on ${tls === null ? 'http' : 'https'}://${host}:${boundPort}${grpcServer !== null ? ` and gRPC ${host}:${grpcServer.port}` : ''}`,
  );

  const reloadTls = (): boolean => {
    if (tls === null) {
      log.info('TLS reload asked (SIGHUP), but the server has no tls section: nothing to reload');
      return false;
    }
    const before = tls.pair;
    let next: TemplatedApp;
    try {
      tls.reload();
      next = buildApp();
    } catch (e) {
      log.error(
        { err: (e as Error).message, certFile: tls.certFile, keyFile: tls.keyFile, serving: before.fingerprint256 },
        'TLS reload refused: the current certificate stays in use',
      );
      return false;
    }
    if (!guard.swap(next)) {
      log.error({ port: boundPort }, 'TLS reload: the new certificate could not take over the port; the previous one keeps serving');
      return false;
    }
    app = next;
    apps.push(next);
    const p = tls.pair;
    log.info(
      { subject: p.subject, notAfter: p.notAfter, fingerprint256: p.fingerprint256, previous: before.fingerprint256 },
      'TLS certificate reloaded: new connections use it, open ones keep theirs',
    );
    return true;
  };

  let closing: Promise<boolean> | null = null;
  const close = (): Promise<boolean> =>
    (closing ??= (async () => {
      ctx.draining = true;
      guard.close();
      control.close();
      const timeout = config.server.shutdownTimeoutMs;
      log.info({ timeoutMs: timeout }, 'shutting down: finishing in-flight requests');
      const drained = await engine.drain(timeout);
      // Let the last answers leave before sockets close.
      await new Promise((r) => setTimeout(r, 20));
      streams.closeAll();
      // Answered calls are still being written out: a short grace, then the port closes.
      await grpcServer?.close(1000);
      clearInterval(evaluator);
      await retrainer.close();
      await alerting.close();
      await cluster?.close();
      deployer.close();
      await engine.close();
      await features?.close();
      // What this replica served last goes to the others before it leaves.
      if (shareTimer !== null) clearInterval(shareTimer);
      await monitor.share().catch(() => undefined);
      await monitor.close();
      await store.close();
      access?.close();
      if (tracing !== null) {
        // A collector that hangs must not hold the exit past the orchestrator's grace period.
        const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), TRACING_SHUTDOWN_MS).unref());
        const done = await Promise.race([
          tracing.shutdown().then(
            () => 'ok' as const,
            (e: Error) => e.message,
          ),
          timer,
        ]);
        if (done !== 'ok') log.warn({ reason: done }, 'tracing: spans still buffered at shutdown were not all exported');
      }
      // The sockets left (keep-alive connections, idle or not) go with the apps.
      closeApps();
      log.info({ drained }, drained ? 'shutdown complete' : 'shutdown timed out with requests still in flight');
      return drained;
    })());

  const abort = (): void => {
    ctx.draining = true;
    guard.close();
    closeApps();
  };

  return { port: boundPort, grpcPort: grpcServer?.port ?? null, host, engine, monitor, tls: tls !== null, reloadTls, close, abort };
}

function registerFeatureMetrics(ctx: ServerContext, features: FeatureService): void {
  const cache = features.cache;
  if (cache !== null) {
    const stat = (k: 'hits' | 'misses' | 'evictions' | 'expirations') => () => [{ labels: {}, value: cache.stats()[k] }];
    ctx.monitor.callback('scoreline_feature_cache_hits_total', 'Reads answered by the native L1 feature cache.', 'counter', stat('hits'));
    ctx.monitor.callback(
      'scoreline_feature_cache_misses_total',
      'Reads the native L1 feature cache could not answer.',
      'counter',
      stat('misses'),
    );
    ctx.monitor.callback(
      'scoreline_feature_cache_evictions_total',
      'Entries evicted from the L1 cache to make room.',
      'counter',
      stat('evictions'),
    );
    ctx.monitor.callback(
      'scoreline_feature_cache_expirations_total',
      'L1 cache entries dropped because their TTL passed.',
      'counter',
      stat('expirations'),
    );
    ctx.monitor.callback('scoreline_feature_cache_entries', 'Entries in the L1 cache.', 'gauge', () => [
      { labels: {}, value: cache.stats().entries },
    ]);
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
async function retrainingConfigs(ctx: ServerContext, repo: readonly RepositoryModel[]): Promise<Map<string, RetrainingConfig>> {
  const out = new Map<string, RetrainingConfig>();
  for (const m of repo) {
    if (m.config.retraining === undefined) continue;
    out.set(m.name, parseRetrainingConfig(m.config.retraining, `${m.dir}/model.yaml: retraining`, m.dir, m.config.label));
  }
  for (const [name, section] of Object.entries(ctx.config.retraining)) {
    let label: string | undefined;
    try {
      const latest = (await ctx.registry.getModel(name)).latestVersion;
      label = ((await ctx.registry.getVersion(name, latest)).config as ModelConfig).label;
    } catch {
      ctx.log.warn({ model: name }, 'retraining configured for a model the registry does not have (yet)');
    }
    out.set(name, parseRetrainingConfig(section, `retraining.${name}`, process.cwd(), label));
  }
  return out;
}

function registerRegistryMetrics(ctx: ServerContext): void {
  ctx.monitor.callback(
    'scoreline_artifact_refusals_total',
    'Model artifacts refused on load because their bytes no longer match their sha256, or are missing.',
    'counter',
    () => {
      const c = ctx.registry.counters();
      return [
        { labels: { reason: 'tampered' }, value: c.tamperedRefusals },
        { labels: { reason: 'missing' }, value: c.missingRefusals },
      ];
    },
  );
}

const NONE: ReadonlySet<number> = new Set();
const TRACING_SHUTDOWN_MS = 3000;
