// Tests for src/monitoring/drift.ts against hand-computed values (arithmetic shown in comments):
// type-7 quantiles and frozen edges, bin assignment by its definition, PSI with the 1e-4 floor and
// empty bins, bands at their edges, streaming counters equal to the batch computation and to their
// merged per-minute parts, categorical drift with unseen categories, JSON round trips, and the
// prediction distribution summary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32 as rng } from './fixtures/random.js';
import {
  CategoricalDriftCounter,
  NumericDriftCounter,
  band,
  binIndex,
  categoricalBaseline,
  distributionSummary,
  driftCounter,
  frozenEdges,
  numericBaseline,
  parseBaseline,
  psi,
  quantileType7,
  shares,
} from '../src/monitoring/drift.js';

function closeAll(actual: ArrayLike<number>, expected: number[], tol = 1e-12): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs(actual[i]! - expected[i]!) <= tol * Math.max(1, Math.abs(expected[i]!)),
      `[${i}]: expected ${expected[i]}, got ${actual[i]}`,
    );
  }
}

function close(actual: number | null, expected: number, tol = 1e-12): void {
  assert.ok(actual !== null, `expected ${expected}, got null`);
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `expected ${expected}, got ${actual}`);
}

test('type-7 quantiles of 1..10 and of values with duplicates', () => {
  const v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  // h = 9p: p .1 -> h .9 -> 1 + .9 = 1.9; p .25 -> h 2.25 -> 3.25; p .5 -> 5.5; p .9 -> h 8.1 -> 9.1.
  for (const [p, q] of [
    [0, 1],
    [0.1, 1.9],
    [0.25, 3.25],
    [0.5, 5.5],
    [0.75, 7.75],
    [0.9, 9.1],
    [1, 10],
  ] as const) {
    close(quantileType7(v, p), q);
  }
  // [1, 2, 2, 2, 3], h = 4p: p .1 -> 1 + .4 = 1.4; p .25 -> h 1 -> 2; p .8 -> h 3.2 -> 2 + .2 = 2.2; p .9 -> 2.6.
  const d = [1, 2, 2, 2, 3];
  for (const [p, q] of [
    [0.1, 1.4],
    [0.25, 2],
    [0.5, 2],
    [0.8, 2.2],
    [0.9, 2.6],
  ] as const)
    close(quantileType7(d, p), q);
  assert.equal(quantileType7([7], 0.3), 7);
  assert.ok(Number.isNaN(quantileType7([], 0.5)));
  assert.throws(() => quantileType7(v, 1.5), RangeError);
});

test('frozen edges are the deciles of the finite reference values, in any order', () => {
  closeAll(frozenEdges([10, 3, 7, 1, 9, 2, 8, 4, 6, 5]), [1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1]);
  // Missing values (null, undefined, NaN, +-Infinity) are left out: the same edges as 1..10.
  closeAll(
    frozenEdges([10, null, 3, 7, NaN, 1, 9, 2, undefined, 8, 4, Infinity, 6, -Infinity, 5]),
    [1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1],
  );
  // [1, 2, 2, 2, 3], h = 4p for p = .1 .. .9: 0.4 0.8 1.2 1.6 2 2.4 2.8 3.2 3.6 -> edges repeat.
  closeAll(frozenEdges([3, 2, 1, 2, 2]), [1.4, 1.8, 2, 2, 2, 2, 2, 2.2, 2.6]);
  // One distinct value: all nine edges equal it.
  assert.deepEqual(frozenEdges([5, 5, 5]), [5, 5, 5, 5, 5, 5, 5, 5, 5]);
  assert.throws(() => frozenEdges([NaN, null]), RangeError);
});

test('binIndex counts the edges <= value', () => {
  const edges = [1.4, 1.8, 2, 2, 2, 2, 2, 2.2, 2.6];
  assert.equal(binIndex(edges, 1), 0);
  assert.equal(binIndex(edges, 1.4), 1);
  assert.equal(binIndex(edges, 1.99), 2);
  assert.equal(binIndex(edges, 2), 7); // equal to five repeated edges: bins 2..6 stay empty
  assert.equal(binIndex(edges, 2.6), 9);
  assert.equal(binIndex(edges, 100), 9);
  const r = rng(7);
  for (let k = 0; k < 2000; k++) {
    const v = Math.floor(r() * 30) / 10;
    assert.equal(binIndex(edges, v), edges.filter((e) => e <= v).length);
  }
});

