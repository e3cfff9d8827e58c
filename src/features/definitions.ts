// Feature definitions: the YAML format (entities, offline sources, features), its validation
// (schema by ajv, then the rules the schema cannot say: references, types, durations, fallbacks,
// expressions, dependency cycles) with errors naming the feature and the path that failed, and
// loading into a compiled FeatureRegistry (plan.ts). The shape of the document is in
// definitions-schema.ts.

import { readFile } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import YAML from 'yaml';
import { parseDuration } from '../duration.js';
import { configInvalid } from '../errors.js';
import { compileExpression, type CompiledExpression, type Scalar } from './expression.js';
import {
  describeSchemaErrors,
  dtypeMismatch,
  featureLabel,
  show,
  validateDocument,
  type RawDocument,
  type RawFeature,
} from './definitions-schema.js';
import { importModuleFunctions, FeatureRegistry } from './plan.js';
import type { Dependency, EntityDef, Fallback, FeatureDef, FeatureDefinitions, RealtimeDef, SourceDef } from './types.js';
import { MIN_BUCKET_MS, streamName } from './windows.js';

export type * from './types.js';

export interface LoadOptions {
  /** Folder that relative source and module paths start from. Default: the current directory. */
  baseDir?: string;
  /** Name used in error messages. Default: `feature definitions`. */
  source?: string;
}

export { dtypeMismatch, parseDuration };

// ---- small rules ----------------------------------------------------------------------------

const REF = /^([a-z_][a-z0-9_]*)(?:@([1-9][0-9]*))?$/;
const REQUEST_FIELD = /^[A-Za-z_][A-Za-z0-9_]*$/;

function knownList(names: Iterable<string>): string {
  const all = [...new Set(names)];
  return all.length > 20 ? `${all.slice(0, 20).join(', ')}, and ${all.length - 20} more` : all.join(', ') || 'none';
}

// ---- parsing --------------------------------------------------------------------------------

/**
 * Parses and validates a definitions document without importing modules (their functions are
 * bound by loadFeatureDefinitions). Throws CONFIG_INVALID listing every problem found.
 */
