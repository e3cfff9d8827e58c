// The README, executed (`npm run docs:check`): every ```sh block runs in order in one bash session
// against the demo server this test starts (`npm start`'s config, on a free port, with its own data
// dir), with Redis for the materialize example, and each command's output is compared with what the
// README shows after it. A block may be skipped only by a `<!-- readme-test: skip (why) -->` line
// right above it, and only if its commands need what a test cannot run (npm, Docker, Podman,
// kubectl): every curl and scoreline line runs.
//
// How a block reads:
//   - a command runs to the end of its line, across `\` continuations and open quotes;
//   - `# => text` lines right after a command are its expected output (one per output line, JSON may
//     wrap onto `#    ` lines); other comments are prose;
//   - `...` elides: digits after a number's shown ones (`0.8782...`), any string (`"..."`), or
//     anything else; whitespace is not compared;
//   - a command with no expected output must exit 0 and must not answer `{"error": ...}`.
// What is substituted: the port (8080 -> the test's), Redis's URL, and SCORELINE_URL points the CLI's
// admin commands at the server. Commands run in a directory like a project that installed scoreline
// (`node_modules/.bin/scoreline`, so `npx scoreline` runs this checkout's CLI, offline), with
// `examples` linked to this checkout's and `data` being the server's data dir.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { redisAvailable, startRedis } from './e2e/redis.js';
import { ROOT, startServer } from './e2e/server.js';

export interface Step {
  readonly command: string;
  readonly expected: string[];
  /** 1-based README line of the command. */
  readonly line: number;
}

export interface Block {
  readonly line: number;
  readonly skip: string | null;
  readonly steps: Step[];
}

/** Whether a command's text is complete: no open quote and no trailing backslash. */
function complete(text: string): boolean {
  let single = false;
  let double = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (single) {
      if (c === "'") single = false;
    } else if (c === '\\') {
      i++;
    } else if (double) {
      if (c === '"') double = false;
    } else if (c === "'") {
      single = true;
    } else if (c === '"') {
      double = true;
    } else if (c === '#' && (i === 0 || /\s/.test(text[i - 1]!))) {
      // A comment runs to the end of its line.
      const nl = text.indexOf('\n', i);
      if (nl < 0) break;
      i = nl;
    }
  }
  return !single && !double && !/\\$/.test(text);
}

export function parseReadme(text: string): Block[] {
  const lines = text.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```sh') continue;
    const marker = /^<!-- readme-test: skip \((.+)\) -->$/.exec(lines[i - 1] ?? '');
    const start = i + 1;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i] !== '```'; i++) body.push(lines[i]!);
    const steps: Step[] = [];
    for (let j = 0; j < body.length; j++) {
      const l = body[j]!;
      if (l.trim() === '' || l.trimStart().startsWith('#')) continue;
      let command = l;
      const line = start + j + 1;
      while (!complete(command) && j + 1 < body.length) command += `\n${body[++j]}`;
      const expected: string[] = [];
      while (j + 1 < body.length && /^# => |^# {4}/.test(body[j + 1]!)) {
        const next = body[++j]!;
        if (next.startsWith('# => ')) expected.push(next.slice(5));
        else if (expected.length > 0) expected[expected.length - 1] += next.slice(1);
        else throw new Error(`README line ${start + j + 1}: a continuation line before any '# => ' line`);
      }
      steps.push({ command, expected, line });
    }
    blocks.push({ line: start, skip: marker?.[1] ?? null, steps });
  }
  return blocks;
}

/** The expected output as a regex over the whitespace-free actual output. */
export function expectation(expected: readonly string[]): RegExp {
  // Elisions are told apart before whitespace goes: `0.87...` elides digits, `p99 ...` anything.
  const marked = expected
    .join('\n')
    .replace(/"\.\.\."/g, '\u0001')
    .replace(/(\d)\.\.\./g, '$1\u0002')
    .replace(/\.\.\./g, '\u0003')
    .replace(/\s+/g, '');
  const pattern = marked
    .replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    .replaceAll('\u0001', '"[^"]*"')
    .replaceAll('\u0002', '\\d*')
    .replaceAll('\u0003', '[\\s\\S]*?');
  return new RegExp(`^${pattern}$`);
}

export function matches(expected: readonly string[], actual: string): boolean {
  return expectation(expected).test(actual.replace(/\s+/g, ''));
}

/** What a skipped block may hold: commands a test cannot run here. */
const SKIPPABLE = /^(?:[A-Z_]+=\S+ )*(?:npm|docker|podman|kubectl|grpcurl|\.ci\/run)\b/;

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');

