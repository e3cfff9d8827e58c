// The monitoring store pieces in process: windowed statistics rotating minutes into hours and
// "all" with an injected clock, drift against a frozen reference, and the prediction log thread
// (append, feedback joins with unknown ids, labelled windows, history, alerts) surviving a reopen.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { WindowedStats, PredictionLog, freezeReference, baselinesOf, parseCsvTable, DEFAULT_MIN_SAMPLES } from '../src/monitoring/index.js';
import { binIndex, frozenEdges, psi, shares } from '../src/monitoring/drift.js';
import { tempDir } from './e2e/server.js';

const T0 = Date.UTC(2026, 0, 5, 10, 0, 0);
const MIN = 60_000;

test('windows: a minute closes into its hour and "all"; 1h keeps 60 minutes, 24h and 7d keep hours', () => {
  const s = new WindowedStats(null, T0);
  const minutes: number[] = [];
  s.onMinute = (start) => minutes.push(start);
  for (let m = 0; m < 90; m++) for (let k = 0; k < 10; k++) s.recordRequest(T0 + m * MIN + k, k === 0, 1000 + k);
  const now = T0 + 89 * MIN + 30_000;
  assert.equal(s.view('all', now).requests, 900);
  assert.equal(s.view('all', now).errors, 90);
  // the last hour: minutes 30..89 closed or open
  assert.equal(s.view('1h', now).requests, 600);
  assert.equal(s.view('24h', now).requests, 900);
  assert.equal(s.view('7d', now).requests, 900);
  assert.equal(minutes.length, 89);
  assert.equal(minutes[0], T0);
  const lat = s.view('1h', now).latency;
  assert.equal(lat.totalCount, 600);
  assert.ok(Math.abs(lat.getValueAtPercentile(50) - 1005) <= 10);
});

test('drift of a window against the frozen reference equals the PSI of the same values', () => {
  const ref = Array.from({ length: 1000 }, (_, i) => i / 1000);
  const table = parseCsvTable(['x,label', ...ref.map((v, i) => `${v},${i % 2}`)].join('\n'));
  const record = freezeReference(['x'], table, ref, 'label');
  assert.equal(record.rows, 1000);
  assert.equal(record.referenceAuc, 0.501); // odd i beat (i+1)/2 evens: 125250 of 250000 pairs
  const s = new WindowedStats(baselinesOf(record), T0);
  const current = Array.from({ length: 500 }, (_, i) => 0.5 + i / 1000);
  const row = new Float32Array(1);
  for (const v of current) {
    row[0] = v;
    s.recordPrediction(T0 + 1000, v, row, 0);
  }
  const d = s.drift(s.view('all', T0 + 2000), DEFAULT_MIN_SAMPLES.psi);
  const edges = frozenEdges(ref);
  const counts = new Array(10).fill(0);
  for (const v of current) counts[binIndex(edges, Math.fround(v))]++;
  const expected = psi(shares(new Array(10).fill(100)), shares(counts));
  assert.ok(Math.abs(d.features.x!.psi! - expected) < 1e-9, `${d.features.x!.psi} vs ${expected}`);
  assert.equal(d.features.x!.band, 'significant');
  assert.equal(d.features.x!.missing_rate, 0);
  // 500 values against a 1000-row reference clear the default minimum (429 = 300 effective values).
  assert.equal(d.features.x!.n, 500);
  assert.equal(d.features.x!.min_n, 429);
});

