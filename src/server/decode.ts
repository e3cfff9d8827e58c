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
  type TypedArray,
} from '../inference/index.js';
import { isObject } from './http.js';

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

  const specs = model.inputs;
  const order: number[] = [];
  const shapes: number[][] = [];
  for (let i = 0; i < specs.length; i++) {
    order.push(-1);
    shapes.push(EMPTY);
  }
  let rows = 1;
  for (let k = 0; k < inputs.length; k++) {
    const input = inputs[k];
    if (!isObject(input)) throw badRequest(`inputs[${k}] must be an object`);
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
    if (input.data === undefined) throw badRequest(`input '${name}': "data" is required`);
    if (elementCount(shape) > maxElements) {
      throw badRequest(`input '${name}': shape ${shapeText(shape)} declares more elements than the request body holds`);
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

  const batcher = model.batcher;
  // Inner shapes only matter to the batcher when the model leaves inner dimensions dynamic.
  const inner = !batcher.dynamicInner ? undefined : model.batchable ? shapes.map((s) => s.slice(1)) : shapes;
  const batch = batcher.reserve(rows, inner);
  for (let i = 0; i < specs.length; i++) {
    const spec = specs[i]!;
    const per = batcher.rowElements(batch, i);
    const input = inputs[order[i]!] as Record<string, unknown>;
    writeTensorData(input.data, spec.datatype, batch.buffers[i]!, batch.rows * per, shapes[i]!, `input '${spec.name}'`);
  }
  return { batch, rows, id, select };
}

/**
 * Decodes v1 `{"instances": [...]}`. An instance is a row of the single input (nested for rank > 2),
 * an object of named features when model.yaml lists them, or an object of per-input rows.
 */
export function decodeInstances(model: LoadedModel, body: unknown, maxElements: number): DecodedRequest {
  if (!isObject(body)) throw badRequest('request body must be a JSON object with an "instances" array');
  const instances = body.instances;
  if (!Array.isArray(instances) || instances.length === 0) {
    throw badRequest(body.inputs !== undefined ? 'the columnar "inputs" form is not supported; send "instances"' : '"instances" must be a non-empty array');
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
  if (specs.length === 1) {
    const spec = specs[0]!;
    const per = batcher.rowElements(batch, 0);
    if (rows * per > maxElements) throw badRequest('"instances" declares more values than the request body holds');
    const target = batch.buffers[0]!;
    for (let r = 0; r < rows; r++) {
      const inst = instances[r];
      const at = (base + r) * per;
      if (Array.isArray(inst)) {
        writeRow(inst, spec.datatype, target, at, batcher.inputs[0]!.inner, r);
      } else if (isObject(inst) && features !== null) {
        let seen = 0;
        for (let j = 0; j < features.names.length; j++) {
          const f = features.names[j]!;
          const v = inst[f];
          if (v === undefined) throw badRequest(`instance ${r} is missing feature '${f}'`);
          writeElement(v, spec.datatype, target, at + j, `instance ${r} feature '${f}'`);
          seen++;
        }
        if (Object.keys(inst).length !== seen) {
          const unknown = Object.keys(inst).find((k) => !features.index.has(k));
          throw badRequest(`instance ${r} has unknown feature '${unknown}' (features: ${features.names.join(', ')})`);
        }
      } else if (isObject(inst)) {
        const v = inst[spec.name];
        if (!Array.isArray(v)) throw badRequest(`instance ${r} must be an array, or an object with '${spec.name}'`);
        writeRow(v, spec.datatype, target, at, batcher.inputs[0]!.inner, r);
      } else {
        throw badRequest(`instance ${r} must be an array${features ? ' or an object of named features' : ''}`);
      }
    }
  } else {
    for (let r = 0; r < rows; r++) {
      const inst = instances[r];
      if (!isObject(inst)) throw badRequest(`instance ${r} must be an object with one entry per input (${specs.map((s) => s.name).join(', ')})`);
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
  }
  return { batch, rows, id: undefined, select: null };
}

/** One instance: a row of the input, flat or nested as the input's inner dimensions. */
function writeRow(row: unknown[], dt: Datatype, target: TypedArray, at: number, inner: readonly number[], r: number): void {
  writeTensorData(row, dt, target, at, inner.length === 0 ? [1] : inner, `instance ${r}`);
}
