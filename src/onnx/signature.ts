// Whether a new model version can take the requests a served one takes: the one rule shared by the
// deployer (a deployment's versions against the inputs served now) and the retraining gate (a
// challenger against its champion), so a challenger the gate passes is one the deployer accepts.

import type { TensorSpec } from './metadata.js';

type InputSpec = Pick<TensorSpec, 'name' | 'datatype' | 'shape'>;

const shapeText = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

/**
 * Why `candidate` cannot take every request that `served` takes, or null when it can. Both need
 * the same input names, each with the same datatype and rank; a dim the candidate leaves dynamic
 * (-1) accepts anything, while a dim it fixes must equal the served one, which must be fixed too:
 * fixing a dim the served model leaves dynamic would refuse requests that are valid today.
 * `servedLabel` names the served side in the message ("the contract", "the champion").
 */
export function inputIncompatibility(served: readonly InputSpec[], candidate: readonly InputSpec[], servedLabel: string): string | null {
  const servedNames = new Set(served.map((s) => s.name));
  const candidateNames = new Set(candidate.map((c) => c.name));
  const extra = candidate.filter((c) => !servedNames.has(c.name)).map((c) => `'${c.name}'`);
  const missing = served.filter((s) => !candidateNames.has(s.name)).map((s) => `'${s.name}'`);
  if (candidate.length !== served.length) {
    const names = [extra.length > 0 ? `extra ${extra.join(', ')}` : '', missing.length > 0 ? `missing ${missing.join(', ')}` : ''].filter(
      (x) => x !== '',
    );
    return `${candidate.length} inputs, ${servedLabel} has ${served.length}${names.length > 0 ? ` (${names.join('; ')})` : ''}`;
  }
  if (missing.length > 0) return `no input ${missing.join(', ')}${extra.length > 0 ? ` (it has ${extra.join(', ')} instead)` : ''}`;
  for (const s of served) {
    const c = candidate.find((x) => x.name === s.name)!; // present: no input is missing
    if (c.datatype !== s.datatype) return `input '${s.name}' is ${c.datatype}, ${servedLabel}'s is ${s.datatype}`;
    const fits = c.shape.length === s.shape.length && c.shape.every((d, i) => d === -1 || d === s.shape[i]);
    if (!fits) return `input '${s.name}' has shape ${shapeText(c.shape)}, ${servedLabel}'s ${shapeText(s.shape)}`;
  }
  return null;
}
