// The byte form of one cached feature group: the values and event timestamps of the features of
// one (entity id, feature version) group, as the native cache stores them (it holds bytes only).
//
// Layout (little-endian), for a group whose feature names the reader already knows from the
// plan, so names are not stored:
//
//   offset 0   u8   format version (1)
//          1   u8   reserved (0)
//          2   u16  feature count n
//          4   u32  FNV-1a hash of the names, in order (detects bytes written for another layout)
//          8   n x u8 tag: 0 missing (null), 1 number, 2 false, 3 true; zero-padded to 8 bytes
//          T   n x f64 value (0 for null and booleans)
//      T + 8n  n x f64 event timestamp, epoch ms
//
// Missing stays distinct from 0 through its tag. Integers are exact up to 2^53.

export interface FeatureValue {
  value: number | boolean | null;
  /** Epoch ms of the value's event (when it was true in the source). */
  eventTs: number;
}

export interface GroupLayout {
  readonly names: readonly string[];
  readonly index: ReadonlyMap<string, number>;
  readonly hash: number;
  readonly byteLength: number;
  /** Offset of the values (after header and padded tags). */
  readonly valuesAt: number;
}

const FORMAT = 1;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const HEADER = 8;
const TAG_NULL = 0;
const TAG_NUMBER = 1;
const TAG_FALSE = 2;
const TAG_TRUE = 3;

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function groupLayout(names: readonly string[]): GroupLayout {
  if (names.length > 0xffff) throw new RangeError(`a feature group holds at most 65535 features, got ${names.length}`);
  const index = new Map<string, number>();
  names.forEach((n, i) => {
    if (index.has(n)) throw new RangeError(`duplicate feature name '${n}' in a group layout`);
    index.set(n, i);
  });
  const valuesAt = HEADER + Math.ceil(names.length / 8) * 8;
  return {
    names: [...names],
    index,
    hash: fnv1a(names.join('\n')),
    byteLength: valuesAt + 16 * names.length,
    valuesAt,
  };
}

function writeOne(view: DataView, bytes: Uint8Array, layout: GroupLayout, i: number, value: unknown, eventTs: number): void {
  const n = layout.names.length;
  let tag = TAG_NULL;
  let v = 0;
  if (typeof value === 'number') {
    tag = TAG_NUMBER;
    v = value;
  } else if (typeof value === 'boolean') tag = value ? TAG_TRUE : TAG_FALSE;
  bytes[HEADER + i] = tag;
  view.setFloat64(layout.valuesAt + 8 * i, v, true);
  view.setFloat64(layout.valuesAt + 8 * (n + i), Number.isFinite(eventTs) ? eventTs : 0, true);
}

function start(layout: GroupLayout, into?: Uint8Array): { bytes: Uint8Array; view: DataView } {
  if (into !== undefined && into.byteLength !== layout.byteLength)
    throw new RangeError(`a group of this layout takes ${layout.byteLength} bytes, not ${into.byteLength}`);
  const bytes = into ?? new Uint8Array(layout.byteLength);
  bytes.fill(0);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  bytes[0] = FORMAT;
  view.setUint16(2, layout.names.length, true);
  view.setUint32(4, layout.hash, true);
  return { bytes, view };
}

/**
 * Encodes values keyed by feature name; names of the layout that are absent are stored as missing.
 * With `into` (layout.byteLength bytes, e.g. a slice of one buffer for many groups) it writes there.
 */
export function encodeGroup(
  layout: GroupLayout,
  values: Readonly<Record<string, FeatureValue | undefined>>,
  into?: Uint8Array,
): Uint8Array {
  const { bytes, view } = start(layout, into);
  layout.names.forEach((name, i) => {
    const fv = Object.hasOwn(values, name) ? values[name] : undefined;
    writeOne(view, bytes, layout, i, fv?.value ?? null, fv?.eventTs ?? 0);
  });
  return bytes;
}

/** Encodes parallel arrays in layout order (values[i] belongs to layout.names[i]). */
export function encodeGroupArrays(
  layout: GroupLayout,
  values: ArrayLike<number | boolean | null | undefined>,
  eventTs: ArrayLike<number>,
): Uint8Array {
  const { bytes, view } = start(layout);
  for (let i = 0; i < layout.names.length; i++) writeOne(view, bytes, layout, i, values[i] ?? null, eventTs[i] ?? 0);
  return bytes;
}

// Read byte by byte: creating a DataView costs more than the whole check.
function matches(layout: GroupLayout, bytes: Uint8Array): boolean {
  return (
    bytes.byteLength === layout.byteLength &&
    bytes[0] === FORMAT &&
    (bytes[2]! | (bytes[3]! << 8)) === layout.names.length &&
    (bytes[4]! | (bytes[5]! << 8) | (bytes[6]! << 16) | (bytes[7]! << 24)) >>> 0 === layout.hash
  );
}

/**
 * Decodes into caller-owned arrays without allocating per feature. Without `pick`, feature i goes
 * to index i; with it, feature pick.fields[k] goes to index pick.slots[k] (a plan's stored read).
 * Returns false, writing nothing, when the bytes were not written for this layout (treat as a miss).
 */
export function decodeGroupInto(
  layout: GroupLayout,
  bytes: Uint8Array,
  values: (number | boolean | null)[],
  eventTs: Float64Array | number[],
  pick?: { readonly fields: ArrayLike<number>; readonly slots: ArrayLike<number> },
): boolean {
  if (!matches(layout, bytes)) return false;
  const n = layout.names.length;
  const count = pick ? pick.fields.length : n;
  // Aligned bytes (the usual case: Node and the addon allocate 8-byte aligned) are read through
  // one Float64Array view; others through a DataView.
  const at = bytes.byteOffset + layout.valuesAt;
  const floats = LITTLE_ENDIAN && (at & 7) === 0 ? new Float64Array(bytes.buffer, at, 2 * n) : null;
  const view = floats ? null : new DataView(bytes.buffer, at, 16 * n);
  for (let k = 0; k < count; k++) {
    const i = pick ? pick.fields[k]! : k;
    const to = pick ? pick.slots[k]! : k;
    const tag = bytes[HEADER + i];
    const value = floats ? floats[i]! : view!.getFloat64(8 * i, true);
    values[to] = tag === TAG_NUMBER ? value : tag === TAG_TRUE ? true : tag === TAG_FALSE ? false : null;
    eventTs[to] = floats ? floats[n + i]! : view!.getFloat64(8 * (n + i), true);
  }
  return true;
}

/** Decodes into a record keyed by feature name; null when the bytes do not match the layout. */
export function decodeGroup(layout: GroupLayout, bytes: Uint8Array): Record<string, FeatureValue> | null {
  const n = layout.names.length;
  const values: (number | boolean | null)[] = [];
  const ts: number[] = [];
  for (let i = 0; i < n; i++) {
    values.push(null);
    ts.push(0);
  }
  if (!decodeGroupInto(layout, bytes, values, ts)) return null;
  const out: Record<string, FeatureValue> = {};
  for (let i = 0; i < n; i++) out[layout.names[i]!] = { value: values[i]!, eventTs: ts[i]! };
  return out;
}
