// One model version and variant's buffer in the prediction log, on the HTTP thread: columnar typed
// arrays and an id list (no I/O, no per-row objects), handed over whole as a segment at each flush.

import type { AppendSegment, Task } from './log-worker.js';
import type { PredictionLog } from './prediction-log.js';

// Small, frequent segments: each is one short transaction in the log thread, so no single write
// holds a core long enough to show in request latency.
export const FLUSH_ROWS = 1024;
/** Predictions sent to the log thread and not yet written beyond which new ones are dropped (counted). */
export const MAX_BACKLOG = 1_000_000;

/** The buffer of one model version, variant and API key; rows of `width` float inputs. */
export class LogStream {
  private ids: string[] = [];
  private ts: Float64Array;
  private scores: Float64Array;
  private features: Float32Array;
  private n = 0;

  constructor(
    private readonly log: PredictionLog,
    readonly model: string,
    readonly version: number,
    readonly variant: string,
    readonly width: number,
    readonly task: Task | null,
    /** The API key id its predictions came with (null: none). */
    readonly keyId: string | null = null,
    private capacity = 64,
  ) {
    this.ts = new Float64Array(capacity);
    this.scores = new Float64Array(capacity);
    this.features = new Float32Array(capacity * width);
  }

  get size(): number {
    return this.n;
  }

  /**
   * One prediction; `row` holds its `width` inputs from `offset` (null: not kept). False when it
   * was not kept: the log is closed, or its backlog is full (counted as dropped).
   */
  push(id: string, ts: number, score: number, row: ArrayLike<number> | null, offset: number): boolean {
    if (this.log.closed) return false;
    if (this.log.backlog >= MAX_BACKLOG) {
      this.log.dropped++;
      return false;
    }
    const n = this.n;
    if (n === this.capacity) this.grow();
    this.ids.push(id);
    this.ts[n] = ts;
    this.scores[n] = score;
    const w = this.width;
    if (w > 0) {
      const f = this.features;
      const at = n * w;
      if (row === null) f.fill(NaN, at, at + w);
      else for (let i = 0; i < w; i++) f[at + i] = row[offset + i] as number;
    }
    this.n = n + 1;
    this.log.logged++;
    if (this.n >= FLUSH_ROWS) this.log.flushStream(this);
    else if (n === 0) this.log.schedule(this);
    return true;
  }

  private grow(): void {
    const cap = this.capacity * 2;
    const ts = new Float64Array(cap);
    ts.set(this.ts);
    const scores = new Float64Array(cap);
    scores.set(this.scores);
    const features = new Float32Array(cap * this.width);
    features.set(this.features);
    this.ts = ts;
    this.scores = scores;
    this.features = features;
    this.capacity = cap;
  }

  /** @internal hands the buffered rows over as one segment (null when empty) and starts new buffers. */
  take(): AppendSegment | null {
    const n = this.n;
    if (n === 0) return null;
    const segment: AppendSegment = {
      model: this.model,
      version: this.version,
      variant: this.variant,
      keyId: this.keyId,
      task: this.task,
      width: this.width,
      n,
      ids: this.ids,
      ts: this.ts,
      scores: this.scores,
      features: this.features,
    };
    // The next buffers start at about the size this flush needed.
    this.capacity = Math.min(FLUSH_ROWS, Math.max(64, 1 << Math.ceil(Math.log2(n))));
    this.ids = [];
    this.ts = new Float64Array(this.capacity);
    this.scores = new Float64Array(this.capacity);
    this.features = new Float32Array(this.capacity * this.width);
    this.n = 0;
    return segment;
  }
}
