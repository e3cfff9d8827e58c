// What the deployer checks and describes, as functions of their inputs: the traffic split of a
// strategy, a strategy without the versions that failed to load, whether a version keeps the
// deployment's input contract, its run on sample inputs, and why a canary check failed.

import { elementCount, makeTensorData, type LoadedModel } from '../inference/index.js';
import type { ScorelineError } from '../errors.js';
import { significant4 } from '../numbers.js';
import type { Check } from './analysis.js';
import type { Strategy } from './strategies.js';

/** Percent of traffic per version. */
export function traffic(s: Strategy): Record<string, number> {
  switch (s.strategy) {
    case 'direct':
      return { [s.version]: 100 };
    case 'blue-green':
      return { [s.active === 'blue' ? s.blue : s.green]: 100, [s.active === 'blue' ? s.green : s.blue]: 0 };
    case 'canary':
      return { [s.stable]: 100 - s.percent, [s.canary]: s.percent };
    case 'ab': {
      const total = s.variants.reduce((a, v) => a + v.weight, 0);
      const out: Record<string, number> = {};
      for (const v of s.variants) out[v.version] = (out[v.version] ?? 0) + (100 * v.weight) / total;
      return out;
    }
    case 'shadow':
      return { [s.primary]: 100, [s.shadow]: 0 };
  }
}

/** The strategy without the versions in `bad`, falling back to what is left; null when nothing is. */
export function withoutVersions(s: Strategy, bad: readonly number[]): Strategy | null {
  const ok = (v: number) => !bad.includes(v);
  switch (s.strategy) {
    case 'direct':
      return ok(s.version) ? s : null;
    case 'blue-green': {
      const active = s.active === 'blue' ? s.blue : s.green;
      const other = s.active === 'blue' ? s.green : s.blue;
      return ok(active) ? { strategy: 'direct', version: active } : ok(other) ? { strategy: 'direct', version: other } : null;
    }
    case 'canary':
      return ok(s.stable) ? { strategy: 'direct', version: s.stable } : ok(s.canary) ? { strategy: 'direct', version: s.canary } : null;
    case 'shadow':
      return ok(s.primary) ? { strategy: 'direct', version: s.primary } : null;
    case 'ab': {
      const variants = s.variants.filter((v) => ok(v.version));
      if (variants.length === 0) return null;
      return variants.length === 1 ? { strategy: 'direct', version: variants[0]!.version } : { ...s, variants };
    }
  }
}

export function describeFailure(c: Check): string {
  switch (c.name) {
    case 'error_rate':
      return `error_rate ${significant4(c.canary)} vs stable ${significant4(c.stable)} (limit ${significant4(c.limit)}, binomial p = ${significant4(c.pValue ?? null)}, n = ${c.n})`;
    case 'p99_latency':
      return `p99_latency ${significant4(c.canary)} ms vs stable ${significant4(c.stable)} ms (${c.above} of ${c.batches} canary batches above the limit ${significant4(c.limit)} ms, binomial p = ${significant4(c.pValue ?? null)})`;
    case 'score_psi':
      return `score_psi ${significant4(c.canary)} against the canary's own reference (limit ${significant4(c.limit)}, n = ${c.n})`;
  }
}

/** Runs a few sample rows (zeros, ones, and varied values) through the version; all outputs must be finite. */
export async function sampleCheck(m: LoadedModel): Promise<string | null> {
  const rows = m.batchable ? Math.min(8, m.batching.maxBatchSize) : 1;
  const inputs = m.inputs.map((t) => {
    const per = elementCount(m.batchable ? t.shape.slice(1) : t.shape);
    const data = makeTensorData(t.datatype, rows * per);
    for (let k = 0; k < rows * per; k++) {
      const r = Math.floor(k / per);
      const v = r === 0 ? 0 : r === 1 ? 1 : ((k * 7919) % 100) / 10;
      if (t.datatype === 'INT64' || t.datatype === 'UINT64') (data as BigInt64Array)[k] = BigInt(Math.round(v));
      else if (t.datatype === 'BOOL') (data as Uint8Array)[k] = v > 0 ? 1 : 0;
      else (data as Float32Array)[k] = t.datatype.startsWith('FP') ? v : Math.round(v);
    }
    return data;
  });
  // Not admitted (the queue full) throws here, as any request would; only the run's failure is the version's.
  const run = m.batcher.selfTest(rows, inputs);
  const result = await run.catch((e: ScorelineError) => e);
  if (result instanceof Error) return result.message;
  for (const o of result.outputs) {
    if (o.datatype !== 'FP32' && o.datatype !== 'FP64') continue;
    for (let k = 0; k < o.data.length; k++) {
      if (!Number.isFinite(o.data[k] as number)) return `output '${o.name}' is not finite (${o.data[k]})`;
    }
  }
  return null;
}
