// `scoreline models|deploy|promote|rollback|status`: the admin API from the command line. Talks to
// a running server (--url, else SCORELINE_URL, else http://127.0.0.1:8080) with the admin token from
// --token, SCORELINE_ADMIN_TOKEN, or <data-dir>/admin-token (the file the server writes at first start).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseCsv } from '../csv.js';
import { ScorelineError } from '../errors.js';
import { parse, stringFlag, UsageError, type Command, type Flags } from './command.js';
import type { Analysis } from '../deploy/analysis.js';
import type { Strategy } from '../deploy/strategies.js';
import type { AliasEvent, ModelRecord, RegisterResult, VersionRecord } from '../registry/index.js';

/** What the commands read of GET /admin/deployments/{name} (the deployer's view, as JSON). */
interface DeploymentView {
  model: string;
  strategy: Strategy | null;
  serving?: string;
  traffic: Record<string, number> | null;
  since: string | null;
  reason: string | null;
  step_stats?: Record<
    string,
    { requests: number; errors: number; error_rate: number | null; p99_ms: number | null; scores: number; replicas?: number }
  >;
  analysis?: Analysis[];
  live_analysis?: Analysis | null;
  shadow?: unknown;
  history?: { at: string; action: string; reason: string }[];
}

export const COMMON = `Connection:
  --url URL         server address (default: SCORELINE_URL, else http://127.0.0.1:8080)
  --token TOKEN     admin token (default: SCORELINE_ADMIN_TOKEN, else <data-dir>/admin-token)
  --data-dir DIR    where the server keeps its state (default ./data)
  --json            print the server's JSON answer
  -h, --help        show this help`;

export const CONNECTION = {
  url: { type: 'string' },
  token: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
  reason: { type: 'string' },
} as const;

function token(values: Flags): string {
  const t = stringFlag(values.token) ?? process.env.SCORELINE_ADMIN_TOKEN;
  if (t !== undefined && t !== '') return t;
  const file = join(stringFlag(values['data-dir']) ?? 'data', 'admin-token');
  if (!existsSync(file))
    throw new UsageError(
      `no admin token: pass --token, set SCORELINE_ADMIN_TOKEN, or point --data-dir at the server's data dir (${file} does not exist)`,
    );
  return readFileSync(file, 'utf8').trim();
}

/** The server the command talks to: --url, else SCORELINE_URL, else the default port on this machine. */
export function serverUrl(values: Flags): string {
  const env = process.env.SCORELINE_URL;
  return (stringFlag(values.url) ?? (env !== undefined && env !== '' ? env : 'http://127.0.0.1:8080')).replace(/\/$/, '');
}

export async function call(
  values: Flags,
  method: string,
  path: string,
  body?: { json?: unknown; bytes?: Uint8Array; text?: string; source?: string },
): Promise<unknown> {
  const base = serverUrl(values);
  const headers: Record<string, string> = { authorization: `Bearer ${token(values)}` };
  // Recorded as the version's declared source; the server never opens it.
  if (body?.source !== undefined) headers['x-scoreline-source'] = body.source;
  let payload: string | Uint8Array | undefined;
  if (body?.json !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body.json);
  } else if (body?.bytes !== undefined) {
    headers['content-type'] = 'application/octet-stream';
    payload = body.bytes;
  } else if (body?.text !== undefined) {
    headers['content-type'] = 'text/csv';
    payload = body.text;
  }
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, { method, headers, body: payload ?? null });
  } catch (e) {
    throw new ScorelineError('NOT_READY', `cannot reach ${base}: ${(e as Error).cause ?? (e as Error).message}`);
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = { error: text };
  }
  if (!res.ok)
    throw new ScorelineError(
      res.status === 404 ? 'MODEL_NOT_FOUND' : 'BAD_REQUEST',
      `${method} ${path}: ${res.status} ${(parsed as { error?: unknown } | null)?.error ?? text}`,
    );
  return parsed;
}

