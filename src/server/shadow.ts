// Shadow copies: the same request decoded into the shadow version's batcher after the primary has
// it. Never on the response path: whatever happens to the copy (bad fit, full queue, model error)
// only shows up in the agreement statistics.

import type { Target } from '../deploy/index.js';
import type { PendingRequest, RunResult } from '../inference/index.js';
import type { ScorelineError } from '../errors.js';
import type { ShadowPair } from './context.js';
import { decodeInstances, decodeOip } from './decode.js';
import { scoreOf } from './encode.js';

class ShadowPending implements PendingRequest {
  settled = false;
  constructor(
    private readonly model: NonNullable<Target['shadow']>['model'],
    private readonly pair: ShadowPair,
    readonly rows: number,
    readonly enqueuedAt: number,
    readonly deadline: number,
  ) {}
  resolve(result: RunResult, rowStart: number): void {
    this.pair.shadow(scoreOf(this.model, result, rowStart));
  }
  reject(_err: ScorelineError): void {
    this.pair.failed();
  }
}

/** Sends a copy of a decoded body (OIP or v1 instances) or of a feature row to the shadow. */
export function sendShadow(
  shadow: NonNullable<Target['shadow']>,
  pair: ShadowPair,
  copy: { kind: 'oip' | 'predict'; body: unknown; maxElements: number } | { kind: 'row'; row: readonly number[] },
  timeoutMs: number,
): void {
  try {
    const m = shadow.model;
    const now = performance.now();
    if (copy.kind === 'row') {
      const batch = m.batcher.reserve(1);
      const at = batch.rows * m.batcher.rowElements(batch, 0);
      const buf = batch.buffers[0] as Float64Array;
      for (let c = 0; c < copy.row.length; c++) buf[at + c] = copy.row[c]!;
      m.batcher.commit(batch, new ShadowPending(m, pair, 1, now, now + timeoutMs));
      return;
    }
    const d = copy.kind === 'oip' ? decodeOip(m, copy.body, copy.maxElements) : decodeInstances(m, copy.body, copy.maxElements);
    m.batcher.commit(d.batch, new ShadowPending(m, pair, d.rows, now, now + timeoutMs));
  } catch {
    pair.failed();
  }
}
