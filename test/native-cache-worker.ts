// Worker side of test/native-cache.test.ts: runs in a worker_thread and answers requests against
// its own NativeCache handle, to show that the native store is one per process. Loaded only as a
// Worker; imported on the main thread (e.g. by a test runner globbing test/) it does nothing.

import { isMainThread, parentPort } from 'node:worker_threads';
import { NativeCache } from '../src/features/native-cache.js';

export type WorkerRequest =
  | { op: 'get'; key: string }
  | { op: 'getMany'; keys: string[] }
  | { op: 'set'; key: string; value: string; ttlMs?: number }
  | { op: 'stress'; prefix: string; keys: number; rounds: number }
  | { op: 'stats' };

export type WorkerReply =
  | { op: 'get'; value: string | null }
  | { op: 'getMany'; values: (string | null)[] }
  | { op: 'set'; stored: boolean }
  | { op: 'stress'; reads: number; hits: number; corrupt: number }
  | { op: 'stats'; entries: number };

/** The value a stress writer stores under `${prefix}${i}`: checkable by any reader. */
export function stressValue(prefix: string, i: number, round: number): Buffer {
  return Buffer.from(`${prefix}${i}|${round}|`.padEnd(64 + (i % 64), '#'));
}

export function isStressValue(prefix: string, i: number, value: Buffer): boolean {
  const text = value.toString();
  const head = `${prefix}${i}|`;
  return text.startsWith(head) && value.length === 64 + (i % 64) && /^\d+\|#*$/.test(text.slice(head.length));
}

function handle(cache: NativeCache, request: WorkerRequest): WorkerReply {
  switch (request.op) {
    case 'get': {
      const value = cache.get(request.key);
      return { op: 'get', value: value === undefined ? null : value.toString('hex') };
    }
    case 'getMany': {
      const values = cache.getMany(request.keys);
      return { op: 'getMany', values: values.map((v) => (v === undefined ? null : v.toString('hex'))) };
    }
    case 'set':
      return { op: 'set', stored: cache.set(request.key, Buffer.from(request.value, 'hex'), request.ttlMs) };
    case 'stress': {
      // Interleaved batch writes and batch reads over keys the main thread also writes and reads.
      const batchAt = (start: number): number[] => Array.from({ length: 20 }, (_, j) => (start + j) % request.keys);
      let reads = 0;
      let hits = 0;
      let corrupt = 0;
      for (let round = 0; round < request.rounds; round++) {
        const written = batchAt(round * 7);
        cache.setMany(
          written.map((i) => `${request.prefix}${i}`),
          written.map((i) => stressValue(request.prefix, i, round)),
        );
        const read = batchAt(round * 13);
        cache.getMany(read.map((i) => `${request.prefix}${i}`)).forEach((value, j) => {
          reads++;
          if (value === undefined) return;
          hits++;
          if (!isStressValue(request.prefix, read[j]!, value)) corrupt++;
        });
      }
      return { op: 'stress', reads, hits, corrupt };
    }
    case 'stats':
      return { op: 'stats', entries: cache.stats().entries };
  }
}

if (!isMainThread && parentPort !== null) {
  const port = parentPort;
  const cache = new NativeCache();
  port.on('message', (request: WorkerRequest | 'exit') => {
    if (request === 'exit') {
      port.close();
      return;
    }
    port.postMessage(handle(cache, request));
  });
}
