// Dynamic batching. A DynamicBatcher per model version packs requests into batches: a request's
// rows are decoded straight into the open batch's buffers (typed arrays, string arrays for BYTES
// inputs; no per-request tensor), a batch is sealed
// when full, and the BatchScheduler, shared by all batchers of one executor, decides when a batch
// leaves: at once when a runner is idle (at the end of the current I/O turn, so everything read in
// that turn rides together), otherwise when the batch is full or its oldest request has waited
// maxQueueDelayMicros, as long as a pipeline slot is free. Queues are bounded in rows (429) and
// every request has a deadline (504), enforced by one sweep timer rather than a timer per request.
// maxBatchSize is how far requests are merged, not a limit on a request: a request of more rows is
// decoded into a batch of its own and split into maxBatchSize chunks that queue like any request,
// so other traffic interleaves with it; its rows are answered in order once every chunk is back.

import {
  deadlineExceeded,
  inferenceFailed,
  isScorelineError,
  queueFull,
  signatureMismatch,
  storeUnavailable,
  tooManyRows,
  type ScorelineError,
} from '../errors.js';
import { ModelRunError, type Executor } from './executor.js';
import type { RunResult, SessionSpec, TensorPayload } from './session.js';
import { copyElements, elementCount, elementsOf, makeTensorData, type Datatype, type TensorData } from './tensor.js';

export interface BatchingOptions {
  /** Rows per batch; 1 for a model without a dynamic batch dimension. */
  readonly maxBatchSize: number;
  readonly maxQueueDelayMicros: number;
  /**
   * Rows waiting (not yet dispatched) beyond which new requests get 429. A request of more rows than
   * this is admitted only while nothing waits.
   */
  readonly maxQueueSize: number;
}

/** One request inside the batcher. The server implements it; the batcher settles it exactly once. */
export interface PendingRequest {
  readonly rows: number;
  readonly enqueuedAt: number;
  readonly deadline: number;
  settled: boolean;
  /** The id its predictions are logged under (monitoring), when it has one. */
  readonly requestId?: string | undefined;
  /** The deployment variant that routed it, for the prediction log. */
  readonly variant?: string | undefined;
  /** The id of the API key that sent it, for the prediction log. */
  readonly keyId?: string | undefined;
  /** Validation and reference scoring: not traffic, not monitored. */
  readonly internal?: boolean | undefined;
  /** A chunk of a larger request: its first row's index in that request, and the request's rows. */
  readonly rowOffset?: number;
  readonly totalRows?: number;
  /** Rows [rowStart, rowStart + rows) of every batch-major output belong to this request; `batch` is the one that ran them (tracing). */
  resolve(result: RunResult, rowStart: number, batch?: Batch): void;
  reject(err: ScorelineError): void;
}

export interface BatchObserver {
  onDispatch(batch: Batch, now: number): void;
  /**
   * Before the batch's requests are answered (its input buffers are still intact). A promise holds
   * the answers until it settles (the prediction log's commit); a rejection fails the batch (503).
   */
  onComplete(batch: Batch, result: RunResult): void | Promise<void>;
}

export interface BatchInput {
  readonly name: string;
  readonly datatype: Datatype;
  /** Dims after the batch dimension (or the whole shape when not batchable); -1 = per request. */
  readonly inner: readonly number[];
}

let dispatches = 0;

export class Batch {
  rows = 0;
  readonly requests: PendingRequest[] = [];
  readonly rowStarts: number[] = [];
  attempts = 0;
  /** When it was handed to a worker (performance.now()), and a process-wide sequence number of that dispatch. */
  dispatchedAt = 0;
  seq = 0;
  constructor(
    /** One per input: a typed array, or an array of strings for a BYTES input. */
    readonly buffers: TensorData[],
    readonly inner: readonly (readonly number[])[],
    readonly innerKey: string,
    readonly capacity: number,
    /** A request larger than maxBatchSize decodes into a batch of its own, which commit() splits. */
    readonly staging = false,
  ) {}
}

