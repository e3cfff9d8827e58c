// A retraining job's own process: everything heavy a job does happens here, never on the HTTP
// thread -- reading and joining the training data, the out-of-time split, the built-in trainer,
// and scoring champion and challenger on the validation rows with onnxruntime. It runs as a child
// process at the lowest CPU priority (nice 19), so on a machine whose cores are busy serving, the
// scheduler gives scoring the CPU first. It lives for one job and holds its data between the steps;
// the orchestrator (./retrainer.ts) sends one request at a time over IPC and gets one answer back.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import '../inference/ort-env.js';
import ort from 'onnxruntime-node';
import { loadFeatureDefinitionsFile } from '../features/definitions.js';
import type { FeatureRegistry } from '../features/plan.js';
import { readOnnxMetadata } from '../onnx/index.js';
import { classificationMetrics, delong } from '../monitoring/metrics.js';
import { expandGlob, ootSplit, readDataFile, rowsToCsv, toRows, type FileReport, type Rows, type Split } from './data.js';
import { logisticToOnnx, trainLogistic } from './logistic.js';

export interface PrepareRequest {
  op: 'prepare';
  patterns: string[];
  features: string[];
  label: string;
  timeColumn: string | null;
  definitionsPath: string | null;
  bindings: Record<string, string>;
  /** Logged predictions joined with labels: inputs row-major, in model order. */
  feedback: { X: Float64Array; y: Float64Array; t: Float64Array; n: number } | null;
  oot: { fraction: number } | { windowMs: number };
  jobDir: string;
}

export interface SetStats {
  rows: number;
  positives: number;
  from: string | null;
  to: string | null;
}

export interface PrepareResult {
  files: FileReport[];
  unmatched: string[];
  feedbackRows: number;
  train: SetStats;
  validation: SetStats;
  cut: string | null;
  trainFile: string;
  validationFile: string;
}

export interface TrainRequest {
  op: 'train';
  l2: number;
  maxIterations: number;
  features: string[];
  modelName: string;
  docString: string;
}

export interface TrainResult {
  onnx: Uint8Array;
  iterations: number;
  converged: boolean;
  trainAuc: number | null;
}

export interface ScoreSpec {
  output: string | null;
  index: number | null;
}

export interface ValidateRequest {
  op: 'validate';
  champion: { bytes: Uint8Array; score: ScoreSpec } | null;
  challenger: { bytes: Uint8Array; score: ScoreSpec };
  threshold: number;
}

export interface ModelEval {
  auc: number | null;
  ks: number | null;
  gini: number | null;
  accuracy: number | null;
  log_loss: number | null;
  brier: number | null;
  /** Outputs that were not finite, if any (the first few). */
  nonFinite: number;
}

export interface ValidateResult {
  rows: number;
  champion: ModelEval | null;
  challenger: ModelEval;
  /** DeLong's test of challenger vs champion AUC on the same rows. */
  delong: { z: number; p: number; aucDifference: number } | null;
}

export type WorkerRequest = PrepareRequest | TrainRequest | ValidateRequest;

let split: Split | null = null;

const stats = (r: Rows): SetStats => {
  let pos = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < r.n; i++) {
    pos += r.y[i]!;
    if (r.t[i]! < lo) lo = r.t[i]!;
    if (r.t[i]! > hi) hi = r.t[i]!;
  }
  return { rows: r.n, positives: pos, from: r.n ? new Date(lo).toISOString() : null, to: r.n ? new Date(hi).toISOString() : null };
};

async function prepare(m: PrepareRequest): Promise<PrepareResult> {
  const defs: FeatureRegistry | null = m.definitionsPath ? await loadFeatureDefinitionsFile(m.definitionsPath) : null;
  const list: { x: number[]; y: number; t: number }[] = [];
  const files: FileReport[] = [];
  const unmatched: string[] = [];
  for (const pattern of m.patterns) {
    const found = expandGlob(pattern);
    if (found.length === 0) unmatched.push(pattern);
    for (const path of found) {
      const { rows, report } = readDataFile(path, {
        features: m.features,
        label: m.label,
        timeColumn: m.timeColumn!,
        defs,
        bindings: m.bindings,
      });
      for (const r of rows) list.push(r);
      files.push(report);
    }
  }
  const p = m.features.length;
  let feedbackRows = 0;
  if (m.feedback !== null) {
    const f = m.feedback;
    for (let i = 0; i < f.n; i++) {
      const x = Array.from(f.X.subarray(i * p, (i + 1) * p));
      if (x.length !== p || !x.every(Number.isFinite) || (f.y[i] !== 0 && f.y[i] !== 1)) continue;
      list.push({ x, y: f.y[i]!, t: f.t[i]! });
      feedbackRows++;
    }
  }
  const rows = toRows(list, p);
  split = ootSplit(rows, m.oot);
  mkdirSync(m.jobDir, { recursive: true });
  const trainFile = join(m.jobDir, 'train.csv');
  const validationFile = join(m.jobDir, 'validation.csv');
  const timeColumn = m.timeColumn ?? 'time';
  writeFileSync(trainFile, rowsToCsv(split.train, m.features, m.label, timeColumn));
  writeFileSync(validationFile, rowsToCsv(split.validation, m.features, m.label, timeColumn));
  return {
    files,
    unmatched,
    feedbackRows,
    train: stats(split.train),
    validation: stats(split.validation),
    cut: Number.isFinite(split.cut) ? new Date(split.cut).toISOString() : null,
    trainFile,
    validationFile,
  };
}

