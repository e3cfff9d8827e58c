// Canary statistics shared by replicas: two replicas' StepStats, one of them through its shared
// JSON, merge to exactly what one StepStats that saw all of the traffic holds (counts, latency
// percentiles, per-batch units, score bins, and so the analysis), while each half alone is below
// the minimum samples; and the sharing (src/deploy/shared-steps.ts) never counts a row of another
// step, keeps judging with the last rows of the same step while the store cannot be read, and
// counts and logs its failures once per episode.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { analyzeCanary, StepStats, type ScoreReference } from '../src/deploy/analysis.js';
import { SharedSteps } from '../src/deploy/shared-steps.js';
import { numericBaseline } from '../src/monitoring/drift.js';
import type { CanaryStepRecords, CanaryStepRow, SharedCanaryStep } from '../src/store/index.js';
import { Random } from '../examples/credit-data.js';

const POLICY = { minRequests: 50, maxErrorRateIncrease: 0.01, maxP99Factor: 1.5, p99SlackMs: 5, maxScorePsi: 0.25 };

function referenceOf(values: number[]): ScoreReference {
  const b = numericBaseline(values);
  return { edges: b.edges, refShares: b.refShares, rows: values.length };
}

const draw = (rng: Random, shift = 0) => 1 / (1 + Math.exp(-(-2 + shift + rng.normal())));

interface Request {
  status: number;
  ms: number;
  score: number | null;
  batch: object | undefined;
}

/** Requests in batches of 1 to 8 (some without a batch), latencies in quarter milliseconds (exact sums), 2% errors. */
function traffic(rng: Random, n: number, slow: number, shift: number): Request[] {
  const out: Request[] = [];
  while (out.length < n) {
    const size = 1 + Math.floor(rng.uniform() * 8);
    const batch = rng.uniform() < 0.2 ? undefined : {};
    for (let k = 0; k < size && out.length < n; k++) {
      const error = rng.uniform() < 0.02;
      const ms = Math.round((1 + rng.uniform() * 4 + (rng.uniform() < 0.03 ? slow : 0)) * 4) / 4;
      out.push({ status: error ? 500 : 200, ms, score: error ? null : draw(rng, shift), batch });
    }
  }
  return out;
}

/** The requests fed to one StepStats, and split by batch over two (the second through its shared JSON). */
function split(rng: Random, requests: readonly Request[], edges: readonly number[]) {
  const whole = new StepStats(() => edges);
  const a = new StepStats(() => edges);
  const b = new StepStats(() => edges);
  let toA = true;
  let last: object | undefined;
  for (const r of requests) {
    if (r.batch === undefined || r.batch !== last) toA = rng.uniform() < 0.5;
    last = r.batch;
    whole.record(r.status, r.ms, r.score, r.batch);
    (toA ? a : b).record(r.status, r.ms, r.score, r.batch);
  }
  const shared = StepStats.fromJSON(JSON.parse(JSON.stringify(b.toJSON())));
  return { whole, a, b, merged: StepStats.merged([a, shared], () => edges) };
}

test("merging two replicas' StepStats equals one StepStats that saw all the traffic", () => {
  const rng = new Random(17);
  const reference = referenceOf(Array.from({ length: 5000 }, () => draw(rng)));
  const canary = split(rng, traffic(rng, 170, 30, 0.3), reference.edges);
  const stable = split(rng, traffic(rng, 600, 0, 0), reference.edges);
  for (const s of [canary, stable]) {
    assert.equal(s.merged.requests, s.whole.requests);
    assert.equal(s.merged.errors, s.whole.errors);
    assert.equal(s.merged.scores, s.whole.scores);
    assert.deepEqual(s.merged.latency.snapshot(), s.whole.latency.snapshot());
    assert.deepEqual(s.merged.scoreBins(reference.edges), s.whole.scoreBins(reference.edges));
    assert.ok(s.a.requests > 0 && s.b.requests > 0);
  }
  // The analysis reads the batch units last (it closes the open batch): the same inputs, the same answer.
  const one = analyzeCanary(canary.whole, stable.whole, POLICY, reference);
  const merged = analyzeCanary(canary.merged, stable.merged, POLICY, reference);
  assert.deepEqual({ ...merged, at: null }, { ...one, at: null });
  assert.deepEqual(canary.merged.batches().snapshot(), canary.whole.batches().snapshot());
  for (const ms of [2, 5, 10, 30]) assert.equal(canary.merged.batches().countAboveMs(ms), canary.whole.batches().countAboveMs(ms));
  // Every check speaks on the merged traffic; none speaks on either replica's half alone.
  for (const c of one.checks) assert.notEqual(c.result, 'insufficient_data', JSON.stringify(c));
  const half = analyzeCanary(canary.a, stable.a, POLICY, reference);
  assert.equal(half.checks.find((c) => c.name === 'score_psi')!.result, 'insufficient_data');
  assert.equal(half.verdict, 'insufficient_data');
});

test('score bins: scores recorded before the reference was known, or kept on other edges, are left out of the sample and said to be', () => {
  const rng = new Random(5);
  const reference = referenceOf(Array.from({ length: 5000 }, () => draw(rng)));
  const other = referenceOf(Array.from({ length: 5000 }, () => draw(rng, 1)));
  let known: readonly number[] | null = null;
  const late = new StepStats(() => known);
  for (let i = 0; i < 10; i++) late.record(200, 1, draw(rng));
  known = reference.edges;
  for (let i = 0; i < 200; i++) late.record(200, 1, draw(rng));
  const elsewhere = new StepStats(() => other.edges);
  for (let i = 0; i < 50; i++) elsewhere.record(200, 1, draw(rng));
  const m = StepStats.merged([late, StepStats.fromJSON(JSON.parse(JSON.stringify(elsewhere.toJSON())))], () => reference.edges);
  assert.equal(m.scores, 260);
  assert.equal(
    m.scoreBins(reference.edges)!.reduce((s, c) => s + c, 0),
    200,
  );
  const psi = analyzeCanary(m, m, POLICY, reference).checks.find((c) => c.name === 'score_psi')!;
  assert.equal(psi.n, 200);
  assert.match(psi.note!, /60 scores are not in the sample/);
});