/** One request answered from several batches: each chunk's output rows copied into place, in order. */
class SplitRequest {
  private outputs: { name: string; datatype: Datatype; dims: number[]; data: TensorData }[] | null = null;
  private remaining = 0;
  private computeMs = 0;
  private readonly chunks: ChunkRequest[] = [];

  constructor(private readonly whole: PendingRequest) {}

  chunk(start: number, rows: number): ChunkRequest {
    const c = new ChunkRequest(this, this.whole, start, rows);
    this.chunks.push(c);
    this.remaining++;
    return c;
  }

  done(c: ChunkRequest, result: RunResult, rowStart: number): void {
    if (this.whole.settled) return;
    const total = this.whole.rows;
    if (this.outputs === null) {
      this.outputs = result.outputs.map((o) => {
        const dims = [total, ...o.dims.slice(1)];
        return { name: o.name, datatype: o.datatype, dims, data: makeTensorData(o.datatype, elementCount(dims)) };
      });
    }
    for (let k = 0; k < result.outputs.length; k++) {
      const o = result.outputs[k]!;
      const per = elementCount(o.dims.slice(1));
      copyElements(this.outputs[k]!.data, c.start * per, o.data, rowStart * per, (rowStart + c.rows) * per);
    }
    this.computeMs += result.computeMs;
    if (--this.remaining === 0) {
      this.whole.settled = true;
      this.whole.resolve({ outputs: this.outputs, computeMs: this.computeMs }, 0);
    }
  }

  fail(err: ScorelineError): void {
    if (this.whole.settled) return;
    this.whole.settled = true;
    // The other chunks are skipped wherever they wait.
    for (const c of this.chunks) c.settled = true;
    this.whole.reject(err);
  }
}

class ChunkRequest implements PendingRequest {
  settled = false;
  readonly enqueuedAt: number;
  readonly deadline: number;
  readonly requestId: string | undefined;
  readonly variant: string | undefined;
  readonly keyId: string | undefined;
  readonly internal: boolean | undefined;
  readonly totalRows: number;

  constructor(
    private readonly split: SplitRequest,
    whole: PendingRequest,
    readonly start: number,
    readonly rows: number,
  ) {
    this.enqueuedAt = whole.enqueuedAt;
    this.deadline = whole.deadline;
    this.requestId = whole.requestId;
    this.variant = whole.variant;
    this.keyId = whole.keyId;
    this.internal = whole.internal;
    this.totalRows = whole.rows;
  }

  get rowOffset(): number {
    return this.start;
  }

  resolve(result: RunResult, rowStart: number): void {
    this.split.done(this, result, rowStart);
  }

  reject(err: ScorelineError): void {
    this.split.fail(err);
  }
}

