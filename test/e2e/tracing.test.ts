// Tracing end to end: a real scoreline server exporting to an OTLP/HTTP receiver run by the test.
// A request's SERVER span continues the caller's traceparent (same trace, the caller's span as
// parent, tracestate kept), carries model, version, variant and route, has queue / inference
// (and for entity scoring, feature lookup) children, and its traceparent comes back on the answer;
// a caller's "not sampled" is followed; a collector that refuses for a while is retried; with
// tracing off no trace header is parsed or sent.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { DEMO_REPO, request, ROOT, startServer, tempDir, type TestServer } from './server.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './otlp-receiver.js';
import { waitFor } from '../fixtures/wait.js';

const ROW = [24, 5200, 37, 52000, 6.5, 120, 1, 0.42, 3, 0];
const OIP = { inputs: [{ name: 'input', shape: [1, 10], datatype: 'FP32', data: ROW }] };
const hex = (n: number) => Array.from({ length: n }, () => Math.floor(Math.random() * 16).toString(16)).join('');

async function configFile(extra: Record<string, unknown>): Promise<string> {
  const dir = await tempDir('scoreline-tracing-');
  const file = join(dir, 'config.yaml');
  await writeFile(
    file,
    stringify({ modelRepository: DEMO_REPO, features: { definitions: join(ROOT, 'examples', 'features', 'features.yaml') }, ...extra }),
  );
  return file;
}

/** Waits (bounded) until `pick` finds what it wants among the received spans. */
async function spansFor<T>(receiver: OtlpReceiver, pick: (spans: ReceivedSpan[]) => T | undefined, what: string, ms = 15_000): Promise<T> {
  const found = await waitFor(
    () => {
      const v = pick(receiver.spans);
      return v === undefined ? undefined : { v };
    },
    {
      timeoutMs: ms,
      intervalMs: 25,
      message: () => `${what}; received: ${receiver.spans.map((s) => `${s.name}@${s.traceId}`).join(', ')}`,
    },
  );
  return found.v;
}

