// The deployer: moves traffic between registered versions, safely. Before any traffic moves, every
// version the new deployment needs is loaded from its verified artifact, warmed up, checked against
// the deployment's input contract, run on sample inputs (outputs must be finite) and held to a
// latency budget; on any failure nothing moves and the error says what failed. Then the router
// switches in one step, the state is persisted in the store (restored exactly after a restart),
// and versions nobody routes to are unloaded once their in-flight requests are answered. Canary
// deployments are analysed continuously and promote or roll back by themselves (on the leader
// only, when replicas share a store). A deployment another replica stored is adopted the same
// way: its versions are loaded and warmed here before the router switches to it.
// With replicas sharing a store, each replica shares its statistics of a canary's current step
// (shared-steps.ts), and the analysis and GET /admin/deployments/{name} judge the merged figures of
// every replica, so the verdict does not depend on which replicas the clients happen to reach.

import type { Logger } from 'pino';
import { badRequest, conflict, isScorelineError, ScorelineError, type ScorelineError as ErrorType } from '../errors.js';
import type { InferenceEngine, LoadedModel } from '../inference/index.js';
import type { DeploymentRecord } from '../registry/index.js';
import type { CanaryStepRecords, Registry } from '../store/index.js';
import { analyzeCanary, DEFAULT_POLICY, StepStats, type Analysis, type AnalysisPolicy, type ScoreReference } from './analysis.js';
import { SharedSteps, type OthersOfStep, type StepPart } from './shared-steps.js';
import type { Router } from './router.js';
import { parseStrategy, versionsOf, type Strategy } from './strategies.js';
import { describeFailure, sampleCheck, traffic, withoutVersions } from './checks.js';
import { inputIncompatibility } from '../onnx/index.js';

export interface DeploymentState {
  readonly spec: Strategy;
  readonly since: string;
  readonly reason: string;
  /** Canary: the analyses so far (latest last, at most 20). */
  readonly analysis: readonly Analysis[];
}

export interface DeployerOptions {
  registry: Registry;
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
  /** Whether this process runs canary analysis's automatic transitions now (the leader of a cluster); default always. */
  leads?: () => boolean;
  /**
   * Whether other replicas share the store: then a version that fails to load here is routed
   * around locally and reported, never written to the shared deployment.
   */
  shared?: boolean;
  /**
   * Replicas share a store: this replica shares its canary step statistics there every `everyMs`
   * and judges canaries on every replica's (absent: one process, its own statistics are all of them).
   */
  stepSharing?: { records: CanaryStepRecords; replica: string; everyMs: number };
}

/** A step's statistics per version, this replica's live ones merged with the other replicas' shared ones. */
interface MergedStep {
  readonly stats: ReadonlyMap<number, StepStats>;
  /** Replica processes whose statistics are in, this one included. */
  readonly replicas: number;
  readonly others: OthersOfStep | null;
}

/** How this process serves a model's stored deployment. */
export interface Applied {
  readonly revision: number;
  readonly spec: Strategy;
  readonly since: string;
  /** Why less than the stored deployment is served here, or null. */
  readonly problem: string | null;
}

const deploymentInvalid = (message: string) => new ScorelineError('DEPLOYMENT_INVALID', message);

/** A deployment change, as subscribers (retraining jobs watching their canary) see it. */
export interface DeploymentChange {
  readonly model: string;
  readonly action: string;
  readonly reason: string;
  readonly state: DeploymentState;
}