export function print(values: Flags, answer: unknown, line: () => string): void {
  console.log(values.json ? JSON.stringify(answer, null, 2) : line());
}

const MODELS_USAGE = `Usage: scoreline models <register|list|show|alias> ...

  register NAME FILE        register FILE (ONNX) as the next version of NAME
                            [--reference CSV: freeze its drift reference from this data]
  list                      every model with its latest version and aliases
  show NAME                 versions, aliases and deployment of NAME
  alias NAME ALIAS VERSION  point ALIAS (champion, challenger, ...) at VERSION [--reason TEXT]

${COMMON}`;

export const models: Command = {
  summary: 'register, list and show model versions; set aliases',
  usage: MODELS_USAGE,
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub === '--help' || sub === '-h' || sub === 'help') {
      console.log(MODELS_USAGE);
      return 0;
    }
    const { values, positionals } = parse(rest, { ...CONNECTION, reference: { type: 'string' } });
    if (sub === undefined || values.help) {
      console.log(MODELS_USAGE);
      return sub === undefined ? 2 : 0;
    }
    switch (sub) {
      case 'register': {
        const [name, file] = positionals;
        if (!name || !file) throw new UsageError('register needs NAME and FILE');
        if (!existsSync(file)) throw new UsageError(`${file} does not exist`);
        const reference = stringFlag(values.reference);
        if (reference !== undefined && !existsSync(reference)) throw new UsageError(`${reference} does not exist`);
        const r = (await call(values, 'POST', `/admin/models/${encodeURIComponent(name)}/versions`, {
          bytes: readFileSync(file),
          source: file,
        })) as RegisterResult;
        print(values, r, () => `${r.name} version ${r.version} (sha256 ${r.sha256})`);
        if (reference !== undefined) {
          const ref = (await call(values, 'PUT', `/admin/models/${encodeURIComponent(name)}/versions/${r.version}/reference`, {
            text: readFileSync(reference, 'utf8'),
          })) as { rows: number; reference_auc: number | null };
          print(
            values,
            ref,
            () =>
              `  drift reference frozen from ${ref.rows} rows${ref.reference_auc !== null ? ` (reference AUC ${Number(ref.reference_auc).toFixed(4)})` : ''}`,
          );
        }
        return 0;
      }
      case 'list': {
        const r = (await call(values, 'GET', '/admin/models')) as { models: ModelRecord[] };
        print(values, r, () =>
          r.models.length === 0
            ? 'no models registered'
            : r.models
                .map(
                  (m) =>
                    `${m.name.padEnd(24)} latest v${m.latestVersion}  ${m.versionCount} versions  ${Object.entries(m.aliases)
                      .map(([a, v]) => `${a}=v${v}`)
                      .join(' ')}`,
                )
                .join('\n'),
        );
        return 0;
      }
      case 'show': {
        const [name] = positionals;
        if (!name) throw new UsageError('show needs NAME');
        const r = (await call(values, 'GET', `/admin/models/${encodeURIComponent(name)}`)) as {
          model: ModelRecord;
          versions: VersionRecord[];
          deployment: DeploymentView;
        };
        print(values, r, () =>
          [
            `${r.model.name}: ${r.model.versionCount} versions, aliases ${JSON.stringify(r.model.aliases)}`,
            ...r.versions.map((v) => `  v${v.version}  ${v.sha256.slice(0, 12)}  ${v.size} bytes  ${v.createdAt}  ${v.aliases.join(',')}`),
            `  deployment: ${r.deployment.strategy ? JSON.stringify(r.deployment.strategy) : r.deployment.serving}`,
          ].join('\n'),
        );
        return 0;
      }
      case 'alias': {
        const [name, alias, version] = positionals;
        if (!name || !alias || !version || !/^\d+$/.test(version)) throw new UsageError('alias needs NAME ALIAS VERSION');
        const r = (await call(values, 'PUT', `/admin/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`, {
          json: { version: Number(version), ...(values.reason ? { reason: values.reason } : {}) },
        })) as { event: AliasEvent };
        print(values, r, () => `${name} ${alias}: v${r.event.from ?? '-'} -> v${r.event.to}`);
        return 0;
      }
      default:
        throw new UsageError(`unknown subcommand '${sub}'`);
    }
  },
};

