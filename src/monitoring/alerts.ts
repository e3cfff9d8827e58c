// Alerting: rules from config and their defaults, and the AlertManager that turns
// metric observations into deduplicated alerts with pending -> firing -> resolved states, for-
// durations, cooldowns and inhibition, notifying channels (./webhook.ts) and subscribers (the
// retrainer's drift and performance triggers). No timers and no I/O of its own: the monitor calls evaluate().
//
// Metrics the default rules read (the monitor supplies them per model version, labels model and
// version; stale_feature_ratio also carries a feature label):
//   auc_drop             reference AUC minus current AUC (null below the AUC's minimum sample)
//   score_psi            PSI of the score against the frozen reference bins (null below its minimum sample)
//   p99_ms               p99 latency in milliseconds
//   error_rate           share of requests answered 5xx or 429, 0..1
//   stale_feature_ratio  share of a feature's values served stale, or by a fallback because stale
//
// Semantics (the tests pin each):
// - Missing data: an observation without the rule's metric does not touch that rule's alerts. A
//   null (or NaN) value means "no data": the condition is false for a pending alert (dropped,
//   silently), but a firing alert stays firing with its last value -- losing labels or a metric
//   is not evidence of recovery, so only an observed good value resolves.
// - Cooldown: after an alert resolves, the same rule+labels does not fire again for cooldownSeconds.
//   A condition that comes back inside the cooldown starts a new pending alert that fires at
//   max(start + forSeconds, resolvedAt + cooldownSeconds) if it still holds: a flapping metric
//   notifies at most once per cooldown, a lasting problem is still reported.
// - Inhibition: rule A with inhibitedBy [B] cannot fire while an alert of B is firing whose labels
//   are all present, with equal values, in A's labels (same labels, or a broader inhibitor). A
//   pending A waits (and fires once B resolves, if A still holds); a firing A is resolved when B
//   fires, with inhibitedBy set, so every fired alert gets its resolved event.
// - Restart: the store's firing alerts are restored (no second "fired"), and cooldowns from its
//   recent history; pending alerts are not persisted and restart their for-duration.

import { createHash } from 'node:crypto';
import { configInvalid } from '../errors.js';
import { isObject } from '../json.js';
import { significant3 } from '../numbers.js';
import { notify, type AlertChannel, type LogFn } from './webhook.js';

export type Severity = 'info' | 'warning' | 'critical' | 'emergency';
export type Comparison = '>' | '>=' | '<' | '<=';
export type AlertState = 'pending' | 'firing' | 'resolved';
export type AlertEvent = 'fired' | 'resolved';

export const SEVERITIES: readonly Severity[] = ['info', 'warning', 'critical', 'emergency'];
const COMPARISONS: readonly Comparison[] = ['>', '>=', '<', '<='];

export interface AlertRule {
  name: string;
  metric: string;
  comparison: Comparison;
  threshold: number;
  /** Inclusive upper bound for '>'/'>=' rules: the condition holds only while value <= below, so a
   * band rule pairs with a `> below` rule without a gap (0.1 <= psi <= 0.25 warning, > 0.25 critical). */
  below?: number;
  forSeconds: number;
  severity: Severity;
  cooldownSeconds?: number;
  description?: string;
  /** Rules that, while firing for the same (or a subset of these) labels, keep this one from firing. */
  inhibitedBy?: string[];
}

export interface Alert {
  /** Stable per rule + labels + start: the fired and resolved events of one alert share it. */
  id: string;
  rule: string;
  severity: Severity;
  state: AlertState;
  labels: Record<string, string>;
  value: number;
  threshold: number;
  message: string;
  description?: string;
  /** Epoch milliseconds. */
  startedAt: number;
  firedAt?: number;
  resolvedAt?: number;
  /** The rule whose firing resolved this alert, when inhibition ended it. */
  inhibitedBy?: string;
}

/** What channels receive (posted as JSON by WebhookChannel) and subscribers get. */
export interface AlertNotification {
  text: string;
  event: AlertEvent;
  alert: Alert;
}

export interface Observation {
  labels: Record<string, string>;
  metrics: Record<string, number | null | undefined>;
}

