// The prediction log's shared-memory ring between the HTTP thread (the one writer) and the log
// thread (the one reader): a SharedArrayBuffer the writer appends each logged prediction to as one
// record, with no JS object per prediction and no message. Head and tail are byte offsets the owner
// publishes with an atomic store; the writer only ever waits for nothing: when the record does not
// fit (the log thread behind or failing) the prediction is dropped and the caller counts it.
//
// The reader sleeps on a wake word (Atomics.waitAsync, so its thread still answers messages). The
// writer notifies only on the transition from idle (the first row after a quiet spell: the reader
// then writes within flushMs) and when it needs the rows written now (a durability sync commit, the
// ring a quarter full); otherwise a prediction costs a few typed-array stores and one atomic store.
// The reader publishes how many rows are settled (committed, or refused with durability sync), and
// how many refusals it has made, which is what the HTTP thread's commits wait on.
//
// A record's space is freed when its row is settled, not when it is read: a log thread that dies
// between reading rows and committing them leaves them in the ring, and the next one reads them
// again from the tail. (While writes fail the reader may free what it holds in memory early, so
// that the ring keeps taking rows: only those die with it, counted.) FREED is the row count at the
// tail, so a new reader knows which row it resumes at.
//
// Record layout (8-byte aligned, offsets from the record's start):
//   0 i32 length in bytes, padding included (0: a wrap marker, the next record is at offset 0)
//   4 i32 kind: a stream index (>= 0) for a prediction, DEFINE, CUT, or SKIPPED
//   8 i32 bytes of the request id (rows) or of the definition's JSON (DEFINE)
//  12 i32 flags (rows: 1 when the inputs were kept) or the stream index being defined (DEFINE)
//  16 f64 ts, 24 f64 score, 32 f32 x width inputs, then the request id in UTF-8 (rows)
//  16 UTF-8 JSON of the stream (DEFINE)

import { randomBytes } from 'node:crypto';

/** Bytes of the control block before the records. */
const CONTROL = 256;
// Int32 indexes into the control block: words of each side on their own cache line.
const HEAD = 0;
const TAIL = 16;
const SETTLED = 17;
const REFUSALS = 18;
/** Rows before the tail (their space freed): the row a new reader resumes at. */
const FREED = 19;
/** A random id of the ring, so that a mark of rows committed from it is never taken for another ring's. */
const ID = 20;
/** 1 + byte offset of the row record whose reading threw (0: none), so that the next reader skips that row only. */
const BAD = 21;
const WAKE = 32;

/** Wake word: the reader sleeps until a writer notifies. */
export const IDLE = 0;
/** Wake word: rows are waiting; the reader writes them by its flush deadline. */
export const PENDING = 1;
/** Wake word: the writer wants every row so far written now. */
export const URGENT = 2;

/** A record defining a stream (model, version, variant, width, task as JSON). */
export const DEFINE = -1;
/** A record closing every open segment: rows after it go into new ones. */
export const CUT = -2;
/** A row record the reader counts and does not read: one whose reading killed a reader. */
export const SKIPPED = -3;
const ROW_HEAD = 32;

export const DEFAULT_RING_BYTES = 16 << 20;