export class DynamicBatcher {
  /** Sealed batches waiting for a slot, oldest first. */
  private readonly sealed: Batch[] = [];
  private open: Batch | null = null;
  private readonly inflight = new Set<Batch>();
  private readonly spare: TensorData[][] = [];
  private readonly staticInner: boolean;
  private readonly rowElems: number[];
  /** Requests (or chunks of split requests) accepted and not yet dispatched. */
  queued = 0;
  /** Their rows: what the queue bound counts. */
  queuedRows = 0;
  /** Batches run a second time because the worker running them was lost. */
  retried = 0;
  /** whenIdle() callers, woken where requests are answered (a batch finishing, the deadline sweep). */
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    readonly spec: SessionSpec,
    readonly inputs: readonly BatchInput[],
    readonly batchable: boolean,
    readonly options: BatchingOptions,
    private readonly scheduler: BatchScheduler,
    private readonly observer: BatchObserver,
    private readonly label: { model: string; version: string },
    /** Rows one request may hold (the server's limits.maxRowsPerRequest). */
    private readonly maxRowsPerRequest = Number.MAX_SAFE_INTEGER,
  ) {
    this.staticInner = inputs.every((i) => i.inner.every((d) => d >= 0));
    this.rowElems = inputs.map((i) => (this.staticInner ? elementCount(i.inner) : 0));
  }

  /** True when some input has dynamic inner dimensions, so reserve() needs each request's shapes. */
  get dynamicInner(): boolean {
    return !this.staticInner;
  }

  get maxBatchSize(): number {
    return this.batchable ? this.options.maxBatchSize : 1;
  }

  /**
   * Returns the batch a request of `rows` rows (with per-input inner shapes, needed only when the
   * model has dynamic inner dims) must be decoded into, at `batch.rows`. Nothing is committed until
   * commit(); a failed decode simply never commits.
   */
  reserve(rows: number, inner?: readonly (readonly number[])[]): Batch {
    if (!this.batchable && rows > 1)
      throw signatureMismatch(`model '${this.label.model}' has no dynamic batch dimension; send one tensor per request`);
    if (rows > this.maxRowsPerRequest) throw tooManyRows(rows, this.maxRowsPerRequest);
    const waiting = this.queuedRows;
    if (waiting > 0 && waiting + rows > this.options.maxQueueSize)
      throw queueFull(this.label.model, this.label.version, this.options.maxQueueSize);
    const innerShapes = inner ?? this.inputs.map((i) => i.inner);
    const key = this.staticInner ? '' : innerShapes.map((s) => s.join('x')).join('|');
    if (rows > this.maxBatchSize) return this.newBatch(innerShapes, key, rows, true);
    return this.slot(rows, innerShapes, key);
  }

  /** The open batch, with room for `rows` rows of these inner shapes (sealing the current one if not). */
  private slot(rows: number, innerShapes: readonly (readonly number[])[], key: string): Batch {
    let open = this.open;
    if (open !== null && (open.rows + rows > open.capacity || open.innerKey !== key)) {
      this.seal();
      open = null;
    }
    if (open === null) open = this.open = this.newBatch(innerShapes, key, this.batchable ? this.maxBatchSize : rows);
    return open;
  }

  /** Elements per row of input i in `batch`. */
  rowElements(batch: Batch, i: number): number {
    return this.staticInner ? this.rowElems[i]! : elementCount(batch.inner[i]!);
  }

  commit(batch: Batch, req: PendingRequest): void {
    if (batch.staging) {
      this.split(batch, req);
      return;
    }
    batch.requests.push(req);
    batch.rowStarts.push(batch.rows);
    batch.rows += req.rows;
    this.queued++;
    this.queuedRows += req.rows;
    if (batch.rows >= batch.capacity && batch === this.open) this.seal();
    this.scheduler.notify(this);
  }

  /** Queues a request decoded into its own batch as maxBatchSize chunks, copied into the open batches. */
  private split(staging: Batch, req: PendingRequest): void {
    const whole = new SplitRequest(req);
    const max = this.maxBatchSize;
    for (let start = 0; start < req.rows; start += max) {
      const n = Math.min(max, req.rows - start);
      const b = this.slot(n, staging.inner, staging.innerKey);
      for (let i = 0; i < this.inputs.length; i++) {
        const per = this.rowElements(staging, i);
        copyElements(b.buffers[i]!, b.rows * per, staging.buffers[i]!, start * per, (start + n) * per);
      }
      this.commit(b, whole.chunk(start, n));
    }
  }

  hasWork(): boolean {
    return this.sealed.length > 0 || (this.open !== null && this.open.rows > 0);
  }

  hasFullBatch(): boolean {
    return this.sealed.length > 0;
  }

  /** Enqueue time of the oldest waiting request, or Infinity. */
  oldest(): number {
    const b = this.sealed.length > 0 ? this.sealed[0] : this.open;
    return b && b.requests.length > 0 ? b.requests[0]!.enqueuedAt : Infinity;
  }

  /** Next batch to dispatch (sealed first, else the open one), or null. */
  take(): Batch | null {
    if (this.sealed.length === 0 && this.open !== null && this.open.rows > 0) this.seal();
    return this.sealed.shift() ?? null;
  }

  private seal(): void {
    if (this.open !== null && this.open.rows > 0) this.sealed.push(this.open);
    this.open = null;
  }

  private newBatch(inner: readonly (readonly number[])[], key: string, capacity: number, staging = false): Batch {
    const buffers =
      key === '' && !staging && this.spare.length > 0
        ? this.spare.pop()!
        : this.inputs.map((input, i) => makeTensorData(input.datatype, capacity * elementCount(inner[i]!)));
    return new Batch(buffers, inner, key, capacity, staging);
  }

  /** Called by the scheduler: run `batch`, settle its requests, recycle its buffers. */
  async run(batch: Batch, executor: Executor): Promise<void> {
    try {
      await this.runBatch(batch, executor);
    } finally {
      this.wakeIfIdle();
    }
  }

  private async runBatch(batch: Batch, executor: Executor): Promise<void> {
    const live = batch.requests.filter((r) => !r.settled);
    if (batch.attempts === 0) {
      this.queued -= batch.requests.length;
      this.queuedRows -= batch.rows;
    }
    if (live.length === 0) return this.recycle(batch);
    batch.attempts++;
    this.inflight.add(batch);
    batch.dispatchedAt = performance.now();
    batch.seq = ++dispatches;
    this.observer.onDispatch(batch, batch.dispatchedAt);
    let result: RunResult;
    try {
      result = await executor.run(this.spec, this.payload(batch, 0, batch.rows));
    } catch (e) {
      // Isolation still answers this batch's requests, so it stays in flight (pending, swept) until done.
      if (e instanceof ModelRunError) return this.isolate(batch, executor, e);
      this.inflight.delete(batch);
      // The worker died under this batch: the inputs are still here, so run it again once.
      if (batch.attempts < 2) {
        this.retried++;
        return this.runBatch(batch, executor);
      }
      this.failAll(batch, inferenceFailed(`the inference worker was lost twice: ${(e as Error).message}`));
      return this.recycle(batch);
    }
    const committed = this.observer.onComplete(batch, result);
    if (committed !== undefined) {
      try {
        await committed;
      } catch (e) {
        this.inflight.delete(batch);
        this.failAll(
          batch,
          isScorelineError(e) ? e : storeUnavailable(`the prediction log could not commit this batch: ${(e as Error).message}`),
        );
        return this.recycle(batch);
      }
    }
    this.inflight.delete(batch);
    const mismatch = this.batchable ? result.outputs.find((o) => o.dims[0] !== batch.rows) : undefined;
    if (mismatch !== undefined) {
      this.failAll(batch, inferenceFailed(`output '${mismatch.name}' does not have the batch as its first dimension`));
    } else {
      const reqs = batch.requests;
      for (let i = 0; i < reqs.length; i++) {
        const r = reqs[i]!;
        if (r.settled) continue;
        r.settled = true;
        r.resolve(result, batch.rowStarts[i]!, batch);
      }
    }
    this.recycle(batch);
  }

  /** A model error on a multi-request batch: run each request alone so one bad row fails only its own request. */
  private async isolate(batch: Batch, executor: Executor, err: ModelRunError): Promise<void> {
    const reqs = batch.requests;
    if (reqs.length === 1 || !this.batchable) {
      this.inflight.delete(batch);
      this.failAll(batch, inferenceFailed(err.message));
      return this.recycle(batch);
    }
    for (let i = 0; i < reqs.length; i++) {
      const r = reqs[i]!;
      if (r.settled) continue;
      const start = batch.rowStarts[i]!;
      try {
        const result = await executor.run(this.spec, this.payload(batch, start, r.rows));
        if (!r.settled) {
          r.settled = true;
          r.resolve(result, 0);
        }
      } catch (e) {
        if (!r.settled) {
          r.settled = true;
          r.reject(inferenceFailed((e as Error).message));
        }
      }
    }
    this.inflight.delete(batch);
    this.recycle(batch);
  }

  private payload(batch: Batch, rowStart: number, rows: number): TensorPayload[] {
    const out: TensorPayload[] = [];
    for (let i = 0; i < this.inputs.length; i++) {
      const input = this.inputs[i]!;
      const per = this.rowElements(batch, i);
      const inner = batch.inner[i]!;
      out.push({
        name: input.name,
        datatype: input.datatype,
        dims: this.batchable ? [rows, ...inner] : inner,
        data: elementsOf(batch.buffers[i]!, rowStart * per, (rowStart + rows) * per),
      });
    }
    return out;
  }

  private failAll(batch: Batch, err: ScorelineError): void {
    for (const r of batch.requests) {
      if (r.settled) continue;
      r.settled = true;
      r.reject(err);
    }
  }

  private recycle(batch: Batch): void {
    if (batch.innerKey === '' && batch.capacity === this.maxBatchSize && this.spare.length < 4) this.spare.push(batch.buffers);
  }

  /** Rejects every waiting or running request whose deadline has passed. */
  sweep(now: number): void {
    let expired = 0;
    const expire = (b: Batch) => {
      for (const r of b.requests) {
        if (!r.settled && r.deadline <= now) {
          r.settled = true;
          expired++;
          r.reject(deadlineExceeded(Math.round(r.deadline - r.enqueuedAt)));
        }
      }
    };
    for (const b of this.sealed) expire(b);
    if (this.open !== null) expire(this.open);
    for (const b of this.inflight) expire(b);
    if (expired > 0) this.wakeIfIdle();
  }

  /** True when no request waits for an answer and no batch is running. */
  get idle(): boolean {
    return this.inflight.size === 0 && this.pending === 0;
  }

  /**
   * Resolves true once nothing is queued or running (at once when that is already so), false when
   * `timeoutMs` passes first. Woken where requests are answered, so an unload waiting on it follows
   * the last answer within the same turn.
   */
  whenIdle(timeoutMs: number): Promise<boolean> {
    if (this.idle) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        const i = this.idleWaiters.indexOf(wake);
        if (i >= 0) this.idleWaiters.splice(i, 1);
        resolve(false);
      }, timeoutMs);
      this.idleWaiters.push(wake);
    });
  }

  private wakeIfIdle(): void {
    if (this.idleWaiters.length === 0 || !this.idle) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Runs `rows` rows through this batcher as one request like any other (queued, batched with
   * traffic, under a deadline of `timeoutMs`): the deployer's check of a version on sample inputs.
   * `inputs` holds each input's rows, row-major, at the declared inner shape. Throws at once when
   * the request is not admitted (rows over the limits, the queue full); the promise rejects with
   * the error the request fails with (the model's, a deadline), and resolves with this request's own
   * rows of every output (the whole outputs for a model without a batch dimension).
   */
  selfTest(rows: number, inputs: readonly TensorData[], timeoutMs = 30_000): Promise<RunResult> {
    if (inputs.length !== this.inputs.length)
      throw signatureMismatch(`model '${this.label.model}' has ${this.inputs.length} inputs; ${inputs.length} were given`);
    const batch = this.reserve(rows);
    for (let i = 0; i < this.inputs.length; i++) {
      const per = this.rowElements(batch, i);
      const data = inputs[i]!;
      if (data.length !== rows * per)
        throw signatureMismatch(`input '${this.inputs[i]!.name}' needs ${rows * per} elements for ${rows} rows; ${data.length} were given`);
      copyElements(batch.buffers[i]!, batch.rows * per, data, 0, rows * per);
    }
    return new Promise((resolve, reject) => {
      const now = performance.now();
      this.commit(batch, {
        rows,
        enqueuedAt: now,
        deadline: now + timeoutMs,
        settled: false,
        // Sample rows of a deployment check: not traffic, so never in monitoring or the canary's statistics.
        internal: true,
        resolve: (result, rowStart) => resolve(this.rowsOf(result, rowStart, rows)),
        reject,
      });
    });
  }

  /** Rows [rowStart, rowStart + rows) of every output of a batch's result, copied out. */
  private rowsOf(result: RunResult, rowStart: number, rows: number): RunResult {
    if (!this.batchable) return result;
    const outputs = result.outputs.map((o) => {
      const dims = [rows, ...o.dims.slice(1)];
      const per = elementCount(dims.slice(1));
      const data = makeTensorData(o.datatype, rows * per);
      copyElements(data, 0, o.data, rowStart * per, (rowStart + rows) * per);
      return { name: o.name, datatype: o.datatype, dims, data };
    });
    return { outputs, computeMs: result.computeMs };
  }

  /** Requests accepted and not yet answered. */
  get pending(): number {
    let n = 0;
    const count = (b: Batch) => {
      for (const r of b.requests) if (!r.settled) n++;
    };
    for (const b of this.sealed) count(b);
    if (this.open !== null) count(this.open);
    for (const b of this.inflight) count(b);
    return n;
  }
}

/** Shares one executor's slots among all batchers, oldest waiting request first. */
export class BatchScheduler {
  private readonly active = new Set<DynamicBatcher>();
  private inflight = 0;
  private pumpQueued = false;
  private delayTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly batchers = new Set<DynamicBatcher>();
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    private readonly executor: Executor,
    private readonly sweepEveryMs = 5,
  ) {}

  register(b: DynamicBatcher): void {
    this.batchers.add(b);
  }

  unregister(b: DynamicBatcher): void {
    this.batchers.delete(b);
    this.active.delete(b);
  }

  notify(b: DynamicBatcher): void {
    this.active.add(b);
    if (this.sweepTimer === null) this.startSweeping();
    if (this.pumpQueued) return;
    if (this.inflight < this.executor.runners || (b.hasFullBatch() && this.inflight < this.executor.slots)) {
      this.pumpQueued = true;
      setImmediate(this.pump);
    } else if (this.inflight < this.executor.slots) {
      this.armDelay();
    }
  }

  private readonly pump = (): void => {
    this.pumpQueued = false;
    const now = performance.now();
    while (this.inflight < this.executor.slots) {
      let pick: DynamicBatcher | null = null;
      let oldest = Infinity;
      for (const b of this.active) {
        if (!b.hasWork()) {
          this.active.delete(b);
          continue;
        }
        const t = b.oldest();
        if (t < oldest) {
          oldest = t;
          pick = b;
        }
      }
      if (pick === null) return;
      const idle = this.inflight < this.executor.runners;
      if (!idle && !pick.hasFullBatch() && (now - oldest) * 1000 < pick.options.maxQueueDelayMicros) {
        this.armDelay();
        return;
      }
      const batch = pick.take();
      if (batch === null) continue;
      this.inflight++;
      void pick.run(batch, this.executor).finally(this.onBatchDone);
    }
  };

  private readonly onBatchDone = (): void => {
    this.inflight--;
    this.pump();
    if (this.inflight === 0 && this.active.size === 0) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  };

  private armDelay(): void {
    if (this.delayTimer !== null) return;
    // Node timers have millisecond resolution; completions also pump, so under load the delay is
    // usually honoured well before the timer fires.
    this.delayTimer = setTimeout(() => {
      this.delayTimer = null;
      this.pump();
    }, 1);
  }

  private startSweeping(): void {
    this.sweepTimer = setInterval(() => {
      const now = performance.now();
      let pending = 0;
      for (const b of this.batchers) {
        b.sweep(now);
        pending += b.pending;
      }
      if (pending === 0 && this.sweepTimer !== null) {
        clearInterval(this.sweepTimer);
        this.sweepTimer = null;
      }
    }, this.sweepEveryMs);
    this.sweepTimer.unref();
  }

  /** Resolves when no batch is waiting or running (used by graceful shutdown). */
  idle(): Promise<void> {
    if (this.inflight === 0 && ![...this.active].some((b) => b.hasWork())) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  get inFlight(): number {
    return this.inflight;
  }

  close(): void {
    if (this.delayTimer !== null) clearTimeout(this.delayTimer);
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.delayTimer = this.sweepTimer = null;
  }
}
