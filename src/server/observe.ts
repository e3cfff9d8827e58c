// Observability endpoints: Prometheus exposition at /metrics; the monitoring snapshot of a version
// over a window at /v1/monitoring/{model} (performance, drift, predictions, latency, volume, SLA,
// alerts), its per-minute history, the list of monitored models; and delayed labels at
// POST /v1/feedback, joined to logged predictions by request id.

import { badRequest, labelInvalid, notReady } from '../errors.js';
import { isObject } from '../json.js';
import { primaryVersion, trafficOf } from '../deploy/index.js';
import type { LoadedModel } from '../inference/index.js';
import { WINDOWS, type Window } from '../monitoring/index.js';
import { monitorOf, type ServerContext } from './context.js';
import { postRoute, sendError, sendJson, sendText, type ResponseState } from './http.js';
import type { StreamHandle } from './stream.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

type Res = HttpResponse & ResponseState;

/** Open alerts of a model version, as the snapshot lists them (filled in by the alerting wiring). */
export type AlertsOf = (model: string, version: string) => unknown[];

export async function monitoringSnapshot(ctx: ServerContext, m: LoadedModel, window: Window, alertsOf: AlertsOf) {
  const snap = await ctx.monitor.snapshot(monitorOf(ctx, m), window);
  return {
    ...snap,
    queue: { waiting: m.batcher.queued, pending: m.batcher.pending, max: m.batching.maxQueueSize },
    alerts: alertsOf(m.name, m.version),
  };
}

const MAX_FEEDBACK = 10_000;

export function parseFeedback(body: unknown): { requestId: string; label: number }[] {
  const list = Array.isArray(body) ? body : isObject(body) && Array.isArray(body.feedback) ? body.feedback : [body];
  if (list.length === 0) throw badRequest('feedback must hold at least one {"request_id", "label"}');
  if (list.length > MAX_FEEDBACK) throw badRequest(`at most ${MAX_FEEDBACK} labels per request`);
  return list.map((x, i) => {
    const at = list.length === 1 ? 'feedback' : `feedback[${i}]`;
    if (!isObject(x)) throw badRequest(`${at} must be an object {"request_id", "label"}`);
    if (typeof x.request_id !== 'string' || x.request_id.length === 0 || x.request_id.length > 256)
      throw badRequest(`${at}.request_id must be a non-empty string`);
    const label = typeof x.label === 'boolean' ? (x.label ? 1 : 0) : x.label;
    if (typeof label !== 'number' || !Number.isFinite(label))
      throw badRequest(`${at}.label must be a finite number (0/1 for classification) or a boolean`);
    return { requestId: x.request_id, label };
  });
}

/** Labels received at /v1/feedback, by outcome. */
export interface FeedbackCounts {
  joined: number;
  unknown: number;
  rejected: number;
}

/** The observability gauges and counters, registered once per server (routes may be registered on several apps). */
export function registerObserveMetrics(ctx: ServerContext, streams: StreamHandle): FeedbackCounts {
  const { engine, monitor } = ctx;
  monitor.gauge(
    'scoreline_model_ready',
    'Whether a model version is loaded, warmed up and serving (1) or not (0).',
    ['model', 'version'],
    (set) => {
      for (const m of engine.list()) set({ model: m.name, version: m.version }, m.state === 'ready' ? 1 : 0);
    },
  );
  monitor.gauge(
    'scoreline_inference_queue_depth',
    'Requests accepted by the batcher and not yet dispatched.',
    ['model', 'version'],
    (set) => {
      for (const m of engine.list()) set({ model: m.name, version: m.version }, m.batcher.queued);
    },
  );
  monitor.gauge('scoreline_websocket_connections', 'Open /v1/stream connections.', [], (set) => set({}, streams.connections));
  monitor.gauge('scoreline_websocket_pending_answers', 'Answers waiting in WebSocket outboxes for slow readers to drain.', [], (set) =>
    set({}, streams.queuedAnswers),
  );
  monitor.gauge('scoreline_inference_batches_in_flight', 'Batches running or queued on the inference workers.', [], (set) => {
    set({}, engine.inFlight);
  });
  const feedbackCounts: FeedbackCounts = { joined: 0, unknown: 0, rejected: 0 };
  monitor.callback(
    'scoreline_feedback_total',
    'Labels received at /v1/feedback: joined to a logged prediction, unknown id, or rejected (a label the model cannot have).',
    'counter',
    () => [
      { labels: { result: 'joined' }, value: feedbackCounts.joined },
      { labels: { result: 'unknown' }, value: feedbackCounts.unknown },
      { labels: { result: 'rejected' }, value: feedbackCounts.rejected },
    ],
  );
  return feedbackCounts;
}

