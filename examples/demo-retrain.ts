// `npm run demo:retrain`: the whole retraining loop on the bundled demo credit model, against a
// real scoreline server in a temporary directory, printing every decision as it happens.
//
//   1. The world changes: applicants drift (lower incomes, bigger loans) and the drivers of default
//      move (card activity and existing loans weigh more). Traffic comes in, outcomes follow as
//      delayed labels. The score drifts, the drift alert fires, and retraining starts by itself:
//      data (the old training file + the labelled predictions), out-of-time split, the built-in
//      logistic regression, validation against the champion, canary, promotion.
//   2. Someone asks for another retrain with nothing new to learn from: the challenger is no
//      better than the champion, so the gate rejects it. Nothing is registered or deployed.
//   3. The team switches to a new external trainer and restarts the server; the world moves again.
//      The new trainer's challenger wins on the validation rows and goes out as a canary -- where
//      live traffic includes a new jumbo-loan product it cannot score. The canary fails and is
//      rolled back; the champion never stopped serving.
//
// Nothing here is mocked: the alerts, jobs, canary analysis and notifications are the server's.

import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { CREDIT_COLUMNS, featureVector, generateCreditData, toCsv, type CreditApplication } from './credit-data.js';
import { DEMO_SEED, demoModelYaml } from './build-demo-model.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODEL = 'credit-default';
const TOKEN = 'demo-retrain-token';
const TERMINAL = new Set(['succeeded', 'rejected', 'failed', 'rolled_back']);

/** What the demo reads of the admin API's answers about jobs and models. */
interface Job {
  id: string;
  state: string;
  trigger: { kind: string; reason: string };
  challengerVersion?: number;
  log: { at: string; msg: string }[];
  validation?: { rows: number; challenger: { auc: number | null }; champion: { auc: number | null }; delong: { p: number } | null };
  decision?: { reasons: string[] };
}
interface ModelView {
  model: { aliases: Record<string, number> };
  versions: { version: number }[];
  deployment: { strategy: unknown };
}

const work = mkdtempSync(join(tmpdir(), 'scoreline-demo-retrain-'));
const modelDir = join(work, 'models', MODEL);
const say = (s: string) => console.log(s);
const step = (s: string) => console.log(`\n== ${s}`);

function writeModelYaml(trainer: Record<string, unknown>): void {
  const retraining = {
    data: '../../training/applications-*.csv',
    useFeedback: true,
    timeColumn: 'application_date',
    label: 'default',
    oot: { fraction: 0.3 },
    trainer,
    gate: { metric: 'auc', minDelta: 0.005, ksTolerance: 0.02 },
    triggers: { drift: { psi: 0.25 }, performance: { aucDrop: 0.05 }, cooldownSeconds: 3600, debounceSeconds: 8 },
    deploy: { strategy: 'canary', steps: [20, 50, 100], stepSeconds: 2 },
  };
  writeFileSync(join(modelDir, 'model.yaml'), `${demoModelYaml()}${stringify({ retraining })}`);
}

let server: ChildProcess | null = null;
let base = '';

async function startServer(): Promise<void> {
  const proc = spawn(
    process.execPath,
    [
      join(ROOT, 'bin/scoreline.js'),
      'serve',
      '--config',
      join(work, 'scoreline.yaml'),
      '--port',
      '0',
      '--grpc-port',
      '0',
      '--host',
      '127.0.0.1',
    ],
    {
      cwd: ROOT,
      env: { ...process.env, SCORELINE_ADMIN_TOKEN: TOKEN },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  server = proc;
  base = await new Promise<string>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      try {
        const r = JSON.parse(line) as { msg?: string; port?: number; level?: number };
        if (r.msg?.startsWith('scoreline listening')) resolve(`http://127.0.0.1:${r.port}`);
        else if ((r.level ?? 0) >= 50 && !/FIRING|RETRAINING/.test(r.msg ?? '')) console.error(`  [server] ${r.msg}`);
      } catch {
        // not a log line
      }
    });
  });
  say(`server up at ${base} (data dir ${join(work, 'data')})`);
}

async function stopServer(): Promise<void> {
  const proc = server;
  if (proc === null) return;
  server = null;
  await new Promise<void>((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill('SIGTERM');
  });
}

