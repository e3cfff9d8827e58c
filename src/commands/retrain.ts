// `scoreline retrain | jobs | incident`: retraining from the command line, through the admin API
// of a running server (same connection flags as `scoreline models`).

import { intFlag, parse, stringFlag, UsageError, type Command } from './command.js';
import { fixed4 } from '../numbers.js';
import { TERMINAL, type JobState } from '../store/index.js';
import { call, COMMON, CONNECTION, print } from './admin.js';

const RETRAIN_USAGE = `Usage: scoreline retrain MODEL [--reason TEXT] [--wait]

Starts a retraining job for MODEL now (a manual trigger: no cooldown; refused while a job runs).
With --wait, follows the job until it ends and exits 0 when it succeeded, 1 otherwise.

${COMMON}`;

const JOBS_USAGE = `Usage: scoreline jobs [ID] [--model NAME] [--state STATE] [--limit N]

Without ID: recent retraining jobs, newest first. With ID: that job's steps, metrics, decision
and log.

${COMMON}`;

const INCIDENT_USAGE = `Usage: scoreline incident MODEL --reason TEXT [--severity info|warning|critical|emergency]

Records an incident for MODEL; it triggers a retraining job (no cooldown).

${COMMON}`;

interface JobView {
  id: string;
  model: string;
  state: JobState;
  trigger: { kind: string; reason: string };
  createdAt: string;
  endedAt?: string;
  championVersion?: number;
  challengerVersion?: number;
  decision?: { outcome: string; reasons: string[] };
  steps?: { name: string; ms?: number; ok?: boolean }[];
  validation?: { champion?: { auc: number | null }; challenger?: { auc: number | null }; delong?: { p: number } | null };
  log?: { at: string; msg: string }[];
}

function line(j: JobView): string {
  const versions =
    j.challengerVersion !== undefined
      ? ` v${j.challengerVersion} vs v${j.championVersion}`
      : j.championVersion !== undefined
        ? ` champion v${j.championVersion}`
        : '';
  return `${j.id}  ${j.model}  ${j.state.padEnd(11)} ${j.trigger.kind.padEnd(11)} ${j.createdAt}${versions}`;
}

export function describeJob(j: JobView): string {
  const out = [line(j), `  trigger: ${j.trigger.kind}: ${j.trigger.reason}`];
  for (const s of j.steps ?? [])
    out.push(`  step ${s.name}: ${s.ok === undefined ? 'running' : s.ok ? 'ok' : 'failed'}${s.ms !== undefined ? ` in ${s.ms} ms` : ''}`);
  const v = j.validation;
  if (v?.challenger)
    out.push(
      `  validation AUC: challenger ${fixed4(v.challenger.auc)}, champion ${fixed4(v.champion?.auc)}${v.delong ? `, DeLong p = ${v.delong.p.toPrecision(3)}` : ''}`,
    );
  if (j.decision) {
    out.push(`  decision: ${j.decision.outcome}`);
    for (const r of j.decision.reasons) out.push(`    ${r}`);
  }
  if (j.log) for (const l of j.log.slice(-40)) out.push(`  ${l.at}  ${l.msg}`);
  return out.join('\n');
}

export const retrain: Command = {
  summary: 'start a retraining job for a model (manual trigger)',
  usage: RETRAIN_USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...CONNECTION, wait: { type: 'boolean' } });
    if (values.help) {
      console.log(RETRAIN_USAGE);
      return 0;
    }
    const [name] = positionals;
    if (!name) throw new UsageError('retrain needs MODEL');
    const r = (await call(values, 'POST', `/admin/retrain/${encodeURIComponent(name)}`, {
      json: values.reason ? { reason: values.reason } : {},
    })) as { outcome: string; job: JobView | null };
    if (!values.wait || r.job === null) {
      print(values, r, () => (r.job ? `${r.outcome}: ${line(r.job)}` : r.outcome));
      return 0;
    }
    let job = r.job;
    let seen = 0;
    for (;;) {
      const full = (await call(values, 'GET', `/admin/jobs/${encodeURIComponent(job.id)}`)) as JobView;
      if (!values.json) for (const l of (full.log ?? []).slice(seen)) console.log(`${l.at}  ${l.msg}`);
      seen = full.log?.length ?? seen;
      job = full;
      if (TERMINAL.has(full.state)) break;
      await new Promise((res) => setTimeout(res, 1000));
    }
    print(values, job, () => describeJob({ ...job, log: [] }));
    return job.state === 'succeeded' ? 0 : 1;
  },
};

export const jobs: Command = {
  summary: 'list retraining jobs, or show one',
  usage: JOBS_USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      ...CONNECTION,
      model: { type: 'string' },
      state: { type: 'string' },
      limit: { type: 'string' },
    });
    if (values.help) {
      console.log(JOBS_USAGE);
      return 0;
    }
    const [id] = positionals;
    if (id !== undefined) {
      const j = (await call(values, 'GET', `/admin/jobs/${encodeURIComponent(id)}`)) as JobView;
      print(values, j, () => describeJob(j));
      return 0;
    }
    const q = new URLSearchParams();
    const model = stringFlag(values.model);
    const state = stringFlag(values.state);
    const limit = intFlag(values.limit, '--limit');
    if (model) q.set('model', model);
    if (state) q.set('state', state);
    if (limit !== undefined) q.set('limit', String(limit));
    const r = (await call(values, 'GET', `/admin/jobs${q.size ? `?${q}` : ''}`)) as { jobs: JobView[] };
    print(values, r, () => (r.jobs.length === 0 ? 'no retraining jobs' : r.jobs.map(line).join('\n')));
    return 0;
  },
};

export const incident: Command = {
  summary: 'record an incident for a model (triggers retraining)',
  usage: INCIDENT_USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...CONNECTION, severity: { type: 'string' } });
    if (values.help) {
      console.log(INCIDENT_USAGE);
      return 0;
    }
    const [name] = positionals;
    if (!name) throw new UsageError('incident needs MODEL');
    if (!values.reason) throw new UsageError('incident needs --reason TEXT');
    const r = (await call(values, 'POST', '/admin/incidents', {
      json: { model: name, reason: values.reason, ...(values.severity ? { severity: values.severity } : {}) },
    })) as {
      incident: { id: string };
      outcome: string;
      job: JobView | null;
    };
    print(values, r, () => `incident ${r.incident.id} recorded; retraining: ${r.outcome}${r.job ? ` (${r.job.id})` : ''}`);
    return 0;
  },
};
