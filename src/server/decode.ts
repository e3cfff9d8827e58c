// Request bodies of the Open Inference Protocol and of v1 `:predict`, checked against the model's
// signature and decoded straight into the open batch of the version's batcher. Nothing is committed
// here: the caller commits the returned slot, so a request that fails validation changes nothing.

import { badRequest, signatureMismatch } from '../errors.js';
import {
  elementCount,
  isDatatype,
  writeElement,
  writeTensorData,
  type Batch,
  type Datatype,
  type LoadedModel,
  type TensorData,
} from '../inference/index.js';
import { isObject } from '../json.js';
import type { ScannedOip } from './fast-oip.js';

export interface DecodedRequest {
  readonly batch: Batch;
  readonly rows: number;
  readonly id: string | undefined;
  /** Indices of the outputs the client asked for, or null for all. */
  readonly select: number[] | null;
}

const shapeText = (s: readonly number[]) => `[${s.join(', ')}]`;
const EMPTY: number[] = [];

/** Same rank, and equal wherever the model's dimension is fixed. */
function fits(shape: readonly number[], model: readonly number[]): boolean {
  if (shape.length !== model.length) return false;
  for (let j = 0; j < shape.length; j++) if (model[j] !== -1 && model[j] !== shape[j]) return false;
  return true;
}

function checkShape(shape: unknown, name: string): number[] {
  if (!Array.isArray(shape)) throw badRequest(`input '${name}': "shape" must be an array of integers`);
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || (d as number) < 1) {
      throw badRequest(`input '${name}': shape ${JSON.stringify(shape)} must hold positive integers`);
    }
  }
  return shape as number[];
}

export function selectOutputs(model: LoadedModel, outputs: unknown): number[] {
  if (!Array.isArray(outputs)) throw badRequest('"outputs" must be an array of {"name": ...}');
  const select: number[] = [];
  for (const o of outputs) {
    const name = isObject(o) ? o.name : undefined;
    if (typeof name !== 'string') throw badRequest('each entry of "outputs" needs a string "name"');
    const i = model.outputIndex.get(name);
    if (i === undefined) {
      throw signatureMismatch(`model '${model.name}' has no output '${name}' (outputs: ${model.outputs.map((t) => t.name).join(', ')})`);
    }
    if (!select.includes(i)) select.push(i);
  }
  return select;
}

/** An input tensor's header as a request declares it (JSON object or protobuf message). */
export interface DeclaredInput {
  readonly name: unknown;
  readonly datatype: unknown;
  /** Positive integers. */
  readonly shape: unknown;
}

/** The request's inputs matched to the model's: per model input, its place in the request and its shape. */
export interface CheckedInputs {
  /** order[i]: index in the request of the model's input i. */
  readonly order: number[];
  readonly shapes: number[][];
  readonly rows: number;
}

/**
 * Checks a request's input headers against the model's signature, before any data is read: every
 * name known and given once, every input present, datatype and shape as the model has them, and
 * one batch size over all inputs. The same rules for every wire format (OIP JSON, WebSocket, gRPC).
 */
export function checkInputs(model: LoadedModel, inputs: readonly DeclaredInput[]): CheckedInputs {
  const specs = model.inputs;
  const order: number[] = [];
  const shapes: number[][] = [];
  for (let i = 0; i < specs.length; i++) {
    order.push(-1);
    shapes.push(EMPTY);
  }
  let rows = 1;
  for (let k = 0; k < inputs.length; k++) {
    const input = inputs[k]!;
    const name = input.name;
    if (typeof name !== 'string') throw badRequest(`inputs[${k}].name must be a string`);
    const i = model.inputIndex.get(name);
    if (i === undefined) {
      throw signatureMismatch(`model '${model.name}' has no input '${name}' (inputs: ${specs.map((t) => t.name).join(', ')})`);
    }
    if (order[i] !== -1) throw badRequest(`input '${name}' appears more than once`);
    order[i] = k;
    const spec = specs[i]!;
    if (!isDatatype(input.datatype)) throw badRequest(`input '${name}': unknown datatype ${JSON.stringify(input.datatype)}`);
    if (input.datatype !== spec.datatype) {
      throw signatureMismatch(`input '${name}': datatype ${input.datatype} does not match the model's ${spec.datatype}`);
    }
    const shape = checkShape(input.shape, name);
    if (!fits(shape, spec.shape)) {
      throw signatureMismatch(`input '${name}': shape ${shapeText(shape)} does not fit the model's ${shapeText(spec.shape)} (-1 = any)`);
    }
    if (model.batchable) {
      if (k === 0) rows = shape[0]!;
      else if (shape[0] !== rows) throw signatureMismatch(`inputs disagree on the batch size (${rows} vs ${shape[0]} for '${name}')`);
    }
    shapes[i] = shape;
  }
  for (let i = 0; i < specs.length; i++) {
    if (order[i] === -1) throw signatureMismatch(`input '${specs[i]!.name}' of model '${model.name}' is missing`);
  }
  return { order, shapes, rows };
}

