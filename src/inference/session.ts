// The onnxruntime sessions of one thread: load (verifying the artifact's sha256, and that the model
// keeps no tensor data in other files), warm up at every batch size the batcher can form, run a
// batch, release. Used by each piscina worker and, when inference runs inline, by the main thread.
// Knows nothing of HTTP or batching policy.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
// Past the face on purpose: every piscina worker loads this file, and the face would also load the
// protobuf decoder (onnx-proto) that a worker never needs.
import { refuseExternalData } from '../onnx/external-data.js';
import { createNativeSession, Tensor, type NativeSession, type OrtTensor } from './ort.js';
import { datatypeFromOrt, makeTensorData, ortType, type Datatype, type TensorData } from './tensor.js';
import { firstDifference, probeRows, TreeRunner, type TreePlan } from './tree-runner.js';

/** What a thread needs to create (or re-create, after a worker restart) a session. */
export interface SessionSpec {
  /** Unique per model version and artifact: `${name}:${version}:${sha256}`. */
  readonly key: string;
  readonly path: string;
  readonly sha256: string;
  readonly intraOpThreads: number;
  readonly warmup: WarmupPlan;
  /** The tree engine's plan (tree-plan.ts), used once it answers the probe rows as onnxruntime does. */
  readonly trees?: TreePlan;
}

/** Rows the tree engine must answer exactly as onnxruntime before it serves a model. */
const PROBE_ROWS = 1024;
/** Of which this many are also run one row at a time (onnxruntime's one-row path differs). */
const PROBE_SINGLE_ROWS = 64;
/**
 * Rows the tree engine evaluates (probe included) before its batch time is measured: V8 optimises
 * the generated code on a background thread, which a busy machine delays.
 */
const WARM_ROWS = 20_000;
/** Longest the tree engine's batch is timed at load (it stops as soon as the timing settles). */
const TIMING_MAX_MS = 5000;

export interface WarmupPlan {
  /** Per input: datatype and full shape where the batch dimension is -1 (filled per size). */
  readonly inputs: readonly { name: string; datatype: Datatype; shape: readonly number[] }[];
  /** Batch sizes to run once each; [1] for a model without a dynamic batch dimension. */
  readonly sizes: readonly number[];
}

export interface TensorPayload {
  readonly name: string;
  readonly datatype: Datatype;
  readonly dims: readonly number[];
  /** A typed array, or strings for BYTES. */
  readonly data: TensorData;
}

export interface RunResult {
  readonly outputs: TensorPayload[];
  /** Wall time of session.run on the executing thread, in milliseconds. */
  readonly computeMs: number;
}

/** Which engine runs a loaded model's batches, and why onnxruntime when a tree plan was offered. */
export interface EngineChoice {
  readonly engine: 'trees' | 'onnxruntime';
  /** Why the tree engine is not used (its answers differed), or null. */
  readonly note: string | null;
}

interface Loaded extends EngineChoice {
  readonly session: NativeSession;
  readonly fetches: Record<string, null>;
  readonly outputNames: readonly string[];
  /** The tree engine, when it serves this model. */
  readonly runner: TreeRunner | null;
  /** Median run time at the largest warm-up batch, in microseconds. */
  readonly batchMicros: number;
}

export class SessionHost {
  private readonly sessions = new Map<string, Promise<Loaded>>();

  has(key: string): boolean {
    return this.sessions.has(key);
  }

  /** Loads and warms up the session once; concurrent callers share the same promise. */
  load(spec: SessionSpec): Promise<Loaded> {
    let p = this.sessions.get(spec.key);
    if (p === undefined) {
      p = createSession(spec);
      this.sessions.set(spec.key, p);
      p.then(
        (l) => this.ready.set(spec.key, l),
        () => this.sessions.delete(spec.key),
      );
    }
    return p;
  }

  /** Sessions already loaded, so a run needs no await before its synchronous native call. */
  private readonly ready = new Map<string, Loaded>();

