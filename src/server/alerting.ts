// Alerting wired into the server: the rules (config, else the defaults derived from the SLA), the
// channels (log, webhooks), a store that keeps alerts in memory and records every fired/resolved
// event in the monitoring database (so firing alerts and cooldowns survive a restart), and the
// observations each evaluation hands the rules: AUC drop, score PSI, p99, error rate per version,
// and the share of stale feature values per feature. AUC and PSI come from the monitor's evaluation,
// which leaves them null below monitoring.minSamples: a rule never fires on a handful of values.

import type { Logger } from 'pino';
import type { MonitoringConfig } from '../config.js';
import {
  AlertManager,
  defaultAlertRules,
  InMemoryAlertStore,
  parseAlertRules,
  SEVERITIES,
  type Alert,
  type AlertHistoryQuery,
  type AlertStore,
  type Observation,
} from '../monitoring/alerts.js';
import type { Monitor, PredictionLog } from '../monitoring/index.js';
import { LogChannel, WebhookChannel, type AlertChannel, type LogFn } from '../monitoring/webhook.js';

/** In memory for the synchronous manager; every change also goes to the monitoring database. */
class PersistentAlertStore implements AlertStore {
  private readonly mem = new InMemoryAlertStore();
  constructor(private readonly log: PredictionLog | null) {}
  preload(alerts: Alert[]): void {
    for (const a of alerts) this.mem.save(a);
  }
  save(a: Alert): void {
    this.mem.save(a);
    this.log?.saveAlert(a.id, a.state, a, a.firedAt ?? a.startedAt);
  }
  update(a: Alert): void {
    this.mem.update(a);
    this.log?.saveAlert(a.id, a.state, a, a.resolvedAt ?? Date.now());
  }
  history(q?: AlertHistoryQuery): Alert[] {
    return this.mem.history(q);
  }
  loadFiring(): Alert[] {
    return this.mem.history({ limit: 10_000 }).filter((a) => a.state === 'firing');
  }
}

export interface Alerting {
  readonly manager: AlertManager;
  readonly channels: readonly AlertChannel[];
  /** Pending and firing alerts of a model version, for its snapshot. */
  alertsOf(model: string, version: string): Alert[];
  /** Runs the rules on the monitor's latest evaluation. */
  evaluate(): void;
  close(): Promise<void>;
}

/** Per model, the versions its traffic goes to now. */
export type ServingVersions = () => ReadonlyMap<string, ReadonlySet<string>>;

export async function createAlerting(cfg: MonitoringConfig, monitor: Monitor, log: Logger, serving?: ServingVersions): Promise<Alerting> {
  const rules =
    cfg.alerts.rules !== null
      ? parseAlertRules(cfg.alerts.rules, 'monitoring.alerts.rules')
      : defaultAlertRules({ ...(cfg.sla.p99Ms !== null ? { p99Ms: cfg.sla.p99Ms } : {}), ...(cfg.sla.errorRate !== null ? { errorRate: cfg.sla.errorRate } : {}) });
  const logFn: LogFn = (e) => {
    const { level, msg, ...rest } = e;
    log[level](rest, msg);
  };
  const channels: AlertChannel[] = [new LogChannel(logFn), ...cfg.alerts.webhooks.map((w) => new WebhookChannel({ ...w, log: logFn }))];
  const store = new PersistentAlertStore(monitor.log);
  if (monitor.log !== null) {
    // Firing alerts and recent history survive restarts; later events of one alert replace earlier ones.
    const recent = (await monitor.log.alertHistory(10_000, Date.now() - 7 * 86_400_000).catch(() => [])) as Alert[];
    const latest = new Map<string, Alert>();
    for (const a of [...recent].reverse()) latest.set(a.id, a);
    store.preload([...latest.values()]);
  }
  const manager = new AlertManager({ rules, channels, store, log: logFn });
  monitor.callback('scoreline_alerts_firing', 'Alerts firing now, by severity.', 'gauge', () => {
    const firing = manager.firing();
    return SEVERITIES.map((severity) => ({ labels: { severity }, value: firing.filter((a) => a.severity === severity).length }));
  });
  const features = monitor.featureObserver();
  return {
    manager,
    channels,
    alertsOf: (model, version) => manager.active({ labels: { model, version } }),
    evaluate() {
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
      for (const [feature, ratio] of features.takeStaleRatios()) observations.push({ labels: { feature }, metrics: { stale_feature_ratio: ratio } });
      manager.evaluate(observations);
      // A version traffic no longer goes to (replaced, rolled back, unloaded) is not drifting or
      // slow now: its alerts resolve rather than hold their last values forever.
      if (serving !== undefined) {
        const now = serving();
        manager.retire((a) => a.labels.model !== undefined && a.labels.version !== undefined && now.has(a.labels.model) && !now.get(a.labels.model)!.has(a.labels.version), 'the version no longer serves traffic');
      }
    },
    async close() {
      await manager.drain();
      for (const c of channels) if (c instanceof WebhookChannel) c.close();
    },
  };
}
