// The one JSON Schema validator of scoreline and the words of its failures. Every schema-checked
// shape (the server config, model.yaml, feature definitions, HTTP request bodies) is compiled by
// the one ajv instance here and its failures are put into words by schemaErrors(), so a mistake
// reads the same wherever it is made: `<where>: <what>`, joined with '; ', e.g.
// `log.level: must be one of fatal, error, ... (got 'loud')`.
//
// A schema node may carry its own words: `x-error` (its message when the node's own checks fail),
// `x-missing` (when it is a required property that is absent) and `x-additional` (when an object
// has a property it does not allow). Those are whole messages, where included; in them {0}, {1},
// ... are the array indices on the way to the failing value, {value} that value as JSON and
// {property} the property ajv names (an unknown or missing one).
//
// Options, for all: allErrors (a config file lists every mistake at once; a request body shows the
// first), allowUnionTypes (['string', 'number'] fields), verbose (a failure carries the failing
// value, for the messages; it costs nothing on a value that passes), strict with strictTypes and
// strictRequired off (if/then branches name properties without repeating their types). Draft
// 2020-12, which OpenAPI 3.1 uses for the request bodies; the other schemas use nothing that
// draft changed.

import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';

export type { ErrorObject, ValidateFunction };

/** A JSON Schema as plain data. */
export type Schema = { readonly [key: string]: unknown };

const ajv = new Ajv2020({
  allErrors: true,
  strict: true,
  strictTypes: false,
  strictRequired: false,
  allowUnionTypes: true,
  verbose: true,
});
ajv.addVocabulary(['x-error', 'x-missing', 'x-additional']);

/**
 * The validator of a schema, compiled once by the caller. T is what a passing value is taken to
 * be: ajv's JSONSchemaType<T> cannot check that here, because it types every optional property as
 * `nullable: true` (which would let null through where the code expects a value or nothing).
 */
export function compileSchema<T = unknown>(schema: Schema): ValidateFunction<T> {
  return ajv.compile<T>(schema);
}

/** A value in messages: strings in single quotes, the rest as JSON. */
export const show = (v: unknown): string => (typeof v === 'string' ? `'${v}'` : (JSON.stringify(v) ?? String(v)));

/** The instance path as property names and indices. */
export function segmentsOf(instancePath: string): string[] {
  return instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** `inputs[0].name`; '' for the root. */
export function dotted(segments: readonly string[]): string {
  return segments.reduce((acc, s) => (/^\d+$/.test(s) ? `${acc}[${s}]` : acc === '' ? s : `${acc}.${s}`), '');
}

export interface ErrorWords {
  /** The checked value (failures name what they found in it). */
  readonly data: unknown;
  /** The schema it was checked with (for its x-error / x-missing / x-additional words). */
  readonly schema: Schema;
  /** Where a failure is, from its path; default `a.b[0].c`, '(root)' for the whole value. */
  readonly place?: (segments: string[]) => string;
  /** Words for a failure the default wording does not suit (undefined: the default). */
  readonly say?: (e: ErrorObject, got: unknown) => string | undefined;
}

/** One message per failure (duplicates dropped), in the order ajv found them. */
export function schemaErrors(errors: readonly ErrorObject[] | null | undefined, words: ErrorWords): string[] {
  const place = words.place ?? ((s: string[]) => dotted(s) || '(root)');
  const out = (errors ?? [])
    // propertyNames reports once for the name and once more for the object; keep the first.
    .filter((e) => !(e.keyword === 'pattern' && e.propertyName !== undefined))
    .map((e) => {
      const own = ownWords(e, words.schema);
      if (own !== null) return own;
      const segments = segmentsOf(e.instancePath);
      const got = e.keyword === 'type' || e.keyword === 'enum' ? e.data : undefined;
      return `${place(segments)}: ${words.say?.(e, got) ?? what(e, got)}`;
    });
  return [...new Set(out)];
}

/** The keyword's words. */
function what(e: ErrorObject, got: unknown): string {
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown property '${(e.params as { additionalProperty: string }).additionalProperty}'`;
    case 'enum':
      return `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')} (got ${show(got)})`;
    case 'type':
      return `${e.message} (got ${show(got)})`;
    default:
      return e.message ?? e.keyword;
  }
}

/** The schema node a JSON pointer into the schema leads to. */
function nodeAt(root: Schema, pointer: string): Schema | undefined {
  let node: unknown = root;
  for (const raw of pointer.replace(/^#\/?/, '').split('/').filter(Boolean)) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node !== null && typeof node === 'object' ? (node as Schema) : undefined;
}

/** The schema's own message for a failure (x-error, x-missing, x-additional), or null. */
function ownWords(e: ErrorObject, root: Schema): string | null {
  const node = nodeAt(root, e.schemaPath.slice(0, e.schemaPath.lastIndexOf('/')));
  let text: unknown;
  if (e.keyword === 'required') {
    const property = nodeAt(node ?? {}, `properties/${(e.params as { missingProperty: string }).missingProperty}`);
    text = property?.['x-missing'] ?? property?.['x-error'];
  } else text = e.keyword === 'additionalProperties' ? node?.['x-additional'] : node?.['x-error'];
  return typeof text === 'string' ? fill(text, e) : null;
}

function fill(template: string, e: ErrorObject): string {
  const indices = e.instancePath.split('/').filter((s) => /^\d+$/.test(s));
  const property =
    (e.params as { additionalProperty?: string; missingProperty?: string }).additionalProperty ??
    (e.params as { missingProperty?: string }).missingProperty ??
    '';
  return template
    .replace(/\{(\d+)\}/g, (_, i: string) => indices[Number(i)] ?? '?')
    .replace(/\{property\}/g, property)
    .replace(/\{value\}/g, () => JSON.stringify(e.data) ?? String(e.data));
}
