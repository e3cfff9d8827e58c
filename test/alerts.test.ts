// Tests for src/monitoring/alerts.ts: rule validation with paths, pending -> firing after the
// for-duration, resolving, deduplication, cooldown, inhibition, missing data, per-feature labels,
// the default rules at their thresholds, history, subscribers, the log channel and restart from a
// store. The clock is a plain variable handed in as a function; times are epoch ms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AlertManager,
  InMemoryAlertStore,
  defaultAlertRules,
  parseAlertRules,
  type AlertNotification,
  type AlertRule,
  type Observation,
} from '../src/monitoring/alerts.js';
import { LogChannel, type LogEntry } from '../src/monitoring/webhook.js';
import { isScorelineError } from '../src/errors.js';

const S = 1000;
const M = { model: 'credit-default', version: '1' };
const obs = (metrics: Observation['metrics'], labels: Record<string, string> = M): Observation => ({ labels, metrics });
const brief = (ns: AlertNotification[]) => ns.map((n) => `${n.event} ${n.alert.rule}`);

function manager(rules: AlertRule[], opts: { store?: InMemoryAlertStore; log?: LogEntry[] } = {}) {
  const clock = { t: 1_700_000_000_000 };
  const m = new AlertManager({ rules, channels: [], now: () => clock.t, ...(opts.store ? { store: opts.store } : {}) });
  const at = (seconds: number, ...o: Observation[]) => {
    clock.t = 1_700_000_000_000 + seconds * S;
    return m.evaluate(o);
  };
  return { m, at, clock };
}

const psiCritical: AlertRule = {
  name: 'psi_critical',
  metric: 'score_psi',
  comparison: '>',
  threshold: 0.25,
  forSeconds: 60,
  severity: 'critical',
};

function parseError(json: unknown): string {
  try {
    parseAlertRules(json, 'alerts.rules');
  } catch (e) {
    assert.ok(isScorelineError(e));
    assert.equal(e.code, 'CONFIG_INVALID');
    return e.message;
  }
  assert.fail('expected a config error');
}

test('parseAlertRules accepts valid rules and defaults forSeconds to 0', () => {
  const rules = parseAlertRules(
    [
      { name: 'a', metric: 'score_psi', comparison: '>', threshold: 0.25, severity: 'critical', cooldownSeconds: 60 },
      {
        name: 'b',
        metric: 'score_psi',
        comparison: '>=',
        threshold: 0.1,
        below: 0.25,
        forSeconds: 30,
        severity: 'warning',
        inhibitedBy: ['a'],
      },
    ],
    'alerts.rules',
  );
  assert.equal(rules[0]!.forSeconds, 0);
  assert.equal(rules[0]!.cooldownSeconds, 60);
  assert.deepEqual(rules[1]!.inhibitedBy, ['a']);
  assert.equal(rules[1]!.below, 0.25);
});

