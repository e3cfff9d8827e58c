// One model version, variant and API key of the prediction log, as the HTTP thread holds it: a small index
// into the shared ring (log-ring.ts), defined there once, before its first row. Pushing a
// prediction writes one record into the ring: no I/O, no message, no per-row object.

import type { RingWriter } from './log-ring.js';
import type { Task } from './log-store.js';

/** The counters a stream keeps on its log. */
export interface StreamOwner {
  closed: boolean;
  logged: number;
  dropped: number;
}

/** The log of one model version, variant and API key; rows of `width` float inputs. */
export class LogStream {
  /** The stream's definition as written into the ring, once it has been (null before). */
  definition: string | null = null;

  constructor(
    private readonly log: StreamOwner,
    private readonly ring: RingWriter,
    readonly index: number,
    readonly model: string,
    readonly version: number,
    readonly variant: string,
    readonly width: number,
    readonly task: Task | null,
    /** The API key id its predictions came with (null: none). */
    readonly keyId: string | null = null,
  ) {}

  /**
   * One prediction; `row` holds its `width` inputs from `offset` (null: not kept). Its id is `id`,
   * or `id/part` for row `part` of a multi-row request (written so, never built as a string). False
   * when it was not kept: the log is closed, or the ring is full (counted as dropped).
   */
  push(id: string, ts: number, score: number, row: ArrayLike<number> | null, offset: number, part = -1): boolean {
    const log = this.log;
    if (log.closed) return false;
    if ((this.definition === null && !this.define()) || !this.ring.row(this.index, this.width, id, part, ts, score, row, offset)) {
      log.dropped++;
      return false;
    }
    log.logged++;
    return true;
  }

  private define(): boolean {
    const { model, version, variant, width, task, keyId } = this;
    const json = JSON.stringify({ model, version, variant, width, task, keyId });
    if (!this.ring.define(this.index, json)) return false;
    this.definition = json;
    return true;
  }
}