const DEPLOY_USAGE = `Usage: scoreline deploy NAME --strategy S [strategy options]

  --strategy direct      --version V
  --strategy blue-green  --blue V --green V --active blue|green
  --strategy canary      --stable V --canary V --percent P [--steps 10,50,100 --step-seconds N]
  --strategy ab          --variant NAME=VERSION:WEIGHT (repeat) [--sticky header:<name>|entity:<field>]
  --strategy shadow      --primary V --shadow V
  --spec JSON            the deployment as JSON instead of the flags
  --reason TEXT          recorded in the deployment history

${COMMON}`;

function intOf(values: Flags, name: string): number {
  const v = stringFlag(values[name]);
  if (v === undefined || !/^\d+$/.test(v)) throw new UsageError(`--${name} must be a version number`);
  return Number(v);
}

export function deploymentSpec(values: Flags, variants: string[]): unknown {
  const spec = stringFlag(values.spec);
  if (spec !== undefined) {
    try {
      return JSON.parse(spec);
    } catch (e) {
      throw new UsageError(`--spec is not JSON: ${(e as Error).message}`);
    }
  }
  switch (stringFlag(values.strategy)) {
    case 'direct':
      return { strategy: 'direct', version: intOf(values, 'version') };
    case 'blue-green':
      return {
        strategy: 'blue-green',
        blue: intOf(values, 'blue'),
        green: intOf(values, 'green'),
        active: stringFlag(values.active) ?? 'green',
      };
    case 'canary': {
      const s: Record<string, unknown> = {
        strategy: 'canary',
        stable: intOf(values, 'stable'),
        canary: intOf(values, 'canary'),
        percent: Number(stringFlag(values.percent) ?? NaN),
      };
      const steps = stringFlag(values.steps);
      if (steps !== undefined) {
        s.steps = steps.split(',').map(Number);
        s.stepSeconds = Number(stringFlag(values['step-seconds']) ?? 60);
      }
      return s;
    }
    case 'ab': {
      const parsed = variants.map((v) => {
        const m = /^([a-z][a-z0-9_-]*)=(\d+):(\d+(?:\.\d+)?)$/.exec(v);
        if (m === null) throw new UsageError(`--variant ${v}: write NAME=VERSION:WEIGHT, e.g. a=1:50`);
        return { name: m[1], version: Number(m[2]), weight: Number(m[3]) };
      });
      const sticky = stringFlag(values.sticky);
      return { strategy: 'ab', variants: parsed, ...(sticky ? { stickyKey: sticky } : {}) };
    }
    case 'shadow':
      return { strategy: 'shadow', primary: intOf(values, 'primary'), shadow: intOf(values, 'shadow') };
    default:
      throw new UsageError('--strategy must be direct, blue-green, canary, ab or shadow (or pass --spec JSON)');
  }
}

const pct = (x: unknown) => `${Number(x).toFixed(1)}%`;
const ms = (x: unknown) => (x === null || x === undefined ? 'n/a' : `${Number(x).toFixed(2)} ms`);

function describeStrategy(s: Strategy): string {
  switch (s.strategy) {
    case 'direct':
      return `direct v${s.version}`;
    case 'blue-green':
      return `blue-green blue v${s.blue}, green v${s.green}, active ${s.active}`;
    case 'canary':
      return `canary v${s.stable} -> v${s.canary} at ${s.percent}%${s.steps ? ` (steps ${s.steps.join(', ')} every ${s.stepSeconds} s)` : ''}`;
    case 'ab':
      return `A/B ${s.variants.map((v) => `${v.name}=v${v.version} (weight ${v.weight})`).join(', ')}${s.stickyKey ? `, sticky on ${s.stickyKey}` : ''}`;
    case 'shadow':
      return `shadow: v${s.primary} answers, v${s.shadow} gets copies`;
    default:
      return JSON.stringify(s);
  }
}

