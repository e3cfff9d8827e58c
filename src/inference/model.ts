// A loaded model version: its signature (from the ONNX file), batching settings, its batcher and
// its readiness. Also what the protocols need precomputed: input/output lookups, the named-feature
// column mapping from model.yaml, and the JSON prefix every response of this version starts with.

import type { BatchingConfig, ModelConfig } from '../config.js';
import { modelInvalid } from '../errors.js';
import type { DynamicBatcher } from './batcher.js';
import type { OnnxMetadata, TensorSpec } from '../onnx/index.js';
import { isSupported } from './tensor.js';

export type ModelState = 'loading' | 'ready' | 'failed' | 'unloaded';

export interface ModelSource {
  readonly name: string;
  readonly version: number;
  readonly path: string;
  readonly sha256: string;
  readonly config: ModelConfig;
}

/**
 * model.yaml `features`: the columns of the model's inputs, named, in input order. Feature j is
 * column `column[j]` of input `input[j]`; a feature of a BYTES input is a category (a string).
 */
export interface FeatureColumns {
  readonly names: readonly string[];
  readonly index: ReadonlyMap<string, number>;
  readonly input: readonly number[];
  readonly column: readonly number[];
  readonly categorical: readonly boolean[];
  /** True when every feature is a column of the single input (the common, fast case). */
  readonly single: boolean;
}

export class LoadedModel {
  readonly name: string;
  readonly version: string;
  readonly versionNumber: number;
  readonly sha256: string;
  readonly path: string;
  readonly config: ModelConfig;
  readonly metadata: OnnxMetadata;
  readonly batching: BatchingConfig;
  /** True when every input's first dimension is dynamic, so requests can be stacked. */
  readonly batchable: boolean;
  readonly inputIndex: ReadonlyMap<string, number>;
  readonly outputIndex: ReadonlyMap<string, number>;
  readonly features: FeatureColumns | null;
  /** `{"model_name":...,"model_version":...` — the start of every OIP response of this version. */
  readonly oipPrefix: string;
  /** `{"name":...,"datatype":...,"shape":[` per output, in output order. */
  readonly outputHeads: readonly string[];
  /** The output holding the score and its column (null: the last column), per model.yaml `score`. */
  readonly scoreOutput: { readonly output: number; readonly column: number | null };
  state: ModelState = 'loading';
  /** Where its batches run, decided at load. */
  placement: 'pool' | 'inline' = 'pool';
  /** Median time of its largest warm-up batch, in microseconds. */
  batchMicros = 0;
  /** What runs its batches: onnxruntime, or the tree engine (verified against onnxruntime at load). */
  engine: 'onnxruntime' | 'trees' = 'onnxruntime';
  /** Why onnxruntime and not the tree engine, when there is a reason worth telling. */
  engineNote: string | null = null;
  error: string | null = null;
  loadedAt = 0;
  batcher!: DynamicBatcher;

  constructor(src: ModelSource, metadata: OnnxMetadata, defaults: BatchingConfig) {
    this.name = src.name;
    this.versionNumber = src.version;
    this.version = String(src.version);
    this.sha256 = src.sha256;
    this.path = src.path;
    this.config = src.config;
    this.metadata = metadata;
    const where = `model '${src.name}' version ${src.version}`;
    if (metadata.inputs.length === 0) throw modelInvalid(`${where} has no inputs`);
    for (const t of [...metadata.inputs, ...metadata.outputs]) {
      if (!isSupported(t.datatype)) throw modelInvalid(`${where}: tensor '${t.name}' has datatype ${t.datatype}, which is not supported`);
    }
    this.batchable = metadata.inputs.every((t) => t.shape.length > 0 && t.shape[0] === -1);
    this.batching = { ...defaults, ...(src.config.batching ?? {}) };
    if (!this.batchable) this.batching = { ...this.batching, maxBatchSize: 1 };
    this.inputIndex = new Map(metadata.inputs.map((t, i) => [t.name, i]));
    this.outputIndex = new Map(metadata.outputs.map((t, i) => [t.name, i]));
    this.features = src.config.features ? featureColumns(src.config.features, metadata.inputs, where) : null;
    this.oipPrefix = `{"model_name":${JSON.stringify(this.name)},"model_version":${JSON.stringify(this.version)}`;
    this.outputHeads = metadata.outputs.map((t) => `{"name":${JSON.stringify(t.name)},"datatype":"${t.datatype}","shape":[`);
    this.scoreOutput = scoreOutputOf(src.config, metadata.outputs, where);
  }

