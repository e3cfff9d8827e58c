// One retraining job, run on the replica that leads: gather the data (files and, if enabled,
// logged predictions joined with their labels), split it out of time, train a challenger (built-in
// logistic regression, or an external command), score champion and challenger on the same held-out
// latest rows, apply the gate, and for a challenger that passes: register it with its lineage,
// alias it `challenger`, freeze its drift reference and roll it out as a canary whose own analysis
// promotes it (alias `champion`) or rolls it back. Heavy work runs in the job's child process
// (./worker.ts) at the lowest CPU priority, so scoring latency is not the trainer's problem. A run
// can be aborted (the replica stops leading, or shuts down): its processes are killed and the
// outcome says it was interrupted, for the retrainer to record.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fork, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { ModelConfig } from '../config.js';
import type { Deployer, DeploymentChange } from '../deploy/index.js';
import type { Job, JobState, TerminalState } from '../store/index.js';
import { fixed4, round4 } from '../numbers.js';
import { inputIncompatibility, readOnnxMetadata } from '../onnx/index.js';
import { killTrainer, runCommandTrainer } from './command.js';
import type { RetrainingConfig } from '../retraining-config.js';
import type { RetrainerOptions } from './retrainer.js';
import type { PrepareResult, TrainResult, ValidateResult, WorkerRequest } from './worker.js';

/** The job's child process (./worker.ts), at the lowest CPU priority; one request at a time. */
class JobWorker {
  private readonly child: ChildProcess;
  private pending: { resolve: (v: unknown) => void; reject: (e: Error) => void } | null = null;
  private exited = false;

