// Route registration that cannot drift from the API description: route modules get the uWS app
// through a RouteTable, whose get/post/put/del/ws refuse a route the table (api.ts) does not
// describe; verify() refuses a described route nobody registered. The OpenAPI 3.1 document and the
// server's 405 list are built from what was registered. The table also hands the POST route helper
// a route's body check (its schema), so validation follows the same entries, and the gate its
// access rule (accessOf), so no route is served without one.
//
// The table sits over the gated app (raw uWS app -> Gate.wrap -> RouteTable): a route registered
// through it passes the table's check, then the gate's (request id, API key, tracing, access log).
// One route (method and pattern) may carry several documented operations: v1 `:predict` and
// `:explain` share their patterns, since the suffix is part of the last path segment.

import type { HttpRequest, HttpResponse, RecognizedString, TemplatedApp, WebSocketBehavior } from '@trufflesuite/uws-js-unofficial';
import pkg from '../version.js';
import { ERROR, OPERATIONS, PATH_PARAMETERS, type Access, type Method, type Operation, type Response } from './api.js';
import { bodyCheck, type BodyCheck } from './schemas.js';

const TABLE = Symbol('scoreline.routes');

type Handler = (res: HttpResponse, req: HttpRequest) => void | Promise<void>;

/** `/v2/models/:model/infer` -> `/v2/models/{model}/infer`. */
export const openApiPath = (pattern: string): string => pattern.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');

/** The operations of each route (method and pattern), checked to agree on what the route does with a request. */
function routesOf(operations: readonly Operation[]): Map<string, Operation[]> {
  const out = new Map<string, Operation[]>();
  const documented = new Set<string>();
  for (const op of operations) {
    const key = `${op.method} ${op.pattern}`;
    const doc = `${op.method} ${op.path ?? openApiPath(op.pattern)}`;
    if (documented.has(doc)) throw new Error(`the route table lists ${doc} twice`);
    documented.add(doc);
    const ops = out.get(key);
    if (ops === undefined) out.set(key, [op]);
    else {
      const first = ops[0]!;
      if (first.access !== op.access) throw new Error(`the route table gives ${key} two access rules (${first.access}, ${op.access})`);
      if (checkedSchema(first) !== checkedSchema(op)) throw new Error(`the route table gives ${key} two body checks`);
      ops.push(op);
    }
  }
  return out;
}

const checkedSchema = (op: Operation) => (op.body?.checkedBy === 'schema' ? op.body.content['application/json'] : undefined);

const ROUTES = routesOf(OPERATIONS);

/**
 * The access rule of a route (uWS method names: `del` is DELETE); throws for a route the table does
 * not list. `any` routes answer what no other route takes (405 on a known path, 404): they serve nothing.
 */
export function accessOf(method: string, pattern: string): Access {
  if (method === 'any') return 'open';
  const ops = ROUTES.get(`${method === 'del' ? 'delete' : method} ${pattern}`);
  if (ops === undefined)
    throw new Error(
      `route ${method === 'del' ? 'DELETE' : method.toUpperCase()} ${pattern} has no access rule: add it, with its access, to the route table in src/server/api.ts`,
    );
  return ops[0]!.access;
}

/** How the server is set up, for what the document says of access. */
export interface DocumentOptions {
  /** auth.enabled: routes with a scope need an API key. */
  readonly auth: boolean;
  /** auth.metricsPublic: /metrics needs no key even with auth on. */
  readonly metricsPublic: boolean;
  /** The gRPC port, or null when it is off. */
  readonly grpcPort: number | null;
}

export class RouteTable {
  /** The app route modules register on. */
  readonly app: TemplatedApp;
  private readonly byKey: Map<string, Operation[]>;
  private readonly registered = new Map<string, Operation[]>();

