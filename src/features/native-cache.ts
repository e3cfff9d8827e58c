// The JS face of the native feature cache: loads build/Release/scoreline_native.node (built from
// native/ by node-gyp) and wraps the one process-wide sharded LRU store it holds (NativeCache), and
// its named tables (NativeTable). Every thread
// of the process (main and each worker_thread) sees the same entries; values are bytes, kept
// outside the JS heap, and copied out on read.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Defaults, when configure() is not called before first use: 1,048,576 entries, 256 MiB, 64 shards. */
export interface NativeCacheLimits {
  /** Entries the store may hold (split evenly over the shards; at least the shard count). */
  maxEntries?: number;
  /** Bytes the store may hold, counting key + value + `entryOverheadBytes` per entry. */
  maxBytes?: number;
  /** Power of two; only the first configure() (before any other use) can set it. Default 64. */
  shards?: number;
}

export interface NativeCacheStats {
  hits: number;
  /** Includes reads that found an expired entry. */
  misses: number;
  /** Live entries removed to make room, least recently used first. */
  evictions: number;
  /** Entries removed because their TTL had passed (on access, or when they were the LRU victim). */
  expirations: number;
  /** Entries stored now, including expired ones nobody has touched since they expired. */
  entries: number;
  bytes: number;
  maxEntries: number;
  maxBytes: number;
  shards: number;
}

/** The functions of the addon (native/binding.cc documents each). */
export interface NativeBinding {
  configure(limits: NativeCacheLimits): boolean;
  get(key: string): Buffer | undefined;
  getInto(key: string, out: Uint8Array, offset: number): number;
  getManyJoined(keys: string, count: number, out: Uint8Array, meta: Int32Array): number;
  getManyArray(keys: readonly string[], out: Uint8Array, meta: Int32Array): number;
  set(key: string, value: Uint8Array, ttlMs?: number): boolean;
  setMany(keys: readonly string[], values: readonly Uint8Array[], ttlMs?: number): number;
  delete(key: string): boolean;
  clear(): void;
  stats(): NativeCacheStats;
  tableOpen(name: string, limits?: { maxEntries?: number; maxBytes?: number }): number;
  tableGetInto(id: number, key: string, out: Uint8Array, offset: number): number;
  tableSet(id: number, key: string, value: Uint8Array): boolean;
  tableInsertMany(id: number, keys: string, count: number, values: Uint8Array, ends: Int32Array): number;
  tableDelete(id: number, key: string): boolean;
  tableClear(id: number): void;
  tableStats(id: number): NativeCacheStats;
  readonly entryOverheadBytes: number;
  readonly keySeparator: string;
  /** The tree engine's binary-classifier logistic (src/inference/tree-runner.ts), 2 values per sum. */
  binaryLogistic(sums: Float32Array, probabilities: Float32Array): void;
}

const ADDON_RELATIVE_PATH = join('build', 'Release', 'scoreline_native.node');

export class NativeAddonMissingError extends Error {
  readonly code = 'ERR_SCORELINE_NATIVE_ADDON_MISSING';
  constructor(searched: readonly string[], cause?: unknown) {
    super(
      `the native feature cache addon could not be loaded (looked for ${searched.join(', ')}); ` +
        'build it with `npm ci` or `npx node-gyp rebuild` in the scoreline package root',
      cause === undefined ? undefined : { cause },
    );
    this.name = 'NativeAddonMissingError';
  }
}

// From dist/src/features/ the package root is three levels up, from src/features/ (a TS runner)
// two: walk up to the first directory holding package.json and the addon instead of counting.
function findAddon(): { found?: string; searched: string[] } {
  const searched: string[] = [];
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 6; depth++) {
    if (existsSync(join(dir, 'package.json'))) {
      const candidate = join(dir, ADDON_RELATIVE_PATH);
      searched.push(candidate);
      if (existsSync(candidate)) return { found: candidate, searched };
    }
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return { searched };
}

let binding: NativeBinding | undefined;

/** Loads the addon once per thread; throws NativeAddonMissingError if it is not built. */
export function loadNativeBinding(): NativeBinding {
  if (binding !== undefined) return binding;
  const { found, searched } = findAddon();
  if (found === undefined) throw new NativeAddonMissingError(searched);
  try {
    binding = createRequire(import.meta.url)(found) as NativeBinding;
  } catch (err) {
    throw new NativeAddonMissingError(searched, err);
  }
  return binding;
}

const INITIAL_BATCH_BYTES = 16 * 1024;
const SLAB_BYTES = 16 * 1024;
// A value above this that does not fit in the current slab gets its own Buffer (no new slab).
const SLAB_MAX_VALUE = 4 * 1024;

