// Retraining end to end, against a running server: a drift alert triggers a job that trains on
// the dated files, validates out of time against the weak champion, registers the challenger with
// its lineage and promotes it through a canary; a retrain of the now-strong champion is rejected
// and registers nothing; an incident triggers a job; an external trainer's challenger passes the
// gate, fails on production traffic and is rolled back; a schedule trigger respects one job per
// model and the cooldown; a job killed with the server is failed on restart, never left running;
// bad requests change nothing; notifications reach the webhook; the CLI lists jobs.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { logisticToOnnx } from '../../src/retraining/logistic.js';
import { FEATURES, generate, rng, toCsv, WEAK, writeWeakModel } from '../fixtures/retraining.js';
import { waitFor } from '../fixtures/wait.js';
import { CLI, ROOT, request, startServer, tempDir, type TestServer } from './server.js';

const TOKEN = 'retrain-test-token';
let server: TestServer;
let repo: string;
let dataDir: string;
let configPath: string;
let hook: Server;
const notifications: { event: string; text: string; job?: { id: string; state: string } }[] = [];

const start = () => startServer(['--config', configPath, '--data-dir', dataDir], { SCORELINE_ADMIN_TOKEN: TOKEN });
const admin = (method: string, path: string, json?: unknown) =>
  request(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${TOKEN}` }, ...(json !== undefined ? { json } : {}) });

before(async () => {
  repo = await tempDir();
  dataDir = await tempDir('scoreline-data-');
  const rows = generate(3000, 42);
  const dataRoot = join(repo, 'shared-data');
  await mkdir(dataRoot, { recursive: true });
  // Two files, found by one glob; the order of rows in them does not matter, their dates do.
  await writeFile(join(dataRoot, 'applications-a.csv'), toCsv(rows.slice(0, 1500)));
  await writeFile(join(dataRoot, 'applications-b.csv'), toCsv(rows.slice(1500)));
  await writeFile(join(dataRoot, 'notes.txt'), 'not matched by the glob\n');
  const common = {
    data: '../shared-data/applications-*.csv',
    timeColumn: 'date',
    useFeedback: false,
    oot: { fraction: 0.3 },
    minRows: 200,
  };
  // risk: drift-triggered, built-in trainer, reference for drift
  const riskDir = await writeWeakModel(
    repo,
    'risk',
    {
      ...common,
      gate: { minDelta: 0.005, ksTolerance: 0.02 },
      triggers: { drift: { psi: 0.25 }, debounceSeconds: 0.2, cooldownSeconds: 3600 },
      deploy: { steps: [50, 100], stepSeconds: 1 },
    },
    { reference: 'reference.csv' },
  );
  await writeFile(join(riskDir, 'reference.csv'), toCsv(generate(1000, 7)));
  // guarded: an external trainer whose model fails on x0 >= 1000
  await writeWeakModel(repo, 'guarded', {
    ...common,
    trainer: { command: [process.execPath, join(ROOT, 'dist/test/fixtures/trainers/guarded.js')], timeoutSeconds: 60 },
    deploy: { steps: [50, 100], stepSeconds: 2 },
  });
  // sched: every second; its gate cannot be passed, so each job ends quickly (rejected)
  await writeWeakModel(repo, 'sched', { ...common, gate: { minDelta: 0.9 }, triggers: { schedule: '* * * * * *', cooldownSeconds: 3600 } });
  // slow: a trainer that outlives the server
  await writeWeakModel(repo, 'slow', {
    ...common,
    trainer: { command: [process.execPath, '-e', 'setTimeout(() => {}, 120000)'], timeoutSeconds: 300 },
  });
  // plain: no retraining section
  await mkdir(join(repo, 'plain', '1'), { recursive: true });
  await writeFile(join(repo, 'plain', '1', 'model.onnx'), logisticToOnnx(WEAK, { featureNames: FEATURES, name: 'plain' }));

  hook = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c));
    req.on('end', () => {
      notifications.push(JSON.parse(body));
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  configPath = join(repo, 'scoreline.yaml');
  await writeFile(
    configPath,
    stringify({
      modelRepository: '.',
      monitoring: {
        evaluateSeconds: 0.2,
        alerts: {
          rules: [
            {
              name: 'score_drift',
              metric: 'score_psi',
              comparison: '>',
              threshold: 0.25,
              severity: 'critical',
              forSeconds: 0,
              cooldownSeconds: 3600,
            },
          ],
          webhooks: [{ url: `http://127.0.0.1:${(hook.address() as { port: number }).port}/`, retries: 1, timeoutMs: 2000 }],
        },
      },
      deploy: { analysisTickMs: 100, analysis: { minRequests: 20, maxScorePsi: 100, maxP99Factor: 5, p99SlackMs: 100 } },
    }),
  );
  server = await start();
});