function train(m: TrainRequest): TrainResult {
  if (split === null) throw new Error('prepare first');
  const { train } = split;
  const model = trainLogistic(train.X, train.y, { l2: m.l2, maxIter: m.maxIterations });
  const onnx = logisticToOnnx(model, { featureNames: m.features, name: m.modelName, docString: m.docString });
  return { onnx, iterations: model.iterations, converged: model.converged, trainAuc: null };
}

/** Scores every validation row with a model; the score column chosen as the server chooses it. */
async function score(bytes: Uint8Array, spec: ScoreSpec, rows: Rows): Promise<Float64Array> {
  const meta = readOnnxMetadata(bytes);
  if (meta.inputs.length !== 1) throw new Error(`the model has ${meta.inputs.length} inputs; retraining supports one 2-D input`);
  const input = meta.inputs[0]!;
  const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 4 });
  try {
    const outName =
      spec.output ??
      meta.outputs.find((o) => o.name === 'probabilities')?.name ??
      meta.outputs.find((o) => o.datatype === 'FP32' || o.datatype === 'FP64')?.name ??
      meta.outputs[0]!.name;
    const out = new Float64Array(rows.n);
    const CHUNK = 4096;
    for (let start = 0; start < rows.n; start += CHUNK) {
      const n = Math.min(CHUNK, rows.n - start);
      const slice = rows.X.subarray(start * rows.p, (start + n) * rows.p);
      const tensor =
        input.datatype === 'FP64'
          ? new ort.Tensor('float64', Float64Array.from(slice), [n, rows.p])
          : new ort.Tensor('float32', Float32Array.from(slice), [n, rows.p]);
      const result = await session.run({ [input.name]: tensor }, [outName]);
      const o = result[outName]!;
      const per = o.dims.length > 1 ? o.dims.slice(1).reduce((a, b) => a * b, 1) : 1;
      const col = Math.min(spec.index ?? per - 1, per - 1);
      const data = o.data as ArrayLike<number | bigint>;
      for (let i = 0; i < n; i++) out[start + i] = Number(data[i * per + col]);
    }
    return out;
  } finally {
    await session.release();
  }
}

function evaluate(scores: Float64Array, labels: Float64Array, threshold: number): ModelEval {
  let nonFinite = 0;
  for (const s of scores) if (!Number.isFinite(s)) nonFinite++;
  if (nonFinite > 0) return { auc: null, ks: null, gini: null, accuracy: null, log_loss: null, brier: null, nonFinite };
  const m = classificationMetrics(scores, labels, threshold);
  return { auc: m.auc, ks: m.ks, gini: m.gini, accuracy: m.accuracy, log_loss: m.log_loss, brier: m.brier, nonFinite };
}

async function validate(m: ValidateRequest): Promise<ValidateResult> {
  if (split === null) throw new Error('prepare first');
  const v = split.validation;
  const challengerScores = await score(m.challenger.bytes, m.challenger.score, v);
  const challenger = evaluate(challengerScores, v.y, m.threshold);
  if (m.champion === null) return { rows: v.n, champion: null, challenger, delong: null };
  const championScores = await score(m.champion.bytes, m.champion.score, v);
  const champion = evaluate(championScores, v.y, m.threshold);
  let test: ValidateResult['delong'] = null;
  if (challenger.nonFinite === 0 && champion.nonFinite === 0) {
    const d = delong(challengerScores, championScores, v.y);
    if (d !== null) test = { z: d.z, p: d.pValue, aucDifference: d.diff };
  }
  return { rows: v.n, champion, challenger, delong: test };
}

process.on('message', (m: WorkerRequest) => {
  const run = async (): Promise<{ value: unknown }> => {
    switch (m.op) {
      case 'prepare':
        return { value: await prepare(m) };
      case 'train':
        return { value: train(m) };
      case 'validate':
        return { value: await validate(m) };
    }
  };
  // The parent went away: nothing left to answer to.
  if (!process.connected) process.exit(0);
  run().then(
    ({ value }) => process.send!({ ok: true, value }),
    (e: Error) => process.send!({ ok: false, error: e.message }),
  );
});

process.on('disconnect', () => process.exit(0));
