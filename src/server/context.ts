// What every route module of the server shares: config, engine, monitor, logger and lifecycle state.

import type { Logger } from 'pino';
import type { ServerConfig } from '../config.js';
import type { FeatureService } from '../features/index.js';
import type { InferenceEngine, LoadedModel } from '../inference/index.js';
import type { Monitor, VersionMonitor } from '../monitoring/index.js';

export interface ServerContext {
  readonly config: ServerConfig;
  readonly engine: InferenceEngine;
  readonly monitor: Monitor;
  readonly log: Logger;
  /** Feature serving, when the config names feature definitions. */
  readonly features: FeatureService | null;
  /** Set on shutdown: new requests get 503 and their connection is closed. */
  draining: boolean;
}

const monitors = new WeakMap<LoadedModel, VersionMonitor>();

/** The VersionMonitor of a loaded model version, cached on first use. */
export function monitorOf(ctx: ServerContext, model: LoadedModel): VersionMonitor {
  let m = monitors.get(model);
  if (m === undefined) {
    m = ctx.monitor.version(model.name, model.version);
    monitors.set(model, m);
  }
  return m;
}
