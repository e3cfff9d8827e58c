// Where a batch runs: a piscina pool of onnxruntime workers (default), or inline on the main thread
// (`workers: 0`), which wins for tiny models on small machines because it skips the thread hop.
// Both load every model version on every runner and report model errors apart from lost workers,
// so the batcher can retry a batch whose worker died and fail only a batch the model rejects.

import { Piscina } from 'piscina';
import { SessionHost, type EngineChoice, type RunResult, type SessionSpec, type TensorPayload } from './session.js';
import { isStringTensor } from './tensor.js';
import type { WorkerLoadAnswer, WorkerRunAnswer, WorkerTask } from './worker.js';

/** The model refused the batch (onnxruntime error); retrying the same batch cannot help. */
export class ModelRunError extends Error {}

export interface Executor {
  /** Threads that run batches in parallel. */
  readonly runners: number;
  /** Batches allowed in flight at once (runners x pipelining depth). */
  readonly slots: number;
  /** Loads and warms up on every runner. */
  load(spec: SessionSpec): Promise<LoadInfo>;
  /** Runs a batch. The inputs stay owned by the caller: the pool copies them into buffers it transfers. */
  run(spec: SessionSpec, inputs: readonly TensorPayload[]): Promise<RunResult>;
  release(key: string): Promise<void>;
  close(): Promise<void>;
}

/** What loading found: the engine that runs the batches, and the median run time of the largest batch (us). */
export interface LoadInfo extends EngineChoice {
  readonly batchMicros: number;
}

export interface PoolOptions {
  workers: number;
  /** Tasks queued per worker so a worker never waits for the main thread between batches. */
  tasksPerWorker: number;
}

interface TargetedTask {
  [Piscina.queueOptionsSymbol]?: { worker: number };
}

export class PoolExecutor implements Executor {
  readonly runners: number;
  readonly slots: number;
  private readonly pool: Piscina<WorkerTask, unknown>;

  constructor(opts: PoolOptions) {
    this.runners = opts.workers;
    this.slots = opts.workers * opts.tasksPerWorker;
    const capacity = opts.tasksPerWorker;
    this.pool = new Piscina({
      filename: new URL('./worker.js', import.meta.url).href,
      minThreads: opts.workers,
      maxThreads: opts.workers,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      concurrentTasksPerWorker: capacity,
      // Loads are addressed to one worker each; everything else goes to the least busy one.
      loadBalancer: (task, workers) => {
        const want = (task as unknown as { [k: symbol]: { worker?: number } | null })[Piscina.queueOptionsSymbol]?.worker;
        let best: (typeof workers)[number] | null = null;
        for (const w of workers) {
          if (w.terminating || w.destroyed) continue;
          if (want !== undefined && w.id === want) return w;
          if (w.currentUsage < capacity && (best === null || w.currentUsage < best.currentUsage)) best = w;
        }
        return best;
      },
    });
  }

  async load(spec: SessionSpec): Promise<LoadInfo> {
    const ids = this.pool.threads.map((t) => t.threadId);
    const answers = await Promise.all(
      ids.map((worker) => {
        const task: WorkerTask & TargetedTask = { op: 'load', spec, [Piscina.queueOptionsSymbol]: { worker } };
        return this.pool.run(task) as Promise<WorkerLoadAnswer>;
      }),
    );
    const batchMicros = Math.min(...answers.map((a) => a.batchMicros));
    // Every worker runs the same probe; should one disagree, the model is reported as onnxruntime's
    // with that worker's reason (the others still use the tree engine they verified).
    const refused = answers.find((a) => a.engine !== 'trees');
    return refused === undefined
      ? { batchMicros, engine: 'trees', note: null }
      : { batchMicros, engine: refused.engine, note: refused.note };
  }

  async run(spec: SessionSpec, inputs: readonly TensorPayload[]): Promise<RunResult> {
    const copies: TensorPayload[] = [];
    const transfer: ArrayBuffer[] = [];
    for (const t of inputs) {
      // Strings cannot be transferred: they go by structured clone, which copies them anyway.
      if (isStringTensor(t.data)) {
        copies.push(t);
        continue;
      }
      const data = t.data.slice();
      copies.push({ name: t.name, datatype: t.datatype, dims: t.dims, data });
      transfer.push(data.buffer as ArrayBuffer);
    }
    const answer = (await this.pool.run({ op: 'run', spec, inputs: copies }, { transferList: transfer })) as WorkerRunAnswer;
    if (answer.error !== undefined) throw new ModelRunError(answer.error);
    return answer.result!;
  }

  async release(key: string): Promise<void> {
    const ids = this.pool.threads.map((t) => t.threadId);
    await Promise.all(
      ids.map((worker) => {
        const task: WorkerTask & TargetedTask = { op: 'release', key, [Piscina.queueOptionsSymbol]: { worker } };
        return this.pool.run(task).catch(() => undefined);
      }),
    );
  }

  /** The worker threads. */
  get threads() {
    return this.pool.threads;
  }

  /** Fault injection: the worker with this thread id ends itself when its next batch arrives (the batch is lost with it). */
  async dieOnNextRun(worker: number): Promise<void> {
    const task: WorkerTask & TargetedTask = { op: 'die-on-next-run', [Piscina.queueOptionsSymbol]: { worker } };
    await this.pool.run(task);
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

export class InlineExecutor implements Executor {
  readonly runners = 1;
  readonly slots = 1;
  private readonly host = new SessionHost();

  async load(spec: SessionSpec): Promise<LoadInfo> {
    const { batchMicros, engine, note } = await this.host.load(spec);
    return { batchMicros, engine, note };
  }

  async run(spec: SessionSpec, inputs: readonly TensorPayload[]): Promise<RunResult> {
    try {
      return await this.host.run(spec, inputs);
    } catch (e) {
      throw new ModelRunError(e instanceof Error ? e.message : String(e));
    }
  }

  async release(key: string): Promise<void> {
    await this.host.release(key);
  }

  async close(): Promise<void> {
    await this.host.releaseAll();
  }
}
