// Notification channels for alerts and retraining jobs: the AlertChannel
// contract, a log channel, and a webhook channel that POSTs any JSON payload carrying a
// Slack-compatible `text` -- with a per-attempt timeout, retries with exponential backoff and
// jitter on network errors, 5xx and 429 (Retry-After honoured, capped), none on other 4xx.
//
// Delivery is asynchronous and never throws into the caller: send() resolves once the payload is
// delivered or given up, and outcomes are counted in stats(). Payloads about the same alert (same
// `alert.id`) or job (same `job.id`) go through one lane, so "resolved" never overtakes "fired";
// different alerts are delivered concurrently, so one slow receiver retry does not hold up the rest.

import { setTimeout as sleep } from 'node:timers/promises';
import { configInvalid } from '../errors.js';
import pkg from '../version.js';

/**
 * Anything a channel can deliver: alert notifications `{ text, event, alert }`, job notifications
 * `{ text, event, job }`. Every other field is posted as it is (the payload must be JSON-serialisable).
 */
export interface ChannelPayload {
  text: string;
  event: string;
  alert?: unknown;
  job?: unknown;
}

export interface AlertChannel {
  readonly name: string;
  /** Never rejects: failures are logged and counted by the channel. */
  send(payload: ChannelPayload): Promise<void>;
}

export type LogLevel = 'info' | 'warn' | 'error';
export interface LogEntry {
  level: LogLevel;
  msg: string;
  [key: string]: unknown;
}
export type LogFn = (entry: LogEntry) => void;

/** Hands a payload to every channel; resolves when all have finished, never rejects. */
export async function notify(channels: readonly AlertChannel[], payload: ChannelPayload): Promise<void> {
  await Promise.allSettled(
    channels.map((c) => {
      try {
        return c.send(payload);
      } catch (e) {
        return Promise.reject(e);
      }
    }),
  );
}

const subjectOf = (payload: ChannelPayload): Record<string, unknown> | undefined => {
  const s = payload.alert ?? payload.job;
  return s !== null && typeof s === 'object' ? (s as Record<string, unknown>) : undefined;
};

/** Writes each payload as one structured log line; fired warnings log at warn, fired critical/emergency at error. */
export class LogChannel implements AlertChannel {
  readonly name = 'log';

  constructor(private readonly log: LogFn) {}

  send(payload: ChannelPayload): Promise<void> {
    const severity = subjectOf(payload)?.severity;
    const level: LogLevel =
      payload.event !== 'fired'
        ? 'info'
        : severity === 'warning'
          ? 'warn'
          : severity === 'critical' || severity === 'emergency'
            ? 'error'
            : 'info';
    try {
      this.log({ ...payload, level, msg: payload.text });
    } catch {
      // A logger that throws must not break alert evaluation.
    }
    return Promise.resolve();
  }
}

export interface WebhookOptions {
  url: string;
  /** Per attempt, from the request to the end of the response body. */
  timeoutMs?: number;
  /** Attempts after the first. */
  retries?: number;
  /** First retry delay; doubles per retry, with jitter in [delay/2, delay]. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Upper bound on a receiver's Retry-After. */
  maxRetryAfterMs?: number;
  headers?: Record<string, string>;
  /** Deliveries queued or in flight beyond which new payloads are dropped (counted failed). */
  maxPending?: number;
  name?: string;
  log?: LogFn;
  /** [0, 1) source for the jitter. */
  random?: () => number;
}

export interface WebhookStats {
  sent: number;
  failed: number;
  /** Attempts after a first one, over all deliveries. */
  retried: number;
  /** Deliveries queued or in flight. */
  pending: number;
}

type Attempt = { ok: true } | { ok: false; retry: boolean; reason: string; retryAfterMs?: number };