test('fromJSON refuses what is not shared statistics, whole', () => {
  const good = new StepStats();
  good.record(200, 1, 0.5);
  const json = good.toJSON();
  for (const bad of [
    null,
    3,
    {},
    { ...json, requests: -1 },
    { ...json, errors: 5 },
    { ...json, latency: { at: [1] } },
    { ...json, bins: { edges: [0.5, 0.1], counts: [0, 0, 0] } },
  ])
    assert.throws(() => StepStats.fromJSON(bad), TypeError, JSON.stringify(bad));
  assert.equal(StepStats.fromJSON(JSON.parse(JSON.stringify(json))).requests, 1);
});

/** Canary step rows in memory, as PostgreSQL keeps them (one per model and replica); `down` makes every call fail. */
class MemoryRecords implements CanaryStepRecords {
  readonly rows = new Map<string, CanaryStepRow & { replica: string }>();
  down = false;
  async putSteps(replica: string, rows: readonly CanaryStepRow[]): Promise<void> {
    if (this.down) throw new Error('connection refused');
    for (const r of rows) this.rows.set(`${r.model}\u0000${replica}`, { ...r, replica });
  }
  async steps(keys: readonly { model: string; step: string }[], exceptReplica: string): Promise<SharedCanaryStep[]> {
    if (this.down) throw new Error('connection refused');
    return [...this.rows.values()]
      .filter((r) => r.replica !== exceptReplica && keys.some((k) => k.model === r.model && k.step === r.step))
      .map((r) => ({ model: r.model, step: r.step, replica: r.replica, data: JSON.parse(r.data), ageMs: 0 }));
  }
  async prune(): Promise<number> {
    return 0;
  }
}

const statsOf = (n: number, errors = 0) => {
  const s = new StepStats();
  for (let i = 0; i < n; i++) s.record(i < errors ? 500 : 200, 1, 0.5);
  return new Map([[1, s]]);
};

test('sharing: a row is read with its own step only; the store down keeps the last rows of the same step, counts and logs once', async () => {
  const records = new MemoryRecords();
  const logged: string[] = [];
  const log = {
    error: (_: object, msg: string) => logged.push(`error ${msg}`),
    warn: (_: object, msg: string) => logged.push(`warn ${msg}`),
  };
  const leader = new SharedSteps({ records, replica: 'leader', log });
  const follower = new SharedSteps({ records, replica: 'follower', log });

  await follower.share([{ model: 'm', step: 's1', stats: statsOf(30, 3) }], false);
  await leader.share([{ model: 'm', step: 's1', stats: statsOf(5) }], true);
  let o = leader.others('m', 's1');
  assert.equal(o.replicas, 1);
  assert.equal(o.byVersion.get(1)![0]!.requests, 30);
  assert.equal(o.byVersion.get(1)![0]!.errors, 3);
  assert.equal(o.state, 'merged');
  // The leader's own row is never read back (its live figures are used).
  assert.equal(follower.others('m', 's1').replicas, 0);
  await follower.read([{ model: 'm', step: 's1' }]);
  assert.equal(follower.others('m', 's1').byVersion.get(1)![0]!.requests, 5);

  // A new step: the follower is still on the old one, and its row does not count for the new.
  await leader.share([{ model: 'm', step: 's2', stats: statsOf(0) }], true);
  assert.equal(leader.others('m', 's2').replicas, 0);
  assert.equal(leader.others('m', 's1').replicas, 0, 'nothing of s1 is kept once s2 was read');
  await follower.share([{ model: 'm', step: 's2', stats: statsOf(40) }], false);
  await leader.share([{ model: 'm', step: 's2', stats: statsOf(0) }], true);
  assert.equal(leader.others('m', 's2').byVersion.get(1)![0]!.requests, 40);

  // The store goes away: the leader keeps the last rows of s2, says the view is partial, counts every failure, logs once.
  records.down = true;
  for (let k = 0; k < 3; k++) await leader.share([{ model: 'm', step: 's2', stats: statsOf(k + 1) }], true);
  o = leader.others('m', 's2');
  assert.equal(o.byVersion.get(1)![0]!.requests, 40);
  assert.equal(o.state, 'partial');
  assert.match(o.reason!, /connection refused/);
  assert.equal(leader.others('m', 's3').replicas, 0, 'never the rows of another step');
  assert.equal(leader.status().errors, 6, 'three writes and three reads');
  assert.equal(leader.status().state, 'failing');
  assert.equal(logged.filter((l) => l.startsWith('error')).length, 1);
  // Back: the rows are written again (the failed ones were not marked written) and the episode ends with one line.
  records.down = false;
  await leader.share([{ model: 'm', step: 's2', stats: statsOf(4) }], true);
  assert.equal(leader.status().state, 'ok');
  assert.equal(JSON.parse(records.rows.get('m\u0000leader')!.data)['1'].requests, 4);
  assert.deepEqual(
    logged.map((l) => l.split(' ')[0]),
    ['error', 'warn'],
  );
});
