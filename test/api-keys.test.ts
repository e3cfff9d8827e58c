// API keys: SCORELINE_API_KEYS parsing (errors name the entry and id, never the key), the stored
// digest form, authentication (Bearer or x-api-key; 401 for none, malformed or unknown), scopes
// (403), duplicate ids and keys refused, and the gate's rule that every route has an access rule.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { ApiKeys, generateKey, hashKey, parseEnvKeys } from '../src/server/api-keys.js';
import { accessOf, checkRequestId } from '../src/server/gate.js';
import { OPERATIONS } from '../src/server/api.js';
import { isScorelineError, type ScorelineError } from '../src/errors.js';

const KEY = 'k'.repeat(30);
const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    assert.ok(isScorelineError(e), String(e));
    return `${(e as ScorelineError).status} ${(e as ScorelineError).code}: ${(e as Error).message}`;
  }
  return 'no error';
};

test('SCORELINE_API_KEYS: entries, scopes with colons, and errors that name no key', () => {
  const keys = parseEnvKeys(` a:${KEY}:infer+monitoring:read , b:${KEY}x:feedback,`);
  assert.deepEqual(
    keys.map((k) => [k.id, k.key, [...k.scopes]]),
    [
      ['a', KEY, ['infer', 'monitoring:read']],
      ['b', `${KEY}x`, ['feedback']],
    ],
  );
  assert.deepEqual(parseEnvKeys(''), []);
  const secret = 'short-but-secret';
  const e = code(() => parseEnvKeys(`ok:${KEY}:infer,c:${secret}:infer`));
  assert.match(e, /^500 CONFIG_INVALID: SCORELINE_API_KEYS entry 2 \(id 'c'\): the key is shorter than 24 characters/);
  assert.ok(!e.includes(secret));
  assert.match(
    code(() => parseEnvKeys(`a:${KEY}`)),
    /entry 1: must be id:key:scope1\+scope2/,
  );
  assert.match(
    code(() => parseEnvKeys(`a:${KEY}:`)),
    /must be id:key:scope1\+scope2/,
  );
  assert.match(
    code(() => parseEnvKeys(`a b:${KEY}:infer`)),
    /the id must be 1-64 letters/,
  );
  assert.match(
    code(() => parseEnvKeys(`a:${KEY}:infer+write`)),
    /unknown scope 'write'/,
  );
});

test('hashKey is sha256:<hex of the key>, and generated keys are 32 random bytes', () => {
  assert.equal(hashKey('abc'), `sha256:${createHash('sha256').update('abc').digest('hex')}`);
  const k1 = generateKey();
  const k2 = generateKey();
  assert.match(k1, /^slk_[A-Za-z0-9_-]{43}$/);
  assert.notEqual(k1, k2);
});

test('authenticate: Bearer or x-api-key; 401 missing, malformed or unknown; authorize: 403 without the scope', () => {
  const k = generateKey();
  const keys = ApiKeys.fromConfig(
    { enabled: true, metricsPublic: true, apiKeys: [{ id: 'cfg', hash: hashKey(k), scopes: ['infer'] }] },
    `env:${KEY}:feedback+events`,
  );
  assert.equal(keys.size, 2);
  assert.equal(keys.authenticate(`Bearer ${k}`, '').id, 'cfg');
  assert.equal(keys.authenticate(`bearer   ${k}  `, '').id, 'cfg', 'scheme case-insensitive, spaces tolerated');
  assert.equal(keys.authenticate('', KEY).id, 'env');
  assert.equal(keys.authenticate('Bearer wrong', KEY).id, 'env', 'x-api-key is looked at first');
  assert.match(
    code(() => keys.authenticate('', '')),
    /^401 API_KEY_REQUIRED/,
  );
  assert.match(
    code(() => keys.authenticate(`Basic ${k}`, '')),
    /^401 API_KEY_INVALID: the Authorization header must be "Bearer <API key>"/,
  );
  assert.match(
    code(() => keys.authenticate(`Bearer ${k}x`, '')),
    /^401 API_KEY_INVALID: the API key is not valid$/,
  );
  assert.match(
    code(() => keys.authenticate('', hashKey(k))),
    /^401 API_KEY_INVALID/,
    'the stored digest is not a key',
  );
  const cfg = keys.authenticate(`Bearer ${k}`, '');
  assert.equal(
    code(() => keys.authorize(cfg, 'infer')),
    'no error',
  );
  assert.match(
    code(() => keys.authorize(cfg, 'feedback')),
    /^403 SCOPE_MISSING: API key 'cfg' does not have the 'feedback' scope/,
  );
  assert.match(
    code(() => keys.check('', KEY, 'infer')),
    /^403 SCOPE_MISSING/,
  );
  assert.deepEqual(keys.refusals, { missing: 1, invalid: 3, scope: 2 });
});

