// Values of ONNX node attributes and constant tensors as numbers: what the graph reader needs from
// the decoded protobuf (onnx-proto), whatever form a converter chose (raw little-endian bytes or
// typed fields, float lists or their `_as_tensor` forms).

import onnxProto from 'onnx-proto';
import { Unsupported } from './tree-model.js';

const { onnx } = onnxProto;
export type AttributeProto = onnxProto.onnx.IAttributeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
/** A node's attributes by name. */
export type Attributes = ReadonlyMap<string, AttributeProto>;

type LongLike = number | { toNumber(): number } | null | undefined;
export const num = (v: unknown): number => {
  const l = v as LongLike;
  return l == null ? 0 : typeof l === 'number' ? l : l.toNumber();
};
export const text = (b: Uint8Array | null | undefined): string => (b == null ? '' : new TextDecoder().decode(b));

/** A tensor's elements as float64 (float, double, int32 or int64 tensors). */
export function tensorData(t: TensorProto): Float64Array {
  const DT = onnx.TensorProto.DataType;
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : null;
  const view = raw ? new DataView(raw.buffer, raw.byteOffset, raw.byteLength) : null;
  switch (t.dataType) {
    case DT.FLOAT:
      return view
        ? Float64Array.from({ length: view.byteLength / 4 }, (_, i) => view.getFloat32(i * 4, true))
        : Float64Array.from(t.floatData ?? []);
    case DT.DOUBLE:
      return view
        ? Float64Array.from({ length: view.byteLength / 8 }, (_, i) => view.getFloat64(i * 8, true))
        : Float64Array.from(t.doubleData ?? []);
    case DT.INT64:
      return view
        ? Float64Array.from({ length: view.byteLength / 8 }, (_, i) => Number(view.getBigInt64(i * 8, true)))
        : Float64Array.from((t.int64Data ?? []).map(num));
    case DT.INT32:
      return view
        ? Float64Array.from({ length: view.byteLength / 4 }, (_, i) => view.getInt32(i * 4, true))
        : Float64Array.from(t.int32Data ?? []);
    default:
      throw new Unsupported(`a constant of element type ${t.dataType}`);
  }
}

export function tensorDims(t: TensorProto): number[] {
  return (t.dims ?? []).map(num);
}

export function floats(attrs: Attributes, name: string): number[] {
  return [...(attrs.get(name)?.floats ?? [])];
}

export function ints(attrs: Attributes, name: string): number[] {
  return (attrs.get(name)?.ints ?? []).map(num);
}

export function strings(attrs: Attributes, name: string): string[] {
  return (attrs.get(name)?.strings ?? []).map(text);
}

/** A float list attribute, or its `<name>_as_tensor` form (ai.onnx.ml opset 3). */
export function floatsOrTensor(attrs: Attributes, name: string): number[] {
  const t = attrs.get(`${name}_as_tensor`)?.t;
  return t ? [...tensorData(t)] : floats(attrs, name);
}
