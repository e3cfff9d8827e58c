// Canary statistics shared by the replicas of one store. Behind a load balancer each replica serves
// part of a canary's traffic, and the leader, which alone makes the automatic transitions, would
// otherwise judge its own part only (later the more replicas there are; never when clients reach
// only the others). So every replica writes its statistics of each canary deployment's current
// step (counts, HDR histograms, score bins: all of it adds up exactly) to the store every share
// interval, from a timer and never on the request path, and the leader's analysis and the admin
// view add the other replicas' rows of the same step to the replica's own live figures.
// A row names its step (the stored deployment's revision and start, the same on every replica) and
// is read only with that step: statistics of a step that ended never count for the next.
// The store down: failures are counted and logged once per episode, the rows are written again at
// the next share, and the leader judges with its own live figures plus the last rows it read of the
// same step.

import type { CanaryStepRecords, SharedCanaryStep } from '../store/index.js';
import { StepStats } from './analysis.js';

/** A canary deployment's current step as this replica measures it. */
export interface StepPart {
  readonly model: string;
  readonly step: string;
  /** Per version, this replica's live statistics of the step. */
  readonly stats: ReadonlyMap<number, StepStats>;
}

/** The other replicas' part of a step. */
export interface OthersOfStep {
  /** Per version, each other replica's statistics. */
  readonly byVersion: ReadonlyMap<number, readonly StepStats[]>;
  /** Other replica processes whose row of the step was read. */
  readonly replicas: number;
  /** partial: the store could not be read (the rows are the last ones read of this step, or none), or a row was unreadable. */
  readonly state: 'merged' | 'partial';
  readonly reason: string | null;
}