async function api<T>(method: string, path: string, json?: unknown): Promise<T> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(json !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
  });
  const body: unknown = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${(body as { error?: string }).error}`);
  return body as T;
}

const request = (id: string, r: CreditApplication) => ({
  id,
  inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 10], data: featureVector(r) }],
});

/** Scores rows (32 at a time) with ids; returns the HTTP statuses. */
async function score(rows: readonly CreditApplication[], prefix: string): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < rows.length; i += 32) {
    const chunk = rows.slice(i, i + 32);
    const rs = await Promise.all(
      chunk.map((r, k) =>
        fetch(`${base}/v2/models/${MODEL}/infer`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(request(`${prefix}-${i + k}`, r)),
        }),
      ),
    );
    for (const r of rs) {
      statuses.push(r.status);
      await r.arrayBuffer();
    }
  }
  return statuses;
}

/** Sends the outcomes of scored rows as delayed labels. */
async function feedback(rows: readonly CreditApplication[], prefix: string): Promise<number> {
  let joined = 0;
  for (let i = 0; i < rows.length; i += 1000) {
    const items = rows.slice(i, i + 1000).map((r, k) => ({ request_id: `${prefix}-${i + k}`, label: r.default }));
    const res = await fetch(`${base}/v1/feedback`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(items),
    });
    joined += ((await res.json()) as { joined: number }).joined;
  }
  return joined;
}

/** Follows a job to its end, printing its state changes and log; keeps traffic flowing meanwhile. */
async function follow(id: string, traffic: () => Promise<unknown>): Promise<Job> {
  let seen = 0;
  let last = '';
  for (;;) {
    const job = await api<Job>('GET', `/admin/jobs/${id}`);
    for (const l of job.log.slice(seen)) say(`  ${l.at.slice(11, 19)}  ${l.msg}`);
    seen = job.log.length;
    if (job.state !== last) last = job.state;
    if (TERMINAL.has(job.state)) return job;
    await (job.state === 'deploying' ? traffic() : new Promise((r) => setTimeout(r, 250)));
  }
}

function decision(job: Job): void {
  say(`\n  >> job ${job.id}: ${job.state.toUpperCase()}`);
  if (job.validation) {
    const v = job.validation;
    say(
      `     validation on ${v.rows} latest rows: challenger AUC ${v.challenger.auc?.toFixed(4)}, champion AUC ${v.champion.auc?.toFixed(4)}, DeLong p = ${v.delong?.p.toPrecision(3)}`,
    );
  }
  for (const r of job.decision?.reasons ?? []) say(`     ${r}`);
}

async function main(): Promise<void> {
  // The demo model as bundled, its reference data, and the training file it was built from.
  mkdirSync(join(modelDir, '1'), { recursive: true });
  copyFileSync(join(ROOT, 'examples/models', MODEL, '1', 'model.onnx'), join(modelDir, '1', 'model.onnx'));
  copyFileSync(join(ROOT, 'examples/models', MODEL, 'reference.csv'), join(modelDir, 'reference.csv'));
  mkdirSync(join(work, 'training'), { recursive: true });
  writeFileSync(
    join(work, 'training', 'applications-2024-2025.csv'),
    toCsv(generateCreditData({ n: 8000, seed: DEMO_SEED }), CREDIT_COLUMNS),
  );
  writeModelYaml({ builtin: 'logistic-regression', params: { l2: 1 } });

  // Notifications (the alert channels) arrive here and are printed.
  const hook = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c));
    req.on('end', () => {
      const n = JSON.parse(body) as { text: string };
      say(`  [webhook] ${n.text}`);
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  writeFileSync(
    join(work, 'scoreline.yaml'),
    stringify({
      modelRepository: 'models',
      dataDir: 'data',
      // info: the demo waits for the "listening" line; only errors are printed
      log: { level: 'info' },
      monitoring: {
        evaluateSeconds: 1,
        alerts: {
          rules: [
            {
              name: 'score_drift',
              metric: 'score_psi',
              comparison: '>',
              threshold: 0.25,
              severity: 'critical',
              forSeconds: 2,
              cooldownSeconds: 3600,
              description: 'significant drift of the score distribution',
            },
          ],
          webhooks: [{ url: `http://127.0.0.1:${(hook.address() as { port: number }).port}/`, retries: 2 }],
        },
      },
      deploy: { analysisTickMs: 250, analysis: { minRequests: 100 } },
    }),
  );
  await startServer();

  try {
    step('1. The world changes: drifted applicants, new drivers of default');
    const world1 = generateCreditData({ n: 12_000, seed: 101, drift: 0.6, concept: 1, start: '2026-01-01', end: '2026-01-31' });
    for (let i = 0; i < world1.length; i += 3000) {
      const part = world1.slice(i, i + 3000);
      await score(part, `w1-${i}`);
      await new Promise((r) => setTimeout(r, 400)); // the prediction log writes every 200 ms
      const joined = await feedback(part, `w1-${i}`);
      say(`  scored ${part.length} applications; their outcomes arrived (${joined} labels joined)`);
    }
    say('  waiting for the drift alert and the automatic retraining job ...');
    let job: Job | undefined;
    for (let t = 0; job === undefined; t++) {
      job = (await api<{ jobs: Job[] }>('GET', `/admin/jobs?model=${MODEL}`)).jobs[0];
      if (t > 240) throw new Error('no retraining job was triggered');
      if (job === undefined) await new Promise((r) => setTimeout(r, 250));
    }
    say(`  job ${job.id} triggered by ${job.trigger.kind}: ${job.trigger.reason}`);
    const more = generateCreditData({ n: 64, seed: 202, drift: 0.6, concept: 1, start: '2026-02-01', end: '2026-02-28' });
    let n = 0;
    decision(await follow(job.id, () => score(more, `canary1-${n++}`)));
    const m1 = await api<ModelView>('GET', `/admin/models/${MODEL}`);
    say(`  aliases: ${JSON.stringify(m1.model.aliases)}; serving: ${JSON.stringify(m1.deployment.strategy)}`);

    step('2. Another retrain with nothing new to learn from');
    const r2 = await api<{ job: Job }>('POST', `/admin/retrain/${MODEL}`, { reason: 'weekly review asked for a refresh' });
    decision(await follow(r2.job.id, async () => undefined));
    const m2 = await api<ModelView>('GET', `/admin/models/${MODEL}`);
    say(
      `  versions registered: ${m2.versions.map((v) => v.version).join(', ')} (unchanged); serving: ${JSON.stringify(m2.deployment.strategy)}`,
    );

    step('3. A new external trainer, a restart, and a world that moved again');
    writeModelYaml({ command: [process.execPath, join(ROOT, 'dist/examples/retrain/bucketed-trainer.js')], timeoutSeconds: 300 });
    await stopServer();
    say('  model.yaml now runs dist/examples/retrain/bucketed-trainer.js; server restarted');
    await startServer();
    const world2 = generateCreditData({ n: 12_000, seed: 303, drift: 0.6, concept: 2, start: '2026-03-01', end: '2026-03-31' });
    for (let i = 0; i < world2.length; i += 4000) {
      const part = world2.slice(i, i + 4000);
      await score(part, `w2-${i}`);
      await new Promise((r) => setTimeout(r, 400));
      await feedback(part, `w2-${i}`);
    }
    say(`  scored ${world2.length} more applications and received their outcomes`);
    const r3 = await api<{ job: Job }>('POST', `/admin/retrain/${MODEL}`, { reason: 'first run of the bucketed trainer' });
    // live traffic during the canary: mostly ordinary loans, and the new jumbo loans (80,000)
    const live = generateCreditData({ n: 64, seed: 404, drift: 0.6, concept: 2, start: '2026-04-01', end: '2026-04-30' }).map((r, i) =>
      i % 8 === 0 ? { ...r, amount: 80_000 } : r,
    );
    let k = 0;
    const statuses: number[] = [];
    const job3 = await follow(r3.job.id, async () => statuses.push(...(await score(live, `canary3-${k++}`))));
    decision(job3);
    const failed = statuses.filter((s) => s !== 200).length;
    say(`  during the canary ${failed} of ${statuses.length} requests failed (all on the canary's share of jumbo loans)`);
    const m3 = await api<ModelView>('GET', `/admin/models/${MODEL}`);
    say(`  aliases: ${JSON.stringify(m3.model.aliases)}; serving: ${JSON.stringify(m3.deployment.strategy)}`);
    const after = await score(live, 'after');
    say(`  after the rollback: ${after.filter((s) => s === 200).length} of ${after.length} requests answered (jumbo loans included)`);

    step('Job history');
    for (const j of (await api<{ jobs: Job[] }>('GET', `/admin/jobs?model=${MODEL}`)).jobs.reverse()) {
      say(
        `  ${j.id}  ${j.state.padEnd(11)} trigger ${j.trigger.kind.padEnd(8)} ${j.challengerVersion !== undefined ? `challenger v${j.challengerVersion}` : 'nothing registered'}`,
      );
    }
    say(
      `\n(state kept in ${work}: \`scoreline serve --config ${join(work, 'scoreline.yaml')}\` brings it back, and \`scoreline jobs\` lists this history)`,
    );
  } finally {
    await stopServer();
    hook.close();
  }
}

main().catch((e: Error) => {
  console.error(`demo failed: ${e.message}`);
  void stopServer().finally(() => process.exit(1));
});