// In V8 (Node >= 16) but only in TypeScript's ES2024 lib; the project's lib is ES2022.
type WaitAsync = (
  a: Int32Array,
  index: number,
  value: number,
  timeoutMs?: number,
) => { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** A ring of `bytes` bytes of records (rounded down to a multiple of 8), for RingWriter and RingReader. */
export function createRing(bytes = DEFAULT_RING_BYTES): SharedArrayBuffer {
  const data = Math.max(1024, bytes & ~7);
  const sab = new SharedArrayBuffer(CONTROL + data);
  new Int32Array(sab, 0, CONTROL / 4)[ID] = randomBytes(4).readInt32LE(0);
  return sab;
}

/** Wrap-safe "a is at or after b" for the int32 row counters (valid while they are < 2^31 apart). */
export const reached = (a: number, b: number): boolean => ((a - b) | 0) >= 0;

/** Typed views of one ring, shared by both ends. */
class RingViews {
  protected readonly ctl: Int32Array;
  readonly i32: Int32Array;
  readonly f64: Float64Array;
  readonly f32: Float32Array;
  readonly u8: Uint8Array;
  /** Bytes of record space. */
  readonly capacity: number;

  constructor(readonly sab: SharedArrayBuffer) {
    this.capacity = sab.byteLength - CONTROL;
    this.ctl = new Int32Array(sab, 0, CONTROL / 4);
    this.i32 = new Int32Array(sab, CONTROL, this.capacity / 4);
    this.f64 = new Float64Array(sab, CONTROL, this.capacity / 8);
    this.f32 = new Float32Array(sab, CONTROL, this.capacity / 4);
    this.u8 = new Uint8Array(sab, CONTROL, this.capacity);
  }

  /** Rows committed or refused so far (int32, wraps). */
  settled(): number {
    return Atomics.load(this.ctl, SETTLED);
  }

  /** Refusals so far (durability sync: rows that were not committed and whose requests got an error). */
  refusals(): number {
    return Atomics.load(this.ctl, REFUSALS);
  }

  /** Rows whose space is freed (int32, wraps): a new reader starts at the next one. */
  freed(): number {
    return Atomics.load(this.ctl, FREED);
  }

  /** The ring's random id. */
  get id(): number {
    return this.ctl[ID]!;
  }
}

/** The HTTP thread's end. */
export class RingWriter extends RingViews {
  private readonly buf: Buffer;
  private head = 0;
  /** The reader's tail as last read: reloaded only when a record seems not to fit. */
  private tail = 0;
  /** End of the record being written (not yet published). */
  private next = 0;
  private readonly quarter: number;
  /** Longest record taken: an id too long for it is refused rather than filling the ring. */
  maxRecord: number;
  /** Rows written so far (int32, wraps); rows settled are counted by the reader in the same sequence. */
  rows = 0;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.buf = Buffer.from(sab, CONTROL, this.capacity);
    this.quarter = this.capacity >> 2;
    this.maxRecord = this.capacity >> 3;
  }

  /**
   * One prediction of stream `stream`: its request id (with `/part` appended when part >= 0), time,
   * score and `width` inputs of `input` from `offset` (null: not kept). False when it does not fit.
   */
  row(
    stream: number,
    width: number,
    id: string,
    part: number,
    ts: number,
    score: number,
    input: ArrayLike<number> | null,
    offset: number,
  ): boolean {
    const fixed = ROW_HEAD + 4 * width;
    const suffix = part < 0 ? 0 : 1 + digits(part);
    const n = id.length;
    let idBytes = n + suffix;
    let at = this.reserve(fixed + idBytes);
    if (at < 0) return false;
    const u8 = this.u8;
    let p = at + fixed;
    // Request ids are ASCII nearly always: copied a char a byte, with UTF-8 for any other.
    let i = 0;
    for (; i < n; i++) {
      const c = id.charCodeAt(i);
      if (c > 0x7f) break;
      u8[p + i] = c;
    }
    if (i < n) {
      idBytes = utf8Length(id) + suffix;
      at = this.reserve(fixed + idBytes);
      if (at < 0) return false;
      p = at + fixed;
      utf8Write(u8, p, id);
    }
    if (suffix > 0) {
      let q = p + idBytes;
      let v = part;
      do {
        u8[--q] = 48 + (v % 10);
        v = (v / 10) | 0;
      } while (v > 0);
      u8[q - 1] = 47; // '/'
    }
    const w = at >> 2;
    const i32 = this.i32;
    i32[w] = this.next - at;
    i32[w + 1] = stream;
    i32[w + 2] = idBytes;
    i32[w + 3] = input === null ? 0 : 1;
    const d = at >> 3;
    this.f64[d + 2] = ts;
    this.f64[d + 3] = score;
    if (input !== null) {
      const f32 = this.f32;
      const f = w + 8;
      for (let k = 0; k < width; k++) f32[f + k] = input[offset + k] as number;
    }
    this.rows = (this.rows + 1) | 0;
    this.publish();
    return true;
  }

  /** Defines stream `index` (its JSON description) for the reader; false when it does not fit. */
  define(index: number, json: string): boolean {
    const bytes = Buffer.byteLength(json, 'utf8');
    const at = this.reserve(16 + bytes);
    if (at < 0) return false;
    this.buf.write(json, at + 16, 'utf8');
    const w = at >> 2;
    this.i32[w] = this.next - at;
    this.i32[w + 1] = DEFINE;
    this.i32[w + 2] = bytes;
    this.i32[w + 3] = index;
    this.publish();
    return true;
  }

  /** Closes the reader's open segments at this point; false when it does not fit. */
  cut(): boolean {
    const at = this.reserve(16);
    if (at < 0) return false;
    const w = at >> 2;
    this.i32[w] = 16;
    this.i32[w + 1] = CUT;
    this.i32[w + 2] = 0;
    this.i32[w + 3] = 0;
    this.publish();
    return true;
  }

  /**
   * The reader died reading a row (a bug): that row is marked to be skipped by the next reader, and
   * is the one row lost. False when the reader did not die reading a row. Only while no reader runs.
   */
  skipBad(): boolean {
    const bad = Atomics.exchange(this.ctl, BAD, 0);
    if (bad === 0) return false;
    // Only a record still in the ring (from the tail up to the head) can be the one: never one freed and reused since.
    const at = bad - 1;
    const tail = Atomics.load(this.ctl, TAIL);
    const head = this.head;
    if (tail <= head ? at < tail || at >= head : at < tail && at >= head) return false;
    if (this.i32[(at >> 2) + 1]! < 0) return false;
    this.i32[(at >> 2) + 1] = SKIPPED;
    return true;
  }

  /**
   * The reader died. What it read and had not settled is still in the ring (a record is freed when
   * settled) and the next reader reads it again, except rows it freed early while its writes failed:
   * those were only in its memory. With `all`, everything in the ring goes too (the next reader
   * starts after it: those rows may be what killed the last one). The lost rows are counted as one
   * refusal and settled, so a commit waiting on them fails rather than waits. Returns their range
   * (after `from`, through `through`) and the refusal's number. Only while no reader runs.
   */
  abandon(all: boolean): { from: number; through: number; refusals: number } {
    const from = this.settled();
    if (all) {
      Atomics.store(this.ctl, FREED, this.rows);
      Atomics.store(this.ctl, TAIL, this.head);
    }
    const freed = this.freed();
    const through = reached(freed, from) ? freed : from;
    const refusals = from === through ? this.refusals() : Atomics.add(this.ctl, REFUSALS, 1) + 1;
    Atomics.store(this.ctl, SETTLED, through);
    Atomics.notify(this.ctl, SETTLED);
    return { from, through, refusals };
  }

  /** Asks the reader to write everything so far now. */
  urgent(): void {
    if (Atomics.exchange(this.ctl, WAKE, URGENT) !== URGENT) Atomics.notify(this.ctl, WAKE);
  }

  /**
   * Resolves once the settled count moves from `from` (or at once if it already has): the cheap
   * wait of a durability sync commit, woken by the reader's notify.
   */
  settledChange(from: number): Promise<unknown> | null {
    const r = waitAsync(this.ctl, SETTLED, from);
    return r.async ? r.value : null;
  }

  /** Bytes of records not yet read. */
  used(): number {
    this.tail = Atomics.load(this.ctl, TAIL);
    const d = this.head - this.tail;
    return d < 0 ? d + this.capacity : d;
  }

  /** Offset for a record of `len` bytes (rounded up to 8) and sets `next`, or -1 when it does not fit. */
  private reserve(len: number): number {
    len = (len + 7) & ~7;
    if (len > this.maxRecord) return -1;
    const cap = this.capacity;
    const h = this.head;
    for (let attempt = 0; attempt < 2; attempt++) {
      const t = this.tail;
      if (h >= t) {
        // The head may reach the end (and wrap to 0) unless the tail is at 0: head == tail is empty.
        if (cap - h >= len) {
          if (h + len !== cap || t !== 0) {
            this.next = h + len;
            return h;
          }
        } else if (len < t) {
          this.i32[h >> 2] = 0; // wrap marker: unread until published
          this.next = len;
          return 0;
        }
      } else if (h + len < t) {
        this.next = h + len;
        return h;
      }
      this.tail = Atomics.load(this.ctl, TAIL);
    }
    return -1;
  }

  private publish(): void {
    const cap = this.capacity;
    const h = this.next === cap ? 0 : this.next;
    this.head = h;
    const ctl = this.ctl;
    Atomics.store(ctl, HEAD, h);
    const wake = Atomics.load(ctl, WAKE);
    if (wake === IDLE) {
      if (Atomics.compareExchange(ctl, WAKE, IDLE, PENDING) === IDLE) Atomics.notify(ctl, WAKE);
    } else if (wake === PENDING) {
      const d = h - this.tail;
      // With the cached tail this over-counts: the true tail is read only past the mark.
      if ((d < 0 ? d + cap : d) > this.quarter && this.used() > this.quarter) this.urgent();
    }
  }
}

