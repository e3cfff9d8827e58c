// Finds the tensors of an ONNX model whose data lives outside the model file (TensorProto
// data_location = EXTERNAL, or external_data entries such as `location=weights.bin`). onnxruntime
// reads such data from a file named by the model, relative to the model's folder or, for a model
// loaded from bytes, to the process's working directory: bytes that no sha256 of the artifact
// covers, chosen by whoever wrote the model. The registry refuses these models, and every load
// checks again.
//
// The protobuf wire format is walked directly, following only the fields that can lead to a
// TensorProto, with field numbers from onnx.proto as onnxruntime reads it (newer than the
// onnx-proto package, which drops fields it does not know, such as FunctionProto.attribute_proto).
// Tensor data itself is skipped by its length, never copied. Every occurrence of a field is
// visited, so a message split over several occurrences (which protobuf merges) is still seen.

import { externalDataRefused, modelInvalid } from '../errors.js';

export interface ExternalTensor {
  /** The tensor's name ('' for an unnamed attribute tensor). */
  readonly name: string;
  /** Where it sits in the model, e.g. "initializer of the main graph". */
  readonly where: string;
  /** Its external_data `location`, '' when it has none. */
  readonly location: string;
}

type Kind = 'model' | 'graph' | 'node' | 'attribute' | 'tensor' | 'sparse' | 'training' | 'function' | 'entry';

// Message kind -> field number -> kind of the embedded message.
const CHILDREN: Readonly<Record<Kind, Readonly<Record<number, Kind>>>> = {
  // graph, training_info, functions
  model: { 7: 'graph', 20: 'training', 25: 'function' },
  // node, initializer, sparse_initializer
  graph: { 1: 'node', 5: 'tensor', 15: 'sparse' },
  // attribute
  node: { 5: 'attribute' },
  // t, g, tensors, graphs, sparse_tensor, sparse_tensors
  attribute: { 5: 'tensor', 6: 'graph', 10: 'tensor', 11: 'graph', 22: 'sparse', 23: 'sparse' },
  // external_data
  tensor: { 13: 'entry' },
  // values, indices
  sparse: { 1: 'tensor', 2: 'tensor' },
  // initialization, algorithm
  training: { 1: 'graph', 2: 'graph' },
  // node, attribute_proto (default attribute values, which may hold tensors)
  function: { 7: 'node', 11: 'attribute' },
  entry: {},
};

// Message kind -> field number of the string fields used to describe where a tensor sits.
const NAMES: Readonly<Record<Kind, Readonly<Record<number, string>>>> = {
  model: {},
  graph: { 2: 'name' },
  node: { 3: 'name', 4: 'opType' },
  attribute: { 1: 'name' },
  tensor: { 8: 'name' },
  sparse: {},
  training: {},
  function: { 1: 'name' },
  entry: { 1: 'key', 2: 'value' },
};

const TENSOR_DATA_LOCATION = 14;
/** Deeper nesting than protobuf's own default recursion limit is not a model onnxruntime loads. */
const MAX_DEPTH = 100;

interface Scanned {
  readonly strings: Record<string, string>;
  readonly children: { field: number; kind: Kind; start: number; end: number }[];
  /** TensorProto only: a data_location other than DEFAULT was seen. */
  external: boolean;
}

class Malformed extends Error {}

/**
 * Every tensor in the model whose data is stored outside the file, in the main graph, every
 * subgraph (If/Loop/Scan attributes), sparse initializers, Constant and other attribute tensors,
 * functions and training graphs. Throws MODEL_INVALID when the bytes are not well-formed protobuf.
 */
export function findExternalData(bytes: Uint8Array): ExternalTensor[] {
  const found: ExternalTensor[] = [];
  try {
    visit(bytes, 0, bytes.length, 'model', () => 'the model', 0, found);
  } catch (e) {
    if (e instanceof Malformed) throw modelInvalid(`the model is not well-formed protobuf: ${e.message}`);
    throw e;
  }
  return found;
}

type Label = (names: Readonly<Record<string, string>>) => string;

function visit(bytes: Uint8Array, start: number, end: number, kind: Kind, label: Label, depth: number, found: ExternalTensor[]): void {
  if (depth > MAX_DEPTH) throw new Malformed(`messages are nested more than ${MAX_DEPTH} deep`);
  const m = scan(bytes, start, end, kind);
  const where = label(m.strings);
  if (kind === 'tensor') {
    const entries = m.children.map((c) => scan(bytes, c.start, c.end, 'entry').strings);
    if (m.external || entries.length > 0) {
      found.push({ name: m.strings.name ?? '', where, location: entries.find((e) => e.key === 'location')?.value ?? '' });
    }
    return;
  }
  for (const c of m.children) visit(bytes, c.start, c.end, c.kind, childLabel(kind, c, where), depth + 1, found);
}