/** Retry-After as delay-seconds or an HTTP-date, in ms from now; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (header === null) return undefined;
  const h = header.trim();
  if (/^\d+$/.test(h)) return Number(h) * 1000;
  const at = Date.parse(h);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export class WebhookChannel implements AlertChannel {
  readonly name: string;
  private readonly url: string;
  /** Origin only: webhook URLs (Slack's among them) carry their secret in the path. */
  private readonly where: string;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly maxPending: number;
  private readonly headers: Record<string, string>;
  private readonly log: LogFn;
  private readonly random: () => number;
  private readonly lanes = new Map<string, Promise<void>>();
  private readonly closing = new AbortController();
  private readonly counts = { sent: 0, failed: 0, retried: 0, pending: 0 };

  constructor(opts: WebhookOptions) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw configInvalid(`webhook url is not a valid URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw configInvalid(`webhook url must be http or https, got ${u.protocol}`);
    const nonNegative = (v: number | undefined, fallback: number, what: string): number => {
      const n = v ?? fallback;
      if (!Number.isFinite(n) || n < 0) throw configInvalid(`webhook ${what} must be a number >= 0, got ${v}`);
      return n;
    };
    this.url = opts.url;
    this.where = u.origin;
    this.name = opts.name ?? `webhook ${u.origin}`;
    this.timeoutMs = nonNegative(opts.timeoutMs, 3000, 'timeoutMs');
    this.retries = Math.floor(nonNegative(opts.retries, 4, 'retries'));
    this.backoffMs = nonNegative(opts.backoffMs, 200, 'backoffMs');
    this.maxBackoffMs = nonNegative(opts.maxBackoffMs, 30_000, 'maxBackoffMs');
    this.maxRetryAfterMs = nonNegative(opts.maxRetryAfterMs, 30_000, 'maxRetryAfterMs');
    this.maxPending = nonNegative(opts.maxPending, 1000, 'maxPending');
    this.headers = { 'content-type': 'application/json', 'user-agent': `scoreline/${pkg.version}`, ...opts.headers };
    const log = opts.log;
    this.log = (entry) => {
      try {
        log?.(entry);
      } catch {
        // A throwing logger must not turn a delivery into a rejection.
      }
    };
    this.random = opts.random ?? Math.random;
  }

  send(payload: ChannelPayload): Promise<void> {
    let body: string;
    try {
      body = JSON.stringify(payload); // now: the caller may change its objects after send returns
    } catch (e) {
      return this.fail(`payload is not serialisable: ${(e as Error).message}`);
    }
    if (this.closing.signal.aborted) return this.fail('the channel is closed');
    if (this.counts.pending >= this.maxPending) return this.fail(`${this.counts.pending} deliveries already pending`);
    const id = subjectOf(payload)?.id;
    const lane = typeof id === 'string' || typeof id === 'number' ? `${payload.alert !== undefined ? 'alert' : 'job'}:${id}` : '';
    this.counts.pending++;
    const next = (this.lanes.get(lane) ?? Promise.resolve())
      .then(() => this.deliver(body, payload.text))
      .finally(() => {
        this.counts.pending--;
        if (this.lanes.get(lane) === next) this.lanes.delete(lane);
      });
    this.lanes.set(lane, next);
    return next;
  }

  stats(): WebhookStats {
    return { ...this.counts };
  }

  /** Resolves when every delivery accepted so far has finished. */
  async drain(): Promise<void> {
    while (this.lanes.size > 0) await Promise.all(this.lanes.values());
  }

  /** Aborts attempts in flight and stops retrying; later sends are counted failed. */
  close(): void {
    this.closing.abort();
  }

  private fail(reason: string): Promise<void> {
    this.counts.failed++;
    this.log({ level: 'error', msg: `${this.name}: notification dropped: ${reason}` });
    return Promise.resolve();
  }

  private async deliver(body: string, text: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const r = this.closing.signal.aborted
        ? { ok: false as const, retry: false, reason: 'the channel is closed' }
        : await this.attempt(body);
      if (r.ok) {
        this.counts.sent++;
        return;
      }
      if (!r.retry || attempt >= this.retries || this.closing.signal.aborted) {
        this.counts.failed++;
        this.log({ level: 'error', msg: `${this.name}: delivery failed after ${attempt + 1} attempt(s): ${r.reason}`, text });
        return;
      }
      this.counts.retried++;
      const backoff = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** attempt);
      const delay = r.retryAfterMs !== undefined ? Math.min(r.retryAfterMs, this.maxRetryAfterMs) : backoff * (0.5 + 0.5 * this.random());
      this.log({ level: 'warn', msg: `${this.name}: attempt ${attempt + 1} failed (${r.reason}); retrying in ${Math.round(delay)} ms` });
      await sleep(delay, undefined, { signal: this.closing.signal }).catch(() => {});
    }
  }

  private async attempt(body: string): Promise<Attempt> {
    const ctl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctl.abort();
    }, this.timeoutMs);
    const onClose = () => ctl.abort();
    this.closing.signal.addEventListener('abort', onClose, { once: true });
    try {
      const res = await fetch(this.url, { method: 'POST', headers: this.headers, body, signal: ctl.signal });
      // Read the body so the connection goes back to the pool; its content is only for the log.
      const detail = (await res.text()).slice(0, 200);
      if (res.ok) return { ok: true };
      const reason = `${this.where} answered ${res.status}${detail ? `: ${detail}` : ''}`;
      if (res.status !== 429 && res.status < 500) return { ok: false, retry: false, reason };
      const after = retryAfterMs(res.headers.get('retry-after'));
      return after === undefined ? { ok: false, retry: true, reason } : { ok: false, retry: true, reason, retryAfterMs: after };
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const reason = timedOut
        ? `no answer from ${this.where} within ${this.timeoutMs} ms`
        : `${this.where}: ${cause?.code ?? cause?.message ?? (e as Error).message}`;
      return { ok: false, retry: true, reason };
    } finally {
      clearTimeout(timer);
      this.closing.signal.removeEventListener('abort', onClose);
    }
  }
}
