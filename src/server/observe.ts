// Observability endpoints: Prometheus exposition at /metrics and the per-version JSON snapshot at
// /v1/monitoring/{model} (exact latency percentiles, RPS, error rate, queue state).

import { badRequest } from '../errors.js';
import type { LoadedModel } from '../inference/index.js';
import { monitorOf, type ServerContext } from './context.js';
import { sendError, sendJson, sendText, type ResponseState } from './http.js';
import type { StreamHandle } from './stream.js';
import type { HttpResponse, TemplatedApp } from './uws.js';

type Res = HttpResponse & ResponseState;

export function monitoringSnapshot(ctx: ServerContext, m: LoadedModel) {
  const mon = monitorOf(ctx, m);
  return {
    model: m.name,
    version: m.version,
    window: 'all',
    state: m.state,
    latency: mon.latency.snapshot(),
    volume: mon.volume.total === 0 ? { requests: 0, errors: 0, rps: 0, error_rate: null } : mon.volumeSnapshot(),
    queue: { waiting: m.batcher.queued, pending: m.batcher.pending, max: m.batching.maxQueueSize },
  };
}

export function registerObserve(app: TemplatedApp, ctx: ServerContext, streams: StreamHandle): void {
  const { engine, monitor } = ctx;
  monitor.gauge('scoreline_model_ready', 'Whether a model version is loaded, warmed up and serving (1) or not (0).', ['model', 'version'], (set) => {
    for (const m of engine.list()) set({ model: m.name, version: m.version }, m.state === 'ready' ? 1 : 0);
  });
  monitor.gauge('scoreline_inference_queue_depth', 'Requests accepted by the batcher and not yet dispatched.', ['model', 'version'], (set) => {
    for (const m of engine.list()) set({ model: m.name, version: m.version }, m.batcher.queued);
  });
  monitor.gauge('scoreline_websocket_connections', 'Open /v1/stream connections.', [], (set) => set({}, streams.connections));
  monitor.gauge('scoreline_websocket_pending_answers', 'Answers waiting in WebSocket outboxes for slow readers to drain.', [], (set) => set({}, streams.queuedAnswers));
  monitor.gauge('scoreline_inference_batches_in_flight', 'Batches running or queued on the inference workers.', [], (set) => {
    set({}, engine.inFlight);
  });

  app.get('/metrics', (res: Res) => {
    res.onAborted(() => {
      res.aborted = true;
    });
    monitor.exposition().then(
      (text) => sendText(res, 200, monitor.contentType, text),
      (e) => sendError(res, e, ctx.log),
    );
  });

  app.get('/v1/monitoring/:model', (res: Res, req) => {
    const name = req.getParameter(0);
    const version = req.getQuery('version') || undefined;
    const window = req.getQuery('window') || 'all';
    try {
      if (window !== 'all') throw badRequest(`window '${window}' is not supported yet; use 'all'`);
      const m = version === undefined ? engine.resolve(name) : engine.lookup(name, version);
      sendJson(res, 200, JSON.stringify(monitoringSnapshot(ctx, m)));
    } catch (e) {
      sendError(res, e, ctx.log);
    }
  });
}