/** The open batch a checked request's rows go into (its inner shapes matter only to models with dynamic inner dimensions). */
export function reserveFor(model: LoadedModel, checked: CheckedInputs): Batch {
  const batcher = model.batcher;
  const inner = !batcher.dynamicInner ? undefined : model.batchable ? checked.shapes.map((s) => s.slice(1)) : checked.shapes;
  return batcher.reserve(checked.rows, inner);
}

/**
 * Decodes an OIP inference request. `maxElements` bounds the tensor sizes a client may declare
 * (a JSON body cannot hold more elements than about half its bytes), so a lying shape cannot make
 * the server allocate more than the body justifies. `checkId` is off for WebSocket frames, whose ids
 * may also be numbers and are echoed by the stream itself.
 */
export function decodeOip(model: LoadedModel, body: unknown, maxElements: number, checkId = true): DecodedRequest {
  if (!isObject(body)) throw badRequest('request body must be a JSON object with an "inputs" array');
  const id = checkId ? body.id : undefined;
  if (id !== undefined && typeof id !== 'string') throw badRequest('"id" must be a string');
  if (body.parameters !== undefined && !isObject(body.parameters)) throw badRequest('"parameters" must be an object');
  const inputs = body.inputs;
  if (!Array.isArray(inputs) || inputs.length === 0) throw badRequest('"inputs" must be a non-empty array');
  const select = body.outputs === undefined ? null : selectOutputs(model, body.outputs);
  for (let k = 0; k < inputs.length; k++) if (!isObject(inputs[k])) throw badRequest(`inputs[${k}] must be an object`);
  const checked = checkInputs(model, inputs as unknown as DeclaredInput[]);
  const specs = model.inputs;
  for (let i = 0; i < specs.length; i++) {
    const input = inputs[checked.order[i]!] as Record<string, unknown>;
    if (input.data === undefined) throw badRequest(`input '${specs[i]!.name}': "data" is required`);
    checkDeclaredSize(specs[i]!.name, checked.shapes[i]!, maxElements);
  }
  const batch = reserveFor(model, checked);
  const batcher = model.batcher;
  for (let i = 0; i < specs.length; i++) {
    const spec = specs[i]!;
    const per = batcher.rowElements(batch, i);
    const input = inputs[checked.order[i]!] as Record<string, unknown>;
    writeTensorData(input.data, spec.datatype, batch.buffers[i]!, batch.rows * per, checked.shapes[i]!, `input '${spec.name}'`);
  }
  return { batch, rows: checked.rows, id, select };
}

function checkDeclaredSize(name: string, shape: readonly number[], maxElements: number): void {
  if (elementCount(shape) > maxElements) {
    throw badRequest(`input '${name}': shape ${shapeText(shape)} declares more elements than the request body holds`);
  }
}

/**
 * Decodes a request scanOip read from the bytes (flat FP32/FP64 data matching each declared shape,
 * no parameters or outputs): the same checks against the model as decodeOip, the values copied into
 * the open batch.
 */
export function decodeScanned(model: LoadedModel, scanned: ScannedOip, maxElements: number): DecodedRequest {
  const checked = checkInputs(model, scanned.inputs);
  const specs = model.inputs;
  for (let i = 0; i < specs.length; i++) checkDeclaredSize(specs[i]!.name, checked.shapes[i]!, maxElements);
  const batch = reserveFor(model, checked);
  const batcher = model.batcher;
  for (let i = 0; i < specs.length; i++) {
    // checkInputs matched the datatype (FP32 or FP64) to the model's, so the buffer is of that type.
    const target = batch.buffers[i] as Float32Array | Float64Array;
    const data = scanned.inputs[checked.order[i]!]!.data;
    const at = batch.rows * batcher.rowElements(batch, i);
    for (let k = 0; k < data.length; k++) target[at + k] = data[k]!;
  }
  return { batch, rows: checked.rows, id: scanned.id, select: null };
}

/**
 * Decodes v1 `{"instances": [...]}`. An instance is a row of the single input (nested for rank > 2),
 * an object of named features when model.yaml lists them (over one input or several, a category
 * being a string), or an object of per-input rows.
 */
