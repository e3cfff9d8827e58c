// Tests for the registry's persistence (src/registry/store.ts, schema.ts) on real SQLite files:
// everything survives close and reopen, the schema is versioned, and with WAL a reader in another
// process is never blocked by a writer while a writer in another process waits for the lock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../src/registry/schema.js';
import type { ModelRegistry } from '../src/registry/store.js';
import { sha, throwsCode, withRegistry as withEnv } from './fixtures/registry.js';
import { elapse } from './fixtures/wait.js';

test('everything survives close and reopen', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    for (const v of [1, 2]) reg.register('m', await env.bytes(v), { tags: { v: String(v) } });
    reg.setAlias('m', 'champion', 1, { reason: 'a' });
    reg.setAlias('m', 'champion', 2, { reason: 'b' });
    reg.updateVersion('m', 2, { metrics: { auc: 0.9 }, reference: { bins: 10 } });
    reg.saveDeployment('m', { strategy: 'direct', version: 2 }, { action: 'deploy' });
    const snapshot = (r: ModelRegistry) => ({
      models: r.listModels(),
      versions: r.listVersions('m'),
      aliases: r.aliasHistory('m'),
      deployment: r.getDeployment('m'),
      deployments: r.deploymentHistory('m'),
    });
    const before = snapshot(reg);
    reg.close();
    reg.close(); // idempotent

    const again = env.open();
    assert.deepEqual(snapshot(again), before);
    assert.equal(again.resolve('m', 'champion').version, 2);
    assert.deepEqual(again.load('m', 2).bytes, Buffer.from(await env.bytes(2)));
    assert.equal(again.register('m', await env.bytes(3)).version, 3);
  });
});

test('the schema is versioned: migrated once, and a newer file is refused', async () => {
  await withEnv(async (env) => {
    env.open().close();
    env.open().close();
    const db = new Database(join(env.dataDir, 'registry.db'));
    assert.deepEqual(db.prepare('SELECT version FROM schema_version').all(), [{ version: 1 }, { version: 2 }, { version: 3 }]);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (99, ?)').run(new Date().toISOString());
    db.close();
    throwsCode(() => env.open(), 'CONFIG_INVALID', 500, /schema version 99, newer than this scoreline knows \(3\)/);
  });
});

test('with WAL another process reads while this one holds the write lock', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    reg.register('m', await env.bytes(1), { description: 'committed' });
    const peer = env.open(); // a second connection in this process sees the first one's writes
    reg.register('m', await env.bytes(2));
    assert.equal(peer.getModel('m').latestVersion, 2);

    const writer = new Database(join(env.dataDir, 'registry.db'));
    writer.pragma('busy_timeout = 0');
    writer.exec("BEGIN IMMEDIATE; UPDATE models SET description = 'uncommitted' WHERE name = 'm'");
    try {
      const storeUrl = new URL('../src/registry/store.js', import.meta.url).href;
      const script = `
        const { ModelRegistry } = await import(${JSON.stringify(storeUrl)});
        const reg = ModelRegistry.open(process.argv[1]);
        const m = reg.getModel('m');
        console.log(JSON.stringify({ description: m.description, latest: m.latestVersion, loaded: reg.load('m', 2).bytes.length }));
        reg.close();`;
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script, env.dataDir], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(child.status, 0, child.stderr);
      assert.deepEqual(JSON.parse(child.stdout), { description: 'committed', latest: 2, loaded: (await env.bytes(2)).length });
      // Readers in this process are not blocked either, and see only committed state.
      assert.equal(reg.getModel('m').description, 'committed');
    } finally {
      writer.exec('COMMIT');
      writer.close();
    }
    assert.equal(reg.getModel('m').description, 'uncommitted');
  });
});

test('a writer in another process waits for the lock (busy_timeout) instead of failing', async () => {
  await withEnv(async (env) => {
    const reg = env.open();
    reg.register('m', await env.bytes(1));
    const b2 = await env.bytes(2);
    const b2Path = join(env.dir, 'v2.onnx');
    writeFileSync(b2Path, b2);

    const writer = new Database(join(env.dataDir, 'registry.db'));
    writer.exec('BEGIN IMMEDIATE');
    const storeUrl = new URL('../src/registry/store.js', import.meta.url).href;
    const script = `
      const { readFileSync } = await import('node:fs');
      const { ModelRegistry } = await import(${JSON.stringify(storeUrl)});
      const reg = ModelRegistry.open(process.argv[1]);
      process.stderr.write('opened\\n');
      console.log(JSON.stringify(reg.register('m', readFileSync(process.argv[2]))));
      reg.close();`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, env.dataDir, b2Path], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const opened = new Promise<void>((resolve) =>
      child.stderr.on('data', (c: Buffer) => {
        stderr += c;
        if (stderr.includes('opened')) resolve();
      }),
    );
    child.stdout.on('data', (c: Buffer) => {
      stdout += c;
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    await Promise.race([opened, exited]);
    // The child is now inside register(), blocked on BEGIN IMMEDIATE. Elapsed time is the subject:
    // while the writer holds the lock, the child must NOT finish within this window.
    await elapse(300);
    assert.equal(child.exitCode, null, 'the child should still be waiting for the lock');
    writer.exec('COMMIT');
    writer.close();
    assert.equal(await exited, 0, stderr);
    assert.deepEqual(JSON.parse(stdout), { name: 'm', version: 2, sha256: sha(b2), size: b2.length, created: true });
    assert.equal(reg.getModel('m').latestVersion, 2);
  });
});

test('a registry written at schema 1 is migrated in place, its versions intact', async () => {
  await withEnv(async (env) => {
    const bytes = await env.bytes(1);
    mkdirSync(env.dataDir, { recursive: true });
    const db = new Database(join(env.dataDir, 'registry.db'));
    db.exec(MIGRATIONS[0]!);
    db.exec('CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
    db.prepare("INSERT INTO schema_version VALUES (1, '2024-01-01T00:00:00.000Z')").run();
    db.prepare("INSERT INTO models (name, created_at) VALUES ('m', '2024-01-01T00:00:00.000Z')").run();
    db.prepare(
      `INSERT INTO versions (model, version, sha256, size, created_at, signature, lineage) VALUES ('m', 1, ?, ?, '2024-01-01T00:00:00.000Z', '{"inputs":[],"outputs":[]}', '{"source":"/repo/m/1/model.onnx"}')`,
    ).run(sha(bytes), bytes.length);
    db.close();

    const reg = env.open();
    reg.artifacts.put(bytes);
    const v = reg.getVersion('m', 1);
    assert.deepEqual([v.sha256, v.lineage, v.referenceData], [sha(bytes), { source: '/repo/m/1/model.onnx' }, null]);
    assert.deepEqual(reg.load('m', 1).bytes, Buffer.from(bytes));
    assert.equal(reg.register('m', await env.bytes(2), { referenceData: Buffer.from('a\n1\n') }).version, 2);
    assert.equal(reg.referenceData('m', 2)!.toString(), 'a\n1\n');
  });
});
