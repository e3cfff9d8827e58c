// The Grafana dashboard deploy/grafana/scoreline.json: it parses, its variables come from the
// Prometheus data source, every panel query names only documented metrics (the allow-list is the
// README's metrics list, which must name every metric below), latency quantiles are computed from
// bucket rates by `le`, every signal the monitoring issue asks for has a panel, the grid does not
// overlap, and promtool's real PromQL parser accepts every query (in CI promtool must be there).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT } from './e2e/server.js';

type Obj = Record<string, any>;

const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy', 'grafana', 'scoreline.json'), 'utf8')) as Obj;
const panels = (dashboard.panels as Obj[]).flatMap((p) => [p, ...((p.panels as Obj[] | undefined) ?? [])]);
const queryPanels = panels.filter((p) => p.type !== 'row');
const exprs = queryPanels.flatMap((p) => (p.targets as Obj[]).map((t) => ({ panel: p.title as string, expr: t.expr as string })));

/** The metrics the dashboard uses; each must be in the README's metrics list (the test below checks). */
const DOCUMENTED = [
  'scoreline_alerts_firing',
  'scoreline_batch_size',
  'scoreline_drift_psi',
  'scoreline_feature_cache_evictions_total',
  'scoreline_feature_cache_hits_total',
  'scoreline_feature_cache_misses_total',
  'scoreline_feature_freshness_seconds',
  'scoreline_inference_batches_in_flight',
  'scoreline_inference_compute_duration_seconds',
  'scoreline_inference_queue_depth',
  'scoreline_inference_queue_duration_seconds',
  'scoreline_model_auc',
  'scoreline_model_ready',
  'scoreline_request_duration_seconds',
  'scoreline_requests_total',
  'scoreline_unrouted_requests_total',
  'scoreline_websocket_connections',
  'scoreline_websocket_pending_answers',
];

/** `a_{x,y}_b` -> a_x_b, a_y_b. */
const expand = (name: string): string[] => {
  const m = /^(.*?)\{([^}]*)\}(.+)$/.exec(name);
  return m ? m[2]!.split(',').flatMap((part) => expand(`${m[1]}${part.trim()}${m[3]}`)) : [name];
};