  async run(spec: SessionSpec, inputs: readonly TensorPayload[]): Promise<RunResult> {
    const loaded = this.ready.get(spec.key) ?? (await this.load(spec));
    if (loaded.runner !== null) return runTrees(loaded.outputNames, loaded.runner, inputs);
    const feeds: Record<string, OrtTensor> = {};
    for (const t of inputs) feeds[t.name] = new Tensor(ortType(t.datatype), t.data as never, t.dims as number[]);
    const t0 = performance.now();
    const out = loaded.session.run(feeds, loaded.fetches, {});
    const computeMs = performance.now() - t0;
    const outputs: TensorPayload[] = [];
    for (const name of loaded.outputNames) {
      const t = out[name]!;
      const datatype = datatypeFromOrt(t.type);
      if (datatype === undefined || datatype === 'FP16') {
        throw new Error(`output '${name}' has type ${t.type}, which this server cannot return`);
      }
      outputs.push({ name, datatype, dims: t.dims, data: t.data as TensorData });
    }
    return { outputs, computeMs };
  }

  async release(key: string): Promise<boolean> {
    const p = this.sessions.get(key);
    if (p === undefined) return false;
    this.sessions.delete(key);
    this.ready.delete(key);
    try {
      (await p).session.dispose();
    } catch {
      // a session that failed to load has nothing to release
    }
    return true;
  }

  async releaseAll(): Promise<void> {
    await Promise.all([...this.sessions.keys()].map((k) => this.release(k)));
  }
}

type SessionOptions = Parameters<typeof createNativeSession>[1];

/** The onnxruntime options a session of this spec is created with. */
export function sessionOptions(spec: SessionSpec): SessionOptions {
  return {
    intraOpNumThreads: spec.intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // A failing run is reported by its exception (answered 500, counted, logged by scoreline); ORT's
    // own per-failure stderr line would flood the terminal under load.
    logSeverityLevel: 4,
    extra: {
      session: {
        // Spinning threads would steal the cores the HTTP thread and other workers need.
        intra_op: { allow_spinning: '0' },
        inter_op: { allow_spinning: '0' },
        // Where onnxruntime looks for external data: the artifact file itself, a folder nothing can be
        // in, and it refuses paths that leave it. A model that got past createSession's external-data
        // check would still read nothing beyond its own bytes.
        model_external_initializers_file_folder_path: resolve(spec.path),
      },
    },
  };
}

async function createSession(spec: SessionSpec): Promise<Loaded> {
  const bytes = await readFile(spec.path);
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (digest !== spec.sha256) {
    throw new Error(`artifact ${spec.path} does not match its sha256 (expected ${spec.sha256}, got ${digest})`);
  }
  // The registry refuses external data at registration and at load; checked again where the bytes
  // meet onnxruntime, which would otherwise read it from the working directory (a model loaded from
  // bytes has no folder of its own), whatever path handed these bytes here.
  refuseExternalData(bytes, `artifact ${spec.path}`);
  const session = createNativeSession(bytes, sessionOptions(spec));
  const outputNames = session.outputMetadata.map((m) => m.name);
  const fetches: Record<string, null> = {};
  for (const n of outputNames) fetches[n] = null;
  const feedsFor = (size: number) => {
    const feeds: Record<string, OrtTensor> = {};
    for (const input of spec.warmup.inputs) {
      const dims = input.shape.map((d, i) => (d >= 0 ? d : i === 0 ? size : 1));
      const n = dims.reduce((a, b) => a * b, 1);
      feeds[input.name] = new Tensor(ortType(input.datatype), makeTensorData(input.datatype, n) as never, dims);
    }
    return feeds;
  };
  for (const size of spec.warmup.sizes) session.run(feedsFor(size), fetches, {});
  let runner: TreeRunner | null = null;
  let note: string | null = null;
  if (spec.trees !== undefined) {
    let candidate: TreeRunner | null = null;
    try {
      candidate = new TreeRunner(spec.trees);
    } catch (e) {
      // The logistic needs the native addon; without it onnxruntime serves, as it always can.
      note = `the tree engine cannot start: ${(e as Error).message}`;
    }
    if (candidate !== null) note = probeTrees(candidate, spec, session, fetches, outputNames);
    if (candidate !== null && note === null) runner = candidate;
  }
  // Time the largest batch a few times: decides whether the model is small enough to run inline.
  const largest = feedsFor(spec.warmup.sizes[spec.warmup.sizes.length - 1] ?? 1);
  let batchMicros: number;
  if (runner === null) {
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      session.run(largest, fetches, {});
      times.push((performance.now() - t0) * 1000);
    }
    batchMicros = times.sort((a, b) => a - b)[2]!;
  } else {
    // Generated code runs several times slower until V8 has optimised it, and a plateau of slow runs
    // looks stable: first evaluate WARM_ROWS rows (the probe's included), then run until the fastest run
    // has not improved by 5% over the last 100 runs, and take that. Once V8 has optimised it, a row
    // costs about a microsecond, so the rows past that point are cheap. On a quiet machine that takes
    // well under half a second; on a busy one V8's optimising compiler, a background thread, is slowed
    // as much as the runs, and judging the model by code V8 has not optimised yet would place it in
    // the worker pool for good: so the timing goes on until it settles, for at most TIMING_MAX_MS.
    const input = payloads(largest);
    const rows = input[0]!.dims[0]!;
    batchMicros = Number.POSITIVE_INFINITY;
    let since = 0;
    let evaluated = PROBE_ROWS * 2 + PROBE_SINGLE_ROWS;
    const until = performance.now() + TIMING_MAX_MS;
    while ((evaluated < WARM_ROWS || since < 100) && performance.now() < until) {
      const t0 = performance.now();
      runTrees(outputNames, runner, input);
      const us = (performance.now() - t0) * 1000;
      evaluated += rows;
      since = us < batchMicros * 0.95 ? 0 : since + 1;
      batchMicros = Math.min(batchMicros, us);
    }
  }
  return { session, fetches, outputNames, runner, engine: runner === null ? 'onnxruntime' : 'trees', note, batchMicros };
}

