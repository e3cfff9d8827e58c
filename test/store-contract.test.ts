// One contract for both stores (src/store): every test below runs against SqliteStore on a temp
// data dir and against PostgresStore on a real PostgreSQL (one fresh database per test): records
// round-trip identically, registrations are idempotent and conflicts are 409s, artifacts are
// verified on every load (a damaged copy is refused and counted), aliases and deployments keep
// their history, a deployment change based on an old revision is refused, at most one unfinished
// job exists per model even under concurrent inserts, a job write based on an old revision (or to
// a finished job) changes nothing, and alerts keep their latest state. A removed deployment reads as
// none while its revision keeps counting; MLflow version folders import like model.onnx ones.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { scanRepository } from '../src/registry/repository.js';
import { PostgresStore, SqliteStore, type Job, type Store } from '../src/store/index.js';
import { Database } from '../src/store/postgres/database.js';
import { MIGRATIONS } from '../src/store/postgres/migrations/index.js';
import { clock } from './fixtures/registry.js';
import { writeSumModel } from './fixtures/models.js';
import { MLFLOW_FEATURES, writeMlflowFolder } from './fixtures/mlflow.js';
import { postgresSkip, startPostgres, type TestPostgres } from './fixtures/postgres.js';
import { waitFor } from './fixtures/wait.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const quiet = { warn: () => undefined, info: () => undefined };

interface Env {
  store: Store;
  dir: string;
  /** Replaces the stored bytes of an artifact behind the store's back. */
  damage(sha256: string, bytes: Buffer): Promise<void>;
}

interface Kind {
  name: string;
  skip: string | false;
  open(dir: string): Promise<Env>;
}

// One server for every test here but the one that stops it; each test gets a fresh database.
let pg: TestPostgres | null = null;
let dbCount = 0;

async function freshDatabase(): Promise<string> {
  pg ??= await startPostgres('contract');
  const db = `contract_${++dbCount}`;
  await pg.query(`CREATE DATABASE ${db}`);
  return pg.url.replace(/\/contract$/, `/${db}`);
}

after(async () => {
  await pg?.remove();
});

const kinds: Kind[] = [
  {
    name: 'SQLite',
    skip: false,
    async open(dir) {
      const store = SqliteStore.open(join(dir, 'data'), { now: clock() });
      return {
        store,
        dir,
        async damage(sha256, bytes) {
          writeFileSync(store.registry.inner.artifacts.path(sha256), bytes);
        },
      };
    },
  },
  {
    name: 'PostgreSQL',
    skip: postgresSkip(),
    async open(dir) {
      const url = await freshDatabase();
      const store = await PostgresStore.open({ url, dataDir: join(dir, 'data'), log: quiet, now: clock(), waitForServer: false });
      return {
        store,
        dir,
        async damage(sha256, bytes) {
          const c = new (await import('pg')).default.Client({ connectionString: url });
          await c.connect();
          await c.query('UPDATE artifacts SET bytes = $2 WHERE sha256 = $1', [sha256, bytes]);
          await c.end();
        },
      };
    },
  },
];

async function rejects(p: Promise<unknown>, code: string, status: number, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e: { code?: string; status?: number; message: string }) => {
    assert.equal(e.code, code, e.message);
    assert.equal(e.status, status);
    if (message) assert.match(e.message, message);
    return true;
  });
}

function job(id: string, model: string, at: string, over: Partial<Job> = {}): Job {
  return {
    id,
    model,
    state: 'queued',
    trigger: { kind: 'manual', reason: 'test', at },
    folded: [],
    createdAt: at,
    updatedAt: at,
    steps: [],
    log: [],
    revision: 0,
    ...over,
  };
}

