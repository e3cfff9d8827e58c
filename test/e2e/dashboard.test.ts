// GET /dashboard in real Chromium (Debian's, driven by playwright-core) against a real demo server:
// the page is readable before any traffic, follows the traffic by polling, shows exactly the numbers
// the monitoring API returns (tiles, time series, score histogram vs reference, PSI per feature,
// performance, SLA, alerts), stops polling while hidden, and runs under its strict CSP without a
// console error. A full-page screenshot goes to test-artifacts/dashboard.png.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { chromium, type Page } from 'playwright-core';
import { request, ROOT, startServer } from './server.js';
import { elapse, waitFor } from '../fixtures/wait.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const PAGE = join(ROOT, 'src', 'server', 'dashboard.html');
const MODEL = 'credit-default';
const SNAPSHOT_PATH = `/v1/monitoring/${MODEL}`;
const FEATURES = [
  'duration_months',
  'amount',
  'age',
  'income',
  'employment_years',
  'credit_history_months',
  'existing_loans',
  'debt_to_income',
  'txn_count_24h',
  'late_payments_90d',
];
const CLASSIFICATION_TILES = ['auc', 'ks', 'gini', 'accuracy', 'precision', 'recall', 'f1', 'log_loss', 'brier'];
const SLA_KEYS = ['p95_ms', 'p99_ms', 'error_rate', 'availability'];

const chromiumMissing = existsSync(CHROMIUM) ? null : `Debian Chromium is not installed at ${CHROMIUM} (apt-get install chromium)`;

interface Shown {
  value: string | undefined;
  text: string | null;
  band?: string | undefined;
  sub?: string | null;
  note?: string | undefined;
}
/** Everything the page shows, read in one synchronous pass so it comes from one render. */
interface DomState {
  state: string;
  generatedAt: string;
  model: string;
  version: string;
  window: string;
  models: string[];
  versions: string[];
  tiles: Record<string, Shown>;
  charts: Record<string, Record<string, string> | null>;
  legends: Record<string, Shown>;
  chartEmpty: Record<string, string | null>;
  score: { bins: Record<string, string>[]; edges: Shown[]; current: string[]; reference: string[] };
  psi: {
    testid: string;
    name: string;
    value: string;
    band: string;
    n: string;
    min: string;
    missing: string;
    text: string | null;
    note: string | null;
  }[];
  perfTask: string | undefined;
  perfEmpty: string | null;
  perfInsufficient: (string | null)[];
  sla: Record<string, string>[];
  compliant: string | undefined;
  alerts: Record<string, string>[];
  alertsEmpty: string | null;
  renderErrors: string[];
  scrollWidth: number;
}

// Runs in the page (a string: the project compiles without the DOM lib).
const READ_DOM = `(() => {
  const one = (sel) => document.querySelector(sel);
  const all = (sel) => [...document.querySelectorAll(sel)];
  const text = (el) => (el ? el.textContent.trim() : null);
  const data = (el) => (el ? Object.assign({}, el.dataset) : null);
  const shown = (el, sel) => ({ value: el.dataset.value, text: text(sel ? el.querySelector(sel) : el) });
  const root = one('[data-testid=dashboard]');
  return {
    state: root.dataset.state, generatedAt: root.dataset.generatedAt || '', model: root.dataset.model || '',
    version: root.dataset.version || '', window: root.dataset.window || '',
    models: all('[data-testid=select-model] option').map((o) => o.value),
    versions: all('[data-testid=select-version] option').map((o) => o.value),
    tiles: Object.fromEntries(all('.tile[data-testid]').map((el) => [el.dataset.testid, { ...shown(el, '.value'), band: el.dataset.band, sub: text(el.querySelector('.sub')), note: el.dataset.note }])),
    perfInsufficient: all('[data-testid=perf-insufficient]').map(text),
    charts: Object.fromEntries(['rps', 'latency', 'errors'].map((id) => [id, data(one('[data-testid=chart-' + id + ']'))])),
    legends: Object.fromEntries(all('[data-testid^=legend-]').map((el) => [el.dataset.testid, shown(el, '.num')])),
    chartEmpty: Object.fromEntries(['rps', 'latency', 'errors'].map((id) => [id, text(one('[data-testid=chart-' + id + '-empty]'))])),
    score: {
      bins: all('[data-testid=score-bin]').map(data),
      edges: all('[data-testid=score-edge]').map((el) => shown(el)),
      current: all('[data-testid=score-bar-current]').map((el) => el.dataset.value),
      reference: all('[data-testid=score-bar-reference]').map((el) => el.dataset.value),
    },
    psi: all('[data-testid=psi-score], [data-testid=psi-row]').map((g) => ({
      testid: g.dataset.testid, name: g.dataset.name, value: g.dataset.value, band: g.dataset.band, n: g.dataset.n, min: g.dataset.minN,
      missing: g.dataset.missingRate, text: text(g.querySelector('text.value')), note: text(g.querySelector('text.insufficient')),
    })),
    perfTask: one('#performance').dataset.task,
    perfEmpty: text(one('[data-testid=perf-empty]')),
    sla: all('[data-testid=sla-row]').map(data),
    compliant: one('[data-testid=sla-compliant]') ? one('[data-testid=sla-compliant]').dataset.value : undefined,
    alerts: all('[data-testid=alert]').map(data),
    alertsEmpty: text(one('[data-testid=alerts-empty]')),
    renderErrors: all('[data-testid=render-error]').map(text),
    scrollWidth: document.documentElement.scrollWidth,
  };
})()`;

