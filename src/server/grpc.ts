// The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, @grpc/grpc-js) on its own
// port (grpc.port, default 8081): health, server and model metadata, readiness, and ModelInfer
// through the one inference step (./grpc-infer.ts), so versions, deployments, monitoring, the
// prediction log and errors are those of HTTP. Scoreline errors carry an HTTP status; GRPC_CODES is
// the one table that turns it into a gRPC status code, and the trailing metadata keeps the
// original (`scoreline-code`, `scoreline-http-status`, `retry-after`). While the server drains,
// ModelInfer is refused with UNAVAILABLE and calls in flight finish; close() then stops the port.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { decodeModelInferRequest, encodeModelInferResponse } from './grpc-codec.js';
import pkg from '../version.js';
import { badRequest, shuttingDown, type ScorelineError } from '../errors.js';
import type { LoadedModel } from '../inference/index.js';
import type { ServerContext } from './context.js';
import { errorResponse } from './http.js';
import { checkHostOrder, GRPC_INFER, type ModelInferRequest, type ModelInferResponse } from './grpc-infer.js';
import { infer, type Reply } from './inference.js';
import type { RequestOrigin } from './exchange.js';
import { grpcCredentials } from './tls-grpc.js';

const { status: Status } = grpc;

/**
 * HTTP status of a scoreline error -> gRPC status code. 400 and 422 are both the client's argument
 * (the message says which rule it broke). 413 (more rows than limits.maxRowsPerRequest) is
 * INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: the same request can never succeed, and clients retry
 * RESOURCE_EXHAUSTED with backoff; here it is kept for load shedding (429, with retry-after) and a
 * full disk (507). A message over the size limit never reaches scoreline: grpc-js itself refuses
 * it with RESOURCE_EXHAUSTED.
 */
export const GRPC_CODES: Readonly<Record<number, grpc.status>> = {
  400: Status.INVALID_ARGUMENT,
  401: Status.UNAUTHENTICATED,
  403: Status.PERMISSION_DENIED,
  404: Status.NOT_FOUND,
  405: Status.UNIMPLEMENTED,
  409: Status.ABORTED,
  413: Status.INVALID_ARGUMENT,
  415: Status.INVALID_ARGUMENT,
  422: Status.INVALID_ARGUMENT,
  429: Status.RESOURCE_EXHAUSTED,
  500: Status.INTERNAL,
  503: Status.UNAVAILABLE,
  504: Status.DEADLINE_EXCEEDED,
  507: Status.RESOURCE_EXHAUSTED,
};

export const grpcCodeOf = (httpStatus: number): grpc.status =>
  GRPC_CODES[httpStatus] ?? (httpStatus >= 500 ? Status.INTERNAL : Status.INVALID_ARGUMENT);

/** A scoreline error as a gRPC error: code from the table, the message as details, the original in trailers. */
export function grpcError(err: ScorelineError): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  metadata.set('scoreline-code', err.code);
  metadata.set('scoreline-http-status', String(err.status));
  if (err.retryAfter !== undefined) metadata.set('retry-after', String(err.retryAfter));
  return { code: grpcCodeOf(err.status), details: err.message, metadata };
}

/** A gRPC unary call as the inference step's reply. */
class GrpcReply implements Reply<ModelInferResponse> {
  constructor(
    private readonly callback: grpc.sendUnaryData<ModelInferResponse>,
    /** The API key that sent it (its id goes into the prediction log). */
    readonly origin?: RequestOrigin,
  ) {}
  ok(body: ModelInferResponse): void {
    this.callback(null, body);
  }
  fail(err: ScorelineError): number {
    this.callback(grpcError(err));
    return err.status;
  }
}

const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: false, arrays: true, oneofs: true };

/**
 * The service definition, from the proto kept in the package: next to this module when run from
 * src/, under src/server/proto of the package root when run from dist/ (tsc does not copy it).
 */
export function loadService(): grpc.ServiceDefinition {
  const candidates = ['./proto/grpc_predict_v2.proto', '../../../src/server/proto/grpc_predict_v2.proto'].map((p) =>
    fileURLToPath(new URL(p, import.meta.url)),
  );
  const file = candidates.find((p) => existsSync(p));
  if (file === undefined) throw new Error(`the OIP gRPC definition grpc_predict_v2.proto is missing (looked in ${candidates.join(', ')})`);
  const def = grpc.loadPackageDefinition(protoLoader.loadSync(file, LOADER_OPTIONS)) as unknown as {
    inference: { GRPCInferenceService: { service: grpc.ServiceDefinition } };
  };
  const service = def.inference.GRPCInferenceService.service;
  // ModelInfer, the one call on the request path, reads and writes its messages by hand (grpc-codec.ts).
  const infer = service.ModelInfer!;
  return {
    ...service,
    ModelInfer: {
      ...infer,
      requestDeserialize: readInferMessage,
      responseSerialize: encodeModelInferResponse as (res: unknown) => Buffer,
    },
  };
}

/**
 * What ModelInfer's handler gets: the request, or why its bytes are not one. A message that cannot
 * be read is answered there as any bad request (INVALID_ARGUMENT, after the key check), rather than
 * as grpc-js answers a deserializer that throws (INTERNAL, without the reason).
 */
