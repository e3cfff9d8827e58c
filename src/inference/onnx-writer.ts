// ONNX model writer: a typed graph builder over onnx-proto that turns inputs, initializers, nodes
// and outputs into ModelProto bytes. It owns the mapping from Open Inference Protocol datatype
// names to ONNX element types and the little-endian encoding of initializer data (BYTES: ONNX
// strings, as UTF-8 string_data). Same calls in the same order give byte-identical files, so
// generated models can be checked in and hashed.
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type NodeProtoInit = onnxProto.onnx.INodeProto;
type AttributeProtoInit = onnxProto.onnx.IAttributeProto;
type TensorProtoInit = onnxProto.onnx.ITensorProto;
type ValueInfoProtoInit = onnxProto.onnx.IValueInfoProto;

/** Tensor element types, named as in the Open Inference Protocol (BYTES: ONNX STRING). */
export type TensorDatatype = 'FP32' | 'FP64' | 'INT32' | 'INT64' | 'BOOL' | 'BYTES';

/** Array that holds each datatype's elements (BOOL: one byte per element, 0 or 1; BYTES: strings). */
export interface TensorArrayOf {
  FP32: Float32Array;
  FP64: Float64Array;
  INT32: Int32Array;
  INT64: BigInt64Array;
  BOOL: Uint8Array;
  BYTES: readonly string[];
}
export type TensorData = TensorArrayOf[TensorDatatype];

/** A graph input/output dimension: a size, -1 for the dynamic batch dimension `N`, or a named symbol. */
export type Dimension = number | string;

/** A constant tensor, as used for tensor-valued node attributes. */
export interface TensorValue<D extends TensorDatatype = TensorDatatype> {
  datatype: D;
  dims: readonly number[];
  data: TensorArrayOf[D];
}

/** Explicit attribute forms, for when the JS value alone is ambiguous (e.g. `alpha: 1` meant as a float). */
export type ExplicitAttribute =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'string'; value: string }
  | { kind: 'strings'; value: readonly string[] }
  | { kind: 'tensor'; value: TensorValue };

/**
 * A node attribute. Inferred from the JS value: an integer number is INT, any other number FLOAT,
 * an array of integers INTS, any other number array FLOATS, a string STRING, a TensorValue TENSOR.
 */
export type AttributeValue = number | readonly number[] | string | TensorValue | ExplicitAttribute;

/** Constructors for the explicit attribute forms. */
export const attr = {
  int: (value: number): ExplicitAttribute => ({ kind: 'int', value }),
  float: (value: number): ExplicitAttribute => ({ kind: 'float', value }),
  ints: (value: readonly number[]): ExplicitAttribute => ({ kind: 'ints', value }),
  floats: (value: readonly number[]): ExplicitAttribute => ({ kind: 'floats', value }),
  string: (value: string): ExplicitAttribute => ({ kind: 'string', value }),
  strings: (value: readonly string[]): ExplicitAttribute => ({ kind: 'strings', value }),
  tensor: (value: TensorValue): ExplicitAttribute => ({ kind: 'tensor', value }),
};

export interface ModelBytesOptions {
  /** Opset of the default ONNX domain (default 17). */
  opset?: number;
  /** Opsets of other operator domains used by nodes, e.g. `{ 'ai.onnx.ml': 3 }`. */
  domainOpsets?: Readonly<Record<string, number>>;
  producer?: string;
  producerVersion?: string;
  modelVersion?: number;
  docString?: string;
  /** Written to metadata_props in insertion order. */
  metadata?: Readonly<Record<string, string>>;
}

export interface NodeOptions {
  /** Node name; defaults to `<opType>_<index>`. */
  name?: string;
  domain?: string;
}

export const IR_VERSION = 8;
export const DEFAULT_OPSET = 17;
/** dim_param written for a -1 dimension. */
export const DYNAMIC_DIM_PARAM = 'N';

const ELEMENT_TYPE: Readonly<Record<TensorDatatype, number>> = {
  FP32: onnx.TensorProto.DataType.FLOAT,
  FP64: onnx.TensorProto.DataType.DOUBLE,
  INT32: onnx.TensorProto.DataType.INT32,
  INT64: onnx.TensorProto.DataType.INT64,
  BOOL: onnx.TensorProto.DataType.BOOL,
  BYTES: onnx.TensorProto.DataType.STRING,
};

const ARRAY_NAME: Readonly<Record<TensorDatatype, string>> = {
  FP32: 'Float32Array',
  FP64: 'Float64Array',
  INT32: 'Int32Array',
  INT64: 'BigInt64Array',
  BOOL: 'Uint8Array',
  BYTES: 'array of strings',
};

