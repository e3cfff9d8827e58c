// Alerting wired into the server: the rules (config, else the defaults derived from the SLA), the
// channels (log, webhooks), a store that keeps alerts in memory for the synchronous manager and
// writes every fired/resolved change to the shared store (so firing alerts and cooldowns survive a
// restart and a change of leader), and the observations each evaluation hands the rules: AUC drop,
// score PSI, p99, error rate per version, and the share of stale feature values per feature. AUC
// and PSI come from the monitor's evaluation, which leaves them null below monitoring.minSamples: a
// rule never fires on a handful of values. Only the leader evaluates (one notification per alert,
// however many replicas); the others show the alerts as the store has them.

import type { Logger } from 'pino';
import type { MonitoringConfig } from '../config.js';
import { isScorelineError } from '../errors.js';
import {
  AlertManager,
  defaultAlertRules,
  InMemoryAlertStore,
  parseAlertRules,
  SEVERITIES,
  type Alert,
  type AlertFilter,
  type AlertHistoryQuery,
  type AlertStore,
  type Observation,
} from '../monitoring/alerts.js';
import type { Monitor } from '../monitoring/index.js';
import { LogChannel, WebhookChannel, type AlertChannel, type LogFn } from '../monitoring/webhook.js';
import type { AlertRecord, AlertRecords } from '../store/index.js';

/** Changes waiting for the store at most; beyond, the oldest are dropped and counted. */
const MAX_PENDING = 10_000;
/** How far back alerts are read at start and on a change of leader (cooldowns last at most this). */
const RECENT_MS = 7 * 86_400_000;

/** In memory for the synchronous manager; every change also goes to the store, retried while it cannot be reached. */
class PersistentAlertStore implements AlertStore {
  private mem = new InMemoryAlertStore();
  private readonly pending: AlertRecord[] = [];
  private flushing = false;
  dropped = 0;

  constructor(
    private readonly records: AlertRecords,
    private readonly log: Logger,
  ) {}

  /** Replaces what is in memory by the store's recent alerts (their latest state) and every open one. */
  async load(limit = 10_000): Promise<void> {
    const [recent, open] = await Promise.all([this.records.list(limit, Date.now() - RECENT_MS), this.records.open()]);
    const seen = new Set(recent.map((r) => r.id));
    for (const o of open) if (!seen.has(o.id)) recent.push(o);
    recent.sort((a, b) => b.at - a.at);
    const mem = new InMemoryAlertStore();
    for (const r of [...recent].reverse()) mem.save(r.data as Alert);
    // Changes of this process not yet stored are newer than what the store has.
    for (const p of this.pending) mem.update(p.data as Alert);
    this.mem = mem;
  }

  save(a: Alert): void {
    this.mem.save(a);
    this.write({ id: a.id, state: a.state, at: a.firedAt ?? a.startedAt, data: a });
  }
  update(a: Alert): void {
    this.mem.update(a);
    this.write({ id: a.id, state: a.state, at: a.resolvedAt ?? Date.now(), data: a });
  }
  history(q?: AlertHistoryQuery): Alert[] {
    return this.mem.history(q);
  }
  loadFiring(): Alert[] {
    return this.mem.history({ limit: 10_000 }).filter((a) => a.state === 'firing');
  }

  private write(r: AlertRecord): void {
    this.pending.push(r);
    if (this.pending.length > MAX_PENDING) {
      this.pending.shift();
      this.dropped++;
    }
    void this.flush();
  }

  /** Writes the waiting changes in order; stops at the first the store refuses, to try again later. */
  async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.pending.length > 0) {
        try {
          await this.records.save(this.pending[0]!);
        } catch (e) {
          this.log.warn(
            { err: (e as Error).message, waiting: this.pending.length },
            'an alert change could not be stored yet; it is kept and retried',
          );
          if (!isScorelineError(e)) this.pending.shift();
          return;
        }
        this.pending.shift();
      }
    } finally {
      this.flushing = false;
    }
  }
}

export interface Alerting {
  readonly manager: AlertManager;
  readonly channels: readonly AlertChannel[];
  /** Pending and firing alerts of a model version, for its snapshot. */
  alertsOf(model: string, version: string): Alert[];
  /** Firing alerts (the leader's own; elsewhere the store's). */
  firing(filter?: AlertFilter): Alert[];
  /** Pending alerts: only the leader has them (they are not stored until they fire). */
  pending(filter?: AlertFilter): Alert[];
  history(query?: AlertHistoryQuery): Alert[];
  /** Runs the rules on the monitor's latest evaluation (the leader only). */
  evaluate(): void;
  /** This process evaluates from now on: its alerts and cooldowns are read again from the store first. */
  lead(): Promise<void>;
  /** Another process evaluates: the alerts shown here are the store's. */
  follow(): void;
  /** Reads the store's alerts again (a follower's view). */
  refresh(): Promise<void>;
  close(): Promise<void>;
}

