// The model repository while the server runs: the first import and load at start, Triton's model
// control (POST /v2/repository/index, /v2/repository/models/{m}/load and /unload, behind the admin
// token) and, with `repository.poll`, a rescan every few seconds that imports and loads new version
// folders. Versions are immutable: a folder whose bytes changed under a registered number is
// refused and logged once, never served. Repository versions are pinned (kept loaded whatever the
// deployment) until an unload; a model unloaded through model control stays unloaded, polling
// included, until it is loaded again. Every operation runs one at a time.
//
// With replicas sharing a store, the repository and what is loaded are this replica's: a load
// imports into the shared store (which every replica reads) and loads here; a deployment is what
// every replica serves, so deploying a loaded model is how the others start serving it. An unload
// is refused while the model has a deployment in the store, whichever replica made it.

import { conflict, isScorelineError, modelInvalid, modelNotFound, ScorelineError, type ErrorCode } from '../errors.js';
import type { LoadedModel } from '../inference/index.js';
import { scanRepository, type HashCache, type ImportSkip, type RepositoryModel, type RepositoryScan } from '../registry/index.js';
import { versionsOf, type DeploymentState } from '../deploy/index.js';
import type { ServerContext } from './context.js';

/** One entry of POST /v2/repository/index, as Triton answers it. */
export interface IndexEntry {
  readonly name: string;
  readonly version: string;
  readonly state: 'READY' | 'LOADING' | 'UNAVAILABLE';
  readonly reason: string;
}

const refusalOf = (s: ImportSkip): ScorelineError => new ScorelineError(s.code as ErrorCode, s.reason);