export function registerObserve(app: TemplatedApp, ctx: ServerContext, alertsOf: AlertsOf, feedbackCounts: FeedbackCounts): void {
  const { engine, monitor } = ctx;

  app.get('/metrics', (res: Res) => {
    res.onAborted(() => {
      res.aborted = true;
    });
    monitor.exposition().then(
      (text) => sendText(res, 200, monitor.contentType, text),
      (e) => sendError(res, e, ctx.log),
    );
  });

  app.get('/v1/monitoring', (res: Res) => {
    try {
      const names = [...new Set(engine.list().map((m) => m.name))].sort();
      sendJson(
        res,
        200,
        JSON.stringify({ models: names.map((name) => monitoredVersions(ctx, name)), prediction_log: ctx.monitor.logStatus() }),
      );
    } catch (e) {
      sendError(res, e, ctx.log);
    }
  });

  /** The version a monitoring request means: ?version=, else the one the deployment stands behind (never a random pick). */
  const versionOf = (name: string, version: string | undefined): LoadedModel => {
    if (version !== undefined) return engine.lookup(name, version);
    const state = ctx.deployer.state(name);
    return state !== null ? engine.lookup(name, String(primaryVersion(state.spec).version)) : engine.lookup(name);
  };
  const windowOf = (raw: string): Window => {
    if (!(WINDOWS as readonly string[]).includes(raw)) throw badRequest(`window must be one of ${WINDOWS.join(', ')}`);
    return raw as Window;
  };

  app.get('/v1/monitoring/:model', (res: Res, req: HttpRequest) => {
    const name = req.getParameter(0);
    const version = req.getQuery('version') || undefined;
    const rawWindow = req.getQuery('window') || 'all';
    res.onAborted(() => {
      res.aborted = true;
    });
    (async () => monitoringSnapshot(ctx, versionOf(name, version), windowOf(rawWindow), alertsOf))().then(
      (snap) => sendJson(res, 200, JSON.stringify(snap)),
      (e) => sendError(res, e, ctx.log),
    );
  });

  app.get('/v1/monitoring/:model/history', (res: Res, req: HttpRequest) => {
    const name = req.getParameter(0);
    const version = req.getQuery('version') || undefined;
    const from = req.getQuery('from');
    const to = req.getQuery('to');
    res.onAborted(() => {
      res.aborted = true;
    });
    (async () => {
      const m = versionOf(name, version);
      const parse = (v: string | undefined, fallback: number, what: string) => {
        if (v === undefined || v === '') return fallback;
        const t = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
        if (Number.isNaN(t)) throw badRequest(`${what} must be an ISO time or epoch milliseconds`);
        return t;
      };
      const now = Date.now();
      const f = parse(from, now - 86_400_000, 'from');
      const t = parse(to, now, 'to');
      const shared = ctx.monitor.sharing;
      if (shared === null && ctx.monitor.log === null) throw notReady('the prediction log (monitoring history)');
      // With a shared store, a minute's point adds up what every replica served in it.
      const points =
        shared !== null
          ? await shared.history(m.name, m.versionNumber, f, t)
          : await ctx.monitor.log!.history(m.name, m.versionNumber, f, t);
      return {
        model: m.name,
        version: m.version,
        from: new Date(f).toISOString(),
        to: new Date(t).toISOString(),
        points: points.map((p) => ({ ...p, at: new Date(p.at as number).toISOString() })),
      };
    })().then(
      (body) => sendJson(res, 200, JSON.stringify(body)),
      (e) => sendError(res, e, ctx.log),
    );
  });

  postRoute(
    app,
    '/v1/feedback',
    ctx.http,
    {
      maxBytes: ctx.config.server.maxBodyBytes,
      params: 0,
      admit: () => {
        if (ctx.monitor.log === null) throw notReady('the prediction log (monitoring is off)');
      },
    },
    (res, body) => {
      let items: { requestId: string; label: number }[];
      try {
        items = parseFeedback(body);
      } catch (e) {
        sendError(res, e, ctx.log);
        return;
      }
      ctx.monitor.log!.feedback(items).then(
        (r) => {
          feedbackCounts.joined += r.joined;
          feedbackCounts.unknown += r.unknown.length;
          feedbackCounts.rejected += r.rejected.length;
          const answer = {
            received: items.length,
            joined: r.joined,
            unknown: r.unknown.length,
            unknown_ids: r.unknown.slice(0, 100),
            rejected: r.rejected.length,
            rejected_items: r.rejected.slice(0, 100).map((x) => ({ request_id: x.requestId, label: x.label, reason: x.reason })),
          };
          if (r.rejected.length < items.length) return sendJson(res, 200, JSON.stringify(answer));
          // Nothing usable in the request: refused as a whole, naming what the labels may be.
          const first = r.rejected[0]!;
          const more = items.length > 1 ? ` (and ${items.length - 1} more)` : '';
          const e = labelInvalid(`every label was rejected: request '${first.requestId}': ${first.reason}${more}`);
          sendJson(res, e.status, JSON.stringify({ error: e.message, code: e.publicCode, ...answer }));
        },
        (e) => sendError(res, e, ctx.log),
      );
    },
  );
}