const readDom = async (page: Page): Promise<DomState> => (await page.evaluate(READ_DOM)) as DomState;

/** A data-value attribute holds the API number exactly (String(number) round-trips); '' is null. */
function assertValue(attr: string | undefined, expected: unknown, what: string): void {
  if (expected === null || expected === undefined) assert.equal(attr, '', `${what}: null shows as no value`);
  else assert.equal(Number(attr), expected, `${what}: data-value ${attr} vs API ${String(expected)}`);
}

/** The visible text is the value rounded to the decimals it shows (scale 100 for percentages). */
function assertShown(text: string | null, expected: unknown, what: string, scale = 1): void {
  if (expected === null || expected === undefined) {
    assert.equal(text, '—', `${what}: null shows as a dash`);
    return;
  }
  assert.equal(typeof expected, 'number', `${what}: the API gives a number`);
  const m = /-?[\d,]*\.?\d+/.exec(text ?? '');
  assert.ok(m, `${what}: '${text}' shows a number`);
  const shown = Number(m[0].replace(/,/g, ''));
  const decimals = m[0].includes('.') ? m[0].split('.')[1]!.length : 0;
  const tolerance = 0.5 * 10 ** -decimals + 1e-9 * Math.abs(shown);
  assert.ok(Math.abs(shown - (expected as number) * scale) <= tolerance, `${what}: '${text}' is not ${String(expected)} rounded`);
}

async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  let last: T | undefined;
  await waitFor(
    async () => {
      last = await read();
      return ok(last);
    },
    { timeoutMs: ms, intervalMs: 200, message: () => `${what} (last seen: ${JSON.stringify(last)?.slice(0, 3000)})` },
  );
  return last as T;
}

