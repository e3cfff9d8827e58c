// The JSON Schemas (draft 2020-12, which OpenAPI 3.1 uses) of every JSON request body the server
// takes, in one place, checked by the one validator (src/validation.ts). The route table (api.ts) names a
// route's schema; the POST route helper validates the parsed body with it before the route's own
// code runs, so the published document and the server's checks are the same schemas.
//
// Messages stay as precise as the hand-written checks they front: schema nodes carry their own
// words (x-error, x-missing, x-additional, see src/validation.ts); a failure without them says
// where it is and what is wrong in the validator's common words.
//
// Three bodies are documented here but checked by their own parsers: OIP inference and v1
// :predict are decoded straight into the version's batch inside the one inference step, so a bad
// request is counted against the model version it was for, WebSocket frames get the very same
// checks, and messages name the model's inputs and features; realtime events share their parser
// with WebSocket event frames and name the configured events. Not for speed: bench/schemas.ts
// puts the schema check at 1-7% of the body's JSON.parse. A test holds those schemas to their parsers.

import { badRequest } from '../errors.js';
import { compileSchema, dotted, schemaErrors, type Schema } from '../validation.js';

export type { Schema };

/** A body check: throws 400 with the schema's message for the first failure, or returns. */
export type BodyCheck = (body: unknown) => void;

const compiled = new WeakMap<Schema, BodyCheck>();

/** The check of a schema, compiled once. */
export function bodyCheck(schema: Schema): BodyCheck {
  let check = compiled.get(schema);
  if (check === undefined) {
    const validate = compileSchema(schema);
    check = (body) => {
      if (!validate(body)) throw badRequest(schemaErrors(validate.errors, { data: body, schema, place: bodyPlace })[0]!);
    };
    compiled.set(schema, check);
  }
  return check;
}

/** `inputs[0].name`, or "body" for the whole body. */
const bodyPlace = (segments: string[]): string => dotted(segments) || 'body';

// Building blocks.

const str = (extra: Schema = {}): Schema => ({ type: 'string', ...extra });
const reason = (what = 'reason'): Schema =>
  str({
    minLength: 1,
    maxLength: 1000,
    description: `Why (recorded with the change); at most 1000 characters.`,
    'x-error': `"${what}" must be a non-empty string (at most 1000 characters)`,
  });
const version = (where: string, description: string): Schema => ({
  type: 'integer',
  minimum: 1,
  'x-error': `${where} must be a positive integer version`,
  'x-missing': `${where} must be a positive integer version`,
  description,
});

export const DATATYPES = [
  'BOOL',
  'UINT8',
  'UINT16',
  'UINT32',
  'UINT64',
  'INT8',
  'INT16',
  'INT32',
  'INT64',
  'FP16',
  'FP32',
  'FP64',
  'BYTES',
] as const;

/** Nested arrays of numbers, booleans or strings (BYTES), flat or shaped like the tensor. */
const tensorData: Schema = {
  type: 'array',
  description: "The tensor's elements in row-major order, flat or nested as its shape.",
  items: { type: ['number', 'boolean', 'string', 'array'] },
};

// Bodies documented here and checked by the parser they share with another transport (see top).

export const OIP_INFER_REQUEST: Schema = {
  type: 'object',
  required: ['inputs'],
  properties: {
    id: str({ description: "Echoed in the answer; becomes the prediction's request id." }),
    parameters: {
      type: 'object',
      description: '{"explain": true, "top_k"?: K} asks for reason codes (answered in parameters.explanation, one per row).',
    },
    inputs: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['name', 'shape', 'datatype', 'data'],
        properties: {
          name: str(),
          shape: { type: 'array', items: { type: 'integer', minimum: 1 } },
          datatype: { enum: [...DATATYPES] },
          parameters: { type: 'object' },
          data: tensorData,
        },
      },
    },
    outputs: {
      type: 'array',
      items: { type: 'object', required: ['name'], properties: { name: str(), parameters: { type: 'object' } } },
    },
  },
};

const instances: Schema = {
  type: 'array',
  minItems: 1,
  description: "Rows: arrays of the input's values, objects of named features (model.yaml `features`), or objects of per-input rows.",
  items: { type: ['array', 'object'] },
};
const topK: Schema = {
  type: 'integer',
  minimum: 1,
  description: 'Only the K largest contributions (the rest summed in "rest"); default all.',
  'x-error': '"top_k" must be a positive integer, got {value}',
};

export const V1_PREDICT_REQUEST: Schema = {
  type: 'object',
  required: ['instances'],
  properties: { instances },
};

export const V1_EXPLAIN_REQUEST: Schema = {
  type: 'object',
  required: ['instances'],
  properties: { instances, top_k: topK },
};