export class RepositoryControl {
  private readonly cache: HashCache = new Map();
  /** Models unloaded through model control: polling leaves them alone. */
  private readonly unloaded = new Set<string>();
  /** Refusals already logged, so that a poll does not repeat them every few seconds. */
  private readonly reported = new Set<string>();
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly ctx: ServerContext,
    /** Versions kept loaded whatever the deployment, by model (the deployer reads it). */
    private readonly pinned: Map<string, Set<number>>,
  ) {}

  private get dir(): string | null {
    return this.ctx.config.modelRepository;
  }

  /** Runs repository operations one at a time. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private scan(): RepositoryScan | null {
    if (this.dir === null) return null;
    return scanRepository(this.dir, this.cache);
  }

  /**
   * At start: imports the repository into the registry (content-addressed, idempotent across
   * restarts) and loads every version from its verified artifact. A version the registry refuses
   * (not ONNX, a number taken by other bytes, an MLflow model without ONNX) stops the start with
   * the reason.
   */
  async start(): Promise<readonly RepositoryModel[]> {
    const scan = this.scan();
    if (scan === null) return [];
    for (const s of scan.skipped) this.ctx.log.warn({ entry: s }, 'model repository entry skipped');
    const result = await this.ctx.registry.importRepository(scan);
    for (const r of result.imported)
      this.ctx.log.info({ model: r.name, version: r.version, sha256: r.sha256 }, 'model version imported into the registry');
    if (result.skipped.length > 0) {
      const reasons = result.skipped.map((s) => `${s.model}/${s.version}: ${s.reason}`).join('; ');
      throw modelInvalid(`the model repository has versions the registry refuses: ${reasons}`);
    }
    for (const model of scan.models) for (const v of model.versions) await this.loadVersion(model.name, v.version);
    return scan.models;
  }

  private async loadVersion(name: string, version: number): Promise<LoadedModel> {
    let set = this.pinned.get(name);
    if (set === undefined) {
      set = new Set();
      this.pinned.set(name, set);
    }
    set.add(version);
    const t0 = performance.now();
    const m = await this.ctx.deployer.ensureLoaded(name, version);
    this.ctx.log.info(
      {
        model: m.name,
        version: m.version,
        sha256: m.sha256,
        batchable: m.batchable,
        warmup: m.warmupSizes(),
        placement: m.placement,
        engine: m.engine,
        ...(m.engineNote !== null && m.engine !== 'trees' ? { engineNote: m.engineNote } : {}),
        batchMicros: Math.round(m.batchMicros),
        ms: Math.round(performance.now() - t0),
      },
      'model version ready',
    );
    return m;
  }

  /** Starts polling every `seconds` (0: never). */
  poll(seconds: number): void {
    if (seconds <= 0 || this.dir === null) return;
    this.timer = setInterval(() => {
      void this.serial(() => this.pollOnce()).catch((e: Error) => this.ctx.log.error({ err: e.message }, 'model repository poll failed'));
    }, seconds * 1000);
    this.timer.unref();
  }

  /** One poll: new version folders of models not unloaded through model control are imported and loaded. */
  private async pollOnce(): Promise<void> {
    const scan = this.scan()!;
    const fresh: RepositoryModel[] = [];
    for (const model of scan.models) {
      if (this.unloaded.has(model.name)) continue;
      // New folders, and folders whose bytes no longer match their registered version (refused below).
      const versions: (typeof model.versions)[number][] = [];
      for (const v of model.versions) {
        if (this.ctx.engine.find(model.name, String(v.version)) === undefined || (await this.knownSha(model.name, v.version)) !== v.sha256)
          versions.push(v);
      }
      if (versions.length > 0) fresh.push({ ...model, versions });
    }
    const refusedNow = scan.refused.filter((r) => !this.unloaded.has(r.model));
    if (fresh.length === 0 && refusedNow.length === 0) return;
    const result = await this.ctx.registry.importRepository({ models: fresh, skipped: [], refused: refusedNow });
    for (const s of result.skipped) {
      const key = `${s.model}\u0000${s.version}\u0000${s.reason}`;
      if (this.reported.has(key)) continue;
      this.reported.add(key);
      this.ctx.log.error(
        { model: s.model, version: s.version, path: s.path, code: s.code, reason: s.reason },
        'model repository version refused',
      );
    }
    const refused = new Set(result.skipped.map((s) => `${s.model}/${s.version}`));
    for (const model of fresh) {
      for (const v of model.versions) {
        if (refused.has(`${model.name}/${v.version}`) || this.ctx.engine.find(model.name, String(v.version)) !== undefined) continue;
        try {
          await this.loadVersion(model.name, v.version);
          this.ctx.log.info({ model: model.name, version: v.version }, 'new model version picked up by the repository poll');
        } catch (e) {
          const key = `${model.name}\u0000${v.version}\u0000load`;
          if (!this.reported.has(key))
            this.ctx.log.error({ model: model.name, version: v.version, err: (e as Error).message }, 'new model version failed to load');
          this.reported.add(key);
        }
      }
    }
  }

  /**
   * POST /v2/repository/index: every version in the repository and every version loaded, with its
   * state. Not queued behind a running load or unload: it reads, and shows a load as LOADING.
   */
  async index(readyOnly: boolean): Promise<IndexEntry[]> {
    const entries = new Map<string, IndexEntry>();
    const add = (e: IndexEntry) => entries.set(`${e.name}\u0000${e.version}`, e);
    const scan = this.scan();
    for (const model of scan?.models ?? []) {
      for (const v of model.versions) {
        const m = this.ctx.engine.find(model.name, String(v.version));
        if (m !== undefined) continue;
        const known = await this.knownSha(model.name, v.version);
        const reason =
          known !== null && known !== v.sha256
            ? "refused: the folder's bytes differ from the registered version (versions are immutable)"
            : this.unloaded.has(model.name)
              ? 'unloaded'
              : 'not loaded';
        add({ name: model.name, version: String(v.version), state: 'UNAVAILABLE', reason });
      }
    }
    for (const r of scan?.refused ?? []) add({ name: r.model, version: String(r.version), state: 'UNAVAILABLE', reason: r.reason });
    for (const m of this.ctx.engine.list()) {
      const state = m.state === 'ready' ? 'READY' : m.state === 'loading' ? 'LOADING' : 'UNAVAILABLE';
      add({ name: m.name, version: m.version, state, reason: m.state === 'failed' ? (m.error ?? 'failed to load') : '' });
    }
    const out = [...entries.values()].sort((a, b) => a.name.localeCompare(b.name) || Number(a.version) - Number(b.version));
    return readyOnly ? out.filter((e) => e.state === 'READY') : out;
  }

  /** The registered version's sha256; null when the registry has no such version (a store that cannot be reached throws). */
  private async knownSha(name: string, version: number): Promise<string | null> {
    try {
      return (await this.ctx.registry.getVersion(name, version)).sha256;
    } catch (e) {
      if (isScorelineError(e) && (e.code === 'MODEL_NOT_FOUND' || e.code === 'VERSION_NOT_FOUND')) return null;
      throw e;
    }
  }

  /**
   * POST /v2/repository/models/{m}/load: a repository model's versions are imported and loaded
   * (a refused one fails the load with its reason); a model only the registry has (uploaded through
   * the admin API) gets its latest version loaded. Both stay loaded until an unload.
   */
  load(name: string): Promise<{ name: string; versions: number[] }> {
    return this.serial(async () => {
      const scan = this.scan();
      const model = scan?.models.find((m) => m.name === name);
      const refused = scan?.refused.filter((r) => r.model === name) ?? [];
      if (model === undefined && refused.length === 0) {
        const latest = (await this.ctx.registry.listModels(name))[0]?.latestVersion;
        if (latest === undefined || latest === null) throw modelNotFound(name);
        this.unloaded.delete(name);
        await this.loadVersion(name, latest);
        return { name, versions: [latest] };
      }
      const result = await this.ctx.registry.importRepository({ models: model === undefined ? [] : [model], skipped: [], refused });
      if (result.skipped.length > 0) {
        const first = refusalOf(result.skipped[0]!);
        const all = result.skipped.map((s) => `version ${s.version}: ${s.reason}`).join('; ');
        throw new ScorelineError(first.code, `model '${name}' was not loaded: ${all}`);
      }
      this.unloaded.delete(name);
      const versions: number[] = [];
      for (const v of model!.versions) {
        await this.loadVersion(name, v.version);
        versions.push(v.version);
      }
      return { name, versions };
    });
  }

  /**
   * POST /v2/repository/models/{m}/unload: every loaded version of the model is unloaded once its
   * queued requests are answered, and polling leaves the model alone. A model with a deployment is
   * refused (409): the deployment routes its traffic, so it is removed first, explicitly.
   */
  unload(name: string): Promise<{ name: string; versions: number[] }> {
    return this.serial(async () => {
      const loaded = this.ctx.engine.versionsOf(name);
      const registered = (await this.ctx.registry.listModels(name)).length > 0;
      if (loaded.length === 0 && !registered) throw modelNotFound(name);
      // The store's word, not only this replica's: another replica may have deployed it a moment ago.
      const stored = registered ? await this.ctx.registry.getDeployment<DeploymentState>(name) : undefined;
      const spec = stored?.state.spec ?? this.ctx.deployer.state(name)?.spec;
      if (spec !== undefined) {
        const versions = versionsOf(spec);
        throw conflict(
          `model '${name}' has a deployment (${spec.strategy}, routing to version${versions.length > 1 ? 's' : ''} ${versions.join(', ')}); ` +
            `unloading would leave it routing to nothing. Remove the deployment first (DELETE /admin/deployments/${name}), then unload`,
        );
      }
      this.pinned.delete(name);
      this.unloaded.add(name);
      const versions: number[] = [];
      for (const m of loaded) {
        // Requests already queued for the version are answered before its session goes.
        await m.batcher.whenIdle(30_000);
        await this.ctx.engine.unload(m);
        versions.push(m.versionNumber);
      }
      this.ctx.log.info({ model: name, versions }, 'model unloaded through model control');
      return { name, versions };
    });
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
