// Tracing pieces on their own: W3C traceparent parsing (the specification's rules for versions,
// lengths, all-zero ids), the collector URL, the test receiver's protobuf decoder checked against
// the OpenTelemetry serializer's output, and the access log's buffer (written from a timer,
// bounded, counted).

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { pino } from 'pino';
import { AccessLog, ACCESS_FLUSH_MS, ACCESS_MAX_BUFFERED, type AccessRecord } from '../src/server/access-log.js';
import { tracesUrl } from '../src/server/otlp-exporter.js';
import { formatTraceparent, parseTraceparent } from '../src/server/traceparent.js';
import { decodeTraceJson, decodeTraceRequest } from './e2e/otlp-receiver.js';
import { waitFor } from './fixtures/wait.js';

const T = '4bf92f3577b34da6a3ce929d0e0e4736';
const S = '00f067aa0ba902b7';

test('traceparent: valid headers parse; malformed ones are null', () => {
  assert.deepEqual(parseTraceparent(`00-${T}-${S}-01`), { traceId: T, spanId: S, flags: 1 });
  assert.deepEqual(parseTraceparent(` 00-${T}-${S}-00 `), { traceId: T, spanId: S, flags: 0 });
  assert.deepEqual(parseTraceparent(`01-${T}-${S}-03-future-field`), { traceId: T, spanId: S, flags: 3 }, 'a later version may add fields');
  for (const bad of [
    '',
    `00-${T}-${S}-1`,
    `00-${T}-${S}-01-extra`,
    `ff-${T}-${S}-01`,
    `00-${'0'.repeat(32)}-${S}-01`,
    `00-${T}-${'0'.repeat(16)}-01`,
    `00-${T.toUpperCase()}-${S}-01`,
    `00-${T}-${S}-0g`,
    `00_${T}-${S}-01`,
    `01-${T}-${S}-01x`,
  ]) {
    assert.equal(parseTraceparent(bad), null, bad);
  }
  assert.equal(formatTraceparent(T, S, 1), `00-${T}-${S}-01`);
  assert.equal(formatTraceparent(T, S, 0), `00-${T}-${S}-00`);
});

test('the collector URL: a base gets /v1/traces, a full URL is kept', () => {
  assert.equal(tracesUrl('http://collector:4318'), 'http://collector:4318/v1/traces');
  assert.equal(tracesUrl('http://collector:4318/'), 'http://collector:4318/v1/traces');
  assert.equal(tracesUrl('https://otel.example.com/custom/traces'), 'https://otel.example.com/custom/traces');
});

test('the test receiver decodes what the OpenTelemetry serializers encode, protobuf and JSON', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'svc' }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('scope-x');
  const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId: T, spanId: S, traceFlags: 1, isRemote: true });
  const root = tracer.startSpan(
    'root',
    { kind: SpanKind.SERVER, attributes: { s: 'v', i: 42, neg: -7, d: 1.5, b: true, arr: ['x', 'y'] } },
    parent,
  );
  const child = tracer.startSpan('child', {}, trace.setSpan(ROOT_CONTEXT, root));
  child.end();
  root.end();
  const spans = exporter.getFinishedSpans();
  for (const [name, decoded] of [
    ['protobuf', decodeTraceRequest(Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!))],
    ['json', decodeTraceJson(Buffer.from(JsonTraceSerializer.serializeRequest(spans)!))],
  ] as const) {
    const r = decoded.find((s) => s.name === 'root')!;
    const c = decoded.find((s) => s.name === 'child')!;
    assert.equal(r.traceId, T, name);
    assert.equal(r.parentSpanId, S, name);
    assert.equal(r.spanId, root.spanContext().spanId, name);
    assert.equal(r.kind, 2, name);
    assert.deepEqual(r.attributes, { s: 'v', i: 42, neg: -7, d: 1.5, b: true, arr: ['x', 'y'] }, name);
    assert.equal(r.resource['service.name'], 'svc', name);
    assert.equal(r.scope, 'scope-x', name);
    assert.equal(c.parentSpanId, r.spanId, name);
    assert.equal(c.kind, 1, name);
    assert.ok(r.endNs >= r.startNs && r.startNs > 1_600_000_000_000_000_000n, name);
  }
});

test('the access log writes from a timer, not in push(), and drops (counted) beyond its bound', async () => {
  const lines: Record<string, unknown>[] = [];
  let writes = 0;
  const sink = new Writable({
    write(chunk, _enc, cb) {
      writes++;
      for (const l of String(chunk).split('\n')) if (l !== '') lines.push(JSON.parse(l));
      cb();
    },
  });
  const access = new AccessLog(pino({ base: { service: 't' } }, sink), 1);
  const rec = (i: number): AccessRecord => ({
    method: 'POST',
    path: `/p/${i}`,
    status: 200,
    duration_ms: 0.5,
    model: 'm',
    version: '1',
    variant: 'default',
    request_id: `r${i}`,
    key_id: 'k',
  });
  assert.ok(access.sample());
  access.push(rec(0));
  assert.equal(lines.length, 0, 'nothing is written while the request is answered');
  await waitFor(() => lines.length > 0, { timeoutMs: ACCESS_FLUSH_MS * 20, intervalMs: 10, message: 'the access log line to be flushed' });
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.component, 'access');
  assert.equal(lines[0]!.service, 't', "the server logger's bindings");
  assert.equal(lines[0]!.msg, 'request');
  assert.match(String(lines[0]!.time), /^\d{4}-\d\d-\d\dT/);
  assert.equal(lines[0]!.path, '/p/0');
  assert.equal(lines[0]!.key_id, 'k');
  for (let i = 0; i < ACCESS_MAX_BUFFERED + 5; i++) access.push(rec(i));
  assert.equal(access.dropped, 5);
  const before = writes;
  access.close();
  assert.equal(writes - before, 1, 'a flush is one write');
  assert.equal(lines.length, 1 + ACCESS_MAX_BUFFERED);
  assert.equal(access.written, 1 + ACCESS_MAX_BUFFERED);
  const none = new AccessLog(pino(sink), 0);
  assert.equal(Array.from({ length: 1000 }, () => none.sample()).some(Boolean), false);
  const quiet = new AccessLog(pino({ level: 'warn' }, sink), 1);
  assert.equal(quiet.sample(), false, 'a server logging at warn keeps no access log');
  const some = new AccessLog(pino(sink), 0.1);
  const n = Array.from({ length: 20_000 }, () => some.sample()).filter(Boolean).length;
  assert.ok(n > 1600 && n < 2400, `about 10% sampled: ${n}`);
});