const event: Schema = {
  type: 'object',
  required: ['event', 'entity'],
  properties: {
    id: str({ minLength: 1, maxLength: 200, description: 'Idempotency key; generated when absent.' }),
    event: str({ description: 'An event the feature definitions aggregate.' }),
    entity: { type: 'object', description: 'The entity keys, e.g. {"customer_id": "C00042"}.' },
    ts: { type: ['number', 'string'], description: 'Epoch milliseconds or ISO 8601; default now.' },
    fields: { type: 'object', description: "Values the event's aggregations sum." },
  },
};

export const EVENTS_REQUEST: Schema = {
  type: 'object',
  description: 'One event, or {"events": [...]} (at most 10,000).',
  if: { required: ['events'] },
  // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword, not a thenable
  then: { properties: { events: { type: 'array', minItems: 1, maxItems: 10_000, items: event } } },
  else: event,
};

// Bodies the POST route helper checks with these schemas.

export const SCORE_REQUEST: Schema = {
  type: 'object',
  'x-error': 'request body must be a JSON object with an "entity"',
  required: ['entity'],
  properties: {
    entity: {
      type: 'object',
      description: "The entity keys the model's features are looked up by.",
      'x-missing': '"entity" is required, e.g. {"customer_id": "C00042"}',
      'x-error': '"entity" must be an object of entity keys, e.g. {"customer_id": "C00042"}',
    },
    context: {
      type: 'object',
      description: 'Request fields the model binds (request.<field>).',
      'x-error': '"context" must be an object of request fields',
    },
    features: {
      type: 'object',
      description: "Feature values that override the store's.",
      'x-error': '"features" must be an object of feature overrides',
    },
    debug: {
      type: 'boolean',
      description: 'Answer with the resolved features and where each came from.',
      'x-error': '"debug" must be true or false',
    },
    id: str({ description: 'The request id (generated when absent).', 'x-error': '"id" must be a string' }),
    explain: {
      type: 'boolean',
      description: 'Answer with the reason codes of the score ("explanation").',
      'x-error': '"explain" must be true or false',
    },
    top_k: topK,
  },
  // top_k only means something with explain.
  if: { required: ['top_k'] },
  // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword, not a thenable
  then: { properties: { explain: { const: true, 'x-error': '"top_k" needs "explain": true' } }, required: ['explain'] },
};

const label = (at: string): Schema => ({
  type: 'object',
  'x-error': `${at} must be an object {"request_id", "label"}`,
  required: ['request_id', 'label'],
  properties: {
    request_id: str({
      minLength: 1,
      maxLength: 256,
      'x-error': `${at}.request_id must be a non-empty string`,
      description: 'The id of a logged prediction.',
    }),
    label: {
      type: ['number', 'boolean'],
      'x-error': `${at}.label must be a finite number (0/1 for classification) or a boolean`,
      description: 'The outcome: 0/1 (or false/true) for a classifier, any finite number for a regression.',
    },
  },
});
const labels = (at: string): Schema => ({
  type: 'array',
  minItems: 1,
  maxItems: 10_000,
  'x-error': 'feedback must hold at least one {"request_id", "label"} and at most 10000',
  items: label(`${at}[{0}]`),
});

export const FEEDBACK_REQUEST: Schema = {
  description: 'One label, a list of labels, or {"feedback": [labels]}.',
  if: { type: 'array' },
  // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword, not a thenable
  then: labels('feedback'),
  else: {
    if: { type: 'object', required: ['feedback'] },
    // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword, not a thenable
    then: { properties: { feedback: labels('feedback') } },
    else: label('feedback'),
  },
};

export const ALIAS_REQUEST: Schema = {
  type: 'object',
  'x-error': 'body must be {"version": <integer>, "reason"?: "..."}',
  required: ['version'],
  properties: {
    version: {
      type: 'integer',
      minimum: 1,
      'x-error': 'body must be {"version": <integer>, "reason"?: "..."}',
      'x-missing': 'body must be {"version": <integer>, "reason"?: "..."}',
    },
    reason: str({ 'x-error': '"reason" must be a string' }),
  },
};

export const REASON_REQUEST: Schema = {
  type: 'object',
  'x-error': 'the body, when given, must be a JSON object {"reason"}',
  properties: { reason: reason() },
};

export const INCIDENT_REQUEST: Schema = {
  type: 'object',
  'x-error': 'an incident is a JSON object {"model", "reason", "severity"?}',
  required: ['model', 'reason'],
  properties: {
    model: str({ minLength: 1, 'x-error': '"model" must be a model name' }),
    reason: reason(),
    severity: {
      enum: ['info', 'warning', 'critical', 'emergency'],
      default: 'critical',
      'x-error': '"severity" must be info, warning, critical or emergency',
    },
  },
};

