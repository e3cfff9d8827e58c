// "Nothing is downloaded at run time": a served request makes no DNS lookup and no outbound
// connection. onnxruntime 1.30 resolves and posts to mobile.events.data.microsoft.com about ten
// seconds after its first session unless ORT_DISABLE_TELEMETRY is set, which scoreline does itself
// (src/inference/ort-env.ts). The server runs under strace (every thread and child), serves OIP
// requests from a worker thread and inline, and its network system calls are watched for 25 s.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { CLI, DEMO_REPO, request, ROOT, tempDir } from './server.js';
import { elapse, waitFor } from '../fixtures/wait.js';

const HAS_STRACE = spawnSync('strace', ['-V']).status === 0;
const SYSCALLS = 'trace=execve,connect,sendto,sendmsg,sendmmsg';
/** onnxruntime's first upload attempt comes ~10 s after start; watch well past it. */
const WATCH_MS = 25_000;

/** The network calls in a strace -f log that leave the machine or ask a resolver. */
export function outboundCalls(trace: string): string[] {
  return trace.split('\n').filter((line) => {
    if (/connect\(.*sun_path="\/var\/run\/nscd\/socket"/.test(line)) return true; // a lookup through nscd
    if (!/\b(connect|sendto|sendmsg|sendmmsg)\(/.test(line)) return false;
    const v4 = /sin_addr=inet_addr\("([0-9.]+)"\)/.exec(line);
    if (v4 !== null) return !v4[1]!.startsWith('127.');
    const v6 = /inet_pton\(AF_INET6, "([^"]+)"/.exec(line);
    if (v6 !== null) return v6[1] !== '::1' && v6[1] !== '::ffff:127.0.0.1';
    return false;
  });
}

interface Traced {
  readonly trace: string;
  read(): string;
  /** Pid of the traced program (not of strace). */
  readonly pid: number;
  readonly output: string[];
  readonly exited: Promise<number | null>;
}

async function traced(dir: string, argv: string[]): Promise<Traced> {
  const trace = join(dir, 'strace.log');
  const output: string[] = [];
  const proc = spawn('strace', ['-f', '-qq', '-e', SYSCALLS, '-o', trace, '--', process.execPath, ...argv], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (b: Buffer) => output.push(b.toString()));
  proc.stderr!.on('data', (b: Buffer) => output.push(b.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const pid = await waitFor(
    () => {
      const first = existsSync(trace) ? /^(\d+) +execve\(/.exec(readFileSync(trace, 'utf8')) : null;
      return first === null ? 0 : Number(first[1]);
    },
    { timeoutMs: 10_000, intervalMs: 50, message: () => `strace to start the program: ${output.join('')}` },
  );
  return { trace, pid, output, exited, read: () => readFileSync(trace, 'utf8') };
}

test('the detector sees a DNS lookup (the check has teeth)', { skip: !HAS_STRACE && 'strace is not installed' }, async () => {
  const dir = await tempDir('scoreline-net-');
  const t = await traced(dir, ['-e', "require('node:dns').lookup('scoreline-test.invalid', () => {})"]);
  await t.exited;
  assert.ok(outboundCalls(t.read()).length > 0, `a lookup was seen:\n${t.read()}`);
  assert.deepEqual(outboundCalls('123 connect(5, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = 0'), []);
});

test('a served request makes no DNS lookup and no outbound connection', {
  skip: !HAS_STRACE && 'strace is not installed',
  timeout: 90_000,
}, async () => {
  const dir = await tempDir('scoreline-net-');
  const config = join(dir, 'config.yaml');
  // One worker and no inline placement: sessions are created on a worker thread as well as the main one.
  writeFileSync(config, `modelRepository: ${DEMO_REPO}\ndataDir: ${join(dir, 'data')}\ninference: { workers: 1, inlineBelowMicros: 0 }\n`);
  const t = await traced(dir, [CLI, 'serve', '--config', config, '--port', '0', '--host', '127.0.0.1']);
  try {
    const started = Date.now();
    const port = await waitFor(
      () => {
        const m = /"port":(\d+)[^\n]*scoreline listening/.exec(t.output.join(''));
        return m === null ? 0 : Number(m[1]);
      },
      { timeoutMs: 30_000, intervalMs: 50, message: () => `the server to listen:\n${t.output.join('')}` },
    );
    const infer = await request(`http://127.0.0.1:${port}/v2/models/credit-default/infer`, {
      json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10], data: [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0] }] },
    });
    assert.equal(infer.status, 200, infer.text);
    // Watch the whole window, failing at the first call out. Elapsed time is the subject: no call
    // out may happen within WATCH_MS of the start (startup, the request, timers that fire later).
    const until = started + WATCH_MS;
    while (Date.now() < until) {
      const out = outboundCalls(t.read());
      assert.deepEqual(out, [], 'no outbound network call');
      await elapse(250);
    }
    assert.equal((await request(`http://127.0.0.1:${port}/v2/health/ready`)).status, 200);
  } finally {
    process.kill(t.pid, 'SIGTERM');
    await t.exited;
  }
  assert.deepEqual(outboundCalls(t.read()), []);
});

test('every module that loads onnxruntime-node sets the telemetry switch first', () => {
  const files = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
    );
  const loaders = files(join(ROOT, 'src')).filter((f) => /from 'onnxruntime-node'/.test(readFileSync(f, 'utf8')));
  assert.ok(loaders.length >= 2, 'the inference and retraining modules load onnxruntime-node');
  for (const f of loaders) {
    const text = readFileSync(f, 'utf8');
    const env = text.search(/import '[./]*(inference\/)?ort-env\.js';/);
    assert.ok(env >= 0 && env < text.indexOf("from 'onnxruntime-node'"), `${relative(ROOT, f)} imports ort-env.js before onnxruntime-node`);
  }
  assert.match(readFileSync(join(ROOT, 'src', 'inference', 'ort-env.ts'), 'utf8'), /process\.env\.ORT_DISABLE_TELEMETRY = '1'/);
});