test('parseAlertRules names the failing path of every problem', () => {
  assert.match(parseError({}), /alerts\.rules: must be an array of alert rules/);
  assert.match(parseError([42]), /alerts\.rules\[0\]: must be an object/);
  const msg = parseError([
    { name: 'a', metric: 'score_psi', comparison: '>', threshold: 0.25, severity: 'critical' },
    { name: '', metric: 'score psi', comparison: '!=', threshold: 'x', severity: 'page', forSeconds: -1, colour: 'red' },
  ]);
  assert.match(msg, /^alerts\.rules is invalid: /);
  for (const part of [
    "alerts.rules[1]: unknown property 'colour'",
    'alerts.rules[1].name: must be a non-empty string',
    'alerts.rules[1].metric: must be a metric name',
    'alerts.rules[1].comparison: must be one of >, >=, <, <=',
    'alerts.rules[1].severity: must be one of info, warning, critical, emergency',
    'alerts.rules[1].threshold: must be a finite number',
    'alerts.rules[1].forSeconds: must be >= 0',
  ])
    assert.ok(msg.includes(part), `missing "${part}" in: ${msg}`);
  assert.match(parseError([{ name: 'a', metric: 'm', comparison: '>', severity: 'info' }]), /alerts\.rules\[0\]\.threshold: is required/);
  assert.match(
    parseError([{ name: 'a', metric: 'm', comparison: '>', threshold: 0.3, below: 0.2, severity: 'info' }]),
    /alerts\.rules\[0\]\.below: must be greater than threshold \(0\.3\)/,
  );
  assert.match(
    parseError([{ name: 'a', metric: 'm', comparison: '<', threshold: 0.3, below: 0.5, severity: 'info' }]),
    /below: is an upper bound/,
  );
  const r = { metric: 'm', comparison: '>', threshold: 1, severity: 'info' };
  assert.match(
    parseError([
      { name: 'a', ...r },
      { name: 'a', ...r },
    ]),
    /alerts\.rules\[1\]\.name: duplicate rule name 'a' \(also alerts\.rules\[0\]\)/,
  );
  assert.match(parseError([{ name: 'a', ...r, inhibitedBy: ['nope'] }]), /alerts\.rules\[0\]\.inhibitedBy\[0\]: no rule named 'nope'/);
  assert.match(parseError([{ name: 'a', ...r, inhibitedBy: ['a'] }]), /inhibitedBy\[0\]: a rule cannot inhibit itself/);
  assert.match(
    parseError([
      { name: 'a', ...r, inhibitedBy: ['b'] },
      { name: 'b', ...r, inhibitedBy: ['a'] },
    ]),
    /alerts\.rules: inhibitedBy forms a cycle/,
  );
  assert.throws(() => new AlertManager({ rules: [{ ...psiCritical, inhibitedBy: ['x'] }], channels: [] }), /no rule named 'x'/);
});

test('a condition goes pending, fires after forSeconds with its message, and resolves', () => {
  const { m, at } = manager([psiCritical]);
  assert.deepEqual(at(0, obs({ score_psi: 0.31 })), []);
  assert.equal(m.active()[0]!.state, 'pending');
  assert.deepEqual(m.firing(), []);
  assert.deepEqual(at(59, obs({ score_psi: 0.4 })), []);
  const fired = at(60, obs({ score_psi: 0.31 }));
  assert.deepEqual(brief(fired), ['fired psi_critical']);
  const a = fired[0]!.alert;
  assert.equal(a.state, 'firing');
  assert.equal(a.severity, 'critical');
  assert.deepEqual(a.labels, M);
  assert.equal(a.value, 0.31);
  assert.equal(a.threshold, 0.25);
  assert.equal(a.message, 'score PSI of credit-default v1 is 0.31 (> 0.25 for 60 s)');
  assert.equal(fired[0]!.text, '[CRITICAL] FIRING psi_critical: score PSI of credit-default v1 is 0.31 (> 0.25 for 60 s)');
  assert.equal(a.firedAt! - a.startedAt, 60 * S);
  assert.match(a.id, /^[0-9a-f]{16}$/);

  const resolved = at(120, obs({ score_psi: 0.08 }));
  assert.deepEqual(brief(resolved), ['resolved psi_critical']);
  const r = resolved[0]!.alert;
  assert.equal(r.id, a.id);
  assert.equal(r.state, 'resolved');
  assert.equal(r.resolvedAt! - r.firedAt!, 60 * S);
  assert.equal(r.message, 'score PSI of credit-default v1 is 0.08 (no longer > 0.25)');
  assert.equal(resolved[0]!.text, '[CRITICAL] RESOLVED psi_critical: score PSI of credit-default v1 is 0.08 (no longer > 0.25)');
  assert.deepEqual(m.active(), []);
  // The notification is a snapshot: resolving did not rewrite the fired one.
  assert.equal(a.state, 'firing');
});

test('a pending condition that clears before forSeconds never notifies', () => {
  const { m, at } = manager([psiCritical]);
  at(0, obs({ score_psi: 0.3 }));
  assert.deepEqual(at(30, obs({ score_psi: 0.2 })), []);
  assert.deepEqual(m.active(), []);
  // A new excursion starts its own for-duration.
  at(40, obs({ score_psi: 0.3 }));
  assert.deepEqual(at(99, obs({ score_psi: 0.3 })), []);
  assert.deepEqual(brief(at(100, obs({ score_psi: 0.3 }))), ['fired psi_critical']);
});

