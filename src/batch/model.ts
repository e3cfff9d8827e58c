// The model a batch run scores with: a NAME[@VERSION|@ALIAS] reference resolved in the registry, its
// artifact verified, and its contract checked for batch scoring (one 2-D input whose columns come
// from model.yaml `features` or from the file; outputs with a batch dimension), then the session spec
// the workers load it from.

import type { ModelConfig } from '../config.js';
import { badRequest, modelInvalid } from '../errors.js';
import type { TensorSpec } from '../inference/index.js';
import type { SessionSpec } from '../inference/session.js';
import { LATEST } from '../registry/index.js';
import type { Registry } from '../store/index.js';
import { cellType, type CellType } from './cells.js';

export interface ModelRef {
  readonly name: string;
  /** A version number, an alias, or `latest` when the reference names none. */
  readonly ref: string;
}

/** `NAME`, `NAME@3` or `NAME@champion`; model names cannot hold '@'. */
export function parseModelRef(text: string): ModelRef {
  const at = text.indexOf('@');
  const name = at < 0 ? text : text.slice(0, at);
  const ref = at < 0 ? LATEST : text.slice(at + 1);
  if (name === '' || ref === '') throw badRequest(`'${text}' is not a model reference: use NAME, NAME@VERSION or NAME@ALIAS`);
  return { name, ref };
}

export interface BatchModel {
  readonly name: string;
  readonly version: number;
  readonly sha256: string;
  /** The verified artifact in the registry's store. */
  readonly path: string;
  readonly input: TensorSpec;
  readonly type: CellType;
  /** model.yaml `features`, or null: then the file's columns are the input's, in file order. */
  readonly features: readonly string[] | null;
  /** Input width: the features' count, else shape[1] (-1 when dynamic). */
  readonly width: number;
  readonly outputs: readonly TensorSpec[];
  /** Rows per batch: as asked, or 1 for a model whose batch dimension is fixed at 1. */
  readonly batchRows: number;
}

export async function resolveBatchModel(registry: Registry, reference: string, batchRows: number): Promise<BatchModel> {
  const { name, ref } = parseModelRef(reference);
  const resolved = await registry.resolve(name, ref);
  // Re-hashes the artifact (and gives a verified local file): a tampered or missing one stops the run here, before any worker starts.
  const { record, path } = await registry.artifactFile(name, resolved.version);
  const where = `model '${name}' version ${record.version}`;
  const { inputs, outputs } = record.signature;
  if (inputs.length !== 1 || inputs[0]!.shape.length !== 2) {
    throw modelInvalid(
      `${where} cannot be batch scored: batch scoring feeds one 2-D input (rows x columns), and this model has ` +
        `${inputs.length} input${inputs.length === 1 ? ` of rank ${inputs[0]!.shape.length}` : 's'}`,
    );
  }
  const input = inputs[0]!;
  const type = cellType(input.datatype);
  if (type === undefined)
    throw modelInvalid(`${where}: input '${input.name}' has datatype ${input.datatype}, which batch scoring cannot fill from text`);
  const [rowsDim, widthDim] = input.shape as [number, number];
  if (rowsDim !== -1 && rowsDim !== 1) {
    throw modelInvalid(
      `${where}: input '${input.name}' has a fixed batch dimension of ${rowsDim}; batch scoring needs a dynamic one (or 1)`,
    );
  }
  const features = featuresOf(record.config as ModelConfig, where);
  if (features !== null && widthDim > 0 && widthDim !== features.length) {
    throw modelInvalid(`${where}: model.yaml lists ${features.length} features but input '${input.name}' has ${widthDim} columns`);
  }
  for (const o of outputs) {
    if (o.shape.length === 0 || (o.shape[0] !== -1 && o.shape[0] !== 1)) {
      throw modelInvalid(
        `${where}: output '${o.name}' has no batch dimension (shape [${o.shape.join(', ')}]), so its values cannot be given per row`,
      );
    }
    if (o.datatype === 'BYTES' || o.datatype === 'FP16')
      throw modelInvalid(`${where}: output '${o.name}' has datatype ${o.datatype}, which batch scoring cannot write`);
  }
  return {
    name,
    version: record.version,
    sha256: record.sha256,
    path,
    input,
    type,
    features,
    width: features?.length ?? widthDim,
    outputs,
    batchRows: rowsDim === 1 ? 1 : batchRows,
  };
}

function featuresOf(config: ModelConfig, where: string): readonly string[] | null {
  const f = config.features as unknown;
  if (f === undefined || f === null) return null;
  if (!Array.isArray(f) || f.length === 0 || !f.every((n) => typeof n === 'string' && n !== '') || new Set(f).size !== f.length) {
    throw modelInvalid(`${where}: model.yaml 'features' must be a list of distinct column names`);
  }
  return f as string[];
}

/** What each worker loads: the verified artifact, warmed up at one row and at a full batch. */
export function sessionSpec(model: BatchModel, width: number): SessionSpec {
  return {
    key: `batch:${model.name}:${model.version}:${model.sha256}`,
    path: model.path,
    sha256: model.sha256,
    intraOpThreads: 1,
    warmup: {
      inputs: [{ name: model.input.name, datatype: model.input.datatype, shape: [-1, width] }],
      sizes: model.batchRows > 1 ? [1, model.batchRows] : [1],
    },
  };
}
