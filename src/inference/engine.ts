// The InferenceEngine: loads model versions onto a lane (the piscina worker pool, or inline on the
// calling thread), gives each a DynamicBatcher, warms them up, tracks readiness, and answers "which
// loaded version is this request for". A model whose largest batch runs faster than the cross-thread
// hop costs (inlineBelowMicros) is served inline even when workers exist: for tiny models the hop is
// the bill.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { BatchingConfig } from '../config.js';
import { modelInvalid, modelNotFound, notReady, versionNotFound } from '../errors.js';
import { BatchScheduler, DynamicBatcher, type BatchObserver } from './batcher.js';
import { InlineExecutor, PoolExecutor, type Executor } from './executor.js';
import { LoadedModel, type ModelSource } from './model.js';
import { readOnnxMetadata } from '../onnx/index.js';
import type { SessionSpec } from './session.js';
import { planTrees } from './tree-plan.js';

export interface EngineOptions {
  /** 0 = inline on the calling thread. */
  readonly workers: number;
  /** Serve a model inline when its largest warm-up batch takes less than this (0 = never). */
  readonly inlineBelowMicros?: number;
  readonly tasksPerWorker: number;
  readonly intraOpThreads: number;
  /** Serve plain tree ensembles with the tree engine once it matches onnxruntime (default true). */
  readonly treeEngine?: boolean;
  readonly batching: BatchingConfig;
  /** Rows one request may hold; larger requests are refused (413). Default: no limit. */
  readonly maxRowsPerRequest?: number;
  readonly observerFor: (model: LoadedModel) => BatchObserver;
}

/** Where batches run: one executor and the scheduler sharing its slots among batchers. */
export interface Lane {
  readonly kind: 'pool' | 'inline';
  readonly executor: Executor;
  readonly scheduler: BatchScheduler;
}

export class InferenceEngine {
  /** The worker pool, or null when workers = 0. */
  readonly pool: Lane | null;
  private inlineLane: Lane | null = null;
  private readonly models = new Map<string, Map<string, LoadedModel>>();
  /** Highest ready version per model name: the hot path's answer to a request without a version. */
  private readonly latest = new Map<string, LoadedModel>();

  constructor(private readonly opts: EngineOptions) {
    if (opts.workers > 0) {
      const executor = new PoolExecutor({ workers: opts.workers, tasksPerWorker: opts.tasksPerWorker });
      this.pool = { kind: 'pool', executor, scheduler: new BatchScheduler(executor) };
    } else {
      this.pool = null;
    }
  }

  private get inline(): Lane {
    if (this.inlineLane === null) {
      const executor = new InlineExecutor();
      this.inlineLane = { kind: 'inline', executor, scheduler: new BatchScheduler(executor) };
    }
    return this.inlineLane;
  }

  get lanes(): Lane[] {
    return [this.pool, this.inlineLane].filter((l): l is Lane => l !== null);
  }

  /** Batches running or queued on executors, over all lanes. */
  get inFlight(): number {
    return this.lanes.reduce((n, l) => n + l.scheduler.inFlight, 0);
  }

  /** Reads, verifies, loads and warms up one model version on every runner. */
  async load(src: ModelSource): Promise<LoadedModel> {
    const bytes = await readFile(src.path);
    const digest = createHash('sha256').update(bytes).digest('hex');
    if (digest !== src.sha256) throw modelInvalid(`${src.path} does not match its sha256 ${src.sha256}`);
    const model = new LoadedModel(src, readOnnxMetadata(bytes, src.path), this.opts.batching);
    const planned = this.opts.treeEngine === false ? { ok: false as const, reason: 'inference.treeEngine is off' } : planTrees(bytes);
    const spec: SessionSpec = {
      key: `${model.name}:${model.version}:${model.sha256}`,
      path: model.path,
      sha256: model.sha256,
      intraOpThreads: this.opts.intraOpThreads,
      warmup: { inputs: model.inputs, sizes: model.warmupSizes() },
      ...(planned.ok ? { trees: planned.plan } : {}),
    };
    model.engineNote = planned.ok ? null : planned.reason;
    const batcherOn = (lane: Lane) =>
      new DynamicBatcher(
        spec,
        model.inputs.map((t) => ({ name: t.name, datatype: t.datatype, inner: model.batchable ? t.shape.slice(1) : t.shape })),
        model.batchable,
        model.batching,
        lane.scheduler,
        this.opts.observerFor(model),
        { model: model.name, version: model.version },
        this.opts.maxRowsPerRequest,
      );
    let lane = this.pool ?? this.inline;
    model.batcher = batcherOn(lane);
    let versions = this.models.get(model.name);
    if (versions === undefined) {
      versions = new Map();
      this.models.set(model.name, versions);
    }
    const previous = versions.get(model.version);
    if (previous !== undefined && previous.state !== 'unloaded') {
      throw modelInvalid(`model '${model.name}' version ${model.version} is already loaded`);
    }
    versions.set(model.version, model);
    try {
      const loaded = await lane.executor.load(spec);
      model.batchMicros = loaded.batchMicros;
      model.engine = loaded.engine;
      if (planned.ok) model.engineNote = loaded.note;
      const limit = this.opts.inlineBelowMicros ?? 0;
      if (lane.kind === 'pool' && model.batchMicros < limit) {
        // Nothing can be queued yet (the version is not ready), so the batcher can move.
        const inline = await this.inline.executor.load(spec);
        model.batchMicros = inline.batchMicros;
        model.engine = inline.engine;
        if (planned.ok) model.engineNote = inline.note;
        await lane.executor.release(spec.key);
        lane = this.inline;
        model.batcher = batcherOn(lane);
      }
      lane.scheduler.register(model.batcher);
      model.placement = lane.kind;
      model.state = 'ready';
      model.loadedAt = Date.now();
      this.refreshLatest(model.name);
    } catch (e) {
      model.state = 'failed';
      model.error = (e as Error).message;
      throw modelInvalid(`model '${model.name}' version ${model.version} failed to load: ${model.error}`);
    }
    return model;
  }