after(async () => {
  await server?.stop();
  await new Promise<void>((r) => hook.close(() => r()));
});

/** Whether a process runs (a zombie waiting for a parent to reap it does not). */
function running(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]![0] !== 'Z';
  } catch {
    return false;
  }
}

const TERMINAL = ['succeeded', 'rejected', 'failed', 'rolled_back'];

async function waitJob(id: string, until: (j: any) => boolean, ms = 60_000): Promise<any> {
  let last: any;
  return waitFor(
    async () => {
      const r = await admin('GET', `/admin/jobs/${id}`);
      assert.equal(r.status, 200, r.text);
      last = r.body;
      return until(r.body) ? r.body : undefined;
    },
    { timeoutMs: ms, intervalMs: 100, message: () => `job ${id} (still ${last?.state}: ${JSON.stringify(last?.log.slice(-5))})` },
  );
}

const infer = (model: string, x: number[]) =>
  request(`${server.url}/v2/models/${model}/infer`, { json: { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 4], data: x }] } });

/** Sends traffic to a model until the job ends; returns the statuses seen. */
async function trafficUntilDone(model: string, jobId: string, x: () => number[]): Promise<{ job: any; statuses: number[] }> {
  const statuses: number[] = [];
  let job: any;
  await waitFor(
    async () => {
      const rs = await Promise.all(Array.from({ length: 10 }, () => infer(model, x())));
      for (const r of rs) statuses.push(r.status);
      job = (await admin('GET', `/admin/jobs/${jobId}`)).body;
      return TERMINAL.includes(job.state);
    },
    { timeoutMs: 60_000, message: () => `job ${jobId} to finish under traffic (still ${job?.state})` },
  );
  return { job, statuses };
}

const normal = rng(5);
const ordinary = () => FEATURES.map(() => Math.round(normal.normal() * 1000) / 1000);

test('bad retraining requests are refused with the right status and change nothing', async () => {
  assert.equal((await request(`${server.url}/admin/retrain/risk`, { method: 'POST', json: {} })).status, 401);
  assert.equal((await admin('POST', '/admin/retrain/nope', {})).status, 404);
  const plain = await admin('POST', '/admin/retrain/plain', {});
  assert.equal(plain.status, 422);
  assert.match(plain.body.error, /no retraining configuration/);
  assert.equal((await admin('POST', '/admin/retrain/risk', { reason: 42 })).status, 400);
  assert.equal((await admin('POST', '/admin/incidents', { model: 'risk' })).status, 400);
  assert.equal((await admin('POST', '/admin/incidents', { model: 'risk', reason: 'x', severity: 'meh' })).status, 400);
  assert.equal((await admin('GET', '/admin/jobs?state=bogus')).status, 400);
  assert.equal((await admin('GET', '/admin/jobs/job-nope')).status, 404);
  assert.equal((await admin('GET', '/admin/jobs?model=risk')).body.jobs.length, 0);
});

