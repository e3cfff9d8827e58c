// The admin API under /admin (bearer token: SCORELINE_ADMIN_TOKEN, else a random token generated at
// first start into <data-dir>/admin-token with mode 0600, or shared through the store by every
// replica; compared in constant time): models and versions, aliases with history, deployments
// (apply, promote, roll back, inspect, per replica), alerts, retraining, and the cluster. Every
// answer reads or writes the store; when it cannot be reached the answer is 503 with Retry-After,
// and nothing changed.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  badRequest,
  bodyTooLarge,
  forbidden,
  insufficientStorage,
  isDiskFull,
  notReady,
  unauthorized,
  unsupportedMediaType,
} from '../errors.js';
import type { Deployer } from '../deploy/index.js';
import { isObject } from '../json.js';
import type { Alerting } from './alerting.js';
import { summary, type Retrainer } from '../retraining/index.js';
import { JOB_STATES, type JobState, type Registry } from '../store/index.js';
import type { Cluster } from './cluster.js';
import type { ServerContext } from './context.js';
import { ARCHIVE_TYPES, readMlflowArchive } from '../registry/index.js';
import { freezeFromCsv } from './reference.js';
import { checkOptionalJsonContentType, postRoute, sendError, sendJson, type PostRequest, type ResponseState } from './http.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

type Res = HttpResponse & ResponseState;