test('PSI by hand, with the 1e-4 floor and empty bins', () => {
  // (.25 - .5) ln(.25/.5) + (.75 - .5) ln(.75/.5) = .25 ln 2 + .25 ln 1.5 = .25 ln 3.
  close(psi([0.5, 0.5], [0.25, 0.75]), 0.27465307216702745);
  assert.equal(psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]), 0);
  // Empty current bin: share 0 -> 1e-4. (1e-4 - .4) ln(1e-4/.4) + (1 - .6) ln(1/.6)
  // = .3999 * 8.294049640102028 + .4 * 0.5108256237659907 = 3.3167904510768 + 0.2043302495063963.
  close(psi([0.4, 0.6], [0, 1]), 0.3999 * 8.294049640102028 + 0.4 * 0.5108256237659907);
  // Disjoint support, no renormalisation: 2 * (1 - 1e-4) * ln(1e4) = 1.9998 * 9.210340371976184.
  close(psi([1, 0], [0, 1]), 1.9998 * 9.210340371976184);
  // Both shares below the floor: the rare bin contributes nothing; only the common bin's shift counts:
  // (.9999 - .99995) ln(.9999 / .99995) = (-5e-5) ln(1 - 5.00025e-5) = (-5e-5) (-5.00025e-5 - 1.25e-9) = 2.5001875e-9.
  close(psi([0.99995, 0.00005], [0.9999, 0.00002]), (0.9999 - 0.99995) * Math.log(0.9999 / 0.99995), 1e-15);
  assert.ok(Math.abs(psi([0.99995, 0.00005], [0.9999, 0.00002]) - 2.5001875e-9) < 1e-16);
  assert.throws(() => psi([0.5, 0.5], [1]), RangeError);
});

test('shares and bands', () => {
  assert.deepEqual(shares([1, 3]), [0.25, 0.75]);
  assert.deepEqual(shares([0, 0]), [0, 0]);
  assert.equal(band(0), 'stable');
  assert.equal(band(0.09999999), 'stable');
  assert.equal(band(0.1), 'watch');
  assert.equal(band(0.25), 'watch');
  assert.equal(band(0.2500001), 'significant');
  assert.equal(band(3), 'significant');
  assert.equal(band(null), null);
  assert.equal(band(NaN), null);
});