/**
 * A model's entry in GET /v1/monitoring: every loaded version and every version its deployment sends
 * traffic to, each with its share of traffic and whether drift can be computed (and why not).
 */
function monitoredVersions(ctx: ServerContext, name: string) {
  const state = ctx.deployer.state(name);
  const traffic: Record<string, number> = state !== null ? trafficOf(state.spec) : {};
  const primary = state !== null ? String(primaryVersion(state.spec).version) : (ctx.engine.find(name)?.version ?? null);
  if (state === null && primary !== null) traffic[primary] = 100;
  const loaded = new Map(ctx.engine.versionsOf(name).map((m) => [m.version, m]));
  const versions = [...new Set([...loaded.keys(), ...Object.keys(traffic)])].sort((a, b) => Number(a) - Number(b));
  return {
    name,
    versions: versions.map((v) => {
      const m = loaded.get(v);
      const share = traffic[v] ?? 0;
      return {
        version: v,
        state: m?.state ?? 'not loaded',
        serving: share > 0,
        primary: v === primary,
        traffic_percent: Number(share.toFixed(2)),
        drift: m === undefined ? { available: false, reason: `version ${v} is not loaded on this server` } : driftAvailability(ctx, m),
      };
    }),
  };
}

function driftAvailability(ctx: ServerContext, m: LoadedModel): { available: true } | { available: false; reason: string } {
  if (monitorOf(ctx, m).stats.baselines !== null) return { available: true };
  if (!m.config.features) {
    return {
      available: false,
      reason: `no drift reference: model '${m.name}' has no features list in its model.yaml, so reference rows cannot be mapped to its input`,
    };
  }
  return {
    available: false,
    reason: `no drift reference: version ${m.version} was registered without reference rows; freeze one with PUT /admin/models/${m.name}/versions/${m.version}/reference (a CSV) or scoreline models register --reference`,
  };
}
