// HTTP threads (http.threads): the process serves its port from N uWS apps, the main thread's and
// N - 1 more in worker threads, sharing the port through SO_REUSEPORT so that the kernel spreads
// new connections over them. Each thread is a whole server: its own app, inline inference, batches
// and engine, and a replica of the shared PostgreSQL store like any other, so the admin state (the
// registry, deployments, keys), the monitoring view (merged from every replica's shared cells), the
// prediction log (shipped to PostgreSQL) and canary analysis (shared step statistics) are one for
// all of them, as they are for replicas in separate processes; the leader lease decides which
// thread runs the singletons. What differs from separate processes:
// - the port: a connection (and every request on it) stays with the thread that accepted it, and
//   another scoreline process cannot join the port: the main thread holds a lock named after it (an
//   abstract Unix socket, Linux), taken before any thread listens;
// - /metrics: one scrape reaches one thread, so each thread answers with every thread's series,
//   gathered over a BroadcastChannel and told apart by a `thread` label;
// - gRPC stays on the main thread (Node 20's HTTP/2 server cannot share a port);
// - a thread that dies is started again, after a pause that grows while its replacements keep dying.
// Worker threads get their own data dir under <data-dir>/threads/<n> (the prediction log's local
// file, the artifact cache), and stop with the process.

import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:net';
import { BroadcastChannel, Worker } from 'node:worker_threads';
import client from 'prom-client';
import type { Logger } from 'pino';
import type { ServerConfig } from '../config.js';

/** Which of the process's HTTP threads a server is. */
export interface ThreadRole {
  /** 0: the main thread. */
  readonly index: number;
  readonly count: number;
  /** The BroadcastChannel the threads gather /metrics over (one name per process start). */
  readonly channel: string;
}

/** Threads 'auto' starts: one per core, up to this many. */
export const AUTO_THREADS_MAX = 8;
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 30_000;
/** A thread that lived this long died of something new: the next pause starts again from the shortest. */
const RESTART_RESET_MS = 60_000;
/** How long a scrape waits for the other threads' series. */
const GATHER_MS = 2000;

/** The number of HTTP threads for this config and store: 'auto' is one per core (at most 8) with PostgreSQL, else 1. */
export function threadCount(config: ServerConfig, sharedStore: boolean): number {
  const t = config.http.threads;
  if (t === 'auto') return sharedStore ? Math.min(AUTO_THREADS_MAX, availableParallelism()) : 1;
  return t;
}

type MetricsJSON = Awaited<ReturnType<client.Registry['getMetricsAsJSON']>>;

type Gather = { kind: 'ask'; id: string; from: number } | { kind: 'answer'; id: string; to: number; index: number; metrics: MetricsJSON };

/**
 * /metrics of a thread among several: its own registry's series and every other thread's, each with
 * a `thread` label, rendered as one exposition. A thread that does not answer within GATHER_MS is
 * left out (counted in scoreline_http_threads_unanswered_total of the answer).
 */
export class ThreadMetrics {
  private readonly channel: BroadcastChannel;
  private readonly waiting = new Map<string, { answers: MetricsJSON[]; done: () => void; left: number }>();
  unanswered = 0;

  constructor(
    private readonly role: ThreadRole,
    private readonly registry: client.Registry,
  ) {
    this.channel = new BroadcastChannel(role.channel);
    this.channel.unref();
    // A thread whose collection fails sends nothing: the asker leaves it out after the wait, and counts it.
    this.channel.onmessage = (e) => void this.received((e as { data: Gather }).data).catch(() => undefined);
  }

  private async received(m: Gather): Promise<void> {
    if (m.kind === 'ask') {
      if (m.from === this.role.index) return;
      const metrics = labelled(await this.registry.getMetricsAsJSON(), this.role.index);
      this.channel.postMessage({ kind: 'answer', id: m.id, to: m.from, index: this.role.index, metrics } satisfies Gather);
      return;
    }
    if (m.to !== this.role.index) return;
    const w = this.waiting.get(m.id);
    if (w === undefined) return;
    w.answers.push(m.metrics);
    if (--w.left === 0) w.done();
  }

  /** Every thread's series (those answering in time), as Prometheus text. */
  async exposition(): Promise<{ text: string; contentType: string }> {
    const id = randomBytes(8).toString('hex');
    const answers: MetricsJSON[] = [labelled(await this.registry.getMetricsAsJSON(), this.role.index)];
    const others = this.role.count - 1;
    if (others > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.waiting.set(id, { answers, done: resolve, left: others });
        timer = setTimeout(resolve, GATHER_MS);
        this.channel.postMessage({ kind: 'ask', id, from: this.role.index } satisfies Gather);
      });
      clearTimeout(timer);
      const w = this.waiting.get(id)!;
      this.waiting.delete(id);
      this.unanswered += w.left;
    }
    // Series of different threads differ by their label, so nothing is summed: each stays as it is.
    const merged = client.AggregatorRegistry.aggregate(answers);
    return { text: await merged.metrics(), contentType: merged.contentType };
  }

  close(): void {
    this.channel.close();
  }
}

function labelled(metrics: MetricsJSON, index: number): MetricsJSON {
  const thread = String(index);
  return metrics.map((m) => ({
    ...m,
    aggregator: 'sum',
    values: (m as unknown as { values: { labels: Record<string, string | number> }[] }).values.map((v) => ({
      ...v,
      labels: { ...v.labels, thread },
    })),
  })) as unknown as MetricsJSON;
}

