// The compiled feature registry and the resolution plans it builds: for the features a model asks
// for, the dependency closure in topological order laid out as array slots, the stored groups to
// fetch (one Redis hash / cache entry per entity and feature version), the realtime windows, the
// request fields, and compiled compute functions. Built once per model at load; per request the
// resolver only fills a slot array. Also reads entity ids from requests (the 400s for bad ids).

import { existsSync } from 'node:fs';
import { extname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { badRequest, configInvalid } from '../errors.js';
import { groupLayout, type GroupLayout } from './codec.js';
import type { Dtype, EntityDef, FeatureDef, FeatureDefinitions, SourceDef } from './types.js';
import type { Scalar, ScalarInput } from './expression.js';
import type { Aggregation } from './windows.js';

/** What a module named by a feature exports: inputs keyed by dependency variable. */
export type ModuleFunction = (inputs: Record<string, Scalar>) => unknown;

/** Offline and hybrid features of one (entity, version): one Redis hash and one cache entry per id. */
export interface StoredGroup {
  readonly entity: string;
  readonly version: number;
  /** Refs in layout order; the layout's names are the feature names (the hash fields). */
  readonly refs: readonly string[];
  readonly layout: GroupLayout;
}

/** A realtime events series and the windows (series windows) read from it. */
export interface StreamSpec {
  readonly entity: string;
  readonly event: string;
  readonly field: string | null;
  readonly stream: string;
  readonly windowsMs: readonly number[];
}

export interface PlannedFeature {
  /** Its index in plan.features and in the slot array. */
  readonly slot: number;
  readonly def: FeatureDef;
  /** Slots of def.dependsOn, in order (feature slots or request-field slots). */
  readonly inputs: Int32Array;
  /**
   * Expression or module result cast to the dtype, from values keyed by dependency variable;
   * null when the feature computes nothing. NaN means "could not compute" (e.g. a missing input).
   * Expressions never throw; a module function may.
   */
  readonly compute: ((values: Readonly<Record<string, ScalarInput>>) => Scalar) | null;
  /** The same, reading dependencies straight from the plan's slot array. */
  readonly computeSlots: ((slots: ArrayLike<ScalarInput>) => Scalar) | null;
}

export interface StoredRead {
  readonly group: StoredGroup;
  /** Positions in group.layout to read ... */
  readonly fields: Int32Array;
  /** ... and the slot each goes to (codec.decodeGroupInto's `pick`). */
  readonly slots: Int32Array;
}

export interface WindowRead {
  readonly slot: number;
  readonly def: FeatureDef;
  readonly entity: string;
  readonly stream: string;
  readonly aggregation: Aggregation;
  /** The series window to read with (def.realtime.seriesWindowMs). */
  readonly windowMs: number;
  /** Hybrid: add to the stored value, counting only events after its timestamp. */
  readonly hybrid: boolean;
}

export interface ResolutionPlan {
  /** The requested refs, resolved to name@version, in request order. */
  readonly refs: readonly string[];
  /** Slot of each requested ref. */
  readonly outputSlots: Int32Array;
  /** The closure, each feature after its dependencies; features[i].slot === i. */
  readonly features: readonly PlannedFeature[];
  /** Request fields, in slots features.length .. slotCount - 1. */
  readonly requestFields: readonly { readonly field: string; readonly slot: number }[];
  readonly slotCount: number;
  readonly entities: readonly string[];
  readonly stored: readonly StoredRead[];
  readonly windows: readonly WindowRead[];
  /** Features with a compute function, in dependency order (online, and fallback: compute). */
  readonly computed: readonly PlannedFeature[];
}

/** Casts a computed value to the dtype: float32 rounds, ints truncate, bool is x !== 0; NaN stays NaN. */
export function castToDtype(dtype: Dtype, x: unknown): Scalar {
  if (dtype === 'bool') return typeof x === 'boolean' ? x : typeof x === 'number' && !Number.isNaN(x) ? x !== 0 : NaN;
  const n = typeof x === 'number' ? x : typeof x === 'boolean' ? +x : NaN;
  return dtype === 'float32' ? Math.fround(n) : dtype === 'float64' ? n : Math.trunc(n);
}

const asScalar = (x: unknown): Scalar => (typeof x === 'number' || typeof x === 'boolean' ? x : NaN);

/** Imports every module named by a feature; returns ref -> function. */
export async function importModuleFunctions(defs: FeatureDefinitions): Promise<Map<string, ModuleFunction>> {
  const out = new Map<string, ModuleFunction>();
  for (const f of defs.features) {
    if (!f.module) continue;
    const at = `${defs.source} is invalid: ${f.path} (${f.ref})`;
    let path = f.module.path;
    const ext = extname(path);
    // Node 20 cannot import TypeScript; use the compiled file next to it when there is one.
    if (/^\.[mc]?ts$/.test(ext)) {
      const js = path.slice(0, -ext.length) + ext.replace('ts', 'js');
      if (existsSync(js)) path = js;
    }
    let mod: Record<string, unknown>;
    try {
      mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const why =
        err.code === 'ERR_UNKNOWN_FILE_EXTENSION'
          ? 'Node cannot import TypeScript directly; compile it to .js next to it'
          : !existsSync(path)
            ? 'file not found'
            : err.message.split('\n')[0];
      throw configInvalid(`${at}: module: cannot import ${path}: ${why}`);
    }
    const fn = mod[f.module.exportName];
    if (typeof fn !== 'function') {
      const names = Object.keys(mod).filter((k) => typeof mod[k] === 'function');
      throw configInvalid(
        `${at}: function: ${path} exports no function '${f.module.exportName}' (its functions: ${names.join(', ') || 'none'})`,
      );
    }
    out.set(f.ref, fn as ModuleFunction);
  }
  return out;
}

/**
 * Feature definitions compiled once: lookups by ref, stored groups and realtime streams for the
 * stores, and plans for sets of requested features.
 */
export class FeatureRegistry {
  readonly source: string;
  readonly entities: ReadonlyMap<string, EntityDef>;
  readonly sources: ReadonlyMap<string, SourceDef>;
  readonly features: readonly FeatureDef[];
  readonly groups: readonly StoredGroup[];
  readonly streams: readonly StreamSpec[];
  readonly #defs: FeatureDefinitions;
  readonly #functions: ReadonlyMap<string, ModuleFunction>;
  readonly #rank = new Map<string, number>();
  readonly #groupOf = new Map<string, { group: StoredGroup; field: number }>();

  constructor(defs: FeatureDefinitions, functions: ReadonlyMap<string, ModuleFunction> = new Map()) {
    for (const f of defs.features)
      if (f.module && !functions.has(f.ref)) throw configInvalid(`${f.path} (${f.ref}): module function was not imported`);
    this.#defs = defs;
    this.#functions = functions;
    this.source = defs.source;
    this.entities = defs.entities;
    this.sources = defs.sources;
    this.features = defs.features;
    defs.order.forEach((ref, i) => {
      this.#rank.set(ref, i);
    });

    const groups = new Map<string, FeatureDef[]>();
    for (const f of defs.features) {
      if (f.type !== 'offline' && f.type !== 'hybrid') continue;
      const key = `${f.entity}@${f.version}`;
      groups.set(key, [...(groups.get(key) ?? []), f]);
    }
    this.groups = [...groups.values()].map((list) => {
      const group = {
        entity: list[0]!.entity,
        version: list[0]!.version,
        refs: list.map((f) => f.ref),
        layout: groupLayout(list.map((f) => f.name)),
      };
      list.forEach((f, field) => {
        this.#groupOf.set(f.ref, { group, field });
      });
      return group;
    });

    const streams = new Map<string, { entity: string; event: string; field: string | null; stream: string; windowsMs: number[] }>();
    for (const f of defs.features) {
      const rt = f.realtime;
      if (!rt) continue;
      const key = `${f.entity}:${rt.stream}`;
      const s = streams.get(key) ?? { entity: f.entity, event: rt.event, field: rt.field, stream: rt.stream, windowsMs: [] };
      if (!s.windowsMs.includes(rt.seriesWindowMs)) s.windowsMs.push(rt.seriesWindowMs);
      streams.set(key, s);
    }
    this.streams = [...streams.values()];
  }

  /** `name@version`, or a bare name for its highest version; undefined when unknown. */
  get(ref: string): FeatureDef | undefined {
    return this.#defs.byRef.get(ref.includes('@') ? ref : (this.#defs.latest.get(ref) ?? ''));
  }

  /** Like get(), throwing CONFIG_INVALID (a model binding names an unknown feature). */
  resolveRef(ref: string): FeatureDef {
    const f = this.get(ref);
    if (f) return f;
    const name = ref.split('@')[0]!;
    const known = this.#defs.latest.has(name)
      ? `known versions of ${name}: ${this.features
          .filter((x) => x.name === name)
          .map((x) => x.version)
          .join(', ')}`
      : `known: ${[...this.#defs.latest.keys()].join(', ')}`;
    throw configInvalid(`unknown feature '${ref}' (${known})`);
  }

  entityOf(ref: string): EntityDef {
    return this.entities.get(this.resolveRef(ref).entity)!;
  }

  /** The stored group an offline or hybrid feature belongs to, and its position in the layout. */
  groupOf(ref: string): { group: StoredGroup; field: number } | undefined {
    return this.#groupOf.get(this.resolveRef(ref).ref);
  }

  /**
   * Reads and checks the id of `entity` from a request's `entity` object (BAD_REQUEST when
   * missing, not a string or safe integer, empty, over 256 characters, holding control
   * characters, or not matching the entity's pattern).
   */
  entityId(entity: string, requestEntity: unknown): string {
    const def = this.entities.get(entity);
    if (!def) throw configInvalid(`unknown entity '${entity}'`);
    const what = `entity.${def.key}`;
    if (requestEntity === null || typeof requestEntity !== 'object' || Array.isArray(requestEntity))
      throw badRequest(`entity must be an object holding '${def.key}' (the ${def.name} id)`);
    const raw = Object.hasOwn(requestEntity, def.key) ? (requestEntity as Record<string, unknown>)[def.key] : undefined;
    if (raw === undefined || raw === null) throw badRequest(`${what} is required (the ${def.name} id)`);
    if (typeof raw !== 'string' && !(typeof raw === 'number' && Number.isSafeInteger(raw)))
      throw badRequest(`${what} must be a string, got ${Array.isArray(raw) ? 'array' : typeof raw}`);
    const id = String(raw);
    if (id.length === 0 || id.length > 256) throw badRequest(`${what} must have 1 to 256 characters, got ${id.length}`);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: an entity id must not contain control characters, so the class names them
    if (/[\u0000-\u001f\u007f]/.test(id)) throw badRequest(`${what} must not contain control characters`);
    if (def.pattern && !def.pattern.test(id)) {
      const shown = id.length > 64 ? `${id.slice(0, 64)}...` : id;
      throw badRequest(`${what} '${shown}' is not a valid ${def.name} id (must match ${def.patternText})`);
    }
    return id;
  }

  /** The resolution plan of `refs` (bare names resolve to their highest version). */
  plan(refs: readonly string[]): ResolutionPlan {
    const requested = refs.map((r) => this.resolveRef(r).ref);
    const closure = new Set<string>();
    const add = (ref: string): void => {
      if (closure.has(ref)) return;
      closure.add(ref);
      for (const d of this.#defs.byRef.get(ref)!.dependsOn) if (d.kind === 'feature') add(d.ref);
    };
    requested.forEach(add);
    const ordered = [...closure].sort((a, b) => this.#rank.get(a)! - this.#rank.get(b)!);
    const slotOfRef = new Map(ordered.map((ref, i) => [ref, i]));

    const requestFields: { field: string; slot: number }[] = [];
    const fieldSlot = (field: string): number => {
      let r = requestFields.find((x) => x.field === field);
      if (!r) {
        r = { field, slot: ordered.length + requestFields.length };
        requestFields.push(r);
      }
      return r.slot;
    };

    const features: PlannedFeature[] = ordered.map((ref, slot) => {
      const def = this.#defs.byRef.get(ref)!;
      const inputs = Int32Array.from(def.dependsOn, (d) => (d.kind === 'feature' ? slotOfRef.get(d.ref)! : fieldSlot(d.field)));
      return { slot, def, inputs, ...this.#compile(def, inputs) };
    });

    const stored = new Map<StoredGroup, { fields: number[]; slots: number[] }>();
    const windows: WindowRead[] = [];
    for (const p of features) {
      const g = this.#groupOf.get(p.def.ref);
      if (g) {
        const s = stored.get(g.group) ?? { fields: [], slots: [] };
        s.fields.push(g.field);
        s.slots.push(p.slot);
        stored.set(g.group, s);
      }
      const rt = p.def.realtime;
      if (rt) {
        windows.push({
          slot: p.slot,
          def: p.def,
          entity: p.def.entity,
          stream: rt.stream,
          aggregation: rt.aggregation,
          windowMs: rt.seriesWindowMs,
          hybrid: p.def.type === 'hybrid',
        });
      }
    }

    return {
      refs: requested,
      outputSlots: Int32Array.from(requested, (r) => slotOfRef.get(r)!),
      features,
      requestFields,
      slotCount: ordered.length + requestFields.length,
      entities: [...new Set(features.map((p) => p.def.entity))],
      stored: [...stored].map(([group, s]) => ({ group, fields: Int32Array.from(s.fields), slots: Int32Array.from(s.slots) })),
      windows,
      computed: features.filter((p) => p.compute !== null),
    };
  }

  #compile(def: FeatureDef, inputs: Int32Array): Pick<PlannedFeature, 'compute' | 'computeSlots'> {
    const dtype = def.dtype;
    if (def.expression) {
      const expr = def.expression;
      const variables = def.dependsOn.map((d) => d.variable);
      const fromSlots = expr.bind((v) => inputs[variables.indexOf(v)]!);
      return {
        compute: (values) => castToDtype(dtype, expr.evaluate(values)),
        computeSlots: (slots) => castToDtype(dtype, fromSlots(slots)),
      };
    }
    const fn = this.#functions.get(def.ref);
    if (!fn) return { compute: null, computeSlots: null };
    const variables = def.dependsOn.map((d) => d.variable);
    // The function gets its own object holding exactly its inputs, missing ones as NaN.
    return {
      compute: (values) => {
        const inputsByName: Record<string, Scalar> = {};
        for (const v of variables) inputsByName[v] = asScalar(Object.hasOwn(values, v) ? values[v] : undefined);
        return castToDtype(dtype, fn(inputsByName));
      },
      computeSlots: (slots) => {
        const inputsByName: Record<string, Scalar> = {};
        for (let k = 0; k < variables.length; k++) inputsByName[variables[k]!] = asScalar(slots[inputs[k]!]);
        return castToDtype(dtype, fn(inputsByName));
      },
    };
  }
}
