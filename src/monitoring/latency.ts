// Latency and volume of one model version: an HDR histogram (microseconds, 3 significant digits)
// for p50/p95/p99/p999, and per-second ring counters for requests and errors over recent windows.

import { HdrHistogram, type HdrJSON } from './hdr.js';

export interface LatencySnapshot {
  count: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  p999_ms: number | null;
  max_ms: number | null;
  mean_ms: number | null;
}

export class LatencyRecorder {
  private readonly h = new HdrHistogram(3_600_000_000, 3);

  recordMicros(us: number): void {
    this.h.recordValue(Math.max(us, 1));
  }

  snapshot(): LatencySnapshot {
    const n = this.h.totalCount;
    const ms = (p: number) => (n === 0 ? null : this.h.getValueAtPercentile(p) / 1000);
    return {
      count: n,
      p50_ms: ms(50),
      p95_ms: ms(95),
      p99_ms: ms(99),
      p999_ms: ms(99.9),
      max_ms: n === 0 ? null : this.h.maxValue / 1000,
      mean_ms: n === 0 ? null : this.h.mean / 1000,
    };
  }

  /** Recorded latencies above `ms` (at the histogram's resolution). */
  countAboveMs(ms: number): number {
    return this.h.countAbove(ms * 1000);
  }

  /** Adds another recorder's latencies (exactly: the same histogram shape). */
  add(o: LatencyRecorder): void {
    this.h.add(o.h);
  }

  /** The histogram as another process rebuilds it exactly (addJSON). */
  toJSON(): HdrJSON {
    return this.h.toJSON();
  }

  /** Adds what toJSON() of another recorder wrote; throws on anything else, changing nothing. */
  addJSON(json: unknown): void {
    this.h.addJSON(json);
  }

  reset(): void {
    this.h.reset();
  }
}

/** Counts per wall-clock second over the last `seconds` seconds. */
export class RateCounter {
  private readonly counts: Float64Array;
  private readonly stamps: Float64Array;
  total = 0;

  constructor(private readonly seconds = 60) {
    this.counts = new Float64Array(seconds);
    this.stamps = new Float64Array(seconds).fill(-1);
  }

  add(now: number, n = 1): void {
    const sec = Math.floor(now / 1000);
    const i = sec % this.seconds;
    if (this.stamps[i] !== sec) {
      this.stamps[i] = sec;
      this.counts[i] = 0;
    }
    this.counts[i]! += n;
    this.total += n;
  }

  /** Sum over the last `window` complete seconds (the current, partial second excluded). */
  sum(now: number, window: number): number {
    const sec = Math.floor(now / 1000);
    let s = 0;
    for (let k = 1; k <= Math.min(window, this.seconds - 1); k++) {
      const t = sec - k;
      const i = ((t % this.seconds) + this.seconds) % this.seconds;
      if (this.stamps[i] === t) s += this.counts[i]!;
    }
    return s;
  }
}
