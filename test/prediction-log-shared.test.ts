// The prediction log shared through PostgreSQL, with real SQLite files and a real PostgreSQL: two
// logs (two replicas' data dirs) on one database join labels whichever of them logged the
// prediction and agree on performance; PostgreSQL stopping neither slows nor loses logging (rows
// wait on disk, failures are counted, feedback answers STORE_UNAVAILABLE) and every row arrives once
// it is back; a process killed (SIGKILL) while it ships leaves every committed row in PostgreSQL
// exactly once after it restarts on the same data dir.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import { exportCommand } from '../src/commands/export.js';
import { exportPredictions } from '../src/export/index.js';
import { PredictionLog } from '../src/monitoring/index.js';
import { classificationMetrics, type ClassificationMetrics } from '../src/monitoring/metrics.js';
import { Database as Postgres } from '../src/store/postgres/database.js';
import { migrate } from '../src/store/postgres/migrations/index.js';
import { postgresSkip, startPostgres, type TestPostgres } from './fixtures/postgres.js';
import { waitFor } from './fixtures/wait.js';
import { tempDir } from './e2e/server.js';

const skip = postgresSkip();
let pg: TestPostgres;

before(async () => {
  if (skip) return;
  pg = await startPostgres();
  const db = new Postgres(pg.url);
  await migrate(db);
  await db.close();
});
after(async () => {
  await pg?.remove();
});

const open = async (name: string) =>
  new PredictionLog({
    dataDir: await tempDir(`scoreline-shared-${name}-`),
    sampleRate: 1,
    retentionDays: 30,
    flushMs: 10,
    shared: { url: pg.url },
  });

/** Waits until everything `log` logged is in PostgreSQL (its shipped count reaching `shipped`). */
async function shipped(log: PredictionLog, total: number): Promise<void> {
  log.flush();
  await waitFor(
    () => {
      const s = log.status().shipping!;
      return s.state === 'ok' && s.backlog_rows === 0 && s.shipped === total;
    },
    { timeoutMs: 20_000, message: () => `the log to ship ${total} predictions: ${JSON.stringify(log.status())}` },
  );
}

const rowsOf = async (model: string) =>
  Number((await pg.query<{ n: string }>('SELECT count(*) AS n FROM predictions WHERE model = $1', [model]))[0]!.n);