export const TENSOR_DATATYPES: readonly TensorDatatype[] = ['FP32', 'FP64', 'INT32', 'INT64', 'BOOL', 'BYTES'];

/** The ONNX TensorProto.DataType number for an OIP datatype name. */
export function onnxElementType(datatype: TensorDatatype): number {
  return ELEMENT_TYPE[checkDatatype(datatype, 'datatype')];
}

function checkDatatype(datatype: string, where: string): TensorDatatype {
  if (!Object.hasOwn(ELEMENT_TYPE, datatype)) {
    throw new TypeError(`${where}: unknown datatype ${JSON.stringify(datatype)}; expected one of ${TENSOR_DATATYPES.join(', ')}`);
  }
  return datatype as TensorDatatype;
}

function isTypedArrayFor(datatype: TensorDatatype, data: unknown): boolean {
  switch (datatype) {
    case 'FP32':
      return data instanceof Float32Array;
    case 'FP64':
      return data instanceof Float64Array;
    case 'INT32':
      return data instanceof Int32Array;
    case 'INT64':
      return data instanceof BigInt64Array;
    case 'BOOL':
      return data instanceof Uint8Array;
    case 'BYTES':
      return Array.isArray(data) && data.every((v) => typeof v === 'string');
  }
}

/** Little-endian bytes of a typed array, independent of the host's byte order. BYTES has no raw form (it is string_data). */
export function rawTensorBytes(datatype: TensorDatatype, data: TensorData): Uint8Array {
  if (datatype === 'BYTES' || Array.isArray(data)) throw new TypeError('BYTES tensors have no raw bytes: they are written as string_data');
  const numeric = data as Exclude<TensorData, readonly string[]>;
  const itemSize = datatype === 'BOOL' ? 1 : numeric.BYTES_PER_ELEMENT;
  const bytes = new Uint8Array(numeric.length * itemSize);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < numeric.length; i++) {
    const value = numeric[i];
    switch (datatype) {
      case 'FP32':
        view.setFloat32(i * 4, value as number, true);
        break;
      case 'FP64':
        view.setFloat64(i * 8, value as number, true);
        break;
      case 'INT32':
        view.setInt32(i * 4, value as number, true);
        break;
      case 'INT64':
        view.setBigInt64(i * 8, value as bigint, true);
        break;
      case 'BOOL':
        bytes[i] = value as number;
        break;
    }
  }
  return bytes;
}

function tensorProto(name: string, tensor: TensorValue, where: string): TensorProtoInit {
  const datatype = checkDatatype(tensor.datatype, where);
  const dims = [...tensor.dims];
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`${where}: dims must be non-negative integers, got [${dims.join(', ')}]`);
  }
  if (!isTypedArrayFor(datatype, tensor.data)) {
    throw new TypeError(`${where}: ${datatype} data must be a ${ARRAY_NAME[datatype]}, got ${describe(tensor.data)}`);
  }
  const expected = dims.reduce((a, b) => a * b, 1);
  if (tensor.data.length !== expected) {
    throw new RangeError(`${where}: shape [${dims.join(', ')}] holds ${expected} elements but data has ${tensor.data.length}`);
  }
  if (datatype === 'BOOL' && (tensor.data as Uint8Array).some((v) => v > 1)) {
    throw new RangeError(`${where}: BOOL data must hold only 0 and 1`);
  }
  if (datatype === 'BYTES') {
    const encoder = new TextEncoder();
    return { name, dims, dataType: ELEMENT_TYPE[datatype], stringData: (tensor.data as readonly string[]).map((v) => encoder.encode(v)) };
  }
  return { name, dims, dataType: ELEMENT_TYPE[datatype], rawData: rawTensorBytes(datatype, tensor.data) };
}

function describe(value: unknown): string {
  if (value === null || typeof value !== 'object') return typeof value;
  return (value as object).constructor?.name ?? 'object';
}

function isTensorValue(value: unknown): value is TensorValue {
  return typeof value === 'object' && value !== null && 'datatype' in value && 'dims' in value && 'data' in value;
}

function explicitAttribute(value: AttributeValue, where: string): ExplicitAttribute {
  if (typeof value === 'number') return Number.isInteger(value) ? attr.int(value) : attr.float(value);
  if (typeof value === 'string') return attr.string(value);
  if (Array.isArray(value)) {
    const numbers = value as readonly number[];
    if (numbers.length === 0) throw new TypeError(`${where}: an empty list is ambiguous; use attr.ints([]) or attr.floats([])`);
    return numbers.every((v) => Number.isInteger(v)) ? attr.ints(numbers) : attr.floats(numbers);
  }
  if (isTensorValue(value)) return attr.tensor(value);
  if (typeof value === 'object' && value !== null && 'kind' in value) return value;
  throw new TypeError(`${where}: unsupported attribute value ${describe(value)}`);
}