export interface AlertHistoryQuery {
  limit?: number;
  /** Epoch ms: alerts still firing or resolved at or after it. */
  since?: number;
  model?: string;
  rule?: string;
}

/** Persistence of fired alerts. Synchronous, like better-sqlite3; evaluate() is off the hot path. */
export interface AlertStore {
  /** An alert that just fired. */
  save(alert: Alert): void;
  /** The same id in a new state (resolved). */
  update(alert: Alert): void;
  /** Fired alerts, newest firedAt first. */
  history(query?: AlertHistoryQuery): Alert[];
  /** Alerts whose last saved state is firing, to restore after a restart. */
  loadFiring(): Alert[];
}

// ---- rules ------------------------------------------------------------------------------------

const RULE_KEYS = new Set([
  'name',
  'metric',
  'comparison',
  'threshold',
  'below',
  'forSeconds',
  'severity',
  'cooldownSeconds',
  'description',
  'inhibitedBy',
]);
const METRIC_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Validates rules from config; one error lists every problem with its path (`alerts[1].severity: ...`). */
export function parseAlertRules(json: unknown, where: string): AlertRule[] {
  if (!Array.isArray(json)) throw configInvalid(`${where} is invalid: ${where}: must be an array of alert rules`);
  const errors: string[] = [];
  const rules = json.map((raw, i): AlertRule => {
    const p = `${where}[${i}]`;
    const bad = (key: string, msg: string) => errors.push(`${p}.${key}: ${msg}`);
    if (!isObject(raw)) {
      errors.push(`${p}: must be an object`);
      return null as unknown as AlertRule;
    }
    for (const k of Object.keys(raw)) if (!RULE_KEYS.has(k)) errors.push(`${p}: unknown property '${k}'`);
    const num = (key: string, min: number | null, required: boolean): number | undefined => {
      const v = raw[key];
      if (v === undefined) {
        if (required) bad(key, 'is required (a number)');
        return undefined;
      }
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        bad(key, 'must be a finite number');
        return undefined;
      }
      if (min !== null && v < min) {
        bad(key, `must be >= ${min}`);
        return undefined;
      }
      return v;
    };
    if (typeof raw.name !== 'string' || raw.name.trim() === '') bad('name', 'must be a non-empty string');
    if (typeof raw.metric !== 'string' || !METRIC_NAME.test(raw.metric)) bad('metric', 'must be a metric name ([A-Za-z_][A-Za-z0-9_]*)');
    if (!COMPARISONS.includes(raw.comparison as Comparison)) bad('comparison', `must be one of ${COMPARISONS.join(', ')}`);
    if (!SEVERITIES.includes(raw.severity as Severity)) bad('severity', `must be one of ${SEVERITIES.join(', ')}`);
    const threshold = num('threshold', null, true);
    const below = num('below', null, false);
    if (below !== undefined && (raw.comparison === '<' || raw.comparison === '<='))
      bad('below', "is an upper bound and needs comparison '>' or '>='");
    else if (below !== undefined && threshold !== undefined && below <= threshold)
      bad('below', `must be greater than threshold (${threshold})`);
    const forSeconds = num('forSeconds', 0, false) ?? 0;
    num('cooldownSeconds', 0, false);
    if (raw.description !== undefined && typeof raw.description !== 'string') bad('description', 'must be a string');
    const inh = raw.inhibitedBy;
    if (inh !== undefined && (!Array.isArray(inh) || inh.some((n) => typeof n !== 'string')))
      bad('inhibitedBy', 'must be an array of rule names');
    return { ...(raw as unknown as AlertRule), forSeconds };
  });
  if (errors.length === 0) errors.push(...ruleSetErrors(rules, where));
  if (errors.length > 0) throw configInvalid(`${where} is invalid: ${errors.join('; ')}`);
  return rules;
}