test('the page builds its DOM from API strings as text only and keeps inline code CSP-hashable', () => {
  const html = readFileSync(PAGE, 'utf8');
  for (const sink of ['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'document.write', 'eval(', 'new Function', 'srcdoc']) {
    assert.ok(!html.includes(sink), `the page must not use ${sink}`);
  }
  assert.doesNotMatch(html, /\sstyle\s*=/, 'style attributes would need unsafe-inline');
  assert.doesNotMatch(html, /\son[a-z]+\s*=/, 'inline event handlers would need unsafe-inline');
  assert.doesNotMatch(html, /(src|href)\s*=\s*["']?(https?:)?\/\//, 'nothing is loaded from another origin');
});

test('the dashboard in Chromium shows what the monitoring API returns', {
  skip: chromiumMissing !== null && !process.env.CI ? chromiumMissing! : false,
  timeout: 120_000,
}, async () => {
  if (chromiumMissing !== null) assert.fail(`${chromiumMissing}; CI must run the browser test`);
  const server = await startServer(['--config', join(ROOT, 'examples', 'scoreline.yaml')]);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    // The answers the page itself received, by generated_at, to check the render against its input.
    const received = new Map<string, any>();
    let history: any = null;
    let snapshotRequests: URL[] = [];
    const historyRequests: URL[] = [];
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.pathname === SNAPSHOT_PATH) snapshotRequests.push(u);
      if (u.pathname === `${SNAPSHOT_PATH}/history`) historyRequests.push(u);
    });
    page.on('response', (r) => {
      const path = new URL(r.url()).pathname;
      if (path === SNAPSHOT_PATH && r.ok())
        void r.json().then(
          (b: any) => received.set(b.generated_at, b),
          () => undefined,
        );
      if (path === `${SNAPSHOT_PATH}/history` && r.ok())
        void r.json().then(
          (b: any) => (history = b),
          () => undefined,
        );
    });

    // 1. Served with its headers, readable before any traffic.
    const res = await page.goto(`${server.url}/dashboard`);
    assert.ok(res, 'navigation answered');
    assert.equal(res.status(), 200, await res.text());
    const headers = res.headers();
    assert.equal(headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(headers['cache-control'], 'no-store');
    const csp = headers['content-security-policy'] ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/]+=*'(;|$)/);
    assert.match(csp, /style-src 'sha256-[A-Za-z0-9+/]+=*'(;|$)/);
    assert.match(csp, /connect-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);

    await page.waitForSelector('[data-testid=dashboard][data-state=ready]', { timeout: 15_000 });
    const quiet = await readDom(page);
    assert.deepEqual(quiet.renderErrors, []);
    assert.ok(quiet.models.includes(MODEL), `the model selector lists ${MODEL}: ${quiet.models.join(', ')}`);
    assert.equal(quiet.model, MODEL);
    assert.equal(quiet.chartEmpty.rps, 'no traffic yet');
    assert.equal(quiet.chartEmpty.latency, 'no traffic yet');
    assert.equal(quiet.tiles['tile-p99']!.text, '—');
    assert.match(quiet.perfEmpty ?? '', /^no labels yet/);
    // Before any prediction every PSI is short of its minimum: no colour, the sample size instead
    // (320 values: 300 effective against the demo's 5,000-row reference).
    assert.ok(quiet.psi.length > 1);
    for (const r of quiet.psi) {
      assert.deepEqual([r.band, r.value, r.n, r.min], ['insufficient_data', '', '0', '320'], `PSI row ${r.name} before traffic`);
      assert.equal(r.note, 'insufficient data (n = 0 of 320)');
    }

    // 2. Traffic: entity scoring with the demo customers, OIP inference with reference rows, labels.
    const scored: { id: string; score: number }[] = [];
    const durations = [12, 24, 36, 48, 60];
    for (let start = 0; start < 48; start += 8) {
      await Promise.all(
        Array.from({ length: 8 }, async (_, k) => {
          const i = start + k;
          const r = await request(`${server.url}/v1/score/${MODEL}`, {
            json: {
              entity: { customer_id: `C${String(i).padStart(5, '0')}` },
              context: { amount: 1000 + 450 * i, duration_months: durations[i % 5] },
            },
          });
          assert.equal(r.status, 200, r.text);
          scored.push({ id: r.body.request_id, score: r.body.score });
        }),
      );
    }
    // Reference rows, enough for the drift minimum (320 values) so that PSI gets real bands.
    const BATCH = 50;
    const rows = readFileSync(join(ROOT, 'examples', 'models', MODEL, 'reference.csv'), 'utf8')
      .trim()
      .split('\n')
      .slice(1, 401)
      .map((line) => line.split(',').slice(0, FEATURES.length).map(Number));
    for (let i = 0; i < rows.length; i += BATCH) {
      const batch = rows.slice(i, i + BATCH);
      const r = await request(`${server.url}/v2/models/${MODEL}/infer`, {
        json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [batch.length, FEATURES.length], data: batch.flat() }] },
      });
      assert.equal(r.status, 200, r.text);
    }
    const requests = scored.length + rows.length / BATCH;
    // Labels that mostly follow the score, with two swaps so that the AUC is neither 0 nor 1.
    const ranked = [...scored].sort((a, b) => b.score - a.score);
    const labels = ranked.map((s, i) => ({ request_id: s.id, label: (i < 16 && i !== 3) || i === 40 ? 1 : 0 }));
    const fb = await request(`${server.url}/v1/feedback`, { json: labels });
    assert.ok(fb.status >= 200 && fb.status < 300, `feedback accepted: ${fb.status} ${fb.text}`);

    // 3. The API has taken it all in; these parts no longer move.
    const api = await until(
      `the monitoring API counts ${requests} requests and ${labels.length} labels`,
      async () => (await request(`${server.url}${SNAPSHOT_PATH}`)).body,
      (b: any) => b?.volume?.requests === requests && b?.performance?.labelled === labels.length,
    );
    const index = (await request(`${server.url}/v1/monitoring`)).body;
    const listed = index.models.find((m: any) => m.name === MODEL);
    assert.ok(listed, `GET /v1/monitoring lists ${MODEL}`);
    assert.equal(api.task, 'classification');
    assert.deepEqual(Object.keys(api.drift.features).sort(), [...FEATURES].sort(), 'the API gives PSI for every input feature');
    const counts: number[] = api.predictions.histogram.counts;
    assert.equal(counts.length, 10);
    assert.equal(api.predictions.histogram.edges.length, 9);

    // 4. The page follows by polling, and shows exactly what it received.
    const settled = Date.parse(api.generated_at);
    assert.ok(!Number.isNaN(settled), `generated_at is an ISO time: ${api.generated_at}`);
    const dom = await until(
      'the page shows an answer generated after the API settled',
      () => readDom(page),
      (d) => d.state === 'ready' && received.has(d.generatedAt) && Date.parse(d.generatedAt) > settled,
    );
    const seen = received.get(dom.generatedAt);
    assert.deepEqual(dom.renderErrors, []);
    // what the page received is what the test reads from the API
    assert.equal(seen.model, MODEL);
    assert.equal(seen.version, api.version);
    for (const part of ['latency', 'drift', 'performance', 'predictions'] as const)
      assert.deepEqual(seen[part], api[part], `${part} as the page received it`);
    assert.equal(seen.volume.requests, api.volume.requests);

    assert.equal(dom.model, MODEL);
    assert.equal(dom.version, String(api.version));
    assert.equal(dom.window, 'all');
    assert.ok(dom.models.includes(MODEL));
    for (const v of listed.versions) assert.ok(dom.versions.includes(String(v.version)), `version ${v.version} is selectable`);

    // tiles
    const t = dom.tiles;
    assertValue(t['tile-requests']!.value, api.volume.requests, 'requests tile');
    assertShown(t['tile-requests']!.text, api.volume.requests, 'requests tile');
    assertValue(t['tile-rps']!.value, seen.volume.rps, 'RPS tile');
    assertShown(t['tile-rps']!.text, seen.volume.rps, 'RPS tile');
    assert.ok(seen.volume.rps > 0, 'traffic gives a positive RPS');
    assertValue(t['tile-error-rate']!.value, seen.volume.error_rate, 'error rate tile');
    assertShown(t['tile-error-rate']!.text, seen.volume.error_rate, 'error rate tile', 100);
    for (const p of ['p50', 'p95', 'p99', 'p999']) {
      assertValue(t[`tile-${p}`]!.value, api.latency[`${p}_ms`], `${p} tile`);
      assertShown(t[`tile-${p}`]!.text, api.latency[`${p}_ms`], `${p} tile`);
    }
    assert.ok(api.latency.p99_ms > 0);

    // time series: the live point of each line, and every history point the page was given
    assert.ok(history !== null && Array.isArray(history.points), 'the history endpoint answered the page with points');
    for (const id of ['rps', 'latency', 'errors'])
      assert.equal(dom.charts[id]!.points, String(history.points.length), `${id} chart points`);
    assertValue(dom.charts.rps!.liveRps, seen.volume.rps, 'RPS chart live point');
    assertValue(dom.charts.errors!.liveErrorRate, seen.volume.error_rate, 'error-rate chart live point');
    for (const p of ['p50', 'p95', 'p99']) {
      assertValue(dom.charts.latency![`live${p[0]!.toUpperCase()}${p.slice(1)}Ms`], api.latency[`${p}_ms`], `latency chart live ${p}`);
      const legend = dom.legends[`legend-latency-${p}_ms`]!;
      assertValue(legend.value, api.latency[`${p}_ms`], `latency legend ${p}`);
      assertShown(legend.text, api.latency[`${p}_ms`], `latency legend ${p}`);
    }
    assert.equal(dom.chartEmpty.rps, null, 'with traffic the RPS chart is drawn');

    // score histogram: one group per bin, current share and reference share per bin, edges as labels
    const hist = api.predictions.histogram;
    const total = counts.reduce((a, b) => a + b, 0);
    assert.equal(total, api.predictions.count, 'the histogram holds every prediction');
    assert.equal(dom.score.bins.length, counts.length);
    assert.equal(dom.score.current.length, counts.length);
    assert.equal(dom.score.reference.length, counts.length);
    counts.forEach((c, i) => {
      assert.equal(dom.score.bins[i]!.count, String(c), `bin ${i} count`);
      assertValue(dom.score.current[i], c / total, `bin ${i} current share`);
      assertValue(dom.score.reference[i], hist.reference_shares[i], `bin ${i} reference share`);
    });
    assert.deepEqual(
      dom.score.edges.map((e) => Number(e.value)),
      hist.edges,
    );
    dom.score.edges.forEach((e, i) => {
      assertShown(e.text, hist.edges[i], `edge ${i} label`);
    });

    // PSI: the score highlighted first, then one bar per feature with its value and band (a
    // colour), or, below the minimum sample, no bar and "insufficient data (n = X of Y)"
    assert.equal(dom.psi[0]!.testid, 'psi-score');
    assertValue(dom.psi[0]!.value, api.drift.score.psi, 'score PSI');
    assert.equal(dom.psi[0]!.band, api.drift.score.band ?? 'none');
    assert.equal(api.drift.score.n, api.predictions.count);
    assert.ok(
      ['stable', 'watch', 'significant'].includes(api.drift.score.band),
      `the score PSI has a band: ${JSON.stringify(api.drift.score)}`,
    );
    const bars = dom.psi.filter((r) => r.testid === 'psi-row');
    assert.deepEqual(bars.map((r) => r.name).sort(), Object.keys(api.drift.features).sort());
    for (const bar of [dom.psi[0]!, ...bars]) {
      const f = bar.testid === 'psi-score' ? api.drift.score : api.drift.features[bar.name];
      assertValue(bar.value, f.psi, `PSI of ${bar.name}`);
      assert.equal(bar.band, f.band ?? 'none', `band of ${bar.name}`);
      assertValue(bar.n, f.n, `sample size of ${bar.name}`);
      if (f.band === 'insufficient_data') {
        assert.equal(bar.note, `insufficient data (n = ${f.n} of ${f.min_n})`, `note of ${bar.name}`);
        assert.equal(bar.text, null, `no PSI number beside ${bar.name}'s note`);
      } else {
        assertShown(bar.text?.split(' ')[0] ?? null, f.psi, `PSI of ${bar.name}`);
        assert.equal(bar.note, null, `note of ${bar.name}`);
      }
      if (bar.testid === 'psi-row') assertValue(bar.missing, f.missing_rate, `missing rate of ${bar.name}`);
    }
    const order = bars.map((r) => (r.value === '' || r.band === 'insufficient_data' ? -1 : Number(r.value)));
    assert.deepEqual(
      order,
      [...order].sort((a, b) => b - a),
      'features sorted by PSI, largest first, those short of their minimum last',
    );

    // performance tiles, from the labels sent
    assert.equal(dom.perfTask, 'classification');
    assert.equal(dom.perfEmpty, null);
    for (const k of CLASSIFICATION_TILES) {
      const shown = t[`perf-${k.replace(/_/g, '-')}`]!;
      assertValue(shown.value, api.performance[k], `${k} tile`);
      assertShown(shown.text, api.performance[k], `${k} tile`);
      // 48 labels are short of every metric's minimum: the value with why it does not count.
      assert.equal(shown.band, 'insufficient_data', `${k} band`);
      const min = ['auc', 'ks', 'gini'].includes(k) ? '1,000' : '400';
      assert.equal(shown.sub, `n = ${labels.length} of ${min}`, `${k} tile sample`);
      assert.equal(shown.note, `insufficient data (n = ${labels.length} of ${min})`, `${k} tile note`);
    }
    assert.deepEqual(dom.perfInsufficient, [
      `AUC, KS, Gini: insufficient data (n = ${labels.length} of 1,000)`,
      `Accuracy, Precision, Recall, F1, Log loss, Brier: insufficient data (n = ${labels.length} of 400)`,
    ]);
    assert.ok(api.performance.auc > 0 && api.performance.auc < 1, `AUC from mixed labels: ${api.performance.auc}`);
    assertValue(t['perf-labelled']!.value, labels.length, 'labelled tile');

    // SLA rows
    assert.deepEqual(
      dom.sla.map((r) => r.key),
      SLA_KEYS,
    );
    for (const row of dom.sla) {
      const s = seen.sla[row.key!];
      assert.ok(s, `the API has sla.${row.key}`);
      assertValue(row.target, s.target, `SLA ${row.key} target`);
      assertValue(row.actual, s.actual, `SLA ${row.key} actual`);
      assert.equal(row.met, typeof s.met === 'boolean' ? String(s.met) : '');
    }
    assert.equal(dom.compliant, typeof seen.sla.compliant === 'boolean' ? String(seen.sla.compliant) : '');

    // open alerts: one item per alert with its severity and state
    assert.equal(dom.alerts.length, seen.alerts.length, 'alerts listed');
    assert.deepEqual(
      dom.alerts.map((a) => `${a.id}/${a.severity}/${a.state}`).sort(),
      seen.alerts.map((a: any) => `${a.id}/${a.severity}/${a.state}`).sort(),
    );
    if (seen.alerts.length === 0) assert.equal(dom.alertsEmpty, 'no open alerts');

    assert.ok(dom.scrollWidth <= 1280, `no horizontal scrolling at 1280 px (${dom.scrollWidth})`);
    mkdirSync(join(ROOT, 'test-artifacts'), { recursive: true });
    await page.screenshot({ path: join(ROOT, 'test-artifacts', 'dashboard.png'), fullPage: true });

    // 5. The window selector asks for that window, history included.
    historyRequests.length = 0;
    await page.selectOption('[data-testid=select-window]', '1h');
    await page.waitForSelector('[data-testid=dashboard][data-state=ready][data-window="1h"]', { timeout: 10_000 });
    assert.equal(snapshotRequests.at(-1)!.searchParams.get('window'), '1h');
    const from = Date.parse(historyRequests.at(-1)?.searchParams.get('from') ?? '');
    assert.ok(Math.abs(Date.now() - 3600e3 - from) < 60_000, 'history for the last hour');

    // 6. Hidden tab: no polling; visible again: polls at once.
    await page.evaluate(`(() => {
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
      document.dispatchEvent(new Event('visibilitychange'));
    })()`);
    snapshotRequests = [];
    // Elapsed time is the subject: over two poll intervals (POLL_MS is 2 s) the hidden page must NOT ask.
    await elapse(4_500);
    assert.equal(snapshotRequests.length, 0, 'no polling while the tab is hidden');
    const next = page.waitForRequest((r) => new URL(r.url()).pathname === SNAPSHOT_PATH, { timeout: 1_000 });
    await page.evaluate(`(() => {
      delete document.hidden;
      delete document.visibilityState;
      document.dispatchEvent(new Event('visibilitychange'));
    })()`);
    await next;

    assert.deepEqual(problems, [], 'no console errors, CSP violations or page errors');
  } catch (e) {
    process.stderr.write(`server log:\n${server.logs.slice(-40).join('\n')}\n`);
    throw e;
  } finally {
    await browser.close();
    assert.equal(await server.stop(), 0);
  }
});