function attributeProto(name: string, value: AttributeValue, where: string): AttributeProtoInit {
  const explicit = explicitAttribute(value, where);
  const { AttributeType } = onnx.AttributeProto;
  const checkNumber = (v: number, integers: boolean): number => {
    if (typeof v !== 'number') throw new TypeError(`${where}: expected numbers, got ${describe(v)}`);
    if (integers && !Number.isSafeInteger(v)) throw new TypeError(`${where}: expected safe integers, got ${v}`);
    return v;
  };
  const checkNumbers = (values: readonly number[], integers: boolean): number[] => Array.from(values, (v) => checkNumber(v, integers));
  switch (explicit.kind) {
    case 'int':
      return { name, type: AttributeType.INT, i: checkNumber(explicit.value, true) };
    case 'float':
      return { name, type: AttributeType.FLOAT, f: checkNumber(explicit.value, false) };
    case 'ints':
      return { name, type: AttributeType.INTS, ints: checkNumbers(explicit.value, true) };
    case 'floats':
      return { name, type: AttributeType.FLOATS, floats: checkNumbers(explicit.value, false) };
    case 'string':
      if (typeof explicit.value !== 'string') throw new TypeError(`${where}: expected a string`);
      return { name, type: AttributeType.STRING, s: new TextEncoder().encode(explicit.value) };
    case 'strings':
      if (!explicit.value.every((v) => typeof v === 'string')) throw new TypeError(`${where}: expected strings`);
      return { name, type: AttributeType.STRINGS, strings: explicit.value.map((v) => new TextEncoder().encode(v)) };
    case 'tensor':
      return { name, type: AttributeType.TENSOR, t: tensorProto('', explicit.value, where) };
    default:
      throw new TypeError(`${where}: unknown attribute kind ${JSON.stringify((explicit as { kind: unknown }).kind)}`);
  }
}

function valueInfo(name: string, datatype: TensorDatatype, shape: readonly Dimension[], where: string): ValueInfoProtoInit {
  const dim = shape.map((d) => {
    if (d === -1) return { dimParam: DYNAMIC_DIM_PARAM };
    if (typeof d === 'string' && d.length > 0) return { dimParam: d };
    if (typeof d === 'number' && Number.isSafeInteger(d) && d >= 0) return { dimValue: d };
    throw new RangeError(`${where}: dimension ${JSON.stringify(d)} must be a non-negative integer, -1 (dynamic) or a symbol name`);
  });
  return { name, type: { tensorType: { elemType: ELEMENT_TYPE[datatype], shape: { dim } } } };
}

function checkName(name: string, where: string): void {
  if (typeof name !== 'string' || name.length === 0) throw new TypeError(`${where}: name must be a non-empty string`);
}

/** Builds one ONNX graph. Nodes must be added in topological order. */
export class GraphBuilder {
  readonly name: string;
  private readonly inputs: ValueInfoProtoInit[] = [];
  private readonly outputs: ValueInfoProtoInit[] = [];
  private readonly initializers: TensorProtoInit[] = [];
  private readonly nodes: NodeProtoInit[] = [];
  private readonly defined = new Set<string>();
  private readonly domains = new Set<string>();

  constructor(name: string) {
    checkName(name, 'GraphBuilder');
    this.name = name;
  }

  /** Declares a graph input; -1 in the shape becomes the symbolic batch dimension `N`. */
  input(name: string, datatype: TensorDatatype, shape: readonly Dimension[]): string {
    const where = `input ${JSON.stringify(name)}`;
    const info = valueInfo(name, checkDatatype(datatype, where), shape, where);
    this.define(name, where);
    this.inputs.push(info);
    return name;
  }

  /** Adds a constant tensor; returns its name for use as a node input. */
  initializer<D extends TensorDatatype>(name: string, datatype: D, dims: readonly number[], data: TensorArrayOf[D]): string {
    const where = `initializer ${JSON.stringify(name)}`;
    checkName(name, where);
    const proto = tensorProto(name, { datatype, dims, data }, where);
    this.define(name, where);
    this.initializers.push(proto);
    return name;
  }

