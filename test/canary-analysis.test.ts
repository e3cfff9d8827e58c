// Canary analysis as a pure function: the binomial error test against exact values, the PSI
// minimum sample against simulation (a canary scoring like its reference is almost never failed at
// the minimum), the canary judged against its own reference and never against stable's scores, and
// every check saying insufficient_data until its sample is large enough.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyzeCanary, binomialUpperTail, MIN_P99_SAMPLES, psiMinSample, StepStats, type ScoreReference } from '../src/deploy/analysis.js';
import { numericBaseline } from '../src/monitoring/drift.js';
import { Random } from '../examples/credit-data.js';

const POLICY = { minRequests: 50, maxErrorRateIncrease: 0.01, maxP99Factor: 1.5, p99SlackMs: 5, maxScorePsi: 0.25 };

function referenceOf(values: number[]): ScoreReference {
  const b = numericBaseline(values);
  return { edges: b.edges, refShares: b.refShares, rows: values.length };
}

/** Beta-ish scores in (0, 1): a logistic of a normal, like a credit model's probabilities. */
const draw = (rng: Random, shift = 0) => 1 / (1 + Math.exp(-(-2 + shift + rng.normal())));

/** n requests; `reference`: the version's reference, on whose edges its statistics count the scores. */
function stats(n: number, scores: () => number, errors = 0, ms = 1, reference: ScoreReference | null = null): StepStats {
  const s = new StepStats(() => reference?.edges ?? null);
  for (let i = 0; i < n; i++) s.record(i < errors ? 500 : 200, ms, i < errors ? null : scores());
  return s;
}

test('binomialUpperTail matches exact binomial tails', () => {
  // P(X >= 3), X ~ Bin(10, 0.1) = 1 - (0.9^10 + 10*0.1*0.9^9 + 45*0.01*0.9^8)
  const exact = 1 - (0.9 ** 10 + 10 * 0.1 * 0.9 ** 9 + 45 * 0.01 * 0.9 ** 8);
  assert.ok(Math.abs(binomialUpperTail(3, 10, 0.1) - exact) < 1e-12);
  assert.ok(Math.abs(binomialUpperTail(5, 5, 0.01) - 1e-10) < 1e-22);
  assert.equal(binomialUpperTail(0, 100, 0.1), 1);
  assert.equal(binomialUpperTail(5, 100, 0.1), 1, 'at or below the mean is never significant');
  // A large n stays finite and sensible: 150 of 10,000 at p = 0.01 is about 5 sd above the mean.
  const big = binomialUpperTail(150, 10_000, 0.01);
  assert.ok(big > 1e-8 && big < 1e-5, `${big}`);
});

test('psiMinSample: the sample at which PSI over 0.25 by chance is negligible; Infinity for a tiny reference', () => {
  assert.equal(psiMinSample(0.25, 5000), 139);
  assert.ok(psiMinSample(0.1, 5000) > psiMinSample(0.25, 5000));
  assert.equal(psiMinSample(0.25, 100), Infinity);
  // Simulated: 2,000 canaries scoring exactly like their reference, judged at the minimum sample.
  const rng = new Random(7);
  const reference = referenceOf(Array.from({ length: 5000 }, () => draw(rng)));
  const needed = psiMinSample(0.25, 5000);
  let failed = 0;
  for (let k = 0; k < 2000; k++) {
    const a = analyzeCanary(
      stats(needed, () => draw(rng), 0, 1, reference),
      stats(needed, () => draw(rng)),
      POLICY,
      reference,
    );
    if (a.checks.find((c) => c.name === 'score_psi')!.result === 'fail') failed++;
  }
  assert.ok(failed <= 2, `${failed} of 2000 same-population canaries failed on score PSI`);
});

test('the canary is judged against its own reference, never against stable scores', () => {
  const rng = new Random(11);
  // The canary is another model: its scores sit far from stable's, and exactly where its own reference says.
  const canaryRef = referenceOf(Array.from({ length: 5000 }, () => draw(rng, 1.5)));
  const n = Math.max(MIN_P99_SAMPLES, psiMinSample(0.25, 5000));
  const a = analyzeCanary(
    stats(n, () => draw(rng, 1.5), 0, 1, canaryRef),
    stats(n, () => draw(rng)),
    POLICY,
    canaryRef,
  );
  assert.equal(a.verdict, 'pass', JSON.stringify(a.checks));
  const psi = a.checks.find((c) => c.name === 'score_psi')!;
  assert.ok(psi.canary! < 0.1, `canary PSI vs its reference ${psi.canary}`);
  // Training/serving skew: the canary's live scores move away from its reference.
  const skewed = analyzeCanary(
    stats(n, () => draw(rng, 3), 0, 1, canaryRef),
    stats(n, () => draw(rng)),
    POLICY,
    canaryRef,
  );
  assert.equal(skewed.verdict, 'fail');
  assert.equal(skewed.checks.find((c) => c.name === 'score_psi')!.result, 'fail');
});