/** `scoreline status` (and what deploy, promote and rollback print): strategy, traffic, per-version statistics, analysis, history. */
export function describeDeployment(r: DeploymentView): string {
  if (!r.strategy) return `${r.model}: no deployment; serving the ${r.serving}`;
  const out = [`${r.model}: ${describeStrategy(r.strategy)}, since ${r.since}${r.reason ? ` (${r.reason})` : ''}`];
  out.push(
    `  traffic: ${Object.entries(r.traffic ?? {})
      .map(([v, p]) => `v${v} ${pct(p)}`)
      .join(', ')}`,
  );
  for (const [v, st] of Object.entries(r.step_stats ?? {})) {
    out.push(
      `  v${v}: ${st.requests} requests, ${st.errors} errors${st.error_rate !== null ? ` (${pct(st.error_rate * 100)})` : ''}, p99 ${ms(st.p99_ms)}, ${st.scores} scores`,
    );
  }
  const analysis = r.live_analysis ?? r.analysis?.at(-1) ?? null;
  if (analysis) {
    const across = analysis.replicas !== undefined && analysis.replicas > 1 ? `, on the traffic of ${analysis.replicas} replicas` : '';
    out.push(`  canary analysis${r.live_analysis ? '' : ` (at ${analysis.at})`}: ${analysis.verdict}${across}`);
    for (const c of analysis.checks) {
      const figure = c.canary === null ? 'n/a' : Number(Number(c.canary).toPrecision(4));
      out.push(
        `    ${c.name.padEnd(12)} ${c.result.padEnd(17)} canary ${figure}${c.limit !== null ? `, limit ${Number(Number(c.limit).toPrecision(4))}` : ''}, n ${c.n} of ${c.needed}${c.note ? ` (${c.note})` : ''}`,
      );
    }
  }
  if (r.shadow) out.push(`  shadow agreement: ${JSON.stringify(r.shadow)}`);
  const history = (r.history ?? []).slice(-5);
  if (history.length > 0) {
    out.push('  history:');
    for (const h of history) out.push(`    ${h.at}  ${h.action}: ${h.reason}`);
  }
  return out.join('\n');
}

export const deploy: Command = {
  summary: 'deploy versions with a strategy (direct, blue-green, canary, ab, shadow)',
  usage: DEPLOY_USAGE,
  async run(argv) {
    const variants: string[] = [];
    const rest = argv.filter((a, i) => {
      if (a === '--variant') {
        variants.push(argv[i + 1] ?? '');
        return false;
      }
      return argv[i - 1] !== '--variant';
    });
    const { values, positionals } = parse(rest, {
      ...CONNECTION,
      strategy: { type: 'string' },
      spec: { type: 'string' },
      version: { type: 'string' },
      blue: { type: 'string' },
      green: { type: 'string' },
      active: { type: 'string' },
      stable: { type: 'string' },
      canary: { type: 'string' },
      percent: { type: 'string' },
      steps: { type: 'string' },
      'step-seconds': { type: 'string' },
      sticky: { type: 'string' },
      primary: { type: 'string' },
      shadow: { type: 'string' },
    });
    if (values.help) {
      console.log(DEPLOY_USAGE);
      return 0;
    }
    const [name] = positionals;
    if (!name) throw new UsageError('deploy needs NAME');
    const spec = deploymentSpec(values, variants) as Record<string, unknown>;
    const r = (await call(values, 'PUT', `/admin/deployments/${encodeURIComponent(name)}`, {
      json: { ...spec, ...(values.reason ? { reason: values.reason } : {}) },
    })) as DeploymentView;
    print(values, r, () => describeDeployment(r));
    return 0;
  },
};