test('prediction log: append, feedback joins by id, unknown ids reported, labelled windows, history and alerts survive a reopen', async () => {
  const dir = await tempDir();
  let log = new PredictionLog({ dataDir: dir, sampleRate: 1, retentionDays: 30 });
  const now = Date.now();
  for (let i = 0; i < 100; i++) log.append(`r${i}`, 'm', 1, 'default', now - i * 1000, i / 100, Float32Array.of(i, i * 2), 0, 2);
  log.append('old', 'm', 1, 'default', now - 48 * 3_600_000, 0.9, null, 0, 0);
  const fb = await log.feedback([
    ...Array.from({ length: 50 }, (_, i) => ({ requestId: `r${i}`, label: i % 2 })),
    { requestId: 'ghost', label: 1 },
  ]);
  assert.deepEqual(fb, { joined: 50, unknown: ['ghost'], rejected: [] });
  log.putHistory([{ model: 'm', version: 1, at: now - MIN, data: JSON.stringify({ requests: 7 }) }]);
  log.saveAlert('a1', 'firing', { id: 'a1', rule: 'score_psi_critical', state: 'firing' }, now);
  await log.close();

  log = new PredictionLog({ dataDir: dir, sampleRate: 1, retentionDays: 30 });
  const lab = await log.labelled('m', 1, now - 3_600_000);
  assert.equal(lab.scores.length, 50);
  assert.equal(
    lab.labels.reduce((a, b) => a + b, 0),
    25,
  );
  assert.deepEqual([...lab.scores].sort((a, b) => a - b).slice(0, 3), [0, 0.01, 0.02]);
  const late = await log.feedback([{ requestId: 'old', label: 1 }]);
  assert.equal(late.joined, 1);
  assert.equal((await log.labelled('m', 1, now - 3_600_000)).scores.length, 50, 'the 48 h old row is outside the window');
  assert.equal((await log.labelled('m', 1, 0)).scores.length, 51);
  const train = await log.training('m');
  assert.equal(train.length, 50);
  assert.deepEqual(train.find((r) => r.score === 0.02)!.features, [2, 4]);
  assert.deepEqual(
    (await log.history('m', 1, now - 2 * MIN, now)).map((p) => p.requests),
    [7],
  );
  assert.deepEqual(
    (await log.openAlerts()).map((a: any) => a.id),
    ['a1'],
  );
  await log.close();
});

test('monitoring.db: a new file has 16 KB pages; a file made with 4 KB pages keeps them and works', async () => {
  const fresh = await tempDir();
  const older = await tempDir();
  const made = new Database(join(older, 'monitoring.db'));
  made.pragma('page_size = 4096');
  made.exec('CREATE TABLE before_us (x)');
  made.close();
  for (const dir of [fresh, older]) {
    const log = new PredictionLog({ dataDir: dir, sampleRate: 1, retentionDays: 30 });
    for (let i = 0; i < 3000; i++) log.append(`p${i}`, 'm', 1, 'default', Date.now(), 0.5, Float32Array.of(i), 0, 1);
    assert.equal((await log.feedback([{ requestId: 'p2999', label: 1 }])).joined, 1);
    await log.close();
  }
  const pageSize = (dir: string) => {
    const db = new Database(join(dir, 'monitoring.db'), { readonly: true });
    const size = db.pragma('page_size', { simple: true });
    db.close();
    return size;
  };
  assert.equal(pageSize(fresh), 16384);
  assert.equal(pageSize(older), 4096);
});

test('prediction log sampling keeps about the configured share', async () => {
  const log = new PredictionLog({ dataDir: await tempDir(), sampleRate: 0.25, retentionDays: 1 });
  let kept = 0;
  for (let i = 0; i < 20_000; i++) if (log.sampled()) kept++;
  assert.ok(Math.abs(kept - 5000) < 4 * Math.sqrt(20_000 * 0.25 * 0.75), `kept ${kept}`);
  await log.close();
});

test('prediction log: segments of several versions and variants, multi-flush streams, relabelling, and retention', async () => {
  const log = new PredictionLog({ dataDir: await tempDir(), sampleRate: 1, retentionDays: 30 });
  const now = Date.now();
  const old = now - 40 * 86_400_000;
  // The retention pass the log runs at start would drop these 40-day-old rows if it saw them: let it finish first.
  await log.drain();
  // An old segment first (segment ids grow with time), then 10,000 rows over three streams: several flushes each.
  for (let i = 0; i < 50; i++) log.append(`old${i}`, 'm', 1, 'default', old + i, 0.5, Float32Array.of(i), 0, 1);
  log.flush();
  for (let i = 0; i < 10_000; i++) {
    const variant = i % 3 === 0 ? 'canary' : 'default';
    const version = i % 3 === 0 ? 2 : 1;
    log.append(`n${i}`, 'm', version, variant, now - 10_000 + i, i / 10_000, Float32Array.of(i), 0, 1);
  }
  assert.equal(log.logged, 10_050);
  const fb = await log.feedback([
    ...Array.from({ length: 10_000 }, (_, i) => ({ requestId: `n${i}`, label: i % 2 })),
    ...Array.from({ length: 50 }, (_, i) => ({ requestId: `old${i}`, label: 1 })),
  ]);
  assert.equal(fb.joined, 10_050);
  const v2 = await log.labelled('m', 2, 0);
  assert.equal(v2.scores.length, 3334);
  // newest first, with each row's own score and label
  assert.equal(v2.scores[0], 9999 / 10_000);
  assert.equal(v2.labels[0], 1);
  assert.equal((await log.labelled('m', 1, 0)).scores.length, 6666 + 50);
  // A second label for the same request replaces the first.
  await log.feedback([{ requestId: 'n9999', label: 0 }]);
  assert.equal((await log.labelled('m', 2, 0)).labels[0], 0);
  const train = await log.training('m', now - 20_000);
  assert.equal(train.length, 10_000);
  assert.deepEqual(train[123]!.features, [123]);

  const pruned = await log.prune(now - 30 * 86_400_000);
  assert.equal(pruned.predictions, 50);
  assert.equal((await log.labelled('m', 1, 0)).scores.length, 6666);
  assert.deepEqual(await log.feedback([{ requestId: 'old3', label: 1 }]), { joined: 0, unknown: ['old3'], rejected: [] });
  assert.equal((await log.feedback([{ requestId: 'n3', label: 1 }])).joined, 1);
  await log.close();
});