type InferMessage = ModelInferRequest & { malformed?: string };

function readInferMessage(buf: Buffer): InferMessage {
  try {
    return decodeModelInferRequest(buf);
  } catch (e) {
    return { malformed: (e as Error).message };
  }
}

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>) => void;

/** Answers a metadata-style call: the value, or the error (unknown errors logged, never leaked). */
function answer<Req, Res>(ctx: ServerContext, body: (req: Req) => Res): Unary<Req, Res> {
  return (call, callback) => {
    let res: Res;
    try {
      res = body(call.request);
    } catch (e) {
      callback(grpcError(errorResponse(e, ctx.log)));
      return;
    }
    callback(null, res);
  };
}

/** The named version (or the highest), ready or not; NOT_FOUND as over HTTP. */
function lookup(ctx: ServerContext, name: string | undefined, version: string | undefined): LoadedModel {
  if (!name) throw badRequest('"name" is required');
  return ctx.engine.lookup(name, version ? version : undefined);
}

function implementation(ctx: ServerContext): grpc.UntypedServiceImplementation {
  const serverMeta = { name: 'scoreline', version: pkg.version, extensions: [] };
  const modelInfer: Unary<InferMessage, ModelInferResponse> = (call, callback) => {
    const t0 = performance.now();
    const req = call.request;
    let keyId: string | undefined;
    if (ctx.keys !== null) {
      // The same keys and scope as HTTP inference: `authorization: Bearer <key>` or `x-api-key` metadata.
      const meta = (k: string) => String(call.metadata.get(k)[0] ?? '');
      try {
        keyId = ctx.keys.check(meta('authorization'), meta('x-api-key'), 'infer').id;
      } catch (e) {
        ctx.monitor.unrouted('grpc', new GrpcReply(callback).fail(errorResponse(e, ctx.log)));
        return;
      }
    }
    const reply = new GrpcReply(callback, keyId === undefined ? undefined : { keyId });
    if (req.malformed !== undefined) {
      ctx.monitor.unrouted('grpc', reply.fail(badRequest(`the message is not a ModelInferRequest: ${req.malformed}`)));
      return;
    }
    const name = req.model_name ?? '';
    if (ctx.draining || name === '') {
      ctx.monitor.unrouted('grpc', reply.fail(name === '' ? badRequest('"model_name" is required') : shuttingDown()));
      return;
    }
    const version = req.model_version ? req.model_version : undefined;
    const header = version === undefined ? ctx.router.stickyHeader(name) : null;
    const sticky = header === null ? undefined : call.metadata.get(header)[0];
    const deadline = call.getDeadline();
    const ms = (deadline instanceof Date ? deadline.getTime() : deadline) - Date.now();
    infer(ctx, {
      protocol: GRPC_INFER,
      model: name,
      version,
      sticky: sticky === undefined || sticky === '' ? undefined : String(sticky),
      input: req,
      reply,
      t0,
      timeoutMs: Number.isFinite(ms) ? Math.max(0, ms) : undefined,
    });
  };
  return {
    ServerLive: answer(ctx, () => ({ live: true })),
    ServerReady: answer(ctx, () => ({ ready: !ctx.draining && ctx.engine.ready() })),
    ServerMetadata: answer(ctx, () => serverMeta),
    ModelReady: answer(ctx, (req: { name?: string; version?: string }) => {
      const m = lookup(ctx, req.name, req.version);
      return { ready: m.state === 'ready' && !ctx.draining };
    }),
    ModelMetadata: answer(ctx, (req: { name?: string; version?: string }) => {
      const m = lookup(ctx, req.name, req.version);
      const tensor = (t: { name: string; datatype: string; shape: readonly number[] }) => ({
        name: t.name,
        datatype: t.datatype,
        shape: [...t.shape],
      });
      return {
        name: m.name,
        versions: ctx.engine.versionsOf(m.name).map((v) => v.version),
        platform: 'onnx_onnxv1',
        inputs: m.inputs.map(tensor),
        outputs: m.outputs.map(tensor),
      };
    }),
    ModelInfer: modelInfer,
  };
}

export interface GrpcServer {
  readonly port: number;
  /** Stops the port once calls in flight are answered, or after `graceMs` cuts them off. */
  close(graceMs: number): Promise<void>;
}

/** Binds the gRPC service on host:port (0: any free port); rejects with the reason when it cannot. */
export async function startGrpc(ctx: ServerContext, host: string, port: number): Promise<GrpcServer> {
  checkHostOrder();
  const server = new grpc.Server({
    'grpc.max_receive_message_length': ctx.config.server.maxBodyBytes,
    'grpc.max_send_message_length': -1,
  });
  server.addService(loadService(), implementation(ctx));
  const address = host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, ctx.tls !== null ? grpcCredentials(ctx.tls) : grpc.ServerCredentials.createInsecure(), (err, p) =>
      err
        ? reject(new Error(`cannot listen for gRPC on ${address}: port ${port} is in use (or not permitted): ${err.message}`))
        : resolve(p),
    ),
  );
  let closing: Promise<void> | null = null;
  return {
    port: bound,
    close: (graceMs) =>
      (closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      })),
  };
}
