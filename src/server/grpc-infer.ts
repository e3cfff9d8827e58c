// ModelInfer of the Open Inference Protocol over gRPC as a Protocol of the one inference step: a
// ModelInferRequest (as grpc-codec.ts reads it, in @grpc/proto-loader's shape: snake_case fields,
// int64 as decimal strings)
// is checked with the same rules as OIP JSON (checkInputs: names, datatypes, shapes, batch size;
// value ranges by the shared tensor writers) and decoded straight into the version's open batch,
// from typed `contents` or from `raw_input_contents`; an answer is a ModelInferResponse with typed
// contents, or `raw_output_contents` when the request came raw (as Triton does: a client that sends
// raw bytes reads raw bytes). Raw tensors are flat, row-major and little-endian; a BYTES element is
// a 4-byte little-endian length and that many bytes.

import { endianness } from 'node:os';
import { badRequest, signatureMismatch } from '../errors.js';
import {
  checkRawValues,
  datatypeInfo,
  elementCount,
  isStringTensor,
  writeElement,
  writeInt64Element,
  writeTensorData,
  type Datatype,
  type LoadedModel,
  type RunResult,
  type TensorData,
  type TensorPayload,
} from '../inference/index.js';
import { checkInputs, reserveFor, selectOutputs, type DecodedRequest } from './decode.js';
import type { Answering, Protocol } from './inference.js';

/** InferTensorContents: one repeated field per family of datatypes (int64 as decimal strings). */
export interface TensorContents {
  bool_contents?: boolean[];
  int_contents?: number[];
  int64_contents?: (string | number)[];
  uint_contents?: number[];
  uint64_contents?: (string | number)[];
  fp32_contents?: number[];
  fp64_contents?: number[];
  bytes_contents?: Uint8Array[];
}

export interface ModelInferRequest {
  model_name?: string;
  model_version?: string;
  id?: string;
  inputs?: { name?: string; datatype?: string; shape?: (string | number)[]; contents?: TensorContents | null }[];
  outputs?: { name?: string }[];
  raw_input_contents?: Uint8Array[];
}

export interface ModelInferResponse {
  model_name: string;
  model_version: string;
  id: string;
  outputs: { name: string; datatype: string; shape: number[]; contents?: TensorContents }[];
  raw_output_contents?: Uint8Array[];
}

/** The typed-contents field of each datatype (FP16 exists only as raw content, and is refused at load). */
const FIELD: Partial<Record<Datatype, keyof TensorContents>> = {
  BOOL: 'bool_contents',
  INT8: 'int_contents',
  INT16: 'int_contents',
  INT32: 'int_contents',
  INT64: 'int64_contents',
  UINT8: 'uint_contents',
  UINT16: 'uint_contents',
  UINT32: 'uint_contents',
  UINT64: 'uint64_contents',
  FP32: 'fp32_contents',
  FP64: 'fp64_contents',
  BYTES: 'bytes_contents',
};

const FIELDS = Object.keys({
  bool_contents: 0,
  int_contents: 0,
  int64_contents: 0,
  uint_contents: 0,
  uint64_contents: 0,
  fp32_contents: 0,
  fp64_contents: 0,
  bytes_contents: 0,
} satisfies Record<keyof TensorContents, 0>) as (keyof TensorContents)[];

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A dimension as protobuf gives an int64 (a decimal string); anything else is NaN, which the shape check refuses. */
const dimension = (d: string | number): number => (typeof d === 'number' ? d : /^-?[0-9]+$/.test(d) ? Number(d) : NaN);

function utf8Of(bytes: Uint8Array, where: string, k: number): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw badRequest(`${where}: element ${k} is not valid UTF-8 (BYTES inputs are text: the model takes strings)`);
  }
}