describe('tracing on, exporting OTLP/protobuf to a receiver', () => {
  let receiver: OtlpReceiver;
  let server: TestServer;

  before(async () => {
    receiver = await startOtlpReceiver();
    server = await startServer([
      '--config',
      await configFile({ tracing: { otlpEndpoint: receiver.url, exportIntervalMs: 50, sampleRatio: 1 } }),
    ]);
  });
  after(async () => {
    await server?.stop();
    await receiver?.close();
  });

  test("an inference continues the caller's trace: server span, queue and inference children, attributes, traceparent back", async () => {
    const traceId = hex(32);
    const callerSpan = hex(16);
    const r = await request(`${server.url}/v2/models/credit-default/infer`, {
      json: OIP,
      headers: { traceparent: `00-${traceId}-${callerSpan}-01`, tracestate: 'vendor=abc,other=1', 'x-request-id': 'trace-req-1' },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.id, 'trace-req-1', 'x-request-id names the prediction');
    const back = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(r.headers.get('traceparent') ?? '');
    assert.ok(back, `traceparent on the answer: ${r.headers.get('traceparent')}`);
    assert.equal(back[1], traceId, 'same trace');
    assert.notEqual(back[2], callerSpan, "the server's own span");

    const spans = await spansFor(
      receiver,
      (all) => {
        const mine = all.filter((s) => s.traceId === traceId);
        return mine.length >= 3 ? mine : undefined;
      },
      'the request span and its children',
    );
    const root = spans.find((s) => s.parentSpanId === callerSpan)!;
    assert.ok(root, "a span whose parent is the caller's");
    assert.equal(root.spanId, back[2], 'the traceparent sent back names the server span');
    assert.equal(root.name, 'POST /v2/models/:model/infer');
    assert.equal(root.kind, 2, 'SERVER');
    assert.equal(root.traceState, 'vendor=abc,other=1', 'tracestate is carried');
    assert.equal(root.attributes['http.route'], '/v2/models/:model/infer');
    assert.equal(root.attributes['http.request.method'], 'POST');
    assert.equal(root.attributes['url.path'], '/v2/models/credit-default/infer');
    assert.equal(root.attributes['http.response.status_code'], 200);
    assert.equal(root.attributes['scoreline.model'], 'credit-default');
    assert.equal(root.attributes['scoreline.model_version'], '1');
    assert.equal(root.attributes['scoreline.variant'], 'default');
    assert.equal(root.attributes['scoreline.request_id'], 'trace-req-1');
    assert.equal(root.status, 0, 'not an error');
    assert.equal(root.resource['service.name'], 'scoreline');
    assert.equal(root.scope, 'scoreline');

    const queue = spans.find((s) => s.name === 'queue');
    const inference = spans.find((s) => s.name === 'inference');
    assert.ok(queue && inference, `children: ${spans.map((s) => s.name).join(', ')}`);
    for (const child of [queue, inference]) {
      assert.equal(child.parentSpanId, root.spanId, `${child.name} is a child of the request span`);
      assert.ok(child.startNs >= root.startNs && child.endNs <= root.endNs, `${child.name} lies within the request`);
    }
    assert.ok(queue.endNs <= inference.startNs + 1000n, 'the queue wait ends where the inference starts');
    assert.equal(inference.attributes['scoreline.batch.rows'], 1);
    assert.equal(inference.attributes['scoreline.batch.requests'], 1);
    assert.equal(typeof inference.attributes['scoreline.batch.seq'], 'number');
    assert.equal(typeof inference.attributes['scoreline.compute_ms'], 'number');
    assert.ok(
      receiver.contentTypes.every((t) => t === 'application/x-protobuf'),
      `protobuf by default: ${receiver.contentTypes.join(', ')}`,
    );
  });

  test('entity scoring has a feature lookup span; a request without a traceparent starts a trace of its own', async () => {
    const r = await request(`${server.url}/v1/score/credit-default`, {
      json: { entity: { customer_id: 'C00042' }, context: { amount: 5200, duration_months: 24 } },
    });
    assert.equal(r.status, 200, r.text);
    const back = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(r.headers.get('traceparent') ?? '');
    assert.ok(back, 'sampled at sampleRatio 1');
    const spans = await spansFor(
      receiver,
      (all) => {
        const mine = all.filter((s) => s.traceId === back[1]);
        return mine.some((s) => s.name === 'feature lookup') &&
          mine.some((s) => s.name === 'inference') &&
          mine.some((s) => s.parentSpanId === '')
          ? mine
          : undefined;
      },
      'the scoring trace',
    );
    const root = spans.find((s) => s.parentSpanId === '')!;
    assert.equal(root.name, 'POST /v1/score/:model');
    assert.equal(root.attributes['scoreline.model'], 'credit-default');
    assert.equal(root.attributes['scoreline.request_id'], r.body.request_id);
    const lookup = spans.find((s) => s.name === 'feature lookup')!;
    assert.equal(lookup.parentSpanId, root.spanId);
    assert.ok(lookup.endNs <= spans.find((s) => s.name === 'inference')!.startNs + 1000n, 'features are looked up before inference');
  });

  test('a caller that did not sample is followed: the answer carries flags 00 and nothing is exported', async () => {
    const unsampled = hex(32);
    const r = await request(`${server.url}/v2/models/credit-default/infer`, {
      json: OIP,
      headers: { traceparent: `00-${unsampled}-${hex(16)}-00` },
    });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('traceparent') ?? '', new RegExp(`^00-${unsampled}-[0-9a-f]{16}-00$`));
    // A sampled request sent after it: once its spans are in, the unsampled one's would have been too.
    const sampled = hex(32);
    await request(`${server.url}/v2/models/credit-default/infer`, { json: OIP, headers: { traceparent: `00-${sampled}-${hex(16)}-01` } });
    await spansFor(receiver, (all) => (all.some((s) => s.traceId === sampled && s.kind === 2) ? true : undefined), 'the sampled request');
    assert.equal(receiver.spans.filter((s) => s.traceId === unsampled).length, 0);
  });

  test('a malformed traceparent is ignored: a new trace starts and the request is served', async () => {
    for (const bad of [
      `00-${'0'.repeat(32)}-${hex(16)}-01`,
      `ff-${hex(32)}-${hex(16)}-01`,
      'garbage',
      `00-${hex(32)}-${hex(16)}-01-extra`,
    ]) {
      const r = await request(`${server.url}/v2/models/credit-default/infer`, { json: OIP, headers: { traceparent: bad } });
      assert.equal(r.status, 200, bad);
      const back = /^00-([0-9a-f]{32})-[0-9a-f]{16}-01$/.exec(r.headers.get('traceparent') ?? '');
      assert.ok(back, bad);
      assert.ok(!bad.includes(back[1]!), `${bad}: not continued`);
    }
  });

  test('errors are spans too: a 404 carries its status and is no server error; health checks are not traced', async () => {
    const traceId = hex(32);
    const r = await request(`${server.url}/v2/models/nope/infer`, { json: OIP, headers: { traceparent: `00-${traceId}-${hex(16)}-01` } });
    assert.equal(r.status, 404);
    const span = await spansFor(receiver, (all) => all.find((s) => s.traceId === traceId), 'the 404 span');
    assert.equal(span.attributes['http.response.status_code'], 404);
    assert.equal(span.status, 0, 'a 4xx is not a server error');
    const h = await request(`${server.url}/v2/health/ready`, { headers: { traceparent: `00-${hex(32)}-${hex(16)}-01` } });
    assert.equal(h.headers.get('traceparent'), null);
  });
});

