// Route registration that cannot drift from the API description: route modules get the uWS app
// through a RouteTable, whose get/post/put/del/ws refuse a route the table (api.ts) does not
// describe; verify() refuses a described route nobody registered. The OpenAPI 3.1 document and the
// server's 405 list are built from what was registered. The table also hands the POST route helper
// a route's body check (its schema), so validation follows the same entries.

import type { HttpRequest, HttpResponse, RecognizedString, TemplatedApp, WebSocketBehavior } from '@trufflesuite/uws-js-unofficial';
import pkg from '../version.js';
import { ERROR, PATH_PARAMETERS, type Method, type Operation } from './api.js';
import { bodyCheck, type BodyCheck } from './schemas.js';

const TABLE = Symbol('scoreline.routes');

type Handler = (res: HttpResponse, req: HttpRequest) => void | Promise<void>;

/** `/v2/models/:model/infer` -> `/v2/models/{model}/infer`. */
export const openApiPath = (pattern: string): string => pattern.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');

export class RouteTable {
  /** The app route modules register on. */
  readonly app: TemplatedApp;
  private readonly byKey = new Map<string, Operation>();
  private readonly registered = new Map<string, Operation>();

  constructor(raw: TemplatedApp, operations: readonly Operation[]) {
    for (const op of operations) {
      const key = `${op.method} ${op.pattern}`;
      if (this.byKey.has(key)) throw new Error(`the route table lists ${key} twice`);
      this.byKey.set(key, op);
    }
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
    const op = this.byKey.get(key);
    if (op === undefined) throw new Error(`route ${method.toUpperCase()} ${pattern} is registered but has no entry in the route table (src/server/api.ts)`);
    if (this.registered.has(key)) throw new Error(`route ${method.toUpperCase()} ${pattern} is registered twice`);
    this.registered.set(key, op);
  }

  /** Throws when a route the table describes was not registered. */
  verify(): void {
    const missing = [...this.byKey.keys()].filter((k) => !this.registered.has(k));
    if (missing.length > 0) throw new Error(`the route table describes routes the server did not register: ${missing.join(', ')}`);
  }

  /** Registered uWS patterns, each once (for 405s and CORS preflights). */
  patterns(): string[] {
    return [...new Set([...this.registered.values()].map((op) => op.pattern))];
  }

  operations(): Operation[] {
    return [...this.registered.values()];
  }

  /** The body check of a registered route, or null when its body is not checked by a schema. */
  check(method: Method, pattern: string): BodyCheck | null {
    const op = this.registered.get(`${method} ${pattern}`);
    if (op === undefined) throw new Error(`route ${method.toUpperCase()} ${pattern} is not registered through the route table`);
    const schema = op.body?.checkedBy === 'schema' ? op.body.content['application/json'] : undefined;
    return schema === undefined ? null : bodyCheck(schema);
  }

  /** The OpenAPI 3.1 document of the registered routes. */
  document(): Record<string, unknown> {
    const paths: Record<string, Record<string, unknown>> = {};
    for (const op of this.operations()) {
      const path = op.path ?? openApiPath(op.pattern);
      const names = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!);
      (paths[path] ??= {})[op.method] = {
        operationId: operationId(op),
        summary: op.summary,
        ...(op.description !== undefined ? { description: op.description } : {}),
        tags: [op.tag],
        ...(op.admin ? { security: [{ adminToken: [] }] } : {}),
        parameters: [
          ...names.map((name) => ({ name, in: 'path', required: true, description: PATH_PARAMETERS[name] ?? name, schema: { type: 'string' } })),
          ...Object.entries(op.query ?? {}).map(([name, q]) => ({ name, in: 'query', required: false, description: q.description, schema: q.schema })),
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
                ...(op.body.checkedBy === 'parser' ? { description: 'Checked by the body\'s own parser rather than by this schema (see the README, "API description"); the schema describes what that parser accepts.' } : {}),
              },
            }
          : {}),
        responses: Object.fromEntries(
          Object.entries(op.responses).map(([status, r]) => [
            status,
            {
              description: r.description,
              ...(r.schema !== undefined || r.contentType !== undefined ? { content: { [r.contentType ?? 'application/json']: r.schema !== undefined ? { schema: r.schema } : {} } } : {}),
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
        description: 'Low-latency ML scoring: Open Inference Protocol, KServe v1, entity scoring, monitoring, the admin API and Triton model control.',
      },
      paths,
      components: {
        schemas: { Error: ERROR },
        securitySchemes: { adminToken: { type: 'http', scheme: 'bearer', description: 'SCORELINE_ADMIN_TOKEN, or <data-dir>/admin-token.' } },
      },
    };
  }
}

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
  if (table === undefined) throw new Error(`route ${method.toUpperCase()} ${pattern}: the app is not the route table's; register routes through it`);
  return table.check(method, pattern);
}