for (const kind of kinds) {
  describe(`store contract: ${kind.name}`, { skip: kind.skip }, () => {
    let scratch: string;
    before(async () => {
      scratch = await mkdtemp(join(tmpdir(), 'scoreline-contract-'));
    });
    after(async () => {
      await rm(scratch, { recursive: true, force: true });
    });

    const withStore = async (fn: (env: Env, bytes: (v: number) => Promise<Uint8Array>) => Promise<void>) => {
      const dir = await mkdtemp(join(scratch, 't-'));
      const env = await kind.open(dir);
      const bytes = async (v: number) => (await writeSumModel(join(dir, 'scratch'), 'sum', v)).bytes;
      try {
        await fn(env, bytes);
      } finally {
        await env.store.close();
      }
    };

    test('versions round-trip; the same bytes are the same version; taken numbers and moved bytes are 409s; bad input is refused', async () => {
      await withStore(async ({ store }, bytes) => {
        const r = store.registry;
        const [b1, b2, b3] = [await bytes(1), await bytes(2), await bytes(3)];
        const first = await r.register('credit', b1, {
          source: '/models/credit.onnx',
          description: 'PD model',
          tags: { team: 'risk' },
          metrics: { auc: 0.81 },
          lineage: { trainingJobId: 'job-7', dataWindow: { from: '2023-01', to: '2023-12' } },
          config: { features: ['a', 'b', 'c', 'd'], batching: { maxBatchSize: 8 } },
        });
        assert.deepEqual(first, { name: 'credit', version: 1, sha256: sha(b1), size: b1.length, created: true });
        assert.deepEqual(await r.getVersion('credit', 1), {
          model: 'credit',
          version: 1,
          sha256: sha(b1),
          size: b1.length,
          createdAt: '2024-01-01T00:00:00.000Z',
          signature: {
            inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }],
            outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 1] }],
          },
          metrics: { auc: 0.81 },
          tags: { team: 'risk' },
          lineage: { source: '/models/credit.onnx', trainingJobId: 'job-7', dataWindow: { from: '2023-01', to: '2023-12' } },
          config: { features: ['a', 'b', 'c', 'd'], batching: { maxBatchSize: 8 } },
          reference: null,
          referenceData: null,
          aliases: [],
        });
        // Keys come back in the order they were written (a bundle's model.yaml depends on it).
        assert.deepEqual(Object.keys((await r.getVersion('credit', 1)).config), ['features', 'batching']);
        assert.deepEqual(await r.register('credit', b1), { name: 'credit', version: 1, sha256: sha(b1), size: b1.length, created: false });
        assert.equal((await r.register('credit', b2)).version, 2);
        assert.equal((await r.register('credit', b3, { version: 7 })).version, 7);
        await rejects(r.register('credit', b1, { version: 5 }), 'CONFLICT', 409, /identical to version 1 of model 'credit'/);
        await rejects(
          r.register('credit', await bytes(4), { version: 2 }),
          'CONFLICT',
          409,
          /version 2 of model 'credit' already exists with different bytes/,
        );
        await rejects(r.register('bad name!', b1), 'BAD_REQUEST', 400);
        await rejects(r.register('credit', b1, { version: 0 }), 'BAD_REQUEST', 400);
        await rejects(r.register('credit', Buffer.from('not a model')), 'NOT_ONNX', 422);
        assert.deepEqual(
          (await r.listVersions('credit')).map((v) => v.version),
          [1, 2, 7],
        );
        assert.deepEqual(await r.listModels(), [
          {
            name: 'credit',
            description: 'PD model',
            createdAt: '2024-01-01T00:00:00.000Z',
            latestVersion: 7,
            versionCount: 3,
            aliases: {},
          },
        ]);
        await rejects(r.getModel('nope'), 'MODEL_NOT_FOUND', 404);
        await rejects(r.getVersion('credit', 3), 'VERSION_NOT_FOUND', 404);
        await rejects(r.getVersion('nope', 1), 'MODEL_NOT_FOUND', 404);
        assert.equal((await r.resolve('credit', 'latest')).version, 7);
        assert.equal((await r.resolve('credit', '2')).version, 2);
      });
    });

    test('concurrent registrations of one model get distinct versions, and the same bytes one version', async () => {
      await withStore(async ({ store }, bytes) => {
        const all = await Promise.all([1, 2, 3, 4, 5, 6].map((v) => bytes(v)));
        const results = await Promise.all([...all, ...all].map((b) => store.registry.register('m', b)));
        const versions = (await store.registry.listVersions('m')).map((v) => [v.version, v.sha256]);
        assert.equal(versions.length, 6);
        assert.deepEqual(new Set(versions.map(([, s]) => s)), new Set(all.map(sha)));
        assert.equal(results.filter((r) => r.created).length, 6);
      });
    });

    test('loads re-hash the artifact: damaged bytes are refused and counted; the local file onnxruntime opens is verified', async () => {
      await withStore(async (env, bytes) => {
        const r = env.store.registry;
        const b = await bytes(1);
        await r.register('m', b);
        assert.deepEqual((await r.load('m', 1)).bytes, Buffer.from(b));
        const file = await r.artifactFile('m', 1);
        assert.equal(sha(readFileSync(file.path)), sha(b));
        await env.damage(sha(b), Buffer.from(b).fill(7, 10, 20));
        await rejects(r.load('m', 1), 'ARTIFACT_TAMPERED', 500, new RegExp(sha(b)));
        assert.equal(r.counters().tamperedRefusals, 1);
        // Registering the same bytes again restores them.
        assert.equal((await r.register('m', b)).created, false);
        assert.deepEqual((await r.load('m', 1)).bytes, Buffer.from(b));
      });
    });

    test('aliases move with their history; latest and numbers resolve; invalid and unknown aliases are refused', async () => {
      await withStore(async ({ store }, bytes) => {
        const r = store.registry;
        await r.register('m', await bytes(1));
        await r.register('m', await bytes(2));
        assert.deepEqual(await r.setAlias('m', 'champion', 1, { reason: 'first', actor: 'ci' }), {
          model: 'm',
          alias: 'champion',
          from: null,
          to: 1,
          at: '2024-01-01T00:00:02.000Z',
          reason: 'first',
          actor: 'ci',
        });
        assert.equal((await r.setAlias('m', 'champion', 2)).from, 1);
        await r.setAlias('m', 'champion', 2); // no move, no record
        await r.setAlias('m', 'challenger', 1);
        assert.deepEqual((await r.getModel('m')).aliases, { challenger: 1, champion: 2 });
        assert.deepEqual((await r.getVersion('m', 2)).aliases, ['champion']);
        assert.equal((await r.resolve('m', 'champion')).version, 2);
        assert.deepEqual((await r.deleteAlias('m', 'challenger')).to, null);
        assert.deepEqual(
          (await r.aliasHistory('m', 'champion')).map((e) => [e.from, e.to]),
          [
            [null, 1],
            [1, 2],
          ],
        );
        assert.equal((await r.aliasHistory('m')).length, 4);
        await rejects(r.setAlias('m', 'latest', 1), 'BAD_REQUEST', 400);
        await rejects(r.setAlias('m', '9lives', 1), 'BAD_REQUEST', 400);
        await rejects(r.setAlias('m', 'x', 9), 'VERSION_NOT_FOUND', 404);
        await rejects(r.resolve('m', 'nope'), 'ALIAS_NOT_FOUND', 404);
        await rejects(r.deleteAlias('m', 'nope'), 'ALIAS_NOT_FOUND', 404);
      });
    });

    test('version updates merge metrics and tags, replace the reference, and keep its rows as a verified artifact', async () => {
      await withStore(async ({ store }, bytes) => {
        const r = store.registry;
        await r.register('m', await bytes(1), { metrics: { auc: 0.7, ks: 0.3 }, tags: { a: '1' } });
        const csv = Buffer.from('x0,x1,label\n1,2,0\n3,4,1\n');
        const v = await r.updateVersion('m', 1, {
          metrics: { auc: 0.8, ks: null },
          tags: { b: '2' },
          reference: { rows: 2, bins: [1, 2] },
          referenceData: csv,
        });
        assert.deepEqual(v.metrics, { auc: 0.8 });
        assert.deepEqual(v.tags, { a: '1', b: '2' });
        assert.deepEqual(v.reference, { rows: 2, bins: [1, 2] });
        assert.equal(v.referenceData, sha(csv));
        assert.deepEqual(await r.referenceData('m', 1), csv);
        assert.equal((await r.updateVersion('m', 1, { reference: null })).reference, null);
        // Reference rows given at registration are kept once: a second registration does not replace them.
        const other = Buffer.from('x0,x1,label\n9,9,1\n');
        await r.register('m', await bytes(2), { referenceData: other });
        await r.register('m', await bytes(2), { referenceData: csv });
        assert.deepEqual(await r.referenceData('m', 2), other);
      });
    });

    test('artifacts larger than one read slice (8 MB) round-trip byte for byte', async () => {
      await withStore(async ({ store }, bytes) => {
        await store.registry.register('m', await bytes(1));
        const big = Buffer.alloc(20 * 1024 * 1024 + 123);
        for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE((i * 2654435761) >>> 0, i);
        await store.registry.updateVersion('m', 1, { referenceData: big });
        const back = await store.registry.referenceData('m', 1);
        assert.equal(back?.length, big.length);
        assert.equal(sha(back!), sha(big));
      });
    });

    test('a model repository imports once; restarts find it unchanged; a taken version number is skipped', async () => {
      await withStore(async (env, bytes) => {
        const repo = join(env.dir, 'repo');
        await writeSumModel(repo, 'sum', 1, { modelYaml: { features: ['a', 'b', 'c', 'd'], reference: 'ref.csv' } });
        writeFileSync(join(repo, 'sum', 'ref.csv'), 'a,b,c,d\n1,2,3,4\n');
        await writeSumModel(repo, 'sum', 2);
        const first = await env.store.registry.importRepository(scanRepository(repo));
        assert.deepEqual(
          first.imported.map((i) => i.version),
          [1, 2],
        );
        assert.equal(Array.isArray((await env.store.registry.getVersion('sum', 1)).config.features), true);
        assert.deepEqual(await env.store.registry.referenceData('sum', 2), Buffer.from('a,b,c,d\n1,2,3,4\n'));
        const again = await env.store.registry.importRepository(scanRepository(repo));
        assert.deepEqual([again.imported.length, again.unchanged.length, again.skipped.length], [0, 2, 0]);
        await env.store.registry.register('other', await bytes(5), { version: 1 });
        await writeSumModel(join(env.dir, 'repo2'), 'other', 1);
        const clash = await env.store.registry.importRepository(scanRepository(join(env.dir, 'repo2')));
        assert.equal(clash.skipped.length, 1);
        assert.equal(clash.skipped[0]!.code, 'CONFLICT');
      });
    });

    test('deployments keep revisions and history; a change based on an older revision is a 409 and writes nothing', async () => {
      await withStore(async ({ store }, bytes) => {
        const r = store.registry;
        await r.register('m', await bytes(1));
        assert.equal(await r.getDeployment('m'), undefined);
        const a = await r.saveDeployment(
          'm',
          { spec: { strategy: 'direct', version: 1 } },
          { action: 'deploy', reason: 'initial', expectRevision: 0 },
        );
        assert.equal(a.revision, 1);
        const b = await r.saveDeployment(
          'm',
          { spec: { strategy: 'canary', stable: 1, canary: 2, percent: 10 } },
          { action: 'deploy', expectRevision: 1 },
        );
        assert.equal(b.revision, 2);
        await rejects(
          r.saveDeployment('m', { spec: { strategy: 'direct', version: 2 } }, { action: 'promote', expectRevision: 1 }),
          'CONFLICT',
          409,
          /revision 2/,
        );
        const got = await r.getDeployment<{ spec: { strategy: string } }>('m');
        assert.equal(got?.revision, 2);
        assert.equal(got?.state.spec.strategy, 'canary');
        assert.deepEqual(
          (await r.listDeployments()).map((d) => [d.model, d.revision]),
          [['m', 2]],
        );
        const history = await r.deploymentHistory<{ spec: { strategy: string } }>('m');
        assert.deepEqual(
          history.map((h) => [h.action, h.from?.spec.strategy ?? null, h.to?.spec.strategy ?? null, h.reason]),
          [
            ['deploy', null, 'direct', 'initial'],
            ['deploy', 'direct', 'canary', ''],
          ],
        );
        // Without expectRevision the write is unconditional (a single process's own state).
        assert.equal((await r.saveDeployment('m', { spec: { strategy: 'direct', version: 1 } }, { action: 'rollback' })).revision, 3);
        await rejects(r.saveDeployment('nope', {}, { action: 'deploy' }), 'MODEL_NOT_FOUND', 404);
        await rejects(r.saveDeployment('m', undefined, { action: 'deploy' }), 'BAD_REQUEST', 400);
        await rejects(r.getDeployment('nope'), 'MODEL_NOT_FOUND', 404);
      });
    });

    test('a removed deployment reads as none; its revision keeps counting, so a replica that served an older one adopts the next; removing twice or from a stale revision is a 409', async () => {
      await withStore(async ({ store }, bytes) => {
        const r = store.registry;
        await r.register('m', await bytes(1));
        await rejects(r.removeDeployment('m', { action: 'remove' }), 'CONFLICT', 409, /has no deployment/);
        await r.saveDeployment('m', { spec: { strategy: 'direct', version: 1 } }, { action: 'deploy', expectRevision: 0 });
        await r.saveDeployment('m', { spec: { strategy: 'direct', version: 1 } }, { action: 'deploy', expectRevision: 1 });
        await rejects(r.removeDeployment('m', { action: 'remove', expectRevision: 1 }), 'CONFLICT', 409, /revision 2/);
        assert.equal((await r.getDeployment('m'))?.revision, 2, 'a refused removal changes nothing');
        assert.equal(await r.removeDeployment('m', { action: 'remove', reason: 'back to latest', expectRevision: 2 }), 3);
        assert.equal(await r.getDeployment('m'), undefined);
        assert.deepEqual(await r.listDeployments(), []);
        await rejects(r.removeDeployment('m', { action: 'remove' }), 'CONFLICT', 409, /has no deployment/);
        // "No deployment" is revision 0 to a caller, and the removal's own revision to the one that removed it.
        await rejects(
          r.saveDeployment('m', { spec: { strategy: 'direct', version: 1 } }, { action: 'deploy', expectRevision: 2 }),
          'CONFLICT',
          409,
        );
        const again = await r.saveDeployment(
          'm',
          { spec: { strategy: 'direct', version: 1 } },
          { action: 'deploy', reason: 'again', expectRevision: 0 },
        );
        assert.equal(again.revision, 4);
        const history = await r.deploymentHistory<{ spec: { strategy: string } }>('m');
        assert.deepEqual(
          history.map((h) => [h.action, h.from?.spec.strategy ?? null, h.to?.spec.strategy ?? null, h.reason]),
          [
            ['deploy', null, 'direct', ''],
            ['deploy', 'direct', 'direct', ''],
            ['remove', 'direct', null, 'back to latest'],
            ['deploy', null, 'direct', 'again'],
          ],
        );
        await rejects(r.saveDeployment('m', null, { action: 'deploy' }), 'BAD_REQUEST', 400);
      });
    });

    test("an MLflow version folder imports from its flavor's ONNX file with the signature's features and MLmodel as lineage; one without ONNX is reported, not imported", async () => {
      await withStore(async (env) => {
        const repo = join(env.dir, 'mlrepo');
        writeMlflowFolder(join(repo, 'ml', '1'));
        writeMlflowFolder(join(repo, 'ml', '2'), {
          flavors: { sklearn: { pickled_model: 'model.pkl' }, python_function: { loader_module: 'mlflow.sklearn' } },
        });
        const result = await env.store.registry.importRepository(scanRepository(repo));
        assert.deepEqual(
          result.imported.map((i) => [i.name, i.version]),
          [['ml', 1]],
        );
        assert.deepEqual(
          result.skipped.map((s) => [s.model, s.version, s.code]),
          [['ml', 2, 'UNSUPPORTED_MODEL_FORMAT']],
        );
        const v = await env.store.registry.getVersion('ml', 1);
        assert.deepEqual(v.config.features, MLFLOW_FEATURES);
        assert.equal((v.lineage.mlflow as { run_id?: string }).run_id !== undefined, true, JSON.stringify(v.lineage));
        assert.equal(v.sha256, sha(readFileSync(join(repo, 'ml', '1', 'model.onnx'))));
      });
    });

    test('jobs: one unfinished job per model under concurrent inserts; writes compare revisions; finished jobs stay finished', async () => {
      await withStore(async ({ store }) => {
        const j = store.jobs;
        const inserted = await Promise.all([1, 2, 3, 4, 5].map((i) => j.insert(job(`job-${i}`, 'm', `2024-01-01T00:00:0${i}.000Z`))));
        assert.equal(inserted.filter(Boolean).length, 1);
        const winner = (await j.active('m'))!;
        assert.equal(winner.revision, 1);
        assert.ok(await j.insert(job('job-other', 'n', '2024-01-01T00:00:09.000Z')));

        const a = (await j.get(winner.id))!;
        const b = (await j.get(winner.id))!;
        a.state = 'running';
        assert.equal(await j.update(a), true);
        assert.equal(a.revision, 2);
        b.folded.push({ kind: 'drift', reason: 'late', at: '2024-01-01T00:01:00.000Z' });
        assert.equal(await j.update(b), false, 'a write based on revision 1 must not replace revision 2');
        assert.equal((await j.get(winner.id))!.state, 'running');
        assert.deepEqual((await j.get(winner.id))!.folded, []);

        a.state = 'failed';
        a.endedAt = '2024-01-01T00:02:00.000Z';
        assert.equal(await j.update(a), true);
        const stale = { ...a, state: 'running' as const };
        assert.equal(await j.update(stale), false, 'a finished job is never written again');
        assert.equal(await j.active('m'), undefined);
        assert.ok(await j.insert(job('job-next', 'm', '2024-01-01T00:03:00.000Z')));
        assert.deepEqual(
          (await j.unfinished()).map((x) => x.id),
          ['job-other', 'job-next'],
        );
        assert.deepEqual(
          (await j.list({ model: 'm' })).map((x) => x.id),
          ['job-next', winner.id],
        );
        assert.deepEqual(
          (await j.list({ state: 'failed' })).map((x) => x.id),
          [winner.id],
        );
        assert.equal(await j.lastEnded('m'), Date.parse('2024-01-01T00:02:00.000Z'));
        assert.deepEqual(await j.counts(), [
          { model: 'm', state: 'failed', n: 1 },
          { model: 'm', state: 'queued', n: 1 },
          { model: 'n', state: 'queued', n: 1 },
        ]);
        await j.addTriggerEvent({ at: 'a', model: 'm', kind: 'drift', outcome: 'job', jobId: 'job-next', reason: 'r1' });
        await j.addTriggerEvent({ at: 'b', model: 'm', kind: 'manual', outcome: 'folded', jobId: 'job-next', reason: 'r2' });
        assert.deepEqual(
          (await j.triggerEvents('m')).map((e) => e.reason),
          ['r2', 'r1'],
        );
        await j.addIncident({
          id: 'inc-1',
          model: 'm',
          at: '2024-01-01T00:00:00.000Z',
          reason: 'bad',
          severity: 'critical',
          jobId: null,
          outcome: 'job',
        });
        assert.deepEqual(
          (await j.incidents('m')).map((i) => i.id),
          ['inc-1'],
        );
        assert.deepEqual(await j.incidents('n'), []);
      });
    });

    test('alerts keep their latest state, list newest first, and the open ones', async () => {
      await withStore(async ({ store }) => {
        const a = store.alerts;
        await a.save({ id: 'a1', state: 'firing', at: 1000, data: { id: 'a1', rule: 'psi', state: 'firing' } });
        await a.save({ id: 'a2', state: 'firing', at: 2000, data: { id: 'a2', rule: 'auc', state: 'firing' } });
        await a.save({ id: 'a1', state: 'resolved', at: 3000, data: { id: 'a1', rule: 'psi', state: 'resolved' } });
        assert.deepEqual(
          (await a.list(10, 0)).map((x) => [x.id, x.state, x.at]),
          [
            ['a1', 'resolved', 3000],
            ['a2', 'firing', 2000],
          ],
        );
        assert.deepEqual(
          (await a.list(10, 2500)).map((x) => x.id),
          ['a1'],
        );
        assert.deepEqual(
          (await a.open()).map((x) => [x.id, (x.data as { rule: string }).rule]),
          [['a2', 'auc']],
        );
      });
    });

    test('the cluster names a leader and keeps its replicas', async () => {
      await withStore(async ({ store }) => {
        const c = store.cluster;
        const lease = await c.lead('r1', 5000);
        assert.equal(lease.holder, 'r1');
        assert.equal((await c.lead('r1', 5000)).term, lease.term, 'renewing keeps the term');
        assert.equal(await c.leader(), 'r1');
        await c.heartbeat({
          id: 'r1',
          address: '127.0.0.1:1',
          host: 'h',
          pid: 1,
          startedAt: 'x',
          deployments: { m: { revision: 2, spec: { strategy: 'direct', version: 1 }, since: 's', problem: null } },
        });
        const seen = await c.replicas(60_000);
        assert.deepEqual(
          seen.map((r) => [r.id, r.deployments.m?.revision]),
          [['r1', 2]],
        );
        assert.equal(await c.sharedSecret('token', () => 'first'), 'first');
        assert.equal(await c.sharedSecret('token', () => 'second'), 'first');
        await c.resign('r1');
        assert.equal(await c.leader(), null);
        await c.leave('r1');
        assert.deepEqual(await c.replicas(60_000), []);
      });
    });
  });
}