/** How a child message says where it sits, from its parent's description and its own names. */
function childLabel(kind: Kind, c: Scanned['children'][number], where: string): Label {
  const node: Label = (n) => `node '${n.name ?? ''}' (${n.opType ?? '?'}) of ${where}`;
  switch (kind) {
    case 'model':
      if (c.kind === 'graph') return () => 'the main graph';
      if (c.kind === 'training') return () => 'the training info';
      return (n) => `function '${n.name ?? ''}'`;
    case 'graph':
      if (c.kind === 'node') return node;
      return () => `${c.kind === 'sparse' ? 'sparse initializer' : 'initializer'} of ${where}`;
    case 'node':
      return (n) => `attribute '${n.name ?? ''}' of ${where}`;
    case 'attribute':
      if (c.kind === 'graph') return (n) => `graph '${n.name ?? ''}' in ${where}`;
      return () => (c.kind === 'sparse' ? `sparse tensor in ${where}` : where);
    case 'sparse':
      return () => `${c.field === 1 ? 'values' : 'indices'} of the ${where}`;
    case 'training':
      return (n) => `${c.field === 1 ? 'initialization' : 'algorithm'} graph '${n.name ?? ''}' of ${where}`;
    case 'function':
      if (c.kind === 'node') return node;
      return (n) => `default of attribute '${n.name ?? ''}' of ${where}`;
    default:
      return () => where;
  }
}

const utf8 = new TextDecoder();

/** One message's fields: the names we describe with, and the embedded messages to follow. */
function scan(bytes: Uint8Array, start: number, end: number, kind: Kind): Scanned {
  const out: Scanned = { strings: {}, children: [], external: false };
  const children = CHILDREN[kind];
  const names = NAMES[kind];
  let pos = start;
  while (pos < end) {
    const [key, afterKey] = varint(bytes, pos, end);
    pos = afterKey;
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) throw new Malformed(`field number 0 at byte ${pos}`);
    switch (wire) {
      case 0: {
        const from = pos;
        pos = varint(bytes, pos, end)[1];
        // Any non-zero value: onnxruntime reads the enum as 32 bits, so even a value that is 1 only
        // in its low bits means EXTERNAL; erring on the side of "external" refuses nothing real.
        if (kind === 'tensor' && field === TENSOR_DATA_LOCATION) {
          for (let i = from; i < pos; i++) if ((bytes[i]! & 0x7f) !== 0) out.external = true;
        }
        break;
      }
      case 1:
        pos += 8;
        break;
      case 5:
        pos += 4;
        break;
      case 2: {
        const [length, at] = varint(bytes, pos, end);
        if (length > end - at) throw new Malformed(`a field of ${length} bytes runs past the end of its message at byte ${at}`);
        const child = children[field];
        if (child !== undefined) out.children.push({ field, kind: child, start: at, end: at + length });
        const name = names[field];
        if (name !== undefined) out.strings[name] = utf8.decode(bytes.subarray(at, at + length));
        pos = at + length;
        break;
      }
      case 3:
        pos = skipGroup(bytes, pos, end, field, 0);
        break;
      default:
        throw new Malformed(`wire type ${wire} at byte ${pos}`);
    }
    if (pos > end) throw new Malformed(`a field runs past the end of its message at byte ${pos}`);
  }
  return out;
}

/** Skips a (deprecated) group up to its matching end tag; returns the position after it. */
function skipGroup(bytes: Uint8Array, pos: number, end: number, field: number, depth: number): number {
  if (depth > MAX_DEPTH) throw new Malformed(`groups are nested more than ${MAX_DEPTH} deep`);
  while (pos < end) {
    const [key, afterKey] = varint(bytes, pos, end);
    pos = afterKey;
    const wire = key % 8;
    if (wire === 4) {
      if (Math.floor(key / 8) !== field) throw new Malformed(`a group ends with the wrong field number at byte ${pos}`);
      return pos;
    }
    if (wire === 0) pos = varint(bytes, pos, end)[1];
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const [length, at] = varint(bytes, pos, end);
      pos = at + length;
    } else if (wire === 3) pos = skipGroup(bytes, pos, end, Math.floor(key / 8), depth + 1);
    else throw new Malformed(`wire type ${wire} at byte ${pos}`);
  }
  throw new Malformed('a group is never closed');
}

/** A base-128 varint at pos: [value, position after it]. Exact up to 2^53, which covers every length and key. */
function varint(bytes: Uint8Array, pos: number, end: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new Malformed(`a varint runs past the end of its message at byte ${pos}`);
    const b = bytes[pos++]!;
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) return [value, pos];
    scale *= 128;
  }
  throw new Malformed(`a varint is longer than 10 bytes at byte ${pos}`);
}

/** Throws EXTERNAL_DATA (422) naming the tensors when the model keeps any tensor's data outside the file. */
export function refuseExternalData(bytes: Uint8Array, source: string): void {
  const found = findExternalData(bytes);
  if (found.length === 0) return;
  const SHOWN = 3;
  const named = found
    .slice(0, SHOWN)
    .map((t) => `tensor ${t.name === '' ? '(unnamed)' : `'${t.name}'`} (${t.where})${t.location === '' ? '' : ` at '${t.location}'`}`);
  if (found.length > SHOWN) named.push(`and ${found.length - SHOWN} more`);
  throw externalDataRefused(source, found.length, named.join('; '));
}
