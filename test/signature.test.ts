// inputIncompatibility: the one rule the deployer and the retraining gate judge a new version's
// inputs by, on -1 (dynamic) dims, datatypes, and missing or extra inputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inputIncompatibility } from '../src/onnx/index.js';
import type { TensorSpec } from '../src/onnx/index.js';

const spec = (name: string, shape: number[], datatype: TensorSpec['datatype'] = 'FP32'): TensorSpec => ({ name, datatype, shape });
const served = [spec('x', [-1, 4]), spec('ids', [-1, 2], 'INT64')];

test('the same inputs, in any order, are compatible', () => {
  assert.equal(inputIncompatibility(served, [spec('ids', [-1, 2], 'INT64'), spec('x', [-1, 4])], 'the contract'), null);
});

test('-1 dims: a candidate dynamic where the served model is fixed takes every request; the reverse does not', () => {
  const fixed = [spec('x', [1, 4])];
  assert.equal(inputIncompatibility(fixed, [spec('x', [-1, 4])], 'the champion'), null);
  assert.equal(inputIncompatibility([spec('x', [-1, -1])], [spec('x', [-1, -1])], 'the champion'), null);
  assert.equal(
    inputIncompatibility([spec('x', [-1, 4])], [spec('x', [1, 4])], 'the champion'),
    "input 'x' has shape [1, 4], the champion's [-1, 4]",
  );
  assert.equal(
    inputIncompatibility([spec('x', [-1, 4])], [spec('x', [-1, 5])], 'the contract'),
    "input 'x' has shape [-1, 5], the contract's [-1, 4]",
  );
  assert.equal(
    inputIncompatibility([spec('x', [-1, 4])], [spec('x', [-1, 4, 1])], 'the contract'),
    "input 'x' has shape [-1, 4, 1], the contract's [-1, 4]",
  );
});

test('a datatype mismatch is named with both datatypes', () => {
  assert.equal(
    inputIncompatibility(served, [spec('x', [-1, 4], 'FP64'), spec('ids', [-1, 2], 'INT64')], 'the contract'),
    "input 'x' is FP64, the contract's is FP32",
  );
});

test('missing and extra inputs are named', () => {
  assert.equal(inputIncompatibility(served, [spec('x', [-1, 4])], 'the champion'), "1 inputs, the champion has 2 (missing 'ids')");
  assert.equal(
    inputIncompatibility([spec('x', [-1, 4])], [spec('x', [-1, 4]), spec('extra', [-1, 1])], 'the contract'),
    "2 inputs, the contract has 1 (extra 'extra')",
  );
  assert.equal(
    inputIncompatibility(served, [spec('x', [-1, 4]), spec('id', [-1, 2], 'INT64')], 'the contract'),
    "no input 'ids' (it has 'id' instead)",
  );
});
