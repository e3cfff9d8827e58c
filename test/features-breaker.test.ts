// The Redis store's circuit breaker as a state machine, with a probe the test answers: it opens
// after N failures in a row (a success in between resets the count), refuses while open, probes
// only while open and one probe at a time, goes half-open when a probe answers, admits exactly one
// trial there, closes on the trial's success and reopens on its failure; late answers to requests
// sent before it opened do not close it; opening and closing are reported once per outage.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ADMITTED, CircuitBreaker, REFUSED, TRIAL } from '../src/features/breaker.js';
import { elapse, waitFor } from './fixtures/wait.js';

/** A probe the test resolves or rejects by hand, counting calls. */
function handProbe() {
  const pending: { resolve: () => void; reject: (e: Error) => void }[] = [];
  return {
    calls: 0,
    pending,
    probe(): Promise<void> {
      this.calls++;
      return new Promise<void>((resolve, reject) => pending.push({ resolve, reject }));
    },
  };
}

async function until(ms: number, check: () => boolean): Promise<void> {
  await waitFor(check, { timeoutMs: ms, intervalMs: 5, message: `${check}` });
}

function breaker(failures = 3) {
  const p = handProbe();
  const events: string[] = [];
  const b = new CircuitBreaker({
    failures,
    probeMs: 10,
    probe: () => p.probe(),
    onOpen: (n, cause) => events.push(`open ${n} ${cause}`),
    onClose: () => events.push('close'),
  });
  return { b, p, events };
}

test('opens after N failures in a row; a success in between resets the count', () => {
  const { b, events } = breaker(3);
  try {
    b.failure(b.admit(), 'timeout');
    b.failure(b.admit(), 'timeout');
    b.success(b.admit());
    b.failure(b.admit(), 'timeout');
    b.failure(b.admit(), 'timeout');
    assert.equal(b.state, 'closed');
    assert.equal(b.admitting, true);
    assert.equal(b.admit(), ADMITTED);
    b.failure(ADMITTED, 'timeout');
    assert.equal(b.state, 'open');
    assert.equal(b.admitting, false);
    assert.equal(b.admit(), REFUSED);
    // failures of requests already in flight when it opened change nothing, and are not reported again
    b.failure(ADMITTED, 'timeout');
    b.failure(ADMITTED, 'timeout');
    assert.deepEqual(events, ['open 3 timeout']);
  } finally {
    b.stop();
  }
});

test('probes while open, one at a time; an answer half-opens it and one trial closes it', async () => {
  const { b, p, events } = breaker(1);
  try {
    assert.equal(p.calls, 0, 'no probing while closed');
    b.failure(b.admit(), 'timeout');
    await until(2000, () => p.calls >= 1);
    // a probe that has not answered yet is not duplicated, however many periods pass
    // (elapsed time is the subject: five probe periods in which a second probe must NOT start)
    await elapse(50);
    assert.equal(p.calls, 1);
    p.pending.shift()!.reject(new Error('Command timed out'));
    await until(2000, () => p.calls >= 2);
    assert.equal(b.state, 'open', 'a failed probe keeps it open');
    // a late answer to a request sent before it opened does not close it
    b.success(ADMITTED);
    assert.equal(b.state, 'open');
    p.pending.shift()!.resolve();
    await until(2000, () => b.state === 'half-open');
    assert.equal(b.admitting, true);
    assert.equal(b.admit(), TRIAL);
    assert.equal(b.admitting, false, 'one trial at a time');
    assert.equal(b.admit(), REFUSED);
    const calls = p.calls;
    // Elapsed time is the subject: five probe periods in which no probe may start.
    await elapse(50);
    assert.equal(p.calls, calls, 'no probing while half-open');
    b.success(TRIAL);
    assert.equal(b.state, 'closed');
    assert.equal(b.admit(), ADMITTED);
    assert.deepEqual(events, ['open 1 timeout', 'close']);
  } finally {
    b.stop();
  }
});

test('a failed trial reopens it and probing resumes; a trial that was never sent frees the slot', async () => {
  const { b, p, events } = breaker(1);
  try {
    b.failure(b.admit(), 'connection: reset');
    await until(2000, () => p.calls >= 1);
    p.pending.shift()!.resolve();
    await until(2000, () => b.state === 'half-open');
    const trial = b.admit();
    b.release(trial);
    assert.equal(b.admitting, true, 'the next caller may be the trial');
    const second = b.admit();
    assert.equal(second, TRIAL);
    // a non-trial result in half-open (a request from before) decides nothing
    b.failure(ADMITTED, 'timeout');
    assert.equal(b.state, 'half-open');
    b.failure(second, 'timeout');
    assert.equal(b.state, 'open');
    assert.equal(b.admit(), REFUSED);
    await until(2000, () => p.calls >= 2);
    p.pending.shift()!.resolve();
    await until(2000, () => b.state === 'half-open');
    b.success(b.admit());
    assert.equal(b.state, 'closed');
    assert.deepEqual(events, ['open 1 connection: reset', 'close'], 'one report per outage, however many trials');
  } finally {
    b.stop();
  }
});

test('stop() ends probing', async () => {
  const { b, p } = breaker(1);
  b.failure(b.admit(), 'timeout');
  b.stop();
  // Elapsed time is the subject: five probe periods in which no probe may start.
  await elapse(50);
  assert.equal(p.calls, 0);
});

test('refuses a threshold below 1', () => {
  assert.throws(() => new CircuitBreaker({ failures: 0, probeMs: 10, probe: async () => undefined }), /failures must be >= 1/);
});
