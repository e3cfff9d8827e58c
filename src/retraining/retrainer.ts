// Automated retraining: triggers (drift and performance alerts, a cron schedule, an operator, an
// incident) become jobs in the store, at most one unfinished job per model across every replica,
// debounced and cooled down. Any replica records a trigger; only the leader runs jobs (./job-run.ts),
// fires the schedules and hears the alerts, so one trigger makes one job however many replicas
// watch. A leader that starts leading fails the jobs a previous leader left unfinished (it died,
// or stopped leading), and queues an automatically triggered one again, once; every outcome is
// sent to the alert channels. With SQLite the one process always leads, and a restart is the
// handover.

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Cron } from 'croner';
import type { Logger } from 'pino';
import type { Deployer } from '../deploy/index.js';
import type { Strategy } from '../deploy/strategies.js';
import { conflict, isScorelineError, jobNotFound, retrainingNotConfigured } from '../errors.js';
import { fixed4 } from '../numbers.js';
import type { AlertManager, AlertNotification } from '../monitoring/alerts.js';
import type { PredictionLog } from '../monitoring/prediction-log.js';
import { notify, type AlertChannel } from '../monitoring/webhook.js';
import {
  AUTOMATIC_TRIGGERS,
  type Incident,
  type Job,
  type JobFilter,
  type JobRecords,
  type JobState,
  type Registry,
  type Trigger,
  type TriggerKind,
} from '../store/index.js';
import { killTrainer } from './command.js';
import type { RetrainingConfig } from '../retraining-config.js';
import { JobFailure, JobRun, JobTakenOver, type RunHost } from './job-run.js';

export interface RetrainerOptions {
  dataDir: string;
  log: Logger;
  registry: Registry;
  jobs: JobRecords;
  deployer: Deployer;
  predictionLog: PredictionLog | null;
  alerts: AlertManager | null;
  channels: readonly AlertChannel[];
  configs: ReadonlyMap<string, RetrainingConfig>;
  /** The server's feature definitions: features a data file lacks are computed by them. */
  definitionsPath: string | null;
  /** Freezes a new version's drift reference from CSV rows (the job's validation rows). */
  freezeReference?: (model: string, version: number, csv: string) => Promise<void>;
  /** This replica: the owner of the jobs it runs. */
  replicaId: string;
  /** Whether other replicas share the store (then a job left unfinished was another replica's, not a previous run of this one). */
  shared?: boolean;
  now?: () => number;
}

type Outcome = 'job' | 'folded' | 'skipped-running' | 'skipped-cooldown';

const MAX_LOG = 2000;
/** How often the leader looks for queued jobs besides being told (a notification from another replica can be missed). */
const PUMP_MS = 1000;

function newJobId(now: number): string {
  const t = new Date(now).toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `job-${t}-${randomBytes(3).toString('hex')}`;
}

/** The one version a deployment serves all traffic with, or null while traffic is split. */
function soleVersion(s: Strategy): number | null {
  switch (s.strategy) {
    case 'direct':
      return s.version;
    case 'blue-green':
      return s.active === 'blue' ? s.blue : s.green;
    case 'shadow':
      return s.primary;
    default:
      return null;
  }
}

export class Retrainer implements RunHost {
  /** Jobs this replica runs now, by id. */
  private readonly runs = new Map<string, { run: JobRun; done: Promise<void> }>();
  private crons: Cron[] = [];
  private unsubscribe: (() => void)[] = [];
  private readonly clock: () => number;
  private leading = false;
  private closing = false;
  private closed = false;
  private pumpTimer: NodeJS.Timeout | null = null;
  private pumping = false;
  private pumpAgain = false;
  private wakeTimers = new Set<NodeJS.Timeout>();
  private countCache: { model: string; state: string; n: number }[] = [];
  private storeDown = false;

  readonly opts: RetrainerOptions;

  constructor(opts: RetrainerOptions) {
    // Every retraining line, the job runs' included, carries component=retraining.
    this.opts = { ...opts, log: opts.log.child({ component: 'retraining' }) };
    this.clock = opts.now ?? Date.now;
  }