/**
 * Reusable output of NativeCache.getManyInto: after a read of n keys, `data` holds the values
 * back to back and for key i, `meta[2i]` is its offset in `data` (-1 = miss) and `meta[2i+1]`
 * its length. Contents are valid until the next read into the same buffer; copy what you keep.
 */
export class BatchReadBuffer {
  data: Buffer;
  meta: Int32Array;
  /** Keys in the last read. */
  count = 0;
  /** Bytes of `data` used by the last read. */
  bytes = 0;

  constructor(initialBytes = INITIAL_BATCH_BYTES, initialKeys = 32) {
    this.data = Buffer.allocUnsafeSlow(initialBytes);
    this.meta = new Int32Array(2 * initialKeys + 1);
  }

  has(i: number): boolean {
    return this.meta[2 * i]! >= 0;
  }

  /** A view of key i's value inside `data` (no copy), or undefined on a miss. */
  value(i: number): Buffer | undefined {
    const offset = this.meta[2 * i]!;
    if (offset < 0) return undefined;
    return this.data.subarray(offset, offset + this.meta[2 * i + 1]!);
  }
}

/**
 * A handle on the process-wide native cache. Instances are cheap and all see the same entries;
 * each keeps its own scratch memory for reads, so use one per thread (or per module).
 */
export class NativeCache {
  readonly #native: NativeBinding;
  readonly #batch = new BatchReadBuffer();
  #slab: Uint8Array = Buffer.allocUnsafeSlow(SLAB_BYTES);
  #slabOffset = 0;

  constructor() {
    this.#native = loadNativeBinding();
  }

  /** Bookkeeping bytes charged per entry on top of key and value bytes. */
  get entryOverheadBytes(): number {
    return this.#native.entryOverheadBytes;
  }

  /**
   * Sets the limits (and, on the first call before any other use, the shard count). Returns
   * false, changing nothing, if `shards` differs from the store's; throws on invalid values.
   */
  configure(limits: NativeCacheLimits): boolean {
    return this.#native.configure(limits);
  }

  /**
   * A copy of key's value, or undefined if absent or expired. Small values are slices of a
   * shared 16 KiB slab, as with Buffer.allocUnsafe's pool.
   */
  get(key: string): Buffer | undefined {
    // The value is copied straight into a shared slab and returned as a view of it (like
    // Buffer.allocUnsafe's pool): no N-API Buffer is created, which costs more than the read.
    let slab = this.#slab;
    let offset = this.#slabOffset;
    let length = this.#native.getInto(key, slab, offset);
    if (length < 0) return undefined;
    if (length > slab.length - offset) {
      if (length > SLAB_MAX_VALUE) return this.#getLarge(key, length);
      slab = this.#slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      offset = 0;
      length = this.#native.getInto(key, slab, 0);
      if (length < 0) return undefined;
      if (length > slab.length) return this.#getLarge(key, length);
    }
    this.#slabOffset = (offset + length + 7) & ~7;
    return Buffer.from(slab.buffer, slab.byteOffset + offset, length);
  }

  #getLarge(key: string, length: number): Buffer | undefined {
    // The value may change size between reads: retry until a read fits.
    for (;;) {
      const out = Buffer.allocUnsafeSlow(length);
      const actual = this.#native.getInto(key, out, 0);
      if (actual < 0) return undefined;
      if (actual <= out.length) return actual === out.length ? out : out.subarray(0, actual);
      length = actual;
    }
  }

  /**
   * Reads many keys with one call across the boundary into `out` (see BatchReadBuffer for the
   * shape), growing `out` when needed. Returns the number of hits.
   */
  getManyInto(keys: readonly string[], out: BatchReadBuffer): number {
    const count = keys.length;
    if (out.meta.length < 2 * count + 1) out.meta = new Int32Array(2 * count + 1 + 2 * 32);
    out.count = count;
    for (;;) {
      // One joined string is the cheapest way to pass many strings through N-API; a key that
      // contains the separator makes the native side answer -1, and the array form is used.
      let hits = this.#native.getManyJoined(count === 1 ? keys[0]! : keys.join(this.#native.keySeparator), count, out.data, out.meta);
      if (hits < 0) hits = this.#native.getManyArray(keys, out.data, out.meta);
      const needed = out.meta[2 * count]!;
      if (needed <= out.data.length) {
        out.bytes = needed;
        return hits;
      }
      out.data = Buffer.allocUnsafeSlow(Math.max(needed, 2 * out.data.length));
    }
  }

  /**
   * Values of keys in order, undefined for misses. The hits are views of one fresh Buffer, so
   * they are independent of later reads.
   */
  getMany(keys: readonly string[]): (Buffer | undefined)[] {
    const batch = this.#batch;
    this.getManyInto(keys, batch);
    const block = Buffer.allocUnsafe(batch.bytes);
    batch.data.copy(block, 0, 0, batch.bytes);
    const meta = batch.meta;
    const values = new Array<Buffer | undefined>(keys.length);
    for (let i = 0; i < keys.length; i++) {
      const offset = meta[2 * i]!;
      values[i] = offset < 0 ? undefined : block.subarray(offset, offset + meta[2 * i + 1]!);
    }
    return values;
  }

  /**
   * Stores a copy of value as the most recently used entry; ttlMs 0 or absent = no expiry.
   * Returns false if the entry is larger than one shard's byte budget (maxBytes / shards).
   */
  set(key: string, value: Uint8Array, ttlMs?: number): boolean {
    return this.#native.set(key, value, ttlMs);
  }

  /** set() for each pair, one call across the boundary; returns how many were stored. */
  setMany(keys: readonly string[], values: readonly Uint8Array[], ttlMs?: number): number {
    return this.#native.setMany(keys, values, ttlMs);
  }

  /** True if a live entry was removed. */
  delete(key: string): boolean {
    return this.#native.delete(key);
  }

  /** Removes every entry; counters are kept. */
  clear(): void {
    this.#native.clear();
  }

  stats(): NativeCacheStats {
    return this.#native.stats();
  }
}