test('every check says insufficient_data until its sample is large enough', () => {
  const rng = new Random(3);
  const ref = referenceOf(Array.from({ length: 5000 }, () => draw(rng)));
  // 3 wildly skewed scores: no verdict.
  const few = analyzeCanary(
    stats(3, () => 0.99, 0, 1, ref),
    stats(3, () => draw(rng)),
    POLICY,
    ref,
  );
  assert.equal(few.verdict, 'insufficient_data');
  for (const c of few.checks) assert.equal(c.result, 'insufficient_data', `${c.name} spoke on 3 requests`);
  const psi = few.checks.find((c) => c.name === 'score_psi')!;
  assert.equal(psi.canary, null);
  assert.deepEqual([psi.n, psi.needed], [3, 139]);
  // Enough requests for errors, not for p99 or PSI.
  const some = analyzeCanary(
    stats(60, () => draw(rng), 0, 1, ref),
    stats(60, () => draw(rng)),
    POLICY,
    ref,
  );
  assert.equal(some.verdict, 'insufficient_data');
  assert.equal(some.checks.find((c) => c.name === 'error_rate')!.result, 'pass');
  assert.equal(some.checks.find((c) => c.name === 'p99_latency')!.result, 'insufficient_data');
});

test('errors: a canary failing every request fails within a handful; one stray error does not', () => {
  const rng = new Random(5);
  const failing = analyzeCanary(
    stats(4, () => 0.5, 4),
    stats(100, () => draw(rng)),
    POLICY,
    null,
  );
  assert.equal(failing.verdict, 'fail');
  assert.ok(failing.checks[0]!.pValue! < 0.001);
  const stray = analyzeCanary(
    stats(20, () => 0.5, 1),
    stats(100, () => draw(rng)),
    POLICY,
    null,
  );
  assert.notEqual(stray.verdict, 'fail');
  // Observed above the limit but not yet significant: no promotion, no rollback.
  const unsure = analyzeCanary(
    stats(200, () => draw(rng), 5),
    stats(200, () => draw(rng)),
    POLICY,
    null,
  );
  assert.equal(unsure.checks[0]!.result, 'insufficient_data');
});

test('without a reference the score check is unavailable, says why, and the verdict rests on errors and latency', () => {
  const rng = new Random(9);
  const a = analyzeCanary(
    stats(200, () => 0.9),
    stats(200, () => draw(rng)),
    POLICY,
    null,
  );
  const psi = a.checks.find((c) => c.name === 'score_psi')!;
  assert.equal(psi.result, 'unavailable');
  assert.match(psi.note!, /no drift reference/);
  assert.equal(a.verdict, 'pass');
  // Slow canary: fails on p99 once both sides have enough samples.
  const slow = analyzeCanary(
    stats(200, () => 0.5, 0, 40),
    stats(200, () => 0.5, 0, 1),
    POLICY,
    null,
  );
  assert.equal(slow.verdict, 'fail');
  assert.equal(slow.checks.find((c) => c.name === 'p99_latency')!.result, 'fail');
});

test('latency: rare slow requests in both versions do not fail a small canary; a slower canary fails', () => {
  // 1% of requests take 7 ms in both versions. The canary's p99 over 156 requests is its second
  // largest, so comparing p99s would often fail it; counting requests above stable's limit does not.
  const withOutliers = (n: number, rate: number, slowMs: number, fastMs = 1) => {
    const s = new StepStats();
    for (let i = 0; i < n; i++) s.record(200, i % Math.round(1 / rate) === 0 ? slowMs : fastMs, 0.5);
    return s;
  };
  const canary = withOutliers(156, 0.01, 7);
  const stable = withOutliers(465, 0.01, 7);
  const a = analyzeCanary(canary, stable, POLICY, null);
  const lat = a.checks.find((c) => c.name === 'p99_latency')!;
  assert.notEqual(lat.result, 'fail', JSON.stringify(lat));
  // A canary slower on 10% of its requests fails.
  const slow = analyzeCanary(withOutliers(200, 0.1, 30), stable, POLICY, null);
  assert.equal(slow.checks.find((c) => c.name === 'p99_latency')!.result, 'fail');
});

test('latency: a pause that slows everything in flight does not fail the canary it happens to hit', () => {
  const slowSome = (n: number, slow: number, ms = 50) => {
    const s = new StepStats();
    for (let i = 0; i < n; i++) s.record(200, i < slow ? ms : 1, 0.5);
    return s;
  };
  // 0.8% of stable's requests and 6% of the canary's were caught in the same pauses: not the canary's fault.
  const a = analyzeCanary(slowSome(100, 6), slowSome(1000, 8), POLICY, null);
  assert.notEqual(a.checks.find((c) => c.name === 'p99_latency')!.result, 'fail');
});

test('latency: one slow batch of the canary is one observation; a canary slow in every batch fails', () => {
  /** n requests in batches of `size`; the batches listed in `slow` take 50 ms, the others 1 ms. */
  const batched = (n: number, size: number, slow: Set<number>) => {
    const s = new StepStats();
    let batch: object = {};
    for (let i = 0; i < n; i++) {
      if (i % size === 0) batch = {};
      s.record(200, slow.has(Math.floor(i / size)) ? 50 : 1, 0.5, batch);
    }
    return s;
  };
  // A pause hit one canary batch of 20: counted request by request that would be 20 slow requests of 200.
  const paused = analyzeCanary(batched(200, 20, new Set([3])), batched(1000, 20, new Set()), POLICY, null);
  const lat = paused.checks.find((c) => c.name === 'p99_latency')!;
  assert.notEqual(lat.result, 'fail', JSON.stringify(lat));
  assert.deepEqual([lat.above, lat.batches], [1, 10]);
  const slow = analyzeCanary(batched(200, 20, new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])), batched(1000, 20, new Set()), POLICY, null);
  assert.equal(slow.checks.find((c) => c.name === 'p99_latency')!.result, 'fail');
});
