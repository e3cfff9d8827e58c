// The shapes of loaded feature definitions (entities, sources, features and what each depends on),
// shared by the loader (definitions.ts), the document schema (definitions-schema.ts) and the compiled
// registry (plan.ts) without those files importing one another for types.

import type { CompiledExpression, Scalar } from './expression.js';
import type { Aggregation } from './windows.js';

export type FeatureType = 'online' | 'offline' | 'realtime' | 'hybrid';
export type Dtype = 'float64' | 'float32' | 'int64' | 'int32' | 'bool';
export type Fallback = { kind: 'default'; value: Scalar } | { kind: 'last_known' } | { kind: 'compute' } | { kind: 'error' };

export interface EntityDef {
  readonly name: string;
  /** Field of the request's `entity` object that holds the id. */
  readonly key: string;
  /** Anchored: the whole id must match. */
  readonly pattern: RegExp | null;
  /** The pattern as written, for messages. */
  readonly patternText: string | null;
}

export interface SourceDef {
  readonly name: string;
  /** Absolute (resolved against the YAML file's folder); not opened at load. */
  readonly path: string;
  readonly format: 'csv' | 'jsonl';
  readonly entity: string;
  readonly timestampColumn: string | null;
}

export type Dependency =
  | { readonly kind: 'feature'; readonly ref: string; readonly variable: string }
  | { readonly kind: 'request'; readonly field: string; readonly variable: string };

export interface RealtimeDef {
  readonly event: string;
  readonly aggregation: Aggregation;
  readonly field: string | null;
  /** The declared window. */
  readonly windowMs: number;
  /** Events series the store keeps: `event` or `event.field`. */
  readonly stream: string;
  /**
   * The window the series is read with, which sets its bucket width. Realtime: windowMs. Hybrid:
   * min(window, ttl) (the whole window when ttl is 0), because only events after the offline
   * value count and a value older than its ttl is stale anyway; this keeps buckets fine-grained.
   */
  readonly seriesWindowMs: number;
}

export interface FeatureDef {
  /** `name@version` */
  readonly ref: string;
  readonly name: string;
  readonly version: number;
  readonly entity: string;
  readonly type: FeatureType;
  readonly dtype: Dtype;
  /** Values older than this are stale; 0 = never stale. */
  readonly ttlMs: number;
  readonly dependsOn: readonly Dependency[];
  readonly source: SourceDef | null;
  /** Column of the source (offline, hybrid). */
  readonly column: string | null;
  readonly realtime: RealtimeDef | null;
  readonly expression: CompiledExpression | null;
  /** Absolute module path and exported function name. */
  readonly module: { readonly path: string; readonly exportName: string } | null;
  readonly fallback: Fallback;
  readonly description: string | null;
  /** `features[3]`, for messages. */
  readonly path: string;
}

export interface FeatureDefinitions {
  readonly source: string;
  readonly baseDir: string;
  readonly entities: ReadonlyMap<string, EntityDef>;
  readonly sources: ReadonlyMap<string, SourceDef>;
  /** In document order. */
  readonly features: readonly FeatureDef[];
  readonly byRef: ReadonlyMap<string, FeatureDef>;
  /** name -> ref of its highest version. */
  readonly latest: ReadonlyMap<string, string>;
  /** Every ref, each after its dependencies. */
  readonly order: readonly string[];
}
