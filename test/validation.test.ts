// The one validator (src/validation.ts): the same mistake reads the same in the server config,
// model.yaml and feature definitions; a schema's own words win; a config lists every failure while
// a request body shows its first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseModelConfig, resolveConfig } from '../src/config.js';
import { parseFeatureDefinitions } from '../src/features/definitions.js';
import { bodyCheck } from '../src/server/schemas.js';
import { compileSchema, schemaErrors } from '../src/validation.js';

const messageOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail('expected a failure');
};

test('an unknown key, a value outside an enum and a wrong type read alike in config, model.yaml and feature definitions', () => {
  assert.equal(
    messageOf(() => resolveConfig({ log: { level: 'loud', colour: true }, server: { port: 'http' } }, 'server.yaml')),
    "server.yaml is invalid: server.port: must be integer (got 'http'); log: unknown property 'colour'; log.level: must be one of fatal, error, warn, info, debug, trace, silent (got 'loud')",
  );
  assert.equal(
    messageOf(() => parseModelConfig('task: ranking\nthresold: 0.5\n', 'm/model.yaml')),
    "m/model.yaml is invalid: (root): unknown property 'thresold'; task: must be one of classification, regression (got 'ranking')",
  );
  const defs = [
    'entities: [{ name: customer, key: customer_id }]',
    'features:',
    '  - { name: income, version: 1, entity: customer, type: offline, dtype: float, colum: x }',
  ].join('\n');
  assert.equal(
    messageOf(() => parseFeatureDefinitions(defs, { source: 'features.yaml' })),
    "features.yaml is invalid: features[0] (income@1): unknown property 'colum'; features[0] (income@1): dtype: must be one of float64, float32, int64, int32, bool (got 'float')",
  );
});

test("a schema's own words win; a request body shows its first failure, a config all of them", () => {
  const schema = {
    type: 'object',
    required: ['rows'],
    additionalProperties: false,
    properties: {
      rows: { type: 'array', items: { type: 'integer', minimum: 0, 'x-error': 'rows[{0}] must be a count, not {value}' } },
      name: { type: 'string' },
    },
  };
  const validate = compileSchema(schema);
  const body = { rows: [1, -2, 'x'], name: 3, extra: 1 };
  assert.equal(validate(body), false);
  assert.deepEqual(schemaErrors(validate.errors, { data: body, schema }), [
    "(root): unknown property 'extra'",
    'rows[1] must be a count, not -2',
    'rows[2] must be a count, not "x"',
    'name: must be string (got 3)',
  ]);
  assert.throws(() => bodyCheck(schema)(body), { message: "body: unknown property 'extra'" });
  assert.throws(() => bodyCheck(schema)({}), { message: "body: must have required property 'rows'" });
  assert.doesNotThrow(() => bodyCheck(schema)({ rows: [0, 4] }));
});