function section(text: string, heading: RegExp): string {
  const start = text.search(heading);
  assert.ok(start >= 0, `section ${heading} exists`);
  const rest = text.slice(start + 1);
  const end = rest.search(/^## /m);
  return end < 0 ? rest : rest.slice(0, end);
}

/**
 * Metric names in backticks in the README's metrics list (written with or without the `scoreline_`
 * prefix, possibly with a label list or a `{a,b}` alternation). Only files of the repository count.
 */
function documentedNames(): Set<string> {
  const names = new Set<string>();
  const readme = section(readFileSync(join(ROOT, 'README.md'), 'utf8'), /^## Metrics$/m);
  for (const [, code] of readme.matchAll(/`([^`]+)`/g)) {
    const bare = code!.replace(/\{[^}]*\}$/, ''); // trailing {labels}
    for (const name of expand(bare)) {
      if (/^[a-z][a-z0-9_]*[a-z0-9]$/.test(name)) names.add(name.startsWith('scoreline_') ? name : `scoreline_${name}`);
    }
  }
  return names;
}

const allowList = documentedNames();

const PROMQL_WORDS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'count',
  'stddev',
  'stdvar',
  'topk',
  'bottomk',
  'quantile',
  'count_values',
  'group',
  'rate',
  'irate',
  'increase',
  'delta',
  'idelta',
  'deriv',
  'histogram_quantile',
  'abs',
  'clamp_min',
  'clamp_max',
  'vector',
  'scalar',
  'absent',
  'time',
  'avg_over_time',
  'max_over_time',
  'min_over_time',
  'sum_over_time',
  'label_replace',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'Inf',
  'NaN',
]);

/** Metric names a PromQL expression selects: strings, label matchers, ranges, grouping lists and numbers removed first. */
function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\b(\d+(ms|[smhdwy]))+\b/g, ' ') // durations (offset 5m, 1h30m)
    .replace(/\b\d+(\.\d+)?(e[+-]?\d+)?\b/gi, ' ');
  return (s.match(/[A-Za-z_:][A-Za-z0-9_:]*/g) ?? []).filter((id) => !PROMQL_WORDS.has(id));
}

/** A documented name, or a histogram's series (`_bucket`, `_sum`, `_count`; counters end in `_total` and have none). */
function allowed(name: string): boolean {
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return allowList.has(name) || (base !== name && !base.endsWith('_total') && allowList.has(base));
}

test('the dashboard parses with a recent schema and Prometheus-driven variables', () => {
  assert.ok(dashboard.schemaVersion >= 36, `schemaVersion ${dashboard.schemaVersion}`);
  assert.equal(dashboard.uid, 'scoreline');
  const vars = Object.fromEntries((dashboard.templating.list as Obj[]).map((v) => [v.name, v]));
  assert.deepEqual(Object.keys(vars), ['datasource', 'model', 'version']);
  assert.equal(vars.datasource.type, 'datasource');
  assert.equal(vars.datasource.query, 'prometheus');
  for (const name of ['model', 'version']) {
    const v = vars[name];
    assert.equal(v.type, 'query');
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's dashboard variable, written literally in the JSON
    assert.deepEqual(v.datasource, { type: 'prometheus', uid: '${datasource}' });
    assert.equal(v.includeAll, true);
    assert.equal(v.multi, true);
    assert.equal(v.query.query, v.definition);
  }
  assert.equal(vars.model.definition, 'label_values(scoreline_requests_total, model)');
  assert.equal(vars.version.definition, 'label_values(scoreline_requests_total{model=~"$model"}, version)');
});

test('the allow-list is what the README names', () => {
  for (const name of DOCUMENTED) assert.ok(allowList.has(name), `${name} is in the README's metrics list`);
  for (const name of allowList) assert.match(name, /^scoreline_[a-z0-9_]+$/);
  // The README's metrics list writes names without the prefix and with label lists.
  for (const name of ['scoreline_requests_total', 'scoreline_model_ready', 'scoreline_batch_size']) assert.ok(allowList.has(name));
  assert.deepEqual(expand('scoreline_feature_cache_{hits,misses,evictions}_total'), [
    'scoreline_feature_cache_hits_total',
    'scoreline_feature_cache_misses_total',
    'scoreline_feature_cache_evictions_total',
  ]);
});

test('the metric-name check sees through labels, strings, ranges and grouping', () => {
  assert.deepEqual(metricNames('sum by (le, model) (rate(foo_bucket{model=~"scoreline_x", a="b"}[5m]))'), ['foo_bucket']);
  assert.deepEqual(metricNames('histogram_quantile(0.99, x) / ignoring(status) y_total offset 5m * 1e3'), ['x', 'y_total']);
  assert.ok(!allowed('scoreline_not_documented'));
  assert.ok(allowed('scoreline_request_duration_seconds_bucket'));
  assert.ok(!allowed('scoreline_requests_total_bucket'));
});

test('every panel query names only documented metrics', () => {
  assert.ok(exprs.length >= 15);
  for (const { panel, expr } of exprs) {
    const names = metricNames(expr);
    assert.ok(names.length > 0, `${panel}: ${expr} selects a metric`);
    for (const n of names) assert.ok(allowed(n), `${panel}: '${n}' is not in the documented metrics`);
  }
});

test('latency quantiles come from bucket rates aggregated by le', () => {
  const hq = exprs.filter((e) => e.expr.includes('histogram_quantile'));
  assert.ok(hq.length >= 7);
  const shape = /^histogram_quantile\((0\.\d+), sum by \(([^)]*)\) \(rate\((scoreline_[a-z_]+_bucket)(?:\{[^}]*\})?\[5m\]\)\)\)$/;
  for (const { panel, expr } of hq) {
    const m = shape.exec(expr);
    assert.ok(m, `${panel}: ${expr}`);
    assert.ok(
      m[2]!
        .split(',')
        .map((s) => s.trim())
        .includes('le'),
      `${panel}: aggregated by le`,
    );
  }
  const quantilesOf = (metric: string) =>
    hq
      .filter((e) => e.expr.includes(`(${metric}_bucket`))
      .map((e) => shape.exec(e.expr)![1])
      .sort();
  assert.deepEqual(quantilesOf('scoreline_request_duration_seconds'), ['0.5', '0.95', '0.99']);
  assert.deepEqual(quantilesOf('scoreline_inference_queue_duration_seconds'), ['0.5', '0.99']);
  assert.deepEqual(quantilesOf('scoreline_inference_compute_duration_seconds'), ['0.5', '0.99']);
  assert.deepEqual(quantilesOf('scoreline_feature_freshness_seconds'), ['0.5', '0.99']);
  // Histograms are only ever read through their series.
  for (const { panel, expr } of exprs) {
    for (const h of ['scoreline_feature_freshness_seconds', 'scoreline_request_duration_seconds', 'scoreline_batch_size']) {
      assert.doesNotMatch(expr, new RegExp(`${h}(?![_a-z])`), `${panel}: ${h} is a histogram; select _bucket, _sum or _count`);
    }
  }
});