/** Warm-up feeds as payloads; only for a tree plan's one FP32 input. */
function payloads(feeds: Record<string, OrtTensor>): TensorPayload[] {
  return Object.entries(feeds).map(([name, t]) => ({ name, datatype: 'FP32', dims: t.dims, data: t.data as Float32Array }));
}

/** A batch through the tree engine; outputs in the session's order. */
function runTrees(outputNames: readonly string[], runner: TreeRunner, inputs: readonly TensorPayload[]): RunResult {
  const input = inputs.find((t) => t.name === runner.plan.input);
  if (input === undefined || !(input.data instanceof Float32Array) || input.dims.length !== 2 || input.dims[1] !== runner.plan.features) {
    throw new Error(`input '${runner.plan.input}' must be FP32 [rows, ${runner.plan.features}]`);
  }
  const t0 = performance.now();
  const out = runner.run(input.data, input.dims[0]!);
  const computeMs = performance.now() - t0;
  return { outputs: outputNames.map((n) => out.find((t) => t.name === n)!), computeMs };
}

/**
 * Runs the probe rows through both engines, one at a time and in batches; null when every output
 * matched bit for bit, else the first difference.
 */
function probeTrees(
  runner: TreeRunner,
  spec: SessionSpec,
  session: NativeSession,
  fetches: Record<string, null>,
  outputNames: readonly string[],
): string | null {
  const plan = runner.plan;
  if (spec.intraOpThreads !== 1) return `intraOpThreads ${spec.intraOpThreads}: onnxruntime sums trees in another order`;
  if (outputNames.length !== plan.outputs.length || plan.outputs.some((n) => !outputNames.includes(n))) {
    return 'the session and the plan name different outputs';
  }
  const x = probeRows(plan, PROBE_ROWS);
  const width = plan.features;
  const check = (from: number, rows: number): string | null => {
    const data = x.subarray(from * width, (from + rows) * width);
    const ort = session.run({ [plan.input]: new Tensor('float32', data, [rows, width]) }, fetches, {});
    const theirs: TensorPayload[] = outputNames.map((name) => {
      const t = ort[name]!;
      return { name, datatype: datatypeFromOrt(t.type) ?? 'BYTES', dims: t.dims, data: t.data as TensorData };
    });
    const d = firstDifference(runner.run(data, rows), theirs);
    return d === null ? null : `rows ${from}..${from + rows - 1} of the probe: ${d}`;
  };
  for (let r = 0; r < PROBE_SINGLE_ROWS; r++) {
    const d = check(r, 1);
    if (d !== null) return d;
  }
  // onnxruntime sums a row's trees in the same order whatever the batch size (one intra-op thread),
  // through different code for one row, a few rows and many: probed one at a time above, then the
  // rows in batches of 7 and of the largest warm-up size (capped at the probe's rows).
  const largest = Math.min(spec.warmup.sizes[spec.warmup.sizes.length - 1] ?? 1, PROBE_ROWS);
  for (const size of new Set([7, largest])) {
    for (let from = 0; from + size <= PROBE_ROWS; from += size) {
      const d = check(from, size);
      if (d !== null) return d;
    }
  }
  return null;
}
