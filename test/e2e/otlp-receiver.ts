// An OTLP/HTTP trace receiver for tests: a node http server at /v1/traces that decodes
// ExportTraceServiceRequest bodies, protobuf (application/x-protobuf) or JSON, into plain span
// records. The protobuf decoder reads the wire format by the field numbers of the OpenTelemetry
// proto definitions (opentelemetry/proto/trace/v1/trace.proto, common/v1/common.proto); the
// @opentelemetry/otlp-transformer package at this version ships a hand-written encoder and no
// .proto files, and test/otlp-receiver.test.ts checks this decoder against that encoder's output.

import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type AttrValue = string | number | boolean | null | AttrValue[];

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  traceState: string;
  name: string;
  /** SpanKind as OTLP numbers it: 1 internal, 2 server, 3 client. */
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, AttrValue>;
  /** Status code: 0 unset, 1 ok, 2 error. */
  status: number;
  resource: Record<string, AttrValue>;
  scope: string;
}

type Field = { n: number; wire: number; v: bigint | Buffer };

/** The fields of one protobuf message, in order (a repeated field appears once per element). */
export function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let pos = 0;
  const varint = (): bigint => {
    let r = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= buf.length) throw new Error('truncated varint');
      const b = buf[pos++]!;
      r |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return r;
      shift += 7n;
    }
  };
  while (pos < buf.length) {
    const tag = Number(varint());
    const n = tag >>> 3;
    const wire = tag & 7;
    if (wire === 0) out.push({ n, wire, v: varint() });
    else if (wire === 1) {
      out.push({ n, wire, v: buf.subarray(pos, pos + 8) });
      pos += 8;
    } else if (wire === 2) {
      const len = Number(varint());
      out.push({ n, wire, v: buf.subarray(pos, pos + len) });
      pos += len;
    } else if (wire === 5) {
      out.push({ n, wire, v: buf.subarray(pos, pos + 4) });
      pos += 4;
    } else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}

const bytes = (f: Field) => f.v as Buffer;
const str = (f: Field) => (f.v as Buffer).toString('utf8');

function anyValue(buf: Buffer): AttrValue {
  for (const f of fields(buf)) {
    if (f.n === 1) return str(f);
    if (f.n === 2) return (f.v as bigint) !== 0n;
    if (f.n === 3) return Number(BigInt.asIntN(64, f.v as bigint));
    if (f.n === 4) return bytes(f).readDoubleLE(0);
    if (f.n === 5)
      return fields(bytes(f))
        .filter((x) => x.n === 1)
        .map((x) => anyValue(bytes(x)));
  }
  return null;
}

function keyValues(list: Field[]): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const kv of list) {
    let k = '';
    let v: AttrValue = null;
    for (const f of fields(bytes(kv))) {
      if (f.n === 1) k = str(f);
      else if (f.n === 2) v = anyValue(bytes(f));
    }
    out[k] = v;
  }
  return out;
}

