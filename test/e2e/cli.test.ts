// The `scoreline` command as a new user meets it: help for every form of asking, messages that name
// the flag or file at fault (never an internal name), SCORELINE_URL, `status` with everything it
// promises, `config check`, and score-batch's choice of version, reject limit and refusal to
// overwrite. The CLI runs as a child process against a real server or a real registry in a temp dir.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ModelRegistry } from '../../src/registry/store.js';
import { writeSumModel } from '../fixtures/models.js';
import { CLI, request, ROOT, startServer, tempDir, type TestServer } from './server.js';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string> = {}, cwd = ROOT): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd,
    env: { ...process.env, SCORELINE_URL: '', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let server: TestServer;
let dataDir: string;
let v2Path: string;

before(async () => {
  const repo = await tempDir();
  await writeSumModel(repo, 'sum', 1);
  const other = await tempDir();
  v2Path = (await writeSumModel(other, 'sum', 2)).modelPath;
  dataDir = await tempDir('scoreline-data-');
  server = await startServer(['--model-repo', repo, '--data-dir', dataDir]);
});

after(async () => {
  await server?.stop();
});

test('models --help, models -h and models help print the usage and exit 0', () => {
  for (const form of ['--help', '-h', 'help']) {
    const r = cli(['models', form]);
    assert.equal(r.status, 0, `${form}: ${r.stderr}`);
    assert.match(r.stdout, /^Usage: scoreline models <register\|list\|show\|alias>/);
    assert.equal(r.stderr, '');
  }
  assert.equal(cli(['models', 'register', '--help']).status, 0);
  const bad = cli(['models', 'frobnicate']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown subcommand 'frobnicate'/);
});

test('SCORELINE_URL names the server of the admin commands; --url wins over it', () => {
  const env = { SCORELINE_URL: server.url };
  const list = cli(['models', 'list', '--data-dir', dataDir], env);
  assert.equal(list.status, 0, list.stderr);
  assert.match(list.stdout, /^sum +latest v1 +1 versions/);
  const wrong = cli(['models', 'list', '--data-dir', dataDir, '--url', 'http://127.0.0.1:9'], env);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /cannot reach http:\/\/127\.0\.0\.1:9/);
  // Without either, the default (nothing listens on 8080 in tests... unless something does: only the message is checked).
  const usage = cli(['models', '--help']);
  assert.match(usage.stdout, /--url URL +server address \(default: SCORELINE_URL, else http:\/\/127\.0\.0\.1:8080\)/);
});

test('registering a file that is not ONNX names the file', () => {
  const r = cli(['models', 'register', 'sum', '/etc/hostname', '--data-dir', dataDir], { SCORELINE_URL: server.url });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /'\/etc\/hostname' \(as its sender names it\) is not an ONNX model/);
  assert.doesNotMatch(r.stderr, /admin-api|the artifact for model/);
});

test('status shows the strategy, the traffic split, per-version statistics, the canary analysis and the history', async () => {
  const env = { SCORELINE_URL: server.url };
  const reg = cli(['models', 'register', 'sum', v2Path, '--data-dir', dataDir], env);
  assert.equal(reg.status, 0, reg.stderr);
  assert.match(reg.stdout, /^sum version 2 \(sha256 [0-9a-f]{64}\)$/m);
  const dep = cli(
    [
      'deploy',
      'sum',
      '--strategy',
      'canary',
      '--stable',
      '1',
      '--canary',
      '2',
      '--percent',
      '10',
      '--steps',
      '50,100',
      '--step-seconds',
      '300',
      '--data-dir',
      dataDir,
    ],
    env,
  );
  assert.equal(dep.status, 0, dep.stderr);
  for (let i = 0; i < 20; i++) {
    const r = await request(`${server.url}/v2/models/sum/infer`, {
      json: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] },
    });
    assert.equal(r.status, 200);
  }
  const st = cli(['status', 'sum', '--data-dir', dataDir], env);
  assert.equal(st.status, 0, st.stderr);
  const lines = st.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^sum: canary v1 -> v2 at 10% \(steps 50, 100 every 300 s\), since \S+/);
  assert.match(st.stdout, /^ {2}traffic: v1 90\.0%, v2 10\.0%$/m);
  assert.match(st.stdout, /^ {2}v1: \d+ requests, 0 errors \(0\.0%\), p99 [\d.]+ ms, \d+ scores$/m);
  assert.match(st.stdout, /^ {2}v2: \d+ requests, 0 errors/m);
  assert.match(st.stdout, /^ {2}canary analysis: insufficient_data$/m);
  for (const check of ['error_rate', 'p99_latency', 'score_psi'])
    assert.match(st.stdout, new RegExp(`^ {4}${check} +\\S+ +canary .*n \\d+ of \\d+`, 'm'));
  assert.match(st.stdout, /^ {2}history:\n {4}\S+ {2}deploy: /m);
});

