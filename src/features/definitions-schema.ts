// The shape of a feature definitions document (ajv schema and the raw types it guarantees), schema
// errors rewritten to name the feature and path (`features[3] (dti@2): dtype: ...`), and the
// rules for single values (durations, values of a dtype). The rules between fields (references,
// fallbacks, expressions, cycles) live in definitions.ts.

import { compileSchema, schemaErrors, show, type ErrorObject } from '../validation.js';
import type { Dtype, FeatureType } from './types.js';
import type { Aggregation } from './windows.js';

export interface RawEntity {
  name: string;
  key: string;
  pattern?: string;
}

export interface RawSource {
  path: string;
  entity: string;
  timestampColumn?: string;
  format?: 'csv' | 'jsonl';
}

export interface RawFeature {
  name: string;
  version: number;
  entity: string;
  type: FeatureType;
  dtype: Dtype;
  description?: string;
  ttl?: string | number;
  source?: string;
  column?: string;
  dependsOn?: string[];
  expression?: string;
  module?: string;
  function?: string;
  event?: string;
  aggregation?: Aggregation;
  field?: string;
  window?: string | number;
  fallback?: string | Record<string, unknown>;
}

export interface RawDocument {
  entities: RawEntity[];
  sources?: Record<string, RawSource>;
  features: RawFeature[];
}

// `__proto__` is refused so a feature name can always be a plain object key.
export const NAME_PATTERN = '^(?!__proto__$)[a-z_][a-z0-9_]*$';
const FIELD_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';
const name = { type: 'string', pattern: NAME_PATTERN } as const;
const text = { type: 'string', minLength: 1 } as const;

export const FEATURE_TYPES: readonly FeatureType[] = ['online', 'offline', 'realtime', 'hybrid'];
export const DTYPES: readonly Dtype[] = ['float64', 'float32', 'int64', 'int32', 'bool'];

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['entities', 'features'],
  properties: {
    entities: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'key'],
        properties: { name, key: { type: 'string', pattern: FIELD_PATTERN }, pattern: text },
      },
    },
    sources: {
      type: 'object',
      propertyNames: { pattern: NAME_PATTERN },
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        required: ['path', 'entity'],
        properties: { path: text, entity: text, timestampColumn: text, format: { enum: ['csv', 'jsonl'] } },
      },
    },
    features: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'version', 'entity', 'type', 'dtype'],
        properties: {
          name,
          version: { type: 'integer', minimum: 1 },
          entity: text,
          type: { enum: FEATURE_TYPES },
          dtype: { enum: DTYPES },
          description: { type: 'string' },
          ttl: { type: ['string', 'number'] },
          source: text,
          column: text,
          dependsOn: { type: 'array', items: text },
          expression: text,
          module: text,
          function: { type: 'string', pattern: '^[A-Za-z_$][A-Za-z0-9_$]*$' },
          event: name,
          aggregation: { enum: ['count', 'sum', 'mean', 'min', 'max'] },
          field: { type: 'string', pattern: FIELD_PATTERN },
          window: { type: ['string', 'number'] },
          fallback: { type: ['string', 'object'] },
        },
      },
    },
  },
} as const;

export const validateDocument = compileSchema<RawDocument>(schema);

/** `features[3] (debt_to_income@2)`, or less when the item lacks a usable name or version. */
export function featureLabel(index: number, raw: unknown): string {
  const f = (raw ?? {}) as { name?: unknown; version?: unknown };
  if (typeof f.name !== 'string') return `features[${index}]`;
  return Number.isInteger(f.version) ? `features[${index}] (${f.name}@${f.version as number})` : `features[${index}] (${f.name})`;
}

export { show };

/** The words of the failures the common wording does not suit: names that break a pattern. */
function say(e: ErrorObject, got: unknown): string | undefined {
  switch (e.keyword) {
    case 'pattern': {
      const p = (e.params as { pattern: string }).pattern;
      const rule =
        p === NAME_PATTERN
          ? 'lowercase letters, digits and _, not starting with a digit'
          : p === FIELD_PATTERN
            ? 'letters, digits and _, not starting with a digit'
            : 'a JavaScript identifier';
      return `${show(e.data ?? got)} is not a valid name (${rule})`;
    }
    case 'propertyNames':
      return 'source names must be lowercase letters, digits and _, not starting with a digit';
    default:
      return undefined;
  }
}

/** `features[3] (dti@2): dtype`: the feature, entity or source a failure is in, and the path within it. */
function placeIn(doc: unknown): (segments: string[]) => string {
  return (segments) => {
    let label = '(root)';
    let rest = segments;
    if ((segments[0] === 'features' || segments[0] === 'entities') && segments.length >= 2) {
      const i = Number(segments[1]);
      const item = valueAt(doc, segments.slice(0, 2));
      label =
        segments[0] === 'features'
          ? featureLabel(i, item)
          : typeof (item as { name?: unknown })?.name === 'string'
            ? `entities[${i}] (${(item as { name: string }).name})`
            : `entities[${i}]`;
      rest = segments.slice(2);
    } else if (segments[0] === 'sources' && segments.length >= 2) {
      label = `sources.${segments[1]}`;
      rest = segments.slice(2);
    } else if (segments.length) {
      label = segments[0]!;
      rest = segments.slice(1);
    }
    const path = rest.map((s, k) => (/^\d+$/.test(s) ? `[${s}]` : k === 0 ? s : `.${s}`)).join('');
    return path ? `${label}: ${path}` : label;
  };
}

function valueAt(doc: unknown, segments: string[]): unknown {
  let v = doc;
  for (const s of segments) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[s] : undefined;
  return v;
}

/** One line per schema error, naming the feature / entity / source and the path within it. */
export function describeSchemaErrors(doc: unknown, errors: ErrorObject[] | null | undefined): string {
  return schemaErrors(errors, { data: doc, schema, place: placeIn(doc), say }).join('; ');
}

// ---- single values ----------------------------------------------------------------------------

const INT_RANGE: Partial<Record<Dtype, [number, number, string]>> = {
  int32: [-(2 ** 31), 2 ** 31 - 1, 'within the int32 range'],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 'within +-(2^53 - 1), the integers a double holds exactly'],
};

/** Why `value` cannot be a value of `dtype`, or null when it can. */
export function dtypeMismatch(dtype: Dtype, value: unknown): string | null {
  if (dtype === 'bool') return typeof value === 'boolean' ? null : 'must be true or false';
  if (typeof value !== 'number') return 'must be a number';
  if (!Number.isFinite(value)) return 'must be finite';
  const range = INT_RANGE[dtype];
  if (range) {
    if (!Number.isInteger(value)) return 'must be an integer';
    if (value < range[0] || value > range[1]) return `must be ${range[2]}`;
  }
  if (dtype === 'float32' && Math.abs(value) > 3.4028234663852886e38) return 'must be within the float32 range';
  return null;
}