test('a drift alert triggers a job: out-of-time validation, challenger registered with lineage, canary promoted, champion alias', async () => {
  // Traffic whose noise feature (the only one the weak champion looks at) has moved: the score drifts.
  // 600 requests: the score PSI speaks from 429 values on (300 effective against the 1000-row reference).
  const shifted = rng(9);
  for (let i = 0; i < 30; i++) await Promise.all(Array.from({ length: 20 }, () => infer('risk', [0, 0, 0, 3 + shifted.normal()])));
  const job = await waitFor(async () => (await admin('GET', '/admin/jobs?model=risk')).body.jobs[0], {
    timeoutMs: 20_000,
    intervalMs: 100,
    message: 'a job triggered by the drift alert',
  });
  assert.equal(job.trigger.kind, 'drift');
  assert.equal(job.trigger.evidence.alert.rule, 'score_drift');
  assert.ok(job.trigger.evidence.alert.value > 0.25);
  const deploying = await waitJob(job.id, (j) => j.state === 'deploying' || TERMINAL.includes(j.state));
  assert.equal(deploying.state, 'deploying', JSON.stringify(deploying.decision));
  const { job: done, statuses } = await trafficUntilDone('risk', job.id, ordinary);
  assert.equal(done.state, 'succeeded', JSON.stringify(done.decision));
  assert.ok(
    statuses.every((s) => s === 200),
    'no request failed during the rollout',
  );

  // the data and split: both files, the latest 30% by date held out
  assert.equal(done.data.files.length, 2);
  assert.equal(done.data.train.rows + done.data.validation.rows, 3000);
  assert.ok(done.data.validation.rows >= 900 && done.data.validation.rows <= 960, `validation ${done.data.validation.rows}`);
  assert.ok(done.data.train.to <= done.data.validation.from, 'validation rows are all later than training rows');
  // the gate: the challenger learned the signal, the weak champion did not
  assert.ok(done.validation.challenger.auc > 0.8, `challenger AUC ${done.validation.challenger.auc}`);
  assert.ok(done.validation.champion.auc < 0.6, `champion AUC ${done.validation.champion.auc}`);
  assert.ok(done.validation.delong.p < 1e-6);
  assert.deepEqual(
    done.steps.map((s: any) => [s.name, s.ok]),
    [
      ['data', true],
      ['train', true],
      ['validate', true],
      ['canary', true],
    ],
  );
  assert.equal(done.championVersion, 1);
  assert.equal(done.challengerVersion, 2);

  const model = (await admin('GET', '/admin/models/risk')).body;
  assert.equal(model.model.aliases.champion, 2);
  assert.equal(model.model.aliases.challenger, 2);
  const v2 = model.versions.find((v: any) => v.version === 2);
  assert.equal(v2.lineage.trainingJobId, job.id);
  assert.equal(v2.lineage.trigger, 'drift');
  assert.equal(v2.lineage.champion, 1);
  assert.equal(v2.metrics.validation_auc, Math.round(done.validation.challenger.auc * 10000) / 10000);
  assert.deepEqual(model.deployment.strategy, { strategy: 'direct', version: 2 });
  assert.ok(v2.reference !== null, 'the new version got a drift reference (its validation rows)');
  // requests are now answered by v2
  assert.equal((await infer('risk', [1, 0, 0, 0])).body.model_version, '2');
  // v1 no longer serves: its drift alert resolves instead of firing on forever
  let alerts: any;
  await waitFor(
    async () => {
      alerts = (await admin('GET', '/admin/alerts?model=risk')).body;
      return !alerts.firing.some((a: any) => a.labels.version === '1');
    },
    { timeoutMs: 5000, intervalMs: 100, message: () => `v1's drift alert to resolve: ${JSON.stringify(alerts.firing)}` },
  );
  assert.ok(
    alerts.history.some((a: any) => a.state === 'resolved' && /no longer serves traffic/.test(a.message)),
    JSON.stringify(alerts.history.slice(0, 3)),
  );
  const events = notifications.filter((n) => n.job?.id === job.id).map((n) => n.event);
  assert.deepEqual(events, ['retraining.started', 'retraining.succeeded']);
});

test('a challenger no better than the champion is rejected: nothing registered, nothing deployed', async () => {
  const before = (await admin('GET', '/admin/models/risk')).body;
  const r = await admin('POST', '/admin/retrain/risk', { reason: 'try again with the same data' });
  assert.equal(r.status, 202, r.text);
  assert.equal(r.body.outcome, 'job');
  const done = await waitJob(r.body.job.id, (j) => TERMINAL.includes(j.state));
  assert.equal(done.state, 'rejected');
  assert.equal(done.trigger.kind, 'manual');
  assert.equal(done.championVersion, 2);
  assert.ok(
    done.decision.reasons.some((x: string) => x.startsWith('FAIL: AUC')),
    done.decision.reasons.join('\n'),
  );
  const afterwards = (await admin('GET', '/admin/models/risk')).body;
  assert.equal(afterwards.versions.length, before.versions.length);
  assert.deepEqual(afterwards.deployment.strategy, before.deployment.strategy);
  assert.ok(notifications.some((n) => n.job?.id === done.id && n.event === 'retraining.rejected' && /REJECTED/.test(n.text)));
});

test('an incident triggers a job and is recorded', async () => {
  const r = await admin('POST', '/admin/incidents', { model: 'risk', reason: 'regulator asked for a refresh', severity: 'warning' });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.body.outcome, 'job');
  assert.equal(r.body.job.trigger.kind, 'incident');
  const done = await waitJob(r.body.job.id, (j) => TERMINAL.includes(j.state));
  assert.equal(done.state, 'rejected');
  const list = (await admin('GET', '/admin/incidents?model=risk')).body.incidents;
  assert.equal(list[0].reason, 'regulator asked for a refresh');
  assert.equal(list[0].jobId, r.body.job.id);
});