  get configs(): ReadonlyMap<string, RetrainingConfig> {
    return this.opts.configs;
  }

  /**
   * This replica leads now: fails what a previous leader left unfinished (queuing automatic
   * triggers again once), then starts the schedules, the alert triggers and the job queue.
   */
  async lead(): Promise<void> {
    if (this.leading || this.closing) return;
    this.leading = true;
    try {
      await this.adoptUnfinished();
    } catch (e) {
      // Not leading after all until the next attempt: nothing started.
      this.leading = false;
      throw e;
    }
    if (!this.leading) return;
    for (const [model, cfg] of this.opts.configs) {
      if (cfg.triggers.schedule === null) continue;
      const pattern = cfg.triggers.schedule;
      this.crons.push(
        new Cron(
          pattern,
          { catch: (e) => this.opts.log.error({ model, err: (e as Error).message }, 'scheduled retraining trigger failed') },
          () => {
            void this.trigger(model, { kind: 'schedule', reason: `schedule '${pattern}'`, evidence: { schedule: pattern } }).catch(
              (e: Error) => this.opts.log.warn({ model, err: e.message }, 'scheduled retraining trigger could not be recorded'),
            );
          },
        ),
      );
    }
    if (this.opts.alerts !== null) this.unsubscribe.push(this.opts.alerts.subscribe((n) => this.onAlert(n)));
    this.pumpTimer = setInterval(() => this.wake(), PUMP_MS);
    this.pumpTimer.unref();
    await this.refreshCounts();
    this.wake();
  }

  /** Fails the jobs a previous leader (or a previous run of this process) left running. */
  private async adoptUnfinished(): Promise<void> {
    for (const job of await this.opts.jobs.unfinished()) {
      if (job.state === 'queued' || this.runs.has(job.id)) continue;
      const was = job.state;
      if (job.trainerPid !== undefined && (job.ownerHost === undefined || job.ownerHost === hostname()) && killTrainer(job.trainerPid)) {
        this.jobLog(job, `stopped the orphaned trainer process ${job.trainerPid}`);
      }
      const why =
        this.opts.shared === true && job.owner !== this.opts.replicaId
          ? `interrupted while ${was}: replica ${job.owner ?? '(unknown)'} that ran it stopped leading; the job did not complete`
          : `interrupted by a restart while ${was}; the job did not complete`;
      this.opts.log.warn({ job: job.id, model: job.model, was, owner: job.owner }, 'retraining job interrupted: marked failed');
      await this.interrupted(job, why, true);
    }
  }

  /** This replica no longer leads: no more schedules or alert triggers; its running jobs are stopped and recorded as interrupted. */
  stepDown(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    this.stopTriggers();
    // Their outcome is written when the store answers again; a new leader that gets there first wins.
    for (const { run } of this.runs.values()) run.abort(`interrupted while ${run.job.state}: ${reason}`);
  }

  get isLeading(): boolean {
    return this.leading;
  }

  private stopTriggers(): void {
    for (const c of this.crons) c.stop();
    this.crons = [];
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    if (this.pumpTimer !== null) clearInterval(this.pumpTimer);
    this.pumpTimer = null;
    for (const t of this.wakeTimers) clearTimeout(t);
    this.wakeTimers.clear();
  }

