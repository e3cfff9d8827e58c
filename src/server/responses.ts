// The shapes of the server's JSON answers, as the API description (api.ts) documents them: the
// error body every failure shares, tensors and metadata, inference, explanation and scoring answers,
// and the admin and model control answers. Descriptive: the server writes these bodies itself (on
// the hot path, without a serializer); the e2e test of /openapi.json checks every error body it
// gets against ERROR.

import { DATATYPES, type Schema } from './schemas.js';

export const ERROR: Schema = {
  type: 'object',
  required: ['error', 'code'],
  properties: {
    error: { type: 'string', description: 'What was wrong, precisely.' },
    code: {
      type: 'string',
      pattern: '^SCORELINE_[A-Z_]+$',
      description: 'Stable across releases (the README lists every code): match on it, not on the message.',
    },
  },
};
const tensor = (withData: boolean): Schema => ({
  type: 'object',
  required: ['name', 'datatype', 'shape', ...(withData ? ['data'] : [])],
  properties: {
    name: { type: 'string' },
    datatype: { enum: [...DATATYPES] },
    shape: {
      type: 'array',
      items: { type: 'integer' },
      description: withData ? "The tensor's shape." : '-1 where the model leaves a dimension dynamic.',
    },
    ...(withData ? { data: { type: 'array', items: { type: ['number', 'boolean', 'string'] } } } : {}),
  },
});
export const SERVER_METADATA: Schema = {
  type: 'object',
  properties: { name: { type: 'string' }, version: { type: 'string' }, extensions: { type: 'array', items: { type: 'string' } } },
};
export const MODEL_METADATA: Schema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    versions: { type: 'array', items: { type: 'string' } },
    platform: { type: 'string' },
    inputs: { type: 'array', items: tensor(false) },
    outputs: { type: 'array', items: tensor(false) },
  },
};
export const READINESS: Schema = { type: 'object', properties: { name: { type: 'string' }, ready: { type: 'boolean' } } };
export const INFER_RESPONSE: Schema = {
  type: 'object',
  properties: {
    model_name: { type: 'string' },
    model_version: { type: 'string' },
    id: { type: 'string', description: "The request id: the request's own, or generated." },
    outputs: { type: 'array', items: tensor(true) },
    parameters: { type: 'object', description: 'With parameters.explain: {"explanation": [one per row]}.' },
  },
};
/** One row's reason codes: each feature's contribution to the score's margin, largest first. */
export const EXPLANATION: Schema = {
  type: 'object',
  properties: {
    method: { enum: ['linear', 'tree_shap', 'kernel_shap'] },
    output: { type: 'string' },
    column: { type: 'integer' },
    link: { enum: ['logit', 'identity'], description: 'logit: score = 1 / (1 + e^-margin); identity: the margin is the score.' },
    score: { type: 'number' },
    margin: { type: 'number' },
    base_value: { type: 'number', description: 'base_value + the sum of the contributions = margin.' },
    contributions: {
      type: 'array',
      items: {
        type: 'object',
        properties: { feature: { type: 'string' }, value: {}, contribution: { type: 'number' }, standard_error: { type: 'number' } },
      },
    },
    rest: { type: 'object', description: 'What top_k left out: {"features", "contribution"}.' },
    reference_rows: { type: 'integer' },
  },
};
export const EXPLAIN_RESPONSE: Schema = {
  type: 'object',
  properties: {
    model_name: { type: 'string' },
    model_version: { type: 'string' },
    request_id: { type: 'string' },
    explanations: { type: 'array', items: EXPLANATION, description: 'One per instance.' },
  },
};
export const PREDICT_RESPONSE: Schema = {
  type: 'object',
  properties: {
    predictions: { type: 'array', description: 'One entry per instance: its outputs (an object when the model has several).' },
    model_name: { type: 'string' },
    model_version: { type: 'string' },
    request_id: { type: 'string' },
  },
};
export const SCORE_RESPONSE: Schema = {
  type: 'object',
  properties: {
    request_id: { type: 'string' },
    model: { type: 'string' },
    model_version: { type: 'string' },
    variant: { type: 'string', description: 'The deployment variant that answered (default, direct, stable, canary, a, ...).' },
    score: { type: ['number', 'null'] },
    entity: { type: 'object', description: 'With debug: the entity ids.' },
    features: { type: 'object', description: "With debug: each feature's value and where it came from." },
    explanation: { ...EXPLANATION, description: "With explain: the resolved row's reason codes." },
  },
};
export const EVENTS_RESPONSE: Schema = {
  type: 'object',
  properties: {
    accepted: { type: 'integer' },
    ignored: { type: 'integer' },
    duplicates: { type: 'integer' },
    ids: { type: 'array', items: { type: 'string' } },
  },
};
export const FEEDBACK_RESPONSE: Schema = {
  type: 'object',
  properties: {
    received: { type: 'integer' },
    joined: { type: 'integer' },
    unknown: { type: 'integer' },
    unknown_ids: { type: 'array', items: { type: 'string' } },
    rejected: { type: 'integer' },
    rejected_items: {
      type: 'array',
      items: { type: 'object', properties: { request_id: { type: 'string' }, label: { type: 'number' }, reason: { type: 'string' } } },
    },
  },
};
export const INDEX_RESPONSE: Schema = {
  type: 'array',
  items: {
    type: 'object',
    required: ['name', 'version', 'state', 'reason'],
    properties: {
      name: { type: 'string' },
      version: { type: 'string' },
      state: { enum: ['READY', 'LOADING', 'UNAVAILABLE'] },
      reason: { type: 'string' },
    },
  },
};
export const LOADED: Schema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    versions: { type: 'array', items: { type: 'integer' } },
    ignored_parameters: { type: 'array', items: { type: 'string' }, description: 'Load parameters accepted and ignored.' },
  },
};
export const REGISTERED: Schema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    version: { type: 'integer' },
    sha256: { type: 'string' },
    features: { type: ['array', 'null'], items: { type: 'string' }, description: 'MLflow archives: the feature names the signature gave.' },
  },
};
export const OBJECT = (description: string): Schema => ({ type: 'object', description });