test('evaluating repeatedly while firing notifies once and keeps one alert with the latest value', () => {
  const { m, at } = manager([psiCritical]);
  at(0, obs({ score_psi: 0.3 }));
  const [fired] = at(60, obs({ score_psi: 0.3 }));
  let later: AlertNotification[] = [];
  for (let s = 61; s < 200; s += 7) later = later.concat(at(s, obs({ score_psi: 0.3 + s / 1000 })));
  assert.deepEqual(later, []);
  const firing = m.firing();
  assert.equal(firing.length, 1);
  assert.equal(firing[0]!.id, fired!.alert.id);
  assert.equal(firing[0]!.value, 0.3 + 194 / 1000);
  assert.equal(m.history().length, 1);
});

test('cooldown: a condition back within cooldownSeconds stays pending until the cooldown ends', () => {
  const { m, at } = manager([{ ...psiCritical, forSeconds: 10, cooldownSeconds: 300 }]);
  at(0, obs({ score_psi: 0.3 }));
  const first = at(10, obs({ score_psi: 0.3 }))[0]!.alert;
  assert.deepEqual(brief(at(20, obs({ score_psi: 0.1 }))), ['resolved psi_critical']);
  // Back at 30 s: for-duration met at 40 s, but the cooldown runs until 20 + 300 = 320 s.
  assert.deepEqual(at(30, obs({ score_psi: 0.3 })), []);
  assert.deepEqual(at(40, obs({ score_psi: 0.3 })), []);
  assert.deepEqual(at(319, obs({ score_psi: 0.3 })), []);
  assert.equal(m.active()[0]!.state, 'pending');
  const again = at(320, obs({ score_psi: 0.3 }));
  assert.deepEqual(brief(again), ['fired psi_critical']);
  assert.notEqual(again[0]!.alert.id, first.id);
  assert.equal(again[0]!.alert.startedAt - first.startedAt, 30 * S);
  assert.equal(m.history().length, 2);
});

test('inhibition: a firing critical keeps the warning from firing, and supersedes a firing warning', () => {
  const warn: AlertRule = {
    name: 'psi_warning',
    metric: 'score_psi',
    comparison: '>=',
    threshold: 0.1,
    forSeconds: 60,
    severity: 'warning',
    inhibitedBy: ['psi_critical'],
  };
  // Both true from the start: only the critical fires.
  {
    const { m, at } = manager([warn, psiCritical]);
    at(0, obs({ score_psi: 0.4 }));
    assert.deepEqual(brief(at(60, obs({ score_psi: 0.4 }))), ['fired psi_critical']);
    assert.deepEqual(
      m.active({ rule: 'psi_warning' }).map((a) => a.state),
      ['pending'],
    );
    // When the critical resolves and the warning still holds, the waiting warning fires.
    assert.deepEqual(brief(at(120, obs({ score_psi: 0.2 }))), ['resolved psi_critical', 'fired psi_warning']);
  }
  // The warning fired first; the critical's firing resolves it as superseded.
  {
    const { m, at } = manager([warn, psiCritical]);
    at(0, obs({ score_psi: 0.15 }));
    assert.deepEqual(brief(at(60, obs({ score_psi: 0.15 }))), ['fired psi_warning']);
    assert.deepEqual(at(70, obs({ score_psi: 0.3 })), []);
    const ns = at(130, obs({ score_psi: 0.3 }));
    assert.deepEqual(brief(ns), ['fired psi_critical', 'resolved psi_warning']);
    assert.equal(ns[1]!.alert.inhibitedBy, 'psi_critical');
    assert.equal(ns[1]!.alert.message, 'score PSI of credit-default v1 is 0.3 (superseded by psi_critical)');
    assert.deepEqual(
      m.firing().map((a) => a.rule),
      ['psi_critical'],
    );
  }
  // Inhibition needs the inhibitor's labels: a critical on version 2 does not mute version 1.
  {
    const { at } = manager([warn, psiCritical]);
    const v2 = { model: 'credit-default', version: '2' };
    at(0, obs({ score_psi: 0.3 }, v2), obs({ score_psi: 0.15 }));
    assert.deepEqual(brief(at(60, obs({ score_psi: 0.3 }, v2), obs({ score_psi: 0.15 }))).sort(), [
      'fired psi_critical',
      'fired psi_warning',
    ]);
  }
});