export class Deployer {
  private readonly states = new Map<string, DeploymentState>();
  /** The stored revision each model's state came from (0: none). */
  private readonly revisions = new Map<string, number>();
  /** Models whose stored deployment this process serves only in part (a version failed to load here), and why. */
  private readonly problems = new Map<string, string>();
  private readonly listeners = new Set<(e: DeploymentChange) => void>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly busy = new Set<string>();
  private readonly policy: AnalysisPolicy;
  private readonly sharing: SharedSteps | null = null;
  private shareTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: DeployerOptions) {
    this.policy = opts.policy ?? DEFAULT_POLICY;
    const s = opts.stepSharing;
    if (s !== undefined) {
      this.sharing = new SharedSteps({ records: s.records, replica: s.replica, log: opts.log.child({ component: 'canary' }) });
      // From a timer, never on the request path; a share still running when the next is due is not doubled.
      this.shareTimer = setInterval(() => void this.shareSteps(), s.everyMs);
      this.shareTimer.unref();
    }
  }

  /** The sharing of canary step statistics (null with one process): for /metrics. */
  stepSharing(): ReturnType<SharedSteps['status']> | null {
    return this.sharing?.status() ?? null;
  }

  /** Writes this replica's statistics of every canary's current step; the leader also reads the others'. */
  shareSteps(): Promise<void> {
    if (this.sharing === null) return Promise.resolve();
    const parts: StepPart[] = [];
    for (const name of this.states.keys()) {
      const step = this.stepOf(name);
      if (step !== null) parts.push({ model: name, step, stats: this.opts.router.stats(name) });
    }
    return this.sharing.share(parts, this.opts.leads?.() ?? true);
  }

  /**
   * What names a canary's current step on every replica: the stored revision of the deployment and
   * its start (both come from the store). The router's statistics start afresh exactly when these
   * change (every switch, made here or adopted, is a new revision), so a row written under one key
   * holds the statistics of that step only.
   */
  private stepOf(name: string): string | null {
    const st = this.states.get(name);
    if (st === undefined || st.spec.strategy !== 'canary') return null;
    const s = st.spec;
    return `r${this.revisions.get(name) ?? 0} ${st.since} v${s.stable}->v${s.canary} ${s.percent}%`;
  }

  /** The step's statistics of every replica: this replica's live ones plus the other replicas' last rows read of the same step. */
  private merged(name: string, reference: ScoreReference | null, canary: number): MergedStep {
    const own = this.opts.router.stats(name);
    const step = this.stepOf(name);
    if (this.sharing === null || step === null) return { stats: own, replicas: 1, others: null };
    const others = this.sharing.others(name, step);
    if (others.replicas === 0) return { stats: own, replicas: 1, others };
    const stats = new Map<number, StepStats>();
    for (const [v, mine] of own) {
      // The canary's score bins are kept on its reference's edges; rows binned on other edges stay out of the sample.
      const edges = v === canary && reference !== null ? () => reference.edges : undefined;
      stats.set(v, StepStats.merged([mine, ...(others.byVersion.get(v) ?? [])], edges));
    }
    return { stats, replicas: others.replicas + 1, others };
  }

  /** Calls fn after every switch (made here or adopted from the store); returns the unsubscribe function. */
  subscribe(fn: (e: DeploymentChange) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  state(name: string): DeploymentState | null {
    return this.states.get(name) ?? null;
  }

  /** What this process routes by, per model: for the replica's heartbeat and GET /admin/deployments. */
  applied(): Record<string, Applied> {
    const out: Record<string, Applied> = {};
    for (const [name, st] of this.states) {
      out[name] = { revision: this.revisions.get(name) ?? 0, spec: st.spec, since: st.since, problem: this.problems.get(name) ?? null };
    }
    return out;
  }

  /** Loads and routes every stored deployment; a version that cannot load is routed around. */
  async restore(): Promise<void> {
    for (const rec of await this.opts.registry.listDeployments<DeploymentState>()) await this.adopt(rec, true);
  }

  /**
   * Brings this process to the stored deployments: every one whose revision is newer than the one
   * served here is loaded, warmed and switched to (`only`: just that model), and one removed in the
   * store stops being served here. A model whose change is in progress here is left for the next
   * call. Returns the models switched.
   */
  async sync(only?: string): Promise<string[]> {
    const records =
      only === undefined
        ? await this.opts.registry.listDeployments<DeploymentState>()
        : [await this.opts.registry.getDeployment<DeploymentState>(only)].filter((r) => r !== undefined);
    const switched: string[] = [];
    for (const rec of records) {
      if (rec.revision <= (this.revisions.get(rec.model) ?? 0) || this.busy.has(rec.model)) continue;
      const ok = await this.exclusive(rec.model, async () => {
        // Read again inside: a change made here meanwhile may have moved past this record.
        if (rec.revision <= (this.revisions.get(rec.model) ?? 0)) return false;
        return this.adopt(rec);
      }).catch((e: Error) => {
        this.opts.log.warn({ model: rec.model, err: e.message }, 'could not adopt the stored deployment yet');
        return false;
      });
      if (ok) switched.push(rec.model);
    }
    // Deployments another replica removed: the model goes back to its highest ready version here too.
    const stored = new Set(records.map((r) => r.model));
    for (const name of [...this.states.keys()]) {
      if ((only !== undefined && name !== only) || stored.has(name) || this.busy.has(name)) continue;
      const ok = await this.exclusive(name, async () => {
        // Read again inside: a deployment made here meanwhile is in the store.
        if (!this.states.has(name) || (await this.opts.registry.getDeployment(name)) !== undefined) return false;
        this.drop(name, 0);
        this.opts.log.info({ model: name }, 'deployment removed in the store: serving the latest ready version');
        return true;
      }).catch((e: Error) => {
        this.opts.log.warn({ model: name, err: e.message }, 'could not check a removed deployment yet');
        return false;
      });
      if (ok) switched.push(name);
    }
    return switched;
  }

  /** Stops routing by the model's deployment (it serves its highest ready version); its versions stay loaded. */
  private drop(name: string, revision: number): void {
    this.opts.router.set(name, null);
    this.states.delete(name);
    if (revision === 0) this.revisions.delete(name);
    else this.revisions.set(name, revision);
    this.problems.delete(name);
    this.schedule(name);
  }

  /** Serves a stored deployment: its versions loaded first, then one router switch. False when nothing of it can be served. */
  private async adopt(rec: DeploymentRecord<DeploymentState>, restoring = false): Promise<boolean> {
    const name = rec.model;
    let state = rec.state;
    try {
      state = { ...state, spec: parseStrategy(state.spec, { persisted: true }) };
    } catch (e) {
      this.opts.log.error({ model: name, err: (e as Error).message }, 'stored deployment is unreadable; serving the latest version');
      return false;
    }
    const failed: number[] = [];
    for (const v of versionsOf(state.spec)) {
      try {
        await this.ensureLoaded(name, v);
      } catch (e) {
        failed.push(v);
        this.opts.log.error({ model: name, version: v, err: (e as Error).message }, 'version of a stored deployment failed to load');
      }
    }
    let revision = rec.revision;
    let problem: string | null = null;
    if (failed.length > 0) {
      const degraded = withoutVersions(state.spec, failed);
      this.opts.log.warn({ model: name, failed, now: degraded }, 'deployment served without the versions that failed to load');
      if (degraded === null) return false;
      problem = `version(s) ${failed.join(', ')} failed to load here`;
      state = {
        ...state,
        spec: degraded,
        reason: `restored without version(s) ${failed.join(', ')}: failed to load`,
        since: new Date().toISOString(),
      };
      // Shared: another replica may load them fine, so the stored deployment stays what the operator asked for.
      if (this.opts.shared !== true) {
        revision = (await this.opts.registry.saveDeployment(name, state, { action: 'restore-degraded', reason: state.reason })).revision;
        problem = null;
      }
    }
    const previous = this.states.get(name);
    this.opts.router.set(name, state.spec);
    this.states.set(name, state);
    this.revisions.set(name, revision);
    if (problem === null) this.problems.delete(name);
    else this.problems.set(name, problem);
    this.schedule(name);
    if (!restoring) {
      this.opts.log.info({ model: name, spec: state.spec, revision }, 'deployment adopted from the store');
      this.emit({ model: name, action: 'adopt', reason: state.reason, state });
      void this.unloadUnused(name, previous?.spec ?? null);
    }
    return true;
  }

  /** PUT /admin/deployments/{name}. */
  async apply(name: string, body: unknown, reason = 'deployed'): Promise<DeploymentState> {
    const spec = parseStrategy(body);
    return this.exclusive(name, async () => {
      await this.opts.registry.getModel(name); // 404 for an unknown model
      for (const v of versionsOf(spec)) await this.opts.registry.getVersion(name, v); // 404 for an unknown version
      await this.validate(name, spec);
      return this.switchTo(name, spec, 'deploy', reason);
    });
  }

  /** POST .../promote: canary -> next step (or all traffic), blue-green -> the other slot, shadow -> the shadow. */
  async promote(name: string, reason = 'promoted'): Promise<DeploymentState> {
    return this.exclusive(name, async () => {
      const s = await this.current(name);
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
      const s = await this.current(name);
      switch (s.strategy) {
        case 'canary':
          return this.switchTo(name, { strategy: 'direct', version: s.stable }, 'rollback', reason);
        case 'blue-green':
          return this.switchTo(name, { ...s, active: s.active === 'blue' ? 'green' : 'blue' }, 'rollback', reason);
        case 'shadow':
          return this.switchTo(name, { strategy: 'direct', version: s.primary }, 'rollback', reason);
        default: {
          const history = await this.opts.registry.deploymentHistory<DeploymentState>(name);
          const previous = [...history].reverse().find((h) => h.from !== null && JSON.stringify(h.from.spec) !== JSON.stringify(s))?.from;
          if (!previous) throw conflict(`model '${name}' has no earlier deployment to roll back to`);
          const spec = parseStrategy(previous.spec, { persisted: true });
          await this.validate(name, spec);
          return this.switchTo(name, spec, 'rollback', reason);
        }
      }
    });
  }

  /** The deployment a promote or rollback starts from: the stored one, adopted here first if another replica changed it. */
  private async current(name: string): Promise<Strategy> {
    const rec = await this.opts.registry.getDeployment<DeploymentState>(name);
    if (rec !== undefined && rec.revision > (this.revisions.get(name) ?? 0)) await this.adopt(rec);
    const s = this.states.get(name)?.spec;
    if (s === undefined) throw conflict(`model '${name}' has no deployment yet (it serves its latest version); PUT one first`);
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
      const s = await this.current(name);
      if (s.strategy === 'canary')
        throw conflict(`model '${name}' has a canary deployment under analysis; roll it back or promote it before removing the deployment`);
      // Stored first (refused when another replica changed it meanwhile); the other replicas follow by propagation.
      const revision = await this.opts.registry.removeDeployment(name, {
        action: 'remove',
        reason,
        expectRevision: this.revisions.get(name) ?? 0,
      });
      this.drop(name, revision);
      this.opts.log.info({ model: name, reason, was: s, revision }, 'deployment removed');
    });
  }

  /** Loads a registered version from its verified artifact, unless it is already serving. */
  async ensureLoaded(name: string, version: number): Promise<LoadedModel> {
    const loaded = this.opts.engine.find(name, String(version));
    if (loaded !== undefined && loaded.state === 'ready') return loaded;
    // Reading through the registry verifies the bytes and counts a tampered artifact.
    const { record, path } = await this.opts.registry.artifactFile(name, version);
    const again = this.opts.engine.find(name, String(version));
    if (again !== undefined && again.state === 'ready') return again;
    const m = await this.opts.engine.load({ name, version, path, sha256: record.sha256, config: record.config as never });
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
          if (isScorelineError(e) && e.code === 'STORE_UNAVAILABLE') throw e;
          throw deploymentInvalid(`version ${v} failed to load: ${(e as Error).message}`);
        }
        if (before === undefined || before.state !== 'ready') loadedHere.push(m);
        const where = `version ${v}`;
        if (contract !== null) {
          const problem = inputIncompatibility(contract.inputs, m.inputs, 'the contract');
          if (problem !== null) throw deploymentInvalid(`${where} does not fit the deployment's input contract: ${problem}`);
        }
        if (m.batchMicros > this.opts.latencyBudgetMicros) {
          throw deploymentInvalid(
            `${where} takes ${Math.round(m.batchMicros)} us for its largest batch, over the budget of ${this.opts.latencyBudgetMicros} us`,
          );
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

  /**
   * Stores the new state (refused when another replica changed the deployment since this one read
   * it), then switches the router. Nothing moves here when the store refuses or cannot be reached.
   */
  private async switchTo(name: string, spec: Strategy, action: string, reason: string, analysis?: Analysis): Promise<DeploymentState> {
    const previous = this.states.get(name);
    // The analysis trail of a rollout lasts through its steps and its automatic outcome.
    const keepAnalysis =
      previous && previous.spec.strategy === 'canary' && (spec.strategy === 'canary' || analysis !== undefined) ? previous.analysis : [];
    const state: DeploymentState = {
      spec,
      since: new Date().toISOString(),
      reason,
      analysis: analysis ? [...keepAnalysis, analysis].slice(-20) : keepAnalysis,
    };
    const saved = await this.opts.registry.saveDeployment(name, state, { action, reason, expectRevision: this.revisions.get(name) ?? 0 });
    this.opts.router.set(name, spec);
    this.states.set(name, state);
    this.revisions.set(name, saved.revision);
    this.problems.delete(name);
    this.opts.log.info({ model: name, action, spec, reason, revision: saved.revision }, 'deployment switched');
    this.schedule(name);
    this.emit({ model: name, action, reason, state });
    void this.unloadUnused(name, previous?.spec ?? null);
    return state;
  }

  private emit(e: DeploymentChange): void {
    for (const fn of this.listeners) {
      try {
        fn(e);
      } catch (err) {
        this.opts.log.error({ model: e.model, err: (err as Error).message }, 'deployment subscriber failed');
      }
    }
  }

  /** Versions the old deployment used and the new one does not: unloaded once idle. */
  private async unloadUnused(name: string, old: Strategy | null): Promise<void> {
    if (old === null) return;
    for (const v of versionsOf(old)) {
      if (this.referenced(name, v)) continue;
      const m = this.opts.engine.find(name, String(v));
      if (m === undefined) continue;
      // Requests already queued for the version are answered first; after 30 s it goes regardless.
      await m.batcher.whenIdle(30_000);
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
      // Every replica routes and measures; only the leader decides, so one transition is stored.
      if (this.busy.has(name) || !(this.opts.leads?.() ?? true)) return;
      const cur = this.states.get(name)?.spec;
      if (cur === undefined || cur.strategy !== 'canary') return;
      const reference = this.referenceOfVersion(name, cur.canary);
      // Every replica's traffic of this step: its own live figures and the other replicas' rows last read.
      const { stats, replicas } = this.merged(name, reference, cur.canary);
      const a: Analysis = { ...analyzeCanary(stats.get(cur.canary)!, stats.get(cur.stable)!, this.policy, reference), replicas };
      const failedNow = a.verdict === 'fail';
      const due = Date.now() - started >= stepMs;
      if (!failedNow && !(due && a.verdict === 'pass')) return;
      void this.exclusive(name, async () => {
        if (failedNow) {
          const why = a.checks
            .filter((c) => c.result === 'fail')
            .map(describeFailure)
            .join('; ');
          return this.switchTo(name, { strategy: 'direct', version: cur.stable }, 'canary-rollback', `canary analysis failed: ${why}`, a);
        }
        const next = cur.steps?.find((p) => p > cur.percent);
        if (next === undefined || next >= 100)
          return this.switchTo(name, { strategy: 'direct', version: cur.canary }, 'canary-promote', 'canary analysis passed every step', a);
        return this.switchTo(name, { ...cur, percent: next }, 'canary-step', `canary analysis passed at ${cur.percent}%`, a);
      }).catch((e: ErrorType) => this.opts.log.error({ model: name, err: e.message }, 'canary transition failed'));
    }, this.opts.tickMs ?? 1000);
    timer.unref();
    this.timers.set(name, timer);
  }

  /** GET /admin/deployments/{name}: strategy, traffic split, per-version statistics (every replica's), analysis, history. */
  async view(name: string) {
    await this.opts.registry.getModel(name);
    const history = await this.opts.registry.deploymentHistory<DeploymentState>(name);
    const state = this.states.get(name) ?? null;
    const canary = state !== null && state.spec.strategy === 'canary' ? state.spec : null;
    // Any replica answers with every replica's figures: the other replicas' rows of this step are read now (the last read when the store cannot be).
    const step = this.stepOf(name);
    if (this.sharing !== null && step !== null) await this.sharing.read([{ model: name, step }]);
    const reference = canary !== null ? this.referenceOfVersion(name, canary.canary) : null;
    const merged =
      canary !== null ? this.merged(name, reference, canary.canary) : { stats: this.opts.router.stats(name), replicas: 1, others: null };
    const stats: Record<string, unknown> = {};
    for (const [v, st] of merged.stats) {
      const l = st.latency.snapshot();
      stats[v] = {
        requests: st.requests,
        errors: st.errors,
        error_rate: st.requests ? st.errors / st.requests : null,
        p99_ms: l.p99_ms,
        scores: st.scores,
        replicas: merged.replicas,
      };
    }
    return {
      model: name,
      strategy: state?.spec ?? null,
      serving: state === null ? `latest ready version (${this.opts.engine.find(name)?.version ?? 'none'})` : undefined,
      traffic: state ? traffic(state.spec) : null,
      since: state?.since ?? null,
      reason: state?.reason ?? null,
      revision: this.revisions.get(name) ?? 0,
      step_stats: stats,
      // Whose traffic step_stats and live_analysis hold: null with one process (its own is all of it).
      step_sharing:
        merged.others === null ? null : { replicas: merged.replicas, state: merged.others.state, reason: merged.others.reason, step },
      analysis: state?.analysis ?? [],
      // What the analysis says now (recorded analyses above are the ones that moved traffic).
      live_analysis: canary !== null ? this.liveAnalysis(merged, canary, reference) : null,
      shadow: this.opts.router.agreement(name)?.summary() ?? null,
      history: history
        .slice(-20)
        .map((h) => ({ at: h.at, action: h.action, reason: h.reason, from: h.from?.spec ?? null, to: h.to?.spec ?? null })),
    };
  }

  private referenceOfVersion(name: string, version: number): ScoreReference | null {
    const m = this.opts.engine.find(name, String(version));
    return m !== undefined ? (this.opts.referenceOf?.(m) ?? null) : null;
  }

  private liveAnalysis(
    merged: MergedStep,
    spec: Extract<Strategy, { strategy: 'canary' }>,
    reference: ScoreReference | null,
  ): Analysis | null {
    const canary = merged.stats.get(spec.canary);
    const stable = merged.stats.get(spec.stable);
    if (canary === undefined || stable === undefined) return null;
    return { ...analyzeCanary(canary, stable, this.policy, reference), replicas: merged.replicas };
  }

  close(): void {
    for (const t of this.timers.values()) clearInterval(t);
    this.timers.clear();
    if (this.shareTimer !== null) clearInterval(this.shareTimer);
    this.shareTimer = null;
  }
}

export { badRequest };
