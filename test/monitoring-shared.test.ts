// Monitoring shared through PostgreSQL: a bucket written as JSON and merged back is the same as
// having recorded everything in one place (counts, bins, the HDR histogram and its percentiles);
// three replicas' shared cells plus one replica's live view equal one replica that saw all the
// traffic, in every window; while the store is down closed minutes wait (bounded, drops counted)
// and are written when it is back; the history adds every replica's minute up.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Bucket, WindowedStats, type Baselines } from '../src/monitoring/buckets.js';
import { categoricalBaseline, numericBaseline } from '../src/monitoring/drift.js';
import { SharedMonitoring } from '../src/monitoring/shared.js';
import type { VersionMonitor } from '../src/monitoring/version-monitor.js';
import { PostgresStore } from '../src/store/index.js';
import { postgresSkip, startPostgres, type TestPostgres } from './fixtures/postgres.js';
import { rng } from './fixtures/retraining.js';
import { tempDir } from './e2e/server.js';

const skip = postgresSkip();
const MINUTE = 60_000;
const HOUR = 3_600_000;

const r0 = rng(7);
const refScores = Array.from({ length: 2000 }, () => r0.uniform());
const refX = Array.from({ length: 2000 }, () => r0.normal());
const CATS = ['car', 'home', 'study'];
const BASELINES: Baselines = {
  score: numericBaseline(refScores),
  features: [
    { name: 'x', baseline: numericBaseline(refX) },
    { name: 'purpose', baseline: categoricalBaseline(refX.map((_, i) => CATS[i % 3]!)) },
  ],
  referenceAuc: 0.7,
  rows: 2000,
};

interface Event {
  at: number;
  micros: number;
  error: boolean;
  score: number;
  x: number;
  purpose: number;
}

/** Traffic over `minutes` minutes from t0: latencies spread over four decades, some errors, missing values, an unseen category. */
function traffic(t0: number, minutes: number, n: number, seed: number): Event[] {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i) => ({
    at: t0 + Math.floor((i / n) * minutes * MINUTE),
    micros: Math.round(50 * 10 ** (r.uniform() * 4)),
    error: r.uniform() < 0.03,
    score: Math.min(1, Math.max(0, r.uniform() ** 1.3)),
    x: r.uniform() < 0.05 ? Number.NaN : r.normal() + 0.3,
    purpose: r.uniform() < 0.1 ? 3 : Math.floor(r.uniform() * 3),
  }));
}

function record(stats: WindowedStats, e: Event): void {
  stats.threshold = 0.5;
  stats.recordRequest(e.at, e.error, e.micros);
  stats.recordPrediction(e.at, e.score, [e.x, e.purpose], 0);
}

/** A version monitor as the sharing sees one: its name, number and windowed statistics. */
function replicaVersion(stats: WindowedStats): VersionMonitor {
  return {
    model: 'risk',
    version: '1',
    loaded: { versionNumber: 1 },
    enabled: true,
    stats,
    volumeSnapshot: () => ({ requests: 0, errors: 0, rps: 0, error_rate: null }),
  } as unknown as VersionMonitor;
}

const comparable = (b: Bucket) => {
  const j = b.toJSON();
  return { ...j, scoreSum: Math.round(j.scoreSum * 1e6), scoreSq: Math.round(j.scoreSq * 1e6) };
};

function assertSameBucket(got: Bucket, want: Bucket, what: string): void {
  assert.deepEqual(comparable(got), comparable(want), what);
  assert.ok(Math.abs(got.scoreSum - want.scoreSum) < 1e-9, `${what}: score sum`);
  for (const p of [50, 95, 99, 99.9]) {
    assert.equal(got.latency.getValueAtPercentile(p), want.latency.getValueAtPercentile(p), `${what}: p${p}`);
  }
}

test('a bucket written as JSON and merged back equals recording everything in one place; a malformed one changes nothing', () => {
  const t0 = Date.now() - (Date.now() % MINUTE);
  const events = traffic(t0, 1, 3000, 1);
  const whole = new WindowedStats(BASELINES, t0);
  const parts = [0, 1, 2].map(() => new WindowedStats(BASELINES, t0));
  events.forEach((e, i) => {
    record(whole, e);
    record(parts[i % 3]!, e);
  });
  const merged = new Bucket(BASELINES);
  for (const p of parts) merged.mergeJSON(JSON.parse(JSON.stringify(p.view('1h', t0 + 59_000).toJSON())), BASELINES);
  assertSameBucket(merged, whole.view('1h', t0 + 59_000), 'merged');
  assert.ok(merged.positives > 0 && merged.positives < merged.predictions, 'both classes predicted');

  const before = JSON.stringify(merged.toJSON());
  const good = parts[0]!.view('1h', t0 + 59_000).toJSON();
  for (const bad of [
    null,
    { ...good, requests: 'many' },
    { ...good, features: good.features.slice(1) },
    { ...good, latency: { ...good.latency, at: [1e9], n: [1] } },
    { ...good, features: [good.features[0], { counts: [1, 2], missing: 0 }] },
  ]) {
    assert.throws(() => merged.mergeJSON(bad, BASELINES), TypeError);
    assert.equal(JSON.stringify(merged.toJSON()), before, 'nothing changed');
  }
});

let pg: TestPostgres;
let store: PostgresStore;

before(async () => {
  if (skip) return;
  pg = await startPostgres();
  store = await PostgresStore.open({ url: pg.url, dataDir: await tempDir(), log: { info() {}, warn() {} } });
});

