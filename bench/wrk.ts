// Drives a server with wrk (Debian's wrk) and reads back throughput and latency; shared by the
// load benchmarks. wrk is pinned to the last CPU when taskset exists, the same for every server
// measured, so the load generator does not steal the server's core on a small machine.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';

export interface WrkResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  requests: number;
  errors: number;
}

export function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A wrk Lua script that POSTs `body` as JSON. */
export function postScript(body: string, name = 'post'): string {
  const path = join(tmpdir(), `scoreline-wrk-${name}-${process.pid}.lua`);
  writeFileSync(
    path,
    `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = ${JSON.stringify(body)}\n` +
      // Count non-2xx answers: wrk only reports them in aggregate otherwise.
      `local bad = 0\nfunction response(status, headers, body) if status >= 300 then bad = bad + 1 end end\n`,
  );
  return path;
}

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(v.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 's' ? n * 1000 : n;
}

export async function runWrk(
  url: string,
  script: string,
  opts: { connections: number; seconds: number; threads?: number },
): Promise<WrkResult> {
  const args = ['-t', String(opts.threads ?? 1), '-c', String(opts.connections), '-d', `${opts.seconds}s`, '--latency', '-s', script, url];
  const pin = have('taskset') && availableParallelism() > 1;
  const cmd = pin ? 'taskset' : 'wrk';
  const full = pin ? ['-c', String(availableParallelism() - 1), 'wrk', ...args] : args;
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(cmd, full, { stdio: ['ignore', 'pipe', 'inherit'] });
    let s = '';
    p.stdout.on('data', (d) => (s += d));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve(s) : reject(new Error(`wrk exited with ${code}: ${s}`))));
  });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = non2xx + (socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return {
    rps,
    p50ms: toMs(/^\s+50%\s+(\S+)$/m.exec(out)?.[1] ?? ''),
    p99ms: toMs(/^\s+99%\s+(\S+)$/m.exec(out)?.[1] ?? ''),
    requests,
    errors,
  };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Command prefix that keeps a server off the CPU wrk is pinned to (all but the last), so the load
 * generator and the server under test do not take time from each other; empty when not possible.
 */
export function serverPin(): string[] {
  const n = availableParallelism();
  return have('taskset') && n > 1 ? ['taskset', '-c', n === 2 ? '0' : `0-${n - 2}`] : [];
}

/** CPU time (user + system, all threads) a process has used so far, in milliseconds (Linux /proc). */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[11], fields[12]: utime, stime in clock ticks (USER_HZ, 100 on Linux)
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return NaN;
  }
}

/** CPU time (user + system) one thread of a process has used so far, in milliseconds (Linux /proc). */
export function threadCpuMs(pid: number, tid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return NaN;
  }
}

/** The id of a process's thread named `name` (its comm), or null. */
export function threadNamed(pid: number, name: string): number | null {
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === name) return Number(tid);
    }
  } catch {
    // not Linux, or the process is gone
  }
  return null;
}

/** Waits until a server answers `body` POSTed to `path` with a 2xx (up to 30 s). */
export async function waitReady(port: number, path: string, body: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      await r.arrayBuffer();
      if (r.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server on port ${port} did not come up`);
}

/** Kills the servers a benchmark started when the benchmark itself is interrupted or killed. */
export function killOnExit(procs: () => readonly ({ kill(signal?: NodeJS.Signals): boolean } | undefined)[]): void {
  const stop = () => {
    for (const p of procs()) p?.kill('SIGTERM');
  };
  process.once('exit', stop);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      stop();
      process.exit(130);
    });
  }
}

/** Pids of every PostgreSQL process on the machine (the throwaway cluster's, in a bench). */
export function postgresPids(): number[] {
  const pids: number[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'postgres') pids.push(Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Moves every PostgreSQL process to the last CPU (wrk's); false when that cannot be done (no taskset, one CPU). */
export function pinPostgres(): boolean {
  const n = availableParallelism();
  if (!have('taskset') || n < 2) return false;
  const pinned = postgresPids().filter(
    (pid) => spawnSync('taskset', ['-p', '-c', String(n - 1), String(pid)], { stdio: 'ignore' }).status === 0,
  );
  return pinned.length > 0;
}

/** CPU time used so far by every PostgreSQL process, ms (one that exited meanwhile reads NaN and is left out). */
export function postgresCpuMs(): number {
  return postgresPids()
    .map(cpuMs)
    .filter((ms) => !Number.isNaN(ms))
    .reduce((a, ms) => a + ms, 0);
}
