// Automated retraining: triggers (drift and performance alerts, a cron schedule, an operator, an
// incident) become jobs, at most one per model at a time, debounced and cooled down. A job
// gathers the data (files and, if enabled, logged predictions joined with their labels), splits it
// out of time, trains a challenger (built-in logistic regression, or an external command), scores
// champion and challenger on the same held-out latest rows, and applies the gate. A challenger
// that passes is registered with its lineage, aliased `challenger` and rolled out as a canary;
// the canary's own analysis promotes it (alias `champion`) or rolls it back. Every step, its
// timing, the metrics and the reasons for each decision are kept with the job, and every outcome
// is sent to the alert channels. Heavy work runs in the job's worker thread (./worker.ts), so
// scoring latency is not the trainer's problem.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fork, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Cron } from 'croner';
import type { Logger } from 'pino';
import type { ModelConfig } from '../config.js';
import type { Deployer, DeploymentChange } from '../deploy/index.js';
import type { Strategy } from '../deploy/strategies.js';
import { conflict, jobNotFound, retrainingNotConfigured } from '../errors.js';
import type { AlertManager, AlertNotification } from '../monitoring/alerts.js';
import type { PredictionLog } from '../monitoring/prediction-log.js';
import { notify, type AlertChannel } from '../monitoring/webhook.js';
import { readOnnxMetadata } from '../registry/onnx.js';
import type { ModelRegistry } from '../registry/store.js';
import { killTrainer, runCommandTrainer } from './command.js';
import type { RetrainingConfig } from './config.js';
import { TERMINAL, JobStore, type Incident, type Job, type JobState, type Trigger, type TriggerKind } from './store.js';
import type { PrepareResult, TrainResult, ValidateResult, WorkerRequest } from './worker.js';

export interface RetrainerOptions {
  dataDir: string;
  log: Logger;
  registry: ModelRegistry;
  deployer: Deployer;
  predictionLog: PredictionLog | null;
  alerts: AlertManager | null;
  channels: readonly AlertChannel[];
  configs: ReadonlyMap<string, RetrainingConfig>;
  /** The server's feature definitions: features a data file lacks are computed by them. */
  definitionsPath: string | null;
  /** Freezes a new version's drift reference from CSV rows (the job's validation rows). */
  freezeReference?: (model: string, version: number, csv: string) => Promise<void>;
  now?: () => number;
}

const MAX_LOG = 2000;

function newJobId(now: number): string {
  const t = new Date(now).toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `job-${t}-${randomBytes(3).toString('hex')}`;
}

const r4 = (x: number | null | undefined): number | null => (x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 10000) / 10000);
const fmt = (x: number | null | undefined): string => (x === null || x === undefined ? 'n/a' : x.toFixed(4));

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

/** The job's child process (./worker.ts), at the lowest CPU priority; one request at a time. */
class JobWorker {
  private readonly child: ChildProcess;
  private pending: { resolve: (v: any) => void; reject: (e: Error) => void } | null = null;
  private exited = false;

  constructor(log: Logger) {
    this.child = fork(fileURLToPath(new URL('./worker.js', import.meta.url)), [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    try {
      if (this.child.pid !== undefined) setPriority(this.child.pid, 19);
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'could not lower the retraining process priority');
    }
    this.child.on('message', (m: { ok: boolean; value?: unknown; error?: string }) => {
      const p = this.pending;
      this.pending = null;
      if (p === null) return;
      if (m.ok) p.resolve(m.value);
      else p.reject(new Error(m.error));
    });
    this.child.on('error', (e) => {
      this.pending?.reject(e);
      this.pending = null;
    });
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      this.pending?.reject(new Error(`the job's worker process exited (${signal ?? code})`));
      this.pending = null;
    });
  }

  call<T>(req: WorkerRequest): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.exited) return reject(new Error("the job's worker process is gone"));
      this.pending = { resolve, reject };
      this.child.send(req);
    });
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.kill('SIGKILL');
    await gone;
  }
}

class JobFailure extends Error {}

export class Retrainer {
  private readonly store: JobStore;
  /** The queued or running job of each model. */
  private readonly active = new Map<string, Job>();
  private readonly crons: Cron[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly workers = new Set<JobWorker>();
  private readonly trainers = new Set<number>();
  private readonly waiters = new Set<(e: Error) => void>();
  private unsubscribe: (() => void)[] = [];
  private readonly clock: () => number;
  private closed = false;
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly opts: RetrainerOptions) {
    this.store = new JobStore(opts.dataDir);
    this.clock = opts.now ?? Date.now;
  }

