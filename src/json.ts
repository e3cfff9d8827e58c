// Shape checks for parsed JSON and YAML (request bodies, definition files, stored records): the one
// place that says what counts as an object, so every reader refuses the same inputs.

/** A plain object: not null and not an array. */
export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