/** Per model, the versions its traffic goes to now. */
export type ServingVersions = () => ReadonlyMap<string, ReadonlySet<string>>;

export async function createAlerting(
  cfg: MonitoringConfig,
  monitor: Monitor,
  records: AlertRecords,
  serverLog: Logger,
  serving?: ServingVersions,
): Promise<Alerting> {
  const log = serverLog.child({ component: 'alerting' });
  const rules =
    cfg.alerts.rules !== null
      ? parseAlertRules(cfg.alerts.rules, 'monitoring.alerts.rules')
      : defaultAlertRules({
          ...(cfg.sla.p99Ms !== null ? { p99Ms: cfg.sla.p99Ms } : {}),
          ...(cfg.sla.errorRate !== null ? { errorRate: cfg.sla.errorRate } : {}),
        });
  const logFn: LogFn = (e) => {
    const { level, msg, ...rest } = e;
    log[level](rest, msg);
  };
  const channels: AlertChannel[] = [new LogChannel(logFn), ...cfg.alerts.webhooks.map((w) => new WebhookChannel({ ...w, log: logFn }))];
  const store = new PersistentAlertStore(records, log);
  // Firing alerts and recent history survive restarts (an unreachable store was waited for at start).
  await store.load();
  const manager = new AlertManager({ rules, channels, store, log: logFn });
  let leading = true;
  monitor.callback('scoreline_alerts_firing', 'Alerts firing now, by severity.', 'gauge', () => {
    const firing = leading ? manager.firing() : store.loadFiring();
    return SEVERITIES.map((severity) => ({ labels: { severity }, value: firing.filter((a) => a.severity === severity).length }));
  });
  monitor.callback(
    'scoreline_alert_changes_dropped_total',
    'Alert changes dropped because the store could not take them for too long.',
    'counter',
    () => [{ labels: {}, value: store.dropped }],
  );
  const features = monitor.featureObserver();
  const matches = (a: Alert, f: AlertFilter) =>
    (f.rule === undefined || a.rule === f.rule) &&
    (f.severity === undefined || a.severity === f.severity) &&
    Object.entries(f.labels ?? {}).every(([k, v]) => a.labels[k] === v);
  const firing = (f: AlertFilter = {}) =>
    leading
      ? manager.firing(f)
      : store
          .loadFiring()
          .filter((a) => matches(a, f))
          .sort((x, y) => x.startedAt - y.startedAt);
  return {
    manager,
    channels,
    alertsOf: (model, version) => (leading ? manager.active({ labels: { model, version } }) : firing({ labels: { model, version } })),
    firing,
    pending: (f = {}) => (leading ? manager.active(f).filter((a) => a.state === 'pending') : []),
    history: (q) => store.history(q),
    evaluate() {
      if (!leading) return;
      void store.flush();
      const observations: Observation[] = [];
      for (const [vm, e] of monitor.evaluations) {
        observations.push({
          labels: { model: vm.model, version: vm.version },
          metrics: {
            auc_drop: e.auc !== null && e.referenceAuc !== null ? e.referenceAuc - e.auc : null,
            score_psi: e.scorePsi,
            p99_ms: e.p99Ms,
            error_rate: e.errorRate,
          },
        });
      }
      for (const [feature, ratio] of features.takeStaleRatios())
        observations.push({ labels: { feature }, metrics: { stale_feature_ratio: ratio } });
      manager.evaluate(observations);
      // A version traffic no longer goes to (replaced, rolled back, unloaded) is not drifting or
      // slow now: its alerts resolve rather than hold their last values forever.
      if (serving !== undefined) {
        const now = serving();
        manager.retire(
          (a) =>
            a.labels.model !== undefined &&
            a.labels.version !== undefined &&
            now.has(a.labels.model) &&
            !now.get(a.labels.model)!.has(a.labels.version),
          'the version no longer serves traffic',
        );
      }
    },
    async lead() {
      await store.load();
      manager.reload();
      leading = true;
    },
    follow() {
      leading = false;
    },
    async refresh() {
      // A follower shows what is open and the recent history; the cooldowns only a leader needs.
      if (!leading) await store.load(1000);
    },
    async close() {
      await manager.drain();
      await store.flush().catch(() => undefined);
      for (const c of channels) if (c instanceof WebhookChannel) c.close();
    },
  };
}
