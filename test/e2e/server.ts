// Starts a real scoreline server (the CLI, as a child process) on an ephemeral port for e2e tests,
// and offers small HTTP helpers. Logs are kept so a failing test can print them.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { loadConfigFile } from '../../src/config.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CLI = join(ROOT, 'bin', 'scoreline.js');
export const DEMO_REPO = join(ROOT, 'examples', 'models');

export interface TestServer {
  readonly url: string;
  readonly port: number;
  /** The OIP gRPC port (every test server gets a free one unless its args say otherwise), or null when off. */
  readonly grpcPort: number | null;
  readonly proc: ChildProcess;
  readonly logs: string[];
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

export async function tempDir(prefix = 'scoreline-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/**
 * The inference workers of a test server: 1 unless the test asks for a number (`--workers`, or
 * inference.workers in its `--config` file). The server's own default (cores - 1) would have every
 * test file that runs in parallel start a pool sized for the whole machine.
 */
export function workerArgs(args: string[], cwd: string = ROOT): string[] {
  if (args.includes('--workers')) return [];
  const at = args.indexOf('--config');
  if (at >= 0 && args[at + 1] !== undefined) {
    let workers: unknown;
    try {
      workers = (loadConfigFile(resolve(cwd, args[at + 1]!)) as { inference?: { workers?: unknown } } | null)?.inference?.workers;
    } catch {
      return []; // the server reports the unreadable config itself
    }
    if (workers !== undefined) return [];
  }
  return ['--workers', '1'];
}

/**
 * `cli` and `cwd`: another scoreline tree (e.g. a container image's /app assembled by a test);
 * `onLine` sees every log line as it comes, also while the server is still starting.
 */
export async function startServer(
  args: string[],
  env: Record<string, string> = {},
  where: { cli?: string; cwd?: string; onLine?: (line: string) => void } = {},
): Promise<TestServer> {
  // Every server gets its own data dir (registry, artifacts, admin token) unless the test names one.
  const dataDir = args.includes('--data-dir') ? [] : ['--data-dir', await tempDir('scoreline-data-')];
  // gRPC on a free port too: the default (8081) would collide between servers running side by side.
  const grpc = args.includes('--grpc-port') ? [] : ['--grpc-port', '0'];
  const workers = workerArgs(args, where.cwd ?? ROOT);
  const proc = spawn(
    process.execPath,
    [where.cli ?? CLI, 'serve', '--port', '0', '--host', '127.0.0.1', ...grpc, ...workers, ...dataDir, ...args],
    {
      cwd: where.cwd ?? ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  createInterface({ input: proc.stderr! }).on('line', (l) => {
    logs.push(l);
    where.onLine?.(l);
  });
  let grpcPort: number | null = null;
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      // Not left running behind the failed test.
      proc.kill('SIGKILL');
      reject(new Error(`server did not start in time:\n${logs.join('\n')}`));
    }, 30_000);
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      logs.push(line);
      where.onLine?.(line);
      try {
        const rec = JSON.parse(line) as { msg?: string; port?: number; grpcPort?: number | null };
        if (rec.msg?.startsWith('scoreline listening') && rec.port) {
          grpcPort = rec.grpcPort ?? null;
          clearTimeout(timer);
          resolve(rec.port);
        }
      } catch {
        // not a log line
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${logs.join('\n')}`));
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    grpcPort,
    proc,
    logs,
    exited,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

export interface JsonResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

export async function request<T = any>(url: string, init: RequestInit & { json?: unknown } = {}): Promise<JsonResponse<T>> {
  const { json, ...rest } = init;
  const headers = new Headers(rest.headers);
  let body = rest.body;
  if (json !== undefined) {
    body = JSON.stringify(json);
    if (!headers.has('content-type')) headers.set('content-type', 'application/json');
  }
  const res = await fetch(url, { ...rest, headers, body: body ?? null, method: rest.method ?? (body !== undefined ? 'POST' : 'GET') });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, body: parsed as T, text };
}
