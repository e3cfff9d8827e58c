// Error codes are part of the API: every code the server can answer is listed in the README with
// its status, and every listed code exists, so the table cannot drift from src/errors.ts.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ERROR_STATUS, queueFull } from '../src/errors.js';

const README = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');

test('the README lists every error code with its status, and nothing else', () => {
  const listed = new Map<string, number>();
  for (const m of README.matchAll(/^\| `SCORELINE_([A-Z_]+)` \| (\d{3}) \|/gm)) listed.set(m[1]!, Number(m[2]));
  for (const [code, status] of Object.entries(ERROR_STATUS))
    assert.equal(listed.get(code), status, `README: SCORELINE_${code} should be listed with ${status}`);
  for (const code of listed.keys()) assert.ok(code in ERROR_STATUS, `README lists SCORELINE_${code}, which does not exist`);
});

test('an error body carries the stable code next to the message', () => {
  const e = queueFull('m', '1', 10);
  assert.deepEqual(JSON.parse(`{${e.jsonFields}}`), { error: e.message, code: 'SCORELINE_QUEUE_FULL' });
});
