// Cached feature groups as bytes: round trips of numbers, booleans and missing values (missing is
// not 0), many features, decoding into slots, views with an offset, and bytes written for another
// layout or cut short refused as misses.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeGroup, decodeGroupInto, encodeGroup, encodeGroupArrays, groupLayout, type FeatureValue } from '../src/features/codec.js';

test('round trip: numbers, booleans, missing distinct from 0', () => {
  const layout = groupLayout(['age', 'income', 'missing', 'zero', 'active', 'closed', 'negative', 'tiny']);
  const values: Record<string, FeatureValue> = {
    age: { value: 42, eventTs: 1_700_000_000_000 },
    income: { value: 61_234.56, eventTs: 1_700_000_000_001 },
    missing: { value: null, eventTs: 0 },
    zero: { value: 0, eventTs: 1_700_000_000_002 },
    active: { value: true, eventTs: 3 },
    closed: { value: false, eventTs: 4 },
    negative: { value: -1e300, eventTs: 5 },
    tiny: { value: 5e-324, eventTs: 6 },
  };
  const bytes = encodeGroup(layout, values);
  assert.equal(bytes.byteLength, 8 + 8 + 16 * 8);
  assert.equal(layout.byteLength, bytes.byteLength);
  const back = decodeGroup(layout, bytes)!;
  assert.deepEqual(back, values);
  assert.equal(back.missing!.value, null);
  assert.equal(back.zero!.value, 0);
  assert.equal(back.active!.value, true);
  assert.equal(back.closed!.value, false);
});

test('absent names are stored as missing; NaN stays a number', () => {
  const layout = groupLayout(['a', 'b', 'c']);
  const back = decodeGroup(layout, encodeGroup(layout, { b: { value: Number.NaN, eventTs: 9 } }))!;
  assert.deepEqual(back.a, { value: null, eventTs: 0 });
  assert.ok(Number.isNaN(back.b!.value as number));
  assert.equal(back.b!.eventTs, 9);
  assert.deepEqual(back.c, { value: null, eventTs: 0 });
});

test('array encoding matches record encoding; decodeGroupInto picks fields into slots', () => {
  const names = Array.from({ length: 20 }, (_, i) => `f${i}`);
  const layout = groupLayout(names);
  const values = names.map((_, i) => (i % 5 === 0 ? null : i % 7 === 0 ? i % 2 === 0 : i * 1.25));
  const ts = names.map((_, i) => 1_700_000_000_000 + i);
  const fromArrays = encodeGroupArrays(layout, values, ts);
  const record = Object.fromEntries(names.map((n, i) => [n, { value: values[i]!, eventTs: ts[i]! }]));
  assert.deepEqual(fromArrays, encodeGroup(layout, record));
  assert.equal(fromArrays.byteLength, 8 + 24 + 16 * 20);

  const outValues: (number | boolean | null)[] = new Array(20);
  const outTs = new Float64Array(20);
  assert.equal(decodeGroupInto(layout, fromArrays, outValues, outTs), true);
  assert.deepEqual(outValues, values);
  assert.deepEqual([...outTs], ts);

  const slots: (number | boolean | null)[] = ['x', 'x', 'x', 'x'] as never;
  const slotTs = [0, 0, 0, 0];
  assert.equal(
    decodeGroupInto(layout, fromArrays, slots, slotTs, { fields: Int32Array.of(19, 0, 14), slots: Int32Array.of(3, 0, 1) }),
    true,
  );
  assert.deepEqual(slots, [null, true, 'x', 19 * 1.25]);
  assert.deepEqual(slotTs, [ts[0], ts[14], 0, ts[19]]);
});

test('many features, and bytes inside a larger buffer at an odd offset', () => {
  const names = Array.from({ length: 300 }, (_, i) => `feature_${i}`);
  const layout = groupLayout(names);
  const record = Object.fromEntries(names.map((n, i) => [n, { value: i === 150 ? null : i - 150.5, eventTs: i * 1000 }]));
  const bytes = encodeGroup(layout, record);
  const big = new Uint8Array(bytes.byteLength + 13);
  big.set(bytes, 5);
  assert.deepEqual(decodeGroup(layout, big.subarray(5, 5 + bytes.byteLength)), record);
  assert.deepEqual(decodeGroup(layout, Buffer.from(bytes)), record);
});

test('bytes of another layout, a bad version or a wrong length are misses', () => {
  const layout = groupLayout(['a', 'b']);
  const bytes = encodeGroup(layout, { a: { value: 1, eventTs: 1 }, b: { value: 2, eventTs: 2 } });
  const reordered = groupLayout(['b', 'a']);
  assert.notEqual(reordered.hash, layout.hash);
  assert.equal(decodeGroup(reordered, bytes), null);
  assert.equal(decodeGroup(groupLayout(['a', 'b', 'c']), bytes), null);
  assert.equal(decodeGroup(layout, bytes.subarray(0, bytes.byteLength - 1)), null);
  assert.equal(decodeGroup(layout, new Uint8Array(0)), null);
  const wrongVersion = Uint8Array.from(bytes);
  wrongVersion[0] = 2;
  assert.equal(decodeGroup(layout, wrongVersion), null);
  const out: (number | boolean | null)[] = [7, 7];
  assert.equal(decodeGroupInto(reordered, bytes, out, [0, 0]), false);
  assert.deepEqual(out, [7, 7]); // nothing written
  assert.throws(() => groupLayout(['a', 'a']), /duplicate feature name 'a'/);
  assert.deepEqual(decodeGroup(groupLayout([]), encodeGroup(groupLayout([]), {})), {});
});