  get configs(): ReadonlyMap<string, RetrainingConfig> {
    return this.opts.configs;
  }

  /** Fails what a previous process left unfinished, then starts the schedules and alert triggers. */
  start(): void {
    for (const job of this.store.unfinished()) {
      const was = job.state;
      if (job.trainerPid !== undefined && killTrainer(job.trainerPid)) this.jobLog(job, `stopped the orphaned trainer process ${job.trainerPid}`);
      this.finish(job, 'failed', [`interrupted by a restart while ${was}; the job did not complete`], { notify: true });
      this.opts.log.warn({ job: job.id, model: job.model, was }, 'retraining job interrupted by a restart: marked failed');
    }
    for (const [model, cfg] of this.opts.configs) {
      if (cfg.triggers.schedule === null) continue;
      const pattern = cfg.triggers.schedule;
      this.crons.push(
        new Cron(pattern, { catch: (e) => this.opts.log.error({ model, err: (e as Error).message }, 'scheduled retraining trigger failed') }, () => {
          this.trigger(model, { kind: 'schedule', reason: `schedule '${pattern}'`, evidence: { schedule: pattern } });
        }),
      );
    }
    if (this.opts.alerts !== null) this.unsubscribe.push(this.opts.alerts.subscribe((n) => this.onAlert(n)));
  }

  /** Drift and performance alerts that cross a model's trigger thresholds start a job. */
  private onAlert(n: AlertNotification): void {
    if (n.event !== 'fired') return;
    const model = n.alert.labels.model;
    if (model === undefined) return;
    const cfg = this.opts.configs.get(model);
    if (cfg === undefined) return;
    const metric = this.opts.alerts?.rule(n.alert.rule)?.metric;
    const evidence = { alert: { id: n.alert.id, rule: n.alert.rule, severity: n.alert.severity, labels: n.alert.labels, value: n.alert.value, threshold: n.alert.threshold, message: n.alert.message } };
    if (metric === 'score_psi' && cfg.triggers.drift !== null && n.alert.value > cfg.triggers.drift.psi) {
      this.trigger(model, { kind: 'drift', reason: `score PSI ${fmt(n.alert.value)} > ${cfg.triggers.drift.psi} (alert ${n.alert.rule}, version ${n.alert.labels.version})`, evidence });
    } else if (metric === 'auc_drop' && cfg.triggers.performance !== null && n.alert.value > cfg.triggers.performance.aucDrop) {
      this.trigger(model, { kind: 'performance', reason: `AUC dropped ${fmt(n.alert.value)} below the reference (> ${cfg.triggers.performance.aucDrop}; alert ${n.alert.rule})`, evidence });
    }
  }

