// The router: for a request that names no version, which loaded version answers it, under which
// variant label, and whether a shadow gets a copy. Holds each model's active strategy and, for
// canary and shadow deployments, the statistics their analysis reads. Switching a strategy is one
// Map write, so a switch is atomic for the requests that follow it.

import type { InferenceEngine, LoadedModel } from '../inference/index.js';
import { Agreement, StepStats } from './analysis.js';
import { route, stickyKeyOf, versionsOf, type Strategy } from './strategies.js';

export interface Target {
  readonly model: LoadedModel;
  /** Label for per-variant metrics. */
  readonly variant: string;
  /** Statistics of this version while its deployment is under analysis (canary, shadow). */
  readonly stats: StepStats | null;
  readonly shadow: { readonly model: LoadedModel; readonly agreement: Agreement } | null;
}

interface Active {
  readonly strategy: Strategy;
  readonly stickyHeader: string | null;
  readonly stickyEntity: string | null;
  readonly stats: Map<number, StepStats>;
  readonly agreement: Agreement | null;
}

export class Router {
  private readonly active = new Map<string, Active>();

  /**
   * `scoreEdges`: a version's frozen reference edges (null while it has none), on which its
   * statistics count the scores for the canary's score check.
   */
  constructor(
    private readonly engine: InferenceEngine,
    private readonly scoreEdges: (m: LoadedModel) => readonly number[] | null = () => null,
  ) {}

  /**
   * Fresh statistics of a version; its score bins are set up once its reference is known. Until then
   * the edges are asked for at every score, on the request path: the loaded version is looked up
   * once, and after that the question is one map lookup.
   */
  private fresh(name: string, version: number): StepStats {
    let m: LoadedModel | undefined;
    return new StepStats(() => {
      m ??= this.engine.find(name, String(version));
      return m === undefined ? null : this.scoreEdges(m);
    });
  }

  /** Makes `strategy` the model's routing (null: the highest ready version); resets its statistics. */
  set(name: string, strategy: Strategy | null): void {
    if (strategy === null) {
      this.active.delete(name);
      return;
    }
    const sticky = stickyKeyOf(strategy);
    const watched = strategy.strategy === 'canary' || strategy.strategy === 'shadow';
    this.active.set(name, {
      strategy,
      stickyHeader: sticky?.header ?? null,
      stickyEntity: sticky?.entityField ?? null,
      stats: new Map(watched ? versionsOf(strategy).map((v) => [v, this.fresh(name, v)]) : []),
      agreement: strategy.strategy === 'shadow' ? new Agreement() : null,
    });
  }

  strategy(name: string): Strategy | null {
    return this.active.get(name)?.strategy ?? null;
  }

  /** Lower-case header the request must be read for (A/B sticky by header), or null. */
  stickyHeader(name: string): string | null {
    return this.active.get(name)?.stickyHeader ?? null;
  }

  /** Field of the request's `entity` object the variant sticks to, or null. */
  stickyEntityField(name: string): string | null {
    return this.active.get(name)?.stickyEntity ?? null;
  }

  /** The version (and shadow) for one request. Throws 404 / 503 like engine.resolve. */
  pick(name: string, sticky?: string): Target {
    const a = this.active.get(name);
    if (a === undefined) return { model: this.engine.resolve(name), variant: 'default', stats: null, shadow: null };
    const d = route(a.strategy, { sticky, random: Math.random() });
    const model = this.engine.resolve(name, String(d.version));
    let shadow: Target['shadow'] = null;
    if (d.shadow !== undefined) {
      const s = this.engine.find(name, String(d.shadow));
      if (s !== undefined && s.state === 'ready') shadow = { model: s, agreement: a.agreement! };
    }
    return { model, variant: d.variant, stats: a.stats.get(d.version) ?? null, shadow };
  }

  /** Statistics by version since the last reset (canary, shadow). */
  stats(name: string): ReadonlyMap<number, StepStats> {
    return this.active.get(name)?.stats ?? new Map();
  }

  agreement(name: string): Agreement | null {
    return this.active.get(name)?.agreement ?? null;
  }

  /** Starts fresh statistics (a new canary step). */
  resetStats(name: string): void {
    const a = this.active.get(name);
    if (a === undefined) return;
    for (const v of a.stats.keys()) a.stats.set(v, this.fresh(name, v));
  }

  names(): string[] {
    return [...this.active.keys()];
  }
}