  /** Drift and performance alerts that cross a model's trigger thresholds start a job. */
  private onAlert(n: AlertNotification): void {
    if (n.event !== 'fired') return;
    const model = n.alert.labels.model;
    if (model === undefined) return;
    const cfg = this.opts.configs.get(model);
    if (cfg === undefined) return;
    const metric = this.opts.alerts?.rule(n.alert.rule)?.metric;
    const evidence = {
      alert: {
        id: n.alert.id,
        rule: n.alert.rule,
        severity: n.alert.severity,
        labels: n.alert.labels,
        value: n.alert.value,
        threshold: n.alert.threshold,
        message: n.alert.message,
      },
    };
    let t: Omit<Trigger, 'at'> | null = null;
    if (metric === 'score_psi' && cfg.triggers.drift !== null && n.alert.value > cfg.triggers.drift.psi) {
      t = {
        kind: 'drift',
        reason: `score PSI ${fixed4(n.alert.value)} > ${cfg.triggers.drift.psi} (alert ${n.alert.rule}, version ${n.alert.labels.version})`,
        evidence,
      };
    } else if (metric === 'auc_drop' && cfg.triggers.performance !== null && n.alert.value > cfg.triggers.performance.aucDrop) {
      t = {
        kind: 'performance',
        reason: `AUC dropped ${fixed4(n.alert.value)} below the reference (> ${cfg.triggers.performance.aucDrop}; alert ${n.alert.rule})`,
        evidence,
      };
    }
    if (t !== null)
      void this.trigger(model, t).catch((e: Error) =>
        this.opts.log.warn({ model, err: e.message }, 'retraining trigger could not be recorded'),
      );
  }

  /**
   * A trigger for a model, on any replica. Manual and incident triggers skip the cooldown; a manual
   * trigger while a job runs is a conflict (409), any other is recorded as skipped; a trigger while
   * a job waits in the queue is folded into it. Returns the job it started or joined, and what
   * became of the trigger.
   */
  async trigger(model: string, t: Omit<Trigger, 'at'>): Promise<{ job: Job | null; outcome: Outcome }> {
    const cfg = this.opts.configs.get(model);
    await this.opts.registry.getModel(model); // 404 for an unknown model
    if (cfg === undefined) throw retrainingNotConfigured(model);
    const now = this.clock();
    const trigger: Trigger = { ...t, at: new Date(now).toISOString() };
    const record = async (outcome: Outcome, job: Job | null, why: string) => {
      await this.opts.jobs.addTriggerEvent({ at: trigger.at, model, kind: t.kind, outcome, jobId: job?.id ?? null, reason: why });
      this.opts.log.info({ model, trigger: t.kind, outcome, job: job?.id, reason: t.reason }, `retraining trigger: ${outcome}`);
      return { job, outcome };
    };
    const automatic = AUTOMATIC_TRIGGERS.has(t.kind);
    // Replicas record triggers concurrently: each step compares and sets, and is tried again when another replica won.
    for (let attempt = 0; attempt < 10; attempt++) {
      const active = await this.opts.jobs.active(model);
      if (active !== undefined) {
        if (active.state === 'queued') {
          active.folded.push(trigger);
          if (!(await this.opts.jobs.update(active))) continue;
          return record('folded', active, t.reason);
        }
        if (t.kind === 'manual')
          throw conflict(`model '${model}' already has a retraining job in progress (${active.id}, ${active.state})`);
        return record('skipped-running', active, `${t.reason}; job ${active.id} is ${active.state}`);
      }
      const last = await this.opts.jobs.lastEnded(model);
      if (automatic && last !== null && now < last + cfg.triggers.cooldownSeconds * 1000) {
        const until = new Date(last + cfg.triggers.cooldownSeconds * 1000).toISOString();
        return record('skipped-cooldown', null, `${t.reason}; cooling down until ${until}`);
      }
      // Automatic triggers wait for the debounce so a burst of alerts makes one job.
      const job = this.newJob(model, trigger, automatic ? cfg.triggers.debounceSeconds * 1000 : 0);
      this.jobLog(job, `queued: ${t.kind} trigger: ${t.reason}`);
      if (!(await this.opts.jobs.insert(job))) continue;
      void this.refreshCounts();
      this.wakeAt(job);
      return record('job', job, t.reason);
    }
    throw conflict(`the retraining jobs of model '${model}' changed too often while this trigger was recorded; retry`);
  }