test("export reads the shared log: every replica's predictions with the labels sent to any replica, across cursor fetches; --local reads one file", {
  skip,
}, async () => {
  const aDir = await tempDir('scoreline-shared-export-a-');
  const a = new PredictionLog({ dataDir: aDir, sampleRate: 1, retentionDays: 30, flushMs: 10, shared: { url: pg.url } });
  const b = await open('export-b');
  const dir = await tempDir('scoreline-shared-export-');
  try {
    const t0 = Date.UTC(2026, 10, 30, 12);
    const row = new Float32Array([0, 0.5]);
    // 70,500 predictions, more than one cursor fetch (65,536): A logs v1 rows, B v1 rows and v2 canary rows, some without inputs.
    let na = 0;
    let nb = 0;
    for (let i = 0; i < 70_000; i++) {
      row[0] = i;
      const log = i % 7 < 4 ? a : b;
      log.append(`e-${i}`, 'exp', 1, 'stable', t0 + i, (i % 100) / 100, i % 1000 === 0 ? null : row, 0, 2, 'classification');
      if (log === a) na++;
      else nb++;
    }
    for (let i = 0; i < 500; i++) {
      row[0] = -i;
      b.append(`c-${i}`, 'exp', 2, 'canary', t0 + 2 * i, 0.25, row, 0, 2, 'classification');
    }
    a.append('other-1', 'other', 1, 'stable', t0, 0.5, row, 0, 2, 'classification');
    await shipped(a, na + 1);
    await shipped(b, nb + 500);
    // Labels through A for rows B logged, and through B for A's.
    const labels = [1, 4, 5, 6, 69_999].map((i) => ({ requestId: `e-${i}`, label: i % 2 }));
    assert.equal((await a.feedback(labels.filter((_, k) => k % 2 === 0))).joined, 3);
    assert.equal((await b.feedback([...labels.filter((_, k) => k % 2 === 1), { requestId: 'c-7', label: 1 }])).joined, 3);

    const names = (v: number) => (v === 1 || v === 2 ? ['x0', 'x1'] : null);
    const out = join(dir, 'all.jsonl');
    const s = await exportPredictions({
      dataDir: dir,
      shared: { url: pg.url },
      model: 'exp',
      from: 0,
      to: Date.now(),
      format: 'jsonl',
      output: out,
      featureNames: names,
    });
    assert.deepEqual([s.rows, s.labelled, s.versions], [70_500, 6, [1, 2]]);
    const lines = readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 70_500);
    const byId = new Map(lines.map((l) => [l.request_id as string, l]));
    assert.equal(byId.size, 70_500, 'every row once');
    for (const i of [0, 1, 4, 999, 1000, 65_535, 65_536, 69_999]) {
      const l = byId.get(`e-${i}`)!;
      assert.equal(l.ts, new Date(t0 + i).toISOString());
      assert.equal(l.version, 1);
      assert.equal(l.variant, 'stable');
      assert.equal(l.score, (i % 100) / 100);
      assert.deepEqual([l.x0, l.x1], i % 1000 === 0 ? [null, null] : [i, 0.5], `inputs of e-${i}`);
      const labelled = labels.find((x) => x.requestId === `e-${i}`);
      assert.equal(l.label, labelled === undefined ? null : labelled.label, `label of e-${i}`);
    }
    assert.deepEqual(
      [byId.get('c-7')!.version, byId.get('c-7')!.variant, byId.get('c-7')!.label, byId.get('c-7')!.x0],
      [2, 'canary', 1, -7],
    );
    // Ordered by version, then variant, then time.
    assert.deepEqual(
      lines.slice(0, 3).map((l) => l.request_id),
      ['e-0', 'e-1', 'e-2'],
    );
    assert.equal(lines[70_000]!.request_id, 'c-0');

    // A window and a version filter; a model the shared log has not.
    const windowed = await exportPredictions({
      dataDir: dir,
      shared: { url: pg.url },
      model: 'exp',
      version: 2,
      from: t0 + 100,
      to: t0 + 200,
      format: 'csv',
      output: join(dir, 'w.csv'),
      featureNames: names,
    });
    assert.deepEqual([windowed.rows, windowed.versions], [50, [2]]);
    await assert.rejects(
      exportPredictions({
        dataDir: dir,
        shared: { url: pg.url },
        model: 'nope',
        from: 0,
        to: Date.now(),
        format: 'csv',
        output: join(dir, 'n.csv'),
        featureNames: names,
      }),
      /the shared prediction log has no predictions of model 'nope' \(it has: exp, other\)/,
    );

    // The command with the store's URL reads the shared log; with --local, the data dir's file.
    const said: string[] = [];
    const { log, error } = console;
    console.log = (line: string) => void said.push(line);
    console.error = () => undefined; // the unnamed-inputs warnings
    try {
      const cli = (extra: string[]) =>
        exportCommand.run(['predictions', '--model', 'exp', '--store-url', pg.url, '--data-dir', aDir, '--quiet', ...extra]);
      assert.equal(await cli(['--output', join(dir, 'cli.csv')]), 0);
      assert.equal(await cli(['--output', join(dir, 'cli-local.csv'), '--local']), 0);
    } finally {
      console.log = log;
      console.error = error;
    }
    assert.match(said[0]!, /^exported 70,500 predictions of exp from the shared log \(PostgreSQL at .*\) \(versions 1, 2; 6 labelled;/);
    assert.match(said[1]!, new RegExp(`^exported ${na.toLocaleString('en-US')} predictions of exp \\(versions 1; 0 labelled;`));
    assert.equal(readFileSync(join(dir, 'cli.csv'), 'utf8').trim().split('\n').length, 70_501);

    // One replica's own file holds only its rows, and no labels (they are in PostgreSQL).
    const local = await exportPredictions({
      dataDir: aDir,
      model: 'exp',
      from: 0,
      to: Date.now(),
      format: 'jsonl',
      output: join(dir, 'a.jsonl'),
      featureNames: names,
    });
    assert.deepEqual([local.rows, local.labelled], [na, 0]);
  } finally {
    await a.close();
    await b.close();
  }
});