test('an external trainer (the documented contract) whose canary fails on production traffic is rolled back', async () => {
  const r = await admin('POST', '/admin/retrain/guarded', {});
  assert.equal(r.status, 202, r.text);
  const id = r.body.job.id;
  const deploying = await waitJob(id, (j) => j.state === 'deploying' || TERMINAL.includes(j.state));
  assert.equal(deploying.state, 'deploying', JSON.stringify(deploying.decision ?? deploying.error));
  assert.ok(
    deploying.log.some((l: any) => /\[trainer\] training on \d+ rows, 4 features/.test(l.msg)),
    'the trainer wrote to the job log',
  );
  // production traffic has x0 values the validation rows never had: the canary fails on them
  const { job, statuses } = await trafficUntilDone('guarded', id, () => [5000, 0, 0, 0]);
  assert.equal(job.state, 'rolled_back', JSON.stringify(job.decision));
  assert.ok(
    statuses.some((s) => s === 500),
    'the canary failed some requests',
  );
  assert.match(job.decision.reasons.at(-1), /canary rolled back: canary analysis failed: error_rate/);
  assert.ok(
    job.decision.reasons.some((x: string) => x.startsWith('pass: AUC')),
    "the gate's reasons stay on record",
  );
  const model = (await admin('GET', '/admin/models/guarded')).body;
  assert.deepEqual(model.deployment.strategy, { strategy: 'direct', version: 1 });
  assert.equal(model.model.aliases.champion, undefined);
  assert.equal((await infer('guarded', [5000, 0, 0, 0])).status, 200, 'the old champion serves again');
  assert.ok(notifications.some((n) => n.job?.id === id && n.event === 'retraining.rolled_back'));
});

test('a schedule trigger: one job at a time, then the cooldown holds further triggers back', async () => {
  const first = await waitFor(async () => (await admin('GET', '/admin/jobs?model=sched')).body.jobs[0], {
    timeoutMs: 20_000,
    intervalMs: 100,
    message: 'the every-second schedule to start a job',
  });
  const done = await waitJob(first.id, (j) => TERMINAL.includes(j.state));
  assert.equal(done.trigger.kind, 'schedule');
  assert.equal(done.state, 'rejected');
  // The schedule keeps ticking every second: the next ticks after the job must be held back by the cooldown.
  let status: any;
  await waitFor(
    async () => {
      status = (await admin('GET', '/admin/retrain/sched')).body;
      return status.triggers.some((t: any) => t.outcome === 'skipped-cooldown');
    },
    {
      timeoutMs: 10_000,
      intervalMs: 100,
      message: () => `a schedule tick skipped for the cooldown: ${JSON.stringify(status.triggers.slice(0, 5))}`,
    },
  );
  assert.equal((await admin('GET', '/admin/jobs?model=sched')).body.jobs.length, 1, 'exactly one job for all those ticks');
  assert.ok(Date.parse(status.cooldownUntil) > Date.now());
});

test('a second manual trigger while a job runs is a conflict; a job killed with the server is failed after the restart', async () => {
  const r = await admin('POST', '/admin/retrain/slow', {});
  assert.equal(r.status, 202);
  const id = r.body.job.id;
  await waitJob(id, (j) => j.steps.some((s: any) => s.name === 'train'));
  const again = await admin('POST', '/admin/retrain/slow', {});
  assert.equal(again.status, 409);
  // the CLI lists it
  const cli = spawnSync(process.execPath, [CLI, 'jobs', '--model', 'slow', '--url', server.url, '--token', TOKEN], { encoding: 'utf8' });
  assert.equal(cli.status, 0, cli.stderr);
  assert.match(cli.stdout, new RegExp(`${id}\\s+slow\\s+running`));

  await server.stop('SIGKILL');
  server = await start();
  const job = (await admin('GET', `/admin/jobs/${id}`)).body;
  assert.equal(job.state, 'failed');
  assert.match(job.error, /interrupted by a restart while running/);
  // the orphaned trainer process was stopped, not left running
  assert.ok(
    job.log.some((l: any) => /stopped the orphaned trainer process/.test(l.msg)),
    JSON.stringify(job.log.slice(-5)),
  );
  assert.equal(running(job.trainerPid), false, `trainer ${job.trainerPid} still runs`);
  // and the earlier outcomes survived the restart
  const risk = (await admin('GET', '/admin/models/risk')).body;
  assert.equal(risk.model.aliases.champion, 2);
  assert.deepEqual(risk.deployment.strategy, { strategy: 'direct', version: 2 });
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, /^scoreline_retraining_jobs\{model="risk",state="succeeded"\} 1$/m);
  assert.match(metrics, /^scoreline_retraining_jobs\{model="guarded",state="rolled_back"\} 1$/m);
  assert.match(metrics, /^scoreline_retraining_jobs\{model="slow",state="failed"\} 1$/m);
  const cliJob = spawnSync(process.execPath, [CLI, 'jobs', id, '--url', server.url, '--token', TOKEN], { encoding: 'utf8' });
  assert.equal(cliJob.status, 0, cliJob.stderr);
  assert.match(cliJob.stdout, /decision: failed/);
});