/**
 * A named process-wide table in the addon: the same store as the cache (sharded, off the JS heap,
 * seen by every thread that opens the same name), without TTLs, and unlimited unless limits are
 * given (then least recently used entries are evicted, counted in stats().evictions). The embedded
 * feature store keeps every entity's groups in one.
 */
export class NativeTable {
  readonly #native: NativeBinding;
  readonly #id: number;
  #slab: Uint8Array = Buffer.allocUnsafeSlow(SLAB_BYTES);
  #slabOffset = 0;

  /** Opens (or creates) the table `name`; `limits` replace its limits when given. */
  constructor(
    readonly name: string,
    limits?: { maxEntries?: number; maxBytes?: number },
  ) {
    this.#native = loadNativeBinding();
    this.#id = this.#native.tableOpen(name, limits);
  }

  /** A copy of key's value (a view of a shared slab, as NativeCache.get), or undefined. */
  get(key: string): Buffer | undefined {
    let slab = this.#slab;
    let offset = this.#slabOffset;
    let length = this.#native.tableGetInto(this.#id, key, slab, offset);
    if (length < 0) return undefined;
    if (length > slab.length - offset) {
      slab = this.#slab = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, length));
      offset = 0;
      // The value may have changed size between the two reads: read until one fits.
      for (;;) {
        length = this.#native.tableGetInto(this.#id, key, slab, 0);
        if (length < 0) return undefined;
        if (length <= slab.length) break;
        slab = this.#slab = Buffer.allocUnsafeSlow(length);
      }
    }
    this.#slabOffset = (offset + length + 7) & ~7;
    return Buffer.from(slab.buffer, slab.byteOffset + offset, length);
  }

  /** Stores a copy of value under key, replacing any entry. */
  set(key: string, value: Uint8Array): boolean {
    return this.#native.tableSet(this.#id, key, value);
  }

  /**
   * Inserts the pairs whose key holds nothing (an entry stored meanwhile by set() is kept); one call
   * across the boundary. Returns how many were inserted.
   */
  insertMany(keys: readonly string[], values: readonly Uint8Array[]): number {
    if (keys.length !== values.length) throw new RangeError('keys and values must have the same length');
    let total = 0;
    for (const v of values) total += v.byteLength;
    const bytes = new Uint8Array(total);
    const ends = new Int32Array(values.length);
    let at = 0;
    values.forEach((v, i) => {
      bytes.set(v, at);
      at += v.byteLength;
      ends[i] = at;
    });
    const joined = keys.length === 1 ? keys[0]! : keys.join(this.#native.keySeparator);
    let inserted = this.#native.tableInsertMany(this.#id, joined, keys.length, bytes, ends);
    if (inserted < 0) {
      // A key holds the separator: one at a time.
      inserted = 0;
      keys.forEach((k, i) => {
        inserted += this.#native.tableInsertMany(this.#id, k, 1, values[i]!, Int32Array.of(values[i]!.byteLength));
      });
    }
    return inserted;
  }

  delete(key: string): boolean {
    return this.#native.tableDelete(this.#id, key);
  }

  /** Removes every entry (for every thread), freeing their memory. */
  clear(): void {
    this.#native.tableClear(this.#id);
  }

  stats(): NativeCacheStats {
    return this.#native.tableStats(this.#id);
  }
}
