// Response bodies built as JSON text straight from the batch's output arrays: a request's rows are
// sliced by index, never copied into intermediate objects.

import { jsonElements, type LoadedModel, type RunResult, type TensorPayload } from '../inference/index.js';

function innerElements(dims: readonly number[]): number {
  let n = 1;
  for (let i = 1; i < dims.length; i++) n *= dims[i]!;
  return n;
}

function innerShapeText(dims: readonly number[]): string {
  let s = '';
  for (let i = 1; i < dims.length; i++) s += `,${dims[i]}`;
  return s;
}

/** The OIP `outputs` array for rows [rowStart, rowStart + rows) of a batch. */
export function outputsJson(
  model: LoadedModel,
  result: RunResult,
  rowStart: number,
  rows: number,
  select: readonly number[] | null,
): string {
  const outs = result.outputs;
  const n = select === null ? outs.length : select.length;
  let s = '[';
  for (let k = 0; k < n; k++) {
    const i = select === null ? k : select[k]!;
    const o = outs[i]!;
    let start: number;
    let end: number;
    let shape: string;
    if (model.batchable) {
      const per = innerElements(o.dims);
      start = rowStart * per;
      end = start + rows * per;
      shape = rows + innerShapeText(o.dims);
    } else {
      start = 0;
      end = o.data.length;
      shape = o.dims.join(',');
    }
    if (k > 0) s += ',';
    s += `${model.outputHeads[i]}${shape}],"data":[${jsonElements(o.data, o.datatype, start, end)}]}`;
  }
  return `${s}]`;
}

/** One row of an output as JSON: a scalar for rank-1 outputs, else nested arrays of its inner dims. */
function rowJson(o: TensorPayload, row: number): string {
  const dims = o.dims;
  if (dims.length <= 1) return jsonElements(o.data, o.datatype, row, row + 1);
  const per = innerElements(dims);
  return nested(o, dims, 1, row * per, per);
}

function nested(o: TensorPayload, dims: readonly number[], axis: number, start: number, size: number): string {
  if (axis === dims.length - 1) return `[${jsonElements(o.data, o.datatype, start, start + size)}]`;
  const d = dims[axis]!;
  const step = size / d;
  let s = '[';
  for (let j = 0; j < d; j++) s += (j > 0 ? ',' : '') + nested(o, dims, axis + 1, start + j * step, step);
  return `${s}]`;
}

/** The v1 `predictions` array: per row, the single output's value, or an object of all outputs. */
export function predictionsJson(model: LoadedModel, result: RunResult, rowStart: number, rows: number): string {
  const outs = result.outputs;
  let s = '[';
  for (let r = 0; r < rows; r++) {
    if (r > 0) s += ',';
    if (outs.length === 1) {
      s += rowJson(outs[0]!, rowStart + r);
      continue;
    }
    s += '{';
    for (let i = 0; i < outs.length; i++) {
      s += `${i > 0 ? ',' : ''}${JSON.stringify(model.outputs[i]!.name)}:${rowJson(outs[i]!, rowStart + r)}`;
    }
    s += '}';
  }
  return `${s}]`;
}

/** The score of one row: model.yaml's score output and column (default: the last column). */
export function scoreOf(m: LoadedModel, result: RunResult, rowStart: number): number {
  const o = result.outputs[m.scoreOutput.output]!;
  let per = 1;
  for (let i = 1; i < o.dims.length; i++) per *= o.dims[i]!;
  const column = m.scoreOutput.column ?? per - 1;
  return Number(o.data[rowStart * per + Math.min(column, per - 1)]);
}
