// An external trainer for `npm run demo:retrain`, written to scoreline's trainer contract
// (SCORELINE_TRAIN_FILE, SCORELINE_VALIDATION_FILE, SCORELINE_FEATURES, SCORELINE_LABEL,
// SCORELINE_OUTPUT_DIR): a logistic regression whose score is scaled per loan-amount bucket, with
// a bucket table built from the amounts it has seen. It validates well -- and has a real-world
// bug: an amount above every bucket (a new jumbo-loan product) makes the model fail at run time.
// The canary catches that on live traffic and rolls the challenger back.
//   node dist/examples/retrain/bucketed-trainer.js   (run by scoreline, not by hand)

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GraphBuilder } from '../../src/inference/onnx-writer.js';
import { addClassifierOutputs, addLogisticNodes, trainLogistic, type LogisticModel } from '../../src/retraining/index.js';

const BUCKET = 5000;

function env(k: string): string {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run me as a scoreline retraining trainer`);
  return v;
}

function readCsv(path: string, features: string[], label: string): { X: number[][]; y: number[] } {
  const lines = readFileSync(path, 'utf8').trim().split('\n');
  const header = lines[0]!.split(',');
  const cols = features.map((f) => header.indexOf(f));
  const yi = header.indexOf(label);
  const X: number[][] = [];
  const y: number[] = [];
  for (const line of lines.slice(1)) {
    const c = line.split(',');
    X.push(cols.map((i) => Number(c[i])));
    y.push(Number(c[yi]));
  }
  return { X, y };
}

function bucketedOnnx(m: LogisticModel, amountColumn: number, buckets: number): Uint8Array {
  const g = new GraphBuilder('credit_default_bucketed');
  g.input('input', 'FP32', [-1, m.weights.length]);
  const raw = addLogisticNodes(g, m, 'input', 'p_raw');
  g.initializer('bucket', 'FP32', [1], Float32Array.of(BUCKET));
  g.initializer('start', 'INT64', [1], BigInt64Array.of(BigInt(amountColumn)));
  g.initializer('end', 'INT64', [1], BigInt64Array.of(BigInt(amountColumn + 1)));
  g.initializer('axis', 'INT64', [1], BigInt64Array.of(1n));
  // one scale per amount bucket (all 1 here: the calibration step was never finished)
  g.initializer('bucket_scale', 'FP32', [buckets], new Float32Array(buckets).fill(1));
  g.node('Slice', ['input', 'start', 'end', 'axis'], ['amount']);
  g.node('Div', ['amount', 'bucket'], ['amount_buckets']);
  g.node('Floor', ['amount_buckets'], ['bucket_floor']);
  g.node('Cast', ['bucket_floor'], ['bucket_index'], { to: 7 });
  g.node('Gather', ['bucket_scale', 'bucket_index'], ['scale'], { axis: 0 });
  g.node('Mul', [raw, 'scale'], ['p1']);
  addClassifierOutputs(g, 'p1');
  return g.toModelBytes({ opset: 17, producer: 'bucketed-trainer' });
}

const features = env('SCORELINE_FEATURES').split(',');
const label = env('SCORELINE_LABEL');
const amountColumn = features.indexOf('amount');
if (amountColumn < 0) throw new Error('this trainer needs an `amount` feature');
const train = readCsv(env('SCORELINE_TRAIN_FILE'), features, label);
const validation = readCsv(env('SCORELINE_VALIDATION_FILE'), features, label);
const maxAmount = Math.max(...[...train.X, ...validation.X].map((r) => r[amountColumn]!));
const buckets = Math.floor(maxAmount / BUCKET) + 1;
console.log(`training on ${train.X.length} rows; ${buckets} amount buckets of ${BUCKET} (largest amount seen ${maxAmount})`);
const model = trainLogistic(train.X, train.y, { l2: 1 });
console.log(`logistic regression: ${model.iterations} iterations, ${model.converged ? 'converged' : 'not converged'}`);
writeFileSync(join(env('SCORELINE_OUTPUT_DIR'), 'model.onnx'), bucketedOnnx(model, amountColumn, buckets));
