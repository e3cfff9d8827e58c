// What checking an inference body with its JSON Schema costs, next to the JSON.parse every request
// already pays: the OIP request schema (src/server/schemas.ts) compiled with the server's ajv
// settings, on a one-row and a 64-row request of 10 features. Median of several rounds.
// The server checks inference bodies with their decoder, not this schema, and not for its cost
// (the table shows it is small next to parsing): the decoder counts a bad request against the model version it
// was for, checks WebSocket frames the same way, and names the model's own inputs in its messages.
//
//   npm run bench:schemas -- [--no-write]

import { loadavg } from 'node:os';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { OIP_INFER_REQUEST } from '../src/server/schemas.js';
import { table, writeSection } from './results.js';

const ROUNDS = 9;
const N = 20_000;

function median(fn: () => void): number {
  for (let i = 0; i < N / 10; i++) fn();
  const samples: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) fn();
    samples.push(Number(process.hrtime.bigint() - t0) / N);
  }
  return samples.sort((a, b) => a - b)[ROUNDS >> 1]!;
}

const ajv = new Ajv2020({ allErrors: false, strict: true, strictTypes: false, strictRequired: false, allowUnionTypes: true });
ajv.addVocabulary(['x-error', 'x-missing', 'x-additional']);
const validate = ajv.compile(OIP_INFER_REQUEST);
const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const rows: string[][] = [];
for (const n of [1, 64]) {
  const text = JSON.stringify({
    id: 'r1',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [n, 10], data: Array.from({ length: n }, () => ROW).flat() }],
  });
  const body = JSON.parse(text) as unknown;
  if (!validate(body)) throw new Error('the benchmark body must be valid');
  let sink = 0;
  const parse = median(() => {
    sink += (JSON.parse(text) as { inputs: unknown[] }).inputs.length;
  });
  const check = median(() => {
    if (validate(body)) sink++;
  });
  if (sink === 0) throw new Error('unreachable');
  rows.push([`${n} x 10 (${text.length} bytes)`, parse.toFixed(0), check.toFixed(0), `${((check / parse) * 100).toFixed(0)}%`]);
}
const body = `${table(['request', 'JSON.parse (ns)', 'schema check (ns)', 'check / parse'], rows)}\n\nLoad average at start: ${loadavg()[0]!.toFixed(2)}.`;
console.log(body);
if (!process.argv.includes('--no-write'))
  writeSection('schemas', 'Inference body schema check vs JSON.parse', 'npm run bench:schemas', body);