  get inputs(): readonly TensorSpec[] {
    return this.metadata.inputs;
  }

  get outputs(): readonly TensorSpec[] {
    return this.metadata.outputs;
  }

  /** Batch sizes warmed up before the version is ready: powers of two up to maxBatchSize, and it. */
  warmupSizes(): number[] {
    if (!this.batchable) return [1];
    const sizes: number[] = [];
    for (let s = 1; s < this.batching.maxBatchSize; s *= 2) sizes.push(s);
    sizes.push(this.batching.maxBatchSize);
    return sizes;
  }
}

/**
 * One input: rank 2, and as many columns as names (or a dynamic width). Several inputs (e.g. numeric
 * features FP32 [-1, 10] and a categorical BYTES [-1, 1]): each of rank 1 (one column) or rank 2
 * with a fixed width, the names spread over them in input order, so every name is one column.
 */
function featureColumns(names: readonly string[], inputs: readonly TensorSpec[], where: string): FeatureColumns {
  const input: number[] = [];
  const column: number[] = [];
  const categorical: boolean[] = [];
  if (inputs.length === 1) {
    const only = inputs[0]!;
    if (only.shape.length !== 2) {
      throw modelInvalid(
        `${where}: model.yaml lists features, so its input must be 2-D, or the features spread over several inputs (input '${only.name}' has rank ${only.shape.length})`,
      );
    }
    const width = only.shape[1]!;
    if (width !== -1 && width !== names.length) {
      throw modelInvalid(`${where}: model.yaml lists ${names.length} features but input '${only.name}' has ${width} columns`);
    }
    names.forEach((_, j) => {
      input.push(0);
      column.push(j);
      categorical.push(only.datatype === 'BYTES');
    });
  } else {
    inputs.forEach((t, i) => {
      const width = t.shape.length === 1 ? 1 : t.shape.length === 2 ? t.shape[1]! : -1;
      if (width < 1) {
        throw modelInvalid(
          `${where}: model.yaml lists features over ${inputs.length} inputs, so each must be [-1] or [-1, width] with a fixed width (input '${t.name}' is [${t.shape.join(', ')}])`,
        );
      }
      for (let c = 0; c < width; c++) {
        input.push(i);
        column.push(c);
        categorical.push(t.datatype === 'BYTES');
      }
    });
    if (input.length !== names.length) {
      const widths = inputs.map((t) => `'${t.name}' ${t.shape.length === 1 ? 1 : t.shape[1]}`).join(', ');
      throw modelInvalid(`${where}: model.yaml lists ${names.length} features but the inputs have ${input.length} columns (${widths})`);
    }
  }
  return { names, index: new Map(names.map((n, i) => [n, i])), input, column, categorical, single: inputs.length === 1 };
}

/** model.yaml `score`, else the output named `probabilities`, else the first floating-point output; last column. */
export function scoreOutputOf(
  config: ModelConfig,
  outputs: readonly TensorSpec[],
  where: string,
): { output: number; column: number | null } {
  if (config.score) {
    const i = outputs.findIndex((o) => o.name === config.score!.output);
    if (i < 0)
      throw modelInvalid(
        `${where}: model.yaml score.output '${config.score.output}' is not an output (${outputs.map((o) => o.name).join(', ')})`,
      );
    return { output: i, column: config.score.index ?? null };
  }
  const named = outputs.findIndex((o) => o.name === 'probabilities');
  if (named >= 0) return { output: named, column: null };
  const float = outputs.findIndex((o) => o.datatype === 'FP32' || o.datatype === 'FP64');
  return { output: Math.max(float, 0), column: null };
}