/** Unique names, inhibitedBy naming other rules of the set, and no inhibition cycle. */
function ruleSetErrors(rules: readonly AlertRule[], where: string): string[] {
  const errors: string[] = [];
  const index = new Map<string, number>();
  rules.forEach((r, i) => {
    if (index.has(r.name)) errors.push(`${where}[${i}].name: duplicate rule name '${r.name}' (also ${where}[${index.get(r.name)}])`);
    else index.set(r.name, i);
  });
  rules.forEach((r, i) => {
    (r.inhibitedBy ?? []).forEach((n, j) => {
      if (n === r.name) errors.push(`${where}[${i}].inhibitedBy[${j}]: a rule cannot inhibit itself`);
      else if (!index.has(n)) errors.push(`${where}[${i}].inhibitedBy[${j}]: no rule named '${n}'`);
    });
  });
  if (errors.length === 0 && inhibitionOrder(rules) === null) errors.push(`${where}: inhibitedBy forms a cycle`);
  return errors;
}

/** Rules with every inhibitor before the rules it inhibits, or null on a cycle. */
function inhibitionOrder(rules: readonly AlertRule[]): AlertRule[] | null {
  const byName = new Map(rules.map((r) => [r.name, r]));
  const out: AlertRule[] = [];
  const mark = new Map<string, 1 | 2>();
  const visit = (r: AlertRule): boolean => {
    if (mark.get(r.name) === 2) return true;
    if (mark.get(r.name) === 1) return false;
    mark.set(r.name, 1);
    for (const n of r.inhibitedBy ?? []) if (!visit(byName.get(n)!)) return false;
    mark.set(r.name, 2);
    out.push(r);
    return true;
  };
  return rules.every(visit) ? out : null;
}

/**
 * The issue's defaults. For-durations ride out one noisy evaluation; error_rate waits only 30 s
 * because the monitor's error rate is already a 10 s window and failing requests hurt now. Drift
 * and performance cool down for an hour (they feed retraining, which should not flap).
 */
export function defaultAlertRules(sla: { p99Ms?: number; errorRate?: number } = {}): AlertRule[] {
  const rule = (
    name: string,
    metric: string,
    comparison: Comparison,
    threshold: number,
    severity: Severity,
    forSeconds: number,
    cooldownSeconds: number,
    description: string,
  ): AlertRule => ({ name, metric, comparison, threshold, severity, forSeconds, cooldownSeconds, description });
  return [
    rule('auc_drop', 'auc_drop', '>', 0.05, 'critical', 60, 3600, 'AUC fell more than 0.05 below the reference AUC'),
    rule('score_psi_critical', 'score_psi', '>', 0.25, 'critical', 60, 3600, 'significant drift of the score distribution'),
    {
      ...rule('score_psi_warning', 'score_psi', '>=', 0.1, 'warning', 60, 3600, 'moderate drift of the score distribution'),
      below: 0.25,
      inhibitedBy: ['score_psi_critical'],
    },
    ...(sla.p99Ms === undefined ? [] : [rule('p99_latency', 'p99_ms', '>', sla.p99Ms, 'warning', 60, 600, 'p99 latency over the SLA')]),
    rule('error_rate', 'error_rate', '>', sla.errorRate ?? 0.01, 'critical', 30, 300, 'share of requests failing (5xx, 429)'),
    rule('stale_feature', 'stale_feature_ratio', '>', 0, 'warning', 60, 600, 'feature values served stale or by a fallback because stale'),
  ];
}

// ---- messages ---------------------------------------------------------------------------------

const METRIC_TEXT: Record<string, { name: string; unit?: string }> = {
  auc_drop: { name: 'AUC drop' },
  score_psi: { name: 'score PSI' },
  p99_ms: { name: 'p99 latency', unit: ' ms' },
  error_rate: { name: 'error rate' },
  stale_feature_ratio: { name: 'stale share' },
};

function subject(labels: Record<string, string>): string {
  const { model, version, feature, ...rest } = labels;
  const parts: string[] = [];
  if (model !== undefined) parts.push(version !== undefined ? `${model} v${version}` : model);
  else if (version !== undefined) parts.push(`v${version}`);
  if (feature !== undefined) parts.push(`feature ${feature}`);
  for (const [k, v] of Object.entries(rest)) parts.push(`${k}=${v}`);
  return parts.length > 0 ? ` of ${parts.join(' ')}` : '';
}

function condition(rule: AlertRule): string {
  const unit = METRIC_TEXT[rule.metric]?.unit ?? '';
  const band = rule.below !== undefined ? ` and <= ${significant3(rule.below)}${unit}` : '';
  return `${rule.comparison} ${significant3(rule.threshold)}${unit}${band}`;
}

