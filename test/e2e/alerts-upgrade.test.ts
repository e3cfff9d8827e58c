// Alerts used to be kept in monitoring.db by the prediction log; the store keeps them now. A data
// dir from before, with an alert firing there, starts with that alert still firing (not notified
// again, and shown by the admin API), copied into the store once.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PredictionLog } from '../../src/monitoring/index.js';
import { SqliteStore } from '../../src/store/index.js';
import { DEMO_REPO, request, startServer, tempDir } from './server.js';

test('an alert firing in monitoring.db from before the store kept alerts is still firing after the upgrade', async () => {
  const dataDir = await tempDir('scoreline-data-');
  const log = new PredictionLog({ dataDir, sampleRate: 1, retentionDays: 30 });
  const firedAt = Date.now() - 60_000;
  const alert = {
    id: 'a1b2c3d4e5f60718',
    rule: 'score_psi_critical',
    severity: 'critical',
    state: 'firing',
    labels: { model: 'credit-default', version: '1' },
    value: 0.4,
    threshold: 0.25,
    message: 'score PSI of credit-default v1 is 0.4 (> 0.25 for 60 s)',
    startedAt: firedAt - 60_000,
    firedAt,
  };
  log.saveAlert(alert.id, 'firing', alert, firedAt);
  await log.close();

  const token = 'upgrade-token';
  const server = await startServer(['--model-repo', DEMO_REPO, '--data-dir', dataDir, '--workers', '0'], { SCORELINE_ADMIN_TOKEN: token });
  try {
    const body = (await request(`${server.url}/admin/alerts`, { headers: { authorization: `Bearer ${token}` } })).body;
    assert.deepEqual(
      body.firing.map((a: { id: string; state: string }) => [a.id, a.state]),
      [[alert.id, 'firing']],
    );
    assert.ok(server.logs.some((l) => /alerts kept in monitoring\.db copied into the store/.test(l)));
    assert.ok(!server.logs.some((l) => /FIRING score_psi_critical/.test(l)), 'not notified a second time');
  } finally {
    await server.stop();
  }
  const store = SqliteStore.open(dataDir);
  try {
    assert.deepEqual(
      (await store.alerts.open()).map((a) => a.id),
      [alert.id],
    );
  } finally {
    await store.close();
  }
});