test('missing data: null keeps a firing alert, drops a pending one; an absent metric changes nothing', () => {
  const { m, at } = manager([psiCritical]);
  at(0, obs({ score_psi: 0.3 }));
  at(60, obs({ score_psi: 0.3 }));
  assert.deepEqual(at(70, obs({ score_psi: null })), []);
  assert.deepEqual(at(80, obs({ score_psi: Number.NaN })), []);
  assert.deepEqual(at(90, obs({ p99_ms: 3 })), []);
  assert.deepEqual(at(100), []);
  const [a] = m.firing();
  assert.equal(a!.value, 0.3);
  // Pending + null: dropped without a notification; the next true value starts over.
  const other = { model: 'other', version: '3' };
  at(100, obs({ score_psi: 0.3 }, other));
  at(130, obs({ score_psi: null }, other));
  assert.deepEqual(m.active({ labels: { model: 'other' } }), []);
  at(140, obs({ score_psi: 0.3 }, other));
  assert.deepEqual(at(199, obs({ score_psi: 0.3 }, other)), []);
  assert.deepEqual(brief(at(200, obs({ score_psi: 0.3 }, other))), ['fired psi_critical']);
  // Pending + absent metric: kept, but it does not fire on a round without the metric.
  const third = { model: 'third', version: '1' };
  at(200, obs({ score_psi: 0.3 }, third));
  assert.deepEqual(at(300, obs({ p99_ms: 1 }, third)), []);
  assert.equal(m.active({ labels: third })[0]!.state, 'pending');
  assert.deepEqual(brief(at(301, obs({ score_psi: 0.3 }, third))), ['fired psi_critical']);
});

test('per-feature labels give separate alerts that resolve independently', () => {
  const stale = defaultAlertRules().find((r) => r.name === 'stale_feature')!;
  const { m, at } = manager([stale]);
  const f = (feature: string, v: number | null) => obs({ stale_feature_ratio: v }, { ...M, feature });
  at(0, f('income', 0.2), f('age', 0));
  const first = at(60, f('income', 0.2), f('age', 0.05));
  assert.deepEqual(
    first.map((n) => n.alert.labels.feature),
    ['income'],
  );
  assert.equal(first[0]!.alert.message, 'stale share of credit-default v1 feature income is 0.2 (> 0 for 60 s)');
  const second = at(125, f('income', 0.2), f('age', 0.05));
  assert.deepEqual(
    second.map((n) => n.alert.labels.feature),
    ['age'],
  );
  assert.notEqual(second[0]!.alert.id, first[0]!.alert.id);
  assert.deepEqual(
    m.firing().map((a) => a.labels.feature),
    ['income', 'age'],
  );
  const r = at(130, f('income', 0), f('age', 0.05));
  assert.deepEqual(
    r.map((n) => `${n.event} ${n.alert.labels.feature}`),
    ['resolved income'],
  );
  assert.deepEqual(
    m.firing().map((a) => a.labels.feature),
    ['age'],
  );
});

