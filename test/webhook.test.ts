// Tests for src/monitoring/webhook.ts against real local HTTP receivers (node:http on port 0, no
// mock of fetch): retries on 5xx with order kept, a hanging receiver (timeout, then retry), no
// retry on 400, Retry-After honoured and capped, network errors, the Slack-compatible text of an
// alert end to end from the AlertManager, generic job payloads through notify(), and Retry-After
// parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AlertManager } from '../src/monitoring/alerts.js';
import { WebhookChannel, notify, retryAfterMs, type LogEntry } from '../src/monitoring/webhook.js';
import { waitFor } from './fixtures/wait.js';

interface Received {
  at: number;
  body: { text: string; event: string; alert?: { id: string; state: string; severity: string }; job?: { id: string } };
  headers: IncomingMessage['headers'];
}

/** A receiver whose n-th request (0-based) is answered by reply(n, res); reply may leave it hanging. */
async function receiver(reply: (n: number, res: ServerResponse, body: Received['body']) => void) {
  const got: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Received['body'];
      got.push({ at: performance.now(), body, headers: req.headers });
      reply(got.length - 1, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/T000/SECRET`;
  const close = () => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return { url, got, close };
}

const answer = (res: ServerResponse, status: number, headers: Record<string, string> = {}) => {
  res.writeHead(status, { 'content-type': 'text/plain', ...headers });
  res.end(status < 300 ? 'ok' : `status ${status}`);
};

const alertPayload = (id: string, event: 'fired' | 'resolved') => ({
  text: `[CRITICAL] ${event === 'fired' ? 'FIRING' : 'RESOLVED'} psi: score PSI of m v1 is 0.31`,
  event,
  alert: { id, state: event === 'fired' ? 'firing' : 'resolved', severity: 'critical' },
});

test('a receiver failing with 500 twice then 200: delivered once, retried twice, fired before resolved', async () => {
  const r = await receiver((n, res) => answer(res, n < 2 ? 500 : 200));
  const logs: LogEntry[] = [];
  const ch = new WebhookChannel({ url: r.url, backoffMs: 20, headers: { authorization: 'Bearer t' }, log: (e) => logs.push(e) });
  try {
    const fired = ch.send(alertPayload('a1', 'fired'));
    const resolved = ch.send(alertPayload('a1', 'resolved'));
    assert.equal(ch.stats().pending, 2);
    await Promise.all([fired, resolved]);
    assert.deepEqual(
      r.got.map((g) => g.body.event),
      ['fired', 'fired', 'fired', 'resolved'],
    );
    assert.deepEqual(ch.stats(), { sent: 2, failed: 0, retried: 2, pending: 0 });
    assert.deepEqual(r.got[0]!.body, alertPayload('a1', 'fired'));
    assert.equal(r.got[0]!.headers['content-type'], 'application/json');
    assert.equal(r.got[0]!.headers.authorization, 'Bearer t');
    assert.match(String(r.got[0]!.headers['user-agent']), /^scoreline\//);
    // Backoff: ~20 ms then ~40 ms, each with jitter in [d/2, d].
    assert.ok(r.got[1]!.at - r.got[0]!.at >= 9, `first retry after ${r.got[1]!.at - r.got[0]!.at} ms`);
    assert.ok(r.got[2]!.at - r.got[1]!.at >= 19, `second retry after ${r.got[2]!.at - r.got[1]!.at} ms`);
    // The log names the origin, never the secret path.
    assert.equal(logs.filter((e) => e.level === 'warn').length, 2);
    assert.ok(
      logs.every((e) => !e.msg.includes('SECRET')),
      JSON.stringify(logs),
    );
  } finally {
    await r.close();
  }
});

test('payloads of different alerts do not wait for each other', async () => {
  const r = await receiver((_n, res, body) =>
    answer(res, body.alert?.id === 'slow' && r.got.filter((g) => g.body.alert?.id === 'slow').length < 3 ? 503 : 200),
  );
  const ch = new WebhookChannel({ url: r.url, backoffMs: 100 });
  try {
    const slow = ch.send(alertPayload('slow', 'fired'));
    await ch.send(alertPayload('fast', 'fired'));
    assert.equal(r.got.filter((g) => g.body.alert?.id === 'fast').length, 1);
    assert.ok(r.got.filter((g) => g.body.alert?.id === 'slow').length < 3, 'fast was delivered while slow was still retrying');
    await slow;
    assert.deepEqual(ch.stats(), { sent: 2, failed: 0, retried: 2, pending: 0 });
  } finally {
    await r.close();
  }
});

test('a receiver that hangs: the attempt times out and the retry is delivered', async () => {
  const r = await receiver((n, res) => {
    if (n > 0) answer(res, 200); // the first request never gets an answer
  });
  const logs: LogEntry[] = [];
  const ch = new WebhookChannel({ url: r.url, timeoutMs: 150, backoffMs: 10, log: (e) => logs.push(e) });
  try {
    const t0 = performance.now();
    await ch.send(alertPayload('h', 'fired'));
    assert.equal(r.got.length, 2);
    assert.ok(r.got[1]!.at - t0 >= 150, `retried after ${r.got[1]!.at - t0} ms`);
    assert.deepEqual(ch.stats(), { sent: 1, failed: 0, retried: 1, pending: 0 });
    assert.match(logs[0]!.msg, /no answer from http:\/\/127\.0\.0\.1:\d+ within 150 ms/);
  } finally {
    await r.close();
  }
});

test('a 400 is not retried and is counted failed; a dead receiver fails after every retry', async () => {
  const r = await receiver((_n, res) => answer(res, 400));
  const logs: LogEntry[] = [];
  const ch = new WebhookChannel({ url: r.url, backoffMs: 1, log: (e) => logs.push(e) });
  try {
    await ch.send(alertPayload('b', 'fired'));
    assert.equal(r.got.length, 1);
    assert.deepEqual(ch.stats(), { sent: 0, failed: 1, retried: 0, pending: 0 });
    assert.match(logs.at(-1)!.msg, /delivery failed after 1 attempt\(s\): http:\/\/127\.0\.0\.1:\d+ answered 400: status 400/);
  } finally {
    await r.close();
  }
  // The port is closed now: connection refused on every attempt.
  const dead = new WebhookChannel({ url: r.url, retries: 2, backoffMs: 1, log: (e) => logs.push(e) });
  await dead.send(alertPayload('d', 'fired'));
  assert.deepEqual(dead.stats(), { sent: 0, failed: 1, retried: 2, pending: 0 });
  assert.match(logs.at(-1)!.msg, /after 3 attempt\(s\): .*ECONNREFUSED/);
});

test('Retry-After on 429 and 503 is honoured over the backoff, and capped', async () => {
  const r = await receiver((n, res) => (n === 0 ? answer(res, 429, { 'retry-after': '1' }) : answer(res, 200)));
  const ch = new WebhookChannel({ url: r.url, backoffMs: 1 });
  try {
    await ch.send(alertPayload('r', 'fired'));
    const gap = r.got[1]!.at - r.got[0]!.at;
    assert.ok(gap >= 950 && gap < 2000, `waited ${gap} ms for Retry-After: 1`);
    assert.deepEqual(ch.stats(), { sent: 1, failed: 0, retried: 1, pending: 0 });
  } finally {
    await r.close();
  }
  const capped = await receiver((n, res) => (n === 0 ? answer(res, 503, { 'retry-after': '3600' }) : answer(res, 200)));
  const ch2 = new WebhookChannel({ url: capped.url, backoffMs: 1, maxRetryAfterMs: 100 });
  try {
    await ch2.send(alertPayload('c', 'fired'));
    const gap = capped.got[1]!.at - capped.got[0]!.at;
    assert.ok(gap >= 95 && gap < 900, `waited ${gap} ms with Retry-After: 3600 capped at 100 ms`);
  } finally {
    await capped.close();
  }
});

test('retryAfterMs reads delay-seconds and HTTP dates', () => {
  assert.equal(retryAfterMs(null), undefined);
  assert.equal(retryAfterMs('120'), 120_000);
  assert.equal(retryAfterMs(' 0 '), 0);
  const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
  assert.equal(retryAfterMs('Wed, 21 Oct 2015 07:28:30 GMT', now), 30_000);
  assert.equal(retryAfterMs('Wed, 21 Oct 2015 07:27:00 GMT', now), 0);
  assert.equal(retryAfterMs('soon', now), undefined);
});

test('alerts from the AlertManager reach a webhook with Slack-compatible text, in order', async () => {
  const r = await receiver((n, res) => answer(res, n === 0 ? 502 : 200));
  const ch = new WebhookChannel({ url: r.url, backoffMs: 10 });
  const clock = { t: 0 };
  const m = new AlertManager({
    rules: [{ name: 'score_psi_critical', metric: 'score_psi', comparison: '>', threshold: 0.25, forSeconds: 60, severity: 'critical' }],
    channels: [ch],
    now: () => clock.t,
  });
  const labels = { model: 'credit-default', version: '1' };
  try {
    m.evaluate([{ labels, metrics: { score_psi: 0.31 } }]);
    clock.t = 60_000;
    const [fired] = m.evaluate([{ labels, metrics: { score_psi: 0.31 } }]);
    clock.t = 90_000;
    m.evaluate([{ labels, metrics: { score_psi: 0.05 } }]);
    await m.drain();
    const delivered = r.got.slice(1);
    assert.deepEqual(
      delivered.map((g) => g.body.text),
      [
        '[CRITICAL] FIRING score_psi_critical: score PSI of credit-default v1 is 0.31 (> 0.25 for 60 s)',
        '[CRITICAL] RESOLVED score_psi_critical: score PSI of credit-default v1 is 0.05 (no longer > 0.25)',
      ],
    );
    assert.deepEqual(delivered[0]!.body, JSON.parse(JSON.stringify(fired)));
    assert.deepEqual(
      delivered.map((g) => [g.body.event, g.body.alert!.state, g.body.alert!.id]),
      [
        ['fired', 'firing', fired!.alert.id],
        ['resolved', 'resolved', fired!.alert.id],
      ],
    );
    assert.deepEqual(ch.stats(), { sent: 2, failed: 0, retried: 1, pending: 0 });
  } finally {
    await r.close();
  }
});

test('notify() sends job payloads to every channel and never rejects', async () => {
  const r = await receiver((_n, res) => answer(res, 200));
  const good = new WebhookChannel({ url: r.url });
  const broken = {
    name: 'broken',
    send: (): Promise<void> => {
      throw new Error('sync failure');
    },
  };
  const rejecting = { name: 'rejecting', send: () => Promise.reject(new Error('async failure')) };
  try {
    const payload = {
      text: 'retraining job j1 for credit-default succeeded: challenger v2 promoted',
      event: 'succeeded',
      job: { id: 'j1', model: 'credit-default' },
    };
    await notify([broken, good, rejecting], payload);
    assert.deepEqual(
      r.got.map((g) => g.body),
      [payload],
    );
    assert.equal(good.stats().sent, 1);
  } finally {
    await r.close();
  }
});

test('closing stops retries; a full queue and bad options are reported, not thrown at send', async () => {
  const r = await receiver((_n, res) => answer(res, 500));
  const ch = new WebhookChannel({ url: r.url, backoffMs: 10_000, maxPending: 1 });
  try {
    const first = ch.send(alertPayload('x', 'fired'));
    await ch.send(alertPayload('y', 'fired')); // dropped: one delivery already pending
    assert.equal(ch.stats().failed, 1);
    await waitFor(() => ch.stats().retried > 0, {
      timeoutMs: 5000,
      intervalMs: 5,
      message: () => `the first delivery to fail and be queued for a retry: ${JSON.stringify(ch.stats())}`,
    });
    ch.close();
    await first;
    assert.deepEqual(ch.stats(), { sent: 0, failed: 2, retried: 1, pending: 0 });
    assert.equal(r.got.length, 1);
  } finally {
    await r.close();
  }
  assert.throws(() => new WebhookChannel({ url: 'ftp://example.com/x' }), /must be http or https/);
  assert.throws(() => new WebhookChannel({ url: 'not a url' }), /not a valid URL/);
  assert.throws(() => new WebhookChannel({ url: 'http://x', timeoutMs: -1 }), /timeoutMs must be a number >= 0/);
});
