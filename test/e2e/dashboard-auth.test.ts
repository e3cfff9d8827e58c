// The dashboard in real Chromium against a server with API keys on: the page itself is open, its
// data needs monitoring:read; it says so, asks for a key, sends it as x-api-key (never in the URL),
// tells a key without the scope from a wrong one, and then shows the model.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import { stringify } from 'yaml';
import { CLI, DEMO_REPO, startServer, tempDir } from './server.js';
import { waitFor } from '../fixtures/wait.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const chromiumMissing = existsSync(CHROMIUM) ? null : `Debian Chromium is not installed at ${CHROMIUM} (apt-get install chromium)`;

function createKey(id: string, scopes: string): { id: string; key: string; hash: string; scopes: string[] } {
  const r = spawnSync(process.execPath, [CLI, 'keys', 'create', '--id', id, '--scopes', scopes, '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('the dashboard asks for an API key with monitoring:read and works with one', {
  skip: chromiumMissing !== null && !process.env.CI ? chromiumMissing! : false,
  timeout: 120_000,
}, async () => {
  if (chromiumMissing !== null) assert.fail(`${chromiumMissing}; CI must run the browser test`);
  const reader = createKey('dashboard', 'monitoring:read');
  const scorer = createKey('scorer', 'infer');
  const dir = await tempDir('scoreline-dash-auth-');
  const config = join(dir, 'c.yaml');
  writeFileSync(
    config,
    stringify({
      modelRepository: DEMO_REPO,
      auth: { enabled: true, apiKeys: [reader, scorer].map((k) => ({ id: k.id, hash: k.hash, scopes: k.scopes })) },
    }),
  );
  const server = await startServer(['--config', config]);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    const sent: { url: string; key: string | undefined }[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.startsWith('/v1/monitoring')) sent.push({ url: r.url(), key: r.headers()['x-api-key'] });
    });
    const res = await page.goto(`${server.url}/dashboard`);
    assert.equal(res?.status(), 200, 'the page itself is open');
    await page.waitForSelector('[data-testid=dashboard][data-state=error]', { timeout: 15_000 });
    assert.match(
      (await page.textContent('[data-testid=status]')) ?? '',
      /This server needs an API key: enter one with the monitoring:read scope/,
    );
    assert.ok(await page.isVisible('[data-testid=api-key]'), 'the key field is shown');

    // Polled from here: the page's CSP forbids the eval that waitForFunction with a string needs.
    const status = async (pattern: RegExp) => {
      let text = '';
      await waitFor(
        async () => {
          text = (await page.textContent('[data-testid=status]')) ?? '';
          return pattern.test(text);
        },
        {
          timeoutMs: 15_000,
          intervalMs: 50,
          message: () => `the status to match ${pattern}: '${text}'`,
        },
      );
    };
    await page.fill('[data-testid=api-key]', 'slk_wrong-key-wrong-key-wrong-key');
    await page.press('[data-testid=api-key]', 'Enter');
    await status(/The API key is not valid/);
    await page.fill('[data-testid=api-key]', scorer.key);
    await page.press('[data-testid=api-key]', 'Enter');
    await status(/The API key lacks the monitoring:read scope/);
    await page.fill('[data-testid=api-key]', reader.key);
    await page.press('[data-testid=api-key]', 'Enter');
    await page.waitForSelector('[data-testid=dashboard][data-state=ready]', { timeout: 15_000 });
    assert.match((await page.textContent('[data-testid=status]')) ?? '', /credit-default v1/);
    const withKey = sent.filter((s) => s.key === reader.key);
    assert.ok(withKey.length > 0, 'the key goes in the x-api-key header');
    assert.ok(
      sent.every((s) => !s.url.includes(reader.key.slice(4))),
      'and never in a URL',
    );
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await server.stop();
  }
});
