// A small gRPC load generator for the OIP service (wrk speaks HTTP/1.1 only, not gRPC): one
// channel, `concurrency` unary ModelInfer calls in flight, each replaced as soon as it completes,
// for a fixed time; throughput, p50/p99 latency, errors. The request is serialized once (from the
// proto by @grpc/proto-loader) and sent as those bytes, and answers are counted, not decoded, so the
// generator spends its time on HTTP/2 and the server's answers, as wrk does with a fixed body.
// runGrpcLoad() runs it as a child process pinned to the CPU wrk uses.
//   node dist/bench/grpc-load.js <port> <request.bin> <seconds> <concurrency>

import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { have } from './wrk.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PROTO = join(ROOT, 'src/server/proto/grpc_predict_v2.proto');
const PATH = '/inference.GRPCInferenceService/ModelInfer';

export interface LoadResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  requests: number;
  errors: number;
}

function methods() {
  const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: String, defaults: true, arrays: true });
  return (def['inference.GRPCInferenceService'] as protoLoader.ServiceDefinition).ModelInfer!;
}

/** A ModelInferRequest (proto-loader object form) as the bytes a client sends. */
export function encodeRequest(req: object): Buffer {
  return methods().requestSerialize(req);
}

/** A ModelInferResponse (object form) as the bytes a server sends. */
export function encodeResponse(res: object): Buffer {
  return methods().responseSerialize(res);
}

/** The parts of a decoded ModelInferResponse the benchmark compares with HTTP's answer. */
export interface InferAnswer {
  outputs: { contents: { fp32_contents: number[] } }[];
  raw_output_contents: Buffer[];
}

/** Calls ModelInfer once with a request object and decodes the answer (to check it before a run). */
export async function inferOnce(port: number, req: object): Promise<InferAnswer> {
  const m = methods();
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    return await new Promise((resolve, reject) =>
      client.makeUnaryRequest(PATH, m.requestSerialize, m.responseDeserialize, req, (e, r) => (e ? reject(e) : resolve(r as InferAnswer))),
    );
  } finally {
    client.close();
  }
}

/** Waits until ModelInfer answers on `port` (up to 30 s). */
export async function waitGrpcReady(port: number, req: object): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      await inferOnce(port, req);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`gRPC on port ${port} did not come up`);
}

async function load(port: number, body: Buffer, seconds: number, concurrency: number): Promise<LoadResult> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const same = (b: Buffer) => b;
  const latencies = new Float64Array(4_000_000);
  let n = 0;
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  await new Promise<void>((resolve) => {
    let running = concurrency;
    const next = () => {
      if (performance.now() >= end) {
        if (--running === 0) resolve();
        return;
      }
      const t0 = performance.now();
      client.makeUnaryRequest(PATH, same, same, body, (err) => {
        if (err) errors++;
        else if (n < latencies.length) latencies[n++] = performance.now() - t0;
        next();
      });
    };
    for (let i = 0; i < concurrency; i++) next();
  });
  client.close();
  const sorted = latencies.subarray(0, n).sort();
  const q = (p: number) => (n === 0 ? NaN : sorted[Math.min(n - 1, Math.floor(p * n))]!);
  return { rps: n / seconds, p50ms: q(0.5), p99ms: q(0.99), requests: n + errors, errors };
}

/** Runs the generator in a child process, pinned to the last CPU (where wrk runs) when taskset exists. */
export async function runGrpcLoad(port: number, body: Buffer, opts: { seconds: number; concurrency: number }): Promise<LoadResult> {
  const file = join(tmpdir(), `scoreline-grpc-load-${process.pid}.bin`);
  writeFileSync(file, body);
  const args = [fileURLToPath(import.meta.url), String(port), file, String(opts.seconds), String(opts.concurrency)];
  const pin = have('taskset') && availableParallelism() > 1;
  const [cmd, full] = pin ? ['taskset', ['-c', String(availableParallelism() - 1), process.execPath, ...args]] : [process.execPath, args];
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(cmd, full, { stdio: ['ignore', 'pipe', 'inherit'] });
    let s = '';
    p.stdout.on('data', (d) => (s += d));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve(s) : reject(new Error(`gRPC load generator exited with ${code}: ${s}`))));
  });
  return JSON.parse(out) as LoadResult;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [port, file, seconds, concurrency] = process.argv.slice(2);
  const result = await load(Number(port), readFileSync(file!), Number(seconds), Number(concurrency));
  process.stdout.write(JSON.stringify(result));
}
