// Deployment strategies as data: the five shapes an operator can PUT (direct, blue-green, canary,
// A/B, shadow), their validation, the versions each one needs loaded, and the pure routing decision
// for one request. No I/O here: the deployer loads, validates and switches; the server asks route().

import { badRequest } from '../errors.js';

export type Strategy =
  | { strategy: 'direct'; version: number }
  | { strategy: 'blue-green'; blue: number; green: number; active: 'blue' | 'green' }
  | { strategy: 'canary'; stable: number; canary: number; percent: number; steps?: number[]; stepSeconds?: number }
  | { strategy: 'ab'; variants: { name: string; version: number; weight: number }[]; stickyKey?: string }
  | { strategy: 'shadow'; primary: number; shadow: number };

export interface RouteDecision {
  readonly version: number;
  /** Label for per-variant metrics: 'stable'/'canary', 'blue'/'green', the A/B variant name, 'primary', or 'direct'. */
  readonly variant: string;
  /** Shadow deployments: the version that gets a copy of the request off the response path. */
  readonly shadow?: number;
}

export interface RouteInput {
  /** Value of the sticky key (header or entity field) when the strategy has one. */
  readonly sticky?: string | undefined;
  /** Uniform in [0, 1): the caller's randomness, injectable for tests. */
  readonly random: number;
}

const VARIANT_NAME = /^[a-z][a-z0-9_-]{0,31}$/;
const STICKY = /^(header:[a-z0-9-]{1,64}|entity:[A-Za-z_][A-Za-z0-9_]{0,63})$/;

function version(v: unknown, path: string): number {
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw badRequest(`${path} must be a positive integer version`);
  return v as number;
}

function object(v: unknown, path: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw badRequest(`${path} must be an object`);
  return v as Record<string, unknown>;
}

function onlyKeys(o: Record<string, unknown>, allowed: string[], path: string): void {
  for (const k of Object.keys(o))
    if (!allowed.includes(k)) throw badRequest(`${path}: unknown field '${k}' (allowed: ${allowed.join(', ')})`);
}

/**
 * Validates a deployment body as an operator sent it; errors name the field. `persisted`: a stored
 * deployment read back, whose canary may have stepped up to one of its steps since it was sent.
 */
export function parseStrategy(body: unknown, options: { persisted?: boolean } = {}): Strategy {
  const o = object(body, 'deployment');
  switch (o.strategy) {
    case 'direct':
      onlyKeys(o, ['strategy', 'version'], 'direct');
      return { strategy: 'direct', version: version(o.version, 'version') };
    case 'blue-green': {
      onlyKeys(o, ['strategy', 'blue', 'green', 'active'], 'blue-green');
      const blue = version(o.blue, 'blue');
      const green = version(o.green, 'green');
      if (o.active !== 'blue' && o.active !== 'green') throw badRequest(`active must be 'blue' or 'green'`);
      if (blue === green) throw badRequest('blue and green must be different versions');
      return { strategy: 'blue-green', blue, green, active: o.active };
    }
    case 'canary': {
      onlyKeys(o, ['strategy', 'stable', 'canary', 'percent', 'steps', 'stepSeconds'], 'canary');
      const stable = version(o.stable, 'stable');
      const canary = version(o.canary, 'canary');
      if (stable === canary) throw badRequest('stable and canary must be different versions');
      const percent = o.percent;
      if (typeof percent !== 'number' || !(percent >= 0 && percent <= 100)) throw badRequest('percent must be a number from 0 to 100');
      const s: Strategy = { strategy: 'canary', stable, canary, percent };
      if (o.steps !== undefined) {
        const steps = o.steps;
        if (!Array.isArray(steps) || steps.length === 0) throw badRequest('steps must be a non-empty array of percentages');
        let prev = -1;
        for (const p of steps) {
          if (typeof p !== 'number' || !(p > 0 && p <= 100) || p <= prev)
            throw badRequest('steps must be increasing percentages in (0, 100]');
          prev = p;
        }
        if (steps[steps.length - 1] !== 100) throw badRequest('the last step must be 100');
        if (!options.persisted && !(percent < steps[0]))
          throw badRequest(`percent (${percent}) must be below the first step (${steps[0]})`);
        s.steps = steps as number[];
        const stepSeconds = o.stepSeconds;
        if (!Number.isFinite(stepSeconds) || (stepSeconds as number) < 1)
          throw badRequest('stepSeconds must be at least 1 when steps are given');
        s.stepSeconds = stepSeconds as number;
      } else if (o.stepSeconds !== undefined) {
        throw badRequest('stepSeconds needs steps');
      }
      return s;
    }
    case 'ab': {
      onlyKeys(o, ['strategy', 'variants', 'stickyKey'], 'ab');
      if (!Array.isArray(o.variants) || o.variants.length < 2) throw badRequest('variants must list at least two variants');
      const names = new Set<string>();
      const variants = o.variants.map((v, i) => {
        const x = object(v, `variants[${i}]`);
        onlyKeys(x, ['name', 'version', 'weight'], `variants[${i}]`);
        if (typeof x.name !== 'string' || !VARIANT_NAME.test(x.name)) throw badRequest(`variants[${i}].name must match ${VARIANT_NAME}`);
        if (names.has(x.name)) throw badRequest(`variant name '${x.name}' is used twice`);
        names.add(x.name);
        const weight = x.weight;
        if (typeof weight !== 'number' || !(weight >= 0) || !Number.isFinite(weight))
          throw badRequest(`variants[${i}].weight must be a number >= 0`);
        return { name: x.name, version: version(x.version, `variants[${i}].version`), weight };
      });
      if (variants.every((v) => v.weight === 0)) throw badRequest('at least one variant needs a weight above 0');
      const s: Strategy = { strategy: 'ab', variants };
      if (o.stickyKey !== undefined) {
        if (typeof o.stickyKey !== 'string' || !STICKY.test(o.stickyKey)) {
          throw badRequest(`stickyKey must be 'header:<lower-case header name>' or 'entity:<field>'`);
        }
        s.stickyKey = o.stickyKey;
      }
      return s;
    }
    case 'shadow': {
      onlyKeys(o, ['strategy', 'primary', 'shadow'], 'shadow');
      const primary = version(o.primary, 'primary');
      const shadow = version(o.shadow, 'shadow');
      if (primary === shadow) throw badRequest('primary and shadow must be different versions');
      return { strategy: 'shadow', primary, shadow };
    }
    default:
      throw badRequest(`strategy must be one of direct, blue-green, canary, ab, shadow (got ${JSON.stringify(o.strategy)})`);
  }
}

