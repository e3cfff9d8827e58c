// Triton's model repository API, behind the admin token:
//   POST /v2/repository/index                 {"ready"?: bool} -> [{"name", "version", "state", "reason"}]
//   POST /v2/repository/models/{m}/load       {"parameters"?: {...}} -> {"name", "versions", "ignored_parameters"}
//   POST /v2/repository/models/{m}/unload     {"parameters"?: {...}} -> {"name", "versions"}
// Triton's load parameters override a model's config ("config") or upload its files ("file:<path>").
// scoreline takes a model's settings from its model.yaml and its files from the repository or the
// admin API, so "config" and other settings are accepted and ignored (the answer lists them), and
// "file:" parameters are refused rather than silently dropped.

import { badRequest } from '../errors.js';
import { AUTH, type AdminGuard } from './admin.js';
import type { ServerContext } from './context.js';
import { isObject } from '../json.js';
import { checkOptionalJsonContentType, postRoute, sendError, sendJson } from './http.js';
import type { RepositoryControl } from './repository.js';
import type { TemplatedApp } from './uws.js';

/** The parameters a load or unload body carries (Triton's shape), checked; returns the names ignored. */
function parameters(body: unknown): string[] {
  if (body === undefined) return [];
  if (!isObject(body)) throw badRequest('the body, when given, must be a JSON object {"parameters": {...}}');
  const p = body.parameters;
  if (p === undefined) return [];
  if (!isObject(p)) throw badRequest('"parameters" must be an object');
  const files = Object.keys(p).filter((k) => k.startsWith('file:'));
  if (files.length > 0) {
    throw badRequest(
      `model files cannot be uploaded through load (${files.join(', ')}); put a version folder in the model repository, or POST the file to /admin/models/{model}/versions`,
    );
  }
  return Object.keys(p);
}

export function registerModelControl(app: TemplatedApp, ctx: ServerContext, control: RepositoryControl, guard: AdminGuard): void {
  const route = (pattern: string, params: number, answer: (params: readonly string[], body: unknown) => Promise<unknown>) =>
    postRoute(
      app,
      pattern,
      ctx.http,
      { maxBytes: 64 * 1024, params, json: 'optional', contentType: checkOptionalJsonContentType, admit: guard.admit, headers: () => AUTH },
      (res, body, _raw, p) => {
        Promise.resolve()
          .then(() => answer(p.params, body))
          .then(
            (r) => sendJson(res, 200, JSON.stringify(r)),
            (e) => sendError(res, e, ctx.log),
          );
      },
    );

  route('/v2/repository/index', 0, (_params, body) => {
    if (body !== undefined && !isObject(body)) throw badRequest('the body, when given, must be a JSON object {"ready": true|false}');
    const ready = isObject(body) ? body.ready : undefined;
    if (ready !== undefined && typeof ready !== 'boolean') throw badRequest('"ready" must be true or false');
    return control.index(ready === true);
  });
  route('/v2/repository/models/:model/load', 1, async ([name], body) => {
    const ignored = parameters(body);
    if (ignored.length > 0)
      ctx.log.info({ model: name, ignored }, 'model control load: parameters ignored (settings come from model.yaml)');
    return { ...(await control.load(name!)), ignored_parameters: ignored };
  });
  route('/v2/repository/models/:model/unload', 1, async ([name], body) => {
    parameters(body);
    return control.unload(name!);
  });
}
