// Rows the server scores for itself (a drift reference, KernelSHAP's coalition rows), run through
// the version's own batcher as internal requests: not traffic, not monitored, not logged. A few
// chunks of maxBatchSize rows are queued at a time, so they interleave with live requests instead of
// running ahead of them, and never hold more of the version's queue than a handful of batches.

import type { ScorelineError } from '../errors.js';
import type { Batch, LoadedModel, PendingRequest, RunResult } from '../inference/index.js';

/** Chunks queued at once. */
const IN_FLIGHT = 4;

/** Writes rows [first, first + n) into `batch` from its row `batch.rows` on (every input the rows have). */
export type Fill = (batch: Batch, first: number, n: number) => void;

/** A Fill for a model whose single input is floating point: `fill` writes row-major at element `at`. */
export function intoSingleInput(
  m: LoadedModel,
  fill: (buffer: Float32Array | Float64Array, at: number, first: number, n: number) => void,
): Fill {
  return (batch, first, n) => fill(batch.buffers[0] as Float32Array | Float64Array, batch.rows * m.batcher.rowElements(batch, 0), first, n);
}

/**
 * Scores rows [0, total): `fill` writes rows [first, first + n) into the reserved batch, `take`
 * reads their results at `rowStart` of the batch. `fill` may throw to stop (nothing of that chunk is
 * queued). Internal requests get `deadline`.
 */
export async function scoreInternally(
  m: LoadedModel,
  total: number,
  fill: Fill,
  take: (first: number, n: number, result: RunResult, rowStart: number) => void,
  deadline: number,
): Promise<void> {
  const chunk = Math.max(1, m.batching.maxBatchSize);
  const window: Promise<void>[] = [];
  for (let start = 0; start < total; start += chunk) {
    if (window.length >= IN_FLIGHT) await window.shift();
    const n = Math.min(chunk, total - start);
    const batch = m.batcher.reserve(n);
    fill(batch, start, n);
    const done = new Promise<void>((resolve, reject) => {
      const p: PendingRequest = {
        rows: n,
        enqueuedAt: performance.now(),
        deadline,
        settled: false,
        internal: true,
        resolve(result: RunResult, rowStart: number) {
          take(start, n, result, rowStart);
          resolve();
        },
        reject(err: ScorelineError) {
          reject(err);
        },
      };
      m.batcher.commit(batch, p);
    });
    // Awaited below; marked handled now so that a chunk failing while an earlier throw unwinds is not unhandled.
    done.catch(() => undefined);
    window.push(done);
  }
  await Promise.all(window);
}
