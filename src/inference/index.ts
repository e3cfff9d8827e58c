// Inference: loads model versions onto a lane (the piscina worker pool, or inline on the calling
// thread), gives each a DynamicBatcher, warms them up, tracks readiness, and answers "which loaded
// version is this request for". A model whose largest batch runs faster than the cross-thread hop
// costs (inlineBelowMicros) is served inline even when workers exist: for tiny models the hop is
// the bill. Protocol code above decodes requests into batches; nothing here knows HTTP.

export { LoadedModel, type ModelSource, type ModelState } from './model.js';
export type { PendingRequest, Batch, BatchObserver } from './batcher.js';
export type { RunResult, TensorPayload } from './session.js';
export type { TensorSpec, OnnxMetadata } from '../onnx/index.js';
export { readOnnxMetadata } from '../onnx/index.js';
export * from './tensor.js';
export { PoolExecutor, InlineExecutor, ModelRunError } from './executor.js';
export { InferenceEngine, type EngineOptions, type Lane } from './engine.js';