  private newJob(model: string, trigger: Trigger, debounceMs: number): Job {
    const now = this.clock();
    return {
      id: newJobId(now),
      model,
      state: 'queued',
      trigger,
      folded: [],
      createdAt: new Date(now).toISOString(),
      updatedAt: new Date(now).toISOString(),
      ...(debounceMs > 0 ? { notBefore: new Date(now + debounceMs).toISOString() } : {}),
      steps: [],
      log: [],
      revision: 0,
    };
  }

  /** POST /admin/incidents: recorded, and a retraining trigger for the model. */
  async incident(model: string, reason: string, severity: string): Promise<{ incident: Incident; job: Job | null; outcome: string }> {
    const { job, outcome } = await this.trigger(model, { kind: 'incident', reason: `incident: ${reason}`, evidence: { reason, severity } });
    const incident: Incident = {
      id: `inc-${randomBytes(4).toString('hex')}`,
      model,
      at: new Date(this.clock()).toISOString(),
      reason,
      severity,
      jobId: job?.id ?? null,
      outcome,
    };
    await this.opts.jobs.addIncident(incident);
    return { incident, job, outcome };
  }

  /** Jobs by model and state (for `scoreline_retraining_jobs`), as last read from the store: /metrics never waits on it. */
  counts(): { model: string; state: string; n: number }[] {
    return this.closed ? [] : this.countCache;
  }

  /** Reads the job counts again (on every replica: the metric is the cluster's). */
  async refreshCounts(): Promise<void> {
    try {
      this.countCache = await this.opts.jobs.counts();
    } catch (e) {
      // Kept as last read: the metric is a gauge, and the store being away is logged elsewhere.
      if (!isScorelineError(e) && !this.closing) this.opts.log.error({ err: (e as Error).stack }, 'could not count the retraining jobs');
    }
  }

  async incidents(model?: string): Promise<Incident[]> {
    return this.opts.jobs.incidents(model);
  }

  async get(id: string): Promise<Job> {
    const live = this.runs.get(id)?.run.job;
    const job = live ?? (await this.opts.jobs.get(id));
    if (job === undefined) throw jobNotFound(id);
    return job;
  }

  async list(filter: JobFilter = {}): Promise<Job[]> {
    return this.opts.jobs.list(filter);
  }

  /** GET /admin/retrain/{model}: configuration, the job in progress, the last one, cooldown, recent triggers. */
  async status(model: string) {
    await this.opts.registry.getModel(model);
    const cfg = this.opts.configs.get(model);
    if (cfg === undefined) throw retrainingNotConfigured(model);
    const last = await this.opts.jobs.lastEnded(model);
    const stored = await this.opts.jobs.active(model);
    const active = stored === undefined ? null : (this.runs.get(stored.id)?.run.job ?? stored);
    return {
      model,
      config: cfg,
      active,
      last: (await this.opts.jobs.list({ model, limit: 1 }))[0] ?? null,
      cooldownUntil: last === null ? null : new Date(last + cfg.triggers.cooldownSeconds * 1000).toISOString(),
      triggers: await this.opts.jobs.triggerEvents(model, 50),
    };
  }

  // ---- running jobs (the leader) ---------------------------------------------------------------

  /** Looks for queued jobs due now (a job queued here, or a notification that another replica queued one). */
  wake(): void {
    if (!this.leading || this.closing) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    void this.pump()
      .catch((e: Error) => {
        if (!isScorelineError(e)) this.opts.log.error({ err: e.stack }, 'retraining queue failed');
      })
      .finally(() => {
        this.pumping = false;
        if (this.pumpAgain) {
          this.pumpAgain = false;
          this.wake();
        }
      });
  }

  private wakeAt(job: Job): void {
    const delay = job.notBefore === undefined ? 0 : Math.max(0, Date.parse(job.notBefore) - this.clock());
    const t = setTimeout(() => {
      this.wakeTimers.delete(t);
      this.wake();
    }, delay + 5);
    t.unref();
    this.wakeTimers.add(t);
  }