/**
 * The process's hold on host:port among scoreline processes: an abstract Unix socket named after
 * them, which only one process can bind. Threads share the port with SO_REUSEPORT, which would
 * otherwise let a second scoreline (same user) silently take part of the traffic.
 */
export async function lockPort(host: string, port: number): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new Error(
          e.code === 'EADDRINUSE'
            ? `cannot listen on ${host}:${port}: another scoreline process serves it`
            : `cannot take the lock of ${host}:${port}: ${e.message}`,
        ),
      ),
    );
    server.listen({ path: `\0scoreline-port:${host}:${port}` }, resolve);
  });
  server.unref();
  return server;
}

export interface ThreadData {
  config: ServerConfig;
  role: ThreadRole;
}

/** What a worker HTTP thread reports to the main thread. */
export type ThreadMessage = { kind: 'listening'; port: number } | { kind: 'closed'; drained: boolean } | { kind: 'failed'; error: string };

/** The worker HTTP threads of the process (1..count-1), started, watched, replaced when they die, and stopped. */
export class HttpThreads {
  private readonly workers: (Worker | null)[] = [];
  private readonly restartMs: number[] = [];
  private readonly startedAt: number[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private closing = false;
  /** Threads started again after one died. */
  restarts = 0;

  constructor(
    private readonly config: ServerConfig,
    private readonly role: ThreadRole,
    private readonly log: Logger,
    /** The module each worker thread runs (a test gives its own). */
    private readonly entry: URL = new URL('./http-thread.js', import.meta.url),
  ) {}

  /** Starts every worker thread and resolves once each listens; rejects with the first one's failure. */
  async start(): Promise<void> {
    const started: Promise<void>[] = [];
    for (let i = 1; i < this.role.count; i++) {
      this.restartMs[i] = RESTART_MIN_MS;
      started.push(this.spawn(i));
    }
    await Promise.all(started);
  }

  private configOf(index: number): ServerConfig {
    return {
      ...this.config,
      dataDir: join(this.config.dataDir, 'threads', String(index)),
      // Node 20's HTTP/2 server cannot share a port: gRPC is the main thread's.
      grpc: { port: false },
    };
  }

  private spawn(index: number): Promise<void> {
    const data: ThreadData = { config: this.configOf(index), role: { ...this.role, index } };
    const w = new Worker(this.entry, { workerData: data });
    this.workers[index] = w;
    this.startedAt[index] = Date.now();
    return new Promise<void>((resolve, reject) => {
      let listening = false;
      w.on('message', (m: ThreadMessage) => {
        if (m.kind === 'listening') {
          listening = true;
          resolve();
        } else if (m.kind === 'failed' && !listening) reject(new Error(`HTTP thread ${index}: ${m.error}`));
      });
      w.on('error', (e) => {
        if (!listening) reject(new Error(`HTTP thread ${index}: ${e.message}`));
        else this.log.error({ thread: index, err: e.message }, `HTTP thread ${index} failed: ${e.message}`);
      });
      w.on('exit', (code) => {
        if (this.workers[index] !== w) return;
        this.workers[index] = null;
        if (!listening) {
          reject(new Error(`HTTP thread ${index} exited with code ${code} before it listened`));
          return;
        }
        if (!this.closing) this.died(index, code);
      });
    });
  }

  /** A thread died: its connections are gone; it starts again after a pause (longer while its replacements keep dying young). */
  private died(index: number, code: number): void {
    if (Date.now() - this.startedAt[index]! >= RESTART_RESET_MS) this.restartMs[index] = RESTART_MIN_MS;
    const pause = this.restartMs[index]!;
    this.restartMs[index] = Math.min(RESTART_MAX_MS, pause * 2);
    this.log.error(
      { thread: index, code, restartInMs: pause },
      `HTTP thread ${index} exited (code ${code}): its open connections are closed; it starts again in ${pause} ms, the other threads serve meanwhile`,
    );
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (this.closing) return;
      this.restarts++;
      this.spawn(index).catch((e: Error) => {
        this.log.error({ thread: index, err: e.message }, `HTTP thread ${index} could not start again: ${e.message}`);
        if (!this.closing && this.workers[index] === null) this.died(index, 1);
      });
    }, pause);
    timer.unref();
    this.timers.add(timer);
  }

  /** Threads running now (the main thread not counted). */
  get running(): number {
    return this.workers.filter((w) => w !== null && w !== undefined).length;
  }

  /** Asks every thread to re-read its TLS certificate (SIGHUP). */
  reloadTls(): void {
    for (const w of this.workers) w?.postMessage({ kind: 'reloadTls' });
  }

  /** Each thread finishes its requests and stops (at most shutdownTimeoutMs and a grace); true when all drained. */
  async close(): Promise<boolean> {
    this.closing = true;
    for (const t of this.timers) clearTimeout(t);
    const limit = this.config.server.shutdownTimeoutMs + 10_000;
    const running = this.workers.filter((w): w is Worker => w !== null && w !== undefined);
    const results = await Promise.all(
      running.map((w) => {
        return new Promise<boolean>((resolve) => {
          let drained = false;
          const timer = setTimeout(() => void w.terminate(), limit);
          w.on('message', (m: ThreadMessage) => {
            if (m.kind !== 'closed') return;
            // Done: its requests are answered and its store closed; nothing of it is left to run.
            drained = m.drained;
            void w.terminate();
          });
          w.once('exit', () => {
            clearTimeout(timer);
            resolve(drained);
          });
          w.postMessage({ kind: 'close' });
        });
      }),
    );
    return results.every(Boolean);
  }
}