  constructor(log: Logger) {
    this.child = fork(fileURLToPath(new URL('./worker.js', import.meta.url)), [], {
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
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
      this.pending = { resolve: resolve as (v: unknown) => void, reject };
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

/** A failure of the job itself (its data, its trainer, its gate): recorded as the job's error, not logged as a fault. */
export class JobFailure extends Error {}

/** What the retrainer gives a run: the store writes, the job log and the notifications. */
export interface RunHost {
  readonly opts: RetrainerOptions;
  jobLog(job: Job, msg: string): void;
  /** Stores the job's progress; throws JobTakenOver when another replica has written the job since. */
  save(job: Job): Promise<void>;
  setState(job: Job, state: JobState): Promise<void>;
  send(job: Job, event: JobState | 'started'): void;
  championOf(model: string): Promise<number>;
}

export type RunOutcome =
  | { kind: 'finished'; state: TerminalState; reasons: string[] }
  /** Stopped from outside: nothing is known about how it would have ended. */
  | { kind: 'interrupted'; reason: string };

export class JobRun {
  private worker: JobWorker | null = null;
  private readonly trainers = new Set<number>();
  private cancelCanary: ((e: Error) => void) | null = null;
  private abortedBecause: string | null = null;

  constructor(
    private readonly host: RunHost,
    readonly job: Job,
    private readonly cfg: RetrainingConfig,
  ) {}

  get opts(): RetrainerOptions {
    return this.host.opts;
  }

  /** Stops the run where it is: its processes are killed and run() answers 'interrupted'. */
  abort(reason: string): void {
    if (this.abortedBecause !== null) return;
    this.abortedBecause = reason;
    for (const pid of this.trainers) killTrainer(pid);
    void this.worker?.close().catch(() => undefined);
    this.cancelCanary?.(new JobFailure(reason));
  }

  async run(): Promise<RunOutcome> {
    const { job } = this;
    this.worker = new JobWorker(this.opts.log);
    try {
      const outcome = await this.steps();
      return this.abortedBecause !== null ? { kind: 'interrupted', reason: this.abortedBecause } : outcome;
    } catch (e) {
      if (this.abortedBecause !== null) return { kind: 'interrupted', reason: this.abortedBecause };
      if (e instanceof JobTakenOver) return { kind: 'interrupted', reason: e.message };
      if (!(e instanceof JobFailure))
        this.opts.log.error({ job: job.id, model: job.model, err: (e as Error).stack }, 'retraining job failed');
      return { kind: 'finished', state: 'failed', reasons: [(e as Error).message] };
    } finally {
      await this.worker.close().catch(() => undefined);
    }
  }

  private async step<T>(name: string, work: () => Promise<T>): Promise<T> {
    const { job } = this;
    const t0 = Date.now();
    const s = { name, startedAt: new Date(t0).toISOString() } as Job['steps'][number];
    job.steps.push(s);
    await this.host.save(job);
    try {
      const r = await work();
      s.ok = true;
      return r;
    } catch (e) {
      s.ok = false;
      throw e;
    } finally {
      const t1 = Date.now();
      s.endedAt = new Date(t1).toISOString();
      s.ms = t1 - t0;
      await this.host.save(job).catch((e: Error) => {
        if (e instanceof JobTakenOver) throw e;
      });
    }
  }

  private async steps(): Promise<RunOutcome> {
    const { job, cfg } = this;
    const worker = this.worker!;
    const model = job.model;
    const log = (msg: string) => this.host.jobLog(job, msg);
    const champion = await this.host.championOf(model);
    job.championVersion = champion;
    const championRecord = await this.opts.registry.getVersion(model, champion);
    const mc = championRecord.config as ModelConfig;
    const features = mc.features;
    if (!features || features.length === 0)
      throw new JobFailure(`model.yaml of ${model} v${champion} has no features list: retraining needs the input columns by name`);
    log(`champion: v${champion}; features: ${features.join(', ')}`);

    // 1. data
    const prep = await this.step('data', async () => {
      let feedback: { X: Float64Array; y: Float64Array; t: Float64Array; n: number } | null = null;
      if (cfg.useFeedback && this.opts.predictionLog !== null) {
        const rows = (await this.opts.predictionLog.training(model)).filter((r) => r.features.length === features.length);
        const p = features.length;
        feedback = {
          X: new Float64Array(rows.length * p),
          y: new Float64Array(rows.length),
          t: new Float64Array(rows.length),
          n: rows.length,
        };
        rows.forEach((r, i) => {
          feedback!.X.set(r.features, i * p);
          feedback!.y[i] = r.label;
          feedback!.t[i] = r.ts;
        });
      }
      const r = await worker.call<PrepareResult>({
        op: 'prepare',
        patterns: [...cfg.data],
        features,
        label: cfg.label,
        timeColumn: cfg.timeColumn,
        definitionsPath: this.opts.definitionsPath,
        bindings: mc.bindings ?? {},
        feedback,
        oot: cfg.oot,
        jobDir: join(this.opts.dataDir, 'retraining', job.id),
      });
      for (const f of r.files)
        log(
          `data: ${f.path}: ${f.rows} rows${f.skipped ? `, ${f.skipped} skipped (${f.reasons.join('; ')})` : ''}${f.computed.length ? `; computed by feature definitions: ${f.computed.join(', ')}` : ''}`,
        );
      for (const u of r.unmatched) log(`data: no file matches ${u}`);
      if (cfg.useFeedback) log(`data: ${r.feedbackRows} labelled predictions from the prediction log`);
      log(
        `split out of time at ${r.cut}: train ${r.train.rows} rows (${r.train.from} .. ${r.train.to}), validation ${r.validation.rows} rows (${r.validation.from} .. ${r.validation.to})`,
      );
      return r;
    });
    job.data = {
      files: prep.files,
      unmatched: prep.unmatched,
      feedbackRows: prep.feedbackRows,
      train: prep.train,
      validation: prep.validation,
      cut: prep.cut,
    };
    const minValidation = Math.max(2, Math.ceil(cfg.minRows / 4));
    const classes = (s: { rows: number; positives: number }) => s.positives > 0 && s.positives < s.rows;
    if (prep.train.rows < cfg.minRows) throw new JobFailure(`not enough training rows: ${prep.train.rows} (minRows ${cfg.minRows})`);
    if (prep.validation.rows < minValidation)
      throw new JobFailure(`not enough validation rows: ${prep.validation.rows} (at least ${minValidation})`);
    if (!classes(prep.train) || !classes(prep.validation))
      throw new JobFailure('training and validation rows must both hold each class (0 and 1)');

    // 2. train
    const challengerBytes = await this.step('train', async () => {
      const t = cfg.trainer;
      if ('builtin' in t) {
        const r = await worker.call<TrainResult>({
          op: 'train',
          l2: t.params.l2,
          maxIterations: t.params.maxIterations,
          features,
          modelName: model,
          docString: `scoreline retraining job ${job.id}`,
        });
        job.training = { trainer: 'logistic-regression', params: t.params, iterations: r.iterations, converged: r.converged };
        log(`trained logistic regression: ${r.iterations} iterations, ${r.converged ? 'converged' : 'NOT converged'}`);
        return r.onnx;
      }
      job.training = { trainer: 'command', command: t.command, timeoutSeconds: t.timeoutSeconds };
      log(`running trainer: ${t.command.join(' ')}`);
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
        log,
        onSpawn: (pid) => {
          job.trainerPid = pid;
          this.trainers.add(pid);
          if (this.abortedBecause !== null) killTrainer(pid);
          void this.host.save(job).catch(() => undefined);
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
    await this.host.setState(job, 'validating');
    const verdict = await this.step('validate', async () => {
      const reasons: string[] = [];
      let meta: ReturnType<typeof readOnnxMetadata>;
      try {
        meta = readOnnxMetadata(challengerBytes, 'challenger');
      } catch (e) {
        return { pass: false, reasons: [`challenger is not a usable ONNX model: ${(e as Error).message}`], result: null };
      }
      const problem = inputIncompatibility(championRecord.signature.inputs, meta.inputs, 'the champion');
      if (problem !== null)
        return { pass: false, reasons: [`signature incompatible with champion v${champion}: ${problem}`], result: null };
      const scoreOut = mc.score?.output ?? null;
      if (scoreOut !== null && !meta.outputs.some((o) => o.name === scoreOut)) {
        return { pass: false, reasons: [`challenger has no output '${scoreOut}' (model.yaml score.output)`], result: null };
      }
      const score = { output: scoreOut, index: mc.score?.index ?? null };
      const championBytes = (await this.opts.registry.load(model, champion)).bytes;
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
        check(
          ch.auc >= need,
          `AUC ${fixed4(ch.auc)} vs champion ${fixed4(cp.auc)} (${ch.auc - cp.auc >= 0 ? '+' : ''}${fixed4(ch.auc - cp.auc)}; needs >= ${cfg.gate.minDelta >= 0 ? '+' : ''}${cfg.gate.minDelta})`,
        );
      } else check(false, 'AUC is undefined on the validation rows');
      if (ch.ks !== null && cp.ks !== null) {
        check(
          ch.ks >= cp.ks - cfg.gate.ksTolerance,
          `KS ${fixed4(ch.ks)} vs champion ${fixed4(cp.ks)} (tolerance ${cfg.gate.ksTolerance})`,
        );
      } else check(false, 'KS is undefined on the validation rows');
      if (r.delong !== null)
        reasons.push(`info: DeLong test of the AUC difference: z = ${r.delong.z.toFixed(3)}, p = ${r.delong.p.toPrecision(3)}`);
      return { pass, reasons, result: r };
    });
    if (verdict.result !== null) {
      const { champion: cp, challenger: ch, delong, rows } = verdict.result;
      job.validation = {
        rows,
        champion: cp,
        challenger: ch,
        delong: delong && { z: round4(delong.z), p: delong.p, aucDifference: round4(delong.aucDifference) },
        gate: cfg.gate,
      };
    }
    await worker.close();
    if (!verdict.pass) {
      job.decision = { outcome: 'rejected', reasons: verdict.reasons };
      return { kind: 'finished', state: 'rejected', reasons: verdict.reasons };
    }
    job.decision = { outcome: 'accepted', reasons: verdict.reasons };
    if (this.abortedBecause !== null) return { kind: 'interrupted', reason: this.abortedBecause };

    // 4. register, canary, promote or roll back
    const v = verdict.result!;
    const reg = await this.opts.registry.register(model, challengerBytes, {
      source: `retraining job ${job.id}`,
      config: championRecord.config,
      tags: { trained_by: 'scoreline-retraining', trigger: job.trigger.kind },
      metrics: {
        validation_auc: round4(v.challenger.auc)!,
        validation_ks: round4(v.challenger.ks)!,
        champion_validation_auc: round4(v.champion!.auc)!,
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
    await this.opts.registry.setAlias(model, 'challenger', reg.version, { reason: `retraining job ${job.id} passed the gate` });
    log(`registered challenger v${reg.version} (sha256 ${reg.sha256.slice(0, 12)}), alias challenger`);
    if (this.opts.freezeReference) {
      try {
        await this.opts.freezeReference(model, reg.version, readFileSync(prep.validationFile, 'utf8'));
        log(`drift reference of v${reg.version} frozen from the ${prep.validation.rows} validation rows`);
      } catch (e) {
        log(`could not freeze the drift reference of v${reg.version}: ${(e as Error).message}`);
      }
    }

    await this.host.setState(job, 'deploying');
    const outcome = await this.step('canary', () => this.canary(champion, reg.version));
    if (outcome.promoted) {
      await this.opts.registry.setAlias(model, 'champion', reg.version, { reason: `retraining job ${job.id}: canary promoted` });
      return {
        kind: 'finished',
        state: 'succeeded',
        reasons: [`canary promoted: v${reg.version} serves all traffic and is the champion (${outcome.reason})`],
      };
    }
    return { kind: 'finished', state: 'rolled_back', reasons: [`canary rolled back: ${outcome.reason}; v${champion} serves all traffic`] };
  }

  /** Deploys the challenger as a canary and waits for the deployer's analysis (on the leader) to decide. */
  private async canary(stable: number, canary: number): Promise<{ promoted: boolean; reason: string }> {
    const { job, cfg } = this;
    const deployer: Deployer = this.opts.deployer;
    const model = job.model;
    const steps = cfg.deploy.steps;
    const spec = { strategy: 'canary', stable, canary, percent: steps[0]!, steps: steps.slice(1), stepSeconds: cfg.deploy.stepSeconds };
    const done = new Promise<{ promoted: boolean; reason: string }>((resolve, reject) => {
      const settle = () => {
        off();
        this.cancelCanary = null;
      };
      const off = deployer.subscribe((e: DeploymentChange) => {
        if (e.model !== model) return;
        const s = e.state.spec;
        if (e.action === 'canary-step') {
          this.host.jobLog(job, `canary step: ${s.strategy === 'canary' ? s.percent : '?'}% of traffic (${e.reason})`);
          void this.host.save(job).catch(() => undefined);
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
      this.cancelCanary = (err: Error) => {
        settle();
        reject(err);
      };
    });
    done.catch(() => undefined);
    try {
      await deployer.apply(model, spec, `retraining job ${job.id}: canary of v${canary} against v${stable}`);
    } catch (e) {
      const failure = new JobFailure(`canary deployment refused: ${(e as Error).message}`);
      this.cancelCanary?.(failure);
      // loaded to freeze its reference: nothing will route to it now
      await deployer.release(model, canary).catch(() => undefined);
      throw failure;
    }
    this.host.jobLog(job, `canary: v${canary} gets ${steps[0]}% of traffic, steps ${steps.join(' -> ')} every ${cfg.deploy.stepSeconds} s`);
    await this.host.save(job);
    return done;
  }
}

/** Another replica wrote the job since this one read it (it was failed when this replica stopped leading). */
export class JobTakenOver extends Error {}
