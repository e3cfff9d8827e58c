// The `retraining` section of a model (model.yaml, or `retraining.<model>` in the server config):
// where training data comes from, how the out-of-time split is made, which trainer runs, the gate
// a challenger must pass, what triggers a job and how a passing challenger is rolled out. Parsed
// once, with errors that name the field; relative data paths resolve against the file they are in.
// It sits beside src/config.ts, below src/retraining/, because a model's config is refused at load
// when this section is invalid.

import { isAbsolute, resolve } from 'node:path';
import { Cron } from 'croner';
import { parseDuration } from './duration.js';
import { configInvalid } from './errors.js';

export type TrainerConfig =
  | { readonly builtin: 'logistic-regression'; readonly params: { readonly l2: number; readonly maxIterations: number } }
  | { readonly command: readonly string[]; readonly timeoutSeconds: number; readonly env: Readonly<Record<string, string>> };

export interface RetrainingConfig {
  /** The directory of the file the section is in: external trainer commands run there. */
  readonly baseDir: string;
  /** Absolute file paths or globs (`*` and `?` within a path segment). */
  readonly data: readonly string[];
  /** Also train on logged predictions joined with their feedback labels. */
  readonly useFeedback: boolean;
  /** Column of the data files holding each row's time (ISO date/time or epoch ms); required with data. */
  readonly timeColumn: string | null;
  readonly label: string;
  /** The latest rows by time held out for validation: a share of the rows, or a time window. */
  readonly oot: { readonly fraction: number } | { readonly windowMs: number };
  readonly trainer: TrainerConfig;
  readonly gate: { readonly metric: 'auc'; readonly minDelta: number; readonly ksTolerance: number };
  readonly triggers: {
    readonly drift: { readonly psi: number } | null;
    readonly performance: { readonly aucDrop: number } | null;
    readonly schedule: string | null;
    /** After a job ends, automatic triggers are ignored this long. */
    readonly cooldownSeconds: number;
    /** A queued job waits this long for more triggers to fold into it before it starts. */
    readonly debounceSeconds: number;
  };
  readonly deploy: { readonly strategy: 'canary'; readonly steps: readonly number[]; readonly stepSeconds: number };
  /** Fewest training (and validation) rows a job accepts. */
  readonly minRows: number;
}

const KEYS = ['workingDir', 'data', 'useFeedback', 'timeColumn', 'label', 'oot', 'trainer', 'gate', 'triggers', 'deploy', 'minRows'];

function fail(where: string, message: string): never {
  throw configInvalid(`${where}: ${message}`);
}

function obj(v: unknown, where: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(where, 'must be a mapping');
  return v as Record<string, unknown>;
}

function only(o: Record<string, unknown>, keys: string[], where: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) fail(where, `unknown field '${k}' (allowed: ${keys.join(', ')})`);
}

function num(v: unknown, where: string, min: number, max: number, fallback?: number): number {
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) fail(where, `must be a number from ${min} to ${max}`);
  return v;
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.length === 0) fail(where, 'must be a non-empty string');
  return v;
}

/**
 * Parses and validates a retraining section. `baseDir` resolves relative data paths; `modelLabel`
 * (model.yaml's `label`) is the default label column.
 */