test('serve: a bad flag is reported as the flag, a bad file as the file', async () => {
  const r = cli(['serve', '--model-repo', 'examples/models', '--log-level', 'loud']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--log-level must be one of fatal, error, warn, info, debug, trace, silent, got 'loud'/);
  assert.doesNotMatch(r.stderr, /flags is invalid|log\.level/);
  const port = cli(['serve', '--model-repo', 'examples/models', '--port', '70000']);
  assert.equal(port.status, 2);
  assert.match(port.stderr, /--port must be from 0 to 65535, got 70000/);
  const dir = await tempDir();
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, 'modelRepository: models\nlog: { level: loud }\n');
  const f = cli(['serve', '--config', file, '--log-level', 'warn']);
  assert.equal(f.status, 1);
  assert.match(
    f.stderr,
    new RegExp(`${file.replace(/[.]/g, '\\.')} is invalid: log\\.level: must be one of fatal, error, warn, info, debug, trace, silent`),
  );
});

test('config check validates a server config and prints the effective one; a store without definitions is refused', async () => {
  const ok = cli(['config', 'check', 'examples/scoreline.yaml']);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(
    ok.stdout,
    /^# examples\/scoreline\.yaml is valid\. feature definitions .*features\.yaml: 9 features; model repository .*credit-default \(versions 1\)(, credit-purpose \(versions 1\))?\./,
  );
  assert.match(ok.stdout, /^server:\n {2}host: 0\.0\.0\.0\n {2}port: 8080$/m);
  assert.match(ok.stdout, /^batching:\n {2}maxBatchSize: 64$/m);
  assert.match(ok.stdout, /definitions: \/.*examples\/features\/features\.yaml$/m);
  const json = cli(['config', 'check', 'examples/scoreline.yaml', '--json']);
  assert.equal(JSON.parse(json.stdout).websocket.maxPayloadBytes, 1048576);

  const dir = await tempDir();
  const file = join(dir, 'redis-only.yaml');
  writeFileSync(file, 'features:\n  redis: { url: "redis://127.0.0.1:6379" }\n');
  const bad = cli(['config', 'check', file]);
  assert.equal(bad.status, 1);
  assert.match(
    bad.stderr,
    /is invalid: features\.redis is set but features\.definitions is not; without feature definitions entity scoring is off and the store is never used/,
  );
  // serve refuses it the same way, before it starts anything.
  const serve = cli(['serve', '--config', file, '--model-repo', 'examples/models', '--port', '0']);
  assert.equal(serve.status, 1);
  assert.match(serve.stderr, /features\.redis is set but features\.definitions is not/);
  assert.equal(cli(['config', '--help']).status, 0);
});

/** A registry with model `sum` versions 1..3 (v3 newest, never deployed) and the given deployment and alias. */
async function offlineRegistry(setup: (r: ModelRegistry) => void): Promise<{ dir: string; input: string }> {
  const dir = await tempDir('scoreline-batch-');
  const registry = ModelRegistry.open(join(dir, 'data'));
  try {
    for (const v of [1, 2, 3]) registry.register('sum', (await writeSumModel(join(dir, 'repo'), 'sum', v)).bytes);
    setup(registry);
  } finally {
    registry.close();
  }
  const input = join(dir, 'in.csv');
  writeFileSync(input, 'a,b,c,d\n1,2,3,4\n0.5,0.5,0.5,0.5\nnot-a-number,1,1,1\n');
  return { dir, input };
}

const batch = (dir: string, args: string[]) => cli(['score-batch', '--data-dir', join(dir, 'data'), '--quiet', ...args], {}, dir);
const scores = (file: string) => readFileSync(file, 'utf8').trim().split('\n').slice(1).map(Number);