test('a label sent to either replica joins a prediction logged on the other; both report the same performance', { skip }, async () => {
  const a = await open('a');
  const b = await open('b');
  try {
    const row = new Float32Array([1, 2, 3]);
    const ts = Date.now();
    const scores: number[] = [];
    for (let i = 0; i < 400; i++) {
      const score = ((i * 37) % 100) / 100;
      scores.push(score);
      row[0] = i;
      // Half on each replica, as a round robin would send them.
      (i % 2 === 0 ? a : b).append(`req-${i}`, 'credit', 1, 'primary', ts + i, score, row, 0, 3, 'classification');
    }
    // A regression model: any finite label goes, but not NaN.
    a.append('reg-1', 'income', 2, 'primary', ts, 1234.5, null, 0, 0, 'regression');
    await shipped(a, 201);
    await shipped(b, 200);

    const labels = scores.map((s, i) => (s + ((i * 13) % 7) / 10 > 0.8 ? 1 : 0));
    // Every label through B, the ones of A's predictions first: B joins what A shipped.
    const items = labels.map((label, i) => ({ requestId: `req-${i}`, label }));
    const r = await b.feedback([...items, { requestId: 'never-logged', label: 1 }]);
    assert.equal(r.joined, 400);
    assert.deepEqual(r.unknown, ['never-logged']);
    assert.deepEqual(r.rejected, []);

    const perfA = await a.performance('credit', 1, 0, 'classification', 0.5);
    const perfB = await b.performance('credit', 1, 0, 'classification', 0.5);
    const expected = classificationMetrics(Float64Array.from(scores), Float64Array.from(labels), 0.5);
    assert.equal(perfA.n, 400);
    assert.deepEqual(perfA, perfB);
    const got = perfA.metrics as ClassificationMetrics;
    assert.ok(Math.abs(got.auc! - expected.auc!) < 1e-12, `${got.auc} vs ${expected.auc}`);
    assert.ok(Math.abs(got.ks! - expected.ks!) < 1e-12, `${got.ks} vs ${expected.ks}`);
    assert.equal(got.positives, expected.positives);
    assert.equal(got.labelled, 400);

    // Retraining data on A holds B's rows too, with their inputs.
    const training = await a.training('credit');
    assert.equal(training.length, 400);
    assert.deepEqual(training[1]!.features, [1, 2, 3]);
    // Every row's own inputs (row[0] is its index), whichever replica shipped it.
    assert.deepEqual(
      training.map((x) => x.features[0]!).sort((p, q) => p - q),
      Array.from({ length: 400 }, (_, i) => i),
    );
    assert.equal(training[1]!.label, labels[1]);
    const labelled = await b.labelled('credit', 1, 0);
    assert.equal(labelled.scores.length, 400);

    // A label the task cannot have: rejected with the reason, nothing written.
    const before = await pg.query('SELECT label FROM labels WHERE request_id = $1', ['req-3']);
    const bad = await a.feedback([
      { requestId: 'req-3', label: 7 },
      { requestId: 'reg-1', label: Number.NaN },
    ]);
    assert.equal(bad.joined, 0);
    assert.equal(bad.rejected.length, 2);
    assert.match(bad.rejected[0]!.reason, /label 7 is not 0\/1 .*model 'credit' version 1 \(classification\)/);
    assert.match(bad.rejected[1]!.reason, /label NaN is not a finite number/);
    assert.deepEqual(await pg.query('SELECT label FROM labels WHERE request_id = $1', ['req-3']), before);
    const ok = await a.feedback([{ requestId: 'reg-1', label: 980.25 }]);
    assert.equal(ok.joined, 1);
    assert.deepEqual(await pg.query('SELECT label, version FROM labels WHERE request_id = $1', ['reg-1']), [{ label: 980.25, version: 2 }]);

    // A replica's own predictions join at once: feedback ships what is committed first.
    b.append('fresh-1', 'credit', 1, 'primary', Date.now(), 0.9, row, 0, 3, 'classification');
    assert.equal((await b.feedback([{ requestId: 'fresh-1', label: 1 }])).joined, 1);
    assert.equal((await a.performance('credit', 1, 0, 'classification', 0.5)).n, 401);
  } finally {
    await a.close();
    await b.close();
  }
});