after(async () => {
  await store?.close();
  await pg?.remove();
});

const quiet = { error() {}, warn() {} };

test('three replicas sharing through PostgreSQL: each one live view plus the others equals one replica that saw everything, in every window', {
  skip,
}, async () => {
  // Three closed minutes and an open one, within the last hour but one (no hour closes): 1h, 24h, 7d and all hold them all.
  const now = Date.now();
  const t0 = now - (now % HOUR) - HOUR + 10 * MINUTE;
  const events = traffic(t0, 4, 6000, 2);
  const end = t0 + 3 * MINUTE + 30_000;
  const whole = new WindowedStats(BASELINES, t0);
  const replicas = [0, 1, 2].map((i) => {
    const stats = new WindowedStats(BASELINES, t0);
    const vm = replicaVersion(stats);
    const shared = new SharedMonitoring({ records: store.monitoring, replica: `r${i}`, log: quiet });
    stats.onMinute = (start, b) => shared.closed(vm, 'minute', start, b);
    stats.onHour = (start, b) => shared.closed(vm, 'hour', start, b);
    return { stats, vm, shared };
  });
  events.forEach((e, i) => {
    if (e.at > end) return;
    record(whole, e);
    record(replicas[i % 3]!.stats, e);
  });
  for (const r of replicas) await r.shared.share([r.vm], end);
  for (const window of ['1h', '24h', '7d', 'all'] as const) {
    for (const [i, r] of replicas.entries()) {
      const view = r.stats.view(window, end);
      const status = await r.shared.mergeOthers(r.vm, window, end, view);
      assert.equal(status.state, 'merged');
      assert.equal(status.replicas, 3);
      assertSameBucket(view, whole.view(window, end), `${window} on replica ${i}`);
    }
  }
  // A cell kept under another reference is never added to this one's.
  const other = new WindowedStats({ ...BASELINES, score: numericBaseline(refScores.map((v) => v * v)) }, t0);
  const stranger = replicaVersion(other);
  const strangerShare = new SharedMonitoring({ records: store.monitoring, replica: 'r9', log: quiet });
  other.onMinute = (start, b) => strangerShare.closed(stranger, 'minute', start, b);
  record(other, events[0]!);
  await strangerShare.share([stranger], end);
  const view = replicas[0]!.stats.view('1h', end);
  await replicas[0]!.shared.mergeOthers(replicas[0]!.vm, '1h', end, view);
  assertSameBucket(view, whole.view('1h', end), 'with a replica on another reference');

  // The history adds up every replica's minutes, the one under another reference included (counts are counts).
  const points = await replicas[1]!.shared.history('risk', 1, t0, end);
  assert.deepEqual(
    points.map((p) => p.at),
    [t0, t0 + MINUTE, t0 + 2 * MINUTE, t0 + 3 * MINUTE],
  );
  points.forEach((p, m) => {
    const served = events.filter((e) => e.at <= end && Math.floor((e.at - t0) / MINUTE) === m).length + (m === 0 ? 1 : 0);
    assert.equal(p.requests, served, `minute ${m}`);
    assert.equal(p.predictions, served);
    // The stranger wrote its closed first minute and its (empty) open one.
    assert.equal(p.replicas, m === 0 || m === 3 ? 4 : 3);
  });
});

test('the store stopped: closed minutes wait and are written when it is back; past the bound the oldest are dropped and counted', {
  skip,
}, async () => {
  const now = Date.now();
  const t0 = now - (now % HOUR) - HOUR + 20 * MINUTE;
  const events = traffic(t0, 5, 2500, 3);
  const end = t0 + 4 * MINUTE + 10_000;
  const whole = new WindowedStats(BASELINES, t0);
  const mk = (replica: string, maxPending?: number) => {
    const stats = new WindowedStats(BASELINES, t0);
    const vm = { ...replicaVersion(stats), model: `outage-${replica}` } as unknown as VersionMonitor;
    const shared = new SharedMonitoring({
      records: store.monitoring,
      replica,
      log: quiet,
      ...(maxPending !== undefined ? { maxPending } : {}),
    });
    stats.onMinute = (start, b) => shared.closed(vm, 'minute', start, b);
    stats.onHour = (start, b) => shared.closed(vm, 'hour', start, b);
    return { stats, vm, shared };
  };
  const a = mk('a');
  const bounded = mk('b', 2);
  await pg.stop();
  try {
    for (const e of events) {
      if (e.at > end) break;
      record(whole, e);
      record(a.stats, e);
      record(bounded.stats, e);
    }
    await a.shared.share([a.vm], end);
    await bounded.shared.share([bounded.vm], end);
    const s = a.shared.status();
    assert.equal(s.state, 'failing');
    assert.equal(s.errors, 1);
    assert.equal(s.pending, 4, 'four closed minutes wait');
    assert.equal(s.dropped, 0);
    assert.match(s.last_error ?? '', /cannot be reached/);
    assert.equal(bounded.shared.status().dropped, 2, 'two of four pushed out of a queue of two');
  } finally {
    await pg.start();
  }
  await a.shared.share([a.vm], end);
  assert.equal(a.shared.status().state, 'ok');
  assert.equal(a.shared.status().pending, 0);
  // Another replica reads everything a saw, minute by minute.
  const reader = mk('reader');
  const view = reader.stats.view('1h', end);
  await reader.shared.mergeOthers({ ...reader.vm, model: 'outage-a' } as unknown as VersionMonitor, '1h', end, view);
  assertSameBucket(view, whole.view('1h', end), 'after the outage');
});
