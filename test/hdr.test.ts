// The request path's HDR histogram against hdr-histogram-js (the reference implementation of the
// same layout): identical percentiles, max and counts over latency-like data from 1 us to an hour,
// for 2 and 3 significant digits, after merging too; exact mean; out-of-range values clamp.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as hdr from 'hdr-histogram-js';
import { HdrHistogram } from '../src/monitoring/hdr.js';
import { mulberry32 as rng } from './fixtures/random.js';

const PERCENTILES = [0, 0.1, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100];

for (const [digits, highest] of [
  [3, 3_600_000_000],
  [2, 120_000_000],
] as const) {
  test(`${digits} significant digits up to ${highest}: the same answers as hdr-histogram-js`, () => {
    const rand = rng(digits);
    const mine = new HdrHistogram(highest, digits);
    const other = new HdrHistogram(highest, digits);
    const ref = hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: highest,
      numberOfSignificantValueDigits: digits,
      useWebAssembly: false,
    });
    let sum = 0;
    for (let i = 0; i < 50_000; i++) {
      // log-uniform from 1 us to ~an hour/2 minutes, plus some exact small integers and fractions
      const v = i % 10 === 0 ? Math.floor(rand() * 3000) : i % 10 === 1 ? rand() * 50 : Math.exp(rand() * Math.log(highest * 0.9));
      (i % 2 === 0 ? mine : other).recordValue(v);
      ref.recordValue(v);
      sum += v;
    }
    mine.add(other);
    assert.equal(mine.totalCount, ref.totalCount);
    for (const p of PERCENTILES) assert.equal(mine.getValueAtPercentile(p), ref.getValueAtPercentile(p), `p${p}`);
    assert.equal(mine.maxValue, ref.maxValue);
    assert.ok(Math.abs(mine.mean - sum / 50_000) < 1e-6 * mine.mean);
    // bucket midpoints vs exact values: within the histogram's precision
    assert.ok(Math.abs(mine.mean - ref.mean) / ref.mean < 10 ** -digits * 2);
  });
}

test('empty, reset, clamping above the highest trackable value', () => {
  const h = new HdrHistogram(1000, 2);
  assert.equal(h.getValueAtPercentile(99), 0);
  assert.equal(h.mean, 0);
  h.recordValue(5);
  h.recordValue(1e9);
  assert.equal(h.totalCount, 2);
  assert.equal(h.getValueAtPercentile(50), 5);
  assert.ok(h.getValueAtPercentile(100) >= 1000, 'the clamped value lands in the last bucket');
  assert.equal(h.maxValue, 1e9);
  h.reset();
  assert.equal(h.totalCount, 0);
  assert.equal(h.getValueAtPercentile(50), 0);
  assert.throws(() => h.add(new HdrHistogram(1000, 3)), /different shapes/);
});