test('PostgreSQL stopped: logging goes on at full speed into SQLite, failures are counted, feedback is refused; back: every row ships once', {
  skip,
}, async () => {
  const log = await open('outage');
  let total = 0;
  const logRows = (n: number) => {
    for (let i = 0; i < n; i++, total++) log.append(`out-${total}`, 'outage', 1, 'primary', Date.now(), 0.5, null, 0, 0, 'classification');
  };
  try {
    logRows(1000);
    await shipped(log, 1000);
    await pg.stop();
    try {
      // 30,000 rows while PostgreSQL is away: none dropped, all committed locally.
      for (let k = 0; k < 30; k++) {
        logRows(1000);
        await new Promise((r) => setImmediate(r));
      }
      log.flush();
      await log.drain();
      assert.equal(log.dropped, 0);
      assert.equal(log.status().backlog, 0, 'every row is committed to SQLite');
      const failing = await waitFor(
        () => {
          const s = log.status().shipping!;
          return s.state === 'failing' && s.backlog_rows === 30_000 && s.errors > 0 ? s : null;
        },
        { timeoutMs: 20_000, message: () => `shipping to fail with 30000 rows waiting: ${JSON.stringify(log.status().shipping)}` },
      );
      assert.ok(failing.last_error !== null && failing.last_error_at !== null);
      await assert.rejects(log.feedback([{ requestId: 'out-1', label: 1 }]), (e: Error & { code?: string; status?: number }) => {
        assert.equal(e.code, 'STORE_UNAVAILABLE');
        assert.equal(e.status, 503);
        assert.match(e.message, /cannot be reached/);
        return true;
      });
      await assert.rejects(log.performance('outage', 1, 0, 'classification', 0.5), { code: 'STORE_UNAVAILABLE' });
    } finally {
      await pg.start();
    }
    await shipped(log, total);
    assert.equal(await rowsOf('outage'), total, 'every row logged is in PostgreSQL, once');
    const distinct = await pg.query<{ n: string }>("SELECT count(DISTINCT request_id) AS n FROM predictions WHERE model = 'outage'");
    assert.equal(Number(distinct[0]!.n), total);
    assert.equal(log.status().shipping!.state, 'ok');
    assert.equal((await log.feedback([{ requestId: 'out-20000', label: 1 }])).joined, 1);
  } finally {
    await log.close();
  }
});

const CHILD = fileURLToPath(new URL('./fixtures/shared-log-child.js', import.meta.url));

/** Starts the child on `dir`; resolves once `ready` accepts one of its status lines. */
function child(dir: string, mode: 'log' | 'idle', ready: (s: { logged: number; shipped: number }) => boolean): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [CHILD, dir, pg.url, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (ready(JSON.parse(line))) resolve(proc);
        nl = buf.indexOf('\n');
      }
    });
    proc.once('exit', (code) => reject(new Error(`the child exited with ${code}`)));
  });
}

const killed = (proc: ChildProcess) =>
  new Promise<void>((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill('SIGKILL');
  });

test('killed (SIGKILL) while it ships, then restarted on the same data dir: PostgreSQL holds every committed row exactly once', {
  skip,
}, async () => {
  const dir = await tempDir('scoreline-shared-crash-');
  const first = await child(dir, 'log', (s) => s.shipped >= 20_000);
  await killed(first);
  // What SQLite committed before the kill is what must arrive: no more, no less.
  const sqlite = new Database(join(dir, 'monitoring.db'), { readonly: true });
  const committed = sqlite.prepare('SELECT coalesce(sum(n), 0) FROM segments').pluck().get() as number;
  const logId = sqlite.prepare("SELECT value FROM meta WHERE key = 'log_id'").pluck().get() as string;
  sqlite.close();
  assert.ok(committed >= 20_000, `${committed} rows committed`);
  const second = await child(dir, 'idle', () => true);
  try {
    const count = async () =>
      (
        await pg.query<{ n: string; d: string }>(
          'SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM predictions WHERE log_id = $1',
          [logId],
        )
      )[0]!;
    await waitFor(async () => Number((await count()).n) >= committed, {
      timeoutMs: 30_000,
      message: () => `PostgreSQL to hold the ${committed} rows committed before the kill`,
    });
    const { n, d } = await count();
    assert.equal(Number(n), committed, 'no row twice, none lost');
    assert.equal(Number(d), committed);
    const mark = await pg.query<{ through: string }>('SELECT shipped_through AS through FROM log_shipping WHERE log_id = $1', [logId]);
    const sqlite2 = new Database(join(dir, 'monitoring.db'), { readonly: true });
    assert.equal(Number(mark[0]!.through), sqlite2.prepare('SELECT max(id) FROM segments').pluck().get());
    sqlite2.close();
  } finally {
    await killed(second);
  }
});

test('closed right after logging: what it committed is shipped before close returns', { skip }, async () => {
  const log = await open('closing');
  const row = new Float32Array([1, 2, 3]);
  const n = 60_000;
  for (let i = 0; i < n; i++) log.append(`close-${i}`, 'closing', 1, 'primary', Date.now(), 0.5, row, 0, 3, 'classification');
  await log.close();
  const [rows] = await pg.query<{ n: string }>("SELECT count(*) AS n FROM predictions WHERE request_id LIKE 'close-%'");
  assert.equal(Number(rows!.n), n, 'every committed row shipped before close returned');
});