  private async pump(): Promise<void> {
    const now = this.clock();
    for (const job of await this.opts.jobs.unfinished()) {
      if (!this.leading || this.closing) return;
      if (job.state !== 'queued' || this.runs.has(job.id)) continue;
      if (job.notBefore !== undefined && Date.parse(job.notBefore) > now) continue;
      const cfg = this.opts.configs.get(job.model);
      if (cfg === undefined) {
        await this.finish(job, 'failed', [
          `the leading replica ${this.opts.replicaId} has no retraining configuration for model '${job.model}'`,
        ]);
        continue;
      }
      // Claimed by compare-and-set: a job is started once, whatever else changed it meanwhile.
      job.state = 'running';
      job.owner = this.opts.replicaId;
      job.ownerHost = hostname();
      job.startedAt = new Date(this.clock()).toISOString();
      job.updatedAt = job.startedAt;
      this.jobLog(job, `state: running (replica ${this.opts.replicaId})`);
      if (!(await this.opts.jobs.update(job))) continue;
      this.start(job, cfg);
    }
  }

  private start(job: Job, cfg: RetrainingConfig): void {
    const run = new JobRun(this, job, cfg);
    this.send(job, 'started');
    void this.refreshCounts();
    const done = run
      .run()
      .then(async (outcome) => {
        if (outcome.kind === 'interrupted') await this.interrupted(job, outcome.reason, false);
        else await this.finish(job, outcome.state, outcome.reasons);
      })
      .catch((e: Error) => this.opts.log.error({ job: job.id, err: e.stack }, 'retraining job could not be recorded'))
      .finally(() => {
        this.runs.delete(job.id);
        void this.refreshCounts();
      });
    this.runs.set(job.id, { run, done });
  }

  jobLog(job: Job, msg: string): void {
    job.log.push({ at: new Date(this.clock()).toISOString(), msg });
    if (job.log.length > MAX_LOG) job.log.splice(0, job.log.length - MAX_LOG);
  }

  async setState(job: Job, state: JobState): Promise<void> {
    job.state = state;
    job.updatedAt = new Date(this.clock()).toISOString();
    this.jobLog(job, `state: ${state}`);
    await this.save(job);
  }

  /**
   * Stores a running job's progress. While the store cannot be reached the job goes on (its next
   * write carries everything); when another replica has written the job since (it was failed as
   * interrupted), JobTakenOver stops the run.
   */
  async save(job: Job): Promise<void> {
    try {
      if (!(await this.opts.jobs.update(job)))
        throw new JobTakenOver('another replica recorded the job as interrupted while this one ran it');
      if (this.storeDown) this.opts.log.info({ job: job.id }, 'retraining job progress is stored again');
      this.storeDown = false;
    } catch (e) {
      if (!(isScorelineError(e) && e.code === 'STORE_UNAVAILABLE')) throw e;
      if (!this.storeDown) this.opts.log.warn({ job: job.id, err: e.message }, 'retraining job progress cannot be stored; the job goes on');
      this.storeDown = true;
    }
  }