export interface SharedStepsOptions {
  records: CanaryStepRecords;
  /** This replica process's id: its own row is never read back (its live figures are used instead). */
  replica: string;
  /** Where failures and recoveries are reported (a pino logger fits). */
  log: { error(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

/** Shares between two prunes of rows of ended steps (by the leader). */
const PRUNE_EVERY = 600;
/** A row of an ended step is dropped once nobody has written it for this long (a lagging replica may still be on it). */
const PRUNE_AFTER_MS = 10 * 60_000;

interface ReadStep {
  readonly step: string;
  readonly rows: readonly { replica: string; stats: ReadonlyMap<number, StepStats> }[];
  readonly unreadable: string | null;
}

export class SharedSteps {
  /** The last rows read per model, with the step they are of: never used for another step. */
  private readonly last = new Map<string, ReadStep>();
  /** What was last written per model (step and request counts): an unchanged row is not written again. */
  private readonly written = new Map<string, string>();
  private sharing: Promise<void> | null = null;
  private rounds = 0;
  /** Rows written since start. */
  shared = 0;
  /** Failed writes and reads since start. */
  errors = 0;
  private failingSince: number | null = null;
  private lastError: string | null = null;

  constructor(private readonly opts: SharedStepsOptions) {}

  /** Writes this replica's rows of every current canary step and, when `leads`, reads the others' rows of them; one share at a time. */
  share(parts: readonly StepPart[], leads: boolean): Promise<void> {
    if (this.sharing !== null) return this.sharing;
    this.sharing = this.run(parts, leads).finally(() => {
      this.sharing = null;
    });
    return this.sharing;
  }

  private async run(parts: readonly StepPart[], leads: boolean): Promise<void> {
    const rows: { model: string; step: string; data: string }[] = [];
    const marks: [string, string][] = [];
    for (const p of parts) {
      const mark = `${p.step}|${[...p.stats].map(([v, s]) => `${v}:${s.requests}:${s.scores}`).join(',')}`;
      if (this.written.get(p.model) === mark) continue;
      const data: Record<string, unknown> = {};
      for (const [v, s] of p.stats) data[v] = s.toJSON();
      rows.push({ model: p.model, step: p.step, data: JSON.stringify(data) });
      marks.push([p.model, mark]);
    }
    // Forget the marks of models whose canary ended here, so that a later canary's first row is written.
    const current = new Set(parts.map((p) => p.model));
    for (const m of this.written.keys()) if (!current.has(m)) this.written.delete(m);
    let ok = true;
    if (rows.length > 0) {
      try {
        await this.opts.records.putSteps(this.opts.replica, rows);
        for (const [m, mark] of marks) this.written.set(m, mark);
        this.shared += rows.length;
      } catch (e) {
        ok = false;
        this.failed(e as Error, 'written');
      }
    }
    const keys = leads ? parts.map((p) => ({ model: p.model, step: p.step })) : [];
    if (keys.length > 0) ok = (await this.read(keys)) && ok;
    // Only a round that reached the store ends a failing episode.
    if (ok && (rows.length > 0 || keys.length > 0)) this.recovered();
    if (!leads) return;
    if (this.rounds++ % PRUNE_EVERY === 0) {
      await this.opts.records
        .prune(keys, PRUNE_AFTER_MS)
        .catch((e: Error) => this.opts.log.warn({ err: e.message }, 'canary: rows of ended steps could not be pruned; tried again later'));
    }
  }

  /** Reads the other replicas' rows of these steps (kept as the last read); false when the store could not be read. */
  async read(keys: readonly { model: string; step: string }[]): Promise<boolean> {
    let found: SharedCanaryStep[];
    try {
      found = await this.opts.records.steps(keys, this.opts.replica);
    } catch (e) {
      this.failed(e as Error, 'read');
      return false;
    }
    for (const k of keys) {
      const rows: { replica: string; stats: Map<number, StepStats> }[] = [];
      let unreadable: string | null = null;
      for (const r of found) {
        if (r.model !== k.model || r.step !== k.step) continue;
        try {
          rows.push({ replica: r.replica, stats: parseRow(r.data) });
        } catch (e) {
          unreadable = `the row of replica ${r.replica} is unreadable and was left out: ${(e as Error).message}`;
        }
      }
      this.last.set(k.model, { step: k.step, rows, unreadable });
    }
    return true;
  }

  /**
   * The other replicas' part of a step, from the last rows read of exactly that step (none when the
   * last read was of another step). Rows are counted whatever their age: the requests a replica
   * reported for this step did happen, also when it has died since, and the step key keeps them
   * from ever counting for another step. Leaving out a dead replica's row would undercount the
   * step, and the analysis would judge on less than what was served.
   */
  others(model: string, step: string): OthersOfStep {
    const l = this.last.get(model);
    const byVersion = new Map<number, StepStats[]>();
    let replicas = 0;
    if (l !== undefined && l.step === step) {
      for (const r of l.rows) {
        replicas++;
        for (const [v, s] of r.stats) {
          const list = byVersion.get(v);
          if (list === undefined) byVersion.set(v, [s]);
          else list.push(s);
        }
      }
    }
    const storeReason = this.failingSince === null ? null : `the shared store could not be reached: ${this.lastError}`;
    const reason = storeReason ?? (l?.step === step ? l.unreadable : null);
    return { byVersion, replicas, state: reason === null ? 'merged' : 'partial', reason };
  }

  private failed(e: Error, what: 'written' | 'read'): void {
    this.errors++;
    this.lastError = e.message;
    if (this.failingSince !== null) return;
    this.failingSince = Date.now();
    this.opts.log.error(
      { err: e.message },
      `canary: step statistics could not be ${what} in the shared store; the analysis uses this replica's own and the last read, and sharing is retried`,
    );
  }

  private recovered(): void {
    if (this.failingSince === null) return;
    this.opts.log.warn({ failedForMs: Date.now() - this.failingSince }, 'canary: step statistics are shared again');
    this.failingSince = null;
  }

  status(): { state: 'ok' | 'failing'; shared: number; errors: number; last_error: string | null } {
    return { state: this.failingSince === null ? 'ok' : 'failing', shared: this.shared, errors: this.errors, last_error: this.lastError };
  }
}

/** A shared row: per version, the statistics another replica wrote (StepStats.toJSON). */
function parseRow(data: unknown): Map<number, StepStats> {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new TypeError('not an object of versions');
  const out = new Map<number, StepStats>();
  for (const [k, v] of Object.entries(data)) {
    const version = Number(k);
    if (!Number.isInteger(version) || version < 1) throw new TypeError(`'${k}' is not a version`);
    out.set(version, StepStats.fromJSON(v));
  }
  return out;
}
