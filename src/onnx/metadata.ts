// Reads a model's signature (input/output names, datatypes, shapes with -1 for dynamic dims) and
// descriptive metadata from the ONNX protobuf itself, so the registry and the server know a model's
// contract before any onnxruntime session exists and judge a file by its content, not its name.

import onnxProto from 'onnx-proto';
import { modelInvalid } from '../errors.js';

const { onnx } = onnxProto;

/** Tensor element types as the Open Inference Protocol names them. */
export type Datatype =
  | 'BOOL'
  | 'UINT8'
  | 'INT8'
  | 'UINT16'
  | 'INT16'
  | 'UINT32'
  | 'INT32'
  | 'UINT64'
  | 'INT64'
  | 'FP16'
  | 'FP32'
  | 'FP64'
  | 'BYTES';

export interface TensorSpec {
  readonly name: string;
  readonly datatype: Datatype;
  /** Dimensions; -1 where the model leaves a dimension dynamic. */
  readonly shape: readonly number[];
}

export interface OnnxMetadata {
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  readonly irVersion: number;
  readonly opsets: Readonly<Record<string, number>>;
  readonly producer: string;
  readonly props: Readonly<Record<string, string>>;
}

// onnx.TensorProto.DataType -> OIP datatype
const ELEM_TYPES: Record<number, Datatype> = {
  1: 'FP32',
  2: 'UINT8',
  3: 'INT8',
  4: 'UINT16',
  5: 'INT16',
  6: 'INT32',
  7: 'INT64',
  8: 'BYTES',
  9: 'BOOL',
  10: 'FP16',
  11: 'FP64',
  12: 'UINT32',
  13: 'UINT64',
};

type LongLike = number | { toNumber(): number } | null | undefined;
const toNumber = (v: LongLike): number => (v == null ? 0 : typeof v === 'number' ? v : v.toNumber());

export function readOnnxMetadata(bytes: Uint8Array, source = 'model'): OnnxMetadata {
  let model: InstanceType<typeof onnx.ModelProto>;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw modelInvalid(`${source} is not an ONNX model: ${(e as Error).message}`);
  }
  const graph = model.graph;
  if (!graph?.output || graph.output.length === 0) {
    throw modelInvalid(`${source} is not an ONNX model: it has no graph outputs`);
  }
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  const spec = (v: onnxProto.onnx.IValueInfoProto, kind: string): TensorSpec => {
    const tt = v.type?.tensorType;
    const name = v.name ?? '';
    if (!tt) throw modelInvalid(`${source}: ${kind} '${name}' is not a tensor (sequences and maps are not supported)`);
    const datatype = ELEM_TYPES[tt.elemType ?? 0];
    if (!datatype) throw modelInvalid(`${source}: ${kind} '${name}' has unsupported element type ${tt.elemType}`);
    const dims = tt.shape?.dim ?? [];
    const shape = dims.map((d) => {
      const value = toNumber(d.dimValue as LongLike);
      return d.dimParam || !(value > 0) ? -1 : value;
    });
    return { name, datatype, shape };
  };
  const inputs = (graph.input ?? []).filter((v) => !initializers.has(v.name ?? '')).map((v) => spec(v, 'input'));
  const outputs = graph.output.map((v) => spec(v, 'output'));
  const opsets: Record<string, number> = {};
  for (const o of model.opsetImport ?? []) opsets[o.domain || 'ai.onnx'] = toNumber(o.version as LongLike);
  const props: Record<string, string> = {};
  for (const p of model.metadataProps ?? []) if (p.key) props[p.key] = p.value ?? '';
  return {
    inputs,
    outputs,
    irVersion: toNumber(model.irVersion as LongLike),
    opsets,
    producer: [model.producerName, model.producerVersion].filter(Boolean).join(' '),
    props,
  };
}