test('score-batch scores with the version the deployment serves by default, says so first, and --version chooses', async () => {
  const { dir, input } = await offlineRegistry((r) => {
    r.saveDeployment(
      'sum',
      { spec: { strategy: 'canary', stable: 1, canary: 2, percent: 25 }, since: new Date().toISOString(), reason: 'test', analysis: [] },
      { action: 'deploy' },
    );
    r.setAlias('sum', 'champion', 2);
  });
  const r = batch(dir, ['--model', 'sum', '--input', input, '--output', 'out.csv']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(
    r.stdout.split('\n')[0],
    'scoring with sum v1: the version its deployment serves by default: canary stable (75% of traffic)',
  );
  assert.deepEqual(scores(join(dir, 'out.csv')), [10, 2]); // y = row sum x version 1
  const v3 = batch(dir, ['--model', 'sum', '--version', '3', '--input', input, '--output', 'v3.csv']);
  assert.equal(v3.stdout.split('\n')[0], 'scoring with sum v3: as asked');
  assert.deepEqual(scores(join(dir, 'v3.csv')), [30, 6]);
  const alias = batch(dir, ['--model', 'sum@champion', '--input', input, '--output', 'champion.csv']);
  assert.equal(alias.stdout.split('\n')[0], "scoring with sum v2: its 'champion' alias");
  const both = batch(dir, ['--model', 'sum@2', '--version', '3', '--input', input, '--output', 'x.csv']);
  assert.equal(both.status, 2);
  assert.match(both.stderr, /--model sum@2 names a version already; leave out --version/);
});

test('score-batch without a deployment takes the champion alias, else the latest version', async () => {
  const champion = await offlineRegistry((r) => r.setAlias('sum', 'champion', 2));
  const a = batch(champion.dir, ['--model', 'sum', '--input', champion.input, '--output', 'out.csv']);
  assert.equal(a.stdout.split('\n')[0], "scoring with sum v2: its 'champion' alias (no deployment)");
  const latest = await offlineRegistry(() => undefined);
  const b = batch(latest.dir, ['--model', 'sum', '--input', latest.input, '--output', 'out.csv']);
  assert.equal(b.stdout.split('\n')[0], 'scoring with sum v3: its latest version (no deployment and no champion alias)');
});

test('score-batch --max-rejects fails the run past the limit, keeps the rejects, writes no output', async () => {
  const { dir, input } = await offlineRegistry(() => undefined);
  const over = batch(dir, ['--model', 'sum', '--input', input, '--output', 'out.csv', '--max-rejects', '0']);
  assert.equal(over.status, 1);
  assert.match(
    over.stderr,
    /1 of 3 rows were rejected, more than the limit of 0; the output was not written, the rejected rows and their reasons are in out\.csv\.rejects\.csv/,
  );
  assert.ok(!existsSync(join(dir, 'out.csv')));
  assert.match(readFileSync(join(dir, 'out.csv.rejects.csv'), 'utf8'), /^line,reason,raw\n4,/);
  const pct = batch(dir, ['--model', 'sum', '--input', input, '--output', 'pct.csv', '--max-rejects', '30%']);
  assert.equal(pct.status, 1);
  assert.match(pct.stderr, /1 of 3 rows were rejected \(33\.3%\), more than the limit of 30%/);
  const within = batch(dir, ['--model', 'sum', '--input', input, '--output', 'ok.csv', '--max-rejects', '34%']);
  assert.equal(within.status, 0, within.stderr);
  assert.ok(existsSync(join(dir, 'ok.csv')));
  const bad = batch(dir, ['--model', 'sum', '--input', input, '--output', 'x.csv', '--max-rejects', 'many']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--max-rejects must be a row count \(e\.g\. 100\) or a share of the rows \(e\.g\. 0\.5%\), got 'many'/);
});

test('score-batch refuses to overwrite its output without --force; flags and unknown models are named plainly', async () => {
  const { dir, input } = await offlineRegistry(() => undefined);
  assert.equal(batch(dir, ['--model', 'sum', '--input', input, '--output', 'out.csv']).status, 0);
  const again = batch(dir, ['--model', 'sum', '--input', input, '--output', 'out.csv']);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /out\.csv and out\.csv\.rejects\.csv already exist; pass --force to overwrite/);
  const forced = batch(dir, ['--model', 'sum', '--version', '2', '--input', input, '--output', 'out.csv', '--force']);
  assert.equal(forced.status, 0, forced.stderr);
  assert.deepEqual(scores(join(dir, 'out.csv')), [20, 4]);

  const rows = batch(dir, ['--model', 'sum', '--input', input, '--output', 'r.csv', '--batch-rows', '0']);
  assert.equal(rows.status, 2);
  assert.match(rows.stderr, /--batch-rows must be an integer from 1 to 1000000, got 0/);
  assert.doesNotMatch(rows.stderr, /batchRows/);
  const unknown = batch(dir, ['--model', 'nope', '--input', input, '--output', 'n.csv']);
  assert.equal(unknown.status, 1);
  assert.match(unknown.stderr, /model 'nope' is not in the registry of .*registry\.db \(it holds sum\); point --data-dir at the data dir/);
  assert.doesNotMatch(unknown.stderr, /this server/);
});

test('score-batch reads a canary that has stepped up (percent at one of its steps) like the server does', async () => {
  const { dir, input } = await offlineRegistry((r) => {
    r.saveDeployment(
      'sum',
      {
        spec: { strategy: 'canary', stable: 2, canary: 3, percent: 50, steps: [50, 100], stepSeconds: 300 },
        since: new Date().toISOString(),
        reason: 'canary-step',
        analysis: [],
      },
      { action: 'canary-step' },
    );
    r.setAlias('sum', 'champion', 1);
  });
  const r = batch(dir, ['--model', 'sum', '--input', input, '--output', 'out.csv']);
  assert.equal(
    r.stdout.split('\n')[0],
    'scoring with sum v2: the version its deployment serves by default: canary stable (50% of traffic)',
  );
});