test('the cache panels say why they are empty without Redis', () => {
  for (const p of queryPanels.filter((x) => /scoreline_feature_cache_/.test(JSON.stringify(x.targets)))) {
    assert.match(p.description, /with the in-process store .* there is nothing to cache/, p.title);
    assert.equal(p.fieldConfig.defaults.noValue, 'no L1 cache (in-process feature store)');
  }
});

test('every signal the monitoring issue asks for has a panel', () => {
  const panelWith = (re: RegExp) => exprs.find((e) => re.test(e.expr))?.panel;
  const want: [string, RegExp][] = [
    ['RPS by model, version and status', /^sum by \(model, version, status\) \(rate\(scoreline_requests_total\{/],
    ['error rate', /status="5xx"[\s\S]*\/ sum by \(model, version\) \(rate\(scoreline_requests_total\{/],
    ['batch size', /scoreline_batch_size_/],
    ['score PSI', /scoreline_drift_psi\{[^}]*feature="__score__"/],
    ['feature PSI', /scoreline_drift_psi\{[^}]*feature!="__score__"/],
    ['AUC', /scoreline_model_auc/],
    ['alerts by severity', /sum by \(severity\) \(scoreline_alerts_firing\)/],
    [
      'cache hit rate',
      /scoreline_feature_cache_hits_total[\s\S]*\/ \(sum\(rate\(scoreline_feature_cache_hits_total[\s\S]*scoreline_feature_cache_misses_total/,
    ],
    // A histogram: its quantiles per feature, never the bare name (which selects no series).
    [
      'feature freshness',
      /^histogram_quantile\(0\.99, sum by \(le, feature\) \(rate\(scoreline_feature_freshness_seconds_bucket\[5m\]\)\)\)$/,
    ],
    ['model readiness', /scoreline_model_ready/],
  ];
  for (const [what, re] of want) assert.ok(panelWith(re), `a panel shows ${what}`);
  // Model-scoped queries follow the variables.
  for (const { panel, expr } of exprs) {
    if (/scoreline_(requests|request_duration|inference_|batch_size|drift_psi|model_auc|model_ready)/.test(expr)) {
      assert.match(expr, /model=~"\$model", version=~"\$version"/, `${panel} follows $model and $version`);
    }
  }
});

test('panels: unique ids, the datasource variable, unique refIds, a grid without overlaps', () => {
  const ids = panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length);
  const cells = new Set<string>();
  for (const p of panels) {
    const { x, y, w, h } = p.gridPos as { x: number; y: number; w: number; h: number };
    assert.ok(x >= 0 && w > 0 && x + w <= 24 && h > 0, `${p.title}: inside 24 columns`);
    for (let i = x; i < x + w; i++)
      for (let j = y; j < y + h; j++) {
        assert.ok(!cells.has(`${i},${j}`), `${p.title} overlaps another panel at ${i},${j}`);
        cells.add(`${i},${j}`);
      }
    if (p.type === 'row') continue;
    assert.ok(p.title && p.description, 'panels say what they show');
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's dashboard variable, written literally in the JSON
    assert.deepEqual(p.datasource, { type: 'prometheus', uid: '${datasource}' });
    const refIds = (p.targets as Obj[]).map((t) => t.refId);
    assert.equal(new Set(refIds).size, refIds.length, `${p.title}: refIds unique`);
    for (const t of p.targets as Obj[]) assert.deepEqual(t.datasource, p.datasource);
  }
});

test('promtool parses every query', (t) => {
  if (spawnSync('promtool', ['--version']).error) {
    // Skipped only on a developer's machine: CI installs it, so missing there is a failure.
    if (process.env.CI) assert.fail('promtool is missing: .ci/run installs the Debian package prometheus');
    t.skip('promtool is not installed (apt-get install prometheus)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-grafana-'));
  try {
    const rules = (list: string[]) =>
      `groups:\n  - name: dashboard\n    rules:\n${list.map((e, i) => `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(e)}\n`).join('')}`;
    const good = join(dir, 'good.yml');
    writeFileSync(good, rules(exprs.map((e) => e.expr)));
    const r = spawnSync('promtool', ['check', 'rules', good], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`SUCCESS: ${exprs.length} rules found`));
    // The check has teeth: a broken query fails it.
    const bad = join(dir, 'bad.yml');
    writeFileSync(bad, rules(['sum by (le (rate(scoreline_requests_total[5m]))']));
    assert.notEqual(spawnSync('promtool', ['check', 'rules', bad]).status, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
