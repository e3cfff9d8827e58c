// The deployer: moves traffic between registered versions, safely. Before any traffic moves, every
// version the new deployment needs is loaded from its verified artifact, warmed up, checked against
// the deployment's input contract, run on sample inputs (outputs must be finite) and held to a
// latency budget; on any failure nothing moves and the error says what failed. Then the router
// switches in one step, the state is persisted (restored exactly after a restart), and versions
// nobody routes to are unloaded once their in-flight requests are answered. Canary deployments
// are analysed continuously and promote or roll back by themselves.

import type { Logger } from 'pino';
import { badRequest, conflict, ScorelineError, type ScorelineError as ErrorType } from '../errors.js';
import type { InferenceEngine, LoadedModel, PendingRequest, RunResult } from '../inference/index.js';
import { makeTypedArray } from '../inference/index.js';
import type { ModelRegistry } from '../registry/store.js';
import { analyzeCanary, DEFAULT_POLICY, type Analysis, type AnalysisPolicy, type Check, type ScoreReference } from './analysis.js';
import type { Router } from './router.js';
import { parseStrategy, versionsOf, type Strategy } from './strategies.js';

export interface DeploymentState {
  readonly spec: Strategy;
  readonly since: string;
  readonly reason: string;
  /** Canary: the analyses so far (latest last, at most 20). */
  readonly analysis: readonly Analysis[];
}

export interface DeployerOptions {
  registry: ModelRegistry;
  engine: InferenceEngine;
  router: Router;
  log: Logger;
  /** Largest-batch onnxruntime time a version may take, in microseconds. */
  latencyBudgetMicros: number;
  policy?: AnalysisPolicy;
  /** Versions to keep loaded whatever the deployment (e.g. the model repository's own). */
  pinned?: (name: string) => ReadonlySet<number>;
  /** Called for every version this deployer loads (e.g. to bind its features). */
  onLoaded?: (m: LoadedModel) => void;
  /** Canary analysis tick, ms (default 1000). */
  tickMs?: number;
  /** A version's expected score distribution (its frozen drift reference), which canary analysis judges its live scores against. */
  referenceOf?: (m: LoadedModel) => ScoreReference | null;
}

const deploymentInvalid = (message: string) => new ScorelineError('DEPLOYMENT_INVALID', message);

function traffic(s: Strategy): Record<string, number> {
  switch (s.strategy) {
    case 'direct':
      return { [s.version]: 100 };
    case 'blue-green':
      return { [s.active === 'blue' ? s.blue : s.green]: 100, [s.active === 'blue' ? s.green : s.blue]: 0 };
    case 'canary':
      return { [s.stable]: 100 - s.percent, [s.canary]: s.percent };
    case 'ab': {
      const total = s.variants.reduce((a, v) => a + v.weight, 0);
      const out: Record<string, number> = {};
      for (const v of s.variants) out[v.version] = (out[v.version] ?? 0) + (100 * v.weight) / total;
      return out;
    }
    case 'shadow':
      return { [s.primary]: 100, [s.shadow]: 0 };
  }
}

/** A deployment change, as subscribers (retraining jobs watching their canary) see it. */
export interface DeploymentChange {
  readonly model: string;
  readonly action: string;
  readonly reason: string;
  readonly state: DeploymentState;
}

export class Deployer {
  private readonly states = new Map<string, DeploymentState>();
  private readonly listeners = new Set<(e: DeploymentChange) => void>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly busy = new Set<string>();
  private readonly policy: AnalysisPolicy;

  constructor(private readonly opts: DeployerOptions) {
    this.policy = opts.policy ?? DEFAULT_POLICY;
  }

