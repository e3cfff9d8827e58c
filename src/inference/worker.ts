// The piscina worker: one SessionHost per thread. A `run` task is one whole batch; its output
// buffers are moved (transferred) back to the main thread, never cloned.

import { threadId } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { SessionHost, type EngineChoice, type RunResult, type SessionSpec, type TensorPayload } from './session.js';
import { isStringTensor } from './tensor.js';

export type WorkerTask =
  | { op: 'run'; spec: SessionSpec; inputs: TensorPayload[] }
  | { op: 'load'; spec: SessionSpec }
  | { op: 'release'; key: string }
  | { op: 'die-on-next-run' };

export interface WorkerLoadAnswer extends EngineChoice {
  readonly threadId: number;
  readonly already: boolean;
  readonly batchMicros: number;
}

/** A run answer; `error` carries a model error (bad input for onnxruntime), not an infrastructure one. */
export interface WorkerRunAnswer {
  readonly result?: RunResult;
  readonly error?: string;
  readonly threadId: number;
}

const host = new SessionHost();
/** Fault injection: the next run ends this thread instead, as a fatal error under a batch would. */
let dieOnNextRun = false;

/** Hands piscina the output buffers to transfer alongside the plain answer object. */
class MovableAnswer {
  constructor(private readonly answer: WorkerRunAnswer) {}
  get [Piscina.transferableSymbol](): ArrayBufferLike[] {
    const out: ArrayBufferLike[] = [];
    for (const t of this.answer.result?.outputs ?? []) {
      // Strings (BYTES outputs) are cloned; typed arrays are moved.
      if (isStringTensor(t.data)) continue;
      // A buffer can only be listed once; onnxruntime gives each output its own.
      if (t.data.byteOffset === 0 && t.data.byteLength === t.data.buffer.byteLength && !out.includes(t.data.buffer)) {
        out.push(t.data.buffer);
      }
    }
    return out;
  }
  get [Piscina.valueSymbol](): WorkerRunAnswer {
    return this.answer;
  }
}

export default async function handle(task: WorkerTask): Promise<unknown> {
  switch (task.op) {
    case 'run': {
      // Exiting from JS, not terminate() from outside: a terminate that lands inside onnxruntime's
      // native run aborts the whole process (its binding throws an uncatchable C++ exception).
      if (dieOnNextRun) process.exit(70);
      let answer: WorkerRunAnswer;
      try {
        answer = { result: await host.run(task.spec, task.inputs), threadId };
      } catch (e) {
        answer = { error: e instanceof Error ? e.message : String(e), threadId };
      }
      return Piscina.move(new MovableAnswer(answer) as never);
    }
    case 'load': {
      const already = host.has(task.spec.key);
      const loaded = await host.load(task.spec);
      return { threadId, already, batchMicros: loaded.batchMicros, engine: loaded.engine, note: loaded.note } satisfies WorkerLoadAnswer;
    }
    case 'release':
      return { threadId, released: await host.release(task.key) };
    case 'die-on-next-run':
      dieOnNextRun = true;
      return { threadId };
  }
}