/** Decodes an ExportTraceServiceRequest (protobuf). */
export function decodeTraceRequest(body: Buffer): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const rs of fields(body).filter((f) => f.n === 1)) {
    let resource: Record<string, AttrValue> = {};
    const rsFields = fields(bytes(rs));
    for (const f of rsFields) if (f.n === 1) resource = keyValues(fields(bytes(f)).filter((x) => x.n === 1));
    for (const ss of rsFields.filter((f) => f.n === 2)) {
      let scope = '';
      const ssFields = fields(bytes(ss));
      for (const f of ssFields)
        if (f.n === 1)
          scope =
            fields(bytes(f))
              .filter((x) => x.n === 1)
              .map(str)[0] ?? '';
      for (const sp of ssFields.filter((f) => f.n === 2)) {
        const s: ReceivedSpan = {
          traceId: '',
          spanId: '',
          parentSpanId: '',
          traceState: '',
          name: '',
          kind: 0,
          startNs: 0n,
          endNs: 0n,
          attributes: {},
          status: 0,
          resource,
          scope,
        };
        const attrs: Field[] = [];
        for (const f of fields(bytes(sp))) {
          if (f.n === 1) s.traceId = bytes(f).toString('hex');
          else if (f.n === 2) s.spanId = bytes(f).toString('hex');
          else if (f.n === 3) s.traceState = str(f);
          else if (f.n === 4) s.parentSpanId = bytes(f).toString('hex');
          else if (f.n === 5) s.name = str(f);
          else if (f.n === 6) s.kind = Number(f.v as bigint);
          else if (f.n === 7) s.startNs = bytes(f).readBigUInt64LE(0);
          else if (f.n === 8) s.endNs = bytes(f).readBigUInt64LE(0);
          else if (f.n === 9) attrs.push(f);
          else if (f.n === 15) for (const x of fields(bytes(f))) if (x.n === 3) s.status = Number(x.v as bigint);
        }
        s.attributes = keyValues(attrs);
        spans.push(s);
      }
    }
  }
  return spans;
}

type JsonAny = {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  arrayValue?: { values?: JsonAny[] };
};
const jsonAny = (v: JsonAny): AttrValue =>
  v.stringValue ??
  v.boolValue ??
  (v.intValue !== undefined ? Number(v.intValue) : undefined) ??
  v.doubleValue ??
  (v.arrayValue ? (v.arrayValue.values ?? []).map(jsonAny) : null);
const jsonAttrs = (list: { key: string; value: JsonAny }[] | undefined) =>
  Object.fromEntries((list ?? []).map((kv) => [kv.key, jsonAny(kv.value)]));

/** Decodes an ExportTraceServiceRequest in OTLP/JSON (ids as hex strings). */
export function decodeTraceJson(body: Buffer): ReceivedSpan[] {
  const req = JSON.parse(body.toString('utf8')) as { resourceSpans?: any[] };
  const spans: ReceivedSpan[] = [];
  for (const rs of req.resourceSpans ?? []) {
    const resource = jsonAttrs(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const sp of ss.spans ?? []) {
        spans.push({
          traceId: sp.traceId,
          spanId: sp.spanId,
          parentSpanId: sp.parentSpanId ?? '',
          traceState: sp.traceState ?? '',
          name: sp.name,
          kind: sp.kind,
          startNs: BigInt(sp.startTimeUnixNano),
          endNs: BigInt(sp.endTimeUnixNano),
          attributes: jsonAttrs(sp.attributes),
          status: sp.status?.code ?? 0,
          resource,
          scope: ss.scope?.name ?? '',
        });
      }
    }
  }
  return spans;
}

export interface OtlpReceiver {
  readonly url: string;
  readonly spans: ReceivedSpan[];
  /** Content types of the export requests received. */
  readonly contentTypes: string[];
  /** Answer the next `n` export requests with `status` (collector trouble). */
  failNext(n: number, status: number): void;
  /** Export requests answered with an error so far. */
  readonly refused: number;
  close(): Promise<void>;
}

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const contentTypes: string[] = [];
  let failing = { n: 0, status: 503 };
  let refused = 0;
  const server: Server = createServer((req, res) => {
    void readAll(req).then((body) => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      if (failing.n > 0) {
        failing.n--;
        refused++;
        res.writeHead(failing.status).end();
        return;
      }
      const type = String(req.headers['content-type'] ?? '');
      contentTypes.push(type);
      try {
        spans.push(...(type.startsWith('application/json') ? decodeTraceJson(body) : decodeTraceRequest(body)));
      } catch (e) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end((e as Error).message);
        return;
      }
      // An empty ExportTraceServiceResponse: zero bytes in protobuf, {} in JSON.
      if (type.startsWith('application/json')) res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      else res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    contentTypes,
    failNext(n, status) {
      failing = { n, status };
    },
    get refused() {
      return refused;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