test('canary step statistics are kept only by a store replicas share: null in SQLite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-canary-'));
  try {
    const store = SqliteStore.open(join(dir, 'data'));
    assert.equal(store.canary, null);
    assert.equal(store.cluster.shared, false);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("the PostgreSQL store: canary step rows replace the replica's earlier row, are read with their own step only, with their age; ended steps are pruned", {
  skip: postgresSkip(),
}, async () => {
  const url = await freshDatabase();
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-canary-'));
  try {
    const a = await PostgresStore.open({ url, dataDir: join(dir, 'a'), log: quiet, waitForServer: false });
    const b = await PostgresStore.open({ url, dataDir: join(dir, 'b'), log: quiet, waitForServer: false });
    try {
      await a.canary.putSteps('ra', [
        { model: 'm', step: 's1', data: '{"1":{"requests":3}}' },
        { model: 'n', step: 't1', data: '{"1":{"requests":7}}' },
      ]);
      await b.canary.putSteps('rb', [{ model: 'm', step: 's1', data: '{"1":{"requests":5}}' }]);
      await b.canary.putSteps('rb', []);
      const seen = await b.canary.steps(
        [
          { model: 'm', step: 's1' },
          { model: 'n', step: 't1' },
        ],
        'rb',
      );
      assert.deepEqual(seen.map((r) => [r.model, r.step, r.replica, r.data]).sort(), [
        ['m', 's1', 'ra', { 1: { requests: 3 } }],
        ['n', 't1', 'ra', { 1: { requests: 7 } }],
      ]);
      assert.ok(
        seen.every((r) => r.ageMs >= 0 && r.ageMs < 60_000),
        JSON.stringify(seen),
      );
      // Replica ra moves to the next step of m: its row of s1 is gone, and s2 is read with s2 only.
      await a.canary.putSteps('ra', [{ model: 'm', step: 's2', data: '{"1":{"requests":0}}' }]);
      assert.deepEqual(
        (await b.canary.steps([{ model: 'm', step: 's1' }], 'nobody')).map((r) => r.replica),
        ['rb'],
      );
      assert.deepEqual(
        (await b.canary.steps([{ model: 'm', step: 's2' }], 'rb')).map((r) => [r.replica, r.data]),
        [['ra', { 1: { requests: 0 } }]],
      );
      assert.deepEqual(await b.canary.steps([], 'rb'), []);
      // Pruning drops rows not written for the given time unless their step is kept.
      assert.equal(await a.canary.prune([{ model: 'm', step: 's2' }], 60_000), 0);
      assert.equal(await a.canary.prune([{ model: 'm', step: 's2' }], 0), 2);
      const left = await a.canary.steps(
        [
          { model: 'm', step: 's1' },
          { model: 'm', step: 's2' },
          { model: 'n', step: 't1' },
        ],
        'nobody',
      );
      assert.deepEqual(
        left.map((r) => [r.model, r.step, r.replica]),
        [['m', 's2', 'ra']],
      );
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the PostgreSQL store: a second replica sees the lease held; a lapsed or resigned lease changes hands with a new term', {
  skip: postgresSkip(),
}, async () => {
  const url = await freshDatabase();
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-lease-'));
  try {
    const a = await PostgresStore.open({ url, dataDir: join(dir, 'a'), log: quiet, waitForServer: false });
    const b = await PostgresStore.open({ url, dataDir: join(dir, 'b'), log: quiet, waitForServer: false });
    try {
      const la = await a.cluster.lead('a', 400);
      assert.equal(la.holder, 'a');
      const lb = await b.cluster.lead('b', 400);
      assert.deepEqual([lb.holder, lb.term], ['a', la.term]);
      // 'a' stops renewing: once the lease lapses (the database's clock), 'b' takes it with the next term.
      let taken = lb;
      await waitFor(
        async () => {
          taken = await b.cluster.lead('b', 60_000);
          return taken.holder === 'b';
        },
        {
          timeoutMs: 5000,
          intervalMs: 50,
          message: () => `the lapsed lease to pass to 'b' (held by ${taken.holder})`,
        },
      );
      assert.deepEqual([taken.holder, taken.term], ['b', la.term + 1]);
      assert.equal((await a.cluster.lead('a', 60_000)).holder, 'b');
      await b.cluster.resign('b');
      const back = await a.cluster.lead('a', 60_000);
      assert.deepEqual([back.holder, back.term], ['a', la.term + 2]);
      // Racing takers of a free lease: exactly one wins.
      await a.cluster.resign('a');
      const race = await Promise.all([a.cluster.lead('a', 60_000), b.cluster.lead('b', 60_000)]);
      assert.equal(race[0]!.holder, race[1]!.holder);
      assert.equal(race[0]!.term, la.term + 3);
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the PostgreSQL store: replicas starting together migrate once; changes reach every listener; a lost connection is a gap', {
  skip: postgresSkip(),
}, async () => {
  const url = await freshDatabase();
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-notify-'));
  try {
    const stores = await Promise.all(
      [1, 2, 3].map((i) => PostgresStore.open({ url, dataDir: join(dir, String(i)), log: quiet, origin: `r${i}`, waitForServer: false })),
    );
    try {
      assert.deepEqual((await stores[0]!.registry.listModels()).length, 0);
      const c = new (await import('pg')).default.Client({ connectionString: url });
      await c.connect();
      assert.deepEqual(
        (await c.query('SELECT version FROM schema_migrations ORDER BY version')).rows,
        MIGRATIONS.map((m) => ({ version: m.version })),
      );
      const seen: { kind: string; model: string | null; origin: string | null }[] = [];
      let gaps = 0;
      const stop = await stores[1]!.cluster.listen(
        (c) => seen.push({ kind: c.kind, model: c.model, origin: c.origin }),
        () => gaps++,
      );
      assert.equal(gaps, 1, 'the first connection is a gap: nothing was heard before it');
      const bytes = (await writeSumModel(join(dir, 'scratch'), 'sum', 1)).bytes;
      await stores[0]!.registry.register('m', bytes);
      await stores[0]!.registry.setAlias('m', 'champion', 1);
      await stores[0]!.registry.saveDeployment('m', { spec: { strategy: 'direct', version: 1 } }, { action: 'deploy' });
      await stores[0]!.registry.updateVersion('m', 1, { reference: { rows: 1 } });
      const want = [
        { kind: 'version', model: 'm', origin: 'r1' },
        { kind: 'alias', model: 'm', origin: 'r1' },
        { kind: 'deployment', model: 'm', origin: 'r1' },
        { kind: 'reference', model: 'm', origin: 'r1' },
      ];
      await waitFor(() => seen.length >= want.length, {
        timeoutMs: 5000,
        message: () => `${want.length} changes at the listener: ${JSON.stringify(seen)}`,
      });
      assert.deepEqual(seen, want);
      // A refused write notifies nobody.
      await assert.rejects(stores[2]!.registry.saveDeployment('m', {}, { action: 'x', expectRevision: 0 }));
      // The listening connection is killed: the listener reconnects and reports the gap.
      await c.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'scoreline-listen' AND datname = current_database()",
      );
      await c.end();
      await waitFor(() => gaps >= 2, { timeoutMs: 5000, message: 'the listener to reconnect and report the gap' });
      assert.equal(gaps, 2);
      await stores[0]!.registry.setAlias('m', 'challenger', 1);
      await waitFor(() => seen.length >= 5, {
        timeoutMs: 5000,
        message: () => `the change after the reconnection: ${JSON.stringify(seen)}`,
      });
      assert.deepEqual(seen.slice(4), [{ kind: 'alias', model: 'm', origin: 'r1' }]);
      await stop();
      assert.ok(existsSync(join(dir, '1')), 'each replica keeps its own artifact cache');
    } finally {
      for (const s of stores) await s.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a transaction open when PostgreSQL shuts down fails with STORE_UNAVAILABLE instead of ending the process, and the pool recovers', {
  skip: postgresSkip(),
}, async () => {
  const server = await startPostgres('shutdown');
  const db = new Database(server.url);
  try {
    await assert.rejects(
      db.tx(async (c) => {
        await c.query('SELECT 1');
        // Between statements, out of the pool: the server's 57P01 arrives as an 'error' event on
        // this connection, with nothing of the pool's listening.
        const ended = new Promise<void>((resolve) => c.once('end', () => resolve()));
        await server.stop();
        await ended;
        await c.query('SELECT 2');
      }),
      { code: 'STORE_UNAVAILABLE' },
    );
    await server.start();
    assert.deepEqual(await db.tx(async (c) => (await c.query('SELECT 3 AS n')).rows), [{ n: 3 }], 'the broken connection is not reused');
  } finally {
    await db.close();
    await server.remove();
  }
});

test('the PostgreSQL store down: calls fail with STORE_UNAVAILABLE naming it, a store opened meanwhile waits and says why, and both work once it is back', {
  skip: postgresSkip(),
}, async () => {
  const server = await startPostgres('down');
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-down-'));
  try {
    const store = await PostgresStore.open({ url: server.url, dataDir: join(dir, 'a'), log: quiet, waitForServer: false });
    try {
      await server.stop();
      await assert.rejects(store.registry.listModels(), (e: { code?: string; status?: number; retryAfter?: number; message: string }) => {
        assert.equal(e.code, 'STORE_UNAVAILABLE');
        assert.equal(e.status, 503);
        assert.ok((e.retryAfter ?? 0) > 0);
        // The pool's idle connection learns of the shutdown first (57P01), a new one is refused.
        assert.match(
          e.message,
          new RegExp(
            `the store \\(PostgreSQL at postgres@127\\.0\\.0\\.1:${server.port}/down\\) cannot be reached: .+; nothing was changed`,
          ),
        );
        return true;
      });
      await assert.rejects(store.registry.listModels(), /cannot be reached: connect ECONNREFUSED/);
      await assert.rejects(PostgresStore.open({ url: server.url, dataDir: join(dir, 'b'), log: quiet, waitForServer: false }), {
        code: 'STORE_UNAVAILABLE',
      });
      const warnings: string[] = [];
      const waiting = PostgresStore.open({
        url: server.url,
        dataDir: join(dir, 'c'),
        log: { warn: (_o, m) => warnings.push(m), info: () => undefined },
      });
      await waitFor(() => warnings.length >= 2, {
        timeoutMs: 5000,
        intervalMs: 50,
        message: () => `a second attempt to reach the store: ${JSON.stringify(warnings)}`,
      });
      assert.match(warnings[0]!, /^cannot reach the store \(PostgreSQL at .*\): connect ECONNREFUSED .*; retrying in 500 ms$/);
      await server.start();
      const late = await waiting;
      assert.deepEqual(await late.registry.listModels(), []);
      assert.deepEqual(await store.registry.listModels(), [], 'the pool reconnects by itself');
      await late.close();
    } finally {
      await store.close();
    }
  } finally {
    await server.remove();
    await rm(dir, { recursive: true, force: true });
  }
});