const strategy = (name: string, properties: Record<string, Schema>, required: string[]): Schema => ({
  if: { required: ['strategy'], properties: { strategy: { const: name } } },
  // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword, not a thenable
  then: {
    required,
    properties: { ...properties, strategy: { const: name }, reason: true },
    additionalProperties: false,
    'x-additional': `${name}: unknown field '{property}' (allowed: strategy, ${Object.keys(properties).join(', ')})`,
  },
});

export const DEPLOYMENT_REQUEST: Schema = {
  type: 'object',
  'x-error': 'deployment must be an object',
  required: ['strategy'],
  properties: {
    strategy: {
      enum: ['direct', 'blue-green', 'canary', 'ab', 'shadow'],
      'x-error': 'strategy must be one of direct, blue-green, canary, ab, shadow',
      'x-missing': 'strategy must be one of direct, blue-green, canary, ab, shadow',
    },
    reason: str({ description: 'Why (recorded in the deployment history).' }),
  },
  allOf: [
    strategy('direct', { version: version('version', 'The version every request goes to.') }, ['version']),
    strategy(
      'blue-green',
      {
        blue: version('blue', 'The blue slot.'),
        green: version('green', 'The green slot.'),
        active: { enum: ['blue', 'green'], 'x-error': "active must be 'blue' or 'green'", 'x-missing': "active must be 'blue' or 'green'" },
      },
      ['blue', 'green', 'active'],
    ),
    strategy(
      'canary',
      {
        stable: version('stable', 'The version most traffic stays on.'),
        canary: version('canary', 'The version under analysis.'),
        percent: {
          type: 'number',
          minimum: 0,
          maximum: 100,
          'x-error': 'percent must be a number from 0 to 100',
          'x-missing': 'percent must be a number from 0 to 100',
        },
        steps: {
          type: 'array',
          minItems: 1,
          items: { type: 'number', exclusiveMinimum: 0, maximum: 100, 'x-error': 'steps must be increasing percentages in (0, 100]' },
          'x-error': 'steps must be a non-empty array of percentages',
          description: 'Increasing percentages ending at 100; analysis advances one step every stepSeconds.',
        },
        stepSeconds: { type: 'number', minimum: 1, 'x-error': 'stepSeconds must be at least 1 when steps are given' },
      },
      ['stable', 'canary', 'percent'],
    ),
    strategy(
      'ab',
      {
        variants: {
          type: 'array',
          minItems: 2,
          'x-error': 'variants must list at least two variants',
          'x-missing': 'variants must list at least two variants',
          items: {
            type: 'object',
            'x-error': 'variants[{0}] must be an object',
            required: ['name', 'version', 'weight'],
            additionalProperties: false,
            'x-additional': "variants[{0}]: unknown field '{property}' (allowed: name, version, weight)",
            properties: {
              name: str({ pattern: '^[a-z][a-z0-9_-]{0,31}$', 'x-error': 'variants[{0}].name must match /^[a-z][a-z0-9_-]{0,31}$/' }),
              version: version('variants[{0}].version', 'The version this variant routes to.'),
              weight: {
                type: 'number',
                minimum: 0,
                'x-error': 'variants[{0}].weight must be a number >= 0',
                'x-missing': 'variants[{0}].weight must be a number >= 0',
              },
            },
          },
        },
        stickyKey: str({
          pattern: '^(header:[a-z0-9-]{1,64}|entity:[A-Za-z_][A-Za-z0-9_]{0,63})$',
          'x-error': "stickyKey must be 'header:<lower-case header name>' or 'entity:<field>'",
        }),
      },
      ['variants'],
    ),
    strategy(
      'shadow',
      {
        primary: version('primary', 'The version that answers.'),
        shadow: version('shadow', 'The version that gets a copy of each request, off the response path.'),
      },
      ['primary', 'shadow'],
    ),
  ],
};

export const INDEX_REQUEST: Schema = {
  type: 'object',
  'x-error': 'the body, when given, must be a JSON object {"ready": true|false}',
  properties: { ready: { type: 'boolean', description: 'Only versions that are ready.', 'x-error': '"ready" must be true or false' } },
};

export const MODEL_CONTROL_REQUEST: Schema = {
  type: 'object',
  'x-error': 'the body, when given, must be a JSON object {"parameters": {...}}',
  properties: {
    parameters: {
      type: 'object',
      'x-error': '"parameters" must be an object',
      description:
        'Triton\'s load/unload parameters: accepted and ignored (a model\'s settings come from its model.yaml); "file:<path>" uploads are refused.',
    },
  },
};