  /** Calls fn after every switch; returns the unsubscribe function. */
  subscribe(fn: (e: DeploymentChange) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  state(name: string): DeploymentState | null {
    return this.states.get(name) ?? null;
  }

  /** Loads and routes every persisted deployment; a version that cannot load is routed around. */
  async restore(): Promise<void> {
    for (const rec of this.opts.registry.listDeployments<DeploymentState>()) {
      const name = rec.model;
      let state = rec.state;
      try {
        state = { ...state, spec: parseStrategy(state.spec) };
      } catch (e) {
        this.opts.log.error({ model: name, err: (e as Error).message }, 'persisted deployment is unreadable; serving the latest version');
        continue;
      }
      const failed: number[] = [];
      for (const v of versionsOf(state.spec)) {
        try {
          await this.ensureLoaded(name, v);
        } catch (e) {
          failed.push(v);
          this.opts.log.error({ model: name, version: v, err: (e as Error).message }, 'version of a persisted deployment failed to load');
        }
      }
      if (failed.length > 0) {
        const degraded = this.withoutVersions(state.spec, failed);
        this.opts.log.warn({ model: name, failed, now: degraded }, 'deployment restored without the versions that failed to load');
        if (degraded === null) continue;
        state = { ...state, spec: degraded, reason: `restored without version(s) ${failed.join(', ')}: failed to load`, since: new Date().toISOString() };
        this.opts.registry.saveDeployment(name, state, { action: 'restore-degraded', reason: state.reason });
      }
      this.opts.router.set(name, state.spec);
      this.states.set(name, state);
      this.schedule(name);
    }
  }

  private withoutVersions(s: Strategy, bad: readonly number[]): Strategy | null {
    const ok = (v: number) => !bad.includes(v);
    switch (s.strategy) {
      case 'direct':
        return ok(s.version) ? s : null;
      case 'blue-green': {
        const active = s.active === 'blue' ? s.blue : s.green;
        const other = s.active === 'blue' ? s.green : s.blue;
        return ok(active) ? { strategy: 'direct', version: active } : ok(other) ? { strategy: 'direct', version: other } : null;
      }
      case 'canary':
        return ok(s.stable) ? { strategy: 'direct', version: s.stable } : ok(s.canary) ? { strategy: 'direct', version: s.canary } : null;
      case 'shadow':
        return ok(s.primary) ? { strategy: 'direct', version: s.primary } : null;
      case 'ab': {
        const variants = s.variants.filter((v) => ok(v.version));
        if (variants.length === 0) return null;
        return variants.length === 1 ? { strategy: 'direct', version: variants[0]!.version } : { ...s, variants };
      }
    }
  }

  /** PUT /admin/deployments/{name}. */
  async apply(name: string, body: unknown, reason = 'deployed'): Promise<DeploymentState> {
    const spec = parseStrategy(body);
    return this.exclusive(name, async () => {
      this.opts.registry.getModel(name); // 404 for an unknown model
      for (const v of versionsOf(spec)) this.opts.registry.getVersion(name, v); // 404 for an unknown version
      await this.validate(name, spec);
      return this.switchTo(name, spec, 'deploy', reason);
    });
  }

  /** POST .../promote: canary -> next step (or all traffic), blue-green -> the other slot, shadow -> the shadow. */
  async promote(name: string, reason = 'promoted'): Promise<DeploymentState> {
    return this.exclusive(name, async () => {
      const s = this.current(name);
      switch (s.strategy) {
        case 'canary': {
          const next = s.steps?.find((p) => p > s.percent);
          if (next === undefined || next >= 100) return this.switchTo(name, { strategy: 'direct', version: s.canary }, 'promote', reason);
          return this.switchTo(name, { ...s, percent: next }, 'canary-step', reason);
        }
        case 'blue-green':
          return this.switchTo(name, { ...s, active: s.active === 'blue' ? 'green' : 'blue' }, 'promote', reason);
        case 'shadow':
          return this.switchTo(name, { strategy: 'direct', version: s.shadow }, 'promote', reason);
        default:
          throw conflict(`a ${s.strategy} deployment has nothing to promote; PUT the deployment you want`);
      }
    });
  }

  /** POST .../rollback: canary -> stable, blue-green -> the other slot, shadow -> primary, else the previous deployment. */
  async rollback(name: string, reason = 'rolled back'): Promise<DeploymentState> {
    return this.exclusive(name, async () => {
      const s = this.current(name);
      switch (s.strategy) {
        case 'canary':
          return this.switchTo(name, { strategy: 'direct', version: s.stable }, 'rollback', reason);
        case 'blue-green':
          return this.switchTo(name, { ...s, active: s.active === 'blue' ? 'green' : 'blue' }, 'rollback', reason);
        case 'shadow':
          return this.switchTo(name, { strategy: 'direct', version: s.primary }, 'rollback', reason);
        default: {
          const history = this.opts.registry.deploymentHistory<DeploymentState>(name);
          const previous = [...history].reverse().find((h) => h.from !== null && JSON.stringify(h.from.spec) !== JSON.stringify(s))?.from;
          if (!previous) throw conflict(`model '${name}' has no earlier deployment to roll back to`);
          const spec = parseStrategy(previous.spec);
          await this.validate(name, spec);
          return this.switchTo(name, spec, 'rollback', reason);
        }
      }
    });
  }

  private current(name: string): Strategy {
    const s = this.states.get(name)?.spec;
    if (s === undefined) {
      this.opts.registry.getModel(name);
      throw conflict(`model '${name}' has no deployment yet (it serves its latest version); PUT one first`);
    }
    return s;
  }

  private async exclusive<T>(name: string, work: () => Promise<T>): Promise<T> {
    if (this.busy.has(name)) throw conflict(`a deployment change of model '${name}' is already in progress`);
    this.busy.add(name);
    try {
      return await work();
    } finally {
      this.busy.delete(name);
    }
  }

  /**
   * DELETE /admin/deployments/{name}: the model goes back to serving its highest ready version.
   * Versions stay loaded (unloading them is a separate, explicit step). A canary is refused: its
   * analysis (and a retraining job waiting on it) decides it; roll it back or promote it first.
   */
  async remove(name: string, reason = 'removed'): Promise<void> {
    await this.exclusive(name, async () => {
      const s = this.current(name);
      if (s.strategy === 'canary') throw conflict(`model '${name}' has a canary deployment under analysis; roll it back or promote it before removing the deployment`);
      this.opts.registry.deleteDeployment(name, { action: 'remove', reason });
      this.opts.router.set(name, null);
      this.states.delete(name);
      this.schedule(name);
      this.opts.log.info({ model: name, reason, was: s }, 'deployment removed');
    });
  }

  /** Loads a registered version from its verified artifact, unless it is already serving. */
  async ensureLoaded(name: string, version: number): Promise<LoadedModel> {
    const loaded = this.opts.engine.find(name, String(version));
    if (loaded !== undefined && loaded.state === 'ready') return loaded;
    // Reading through the registry verifies the bytes and counts a tampered artifact.
    const { record } = this.opts.registry.load(name, version);
    const m = await this.opts.engine.load({
      name,
      version,
      path: this.opts.registry.artifacts.path(record.sha256),
      sha256: record.sha256,
      config: record.config as never,
    });
    this.opts.onLoaded?.(m);
    return m;
  }

  /** Unloads a version nothing routes to or pins (one loaded ahead of a rollout that was refused). */
  async release(name: string, version: number): Promise<void> {
    if (this.referenced(name, version)) return;
    const m = this.opts.engine.find(name, String(version));
    if (m !== undefined) await this.opts.engine.unload(m);
  }

  /** Everything that must hold before traffic moves. Unloads what it loaded when it fails. */
  private async validate(name: string, spec: Strategy): Promise<void> {
    const contract = this.contract(name);
    const loadedHere: LoadedModel[] = [];
    try {
      for (const v of versionsOf(spec)) {
        const before = this.opts.engine.find(name, String(v));
        let m: LoadedModel;
        try {
          m = await this.ensureLoaded(name, v);
        } catch (e) {
          throw deploymentInvalid(`version ${v} failed to load: ${(e as Error).message}`);
        }
        if (before === undefined || before.state !== 'ready') loadedHere.push(m);
        const where = `version ${v}`;
        if (contract !== null) {
          const problem = incompatible(contract, m);
          if (problem !== null) throw deploymentInvalid(`${where} does not fit the deployment's input contract: ${problem}`);
        }
        if (m.batchMicros > this.opts.latencyBudgetMicros) {
          throw deploymentInvalid(`${where} takes ${Math.round(m.batchMicros)} us for its largest batch, over the budget of ${this.opts.latencyBudgetMicros} us`);
        }
        const bad = await sampleCheck(m);
        if (bad !== null) throw deploymentInvalid(`${where} fails on sample inputs: ${bad}`);
      }
    } catch (e) {
      for (const m of loadedHere) if (!this.referenced(name, m.versionNumber)) await this.opts.engine.unload(m);
      throw e;
    }
  }

  /** The inputs currently served: the contract a new deployment must keep. */
  private contract(name: string): LoadedModel | null {
    const s = this.states.get(name)?.spec;
    const v = s ? versionsOf(s)[0] : undefined;
    return v !== undefined ? (this.opts.engine.find(name, String(v)) ?? null) : (this.opts.engine.find(name) ?? null);
  }

  private referenced(name: string, version: number): boolean {
    const s = this.states.get(name)?.spec;
    return (s !== undefined && versionsOf(s).includes(version)) || (this.opts.pinned?.(name).has(version) ?? false);
  }

  private switchTo(name: string, spec: Strategy, action: string, reason: string, analysis?: Analysis): DeploymentState {
    const previous = this.states.get(name);
    // The analysis trail of a rollout lasts through its steps and its automatic outcome.
    const keepAnalysis = previous && previous.spec.strategy === 'canary' && (spec.strategy === 'canary' || analysis !== undefined) ? previous.analysis : [];
    const state: DeploymentState = {
      spec,
      since: new Date().toISOString(),
      reason,
      analysis: analysis ? [...keepAnalysis, analysis].slice(-20) : keepAnalysis,
    };
    this.opts.registry.saveDeployment(name, state, { action, reason });
    this.opts.router.set(name, spec);
    this.states.set(name, state);
    this.opts.log.info({ model: name, action, spec, reason }, 'deployment switched');
    this.schedule(name);
    for (const fn of this.listeners) {
      try {
        fn({ model: name, action, reason, state });
      } catch (e) {
        this.opts.log.error({ model: name, err: (e as Error).message }, 'deployment subscriber failed');
      }
    }
    void this.unloadUnused(name, previous?.spec ?? null);
    return state;
  }

  /** Versions the old deployment used and the new one does not: unloaded once idle. */
  private async unloadUnused(name: string, old: Strategy | null): Promise<void> {
    if (old === null) return;
    for (const v of versionsOf(old)) {
      if (this.referenced(name, v)) continue;
      const m = this.opts.engine.find(name, String(v));
      if (m === undefined) continue;
      for (let i = 0; i < 600 && m.batcher.pending > 0; i++) await new Promise((r) => setTimeout(r, 50));
      if (!this.referenced(name, v)) await this.opts.engine.unload(m);
    }
  }

  /** Canary: watch continuously; fail fast, advance a step after stepSeconds of passing analysis. */
  private schedule(name: string): void {
    const old = this.timers.get(name);
    if (old) clearInterval(old);
    this.timers.delete(name);
    const s = this.states.get(name)?.spec;
    if (s === undefined || s.strategy !== 'canary') return;
    const stepMs = (s.stepSeconds ?? Infinity) * 1000;
    const started = Date.now();
    const timer = setInterval(() => {
      if (this.busy.has(name)) return;
      const cur = this.states.get(name)?.spec;
      if (cur === undefined || cur.strategy !== 'canary') return;
      const stats = this.opts.router.stats(name);
      const canaryModel = this.opts.engine.find(name, String(cur.canary));
      const reference = canaryModel !== undefined ? (this.opts.referenceOf?.(canaryModel) ?? null) : null;
      const a = analyzeCanary(stats.get(cur.canary)!, stats.get(cur.stable)!, this.policy, reference);
      const failedNow = a.verdict === 'fail';
      const due = Date.now() - started >= stepMs;
      if (!failedNow && !(due && a.verdict === 'pass')) return;
      void this.exclusive(name, async () => {
        if (failedNow) {
          const why = a.checks.filter((c) => c.result === 'fail').map(describeFailure).join('; ');
          return this.switchTo(name, { strategy: 'direct', version: cur.stable }, 'canary-rollback', `canary analysis failed: ${why}`, a);
        }
        const next = cur.steps?.find((p) => p > cur.percent);
        if (next === undefined || next >= 100) return this.switchTo(name, { strategy: 'direct', version: cur.canary }, 'canary-promote', 'canary analysis passed every step', a);
        return this.switchTo(name, { ...cur, percent: next }, 'canary-step', `canary analysis passed at ${cur.percent}%`, a);
      }).catch((e: ErrorType) => this.opts.log.error({ model: name, err: e.message }, 'canary transition failed'));
    }, this.opts.tickMs ?? 1000);
    timer.unref();
    this.timers.set(name, timer);
  }

  /** GET /admin/deployments/{name}: strategy, traffic split, per-version statistics, analysis, history. */
  view(name: string) {
    this.opts.registry.getModel(name);
    const state = this.states.get(name) ?? null;
    const stats: Record<string, unknown> = {};
    for (const [v, st] of this.opts.router.stats(name)) {
      const l = st.latency.snapshot();
      stats[v] = { requests: st.requests, errors: st.errors, error_rate: st.requests ? st.errors / st.requests : null, p99_ms: l.p99_ms, scores: st.scores.seen };
    }
    return {
      model: name,
      strategy: state?.spec ?? null,
      serving: state === null ? `latest ready version (${this.opts.engine.find(name)?.version ?? 'none'})` : undefined,
      traffic: state ? traffic(state.spec) : null,
      since: state?.since ?? null,
      reason: state?.reason ?? null,
      step_stats: stats,
      analysis: state?.analysis ?? [],
      shadow: this.opts.router.agreement(name)?.summary() ?? null,
      history: this.opts.registry.deploymentHistory<DeploymentState>(name).slice(-20).map((h) => ({ at: h.at, action: h.action, reason: h.reason, from: h.from?.spec ?? null, to: h.to?.spec ?? null })),
    };
  }

  close(): void {
    for (const t of this.timers.values()) clearInterval(t);
    this.timers.clear();
  }
}

const fmt = (x: number | null) => (x === null ? 'n/a' : Number(x.toPrecision(4)));

function describeFailure(c: Check): string {
  switch (c.name) {
    case 'error_rate':
      return `error_rate ${fmt(c.canary)} vs stable ${fmt(c.stable)} (limit ${fmt(c.limit)}, binomial p = ${fmt(c.pValue ?? null)}, n = ${c.n})`;
    case 'p99_latency':
      return `p99_latency ${fmt(c.canary)} ms vs stable ${fmt(c.stable)} ms (${c.above} of ${c.n} canary requests above the limit ${fmt(c.limit)} ms, binomial p = ${fmt(c.pValue ?? null)})`;
    case 'score_psi':
      return `score_psi ${fmt(c.canary)} against the canary's own reference (limit ${fmt(c.limit)}, n = ${c.n})`;
  }
}

function incompatible(contract: LoadedModel, m: LoadedModel): string | null {
  const want = contract.inputs;
  const got = m.inputs;
  if (want.length !== got.length) return `${got.length} inputs, the contract has ${want.length}`;
  for (const w of want) {
    const g = got.find((x) => x.name === w.name);
    if (g === undefined) return `no input '${w.name}'`;
    if (g.datatype !== w.datatype) return `input '${w.name}' is ${g.datatype}, the contract says ${w.datatype}`;
    if (g.shape.length !== w.shape.length || g.shape.some((d, i) => d !== w.shape[i])) {
      return `input '${w.name}' has shape [${g.shape.join(', ')}], the contract [${w.shape.join(', ')}]`;
    }
  }
  return null;
}

/** Runs a few sample rows (zeros, ones, and varied values) through the version; all outputs must be finite. */
async function sampleCheck(m: LoadedModel): Promise<string | null> {
  const rows = m.batchable ? Math.min(8, m.batching.maxBatchSize) : 1;
  const batch = m.batcher.reserve(rows);
  for (let i = 0; i < m.inputs.length; i++) {
    const buf = batch.buffers[i]!;
    const per = m.batcher.rowElements(batch, i);
    const at = batch.rows * per;
    const dt = m.inputs[i]!.datatype;
    for (let k = 0; k < rows * per; k++) {
      const r = Math.floor(k / per);
      const v = r === 0 ? 0 : r === 1 ? 1 : ((k * 7919) % 100) / 10;
      if (dt === 'INT64' || dt === 'UINT64') (buf as BigInt64Array)[at + k] = BigInt(Math.round(v));
      else if (dt === 'BOOL') (buf as Uint8Array)[at + k] = v > 0 ? 1 : 0;
      else (buf as Float32Array)[at + k] = dt.startsWith('FP') ? v : Math.round(v);
    }
  }
  void makeTypedArray;
  const result = await new Promise<RunResult | ErrorType>((resolve) => {
    const now = performance.now();
    const p: PendingRequest = { rows, enqueuedAt: now, deadline: now + 30_000, settled: false, resolve: (r) => resolve(r), reject: (e) => resolve(e) };
    m.batcher.commit(batch, p);
  });
  if (result instanceof Error) return result.message;
  for (const o of result.outputs) {
    if (o.datatype !== 'FP32' && o.datatype !== 'FP64') continue;
    for (let k = 0; k < o.data.length; k++) {
      if (!Number.isFinite(o.data[k] as number)) return `output '${o.name}' is not finite (${o.data[k]})`;
    }
  }
  return null;
}

export { badRequest };
