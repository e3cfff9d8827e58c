// The OIP byte reader: what it takes it reads exactly as JSON.parse would (values bit for bit, ids,
// names, shapes), whatever the whitespace and key order; everything outside its form is left to the
// general path (null); and no mutation of a valid body makes it accept what JSON.parse refuses or
// read a value differently.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { scanOip } from '../src/server/fast-oip.js';

const enc = (s: string) => Buffer.from(s, 'utf8');

/** What JSON.parse makes of the same body, in scanOip's terms (null if it is outside the form). */
function viaJson(text: string): { id: unknown; inputs: { name: string; datatype: string; shape: number[]; data: number[] }[] } {
  const b = JSON.parse(text);
  return { id: b.id, inputs: b.inputs };
}

function sameAsJson(text: string): void {
  const s = scanOip(enc(text));
  assert.ok(s !== null, `declined: ${text.slice(0, 120)}`);
  const j = viaJson(text);
  assert.equal(s.id, j.id);
  assert.equal(s.inputs.length, j.inputs.length);
  s.inputs.forEach((input, k) => {
    const want = j.inputs[k]!;
    assert.equal(input.name, want.name);
    assert.equal(input.datatype, want.datatype);
    assert.deepEqual(input.shape, want.shape);
    assert.equal(input.data.length, want.data.length);
    for (let i = 0; i < want.data.length; i++)
      assert.ok(Object.is(input.data[i], want.data[i]), `${text}: value ${i} ${input.data[i]} vs ${want.data[i]}`);
  });
}

test('the common form is read as JSON.parse reads it: whitespace, key order, ids, several inputs, signs, -0, 15 digits', () => {
  sameAsJson('{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[1.5,-2,0.25]}]}');
  sameAsJson(
    ' {\n "id" : "req-1" ,\t"inputs" : [ { "data" : [ 0.1 , -0.0 , 3 ] , "shape" : [ 1 , 3 ] , "datatype" : "FP64" , "name" : "x" } ] } \r\n',
  );
  sameAsJson(
    '{"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}, {"name": "b", "datatype": "FP32", "shape": [2], "data": [5, 6]}], "id": "z"}',
  );
  sameAsJson('{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[123456789012345,0.12345678901234,-99999.9999999999,0]}]}');
  sameAsJson('{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[0.000000000000001,-0.5,0.0000000000000000012345]}]}');
});

test('anything outside the form is left to the general path', () => {
  const declined = [
    '',
    '   ',
    '[]',
    '{}',
    '{"inputs":[]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1e3]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1.0000000000000002]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[0.00000000000000000000001]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[01]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1.]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[.5]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[-]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[+1]}]}',
    '{"inputs":[{"name":"in\\"put","datatype":"FP32","shape":[1,1],"data":[1]}]}',
    '{"inputs":[{"name":"ïnput","datatype":"FP32","shape":[1,1],"data":[1]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[[1,2]]}]}',
    '{"inputs":[{"name":"input","datatype":"BOOL","shape":[1,1],"data":[true]}]}',
    '{"inputs":[{"name":"input","datatype":"INT32","shape":[1,1],"data":[1]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[1]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[0,1],"data":[]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[],"data":[1]}]}',
    '{"inputs":[{"name":"input","name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1],"parameters":{}}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1]}],"parameters":{"explain":true}}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1]}],"outputs":[{"name":"label"}]}',
    '{"id":1,"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1]}]} x',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1]}],}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1,]}]}',
    '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1]}',
    '\ufeff{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1]}]}',
  ];
  for (const text of declined) assert.equal(scanOip(enc(text)), null, text);
});

test('fuzz: no byte mutation of valid bodies makes the reader accept what JSON.parse refuses, or read anything differently', () => {
  let seed = 12345;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const number = () => {
    const kind = rnd();
    if (kind < 0.35) return String(Math.round((rnd() - 0.5) * 2000) / 100);
    if (kind < 0.6) return String(Math.floor(rnd() * 1e6));
    if (kind < 0.9) return (rnd() * 100 - 50).toFixed(Math.floor(rnd() * 14));
    if (kind < 0.95) return String(rnd() * 1e-3);
    return String((rnd() - 0.5) * 1e6);
  };
  const sp = () => [' ', '', '', '\n', '\t', '  '][Math.floor(rnd() * 6)]!;
  let accepted = 0;
  let tried = 0;
  let base = 0;
  for (let n = 0; n < 1500; n++) {
    const cols = 1 + Math.floor(rnd() * 12);
    const data = Array.from({ length: cols }, number);
    const parts = [
      `${sp()}"name"${sp()}:${sp()}"input"`,
      `${sp()}"datatype"${sp()}:${sp()}"${rnd() < 0.5 ? 'FP32' : 'FP64'}"`,
      `${sp()}"shape"${sp()}:${sp()}[${sp()}1${sp()},${sp()}${cols}${sp()}]`,
      `${sp()}"data"${sp()}:${sp()}[${data.map((d) => `${sp()}${d}${sp()}`).join(',')}]`,
    ].sort(() => rnd() - 0.5);
    const text = `${sp()}{${sp()}"id"${sp()}:${sp()}"r${n}"${sp()},${sp()}"inputs"${sp()}:${sp()}[${sp()}{${parts.join(',')}}${sp()}]${sp()}}${sp()}`;
    if (scanOip(enc(text)) !== null) {
      base++;
      sameAsJson(text);
    }
    // Mutations: a byte changed, dropped or doubled.
    for (let m = 0; m < 20; m++) {
      const bytes = [...enc(text)];
      const at = Math.floor(rnd() * bytes.length);
      const op = rnd();
      if (op < 0.4) bytes[at] = ' ,:[]{}"-.0123456789eE+xn'.charCodeAt(Math.floor(rnd() * 26));
      else if (op < 0.7) bytes.splice(at, 1);
      else bytes.splice(at, 0, bytes[at]!);
      const buf = Buffer.from(bytes);
      tried++;
      const s = scanOip(buf);
      if (s === null) continue;
      accepted++;
      let parsed: unknown;
      try {
        parsed = JSON.parse(buf.toString('utf8'));
      } catch {
        assert.fail(`accepted a body JSON.parse refuses: ${buf.toString()}`);
      }
      assert.ok(parsed !== undefined);
      sameAsJson(buf.toString('utf8'));
    }
  }
  // Some mutations stay valid (a digit for a digit, a space added): both paths must agree on those.
  assert.ok(accepted > 100, `only ${accepted} of ${tried} mutated bodies were accepted`);
  // Bodies with 16-digit numbers (String(Math.random())) go the general way; the rest are read here.
  assert.ok(base > 400, `only ${base} of 1,500 generated bodies were read`);
});