test('the runner: parsing, elisions and comparisons', () => {
  const blocks = parseReadme(
    [
      '```sh',
      '# prose',
      "curl -s x -d '{",
      '  "a": 1}\'   # trailing comment',
      '# => {"a":1.234...,',
      '#    "b":"...","c":[...]}',
      'echo one \\',
      '  two',
      '```',
      '<!-- readme-test: skip (Docker) -->',
      '```sh',
      'docker run x',
      '```',
    ].join('\n'),
  );
  assert.equal(blocks.length, 2);
  assert.deepEqual(
    blocks[0]!.steps.map((s) => [s.line, s.expected.length]),
    [
      [3, 1],
      [7, 0],
    ],
  );
  assert.equal(blocks[0]!.steps[0]!.command, 'curl -s x -d \'{\n  "a": 1}\'   # trailing comment');
  assert.equal(blocks[0]!.steps[1]!.command, 'echo one \\\n  two');
  assert.equal(blocks[1]!.skip, 'Docker');
  const e = blocks[0]!.steps[0]!.expected;
  assert.ok(matches(e, '{"a":1.2345678,"b":"anything at all","c":[1,2,3]}'));
  assert.ok(!matches(e, '{"a":1.3,"b":"x","c":[]}'), 'shown digits must match');
  assert.ok(!matches(e, '{"a":1.234,"b":"x","c":[],"d":1}'), 'the whole output must match');
  assert.ok(matches(['scored 10 of 10 rows ... s'], 'scored 10 of 10 rows in 0.25 s'));
  assert.ok(matches(['p99 ..., 3 scores'], 'p99 n/a, 3 scores'), 'a spaced ... elides anything, even after a digit');
  assert.ok(!matches(['p99...'], 'p99 n/a'), 'an attached ... elides digits only');
  assert.ok(!matches(['scored 10 of 10 rows'], 'scored 9 of 10 rows'));
});

// The environment of a user's shell: `npm test` exports the project's .npmrc settings as npm_config_* variables,
// which a user's shell does not have (and npx would warn about the one npm does not know).
function userEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_(config|package|lifecycle)_/i.test(k)));
}

test('every sh block of the README runs against the demo and shows what the README says', {
  skip: !redisAvailable() && 'redis-server is not installed',
  timeout: 300_000,
}, async (t) => {
  const blocks = parseReadme(readme);
  const run = blocks.filter((b) => b.skip === null);
  for (const b of blocks.filter((x) => x.skip !== null)) {
    for (const s of b.steps)
      assert.match(s.command, SKIPPABLE, `README line ${s.line}: a skipped block may hold only npm/docker/podman/kubectl/grpcurl commands`);
  }
  const commands = run.flatMap((b) => b.steps);
  assert.ok(commands.filter((s) => /^curl /.test(s.command)).length >= 10, 'the curl examples run');
  assert.ok(commands.filter((s) => /^npx scoreline /.test(s.command)).length >= 8, 'the scoreline examples run');
  assert.ok(
    !/^scoreline /m.test(blocks.flatMap((b) => b.steps.map((s) => s.command)).join('\n')),
    'commands say npx scoreline (a bare scoreline is not on PATH)',
  );

  const dir = join(tmpdir(), `scoreline-readme-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'node_modules', '.bin'), { recursive: true });
  symlinkSync(join(ROOT, 'bin', 'scoreline.js'), join(dir, 'node_modules', '.bin', 'scoreline'));
  symlinkSync(join(ROOT, 'examples'), join(dir, 'examples'));
  const redis = await startRedis();
  // `npm start`: the demo config, here on a free port and with the data dir the commands see as ./data.
  const server = await startServer(['--config', join(ROOT, 'examples', 'scoreline.yaml'), '--data-dir', join(dir, 'data')]);
  try {
    const substitute = (c: string) =>
      c
        .replaceAll('localhost:8080', `localhost:${server.port}`)
        .replaceAll('127.0.0.1:8080', `127.0.0.1:${server.port}`)
        .replaceAll('redis://127.0.0.1:6379', redis.url);
    const script = [
      'exec 2>&1',
      ...commands.flatMap((s, i) => [`printf '\\036BEGIN ${i}\\n'`, substitute(s.command), `printf '\\n\\036END ${i} %d\\n' $?`]),
    ].join('\n');
    const r = spawnSync('bash', ['-c', script], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 240_000,
      maxBuffer: 256 * 1024 * 1024,
      env: {
        ...userEnv(),
        SCORELINE_URL: server.url,
        SCORELINE_ADMIN_TOKEN: '',
        npm_config_offline: 'true',
        npm_config_update_notifier: 'false',
      },
    });
    assert.equal(r.error, undefined, String(r.error));
    const outputs = new Map<number, { text: string; rc: number }>();
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the script marks each command's output with record separators (0x1e)
    for (const m of r.stdout.matchAll(/\x1eBEGIN (\d+)\n([\s\S]*?)\n\x1eEND \1 (\d+)\n/g))
      outputs.set(Number(m[1]), { text: m[2]!, rc: Number(m[3]) });
    const failures: string[] = [];
    commands.forEach((s, i) => {
      const out = outputs.get(i);
      const shown = (text: string) => (text.length > 1500 ? `${text.slice(0, 1500)}... (${text.length} chars)` : text);
      if (out === undefined) {
        failures.push(`README line ${s.line}: did not run:\n${s.command}`);
        return;
      }
      const problem =
        out.rc !== 0
          ? `exit ${out.rc}`
          : s.expected.length > 0
            ? matches(s.expected, out.text)
              ? null
              : `expected:\n${s.expected.join('\n')}`
            : /^\s*\{"error":/.test(out.text)
              ? 'answered an error'
              : null;
      if (problem !== null) failures.push(`README line ${s.line}: ${s.command.split('\n')[0]}\n  ${problem}\n  got:\n${shown(out.text)}`);
    });
    t.diagnostic(
      `${commands.length} commands in ${run.length} blocks ran; ${blocks.length - run.length} blocks skipped (${blocks
        .filter((b) => b.skip)
        .map((b) => b.skip)
        .join('; ')})`,
    );
    assert.deepEqual(failures, [], failures.join('\n\n'));
  } finally {
    await server.stop();
    await redis.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});