export function decodeInstances(model: LoadedModel, body: unknown, maxElements: number): DecodedRequest {
  if (!isObject(body)) throw badRequest('request body must be a JSON object with an "instances" array');
  const instances = body.instances;
  if (!Array.isArray(instances) || instances.length === 0) {
    throw badRequest(
      body.inputs !== undefined ? 'the columnar "inputs" form is not supported; send "instances"' : '"instances" must be a non-empty array',
    );
  }
  if (!model.batchable) throw signatureMismatch(`model '${model.name}' has no dynamic batch dimension; use the v2 infer endpoint`);
  const specs = model.inputs;
  for (const s of specs) {
    if (s.shape.slice(1).includes(-1)) {
      throw signatureMismatch(`model '${model.name}' input '${s.name}' has dynamic inner dimensions; use the v2 infer endpoint`);
    }
  }
  const rows = instances.length;
  const batcher = model.batcher;
  const batch = batcher.reserve(rows);
  const base = batch.rows;
  const features = model.features;
  let perRow = 0;
  for (let i = 0; i < specs.length; i++) perRow += batcher.rowElements(batch, i);
  if (rows * perRow > maxElements) throw badRequest('"instances" declares more values than the request body holds');
  if (specs.length === 1) {
    const spec = specs[0]!;
    const per = batcher.rowElements(batch, 0);
    const target = batch.buffers[0]!;
    for (let r = 0; r < rows; r++) {
      const inst = instances[r];
      const at = (base + r) * per;
      if (Array.isArray(inst)) {
        writeRow(inst, spec.datatype, target, at, batcher.inputs[0]!.inner, r);
      } else if (isObject(inst) && features !== null) {
        writeFeatures(model, batch, base + r, inst, r);
      } else if (isObject(inst)) {
        const v = inst[spec.name];
        if (!Array.isArray(v)) throw badRequest(`instance ${r} must be an array, or an object with '${spec.name}'`);
        writeRow(v, spec.datatype, target, at, batcher.inputs[0]!.inner, r);
      } else {
        throw badRequest(`instance ${r} must be an array${features ? ' or an object of named features' : ''}`);
      }
    }
    return { batch, rows, id: undefined, select: null };
  }
  // Several inputs: objects of named features when model.yaml names the columns (unless an object
  // holds exactly one entry per input and no feature is named like an input), else of per-input rows.
  for (let r = 0; r < rows; r++) {
    const inst = instances[r];
    if (!isObject(inst)) {
      throw badRequest(
        `instance ${r} must be an object with one entry per ${features !== null ? `feature (${features.names.join(', ')})` : `input (${specs.map((t) => t.name).join(', ')})`}`,
      );
    }
    const byInput =
      features === null || (specs.every((t) => !features.index.has(t.name) && t.name in inst) && Object.keys(inst).length === specs.length);
    if (!byInput) {
      writeFeatures(model, batch, base + r, inst, r);
      continue;
    }
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i]!;
      const per = batcher.rowElements(batch, i);
      const v = inst[spec.name];
      if (v === undefined) throw badRequest(`instance ${r} is missing input '${spec.name}'`);
      if (Array.isArray(v)) writeRow(v, spec.datatype, batch.buffers[i]!, (base + r) * per, batcher.inputs[i]!.inner, r);
      else if (per === 1) writeElement(v, spec.datatype, batch.buffers[i]!, base + r, `instance ${r} input '${spec.name}'`);
      else throw badRequest(`instance ${r} input '${spec.name}' must be an array of ${per} values`);
    }
  }
  return { batch, rows, id: undefined, select: null };
}

/** One instance of named features into row `row` of the batch: each feature into its input's column. */
function writeFeatures(model: LoadedModel, batch: Batch, row: number, inst: Record<string, unknown>, r: number): void {
  const f = model.features!;
  const specs = model.inputs;
  for (let j = 0; j < f.names.length; j++) {
    const name = f.names[j]!;
    const v = inst[name];
    if (v === undefined) throw badRequest(`instance ${r} is missing feature '${name}'`);
    const i = f.input[j]!;
    const per = model.batcher.rowElements(batch, i);
    writeElement(v, specs[i]!.datatype, batch.buffers[i]!, row * per + f.column[j]!, `instance ${r} feature '${name}'`);
  }
  if (Object.keys(inst).length !== f.names.length) {
    const unknown = Object.keys(inst).find((k) => !f.index.has(k));
    throw badRequest(`instance ${r} has unknown feature '${unknown}' (features: ${f.names.join(', ')})`);
  }
}

/** One instance: a row of the input, flat or nested as the input's inner dimensions. */
function writeRow(row: unknown[], dt: Datatype, target: TensorData, at: number, inner: readonly number[], r: number): void {
  writeTensorData(row, dt, target, at, inner.length === 0 ? [1] : inner, `instance ${r}`);
}
