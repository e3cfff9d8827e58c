// onnxruntime-node's synchronous native session. The package's public InferenceSession wraps every
// run (and load) in a setImmediate and re-wraps every output, which costs a whole event-loop turn
// per batch; scoreline calls the binding the package itself wraps (onnxruntime-node 1.30, pinned),
// so a batch runs and answers in the same turn, in a worker and inline alike.

import { createRequire } from 'node:module';
import './ort-env.js';
import ort from 'onnxruntime-node';

const require = createRequire(import.meta.url);

export type OrtTensor = ort.Tensor;
export const Tensor = ort.Tensor;

export interface ValueMetadata {
  readonly name: string;
  readonly isTensor: boolean;
  readonly shape: readonly number[];
  readonly type: number;
}

export interface NativeSession {
  loadModel(buffer: ArrayBufferLike, byteOffset: number, byteLength: number, options: ort.InferenceSession.SessionOptions): void;
  readonly inputMetadata: readonly ValueMetadata[];
  readonly outputMetadata: readonly ValueMetadata[];
  run(
    feeds: Record<string, ort.Tensor>,
    fetches: Record<string, null>,
    options: ort.InferenceSession.RunOptions,
  ): Record<string, ort.Tensor>;
  dispose(): void;
}

interface Binding {
  binding: { InferenceSession: new () => NativeSession };
  initOrt(): void;
}

let loaded: Binding | undefined;

export function createNativeSession(bytes: Uint8Array, options: ort.InferenceSession.SessionOptions): NativeSession {
  if (loaded === undefined) {
    loaded = require('onnxruntime-node/dist/binding.js') as Binding;
    loaded.initOrt();
  }
  const s = new loaded.binding.InferenceSession();
  s.loadModel(bytes.buffer, bytes.byteOffset, bytes.byteLength, options);
  return s;
}