/**
 * UTF-8 length of a string whose lone surrogates (not valid UTF-16, but possible in a JS string)
 * take three bytes each, the way SQLite stores them: such an id joins its label as before.
 */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Writes `s` as UTF-8 from byte `p` (lone surrogates as three bytes, see utf8Length). */
function utf8Write(u8: Uint8Array, p: number, s: string): void {
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) u8[p++] = c;
    else if (c < 0x800) {
      u8[p++] = 0xc0 | (c >> 6);
      u8[p++] = 0x80 | (c & 63);
    } else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      c = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(++i) - 0xdc00);
      u8[p++] = 0xf0 | (c >> 18);
      u8[p++] = 0x80 | ((c >> 12) & 63);
      u8[p++] = 0x80 | ((c >> 6) & 63);
      u8[p++] = 0x80 | (c & 63);
    } else {
      u8[p++] = 0xe0 | (c >> 12);
      u8[p++] = 0x80 | ((c >> 6) & 63);
      u8[p++] = 0x80 | (c & 63);
    }
  }
}

const digits = (v: number): number => (v < 10 ? 1 : v < 100 ? 2 : v < 1000 ? 3 : v < 10_000 ? 4 : v < 100_000 ? 5 : String(v).length);

/** What the reader hands each record to. */
export interface RecordVisitor {
  /** A prediction at byte offset `at` of the ring's views (see the layout above). */
  row(ring: RingReader, at: number, stream: number): void;
  define(index: number, json: string): void;
  cut(): void;
}