  constructor(raw: TemplatedApp, operations: readonly Operation[] = OPERATIONS) {
    this.byKey = operations === OPERATIONS ? ROUTES : routesOf(operations);
    const http = (method: Method) => (pattern: RecognizedString, handler: Handler) => {
      this.record(method, String(pattern));
      raw[method === 'delete' ? 'del' : method](pattern, handler);
      return proxy;
    };
    const routes: Record<string, unknown> = {
      get: http('get'),
      post: http('post'),
      put: http('put'),
      del: http('delete'),
      ws: <T>(pattern: RecognizedString, behavior: WebSocketBehavior<T>) => {
        this.record('get', String(pattern));
        raw.ws(pattern, behavior);
        return proxy;
      },
      [TABLE]: this,
    };
    // Everything else (publish, numSubscribers, ...) is the app's own; methods a route module has no
    // business calling (any, options, patch, listen) are refused.
    const refused = new Set(['any', 'options', 'patch', 'head', 'connect', 'trace', 'listen', 'close']);
    const proxy = new Proxy(raw, {
      get(target, prop) {
        if (prop in routes) return routes[prop as string];
        if (typeof prop === 'string' && refused.has(prop)) {
          return () => {
            throw new Error(`app.${prop}() is not for route modules: routes are registered through the route table`);
          };
        }
        const v = Reflect.get(target, prop);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    this.app = proxy;
  }

  private record(method: Method, pattern: string): void {
    const key = `${method} ${pattern}`;
    const ops = this.byKey.get(key);
    if (ops === undefined)
      throw new Error(`route ${method.toUpperCase()} ${pattern} is registered but has no entry in the route table (src/server/api.ts)`);
    if (this.registered.has(key)) throw new Error(`route ${method.toUpperCase()} ${pattern} is registered twice`);
    this.registered.set(key, ops);
  }

  /** Throws when a route the table describes was not registered. */
  verify(): void {
    const missing = [...this.byKey.keys()].filter((k) => !this.registered.has(k));
    if (missing.length > 0) throw new Error(`the route table describes routes the server did not register: ${missing.join(', ')}`);
  }

  /** Registered uWS patterns, each once (for 405s and CORS preflights). */
  patterns(): string[] {
    return [...new Set(this.operations().map((op) => op.pattern))];
  }

  operations(): Operation[] {
    return [...this.registered.values()].flat();
  }

  /** The body check of a registered route, or null when its body is not checked by a schema. */
  check(method: Method, pattern: string): BodyCheck | null {
    const ops = this.registered.get(`${method} ${pattern}`);
    if (ops === undefined) throw new Error(`route ${method.toUpperCase()} ${pattern} is not registered through the route table`);
    const schema = checkedSchema(ops[0]!);
    return schema === undefined ? null : bodyCheck(schema);
  }

  /** The OpenAPI 3.1 document of the registered routes, saying what access each needs on this server. */
  document(options: DocumentOptions): Record<string, unknown> {
    const paths: Record<string, Record<string, unknown>> = {};
    for (const op of this.operations()) {
      const scope = scopeOf(op.access, options);
      const path = op.path ?? openApiPath(op.pattern);
      const names = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!);
      const entry = paths[path] ?? {};
      paths[path] = entry;
      entry[op.method] = {
        operationId: operationId(op),
        summary: op.summary,
        ...(op.description !== undefined ? { description: op.description } : {}),
        tags: [op.tag],
        ...(op.access === 'admin' ? { security: [{ adminToken: [] }] } : {}),
        // OpenAPI 3.1 lets any scheme name the roles it needs: here, the API key's scope.
        ...(scope !== null ? { security: [{ apiKey: scope }, { apiKeyHeader: scope }] } : {}),
        parameters: [
          ...names.map((name) => ({
            name,
            in: 'path',
            required: true,
            description: PATH_PARAMETERS[name] ?? name,
            schema: { type: 'string' },
          })),
          ...Object.entries(op.query ?? {}).map(([name, q]) => ({
            name,
            in: 'query',
            required: false,
            description: q.description,
            schema: q.schema,
          })),
          ...(op.websocket
            ? [
                { name: 'Upgrade', in: 'header', required: true, schema: { const: 'websocket' } },
                { name: 'Sec-WebSocket-Key', in: 'header', required: true, schema: { type: 'string' } },
              ]
            : []),
        ],
        ...(op.body !== undefined
          ? {
              requestBody: {
                required: op.body.required,
                content: Object.fromEntries(Object.entries(op.body.content).map(([type, schema]) => [type, { schema }])),
                // schema: the server validates the body with this schema; parser: the schema describes what
                // the body's own parser accepts (see schemas.ts); bytes: not JSON.
                'x-checked-by': op.body.checkedBy,
                ...(op.body.checkedBy === 'parser'
                  ? {
                      description:
                        'Checked by the body\'s own parser rather than by this schema (see the README, "API description"); the schema describes what that parser accepts.',
                    }
                  : {}),
              },
            }
          : {}),
        responses: Object.fromEntries(
          Object.entries({ ...op.responses, ...(scope !== null ? KEY_ERRORS : {}) }).map(([status, r]) => [
            status,
            {
              description: r.description,
              ...(r.schema !== undefined || r.contentType !== undefined
                ? { content: { [r.contentType ?? 'application/json']: r.schema !== undefined ? { schema: r.schema } : {} } }
                : {}),
            },
          ]),
        ),
      };
    }
    return {
      openapi: '3.1.0',
      jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
      info: {
        title: 'scoreline',
        version: pkg.version,
        description:
          'Low-latency ML scoring: Open Inference Protocol, KServe v1 (predict and explain), entity scoring, monitoring, the admin API and Triton model control. ' +
          (options.grpcPort === null
            ? 'The Open Inference Protocol over gRPC is off on this server (grpc.port).'
            : `The Open Inference Protocol is also served over gRPC (inference.GRPCInferenceService, KServe's grpc_predict_v2.proto) on port ${options.grpcPort}, which this document does not describe.`) +
          (options.auth
            ? ' API keys are required where an operation names a scope (auth.enabled).'
            : ' API keys are off on this server (auth.enabled: false): only the admin routes need a token.'),
      },
      paths,
      components: {
        schemas: { Error: ERROR },
        securitySchemes: {
          adminToken: {
            type: 'http',
            scheme: 'bearer',
            description: 'SCORELINE_ADMIN_TOKEN, or <data-dir>/admin-token (shared through the store by every replica).',
          },
          apiKey: { type: 'http', scheme: 'bearer', description: 'An API key (scoreline keys create) with the scope the operation names.' },
          apiKeyHeader: { type: 'apiKey', in: 'header', name: 'x-api-key', description: 'The same API key in x-api-key.' },
        },
      },
    };
  }
}

/** The API key scopes an operation needs on this server, or null (no key). */
function scopeOf(access: Access, options: DocumentOptions): string[] | null {
  if (!options.auth || access === 'open' || access === 'admin') return null;
  if (access === 'metrics') return options.metricsPublic ? null : ['monitoring:read'];
  // The upgrade needs a key, of any scope; each frame then needs the scope it uses (infer, events).
  if (access === 'stream') return [];
  return [access];
}

const KEY_ERRORS: Readonly<Record<number, Response>> = {
  401: { description: 'No API key, or one the server does not know.', schema: ERROR },
  403: { description: 'An API key without the scope the operation needs.', schema: ERROR },
};

/** getV2ModelsByModelVersionsByVersionInfer: unique per path and method. */
function operationId(op: Operation): string {
  const segments = (op.path ?? openApiPath(op.pattern)).split('/').slice(1);
  const words = segments
    .map((seg, i) => (seg === '' && i === segments.length - 1 ? 'index' : seg.replace(/\{([^}]+)\}/g, 'by-$1')))
    .join('-')
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean);
  return op.method + words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');
}

/** The body check the route table gives a POST route; the app must be the table's. */
export function bodyCheckOf(app: TemplatedApp, method: Method, pattern: string): BodyCheck | null {
  const table = (app as unknown as Record<symbol, RouteTable | undefined>)[TABLE];
  if (table === undefined)
    throw new Error(`route ${method.toUpperCase()} ${pattern}: the app is not the route table's; register routes through it`);
  return table.check(method, pattern);
}