export function parseRetrainingConfig(raw: unknown, where: string, baseDir: string, modelLabel?: string): RetrainingConfig {
  const o = obj(raw, where);
  only(o, KEYS, where);
  if (o.workingDir !== undefined) {
    const w = str(o.workingDir, `${where}.workingDir`);
    baseDir = isAbsolute(w) ? w : resolve(baseDir, w);
  }

  const dataRaw = o.data === undefined ? [] : typeof o.data === 'string' ? [o.data] : o.data;
  if (!Array.isArray(dataRaw)) fail(`${where}.data`, 'must be a path, a glob, or a list of them');
  const data = dataRaw.map((d, i) => {
    const p = str(d, `${where}.data[${i}]`);
    return isAbsolute(p) ? p : resolve(baseDir, p);
  });
  const useFeedback = o.useFeedback === undefined ? true : o.useFeedback;
  if (typeof useFeedback !== 'boolean') fail(`${where}.useFeedback`, 'must be true or false');
  if (data.length === 0 && !useFeedback) fail(where, 'needs training data: `data` files, `useFeedback: true`, or both');
  const timeColumn = o.timeColumn === undefined ? null : str(o.timeColumn, `${where}.timeColumn`);
  if (data.length > 0 && timeColumn === null)
    fail(`${where}.timeColumn`, 'is required with data files: the out-of-time split orders rows by it');
  const label = o.label === undefined ? (modelLabel ?? null) : str(o.label, `${where}.label`);
  if (label === null) fail(`${where}.label`, 'is required (or set `label` in model.yaml)');

  let oot: RetrainingConfig['oot'] = { fraction: 0.3 };
  if (o.oot !== undefined) {
    const x = obj(o.oot, `${where}.oot`);
    only(x, ['fraction', 'window'], `${where}.oot`);
    if ((x.fraction === undefined) === (x.window === undefined))
      fail(`${where}.oot`, 'needs exactly one of fraction (0..1) or window (e.g. 30d)');
    if (x.fraction !== undefined) {
      const f = num(x.fraction, `${where}.oot.fraction`, 0, 1);
      if (f <= 0 || f >= 1) fail(`${where}.oot.fraction`, 'must be between 0 and 1 (exclusive)');
      oot = { fraction: f };
    } else {
      const ms = parseDuration(str(x.window, `${where}.oot.window`));
      if (typeof ms === 'string') fail(`${where}.oot.window`, ms);
      if (!(ms > 0)) fail(`${where}.oot.window`, 'must be a positive duration such as 30d');
      oot = { windowMs: ms };
    }
  }

  let trainer: TrainerConfig = { builtin: 'logistic-regression', params: { l2: 1, maxIterations: 100 } };
  if (o.trainer !== undefined) {
    const t = obj(o.trainer, `${where}.trainer`);
    if ((t.builtin === undefined) === (t.command === undefined)) fail(`${where}.trainer`, 'needs exactly one of builtin or command');
    if (t.builtin !== undefined) {
      only(t, ['builtin', 'params'], `${where}.trainer`);
      if (t.builtin !== 'logistic-regression')
        fail(`${where}.trainer.builtin`, `unknown trainer '${String(t.builtin)}' (available: logistic-regression)`);
      const p = t.params === undefined ? {} : obj(t.params, `${where}.trainer.params`);
      only(p, ['l2', 'maxIterations'], `${where}.trainer.params`);
      trainer = {
        builtin: 'logistic-regression',
        params: {
          l2: num(p.l2, `${where}.trainer.params.l2`, 0, 1e6, 1),
          maxIterations: Math.floor(num(p.maxIterations, `${where}.trainer.params.maxIterations`, 1, 10_000, 100)),
        },
      };
    } else {
      only(t, ['command', 'timeoutSeconds', 'env'], `${where}.trainer`);
      if (!Array.isArray(t.command) || t.command.length === 0)
        fail(`${where}.trainer.command`, 'must be a non-empty list: the program and its arguments');
      const command = t.command.map((c, i) => str(c, `${where}.trainer.command[${i}]`));
      const env = t.env === undefined ? {} : obj(t.env, `${where}.trainer.env`);
      for (const [k, v] of Object.entries(env)) if (typeof v !== 'string') fail(`${where}.trainer.env.${k}`, 'must be a string');
      trainer = {
        command,
        timeoutSeconds: num(t.timeoutSeconds, `${where}.trainer.timeoutSeconds`, 1, 86_400, 600),
        env: env as Record<string, string>,
      };
    }
  }

  const g = o.gate === undefined ? {} : obj(o.gate, `${where}.gate`);
  only(g, ['metric', 'minDelta', 'ksTolerance'], `${where}.gate`);
  if (g.metric !== undefined && g.metric !== 'auc') fail(`${where}.gate.metric`, "must be 'auc'");
  const gate = {
    metric: 'auc' as const,
    minDelta: num(g.minDelta, `${where}.gate.minDelta`, -1, 1, 0.005),
    ksTolerance: num(g.ksTolerance, `${where}.gate.ksTolerance`, 0, 1, 0.02),
  };

  const tr = o.triggers === undefined ? {} : obj(o.triggers, `${where}.triggers`);
  only(tr, ['drift', 'performance', 'schedule', 'cooldownSeconds', 'debounceSeconds'], `${where}.triggers`);
  let drift: { psi: number } | null = null;
  if (tr.drift !== undefined && tr.drift !== null && tr.drift !== false) {
    const d = tr.drift === true ? {} : obj(tr.drift, `${where}.triggers.drift`);
    only(d, ['psi'], `${where}.triggers.drift`);
    drift = { psi: num(d.psi, `${where}.triggers.drift.psi`, 0, 100, 0.25) };
  }
  let performance: { aucDrop: number } | null = null;
  if (tr.performance !== undefined && tr.performance !== null && tr.performance !== false) {
    const p = tr.performance === true ? {} : obj(tr.performance, `${where}.triggers.performance`);
    only(p, ['aucDrop'], `${where}.triggers.performance`);
    performance = { aucDrop: num(p.aucDrop, `${where}.triggers.performance.aucDrop`, 0, 1, 0.05) };
  }
  let schedule: string | null = null;
  if (tr.schedule !== undefined && tr.schedule !== null) {
    schedule = str(tr.schedule, `${where}.triggers.schedule`);
    try {
      new Cron(schedule, { paused: true }).stop();
    } catch (e) {
      fail(`${where}.triggers.schedule`, `'${schedule}' is not a cron expression: ${(e as Error).message}`);
    }
  }
  const triggers = {
    drift,
    performance,
    schedule,
    cooldownSeconds: num(tr.cooldownSeconds, `${where}.triggers.cooldownSeconds`, 0, 30 * 86_400, 3600),
    debounceSeconds: num(tr.debounceSeconds, `${where}.triggers.debounceSeconds`, 0, 3600, 5),
  };

  const dp = o.deploy === undefined ? {} : obj(o.deploy, `${where}.deploy`);
  only(dp, ['strategy', 'steps', 'stepSeconds'], `${where}.deploy`);
  if (dp.strategy !== undefined && dp.strategy !== 'canary') fail(`${where}.deploy.strategy`, "must be 'canary'");
  const stepsRaw = dp.steps === undefined ? [10, 50, 100] : dp.steps;
  if (!Array.isArray(stepsRaw) || stepsRaw.length === 0)
    fail(`${where}.deploy.steps`, 'must be a list of traffic percentages, e.g. [10, 50, 100]');
  const steps = stepsRaw.map((s, i) => num(s, `${where}.deploy.steps[${i}]`, 1, 100));
  for (let i = 1; i < steps.length; i++) if (steps[i]! <= steps[i - 1]!) fail(`${where}.deploy.steps`, 'must increase');
  if (steps.length < 2 || steps[steps.length - 1] !== 100)
    fail(`${where}.deploy.steps`, 'must start below 100 and end at 100: the canary share first, then each step up to all traffic');
  const deploy = { strategy: 'canary' as const, steps, stepSeconds: num(dp.stepSeconds, `${where}.deploy.stepSeconds`, 1, 86_400, 60) };

  const minRows = Math.floor(num(o.minRows, `${where}.minRows`, 2, 1e9, 200));
  return { baseDir, data, useFeedback, timeColumn, label, oot, trainer, gate, triggers, deploy, minRows };
}