  private refreshLatest(name: string): void {
    let best: LoadedModel | undefined;
    for (const m of this.models.get(name)?.values() ?? []) {
      if (m.state === 'ready' && (best === undefined || m.versionNumber > best.versionNumber)) best = m;
    }
    if (best === undefined) this.latest.delete(name);
    else this.latest.set(name, best);
  }

  /** The version a request is for: the one named, else the highest ready one. Throws 404 / 503. */
  resolve(name: string, version?: string): LoadedModel {
    if (version === undefined) {
      const m = this.latest.get(name);
      if (m !== undefined) return m;
    }
    const versions = this.models.get(name);
    if (versions === undefined) throw modelNotFound(name);
    if (version !== undefined) {
      const m = versions.get(version);
      if (m === undefined || m.state === 'unloaded') throw this.gone(name) ? modelNotFound(name) : versionNotFound(name, version);
      if (m.state !== 'ready') throw notReady(`model '${name}' version ${version} (${m.state})`);
      return m;
    }
    let best: LoadedModel | undefined;
    for (const m of versions.values()) {
      if (m.state === 'ready' && (best === undefined || m.versionNumber > best.versionNumber)) best = m;
    }
    if (best === undefined) throw this.gone(name) ? modelNotFound(name) : notReady(`model '${name}'`);
    return best;
  }

  /** A model whose every version was unloaded is gone (404), not waiting to become ready (503). */
  private gone(name: string): boolean {
    for (const m of this.models.get(name)?.values() ?? []) if (m.state !== 'unloaded') return false;
    return true;
  }

  /** Any version, ready or not (metadata and readiness endpoints); throws 404 when there is none. */
  lookup(name: string, version?: string): LoadedModel {
    const m = this.find(name, version);
    if (m !== undefined) return m;
    if (this.versionsOf(name).length === 0) throw modelNotFound(name);
    throw versionNotFound(name, version ?? '');
  }

  /** Any version, ready or not; the highest when none is named. */
  find(name: string, version?: string): LoadedModel | undefined {
    const versions = this.models.get(name);
    if (versions === undefined) return undefined;
    if (version !== undefined) {
      const m = versions.get(version);
      return m && m.state !== 'unloaded' ? m : undefined;
    }
    let best: LoadedModel | undefined;
    for (const m of versions.values()) {
      if (m.state !== 'unloaded' && (best === undefined || m.versionNumber > best.versionNumber)) best = m;
    }
    return best;
  }

  versionsOf(name: string): LoadedModel[] {
    return [...(this.models.get(name)?.values() ?? [])]
      .filter((m) => m.state !== 'unloaded')
      .sort((a, b) => a.versionNumber - b.versionNumber);
  }

  list(): LoadedModel[] {
    return [...this.models.keys()].flatMap((n) => this.versionsOf(n));
  }

  /** Ready when at least one version is loaded and every version is ready. */
  ready(): boolean {
    const all = this.list();
    return all.length > 0 && all.every((m) => m.state === 'ready');
  }

  async unload(model: LoadedModel): Promise<void> {
    model.state = 'unloaded';
    this.refreshLatest(model.name);
    const lane = model.placement === 'inline' ? this.inline : this.pool!;
    lane.scheduler.unregister(model.batcher);
    await lane.executor.release(model.batcher.spec.key);
  }

  /** Waits until no batch is queued or running, or the timeout passes; true when drained. */
  async drain(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    const idle = Promise.all(this.lanes.map((l) => l.scheduler.idle())).then(() => true as const);
    const drained = await Promise.race([idle, timeout]);
    clearTimeout(timer);
    return drained;
  }

  async close(): Promise<void> {
    for (const l of this.lanes) l.scheduler.close();
    await Promise.all(this.lanes.map((l) => l.executor.close()));
  }
}