  /**
   * A trigger for a model. Manual and incident triggers skip the cooldown; a manual trigger while a
   * job runs is a conflict (409), any other is recorded as skipped. Returns the job it started or
   * joined, and what became of the trigger.
   */
  trigger(model: string, t: Omit<Trigger, 'at'>): { job: Job | null; outcome: 'job' | 'folded' | 'skipped-running' | 'skipped-cooldown' } {
    const cfg = this.opts.configs.get(model);
    this.opts.registry.getModel(model); // 404 for an unknown model
    if (cfg === undefined) throw retrainingNotConfigured(model);
    const now = this.clock();
    const trigger: Trigger = { ...t, at: new Date(now).toISOString() };
    const record = (outcome: 'job' | 'folded' | 'skipped-running' | 'skipped-cooldown', job: Job | null, why: string) => {
      this.store.addTriggerEvent({ at: trigger.at, model, kind: t.kind, outcome, jobId: job?.id ?? null, reason: why });
      this.opts.log.info({ model, trigger: t.kind, outcome, job: job?.id, reason: t.reason }, `retraining trigger: ${outcome}`);
      return { job, outcome };
    };
    const active = this.active.get(model);
    if (active !== undefined) {
      if (active.state === 'queued') {
        active.folded.push(trigger);
        this.store.save(active);
        return record('folded', active, t.reason);
      }
      if (t.kind === 'manual') throw conflict(`model '${model}' already has a retraining job in progress (${active.id}, ${active.state})`);
      return record('skipped-running', active, `${t.reason}; job ${active.id} is ${active.state}`);
    }
    const automatic = t.kind === 'drift' || t.kind === 'performance' || t.kind === 'schedule';
    const last = this.store.lastEnded(model);
    if (automatic && last !== null && now < last + cfg.triggers.cooldownSeconds * 1000) {
      const until = new Date(last + cfg.triggers.cooldownSeconds * 1000).toISOString();
      return record('skipped-cooldown', null, `${t.reason}; cooling down until ${until}`);
    }
    const job: Job = {
      id: newJobId(now),
      model,
      state: 'queued',
      trigger,
      folded: [],
      createdAt: trigger.at,
      updatedAt: trigger.at,
      steps: [],
      log: [],
    };
    this.active.set(model, job);
    this.store.save(job);
    this.jobLog(job, `queued: ${t.kind} trigger: ${t.reason}`);
    // Automatic triggers wait for the debounce so a burst of alerts makes one job.
    const delay = automatic ? cfg.triggers.debounceSeconds * 1000 : 0;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      const p = this.run(job, cfg).finally(() => this.running.delete(p));
      this.running.add(p);
    }, delay);
    this.timers.add(timer);
    return record('job', job, t.reason);
  }

  /** POST /admin/incidents: recorded, and a retraining trigger for the model. */
  incident(model: string, reason: string, severity: string): { incident: Incident; job: Job | null; outcome: string } {
    const { job, outcome } = this.trigger(model, { kind: 'incident', reason: `incident: ${reason}`, evidence: { reason, severity } });
    const incident: Incident = { id: `inc-${randomBytes(4).toString('hex')}`, model, at: new Date(this.clock()).toISOString(), reason, severity, jobId: job?.id ?? null, outcome };
    this.store.addIncident(incident);
    return { incident, job, outcome };
  }

  /** Jobs by model and state (for `scoreline_retraining_jobs`). */
  counts(): { model: string; state: string; n: number }[] {
    return this.closed ? [] : this.store.counts();
  }

  incidents(model?: string): Incident[] {
    return this.store.incidents(model);
  }

  get(id: string): Job {
    const live = [...this.active.values()].find((j) => j.id === id);
    const job = live ?? this.store.get(id);
    if (job === undefined) throw jobNotFound(id);
    return job;
  }

  list(filter: { model?: string; state?: JobState; limit?: number } = {}): Job[] {
    return this.store.list(filter);
  }

  /** GET /admin/retrain/{model}: configuration, the job in progress, the last one, cooldown, recent triggers. */
  status(model: string) {
    this.opts.registry.getModel(model);
    const cfg = this.opts.configs.get(model);
    if (cfg === undefined) throw retrainingNotConfigured(model);
    const last = this.store.lastEnded(model);
    return {
      model,
      config: cfg,
      active: this.active.get(model) ?? null,
      last: this.store.list({ model, limit: 1 })[0] ?? null,
      cooldownUntil: last === null ? null : new Date(last + cfg.triggers.cooldownSeconds * 1000).toISOString(),
      triggers: this.store.triggerEvents(model, 50),
    };
  }

  // ---- the job ---------------------------------------------------------------------------------

  private jobLog(job: Job, msg: string): void {
    job.log.push({ at: new Date(this.clock()).toISOString(), msg });
    if (job.log.length > MAX_LOG) job.log.splice(0, job.log.length - MAX_LOG);
  }

  private setState(job: Job, state: JobState): void {
    job.state = state;
    job.updatedAt = new Date(this.clock()).toISOString();
    this.jobLog(job, `state: ${state}`);
    this.store.save(job);
  }

  private async step<T>(job: Job, name: string, work: () => Promise<T>): Promise<T> {
    const t0 = this.clock();
    const s = { name, startedAt: new Date(t0).toISOString() } as Job['steps'][number];
    job.steps.push(s);
    this.store.save(job);
    try {
      const r = await work();
      s.ok = true;
      return r;
    } catch (e) {
      s.ok = false;
      throw e;
    } finally {
      const t1 = this.clock();
      s.endedAt = new Date(t1).toISOString();
      s.ms = t1 - t0;
      this.store.save(job);
    }
  }

  private finish(job: Job, state: JobState, reasons: string[], opts: { notify: boolean } = { notify: true }): void {
    const now = new Date(this.clock()).toISOString();
    job.state = state;
    job.updatedAt = now;
    job.endedAt = now;
    // The gate's reasons stay on record; the rollout's outcome is added to them.
    const outcome = state === 'succeeded' ? 'promoted' : state === 'rejected' ? 'rejected' : state === 'rolled_back' ? 'rolled_back' : 'failed';
    const earlier = job.decision?.outcome === 'accepted' ? job.decision.reasons : [];
    job.decision = { outcome, reasons: state === 'rejected' ? reasons : [...earlier, ...reasons] };
    if (state === 'failed') job.error = reasons.join('; ');
    this.jobLog(job, `${state}: ${reasons.join('; ')}`);
    this.store.save(job);
    if (this.active.get(job.model)?.id === job.id) this.active.delete(job.model);
    if (opts.notify) this.send(job, state);
  }

  private send(job: Job, event: JobState | 'started'): void {
    const icon = { started: 'STARTED', succeeded: 'PROMOTED', rejected: 'REJECTED', failed: 'FAILED', rolled_back: 'ROLLED BACK' }[event as string] ?? event.toUpperCase();
    // the outcome first (the last reason), then how the gate saw it
    const r = job.decision?.reasons ?? [];
    const why = event === 'started' || r.length === 0 ? job.trigger.reason : finalReasonFirst(r, event);
    const versions = job.challengerVersion !== undefined ? ` (challenger v${job.challengerVersion} vs champion v${job.championVersion})` : '';
    void notify(this.opts.channels, {
      text: `[RETRAINING ${icon}] ${job.model} job ${job.id}${versions}: ${why}`,
      event: `retraining.${event}`,
      job: summary(job),
    });
  }

  /** The version serving all traffic now: alias `champion`, else the deployment's, else the latest. */
  championOf(model: string): number {
    const m = this.opts.registry.getModel(model);
    if (m.aliases.champion !== undefined) return m.aliases.champion;
    const s = this.opts.deployer.state(model)?.spec;
    if (s !== undefined) {
      const v = soleVersion(s);
      if (v !== null) return v;
      throw new JobFailure(`model '${model}' is in a ${s.strategy} deployment; retraining waits for one version to serve all traffic`);
    }
    return m.latestVersion;
  }

  private async run(job: Job, cfg: RetrainingConfig): Promise<void> {
    if (this.closed) return;
    const worker = new JobWorker(this.opts.log);
    this.workers.add(worker);
    const model = job.model;
    try {
      job.startedAt = new Date(this.clock()).toISOString();
      this.setState(job, 'running');
      this.send(job, 'started');
      const champion = this.championOf(model);
      job.championVersion = champion;
      const championRecord = this.opts.registry.getVersion(model, champion);
      const mc = championRecord.config as ModelConfig;
      const features = mc.features;
      if (!features || features.length === 0) throw new JobFailure(`model.yaml of ${model} v${champion} has no features list: retraining needs the input columns by name`);
      this.jobLog(job, `champion: v${champion}; features: ${features.join(', ')}`);

      // 1. data
      const prep = await this.step(job, 'data', async () => {
        let feedback: { X: Float64Array; y: Float64Array; t: Float64Array; n: number } | null = null;
        if (cfg.useFeedback && this.opts.predictionLog !== null) {
          const rows = (await this.opts.predictionLog.training(model)).filter((r) => r.features.length === features.length);
          const p = features.length;
          feedback = { X: new Float64Array(rows.length * p), y: new Float64Array(rows.length), t: new Float64Array(rows.length), n: rows.length };
          rows.forEach((r, i) => {
            feedback!.X.set(r.features, i * p);
            feedback!.y[i] = r.label;
            feedback!.t[i] = r.ts;
          });
        }
        const jobDir = join(this.opts.dataDir, 'retraining', job.id);
        const r = await worker.call<PrepareResult>(
          {
            op: 'prepare',
            patterns: [...cfg.data],
            features,
            label: cfg.label,
            timeColumn: cfg.timeColumn,
            definitionsPath: this.opts.definitionsPath,
            bindings: mc.bindings ?? {},
            feedback,
            oot: cfg.oot,
            jobDir,
          },
        );
        for (const f of r.files) this.jobLog(job, `data: ${f.path}: ${f.rows} rows${f.skipped ? `, ${f.skipped} skipped (${f.reasons.join('; ')})` : ''}${f.computed.length ? `; computed by feature definitions: ${f.computed.join(', ')}` : ''}`);
        for (const u of r.unmatched) this.jobLog(job, `data: no file matches ${u}`);
        if (cfg.useFeedback) this.jobLog(job, `data: ${r.feedbackRows} labelled predictions from the prediction log`);
        this.jobLog(job, `split out of time at ${r.cut}: train ${r.train.rows} rows (${r.train.from} .. ${r.train.to}), validation ${r.validation.rows} rows (${r.validation.from} .. ${r.validation.to})`);
        return r;
      });
      job.data = { files: prep.files, unmatched: prep.unmatched, feedbackRows: prep.feedbackRows, train: prep.train, validation: prep.validation, cut: prep.cut };
      const minValidation = Math.max(2, Math.ceil(cfg.minRows / 4));
      const classes = (s: { rows: number; positives: number }) => s.positives > 0 && s.positives < s.rows;
      if (prep.train.rows < cfg.minRows) throw new JobFailure(`not enough training rows: ${prep.train.rows} (minRows ${cfg.minRows})`);
      if (prep.validation.rows < minValidation) throw new JobFailure(`not enough validation rows: ${prep.validation.rows} (at least ${minValidation})`);
      if (!classes(prep.train) || !classes(prep.validation)) throw new JobFailure('training and validation rows must both hold each class (0 and 1)');

      // 2. train
      const challengerBytes = await this.step(job, 'train', async () => {
        const t = cfg.trainer;
        if ('builtin' in t) {
          const r = await worker.call<TrainResult>({ op: 'train', l2: t.params.l2, maxIterations: t.params.maxIterations, features, modelName: model, docString: `scoreline retraining job ${job.id}` });
          job.training = { trainer: 'logistic-regression', params: t.params, iterations: r.iterations, converged: r.converged };
          this.jobLog(job, `trained logistic regression: ${r.iterations} iterations, ${r.converged ? 'converged' : 'NOT converged'}`);
          return r.onnx;
        }
        job.training = { trainer: 'command', command: t.command, timeoutSeconds: t.timeoutSeconds };
        this.jobLog(job, `running trainer: ${t.command.join(' ')}`);
        return runCommandTrainer({
          command: t.command,
          timeoutSeconds: t.timeoutSeconds,
          env: t.env,
          cwd: cfg.baseDir,
          trainFile: prep.trainFile,
          validationFile: prep.validationFile,
          features,
          label: cfg.label,
          timeColumn: cfg.timeColumn ?? 'time',
          outputDir: join(this.opts.dataDir, 'retraining', job.id, 'output'),
          log: (l) => this.jobLog(job, l),
          onSpawn: (pid) => {
            job.trainerPid = pid;
            this.trainers.add(pid);
            this.store.save(job);
          },
          onExit: (pid) => {
            delete job.trainerPid;
            this.trainers.delete(pid);
          },
        }).catch((e: Error) => {
          throw new JobFailure(e.message);
        });
      });

      // 3. validate
      this.setState(job, 'validating');
      const verdict = await this.step(job, 'validate', async () => {
        const reasons: string[] = [];
        let meta;
        try {
          meta = readOnnxMetadata(challengerBytes, 'challenger');
        } catch (e) {
          return { pass: false, reasons: [`challenger is not a usable ONNX model: ${(e as Error).message}`], result: null };
        }
        const problem = signatureProblem(championRecord.signature.inputs, meta.inputs);
        if (problem !== null) return { pass: false, reasons: [`signature incompatible with champion v${champion}: ${problem}`], result: null };
        const scoreOut = mc.score?.output ?? null;
        if (scoreOut !== null && !meta.outputs.some((o) => o.name === scoreOut)) {
          return { pass: false, reasons: [`challenger has no output '${scoreOut}' (model.yaml score.output)`], result: null };
        }
        const score = { output: scoreOut, index: mc.score?.index ?? null };
        const championBytes = this.opts.registry.load(model, champion).bytes;
        const r = await worker.call<ValidateResult>({
          op: 'validate',
          champion: { bytes: new Uint8Array(championBytes), score },
          challenger: { bytes: challengerBytes, score },
          threshold: mc.threshold ?? 0.5,
        });
        const ch = r.challenger;
        const cp = r.champion!;
        let pass = true;
        const check = (ok: boolean, text: string) => {
          reasons.push(`${ok ? 'pass' : 'FAIL'}: ${text}`);
          if (!ok) pass = false;
        };
        check(ch.nonFinite === 0, ch.nonFinite === 0 ? 'challenger outputs are finite' : `challenger gave ${ch.nonFinite} non-finite scores`);
        if (ch.auc !== null && cp.auc !== null) {
          const need = cp.auc + cfg.gate.minDelta;
          check(ch.auc >= need, `AUC ${fmt(ch.auc)} vs champion ${fmt(cp.auc)} (${ch.auc - cp.auc >= 0 ? '+' : ''}${(ch.auc - cp.auc).toFixed(4)}; needs >= ${cfg.gate.minDelta >= 0 ? '+' : ''}${cfg.gate.minDelta})`);
        } else check(false, 'AUC is undefined on the validation rows');
        if (ch.ks !== null && cp.ks !== null) {
          check(ch.ks >= cp.ks - cfg.gate.ksTolerance, `KS ${fmt(ch.ks)} vs champion ${fmt(cp.ks)} (tolerance ${cfg.gate.ksTolerance})`);
        } else check(false, 'KS is undefined on the validation rows');
        if (r.delong !== null) reasons.push(`info: DeLong test of the AUC difference: z = ${r.delong.z.toFixed(3)}, p = ${r.delong.p.toPrecision(3)}`);
        return { pass, reasons, result: r };
      });
      if (verdict.result !== null) {
        const { champion: cp, challenger: ch, delong, rows } = verdict.result;
        job.validation = {
          rows,
          champion: cp,
          challenger: ch,
          delong: delong && { z: r4(delong.z), p: delong.p, aucDifference: r4(delong.aucDifference) },
          gate: cfg.gate,
        };
      }
      await worker.close();
      this.workers.delete(worker);
      if (!verdict.pass) {
        job.decision = { outcome: 'rejected', reasons: verdict.reasons };
        this.finish(job, 'rejected', verdict.reasons);
        return;
      }
      job.decision = { outcome: 'accepted', reasons: verdict.reasons };

      // 4. register, canary, promote or roll back
      const v = verdict.result!;
      const reg = this.opts.registry.register(model, challengerBytes, {
        source: `retraining job ${job.id}`,
        config: championRecord.config,
        tags: { trained_by: 'scoreline-retraining', trigger: job.trigger.kind },
        metrics: {
          validation_auc: r4(v.challenger.auc)!,
          validation_ks: r4(v.challenger.ks)!,
          champion_validation_auc: r4(v.champion!.auc)!,
          validation_rows: v.rows,
          ...(v.delong ? { delong_p: v.delong.p } : {}),
        },
        lineage: {
          trainingJobId: job.id,
          trigger: job.trigger.kind,
          champion,
          dataWindow: { train: prep.train, validation: prep.validation, cut: prep.cut },
          files: prep.files.map((f) => f.path),
          feedbackRows: prep.feedbackRows,
          trainer: job.training,
        },
      });
      if (!reg.created) throw new JobFailure(`the challenger is byte-identical to registered version ${reg.version}; nothing new to deploy`);
      job.challengerVersion = reg.version;
      this.opts.registry.setAlias(model, 'challenger', reg.version, { reason: `retraining job ${job.id} passed the gate` });
      this.jobLog(job, `registered challenger v${reg.version} (sha256 ${reg.sha256.slice(0, 12)}), alias challenger`);
      if (this.opts.freezeReference) {
        try {
          await this.opts.freezeReference(model, reg.version, readFileSync(prep.validationFile, 'utf8'));
          this.jobLog(job, `drift reference of v${reg.version} frozen from the ${prep.validation.rows} validation rows`);
        } catch (e) {
          this.jobLog(job, `could not freeze the drift reference of v${reg.version}: ${(e as Error).message}`);
        }
      }

      this.setState(job, 'deploying');
      const outcome = await this.step(job, 'canary', () => this.canary(job, cfg, champion, reg.version));
      if (outcome.promoted) {
        this.opts.registry.setAlias(model, 'champion', reg.version, { reason: `retraining job ${job.id}: canary promoted` });
        this.finish(job, 'succeeded', [`canary promoted: v${reg.version} serves all traffic and is the champion (${outcome.reason})`]);
      } else {
        this.finish(job, 'rolled_back', [`canary rolled back: ${outcome.reason}; v${champion} serves all traffic`]);
      }
    } catch (e) {
      const msg = e instanceof JobFailure ? e.message : `${(e as Error).message}`;
      if (!TERMINAL.has(job.state)) this.finish(job, 'failed', [msg]);
      if (!(e instanceof JobFailure)) this.opts.log.error({ job: job.id, model, err: (e as Error).stack }, 'retraining job failed');
    } finally {
      this.workers.delete(worker);
      await worker.close().catch(() => undefined);
    }
  }

  /** Deploys the challenger as a canary and waits for the deployer's analysis to decide. */
  private async canary(job: Job, cfg: RetrainingConfig, stable: number, canary: number): Promise<{ promoted: boolean; reason: string }> {
    const model = job.model;
    const steps = cfg.deploy.steps;
    const spec = { strategy: 'canary', stable, canary, percent: steps[0]!, steps: steps.slice(1), stepSeconds: cfg.deploy.stepSeconds };
    let cancel: (e: Error) => void = () => undefined;
    const done = new Promise<{ promoted: boolean; reason: string }>((resolve, reject) => {
      const settle = () => {
        off();
        this.waiters.delete(cancel);
      };
      const off = this.opts.deployer.subscribe((e: DeploymentChange) => {
        if (e.model !== model) return;
        const s = e.state.spec;
        if (e.action === 'canary-step') {
          this.jobLog(job, `canary step: ${s.strategy === 'canary' ? s.percent : '?'}% of traffic (${e.reason})`);
          this.store.save(job);
          return;
        }
        if (s.strategy === 'direct' && s.version === canary) {
          settle();
          resolve({ promoted: true, reason: e.reason });
        } else if (s.strategy === 'direct' && s.version === stable) {
          settle();
          resolve({ promoted: false, reason: e.reason });
        } else if (!(s.strategy === 'canary' && s.canary === canary && s.stable === stable)) {
          settle();
          reject(new JobFailure(`the deployment was changed while the canary ran (${e.action}: ${e.reason})`));
        }
      });
      cancel = (err: Error) => {
        settle();
        reject(err);
      };
      this.waiters.add(cancel);
    });
    try {
      await this.opts.deployer.apply(model, spec, `retraining job ${job.id}: canary of v${canary} against v${stable}`);
    } catch (e) {
      const failure = new JobFailure(`canary deployment refused: ${(e as Error).message}`);
      cancel(failure);
      await done.catch(() => undefined);
      // loaded to freeze its reference: nothing will route to it now
      await this.opts.deployer.release(model, canary).catch(() => undefined);
      throw failure;
    }
    this.jobLog(job, `canary: v${canary} gets ${steps[0]}% of traffic, steps ${steps.join(' -> ')} every ${cfg.deploy.stepSeconds} s`);
    this.store.save(job);
    return done;
  }

  /** Stops triggers; running jobs are failed now (a restart would find them and fail them anyway). */
  async close(): Promise<void> {
    this.closed = true;
    for (const c of this.crons) c.stop();
    for (const off of this.unsubscribe) off();
    for (const t of this.timers) clearTimeout(t);
    for (const w of [...this.waiters]) w(new JobFailure('the server shut down while the canary ran; the deployment itself is persisted and continues after a restart'));
    for (const pid of this.trainers) killTrainer(pid);
    for (const w of this.workers) await w.close().catch(() => undefined);
    await Promise.allSettled([...this.running]);
    for (const job of [...this.active.values()]) if (!TERMINAL.has(job.state)) this.finish(job, 'failed', ['interrupted: the server shut down'], { notify: false });
    this.store.close();
  }
}

function signatureProblem(want: readonly { name: string; datatype: string; shape: readonly number[] }[], got: readonly { name: string; datatype: string; shape: readonly number[] }[]): string | null {
  if (want.length !== got.length) return `${got.length} inputs, the champion has ${want.length}`;
  for (const w of want) {
    const g = got.find((x) => x.name === w.name);
    if (g === undefined) return `no input '${w.name}'`;
    if (g.datatype !== w.datatype) return `input '${w.name}' is ${g.datatype}, the champion's ${w.datatype}`;
    if (g.shape.length !== w.shape.length || g.shape.some((d, i) => d !== w.shape[i] && d !== -1 && w.shape[i] !== -1)) {
      return `input '${w.name}' has shape [${g.shape.join(', ')}], the champion's [${w.shape.join(', ')}]`;
    }
  }
  return null;
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
