// This replica among the others that share a store: its heartbeat (address, start, what each
// model's deployment is here), the leader lease it takes or renews at every heartbeat, and the
// changes other replicas make, applied here as they are notified and, as the safety net for a
// missed notification, by a periodic resync. The leader runs the singletons (alert evaluation and
// notifications, canary analysis's automatic transitions, retraining triggers and jobs); a leader
// stops acting as one before its lease can lapse in the store, measured from when it asked for the
// renewal, so two replicas never lead at once. With SQLite the one process leads from its start.

import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Deployer } from '../deploy/index.js';
import { isScorelineError } from '../errors.js';
import type { Retrainer } from '../retraining/index.js';
import type { ReplicaRecord, Store, StoreChange } from '../store/index.js';
import type { Alerting } from './alerting.js';

export interface ClusterOptions {
  store: Store;
  deployer: Deployer;
  retrainer: Retrainer;
  alerting: Alerting;
  log: Logger;
  id: string;
  /** host:port where this replica answers. */
  address: string;
  /** Re-reads the stored drift reference of every loaded version (`only`: that version) and applies a changed one. */
  refreshReferences: (only?: { model: string; version: number }) => Promise<void>;
  heartbeatMs: number;
  leaseMs: number;
  resyncMs: number;
}

/** Margin kept between this replica's idea of its lease's end and the store's. */
const SAFETY_MS = 1000;

export class Cluster {
  readonly id: string;
  readonly startedAt = new Date().toISOString();
  private leader = false;
  /** performance.now() past which this replica must not act as the leader without a renewal. */
  private until = 0;
  private term = 0;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;
  private deadline: NodeJS.Timeout | null = null;
  private unlisten: (() => Promise<void>) | null = null;
  private ticking: Promise<void> | null = null;
  private syncing: Promise<void> | null = null;
  private syncAgain = false;
  private storeDown = false;
  private closed = false;
  private readonly deploymentSyncs = new Map<string, NodeJS.Timeout>();

  private readonly opts: ClusterOptions;

  constructor(opts: ClusterOptions) {
    this.opts = { ...opts, log: opts.log.child({ component: 'cluster' }) };
    this.id = opts.id;
  }

  get shared(): boolean {
    return this.opts.store.cluster.shared;
  }

  /** Whether this replica runs the singletons now. */
  leads(): boolean {
    if (!this.shared) return true;
    return this.leader && performance.now() < this.until;
  }

  /** First lease attempt, then the heartbeat, the change notifications and the resync. */
  async start(): Promise<void> {
    await this.tick();
    if (!this.shared) return;
    if (!this.leader) this.opts.alerting.follow();
    this.heartbeatTimer = setInterval(() => void this.tick(), this.opts.heartbeatMs);
    this.heartbeatTimer.unref();
    this.unlisten = await this.opts.store.cluster.listen(
      (c) => this.onChange(c),
      () => this.resync('the change notifications (re)connected'),
    );
    this.resyncTimer = setInterval(() => this.resync(), this.opts.resyncMs);
    this.resyncTimer.unref();
  }

  /** One heartbeat: take or renew the lease, act on a change of leader, report this replica. */
  private tick(): Promise<void> {
    if (this.ticking !== null || this.closed) return this.ticking ?? Promise.resolve();
    this.ticking = this.beat().finally(() => (this.ticking = null));
    return this.ticking;
  }

  private async beat(): Promise<void> {
    const cluster = this.opts.store.cluster;
    try {
      const asked = performance.now();
      try {
        const lease = await cluster.lead(this.id, this.opts.leaseMs);
        if (lease.holder === this.id) {
          // One process alone never loses its lease: only a shared one runs against a deadline.
          this.until = this.shared ? asked + this.opts.leaseMs - SAFETY_MS : Infinity;
          if (this.shared) this.armDeadline();
          if (!this.leader || lease.term !== this.term) await this.elected(lease.term);
          else if (!this.opts.retrainer.isLeading) await this.opts.retrainer.lead(); // a first attempt that failed
        } else if (this.leader) {
          this.demoted(`replica ${lease.holder ?? '(none)'} holds the lease`);
        }
        await cluster.heartbeat({
          id: this.id,
          address: this.opts.address,
          host: hostname(),
          pid: process.pid,
          startedAt: this.startedAt,
          deployments: this.opts.deployer.applied(),
        });
        if (this.storeDown) this.opts.log.info({ store: this.opts.store.location }, 'the store answers again');
        this.storeDown = false;
      } catch (e) {
        if (!isScorelineError(e)) throw e;
        if (!this.storeDown)
          this.opts.log.warn(
            { store: this.opts.store.location, err: e.message },
            'heartbeat failed: the store cannot be reached; serving from memory',
          );
        this.storeDown = true;
      }
    } catch (e) {
      this.opts.log.error({ err: (e as Error).stack }, 'heartbeat failed');
    }
  }

  /** Steps down when the lease's end (as this replica measures it) passes without a renewal. */
  private armDeadline(): void {
    if (this.deadline !== null) clearTimeout(this.deadline);
    this.deadline = setTimeout(
      () => {
        this.deadline = null;
        if (this.leader && performance.now() >= this.until)
          this.demoted('the lease could not be renewed in time (the store did not answer)');
      },
      Math.max(0, this.until - performance.now()),
    );
    this.deadline.unref();
  }

