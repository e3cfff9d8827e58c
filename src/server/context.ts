// What every route module of the server shares: config, engine, monitor, logger and lifecycle state.

import type { Logger } from 'pino';
import type { ServerConfig } from '../config.js';
import type { Agreement, Deployer, Router, Target } from '../deploy/index.js';
import type { FeatureService } from '../features/index.js';
import type { InferenceEngine, LoadedModel } from '../inference/index.js';
import type { Monitor, VersionMonitor } from '../monitoring/index.js';
import type { ApiKeys } from './api-keys.js';
import type { Registry } from '../store/index.js';
import type { PostContext } from './http.js';
import type { TlsFiles } from './tls.js';
import type { Tracing } from './tracing.js';

export interface ServerContext {
  readonly config: ServerConfig;
  readonly engine: InferenceEngine;
  readonly monitor: Monitor;
  readonly log: Logger;
  /** Feature serving, when the config names feature definitions. */
  readonly features: FeatureService | null;
  /** The store's registry: admin and control paths only, never awaited by a request. */
  readonly registry: Registry;
  readonly router: Router;
  readonly deployer: Deployer;
  /** Logger and origin policy for the POST route helper. */
  readonly http: PostContext;
  /** Set on shutdown: new requests get 503 and their connection is closed. */
  draining: boolean;
  /** API keys when auth.enabled (null: the data plane is open). Other transports (gRPC) check theirs with `keys.check`. */
  keys: ApiKeys | null;
  /** The TLS certificate and key (null: plain text); gRPC's credentials come from it (tls-grpc.ts). */
  tls: TlsFiles | null;
  tracing: Tracing | null;
}

const monitors = new WeakMap<LoadedModel, VersionMonitor>();

/** The VersionMonitor of a loaded model version, cached on first use. */
export function monitorOf(ctx: ServerContext, model: LoadedModel): VersionMonitor {
  let m = monitors.get(model);
  if (m === undefined) {
    m = ctx.monitor.version(model);
    monitors.set(model, m);
  }
  return m;
}

/** The version a request goes to: the one in its path, else the deployment's choice. */
export function targetOf(ctx: ServerContext, name: string, version: string | undefined, sticky: string | undefined): Target {
  if (version !== undefined) return { model: ctx.engine.resolve(name, version), variant: 'explicit', stats: null, shadow: null };
  return ctx.router.pick(name, sticky);
}

/** Joins a primary's score and its shadow's for the agreement statistics, whichever lands first. */
export class ShadowPair {
  private primaryScore: number | null = null;
  private shadowScore: number | null = null;
  constructor(private readonly agreement: Agreement) {}
  primary(score: number): void {
    this.primaryScore = score;
    if (this.shadowScore !== null) this.agreement.add(score, this.shadowScore);
  }
  shadow(score: number): void {
    this.shadowScore = score;
    if (this.primaryScore !== null) this.agreement.add(this.primaryScore, score);
  }
  failed(): void {
    this.agreement.shadowErrors++;
  }
}