/** The admin token: the environment's, else the one in the data dir (created on first start). */
export function adminToken(dataDir: string): { token: string; source: string } {
  const env = process.env.SCORELINE_ADMIN_TOKEN;
  if (env !== undefined && env.length > 0) return { token: env, source: 'SCORELINE_ADMIN_TOKEN' };
  const file = join(dataDir, 'admin-token');
  if (!existsSync(file)) {
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(file, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
  }
  return { token: readFileSync(file, 'utf8').trim(), source: file };
}

const digest = (s: string) => createHash('sha256').update(s).digest();
/** The header every admin route reads first: the guard's `admit` checks headers[0]. */
export const AUTH: readonly string[] = ['authorization'];
const UPLOAD_HEADERS: readonly string[] = ['authorization', 'x-scoreline-source', 'content-type'];

/** The admin token check, for routes behind it (the admin API's and model control's). */
export interface AdminGuard {
  /** Reads the Authorization header (synchronously, as uWS requires) and checks it: 401 without, 403 when wrong. */
  authorize(req: HttpRequest): void;
  /** The same for a POST route whose first requested header is Authorization. */
  admit(p: PostRequest): void;
}

export function adminGuard(token: string): AdminGuard {
  const expected = digest(token);
  const check = (h: string): void => {
    if (h === '') throw unauthorized();
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
    if (m === null) throw unauthorized();
    // Hashing first gives equal lengths, so the comparison time does not depend on the token.
    if (!timingSafeEqual(digest(m[1]!), expected)) throw forbidden();
  };
  return { authorize: (req) => check(req.getHeader('authorization')), admit: (p) => check(p.headers[0]!) };
}

export interface AdminDeps {
  registry: Registry;
  deployer: Deployer;
  alerting: Alerting;
  retrainer: Retrainer;
  /** Set once the server listens (its address is known then). */
  cluster: { current: Cluster | null };
  guard: AdminGuard;
  maxModelBytes: number;
}

const baseType = (ct: string) => ct.split(';')[0]!.trim().toLowerCase();

export function registerAdmin(app: TemplatedApp, ctx: ServerContext, deps: AdminDeps): void {
  const { registry, deployer } = deps;
  const { authorize, admit } = deps.guard;
  /** A write refused by a full disk (anywhere below: registry, jobs, references) is a 507 the operator can act on. */
  const storage = (e: unknown): unknown => (isDiskFull(e) ? insufficientStorage(ctx.config.dataDir, e) : e);

  /**
   * A GET behind the token. `answer` must read everything it needs from `req` before its first
   * await (uWS reuses the request object once the handler returns).
   */
  const get = (pattern: string, answer: (req: HttpRequest) => unknown) =>
    app.get(pattern, (res: Res, req) => {
      res.onAborted(() => {
        res.aborted = true;
      });
      let result: unknown;
      try {
        authorize(req);
        result = answer(req);
      } catch (e) {
        sendError(res, storage(e), ctx.log);
        return;
      }
      Promise.resolve(result).then(
        (r) => sendJson(res, 200, JSON.stringify(r)),
        (e) => sendError(res, storage(e), ctx.log),
      );
    });

  /** A JSON body handler behind the token; `answer` may be async. An empty body is undefined. */
  const withJson = (method: 'put' | 'post', pattern: string, answer: (params: string[], body: unknown) => unknown, status = 200) =>
    postRoute(
      app,
      pattern,
      ctx.http,
      { method, maxBytes: 1024 * 1024, params: 3, json: 'optional', contentType: checkOptionalJsonContentType, admit, headers: () => AUTH },
      (res, body, _raw, p) => {
        Promise.resolve()
          .then(() => answer([...p.params], body))
          .then(
            (r) => sendJson(res, status, JSON.stringify(r)),
            (e) => sendError(res, storage(e), ctx.log),
          );
      },
    );

  // Models and versions.
  get('/admin/models', async () => ({ models: await registry.listModels() }));
  get('/admin/models/:name', async (req) => {
    const name = req.getParameter(0);
    return { model: await registry.getModel(name), versions: await registry.listVersions(name), deployment: await deployer.view(name) };
  });
  // A version: the ONNX file's bytes, or an MLflow model folder as a tar.gz (its onnx flavor's file is
  // the artifact; MLmodel and the input example are kept as lineage, the signature names the features).
  postRoute(
    app,
    '/admin/models/:name/versions',
    ctx.http,
    {
      maxBytes: deps.maxModelBytes,
      params: 1,
      headers: () => UPLOAD_HEADERS,
      json: false,
      contentType: (ct) => {
        if (ct !== '' && baseType(ct) !== 'application/octet-stream' && !ARCHIVE_TYPES.includes(baseType(ct))) {
          throw unsupportedMediaType(
            ct,
            'application/octet-stream (the ONNX file) or application/gzip (a tar.gz of an MLflow model folder)',
          );
        }
      },
      admit,
      tooLarge: () => bodyTooLarge(deps.maxModelBytes),
    },
    (res, _body, buf, p) => {
      const name = p.params[0]!;
      // The client's word for where the file came from: recorded, never opened (it names a path on the
      // client's machine at best, and any path on this one at worst).
      const declaredSource = p.headers[1]!;
      const archive = ARCHIVE_TYPES.includes(baseType(p.headers[2]!));
      // A copy now: the body's memory is the server's only until this handler returns.
      const bytes = new Uint8Array(buf);
      (async () => {
        if (bytes.length === 0)
          throw badRequest(
            archive ? 'the body must hold a tar.gz of an MLflow model folder' : 'the body must hold the model file (ONNX bytes)',
          );
        const source = declaredSource !== '' ? `'${declaredSource}' (as its sender names it)` : `the archive uploaded for model '${name}'`;
        // Read before the store is asked anything: a bad archive is refused whatever the store's state.
        const mlflow = archive ? readMlflowArchive(bytes, deps.maxModelBytes, source) : null;
        // A new version inherits the model's settings (features, bindings, batching) from its latest,
        // and the reference rows stored with it, which that model.yaml's `reference` names.
        const latest = (await registry.listModels(name))[0]?.latestVersion ?? undefined;
        const inherited = latest === undefined ? {} : (await registry.getVersion(name, latest)).config;
        const referenceData = latest === undefined ? null : await registry.referenceData(name, latest);
        // An MLflow model's own signature names its features, over what the previous version had.
        const config = mlflow?.features ? { ...inherited, features: mlflow.features } : inherited;
        const r = await registry.register(name, mlflow?.bytes ?? bytes, {
          config,
          ...(declaredSource !== '' ? { declaredSource } : {}),
          ...(mlflow !== null ? { lineage: mlflow.lineage } : {}),
          ...(referenceData !== null ? { referenceData } : {}),
        });
        ctx.log.info(
          { model: name, version: r.version, sha256: r.sha256, created: r.created, mlflow: mlflow !== null },
          'model version registered',
        );
        return { r, features: mlflow === null ? undefined : mlflow.features };
      })().then(
        ({ r, features }) =>
          sendJson(
            res,
            r.created ? 201 : 200,
            JSON.stringify({ name: r.name, version: r.version, sha256: r.sha256, ...(features !== undefined ? { features } : {}) }),
          ),
        (e) => sendError(res, storage(e), ctx.log),
      );
    },
  );

  // Drift reference: a CSV with the model's feature columns (and its label), frozen for the version.
  postRoute(
    app,
    '/admin/models/:name/versions/:version/reference',
    ctx.http,
    {
      method: 'put',
      maxBytes: deps.maxModelBytes,
      params: 2,
      headers: () => AUTH,
      json: false,
      contentType: () => undefined,
      admit: (p) => {
        admit(p);
        if (!/^[1-9][0-9]*$/.test(p.params[1]!)) throw badRequest('version must be a positive integer');
      },
    },
    (res, _body, buf, p) => {
      const [name, version] = [p.params[0]!, Number(p.params[1])];
      const csv = buf.toString('utf8');
      (async () => {
        await registry.getVersion(name, version);
        const m = await deployer.ensureLoaded(name, version);
        const r = await freezeFromCsv(ctx, m, csv);
        return { model: name, version, rows: r.rows, reference_auc: r.referenceAuc, features: r.features.map((f) => f.name) };
      })().then(
        (body) => sendJson(res, 200, JSON.stringify(body)),
        (e) => sendError(res, storage(e), ctx.log),
      );
    },
  );

  // Aliases.
  withJson('put', '/admin/models/:name/aliases/:alias', async ([name, alias], body) => {
    if (!isObject(body) || !Number.isSafeInteger(body.version)) throw badRequest('body must be {"version": <integer>, "reason"?: "..."}');
    if (body.reason !== undefined && typeof body.reason !== 'string') throw badRequest('"reason" must be a string');
    const event = await registry.setAlias(name!, alias!, body.version as number, {
      reason: (body.reason as string | undefined) ?? 'set by the admin API',
      actor: 'admin-api',
    });
    return { alias: alias, version: event.to, event };
  });
  get('/admin/models/:name/aliases/:alias', async (req) => {
    const name = req.getParameter(0);
    const alias = req.getParameter(1);
    const version = (await registry.getModel(name)).aliases[alias] ?? null;
    return { model: name, alias, version, history: await registry.aliasHistory(name, alias) };
  });

  // Alerts.
  get('/admin/alerts', (req) => {
    const model = req.getQuery('model') || undefined;
    const limit = Number(req.getQuery('limit') || 100);
    const a = deps.alerting;
    return {
      firing: a.firing(model ? { labels: { model } } : {}),
      pending: a.pending(model ? { labels: { model } } : {}),
      history: a.history({ limit: Number.isFinite(limit) ? Math.min(Math.max(1, limit), 1000) : 100, ...(model ? { model } : {}) }),
    };
  });

  // Retraining.
  const { retrainer } = deps;
  withJson(
    'post',
    '/admin/retrain/:name',
    async ([name], body) => {
      if (body !== undefined && !isObject(body)) throw badRequest('the body, when given, must be a JSON object {"reason"}');
      const reason = isObject(body) && body.reason !== undefined ? body.reason : 'requested through the admin API';
      if (typeof reason !== 'string' || reason.length === 0 || reason.length > 1000)
        throw badRequest('"reason" must be a non-empty string (at most 1000 characters)');
      const r = await retrainer.trigger(name!, { kind: 'manual', reason, evidence: { by: 'admin API' } });
      return { outcome: r.outcome, job: r.job && summary(r.job) };
    },
    202,
  );
  get('/admin/retrain/:name', (req) => retrainer.status(req.getParameter(0)));
  withJson(
    'post',
    '/admin/incidents',
    async (_params, body) => {
      if (!isObject(body)) throw badRequest('an incident is a JSON object {"model", "reason", "severity"?}');
      const { model, reason } = body;
      const severity = body.severity ?? 'critical';
      if (typeof model !== 'string' || model.length === 0) throw badRequest('"model" must be a model name');
      if (typeof reason !== 'string' || reason.length === 0 || reason.length > 1000)
        throw badRequest('"reason" must be a non-empty string (at most 1000 characters)');
      if (typeof severity !== 'string' || !['info', 'warning', 'critical', 'emergency'].includes(severity))
        throw badRequest('"severity" must be info, warning, critical or emergency');
      const r = await retrainer.incident(model, reason, severity);
      return { incident: r.incident, outcome: r.outcome, job: r.job && summary(r.job) };
    },
    201,
  );
  get('/admin/incidents', async (req) => ({ incidents: await retrainer.incidents(req.getQuery('model') || undefined) }));
  get('/admin/jobs', async (req) => {
    const state = req.getQuery('state') || undefined;
    if (state !== undefined && !(JOB_STATES as readonly string[]).includes(state))
      throw badRequest(`state must be one of ${JOB_STATES.join(', ')}`);
    const rawLimit = req.getQuery('limit');
    const limit = rawLimit ? Number(rawLimit) : 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw badRequest('limit must be an integer from 1 to 1000');
    const model = req.getQuery('model') || undefined;
    return {
      jobs: (await retrainer.list({ ...(model ? { model } : {}), ...(state ? { state: state as JobState } : {}), limit })).map(summary),
    };
  });
  get('/admin/jobs/:id', (req) => retrainer.get(req.getParameter(0)));

  // Deployments.
  withJson('put', '/admin/deployments/:name', ([name], body) => {
    const spec = isObject(body) ? Object.fromEntries(Object.entries(body).filter(([k]) => k !== 'reason')) : body;
    return deployer.apply(name!, spec, reasonOf(body, 'deployed by the admin API')).then(() => deployer.view(name!));
  });
  get('/admin/deployments/:name', async (req) => {
    const name = req.getParameter(0);
    const view = await deployer.view(name);
    return { ...view, replicas: (await deps.cluster.current?.deploymentOf(name)) ?? [] };
  });
  // Removing a deployment puts the model back on its highest ready version (and lets model control unload it).
  app.del('/admin/deployments/:name', (res: Res, req) => {
    res.onAborted(() => {
      res.aborted = true;
    });
    let name: string;
    try {
      authorize(req);
      name = req.getParameter(0);
    } catch (e) {
      sendError(res, e, ctx.log);
      return;
    }
    const reason = req.getQuery('reason') || 'removed by the admin API';
    deployer
      .remove(name, reason)
      .then(() => deployer.view(name))
      .then(
        (view) => sendJson(res, 200, JSON.stringify(view)),
        (e) => sendError(res, storage(e), ctx.log),
      );
  });
  withJson('post', '/admin/deployments/:name/promote', ([name], body) =>
    deployer.promote(name!, reasonOf(body, 'promoted by the admin API')).then(() => deployer.view(name!)),
  );
  withJson('post', '/admin/deployments/:name/rollback', ([name], body) =>
    deployer.rollback(name!, reasonOf(body, 'rolled back by the admin API')).then(() => deployer.view(name!)),
  );

  // The cluster: who leads, and every replica heard from recently.
  get('/admin/cluster', async () => {
    const cluster = deps.cluster.current;
    if (cluster === null) throw notReady('the cluster view');
    return cluster.view();
  });
}

function reasonOf(body: unknown, fallback: string): string {
  return isObject(body) && typeof body.reason === 'string' && body.reason.length > 0 ? body.reason : fallback;
}