function simple(action: 'promote' | 'rollback' | 'status'): Command {
  const usage = `Usage: scoreline ${action} NAME${action === 'status' ? '' : ' [--reason TEXT]'}\n\n${COMMON}`;
  return {
    summary:
      action === 'promote'
        ? 'promote a deployment (canary step, blue-green switch, shadow to primary)'
        : action === 'rollback'
          ? 'roll a deployment back'
          : 'show a deployment: traffic, statistics, analysis, history',
    usage,
    async run(argv) {
      const { values, positionals } = parse(argv, CONNECTION);
      if (values.help) {
        console.log(usage);
        return 0;
      }
      const [name] = positionals;
      if (!name) throw new UsageError(`${action} needs NAME`);
      const path = `/admin/deployments/${encodeURIComponent(name)}${action === 'status' ? '' : `/${action}`}`;
      const r = (await call(
        values,
        action === 'status' ? 'GET' : 'POST',
        path,
        action === 'status' ? undefined : { json: values.reason ? { reason: values.reason } : {} },
      )) as DeploymentView;
      print(values, r, () => describeDeployment(r));
      return 0;
    },
  };
}

export const promote = simple('promote');
export const rollback = simple('rollback');
export const status = simple('status');

const FEEDBACK_USAGE = `Usage: scoreline feedback --file labels.csv [--url URL]

Sends delayed labels to POST /v1/feedback in chunks of 1,000. The CSV needs the columns
request_id and label (0/1, true/false, or a number for regression models).

Options:
  --file FILE   the labels
  --url URL     server address (default: SCORELINE_URL, else http://127.0.0.1:8080)
  -h, --help    show this help`;

export const feedback: Command = {
  summary: 'send delayed labels (request_id, label) from a CSV file',
  usage: FEEDBACK_USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, { file: { type: 'string' }, url: { type: 'string' } });
    if (values.help) {
      console.log(FEEDBACK_USAGE);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    const file = stringFlag(values.file);
    if (file === undefined || !existsSync(file)) throw new UsageError('--file must name an existing CSV');
    const { header: names, records } = parseCsv(readFileSync(file), file);
    const header = names ?? [];
    const idCol = header.indexOf('request_id');
    const labelCol = header.indexOf('label');
    if (idCol < 0 || labelCol < 0) throw new UsageError(`${file} needs the columns request_id and label (it has ${header.join(', ')})`);
    const base = serverUrl(values);
    let joined = 0;
    let unknown = 0;
    let bad = 0;
    for (let i = 0; i < records.length; i += 1000) {
      const items = records.slice(i, i + 1000).flatMap((r) => {
        if (r.fields === null) {
          bad++;
          console.error(`line ${r.line}: skipped (${r.error})`);
          return [];
        }
        const f = r.fields;
        const raw = (f[labelCol] ?? '').trim();
        const label = raw === 'true' ? 1 : raw === 'false' ? 0 : Number(raw);
        if (!f[idCol] || raw === '' || !Number.isFinite(label)) {
          bad++;
          console.error(`line ${r.line}: skipped (request_id and a numeric label are required)`);
          return [];
        }
        return [{ request_id: f[idCol]!.trim(), label }];
      });
      if (items.length === 0) continue;
      const res = await fetch(`${base}/v1/feedback`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(items),
      });
      const body = (await res.json()) as { joined?: number; unknown?: number; error?: string };
      if (!res.ok) throw new ScorelineError('BAD_REQUEST', `POST /v1/feedback: ${res.status} ${body.error ?? ''}`);
      joined += body.joined ?? 0;
      unknown += body.unknown ?? 0;
    }
    console.log(`${joined} labels joined, ${unknown} unknown request ids, ${bad} lines skipped`);
    return 0;
  },
};
