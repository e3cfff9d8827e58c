// Shadow copies: the same request decoded into the shadow version's batcher after the primary has
// it. Never on the response path: whatever happens to the copy (bad fit, full queue, model error)
// only shows up in the agreement statistics.

import type { Target } from '../deploy/index.js';
import type { PendingRequest, RunResult } from '../inference/index.js';
import type { ScorelineError } from '../errors.js';
import type { ShadowPair } from './context.js';
import type { DecodedRequest } from './decode.js';
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

/** Sends a copy to the shadow: `decode` writes the request into the shadow's batcher (the protocol's own decoder). */
export function sendShadow(shadow: NonNullable<Target['shadow']>, pair: ShadowPair, decode: () => DecodedRequest, timeoutMs: number): void {
  try {
    const m = shadow.model;
    const now = performance.now();
    const d = decode();
    m.batcher.commit(d.batch, new ShadowPending(m, pair, d.rows, now, now + timeoutMs));
  } catch {
    pair.failed();
  }
}