/** "score PSI of credit-default v1 is 0.31 (> 0.25 for 60 s)". */
export function alertMessage(
  rule: AlertRule,
  labels: Record<string, string>,
  value: number,
  state: AlertState,
  inhibitedBy?: string,
): string {
  const m = METRIC_TEXT[rule.metric];
  const head = `${m?.name ?? rule.metric}${subject(labels)} is ${significant3(value)}${m?.unit ?? ''}`;
  if (state !== 'resolved') return `${head} (${condition(rule)}${rule.forSeconds > 0 ? ` for ${rule.forSeconds} s` : ''})`;
  return inhibitedBy !== undefined ? `${head} (superseded by ${inhibitedBy})` : `${head} (no longer ${condition(rule)})`;
}

/** Slack-compatible one-line summary: "[CRITICAL] FIRING score_psi_critical: score PSI of ...". */
export function alertText(alert: Alert, event: AlertEvent): string {
  return `[${alert.severity.toUpperCase()}] ${event === 'fired' ? 'FIRING' : 'RESOLVED'} ${alert.rule}: ${alert.message}`;
}

// ---- manager ----------------------------------------------------------------------------------

export interface AlertManagerOptions {
  rules: AlertRule[];
  channels: AlertChannel[];
  store?: AlertStore;
  now?: () => number;
  log?: LogFn;
}

export interface AlertFilter {
  rule?: string;
  severity?: Severity;
  /** Every given label must match. */
  labels?: Record<string, string>;
}

const labelKey = (labels: Record<string, string>): string =>
  JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
const within = (inner: Record<string, string>, outer: Record<string, string>): boolean =>
  Object.entries(inner).every(([k, v]) => outer[k] === v);
const copy = (a: Alert): Alert => ({ ...a, labels: { ...a.labels } });

function holds(rule: AlertRule, v: number): boolean {
  const c = rule.comparison;
  const base = c === '>' ? v > rule.threshold : c === '>=' ? v >= rule.threshold : c === '<' ? v < rule.threshold : v <= rule.threshold;
  return base && (rule.below === undefined || v <= rule.below);
}

export class AlertManager {
  private readonly rules: Map<string, AlertRule>;
  /** Inhibitors first, so one pass decides firing and inhibition. */
  private readonly order: AlertRule[];
  private readonly channels: AlertChannel[];
  private readonly store: AlertStore;
  private readonly clock: () => number;
  private readonly log: LogFn;
  /** Pending and firing alerts by rule, then by label key. */
  private readonly live = new Map<string, Map<string, Alert>>();
  /** When each rule + label key last resolved, for cooldowns. */
  private readonly lastResolved = new Map<string, number>();
  private readonly listeners = new Set<(n: AlertNotification) => void>();
  private readonly inflight = new Set<Promise<void>>();

  constructor(opts: AlertManagerOptions) {
    const errors = ruleSetErrors(opts.rules, 'alert rules');
    if (errors.length > 0) throw configInvalid(`alert rules are invalid: ${errors.join('; ')}`);
    this.rules = new Map(opts.rules.map((r) => [r.name, r]));
    this.order = inhibitionOrder(opts.rules)!;
    for (const r of opts.rules) this.live.set(r.name, new Map());
    this.channels = opts.channels;
    this.store = opts.store ?? new InMemoryAlertStore();
    this.clock = opts.now ?? Date.now;
    this.log = opts.log ?? (() => {});
    this.restore();
  }

  /**
   * Forgets every live alert and cooldown and restores them from the store again: for a process
   * that starts evaluating after another did (it became the leader of a cluster), so that alerts
   * the other fired are neither fired a second time nor lost.
   */
  reload(): void {
    for (const alerts of this.live.values()) alerts.clear();
    this.lastResolved.clear();
    this.restore();
  }