test('default rules: each fires just past its documented threshold, with its severity, not at it', () => {
  const rules = defaultAlertRules({ p99Ms: 50, errorRate: 0.02 });
  assert.deepEqual(
    rules.map((r) => [r.name, r.metric, r.comparison, r.threshold, r.below ?? null, r.severity, r.forSeconds, r.cooldownSeconds]),
    [
      ['auc_drop', 'auc_drop', '>', 0.05, null, 'critical', 60, 3600],
      ['score_psi_critical', 'score_psi', '>', 0.25, null, 'critical', 60, 3600],
      ['score_psi_warning', 'score_psi', '>=', 0.1, 0.25, 'warning', 60, 3600],
      ['p99_latency', 'p99_ms', '>', 50, null, 'warning', 60, 600],
      ['error_rate', 'error_rate', '>', 0.02, null, 'critical', 30, 300],
      ['stale_feature', 'stale_feature_ratio', '>', 0, null, 'warning', 60, 600],
    ],
  );
  assert.deepEqual(
    defaultAlertRules().map((r) => r.name),
    ['auc_drop', 'score_psi_critical', 'score_psi_warning', 'error_rate', 'stale_feature'],
  );
  assert.equal(defaultAlertRules().find((r) => r.name === 'error_rate')!.threshold, 0.01);
  // Values at the threshold, then just past it, held for the rule's forSeconds.
  const cases: [string, number, number, string[]][] = [
    ['auc_drop', 0.05, 0.0501, ['critical auc_drop']],
    ['score_psi', 0.0999, 0.1, ['warning score_psi_warning']],
    ['score_psi', 0.0999, 0.25, ['warning score_psi_warning']],
    ['score_psi', 0.0999, 0.2501, ['critical score_psi_critical']],
    ['p99_ms', 50, 50.1, ['warning p99_latency']],
    ['error_rate', 0.02, 0.0201, ['critical error_rate']],
    ['stale_feature_ratio', 0, 0.001, ['warning stale_feature']],
  ];
  for (const [metric, at, past, expected] of cases) {
    const run = manager(rules);
    const hold = (v: number, from: number) => [0, 30, 60].flatMap((s) => run.at(from + s, obs({ [metric]: v })));
    assert.deepEqual(hold(at, 0), [], `${metric} = ${at} must not fire`);
    const fired = hold(past, 1000);
    assert.deepEqual(
      fired.map((n) => `${n.alert.severity} ${n.alert.rule}`),
      expected,
      `${metric} = ${past}`,
    );
  }
  // p99 messages carry the unit.
  const run = manager(rules);
  run.at(0, obs({ p99_ms: 72.456 }));
  assert.equal(run.at(60, obs({ p99_ms: 72.456 }))[0]!.alert.message, 'p99 latency of credit-default v1 is 72.5 ms (> 50 ms for 60 s)');
});

test('default PSI band: the warning resolves as PSI leaves it upward and the critical fires after its for-duration', () => {
  const { m, at } = manager(defaultAlertRules());
  at(0, obs({ score_psi: 0.2 }));
  assert.deepEqual(brief(at(60, obs({ score_psi: 0.2 }))), ['fired score_psi_warning']);
  assert.deepEqual(brief(at(90, obs({ score_psi: 0.31 }))), ['resolved score_psi_warning']);
  assert.deepEqual(
    m.active().map((a) => `${a.state} ${a.rule}`),
    ['pending score_psi_critical'],
  );
  assert.deepEqual(brief(at(150, obs({ score_psi: 0.31 }))), ['fired score_psi_critical']);
});

test('history: newest first, with limit, since and model filters', () => {
  const { m, at } = manager([{ ...psiCritical, forSeconds: 0 }]);
  const a = { model: 'a', version: '1' };
  const b = { model: 'b', version: '1' };
  at(0, obs({ score_psi: 0.3 }, a));
  at(100, obs({ score_psi: 0.1 }, a));
  at(200, obs({ score_psi: 0.3 }, b));
  at(300, obs({ score_psi: 0.1 }, b));
  at(400, obs({ score_psi: 0.3 }, a));
  const h = m.history();
  assert.deepEqual(
    h.map((x) => [x.labels.model, x.state, (x.firedAt! - h[2]!.firedAt!) / S]),
    [
      ['a', 'firing', 400],
      ['b', 'resolved', 200],
      ['a', 'resolved', 0],
    ],
  );
  assert.deepEqual(
    m.history({ limit: 1 }).map((x) => x.labels.model),
    ['a'],
  );
  assert.deepEqual(
    m.history({ model: 'a' }).map((x) => x.state),
    ['firing', 'resolved'],
  );
  // since: alerts firing at or after it (the first 'a' resolved at 100 s, before 150 s).
  assert.deepEqual(
    m.history({ since: h[2]!.firedAt! + 150 * S }).map((x) => x.labels.model),
    ['a', 'b'],
  );
});