  /** Appends a node; every non-empty input must already be defined. Returns the output names. */
  node(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[],
    attributes: Readonly<Record<string, AttributeValue>> = {},
    options: NodeOptions = {},
  ): readonly string[] {
    checkName(opType, 'node');
    const nodeName = options.name ?? `${opType}_${this.nodes.length}`;
    const where = `node ${JSON.stringify(nodeName)} (${opType})`;
    for (const input of inputs) {
      if (input !== '' && !this.defined.has(input))
        throw new Error(`${where}: input ${JSON.stringify(input)} is not defined by an earlier input, initializer or node`);
    }
    if (outputs.length === 0) throw new Error(`${where}: a node needs at least one output`);
    const attribute = Object.entries(attributes).map(([key, value]) => attributeProto(key, value, `${where} attribute ${key}`));
    // Check every output before defining any, so a rejected node leaves the builder unchanged.
    outputs.forEach((output, i) => {
      checkName(output, where);
      if (this.defined.has(output) || outputs.indexOf(output) !== i)
        throw new Error(`${where}: name ${JSON.stringify(output)} is already defined in graph ${JSON.stringify(this.name)}`);
    });
    for (const output of outputs) this.define(output, where);
    const domain = options.domain ?? '';
    this.domains.add(domain);
    this.nodes.push({ name: nodeName, opType, input: [...inputs], output: [...outputs], attribute, ...(domain ? { domain } : {}) });
    return outputs;
  }

  /** Declares a graph output; it must be an input, initializer or node output defined earlier. */
  output(name: string, datatype: TensorDatatype, shape: readonly Dimension[]): string {
    const where = `output ${JSON.stringify(name)}`;
    checkName(name, where);
    if (!this.defined.has(name)) throw new Error(`${where}: no input, initializer or node produces it`);
    if (this.outputs.some((o) => o.name === name)) throw new Error(`${where}: declared twice`);
    this.outputs.push(valueInfo(name, checkDatatype(datatype, where), shape, where));
    return name;
  }

  /** Serialises the model. Deterministic: the same builder calls give the same bytes. */
  toModelBytes(options: ModelBytesOptions = {}): Uint8Array {
    const opset = options.opset ?? DEFAULT_OPSET;
    if (!Number.isSafeInteger(opset) || opset < 1) throw new RangeError(`opset must be a positive integer, got ${opset}`);
    if (this.outputs.length === 0) throw new Error(`graph ${JSON.stringify(this.name)}: declare at least one output`);
    const domainOpsets = options.domainOpsets ?? {};
    const opsetImport = [{ domain: '', version: opset }];
    for (const domain of Object.keys(domainOpsets).sort()) {
      const version = domainOpsets[domain];
      if (version === undefined || !Number.isSafeInteger(version) || version < 1)
        throw new RangeError(`opset of domain ${JSON.stringify(domain)} must be a positive integer, got ${version}`);
      opsetImport.push({ domain, version });
    }
    for (const domain of this.domains) {
      if (domain !== '' && !Object.hasOwn(domainOpsets, domain))
        throw new Error(`nodes use domain ${JSON.stringify(domain)}: give its opset in domainOpsets`);
    }
    const metadataProps = Object.entries(options.metadata ?? {}).map(([key, value]) => {
      if (typeof value !== 'string') throw new TypeError(`metadata ${JSON.stringify(key)} must be a string, got ${typeof value}`);
      return { key, value };
    });
    if (options.modelVersion !== undefined && !Number.isSafeInteger(options.modelVersion)) {
      throw new RangeError(`modelVersion must be an integer, got ${options.modelVersion}`);
    }
    const graph = {
      name: this.name,
      node: this.nodes,
      initializer: this.initializers,
      input: this.inputs,
      output: this.outputs,
    };
    const model = {
      irVersion: IR_VERSION,
      opsetImport,
      producerName: options.producer ?? 'scoreline',
      ...(options.producerVersion !== undefined ? { producerVersion: options.producerVersion } : {}),
      ...(options.modelVersion !== undefined ? { modelVersion: options.modelVersion } : {}),
      ...(options.docString !== undefined ? { docString: options.docString } : {}),
      graph,
      metadataProps,
    };
    // protobufjs may hand back a Buffer that is a view into Node's shared pool; copy it out so the
    // result owns exactly its bytes (safe to hash `.buffer`, transfer, or keep).
    return new Uint8Array(onnx.ModelProto.encode(model).finish());
  }

  private define(name: string, where: string): void {
    checkName(name, where);
    if (this.defined.has(name))
      throw new Error(`${where}: name ${JSON.stringify(name)} is already defined in graph ${JSON.stringify(this.name)}`);
    this.defined.add(name);
  }
}