  private restore(): void {
    const now = this.clock();
    for (const a of this.store.loadFiring()) {
      const alerts = this.live.get(a.rule);
      if (alerts !== undefined) alerts.set(labelKey(a.labels), copy(a));
      else {
        this.store.update({ ...a, state: 'resolved', resolvedAt: now, message: `${a.message} (rule '${a.rule}' was removed)` });
        this.log({ level: 'info', msg: `alert ${a.id} resolved: its rule '${a.rule}' no longer exists` });
      }
    }
    const longest = Math.max(0, ...[...this.rules.values()].map((r) => r.cooldownSeconds ?? 0));
    if (longest === 0) return;
    for (const a of this.store.history({ since: now - longest * 1000, limit: Number.MAX_SAFE_INTEGER })) {
      if (a.resolvedAt === undefined) continue;
      const key = `${a.rule}\u0000${labelKey(a.labels)}`;
      this.lastResolved.set(key, Math.max(this.lastResolved.get(key) ?? 0, a.resolvedAt));
    }
  }

  /** Applies one round of observations at `now` (epoch ms) and returns the notifications produced. */
  evaluate(observations: readonly Observation[], now: number = this.clock()): AlertNotification[] {
    const out: AlertNotification[] = [];
    const held = new Set<Alert>();
    const keys = observations.map((o) => labelKey(o.labels));
    for (const rule of this.rules.values()) {
      const alerts = this.live.get(rule.name)!;
      for (let i = 0; i < observations.length; i++) {
        const v = observations[i]!.metrics[rule.metric];
        if (v === undefined) continue;
        const key = keys[i]!;
        const cur = alerts.get(key);
        if (v === null || Number.isNaN(v)) {
          if (cur?.state === 'pending') alerts.delete(key);
        } else if (holds(rule, v)) {
          let a = cur;
          if (a === undefined) {
            a = this.pending(rule, { ...observations[i]!.labels }, key, v, now);
            alerts.set(key, a);
          }
          a.value = v;
          a.message = alertMessage(rule, a.labels, v, a.state);
          held.add(a);
        } else if (cur?.state === 'firing') {
          out.push(this.resolve(rule, key, cur, v, now));
        } else if (cur !== undefined) alerts.delete(key);
      }
    }
    for (const rule of this.order) {
      const cooldown = (rule.cooldownSeconds ?? 0) * 1000;
      for (const [key, a] of this.live.get(rule.name)!) {
        const by = this.inhibitor(rule, a);
        if (a.state === 'firing') {
          if (by !== undefined) out.push(this.resolve(rule, key, a, a.value, now, by));
          continue;
        }
        const lastResolved = this.lastResolved.get(`${rule.name}\u0000${key}`);
        if (!held.has(a) || by !== undefined || now - a.startedAt < rule.forSeconds * 1000) continue;
        if (lastResolved !== undefined && now - lastResolved < cooldown) continue;
        a.state = 'firing';
        a.firedAt = now;
        this.store.save(copy(a));
        out.push(this.notification('fired', a));
      }
    }
    for (const n of out) this.emit(n);
    return out;
  }

  private pending(rule: AlertRule, labels: Record<string, string>, key: string, value: number, now: number): Alert {
    const id = createHash('sha256').update(`${rule.name}\u0000${key}\u0000${now}`).digest('hex').slice(0, 16);
    const a: Alert = {
      id,
      rule: rule.name,
      severity: rule.severity,
      state: 'pending',
      labels,
      value,
      threshold: rule.threshold,
      message: '',
      startedAt: now,
    };
    if (rule.description !== undefined) a.description = rule.description;
    return a;
  }

  private resolve(
    rule: AlertRule,
    key: string,
    a: Alert,
    value: number,
    now: number,
    inhibitedBy?: string,
    because?: string,
  ): AlertNotification {
    this.live.get(rule.name)!.delete(key);
    this.lastResolved.set(`${rule.name}\u0000${key}`, now);
    a.state = 'resolved';
    a.value = value;
    a.resolvedAt = now;
    if (inhibitedBy !== undefined) a.inhibitedBy = inhibitedBy;
    a.message = alertMessage(rule, a.labels, value, 'resolved', inhibitedBy);
    if (because !== undefined) a.message = `${alertMessage(rule, a.labels, value, 'firing')} -- resolved: ${because}`;
    this.store.update(copy(a));
    return this.notification('resolved', a);
  }

  /** The first inhibiting rule firing for these labels (or a subset of them). */
  private inhibitor(rule: AlertRule, a: Alert): string | undefined {
    for (const name of rule.inhibitedBy ?? []) {
      for (const other of this.live.get(name)!.values()) {
        if (other.state === 'firing' && within(other.labels, a.labels)) return name;
      }
    }
    return undefined;
  }