test('subscribers get fired and resolved notifications; a throwing one is logged; the log channel maps severity to level', async () => {
  const entries: LogEntry[] = [];
  const clock = { t: 0 };
  const m = new AlertManager({
    rules: [{ ...psiCritical, forSeconds: 0 }],
    channels: [new LogChannel((e) => entries.push(e))],
    now: () => clock.t,
    log: (e) => entries.push(e),
  });
  const seen: string[] = [];
  const off = m.subscribe((n) => seen.push(`${n.event} ${n.alert.state}`));
  m.subscribe(() => {
    throw new Error('listener bug');
  });
  m.evaluate([obs({ score_psi: 0.5 })]);
  clock.t = 5000;
  m.evaluate([obs({ score_psi: 0 })]);
  off();
  clock.t = 6000;
  m.evaluate([obs({ score_psi: 0.5 })]);
  await m.drain();
  assert.deepEqual(seen, ['fired firing', 'resolved resolved']);
  const channel = entries.filter((e) => e.event !== undefined);
  assert.deepEqual(
    channel.map((e) => [e.level, e.event]),
    [
      ['error', 'fired'],
      ['info', 'resolved'],
      ['error', 'fired'],
    ],
  );
  assert.equal(channel[0]!.msg, '[CRITICAL] FIRING psi_critical: score PSI of credit-default v1 is 0.5 (> 0.25)');
  assert.equal(entries.filter((e) => e.msg === 'alert listener failed: listener bug').length, 3);
});

test('restart: firing alerts and cooldowns come back from the store; removed rules are resolved', () => {
  const store = new InMemoryAlertStore();
  const rules: AlertRule[] = [
    { ...psiCritical, forSeconds: 0, cooldownSeconds: 600 },
    { name: 'gone', metric: 'p99_ms', comparison: '>', threshold: 1, forSeconds: 0, severity: 'info' },
  ];
  const v2 = { model: 'credit-default', version: '2' };
  const before = manager(rules, { store });
  before.at(0, obs({ score_psi: 0.3, p99_ms: 5 }), obs({ score_psi: 0.3 }, v2));
  before.at(10, obs({ score_psi: 0.3 }), obs({ score_psi: 0.1 }, v2));
  const firedId = before.m.firing({ rule: 'psi_critical' })[0]!.id;

  const after = manager([rules[0]!], { store });
  after.clock.t = before.clock.t;
  assert.deepEqual(
    after.m.firing().map((a) => [a.id, a.rule]),
    [[firedId, 'psi_critical']],
  );
  assert.equal(store.history({ rule: 'gone' })[0]!.state, 'resolved');
  // Still true: no second "fired". Then it resolves under its original id.
  assert.deepEqual(after.at(20, obs({ score_psi: 0.3 })), []);
  const r = after.at(30, obs({ score_psi: 0.1 }));
  assert.deepEqual(
    r.map((n) => [n.event, n.alert.id]),
    [['resolved', firedId]],
  );
  // v2 resolved at 10 s before the restart: its cooldown (600 s) still holds after it.
  assert.deepEqual(after.at(40, obs({ score_psi: 0.3 }, v2)), []);
  assert.deepEqual(brief(after.at(610, obs({ score_psi: 0.3 }, v2))), ['fired psi_critical']);
});

test('retire: alerts of a version that stopped serving resolve with the reason; pending ones are dropped; others stay', () => {
  const { m, at, clock } = manager([psiCritical]);
  const v2 = { model: 'credit-default', version: '2' };
  at(0, obs({ score_psi: 0.5 }), obs({ score_psi: 0.5 }, v2));
  at(60, obs({ score_psi: 0.5 }), obs({ score_psi: 0.5 }, v2));
  at(61, obs({ score_psi: 0.5 }, { model: 'other', version: '1' }));
  assert.equal(m.firing().length, 2);
  assert.equal(m.active().filter((a) => a.state === 'pending').length, 1);
  clock.t += 1000;
  const out = m.retire((a) => a.labels.version === '1', 'the version no longer serves traffic');
  assert.deepEqual(brief(out), ['resolved psi_critical']);
  assert.equal(out[0]!.alert.labels.model, 'credit-default');
  assert.match(out[0]!.alert.message, /resolved: the version no longer serves traffic$/);
  assert.match(out[0]!.text, /RESOLVED psi_critical: .*no longer serves traffic/);
  assert.deepEqual(
    m.firing().map((a) => a.labels.version),
    ['2'],
  );
  assert.equal(m.active().length, 1, 'the pending alert of other v1 was dropped');
  // retiring again does nothing
  assert.deepEqual(
    m.retire((a) => a.labels.version === '1', 'x'),
    [],
  );
});