test('one namespace of ids, and one id per key', () => {
  const k = generateKey();
  assert.match(
    code(() =>
      ApiKeys.fromConfig(
        { enabled: true, metricsPublic: true, apiKeys: [{ id: 'x', hash: hashKey(k), scopes: ['infer'] }] },
        `x:${KEY}:infer`,
      ),
    ),
    /API key id 'x' is defined twice/,
  );
  assert.match(
    code(() =>
      ApiKeys.fromConfig(
        { enabled: true, metricsPublic: true, apiKeys: [{ id: 'x', hash: hashKey(KEY), scopes: ['infer'] }] },
        `y:${KEY}:infer`,
      ),
    ),
    /API keys 'x' and 'y' are the same key/,
  );
});

test('every route has an access rule; a route without one is refused', () => {
  assert.equal(accessOf('post', '/v2/models/:model/infer'), 'infer');
  assert.equal(accessOf('post', '/v1/feedback'), 'feedback');
  assert.equal(accessOf('post', '/v1/events'), 'events');
  assert.equal(accessOf('get', '/v1/monitoring/:model'), 'monitoring:read');
  assert.equal(accessOf('get', '/metrics'), 'metrics');
  assert.equal(accessOf('get', '/v2/health/ready'), 'open');
  assert.equal(accessOf('put', '/admin/deployments/:name'), 'admin');
  assert.equal(accessOf('any', '/v1/feedback'), 'open', 'the 405 and 404 answers serve nothing');
  assert.equal(accessOf('del', '/admin/deployments/:name'), 'admin', 'uWS names DELETE del');
  assert.equal(accessOf('post', '/v2/repository/models/:model/load'), 'admin');
  assert.equal(accessOf('get', '/openapi.json'), 'open');
  assert.throws(
    () => accessOf('get', '/v1/secret-new-route'),
    /route GET \/v1\/secret-new-route has no access rule: add it, with its access, to the route table in src\/server\/api\.ts/,
  );
  assert.throws(() => accessOf('get', '/v1/feedback'), /no access rule/, 'by method as well as path');
});

test("the access rules are the route table's: every admin route is behind the admin token, every data-plane route needs its scope", () => {
  for (const op of OPERATIONS) {
    const uws = op.method === 'delete' ? 'del' : op.method;
    assert.equal(accessOf(uws, op.pattern), op.access, `${op.method} ${op.pattern}`);
    if (op.pattern.startsWith('/admin') || op.pattern.startsWith('/v2/repository'))
      assert.equal(op.access, 'admin', `${op.method} ${op.pattern}`);
    if (op.method !== 'get') assert.notEqual(op.access, 'open', `${op.method} ${op.pattern} changes or scores something`);
  }
});

test('x-request-id: printable ASCII up to 128 characters', () => {
  assert.equal(
    code(() => checkRequestId('a'.repeat(128))),
    'no error',
  );
  assert.equal(
    code(() => checkRequestId('req 42/7:x')),
    'no error',
  );
  assert.match(
    code(() => checkRequestId('a'.repeat(129))),
    /^400 BAD_REQUEST: x-request-id is 129 characters long; at most 128/,
  );
  for (const bad of ['tab\there', 'caf\u00e9', 'nul\u0000', '\u007f'])
    assert.match(
      code(() => checkRequestId(bad)),
      /must be printable ASCII/,
      JSON.stringify(bad),
    );
});