test('prediction log: a label its model cannot have is rejected with the reason and changes nothing', async () => {
  const log = new PredictionLog({ dataDir: await tempDir(), sampleRate: 1, retentionDays: 30 });
  const now = Date.now();
  log.append('c1', 'clf', 1, 'default', now, 0.9, null, 0, 0, 'classification');
  log.append('r1', 'reg', 1, 'default', now, 12.5, null, 0, 0, 'regression');
  log.append('u1', 'old', 1, 'default', now, 0.4, null, 0, 0); // task not known (a row from before tasks were logged)
  assert.deepEqual(await log.feedback([{ requestId: 'c1', label: 1 }]), { joined: 1, unknown: [], rejected: [] });
  const fb = await log.feedback([
    { requestId: 'c1', label: 7 },
    { requestId: 'c1', label: -1e308 },
    { requestId: 'r1', label: -1e308 },
    { requestId: 'u1', label: 0.25 },
  ]);
  assert.equal(fb.joined, 2);
  assert.deepEqual(fb.unknown, []);
  assert.deepEqual(
    fb.rejected.map((r) => [r.requestId, r.label]),
    [
      ['c1', 7],
      ['c1', -1e308],
    ],
  );
  assert.equal(fb.rejected[0]!.reason, "label 7 is not 0/1 (or true/false), the only labels of model 'clf' version 1 (classification)");
  const c = await log.labelled('clf', 1, 0);
  assert.deepEqual([...c.labels], [1], 'the earlier label stands');
  assert.deepEqual([...(await log.labelled('reg', 1, 0)).labels], [-1e308]);
  assert.deepEqual([...(await log.labelled('old', 1, 0)).labels], [0.25]);
  await log.close();
});

test('prediction log, durability sync: commit() settles once the rows are in the file, one flush for everything pushed in the same turn', async () => {
  const dir = await tempDir();
  const log = new PredictionLog({ dataDir: dir, sampleRate: 1, retentionDays: 30, durability: 'sync', flushMs: 60_000 });
  const a = log.stream('m', 1, 'default', 2, 'classification');
  const b = log.stream('m', 2, 'canary', 2, 'classification');
  for (let i = 0; i < 300; i++) (i % 2 === 0 ? a : b).push(`s${i}`, Date.now(), i / 300, Float32Array.of(i, -i), 0);
  const first = log.commit();
  assert.equal(log.commit(), first, 'pushes of one turn share one commit');
  assert.equal(log.backlog, 300, 'in the ring, not yet written: the log thread is asked at the end of the turn');
  await first;
  assert.equal(log.backlog, 0);
  // Another connection to the file sees every row: committed, not just handed to the log thread.
  const db = new Database(join(dir, 'monitoring.db'), { readonly: true });
  assert.equal(db.prepare('SELECT count(*) FROM prediction_ids').pluck().get(), 300);
  assert.equal(db.prepare('SELECT count(*) FROM segments').pluck().get(), 2, 'one segment per stream: one flush');
  db.close();
  // A commit with nothing new still settles (an empty flush carries it).
  await log.commit();
  assert.deepEqual(log.status(), {
    state: 'ok',
    durability: 'sync',
    last_error: null,
    last_error_at: null,
    errors: 0,
    backlog: 0,
    dropped: 0,
    restarts: 0,
    shipping: null,
  });
  await log.close();
  await assert.rejects(log.commit(), /closed/);
});
