// A real redis-server for tests, on its own port, started and stopped by the test (CI installs the
// Debian package; nothing else is assumed to be running).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

export interface TestRedis {
  readonly port: number;
  readonly url: string;
  proc: ChildProcess;
  /** Kills the server (SIGKILL: like a crash) and waits for it to exit. */
  kill(): Promise<void>;
  /** Starts a new server on the same port. */
  restart(): Promise<void>;
  cli(...args: string[]): string;
}

export function redisAvailable(): boolean {
  return spawnSync('sh', ['-c', 'command -v redis-server']).status === 0;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function launch(port: number): Promise<ChildProcess> {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if (spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG') return proc;
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill('SIGKILL');
  throw new Error(`redis-server did not start on port ${port}`);
}

export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  const r: TestRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    proc: await launch(port),
    async kill() {
      if (r.proc.exitCode !== null || r.proc.signalCode !== null) return;
      const exited = new Promise((res) => r.proc.once('exit', res));
      r.proc.kill('SIGKILL');
      await exited;
    },
    async restart() {
      r.proc = await launch(port);
    },
    cli(...args) {
      return spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim();
    },
  };
  return r;
}