test('a collector that refuses for a while gets the spans on retry; one that stays down costs requests nothing and is counted', async () => {
  const receiver = await startOtlpReceiver();
  const server = await startServer([
    '--config',
    await configFile({ tracing: { otlpEndpoint: `${receiver.url}/v1/traces`, exportIntervalMs: 50 } }),
  ]);
  try {
    receiver.failNext(2, 503);
    const traceId = hex(32);
    const r = await request(`${server.url}/v2/models/credit-default/infer`, {
      json: OIP,
      headers: { traceparent: `00-${traceId}-${hex(16)}-01` },
    });
    assert.equal(r.status, 200);
    await spansFor(receiver, (all) => (all.some((s) => s.traceId === traceId) ? true : undefined), 'the retried export');
    assert.equal(receiver.refused, 2);

    await receiver.close();
    const down = await request(`${server.url}/v2/models/credit-default/infer`, { json: OIP });
    assert.equal(down.status, 200, 'a dead collector does not touch requests');
    const failed = await waitFor(
      async () => Number(/^scoreline_trace_spans_failed_total (\d+)/m.exec((await request(`${server.url}/metrics`)).text)?.[1] ?? 0),
      { timeoutMs: 20_000, intervalMs: 100, message: 'the spans the dead collector did not take to be counted' },
    );
    assert.ok(failed >= 3, `the dropped spans are counted (${failed})`);
    assert.ok(
      server.logs.some((l) => l.includes('the collector did not take these spans')),
      'and logged',
    );
  } finally {
    await server.stop();
  }
});

test('OTLP/JSON when asked for', async () => {
  const receiver = await startOtlpReceiver();
  const server = await startServer([
    '--config',
    await configFile({ tracing: { otlpEndpoint: receiver.url, exportIntervalMs: 50, protocol: 'http/json', serviceName: 'scoring-eu' } }),
  ]);
  try {
    const traceId = hex(32);
    await request(`${server.url}/v2/models/credit-default/infer`, { json: OIP, headers: { traceparent: `00-${traceId}-${hex(16)}-01` } });
    const root = await spansFor(receiver, (all) => all.find((s) => s.traceId === traceId && s.kind === 2), 'the JSON export');
    assert.equal(root.attributes['scoreline.model'], 'credit-default');
    assert.equal(root.resource['service.name'], 'scoring-eu');
    assert.ok(receiver.contentTypes.every((t) => t.startsWith('application/json')));
  } finally {
    await server.stop();
    await receiver.close();
  }
});

test('tracing off: no trace header is read or sent', async () => {
  const server = await startServer(['--model-repo', DEMO_REPO]);
  try {
    const r = await request(`${server.url}/v2/models/credit-default/infer`, {
      json: OIP,
      headers: { traceparent: `00-${hex(32)}-${hex(16)}-01` },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('traceparent'), null);
    const m = await request(`${server.url}/metrics`);
    assert.doesNotMatch(m.text, /scoreline_trace_spans/);
  } finally {
    await server.stop();
  }
});