  private async elected(term: number): Promise<void> {
    const wasLeader = this.leader;
    this.leader = true;
    this.term = term;
    this.opts.log.info({ replica: this.id, term, shared: this.shared }, wasLeader ? 'leading again with a new term' : 'this replica leads');
    try {
      await this.opts.alerting.lead();
    } catch (e) {
      this.opts.log.warn({ err: (e as Error).message }, 'could not read the alerts from the store; evaluating with what this replica had');
    }
    await this.opts.retrainer.lead();
  }

  private demoted(why: string): void {
    if (!this.leader) return;
    this.leader = false;
    if (this.deadline !== null) clearTimeout(this.deadline);
    this.deadline = null;
    this.opts.log.warn({ replica: this.id, reason: why }, 'this replica no longer leads');
    this.opts.alerting.follow();
    this.opts.retrainer.stepDown(`this replica stopped leading: ${why}`);
  }

  private onChange(c: StoreChange): void {
    switch (c.kind) {
      case 'deployment': {
        if (c.model === null) return;
        // Coalesce bursts (a canary's steps); the deployer adopts only revisions newer than its own.
        const model = c.model;
        if (this.deploymentSyncs.has(model)) return;
        const t = setTimeout(() => {
          this.deploymentSyncs.delete(model);
          void this.opts.deployer
            .sync(model)
            .catch((e: Error) => this.opts.log.warn({ model, err: e.message }, 'could not adopt a deployment change yet; the resync will'));
        }, 10);
        this.deploymentSyncs.set(model, t);
        return;
      }
      case 'reference':
        if (c.model !== null && c.version !== undefined) {
          void this.opts
            .refreshReferences({ model: c.model, version: c.version })
            .catch((e: Error) => this.opts.log.warn({ err: e.message }, 'could not read a changed drift reference yet'));
        }
        return;
      case 'job':
        this.opts.retrainer.wake();
        void this.opts.retrainer.refreshCounts();
        return;
      case 'alert':
        void this.opts.alerting.refresh().catch(() => undefined);
        return;
      default:
        // Registrations and aliases are read from the store when used: nothing is held here.
        return;
    }
  }

  /** Reads everything that may have changed unnoticed and applies it. Runs one at a time; a call during a run runs once more after it. */
  resync(why?: string): void {
    if (this.closed) return;
    if (this.syncing !== null) {
      this.syncAgain = true;
      return;
    }
    if (why !== undefined) this.opts.log.debug({ reason: why }, 'resync with the store');
    this.syncing = (async () => {
      try {
        const switched = await this.opts.deployer.sync();
        if (switched.length > 0) this.opts.log.info({ models: switched }, 'resync adopted deployment changes');
        await this.opts.refreshReferences();
        await this.opts.alerting.refresh();
        await this.opts.retrainer.refreshCounts();
        this.opts.retrainer.wake();
      } catch (e) {
        if (!isScorelineError(e)) this.opts.log.error({ err: (e as Error).stack }, 'resync failed');
      }
    })().finally(() => {
      this.syncing = null;
      if (this.syncAgain) {
        this.syncAgain = false;
        this.resync();
      }
    });
  }

  /** GET /admin/cluster. */
  async view(): Promise<{
    leader: string | null;
    replicas: { id: string; address: string; leader: boolean; started_at: string; heartbeat_at: string }[];
  }> {
    const [leader, replicas] = await Promise.all([this.opts.store.cluster.leader(), this.replicas()]);
    return {
      leader,
      replicas: replicas.map((r) => ({
        id: r.id,
        address: r.address,
        leader: r.id === leader,
        started_at: r.startedAt,
        heartbeat_at: r.heartbeatAt,
      })),
    };
  }

  /** Per replica, how it serves the model's deployment (for GET /admin/deployments/{model}). */
  async deploymentOf(model: string) {
    const leader = await this.opts.store.cluster.leader();
    return (await this.replicas()).map((r) => ({
      id: r.id,
      address: r.address,
      leader: r.id === leader,
      heartbeat_at: r.heartbeatAt,
      deployment: r.deployments[model] ?? null,
    }));
  }

  /** Replicas heard from within three leases: a replica gone longer is not shown. */
  private replicas(): Promise<ReplicaRecord[]> {
    return this.opts.store.cluster.replicas(3 * this.opts.leaseMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    if (this.resyncTimer !== null) clearInterval(this.resyncTimer);
    if (this.deadline !== null) clearTimeout(this.deadline);
    for (const t of this.deploymentSyncs.values()) clearTimeout(t);
    await this.syncing;
    await this.ticking;
    await this.unlisten?.().catch(() => undefined);
    if (!this.shared) return;
    // Hand over at once rather than make the others wait for the lease to lapse.
    this.leader = false;
    await this.opts.store.cluster.resign(this.id).catch(() => undefined);
    await this.opts.store.cluster.leave(this.id).catch(() => undefined);
  }
}