/** Every version the strategy can send traffic (or shadow copies) to. */
export function versionsOf(s: Strategy): number[] {
  switch (s.strategy) {
    case 'direct':
      return [s.version];
    case 'blue-green':
      return [s.blue, s.green];
    case 'canary':
      return [s.stable, s.canary];
    case 'ab':
      return [...new Set(s.variants.map((v) => v.version))];
    case 'shadow':
      return [s.primary, s.shadow];
  }
}

/**
 * The version the deployment stands behind, with the role that makes it so: the one direct traffic
 * goes to, blue-green's active colour, a canary's stable, the heaviest A/B variant (the first of
 * equals), shadow's primary. What offline work (batch scoring) should use when no version is named.
 */
export function primaryVersion(s: Strategy): { version: number; role: string } {
  switch (s.strategy) {
    case 'direct':
      return { version: s.version, role: 'direct' };
    case 'blue-green':
      return { version: s.active === 'blue' ? s.blue : s.green, role: `blue-green ${s.active} (active)` };
    case 'canary':
      return { version: s.stable, role: `canary stable (${100 - s.percent}% of traffic)` };
    case 'ab': {
      const top = s.variants.reduce((a, b) => (b.weight > a.weight ? b : a));
      return { version: top.version, role: `A/B variant '${top.name}' (the largest weight)` };
    }
    case 'shadow':
      return { version: s.primary, role: 'shadow primary' };
  }
}

/** FNV-1a over UTF-16 code units, mapped to [0, 1): stable across processes and replicas. */
export function stickyFraction(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // Final avalanche so that keys differing in the last character spread over the range.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return (h >>> 0) / 4294967296;
}

/** The routing decision for one request. Pure: randomness and the sticky value come in. */
export function route(s: Strategy, input: RouteInput): RouteDecision {
  switch (s.strategy) {
    case 'direct':
      return { version: s.version, variant: 'direct' };
    case 'blue-green':
      return s.active === 'blue' ? { version: s.blue, variant: 'blue' } : { version: s.green, variant: 'green' };
    case 'canary':
      return input.random * 100 < s.percent ? { version: s.canary, variant: 'canary' } : { version: s.stable, variant: 'stable' };
    case 'ab': {
      const total = s.variants.reduce((a, v) => a + v.weight, 0);
      const u = (input.sticky !== undefined ? stickyFraction(input.sticky) : input.random) * total;
      let acc = 0;
      for (const v of s.variants) {
        acc += v.weight;
        if (u < acc) return { version: v.version, variant: v.name };
      }
      const last = [...s.variants].reverse().find((v) => v.weight > 0)!;
      return { version: last.version, variant: last.name };
    }
    case 'shadow':
      return { version: s.primary, variant: 'primary', shadow: s.shadow };
  }
}

/** The sticky key a strategy reads from a request, if any. */
export function stickyKeyOf(s: Strategy): { header?: string; entityField?: string } | null {
  const key = s.strategy === 'ab' ? s.stickyKey : undefined;
  if (key === undefined) return null;
  return key.startsWith('header:') ? { header: key.slice(7) } : { entityField: key.slice(7) };
}