/** Elements of a raw BYTES tensor: each a 4-byte little-endian length, then that many bytes. */
export function splitRawBytes(raw: Uint8Array, where: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let at = 0;
  while (at < raw.byteLength) {
    if (at + 4 > raw.byteLength) throw badRequest(`${where}: raw BYTES content ends inside the length of element ${out.length}`);
    const n = view.getUint32(at, true);
    at += 4;
    if (at + n > raw.byteLength)
      throw badRequest(`${where}: raw BYTES element ${out.length} declares ${n} bytes but only ${raw.byteLength - at} remain`);
    out.push(raw.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** Strings as a raw BYTES tensor: each a 4-byte little-endian length, then its UTF-8 bytes. */
export function joinRawBytes(values: readonly string[]): Buffer {
  const parts = values.map((v) => Buffer.from(v, 'utf8'));
  const out = Buffer.allocUnsafe(parts.reduce((n, p) => n + 4 + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.writeUInt32LE(p.length, at);
    p.copy(out, at + 4);
    at += 4 + p.length;
  }
  return out;
}

interface Source {
  /** Values of the datatype's typed field, or the elements of a raw BYTES tensor. */
  readonly values: readonly unknown[] | null;
  /** Raw bytes of a numeric tensor. */
  readonly raw: Uint8Array | null;
}

/**
 * Where each model input's data is, with its element count checked against its shape before any
 * batch is reserved, so a shape that claims more than the message holds reserves nothing.
 */
function sources(model: LoadedModel, req: ModelInferRequest, order: readonly number[], shapes: readonly number[][]): Source[] {
  const inputs = req.inputs!;
  const raws = req.raw_input_contents ?? [];
  const useRaw = raws.length > 0;
  if (useRaw && raws.length !== inputs.length) {
    throw badRequest(
      `raw_input_contents has ${raws.length} entries for ${inputs.length} inputs; send one per input, in the order of "inputs"`,
    );
  }
  return model.inputs.map((spec, i) => {
    const k = order[i]!;
    const where = `input '${spec.name}'`;
    const expected = elementCount(shapes[i]!);
    const contents = inputs[k]!.contents;
    const given = contents ? FIELDS.filter((f) => (contents[f]?.length ?? 0) > 0) : [];
    if (useRaw) {
      if (given.length > 0) throw badRequest(`${where}: has contents while the request uses raw_input_contents; send every input one way`);
      const raw = raws[k]!;
      if (spec.datatype === 'BYTES') {
        const values = splitRawBytes(raw, where);
        if (values.length !== expected)
          throw badRequest(
            `${where}: raw content holds ${values.length} BYTES elements but the shape [${shapes[i]!.join(', ')}] needs ${expected}`,
          );
        return { values, raw: null };
      }
      const size = datatypeInfo(spec.datatype).bytes;
      if (raw.byteLength !== expected * size) {
        throw badRequest(
          `${where}: raw content has ${raw.byteLength} bytes but the shape [${shapes[i]!.join(', ')}] of ${spec.datatype} needs ${expected * size}`,
        );
      }
      return { values: null, raw };
    }
    const field = FIELD[spec.datatype]!;
    const wrong = given.find((f) => f !== field);
    if (wrong !== undefined) throw badRequest(`${where}: ${spec.datatype} data goes in contents.${field}, not contents.${wrong}`);
    const values = (contents?.[field] ?? []) as readonly unknown[];
    if (values.length !== expected)
      throw badRequest(
        `${where}: contents.${field} has ${values.length} values but the shape [${shapes[i]!.join(', ')}] needs ${expected}`,
      );
    return { values, raw: null };
  });
}

/** Writes one input's data at `offset` of its batch buffer, checking every value against the datatype. */
function write(dt: Datatype, src: Source, target: TensorData, offset: number, shape: readonly number[], where: string): void {
  if (src.raw !== null) {
    const t = target as Exclude<TensorData, string[]>;
    const bytes = datatypeInfo(dt).bytes;
    new Uint8Array(t.buffer, t.byteOffset + offset * bytes, src.raw.byteLength).set(src.raw);
    checkRawValues(t, dt, offset, offset + src.raw.byteLength / bytes, where);
    return;
  }
  const values = src.values!;
  if (dt === 'BYTES') {
    for (let k = 0; k < values.length; k++) writeElement(utf8Of(values[k] as Uint8Array, where, k), dt, target, offset + k, where);
  } else if (dt === 'INT64' || dt === 'UINT64') {
    for (let k = 0; k < values.length; k++) writeInt64Element(values[k] as string, dt, target, offset + k, where);
  } else {
    writeTensorData(values, dt, target, offset, shape, where);
  }
}

/** Decodes a ModelInferRequest into the version's open batch (nothing committed). */
export function decodeGrpc(model: LoadedModel, req: ModelInferRequest): DecodedRequest {
  const inputs = req.inputs ?? [];
  if (inputs.length === 0) throw badRequest('"inputs" must hold at least one tensor');
  const checked = checkInputs(
    model,
    inputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: (t.shape ?? []).map(dimension) })),
  );
  const select = req.outputs === undefined || req.outputs.length === 0 ? null : selectOutputs(model, req.outputs);
  const src = sources(model, req, checked.order, checked.shapes);
  const batch = reserveFor(model, checked);
  const batcher = model.batcher;
  for (let i = 0; i < src.length; i++) {
    const spec = model.inputs[i]!;
    const per = batcher.rowElements(batch, i);
    write(spec.datatype, src[i]!, batch.buffers[i]!, batch.rows * per, checked.shapes[i]!, `input '${spec.name}'`);
  }
  return { batch, rows: checked.rows, id: req.id ? req.id : undefined, select };
}

/** Elements [start, end) of an output in its typed-contents field. */
function typedContents(o: TensorPayload, start: number, end: number): TensorContents {
  const data = o.data;
  if (isStringTensor(data)) return { bytes_contents: data.slice(start, end).map((s) => Buffer.from(s, 'utf8')) };
  const field = FIELD[o.datatype];
  if (field === undefined)
    throw signatureMismatch(`output '${o.name}' has datatype ${o.datatype}, which has no typed contents; ask for raw contents`);
  const view = data.subarray(start, end);
  if (o.datatype === 'BOOL') return { bool_contents: Array.from(view as Uint8Array, (v) => v !== 0) };
  if (o.datatype === 'INT64' || o.datatype === 'UINT64') return { [field]: Array.from(view as BigInt64Array, String) };
  return { [field]: Array.from(view as Float32Array) };
}

/** Elements [start, end) of an output as raw bytes (a view of the result: it is not reused after the answer). */
function rawContents(o: TensorPayload, start: number, end: number): Uint8Array {
  const data = o.data;
  if (isStringTensor(data)) return joinRawBytes(data.slice(start, end));
  const size = data.BYTES_PER_ELEMENT;
  return Buffer.from(data.buffer, data.byteOffset + start * size, (end - start) * size);
}

/** The response for rows [rowStart, rowStart + rows) of a finished batch. */
export function encodeGrpc(model: LoadedModel, result: RunResult, rowStart: number, a: Answering<ModelInferRequest>): ModelInferResponse {
  const outs = result.outputs;
  const select = a.decoded.select;
  const raw = (a.input.raw_input_contents?.length ?? 0) > 0;
  const outputs: ModelInferResponse['outputs'] = [];
  const rawOut: Uint8Array[] = [];
  const n = select === null ? outs.length : select.length;
  for (let k = 0; k < n; k++) {
    const o = outs[select === null ? k : select[k]!]!;
    let start = 0;
    let end = o.data.length;
    let shape = o.dims as number[];
    if (model.batchable) {
      const per = elementCount(o.dims.slice(1));
      start = rowStart * per;
      end = start + a.decoded.rows * per;
      shape = [a.decoded.rows, ...o.dims.slice(1)];
    }
    if (raw) {
      outputs.push({ name: o.name, datatype: o.datatype, shape });
      rawOut.push(rawContents(o, start, end));
    } else {
      outputs.push({ name: o.name, datatype: o.datatype, shape, contents: typedContents(o, start, end) });
    }
  }
  const res: ModelInferResponse = { model_name: model.name, model_version: model.version, id: a.requestId, outputs };
  if (raw) res.raw_output_contents = rawOut;
  return res;
}

/** OIP ModelInfer over gRPC. */
export const GRPC_INFER: Protocol<ModelInferRequest, ModelInferResponse> = {
  route: 'grpc',
  decode: decodeGrpc,
  encode: encodeGrpc,
  shadow: decodeGrpc,
};

/** Raw tensor contents are little-endian; the typed arrays they are copied into have the host's order. */
export function checkHostOrder(): void {
  if (endianness() !== 'LE')
    throw new Error('OIP raw tensor contents are little-endian; this host is big-endian, which scoreline does not support');
}