export function parseFeatureDefinitions(text: string, options: LoadOptions = {}): FeatureDefinitions {
  const source = options.source ?? 'feature definitions';
  const baseDir = resolve(options.baseDir ?? '.');
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    throw configInvalid(`${source}: cannot parse: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!validateDocument(doc)) throw configInvalid(`${source} is invalid: ${describeSchemaErrors(doc, validateDocument.errors)}`);
  const errors: string[] = [];
  const defs = build(doc as RawDocument, baseDir, errors);
  if (errors.length) throw configInvalid(`${source} is invalid: ${errors.join('; ')}`);
  return { source, baseDir, ...defs };
}

function build(doc: RawDocument, baseDir: string, errors: string[]): Omit<FeatureDefinitions, 'source' | 'baseDir'> {
  const entities = new Map<string, EntityDef>();
  doc.entities.forEach((e, i) => {
    const at = `entities[${i}] (${e.name})`;
    if (entities.has(e.name)) errors.push(`${at}: duplicate entity '${e.name}'`);
    let pattern: RegExp | null = null;
    if (e.pattern !== undefined) {
      try {
        pattern = new RegExp(`^(?:${e.pattern})$`);
      } catch (err) {
        errors.push(`${at}: pattern: ${(err as Error).message}`);
      }
    }
    entities.set(e.name, { name: e.name, key: e.key, pattern, patternText: pattern ? e.pattern! : null });
  });
  const unknownEntity = (name: string) => `unknown entity '${name}' (known: ${knownList(entities.keys())})`;

  const sources = new Map<string, SourceDef>();
  for (const [name, s] of Object.entries(doc.sources ?? {})) {
    const at = `sources.${name}`;
    if (!entities.has(s.entity)) errors.push(`${at}: entity: ${unknownEntity(s.entity)}`);
    const ext = extname(s.path).toLowerCase();
    const format = s.format ?? (ext === '.csv' ? 'csv' : ext === '.jsonl' || ext === '.ndjson' ? 'jsonl' : null);
    if (!format) errors.push(`${at}: path: cannot tell the format of '${s.path}' (use .csv or .jsonl, or set format)`);
    sources.set(name, {
      name,
      path: resolve(baseDir, s.path),
      format: format ?? 'csv',
      entity: s.entity,
      timestampColumn: s.timestampColumn ?? null,
    });
  }

  // Every (name, version) first, so references can point forward.
  const versions = new Map<string, number[]>();
  const rawByRef = new Map<string, RawFeature>();
  doc.features.forEach((f, i) => {
    const ref = `${f.name}@${f.version}`;
    if (rawByRef.has(ref)) errors.push(`${featureLabel(i, f)}: duplicate feature ${ref}`);
    rawByRef.set(ref, f);
    const list = versions.get(f.name) ?? [];
    if (!list.includes(f.version)) list.push(f.version);
    versions.set(f.name, list);
  });
  const latest = new Map<string, string>();
  for (const [name, list] of versions) latest.set(name, `${name}@${Math.max(...list)}`);

  const features = doc.features.map((f, i) =>
    buildFeature(f, i, { baseDir, entities, sources, versions, latest, rawByRef, unknownEntity }, errors),
  );
  const byRef = new Map(features.map((f) => [f.ref, f]));
  const order = errors.length ? [] : topologicalOrder(features, byRef, errors);
  return { entities, sources, features, byRef, latest, order };
}

interface Context {
  baseDir: string;
  entities: Map<string, EntityDef>;
  sources: Map<string, SourceDef>;
  versions: Map<string, number[]>;
  latest: Map<string, string>;
  rawByRef: Map<string, RawFeature>;
  unknownEntity: (name: string) => string;
}

function buildFeature(f: RawFeature, i: number, ctx: Context, errors: string[]): FeatureDef {
  const label = featureLabel(i, f);
  const err = (path: string, message: string) => errors.push(`${label}: ${path}: ${message}`);
  const ref = `${f.name}@${f.version}`;
  const type = f.type;
  const computes = f.expression !== undefined || f.module !== undefined;

  if (!ctx.entities.has(f.entity)) err('entity', ctx.unknownEntity(f.entity));

  let ttlMs = 0;
  if (f.ttl !== undefined) {
    const ttl = parseDuration(f.ttl);
    if (typeof ttl === 'string') err('ttl', ttl);
    else ttlMs = ttl;
  }

  // Offline part.
  let source: SourceDef | null = null;
  if (type === 'offline' || type === 'hybrid') {
    if (f.source === undefined) err('source', `required for ${type === 'offline' ? 'an offline' : 'a hybrid'} feature`);
    else if (!ctx.sources.has(f.source)) err('source', `unknown source '${f.source}' (known: ${knownList(ctx.sources.keys())})`);
    else {
      source = ctx.sources.get(f.source)!;
      if (source.entity !== f.entity) err('source', `'${f.source}' holds entity '${source.entity}', not '${f.entity}'`);
    }
  } else {
    for (const key of ['source', 'column'] as const) if (f[key] !== undefined) err(key, `only offline and hybrid features have a ${key}`);
  }

  // Realtime part.
  let realtime: RealtimeDef | null = null;
  if (type === 'realtime' || type === 'hybrid') {
    for (const key of ['event', 'aggregation', 'window'] as const) if (f[key] === undefined) err(key, `required for a ${type} feature`);
    if (f.aggregation !== undefined && f.aggregation !== 'count' && f.field === undefined)
      err('field', `required for aggregation ${f.aggregation} (the numeric event field to aggregate)`);
    if (type === 'hybrid' && f.aggregation !== undefined && f.aggregation !== 'count' && f.aggregation !== 'sum')
      err('aggregation', `a hybrid feature adds its realtime part to the offline value, so only count and sum work, not ${f.aggregation}`);
    if (f.dtype === 'bool') err('dtype', `a ${type} aggregation is numeric; bool is not allowed`);
    let windowMs = 0;
    if (f.window !== undefined) {
      const w = parseDuration(f.window);
      if (typeof w === 'string') err('window', w);
      else if (w === 0) err('window', 'must be greater than 0');
      else if (w < MIN_BUCKET_MS) err('window', `${show(f.window)} is shorter than 1s, the smallest bucket`);
      else windowMs = w;
    }
    if (f.event !== undefined && f.aggregation !== undefined && windowMs > 0) {
      const field = f.field ?? null;
      const seriesWindowMs = type === 'hybrid' && ttlMs > 0 ? Math.max(MIN_BUCKET_MS, Math.min(windowMs, ttlMs)) : windowMs;
      realtime = { event: f.event, aggregation: f.aggregation, field, windowMs, stream: streamName(f.event, field), seriesWindowMs };
    }
  } else {
    for (const key of ['event', 'aggregation', 'field', 'window'] as const)
      if (f[key] !== undefined) err(key, `only realtime and hybrid features have ${key === 'aggregation' ? 'an' : 'a'} ${key}`);
  }

  // Computation.
  let module: FeatureDef['module'] = null;
  if (f.expression !== undefined && f.module !== undefined) err('module', 'give either expression or module, not both');
  if (type === 'online' && !computes) err('expression', 'an online feature needs an expression or a module with a function');
  if (f.module !== undefined && f.function === undefined) err('function', 'required with module (the exported function to call)');
  if (f.function !== undefined && f.module === undefined) err('function', 'only used with module');
  if (f.module !== undefined && f.function !== undefined) module = { path: resolve(ctx.baseDir, f.module), exportName: f.function };

  let fallback: Fallback = { kind: 'error' };
  if (f.fallback !== undefined) {
    const fb = f.fallback;
    if (typeof fb === 'string') {
      if (fb === 'last_known' || fb === 'compute' || fb === 'error') fallback = { kind: fb };
      else err('fallback', `${show(fb)} is not a fallback (use { default: value }, last_known, compute or error)`);
    } else {
      const keys = Object.keys(fb);
      if (keys.length !== 1 || keys[0] !== 'default')
        err('fallback', `an object fallback is { default: value }, got keys ${keys.join(', ') || 'none'}`);
      else {
        const why = dtypeMismatch(f.dtype, fb.default);
        if (why) err('fallback.default', `${show(fb.default)} is not a valid ${f.dtype} (${why})`);
        else fallback = { kind: 'default', value: fb.default as Scalar };
      }
    }
  }
  if (fallback.kind === 'compute' && !computes)
    err('fallback', 'compute needs an expression or a module (it computes the value from dependsOn)');
  if (type !== 'online' && computes && fallback.kind !== 'compute')
    err(
      f.expression !== undefined ? 'expression' : 'module',
      `a ${type} feature only computes as its fallback; set fallback: compute or remove it`,
    );
  if (f.dependsOn?.length && !computes) err('dependsOn', 'only an expression or a module reads dependencies; this feature has neither');

  const beforeDeps = errors.length;
  const dependsOn = resolveDependencies(f, ctx, (m) => err('dependsOn', m));
  let expression: CompiledExpression | null = null;
  // With a dependency missing, every use of it would be reported again as an unknown variable.
  if (f.expression !== undefined && errors.length === beforeDeps) {
    try {
      expression = compileExpression(
        f.expression,
        dependsOn.map((d) => d.variable),
      );
    } catch (e) {
      err('expression', (e as Error).message);
    }
  }

  return {
    ref,
    name: f.name,
    version: f.version,
    entity: f.entity,
    type,
    dtype: f.dtype,
    ttlMs,
    dependsOn,
    source,
    column: source ? (f.column ?? f.name) : null,
    realtime,
    expression,
    module,
    fallback,
    description: f.description ?? null,
    path: `features[${i}]`,
  };
}

function resolveDependencies(f: RawFeature, ctx: Context, err: (message: string) => void): Dependency[] {
  const out: Dependency[] = [];
  const seen = new Map<string, string>();
  for (const raw of f.dependsOn ?? []) {
    let dep: Dependency;
    if (raw.startsWith('request.')) {
      const field = raw.slice('request.'.length);
      if (!REQUEST_FIELD.test(field)) {
        err(`bad request field '${raw}' (request.<field>: letters, digits and _, not starting with a digit)`);
        continue;
      }
      dep = { kind: 'request', field, variable: field };
    } else {
      const m = REF.exec(raw);
      if (!m) {
        err(`'${raw}' is not a feature reference (name, name@version or request.<field>)`);
        continue;
      }
      const name = m[1]!;
      const list = ctx.versions.get(name);
      if (!list) {
        err(`unknown feature '${raw}' (known: ${knownList(ctx.versions.keys())})`);
        continue;
      }
      const ref = m[2] ? `${name}@${m[2]}` : ctx.latest.get(name)!;
      const target = ctx.rawByRef.get(ref);
      if (!target) {
        err(`unknown feature version '${raw}' (known versions of ${name}: ${[...list].sort((a, b) => a - b).join(', ')})`);
        continue;
      }
      if (target.entity !== f.entity) {
        err(`'${ref}' is a feature of entity '${target.entity}', not '${f.entity}'`);
        continue;
      }
      dep = { kind: 'feature', ref, variable: name };
    }
    const other = seen.get(dep.variable);
    if (other !== undefined) {
      err(other === raw ? `'${raw}' is listed twice` : `'${other}' and '${raw}' would both be the variable '${dep.variable}'`);
      continue;
    }
    seen.set(dep.variable, raw);
    out.push(dep);
  }
  return out;
}

/** Depth-first post-order over dependsOn; every back edge is a cycle, reported by its path. */
function topologicalOrder(features: readonly FeatureDef[], byRef: ReadonlyMap<string, FeatureDef>, errors: string[]): string[] {
  const state = new Map<string, 'open' | 'done'>();
  const order: string[] = [];
  const stack: string[] = [];
  const visit = (f: FeatureDef): void => {
    state.set(f.ref, 'open');
    stack.push(f.ref);
    for (const d of f.dependsOn) {
      if (d.kind !== 'feature') continue;
      const s = state.get(d.ref);
      if (s === 'open') {
        const cycle = [...stack.slice(stack.indexOf(d.ref)), d.ref];
        const first = byRef.get(d.ref)!;
        errors.push(`${first.path} (${first.ref}): dependsOn: dependency cycle: ${cycle.join(' -> ')}`);
      } else if (s === undefined) visit(byRef.get(d.ref)!);
    }
    stack.pop();
    state.set(f.ref, 'done');
    order.push(f.ref);
  };
  for (const f of features) if (!state.has(f.ref)) visit(f);
  return order;
}

// ---- loading --------------------------------------------------------------------------------

/** Validates `text`, imports the module functions it names and compiles the registry. */
export async function loadFeatureDefinitions(text: string, options: LoadOptions = {}): Promise<FeatureRegistry> {
  const defs = parseFeatureDefinitions(text, options);
  return new FeatureRegistry(defs, await importModuleFunctions(defs));
}

export async function loadFeatureDefinitionsFile(path: string): Promise<FeatureRegistry> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw configInvalid(`cannot read feature definitions ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return loadFeatureDefinitions(text, { baseDir: dirname(resolve(path)), source: path });
}