  private notification(event: AlertEvent, a: Alert): AlertNotification {
    const alert = copy(a);
    return { text: alertText(alert, event), event, alert };
  }

  private emit(n: AlertNotification): void {
    for (const fn of this.listeners) {
      try {
        fn(n);
      } catch (e) {
        this.log({ level: 'error', msg: `alert listener failed: ${(e as Error).message}`, alert: n.alert.id });
      }
    }
    const p = notify(this.channels, n);
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /**
   * Resolves (firing) or drops (pending) every live alert `which` selects, whatever its metric says:
   * for subjects that stopped existing, e.g. a model version that no longer serves, whose last
   * values would otherwise hold its alerts firing forever.
   */
  retire(which: (a: Alert) => boolean, reason: string, now: number = this.clock()): AlertNotification[] {
    const out: AlertNotification[] = [];
    for (const rule of this.rules.values()) {
      for (const [key, a] of [...this.live.get(rule.name)!]) {
        if (!which(a)) continue;
        if (a.state !== 'firing') {
          this.live.get(rule.name)!.delete(key);
          continue;
        }
        out.push(this.resolve(rule, key, a, a.value, now, undefined, reason));
      }
    }
    for (const n of out) this.emit(n);
    return out;
  }

  /** The rule an alert came from (its metric, threshold). */
  rule(name: string): AlertRule | undefined {
    return this.rules.get(name);
  }

  /** Calls fn with every fired and resolved notification; returns the unsubscribe function. */
  subscribe(fn: (n: AlertNotification) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  firing(filter: AlertFilter = {}): Alert[] {
    return this.select(filter, true);
  }

  /** Pending and firing alerts. */
  active(filter: AlertFilter = {}): Alert[] {
    return this.select(filter, false);
  }

  private select(f: AlertFilter, firingOnly: boolean): Alert[] {
    const out: Alert[] = [];
    for (const alerts of this.live.values()) {
      for (const a of alerts.values()) {
        if (firingOnly && a.state !== 'firing') continue;
        if (f.rule !== undefined && a.rule !== f.rule) continue;
        if (f.severity !== undefined && a.severity !== f.severity) continue;
        if (f.labels !== undefined && !within(f.labels, a.labels)) continue;
        out.push(copy(a));
      }
    }
    return out.sort((x, y) => x.startedAt - y.startedAt);
  }

  history(query: AlertHistoryQuery = {}): Alert[] {
    return this.store.history(query);
  }

  /** Resolves when every notification handed to channels so far has been delivered or given up. */
  async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all(this.inflight);
  }
}

// ---- in-memory store --------------------------------------------------------------------------

/** Keeps the newest `maxAlerts` fired alerts (firing ones are never evicted). */
export class InMemoryAlertStore implements AlertStore {
  private readonly alerts = new Map<string, Alert>();

  constructor(private readonly maxAlerts = 10_000) {}

  save(alert: Alert): void {
    this.alerts.set(alert.id, copy(alert));
    if (this.alerts.size <= this.maxAlerts) return;
    for (const [id, a] of this.alerts) {
      if (a.state === 'resolved') this.alerts.delete(id);
      if (this.alerts.size <= this.maxAlerts) break;
    }
  }

  update(alert: Alert): void {
    if (this.alerts.has(alert.id)) this.alerts.set(alert.id, copy(alert));
    else this.save(alert);
  }

  history(q: AlertHistoryQuery = {}): Alert[] {
    const out: Alert[] = [];
    for (const a of this.alerts.values()) {
      if (q.since !== undefined && a.resolvedAt !== undefined && a.resolvedAt < q.since) continue;
      if (q.model !== undefined && a.labels.model !== q.model) continue;
      if (q.rule !== undefined && a.rule !== q.rule) continue;
      out.push(copy(a));
    }
    out.sort((x, y) => (y.firedAt ?? y.startedAt) - (x.firedAt ?? x.startedAt));
    return out.slice(0, q.limit ?? 100);
  }

  loadFiring(): Alert[] {
    return [...this.alerts.values()].filter((a) => a.state === 'firing').map(copy);
  }
}