  /**
   * Records the job's end, and notifies. The write is retried while the store cannot be reached
   * (until this process closes); false when another replica ended the job first.
   */
  private async finish(job: Job, state: JobState, reasons: string[], opts: { notify: boolean } = { notify: true }): Promise<boolean> {
    const now = new Date(this.clock()).toISOString();
    job.state = state;
    job.updatedAt = now;
    job.endedAt = now;
    // The gate's reasons stay on record; the rollout's outcome is added to them.
    const outcome =
      state === 'succeeded' ? 'promoted' : state === 'rejected' ? 'rejected' : state === 'rolled_back' ? 'rolled_back' : 'failed';
    const earlier = job.decision?.outcome === 'accepted' ? job.decision.reasons : [];
    job.decision = { outcome, reasons: state === 'rejected' ? reasons : [...earlier, ...reasons] };
    if (state === 'failed') job.error = reasons.join('; ');
    this.jobLog(job, `${state}: ${reasons.join('; ')}`);
    for (let delay = 500; ; delay = Math.min(5000, delay * 2)) {
      try {
        if (!(await this.opts.jobs.update(job))) {
          this.opts.log.warn({ job: job.id, state }, 'retraining job was already recorded by another replica; this outcome is dropped');
          return false;
        }
        break;
      } catch (e) {
        if (!(isScorelineError(e) && e.code === 'STORE_UNAVAILABLE') || this.closing) throw e;
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    if (opts.notify) this.send(job, state);
    return true;
  }

  /** A job stopped from outside: failed, and an automatic trigger's job queued again (once: never a retry's retry). */
  private async interrupted(job: Job, reason: string, notifyFailure: boolean): Promise<void> {
    if (!(await this.finish(job, 'failed', [reason], { notify: notifyFailure }))) return;
    if (!AUTOMATIC_TRIGGERS.has(job.trigger.kind) || job.retryOf !== undefined) return;
    const retry: Job = { ...this.newJob(job.model, job.trigger, 0), retryOf: job.id, folded: [...job.folded] };
    this.jobLog(retry, `queued again: job ${job.id} (${job.trigger.kind} trigger: ${job.trigger.reason}) was interrupted: ${reason}`);
    if (await this.opts.jobs.insert(retry)) {
      await this.opts.jobs.addTriggerEvent({
        at: retry.createdAt,
        model: job.model,
        kind: job.trigger.kind,
        outcome: 'job',
        jobId: retry.id,
        reason: `queued again: job ${job.id} was interrupted`,
      });
      this.opts.log.info({ job: retry.id, model: job.model, retryOf: job.id }, 'retraining job queued again after an interruption');
      this.wake();
    }
  }

  send(job: Job, event: JobState | 'started'): void {
    const icon =
      { started: 'STARTED', succeeded: 'PROMOTED', rejected: 'REJECTED', failed: 'FAILED', rolled_back: 'ROLLED BACK' }[event as string] ??
      event.toUpperCase();
    // the outcome first (the last reason), then how the gate saw it
    const r = job.decision?.reasons ?? [];
    const why = event === 'started' || r.length === 0 ? job.trigger.reason : finalReasonFirst(r, event);
    const versions =
      job.challengerVersion !== undefined ? ` (challenger v${job.challengerVersion} vs champion v${job.championVersion})` : '';
    void notify(this.opts.channels, {
      text: `[RETRAINING ${icon}] ${job.model} job ${job.id}${versions}: ${why}`,
      event: `retraining.${event}`,
      job: summary(job),
    });
  }

  /** The version serving all traffic now: alias `champion`, else the deployment's, else the latest. */
  async championOf(model: string): Promise<number> {
    const m = await this.opts.registry.getModel(model);
    if (m.aliases.champion !== undefined) return m.aliases.champion;
    const s = this.opts.deployer.state(model)?.spec;
    if (s !== undefined) {
      const v = soleVersion(s);
      if (v !== null) return v;
      throw new JobFailure(`model '${model}' is in a ${s.strategy} deployment; retraining waits for one version to serve all traffic`);
    }
    return m.latestVersion;
  }

  /** Stops triggers; running jobs are failed now (an automatic trigger's job is queued again once, for the next leader). */
  async close(): Promise<void> {
    this.closing = true;
    this.stopTriggers();
    for (const { run } of this.runs.values()) run.abort('interrupted: the server shut down');
    await Promise.allSettled([...this.runs.values()].map((r) => r.done));
    this.leading = false;
    this.closed = true;
  }
}

/** The final reason first, then the gate's checks: what a notification reader needs first. */
function finalReasonFirst(reasons: readonly string[], event: string): string {
  if (event === 'rejected') return reasons.filter((x) => x.startsWith('FAIL')).join('; ') || reasons.join('; ');
  return [reasons[reasons.length - 1], ...reasons.slice(0, -1).filter((x) => !x.startsWith('pass: challenger outputs'))].join('; ');
}

/** What lists and notifications carry: the job without its log. */
export function summary(job: Job) {
  const { log: _log, ...rest } = job;
  return rest;
}

export type { TriggerKind };