test('numeric baseline of 1000 distinct values has ten shares of exactly 0.1', () => {
  const r = rng(11);
  const ref = Array.from({ length: 1000 }, () => r() * 100);
  const b = numericBaseline(ref);
  assert.equal(b.kind, 'numeric');
  assert.equal(b.edges.length, 9);
  assert.deepEqual(b.refShares, new Array(10).fill(0.1));
  // A single-valued reference puts everything in bin 9 (value >= all nine edges).
  assert.deepEqual(numericBaseline([5, 5, 5]).refShares, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
});

test('a constant reference: values below it in bin 0, at or above it in bin 9', () => {
  const c = new NumericDriftCounter(numericBaseline([5, 5, 5, null]));
  for (const v of [4, 5, 6]) c.add(v);
  assert.deepEqual(Array.from(c.counts), [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
  // bin 0: (1/3 - 1e-4) ln((1/3) / 1e-4); bins 1..8: 0; bin 9: (2/3 - 1) ln(2/3).
  close(c.psi(), (1 / 3 - 1e-4) * Math.log(1 / 3 / 1e-4) + (2 / 3 - 1) * Math.log(2 / 3));
});

test('the numeric counter equals the batch computation, and merged per-minute counters equal the whole', () => {
  const r = rng(21);
  const ref = Array.from({ length: 5000 }, () => r() + r() + r());
  const baseline = numericBaseline(ref);
  const cur: (number | null | undefined)[] = Array.from({ length: 3000 }, () => 0.3 + r() + r() + r());
  cur[5] = NaN;
  cur[17] = null;
  cur[99] = undefined;
  cur[123] = Infinity;
  const whole = new NumericDriftCounter(baseline);
  for (const v of cur) whole.add(v);
  // Batch: bin by the definition, over the finite values only.
  const finite = cur.filter((v): v is number => Number.isFinite(v));
  const batchCounts = new Array(10).fill(0);
  for (const v of finite) batchCounts[baseline.edges.filter((e) => e <= v).length]++;
  assert.deepEqual(Array.from(whole.counts), batchCounts);
  assert.equal(whole.count, 2996);
  assert.equal(whole.missing, 4);
  close(whole.missingRate(), 4 / 3000, 1e-15);
  close(
    whole.psi(),
    psi(
      baseline.refShares,
      batchCounts.map((c) => c / 2996),
    ),
  );
  assert.equal(band(whole.psi()), 'significant');
  // Three "minutes", merged.
  const parts = [0, 1, 2].map(() => new NumericDriftCounter(baseline));
  cur.forEach((v, i) => {
    parts[Math.floor(i / 1000)]!.add(v);
  });
  const merged = new NumericDriftCounter(baseline).merge(parts[0]!).merge(parts[1]!).merge(parts[2]!);
  assert.deepEqual(Array.from(merged.counts), batchCounts);
  assert.equal(merged.psi(), whole.psi());
  assert.equal(merged.missingRate(), whole.missingRate());
  // The reference against itself has no drift.
  const self = new NumericDriftCounter(baseline);
  for (const v of ref) self.add(v);
  close(self.psi(), 0, 1e-15);
  merged.reset();
  assert.equal(merged.psi(), null);
  assert.equal(merged.missingRate(), null);
  assert.throws(() => merged.merge(new NumericDriftCounter(numericBaseline([1, 2, 3]))), RangeError);
});

test('numeric baseline and counter survive JSON', () => {
  const r = rng(5);
  const baseline = numericBaseline(Array.from({ length: 300 }, () => r()));
  const back = parseBaseline(JSON.parse(JSON.stringify(baseline)));
  assert.deepEqual(back, baseline);
  assert.deepEqual(parseBaseline(JSON.stringify(baseline)), baseline);
  const c = new NumericDriftCounter(baseline);
  for (let i = 0; i < 200; i++) c.add(i % 17 === 0 ? null : r() * 1.2);
  const json = JSON.parse(JSON.stringify(c));
  assert.deepEqual(Object.keys(json).sort(), ['counts', 'missing']);
  const c2 = NumericDriftCounter.fromJSON(back as typeof baseline, json);
  assert.deepEqual(Array.from(c2.counts), Array.from(c.counts));
  assert.equal(c2.psi(), c.psi());
  assert.equal(c2.missingRate(), c.missingRate());
  assert.throws(() => NumericDriftCounter.fromJSON(baseline, { counts: [1, 2], missing: 0 }), TypeError);
  assert.throws(
    () => parseBaseline({ kind: 'numeric', edges: [3, 2, 1, 4, 5, 6, 7, 8, 9], refShares: new Array(10).fill(0.1) }),
    TypeError,
  );
  assert.throws(() => parseBaseline({ kind: 'histogram' }), TypeError);
});

test('categorical drift: unseen categories go to "other", missing values to the missing rate', () => {
  // Reference: a a b c (null and '' are missing) -> categories [a, b, c], shares [.5, .25, .25], other 0.
  const baseline = categoricalBaseline(['a', 'a', 'b', 'c', null, '']);
  assert.deepEqual(baseline, { kind: 'categorical', categories: ['a', 'b', 'c'], refShares: [0.5, 0.25, 0.25, 0] });
  const c = new CategoricalDriftCounter(baseline);
  for (const v of ['a', 'd', 'd', null, 'b', undefined, NaN]) c.add(v);
  assert.deepEqual(Array.from(c.counts), [1, 1, 0, 2]);
  close(c.missingRate(), 3 / 7, 1e-15);
  // Shares [.25, .25, 0, .5] vs [.5, .25, .25, 0], floors on both empty sides:
  // a: (.25 - .5) ln(.5) = .25 ln 2; b: 0; c: (1e-4 - .25) ln(1e-4/.25) = .2499 ln 2500; other: (.5 - 1e-4) ln(.5/1e-4) = .4999 ln 5000.
  close(c.psi(), 0.25 * Math.LN2 + 0.2499 * Math.log(2500) + 0.4999 * Math.log(5000));
  close(c.psi(), 0.25 * Math.LN2 + 0.2499 * 7.824046010856292 + 0.4999 * 8.517193191416238);
  assert.equal(band(c.psi()), 'significant');
  // Merged halves equal the whole; JSON round trip of baseline and counter.
  const h1 = new CategoricalDriftCounter(baseline);
  const h2 = new CategoricalDriftCounter(baseline);
  ['a', 'd', 'd'].forEach((v) => {
    h1.add(v);
  });
  [null, 'b', undefined, NaN].forEach((v) => {
    h2.add(v);
  });
  const m = h1.merge(h2);
  assert.deepEqual(Array.from(m.counts), [1, 1, 0, 2]);
  assert.equal(m.missing, 3);
  const b2 = parseBaseline(JSON.parse(JSON.stringify(baseline)));
  assert.deepEqual(b2, baseline);
  const c2 = CategoricalDriftCounter.fromJSON(b2 as typeof baseline, JSON.parse(JSON.stringify(c)));
  assert.equal(c2.psi(), c.psi());
  assert.equal(c2.missing, 3);
  assert.throws(() => c.merge(new CategoricalDriftCounter(categoricalBaseline(['x']))), RangeError);
});

test('categories compare as strings, and maxCategories keeps the most frequent', () => {
  const b = categoricalBaseline([1, 2, '2', true]);
  assert.deepEqual(b.categories, ['1', '2', 'true']);
  assert.deepEqual(b.refShares, [0.25, 0.5, 0.25, 0]);
  const c = driftCounter(b);
  c.add(2);
  c.add('1');
  c.add(false);
  assert.deepEqual(Array.from(c.counts), [1, 1, 0, 1]);
  // a a a b b c, at most 2 categories: a (3) and b (2) kept, c goes to other: [3/6, 2/6, 1/6].
  const capped = categoricalBaseline(['c', 'a', 'b', 'a', 'b', 'a'], { maxCategories: 2 });
  assert.deepEqual(capped.categories, ['a', 'b']);
  closeAll(capped.refShares, [0.5, 1 / 3, 1 / 6], 1e-15);
  assert.throws(() => parseBaseline({ kind: 'categorical', categories: ['a', 'a'], refShares: [0.5, 0.5, 0] }), TypeError);
});

test('distribution summary of 1..10 and of constant values, numpy histogram conventions', () => {
  const s = distributionSummary([3, 1, 2, 10, 4, 5, 6, NaN, 7, 8, 9, null]);
  assert.equal(s.count, 10);
  close(s.mean, 5.5);
  close(s.std, Math.sqrt(8.25)); // population variance: sum (i - 5.5)^2 / 10 = 82.5 / 10
  assert.equal(s.min, 1);
  assert.equal(s.max, 10);
  close(s.p10, 1.9);
  close(s.p25, 3.25);
  close(s.p50, 5.5);
  close(s.p75, 7.75);
  close(s.p90, 9.1);
  // 10 bins of width .9 over [1, 10]; each integer falls in its own bin, 10 in the closed last bin.
  closeAll(s.histogram.edges, [1, 1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1, 10]);
  assert.deepEqual(s.histogram.counts, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  // Constant values: numpy widens the range to [x - .5, x + .5]; 2 lands in [2.0, 2.1).
  const k = distributionSummary([2, 2, 2]);
  assert.equal(k.std, 0);
  assert.deepEqual(k.histogram.counts, [0, 0, 0, 0, 0, 3, 0, 0, 0, 0]);
  // Fixed edges: values outside are not counted, the top edge belongs to the last bin.
  const f = distributionSummary([0, 0.25, 0.5, 1, 1.5, -0.1], { edges: [0, 0.5, 1] });
  assert.deepEqual(f.histogram.counts, [2, 2]);
  assert.equal(f.count, 6);
  const e = distributionSummary([]);
  assert.equal(e.count, 0);
  assert.equal(e.mean, null);
  assert.equal(e.p50, null);
  assert.deepEqual(e.histogram, { edges: [], counts: [] });
});
