// Record shapes the store keeps besides the registry's (which are in ../registry/records.ts):
// retraining jobs, their triggers and incidents, alerts, and the replicas of a cluster with the
// leader lease. Plain data, JSON-serialisable as the admin API sends it.

/** States a job ends in: it never moves again. */
export type TerminalState = 'succeeded' | 'rejected' | 'failed' | 'rolled_back';
export type JobState = 'queued' | 'running' | 'validating' | 'deploying' | TerminalState;
export const JOB_STATES: readonly JobState[] = [
  'queued',
  'running',
  'validating',
  'deploying',
  'succeeded',
  'rejected',
  'failed',
  'rolled_back',
];
export const TERMINAL: ReadonlySet<JobState> = new Set<TerminalState>(['succeeded', 'rejected', 'failed', 'rolled_back']);
/** States of a job that holds its model: at most one such job per model, across every replica. */
export const ACTIVE_STATES: readonly JobState[] = JOB_STATES.filter((s) => !TERMINAL.has(s));

export type TriggerKind = 'drift' | 'performance' | 'schedule' | 'manual' | 'incident';
/** Triggers nobody asked for by hand: debounced, cooled down, and queued again once if their job is interrupted. */
export const AUTOMATIC_TRIGGERS: ReadonlySet<TriggerKind> = new Set(['drift', 'performance', 'schedule']);

export interface Trigger {
  kind: TriggerKind;
  reason: string;
  at: string;
  /** What set it off: the alert, the incident, the cron expression, who asked. */
  evidence?: unknown;
}

export interface JobStep {
  name: string;
  startedAt: string;
  endedAt?: string;
  ms?: number;
  ok?: boolean;
}

export interface Job {
  id: string;
  model: string;
  state: JobState;
  trigger: Trigger;
  /** Triggers that arrived while the job was queued and were folded into it. */
  folded: Trigger[];
  createdAt: string;
  updatedAt: string;
  /** Debounce: the job does not start before this instant (ISO 8601); absent means at once. */
  notBefore?: string;
  startedAt?: string;
  endedAt?: string;
  steps: JobStep[];
  log: { at: string; msg: string }[];
  /** The replica that runs (or ran) the job. */
  owner?: string;
  /** The host of that replica, so only a replica on the same machine touches the trainer's process id. */
  ownerHost?: string;
  /** The interrupted job this one repeats (an automatic trigger is queued again once, never twice). */
  retryOf?: string;
  championVersion?: number;
  challengerVersion?: number;
  /** The external trainer's process (group) while it runs. */
  trainerPid?: number;
  data?: unknown;
  training?: unknown;
  validation?: unknown;
  decision?: { outcome: 'accepted' | 'rejected' | 'promoted' | 'rolled_back' | 'failed'; reasons: string[] };
  error?: string;
  /**
   * The stored revision this copy was read at (or last written as). A write succeeds only against
   * the same revision, so two replicas never overwrite each other's change to one job.
   */
  revision: number;
}

export interface TriggerEvent {
  at: string;
  model: string;
  kind: TriggerKind;
  outcome: 'job' | 'folded' | 'skipped-running' | 'skipped-cooldown';
  jobId: string | null;
  reason: string;
}

export interface Incident {
  id: string;
  model: string;
  at: string;
  reason: string;
  severity: string;
  jobId: string | null;
  outcome: string;
}

export interface JobFilter {
  model?: string;
  state?: JobState;
  limit?: number;
}

/** An alert as the store keeps it: its id and state as columns, the rest opaque (the alert manager owns its shape). */
export interface AlertRecord {
  readonly id: string;
  readonly state: string;
  /** Epoch ms of this state change. */
  readonly at: number;
  readonly data: unknown;
}

/** What a replica reports on every heartbeat. */
export interface ReplicaReport {
  readonly id: string;
  /** Where the replica answers (host:port as other machines reach it). */
  readonly address: string;
  readonly host: string;
  readonly pid: number;
  readonly startedAt: string;
  /** Per model: the deployment this replica routes by (its revision) and anything that keeps it from serving it fully. */
  readonly deployments: Readonly<Record<string, AppliedDeployment>>;
}

export interface AppliedDeployment {
  readonly revision: number;
  readonly spec: unknown;
  readonly since: string;
  /** Why the replica serves less than the stored deployment (a version that failed to load here), or null. */
  readonly problem: string | null;
}

export interface ReplicaRecord extends ReplicaReport {
  /** Last heartbeat, by the store's clock (ISO 8601). */
  readonly heartbeatAt: string;
}

/** The leader lease as one attempt to take or renew it left it. */
export interface Lease {
  /** The replica holding it (null: nobody). */
  readonly holder: string | null;
  /** Grows by one every time the lease changes hands (or is taken again after it lapsed). */
  readonly term: number;
  /** Milliseconds the lease runs from the attempt, when the caller holds it. */
  readonly ttlMs: number;
}

/** A committed change another replica must apply. */
export interface StoreChange {
  readonly kind: 'version' | 'alias' | 'reference' | 'deployment' | 'job' | 'alert';
  readonly model: string | null;
  readonly version?: number;
  /** The replica that made it (null: a tool without a replica id). */
  readonly origin: string | null;
}