/** The log thread's end. */
export class RingReader extends RingViews {
  /** Where the next read starts (the tail, or past it: rows read and not yet settled). */
  private cursor: number;
  /** Rows read so far (int32, wraps): the same sequence as the writer's. */
  rows: number;

  /** Starts at the ring's tail: where the last reader of this ring freed up to (a new ring: at its start). */
  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.cursor = Atomics.load(this.ctl, TAIL);
    this.rows = Atomics.load(this.ctl, FREED);
  }

  /** Whether every published record has been read. */
  empty(): boolean {
    return Atomics.load(this.ctl, HEAD) === this.cursor;
  }

  /** Byte offset where the next read starts: with `rows`, what settle() frees up to once those rows are settled. */
  get position(): number {
    return this.cursor;
  }

  /**
   * Visits every published record (or those before row `until`, a row count in the writer's
   * sequence); returns the rows read. Their space stays taken until they are settled (or released).
   */
  read(visit: RecordVisitor, until: number | null = null): number {
    const i32 = this.i32;
    const cap = this.capacity;
    const head = Atomics.load(this.ctl, HEAD);
    let t = this.cursor;
    let n = 0;
    try {
      while (t !== head) {
        const w = t >> 2;
        const len = i32[w]!;
        if (len === 0) {
          t = 0;
          continue;
        }
        const kind = i32[w + 1]!;
        if (kind >= 0) {
          if (until !== null && reached(this.rows + n, until)) break;
          visit.row(this, t, kind);
          n++;
        } else if (kind === DEFINE) {
          visit.define(i32[w + 3]!, Buffer.from(this.sab, CONTROL + t + 16, i32[w + 2]!).toString('utf8'));
        } else if (kind === CUT) {
          visit.cut();
        } else {
          if (until !== null && reached(this.rows + n, until)) break;
          n++;
        }
        t += len;
        if (t === cap) t = 0;
      }
    } catch (e) {
      // `t` is the record that threw: a row is marked for the writer, which skips it if this kills the reader.
      if (i32[(t >> 2) + 1]! >= 0) Atomics.store(this.ctl, BAD, t + 1);
      throw e;
    }
    this.cursor = t;
    this.rows = (this.rows + n) | 0;
    // A read that got through: a row that threw before (and did not kill the thread) is behind it.
    if (Atomics.load(this.ctl, BAD) !== 0) Atomics.store(this.ctl, BAD, 0);
    return n;
  }

  /**
   * Publishes rows up to `through` as settled (committed or refused), waking a waiting commit, and
   * frees the ring up to `position`, where the read that ended at row `through` stopped.
   */
  settle(through: number, position: number): void {
    if (!reached(Atomics.load(this.ctl, FREED), through)) this.free(through, position);
    Atomics.store(this.ctl, SETTLED, through);
    Atomics.notify(this.ctl, SETTLED);
  }

  /**
   * Frees everything read so far before it is settled: while writes fail the rows wait in this
   * thread's memory instead, and the ring keeps taking new ones. They are lost if the thread dies.
   */
  release(): void {
    this.free(this.rows, this.cursor);
  }

  private free(rows: number, position: number): void {
    Atomics.store(this.ctl, FREED, rows);
    Atomics.store(this.ctl, TAIL, position);
  }

  /** Counts one more refusal (before the refused rows are settled, so a commit never mistakes them for written). */
  refuse(): number {
    return Atomics.add(this.ctl, REFUSALS, 1) + 1;
  }

  wake(): number {
    return Atomics.load(this.ctl, WAKE);
  }

  /** Moves the wake word from `from` to `to`; false when it held something else. */
  swapWake(from: number, to: number): boolean {
    return Atomics.compareExchange(this.ctl, WAKE, from, to) === from;
  }

  /** Resolves when the wake word leaves `value` (a notify) or after `ms`; null when it already has. */
  waitWake(value: number, ms = Infinity): Promise<unknown> | null {
    const r = waitAsync(this.ctl, WAKE, value, ms);
    return r.async ? r.value : null;
  }
}
