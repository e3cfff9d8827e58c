// Metrics of feature serving: fallbacks by feature and kind, freshness of served values, L1 lookups
// and online-store round trips, recorded by the feature server through this observer.

import type client from 'prom-client';
import { CounterFamily, HistogramFamily, type CounterCell, type HistogramCell } from './prometheus.js';
import { LATENCY_BUCKETS } from './version-monitor.js';

const FRESHNESS_BUCKETS = [1, 10, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400];

export class FeatureMetricsObserver {
  private readonly fallbacks: CounterFamily;
  private readonly freshnessFamily: HistogramFamily;
  private readonly lookups: CounterFamily;
  private readonly roundTrips: HistogramFamily;
  private readonly failures: CounterCell;
  private readonly hitCell: CounterCell;
  private readonly missCell: CounterCell;
  private readonly fresh = new Map<string, HistogramCell>();
  private readonly fallbackCells = new Map<string, CounterCell>();
  private readonly rttOk: HistogramCell;
  private readonly rttFailed: HistogramCell;

  constructor(registry: client.Registry) {
    this.fallbacks = new CounterFamily(
      registry,
      'scoreline_feature_fallbacks_total',
      'Feature values served by a fallback, by feature and fallback kind.',
      ['feature', 'kind'],
    );
    this.freshnessFamily = new HistogramFamily(
      registry,
      'scoreline_feature_freshness_seconds',
      'Age of stored feature values (now minus their event time) when served, in seconds.',
      ['feature'],
      FRESHNESS_BUCKETS,
    );
    this.lookups = new CounterFamily(
      registry,
      'scoreline_feature_lookups_total',
      'Stored feature groups looked up in the L1 cache per request, by result.',
      ['result'],
    );
    this.hitCell = this.lookups.cell({ result: 'hit' });
    this.missCell = this.lookups.cell({ result: 'miss' });
    this.roundTrips = new HistogramFamily(
      registry,
      'scoreline_feature_store_roundtrip_seconds',
      'Round trips to the online store (one pipeline per request), in seconds.',
      ['result'],
      LATENCY_BUCKETS,
    );
    this.rttOk = this.roundTrips.cell({ result: 'ok' });
    this.rttFailed = this.roundTrips.cell({ result: 'error' });
    this.staleFamily = new CounterFamily(
      registry,
      'scoreline_feature_stale_total',
      'Stored feature values found older than their TTL (they took their fallback), by feature.',
      ['feature'],
    );
    this.failures = new CounterFamily(
      registry,
      'scoreline_feature_store_failures_total',
      'Requests that could not reach the online store and were served from cache and fallbacks.',
      [],
    ).cell({});
  }

  cacheLookup(hits: number, misses: number): void {
    this.hitCell.inc(hits);
    this.missCell.inc(misses);
  }

  fallback(ref: string, kind: string): void {
    const key = `${ref}\u0000${kind}`;
    let c = this.fallbackCells.get(key);
    if (c === undefined) {
      c = this.fallbacks.cell({ feature: ref, kind });
      this.fallbackCells.set(key, c);
    }
    c.inc();
  }

  freshness(ref: string): (ageSeconds: number) => void {
    let h = this.fresh.get(ref);
    if (h === undefined) {
      h = this.freshnessFamily.cell({ feature: ref });
      this.fresh.set(ref, h);
    }
    const cell = h;
    return (ageSeconds) => cell.observe(ageSeconds);
  }

  storeFailure(): void {
    this.failures.inc();
  }

  private readonly staleCounts = new Map<string, number>();
  private resolutions = 0;
  private readonly staleCells = new Map<string, CounterCell>();
  private staleFamily: CounterFamily | null = null;

  stale(ref: string): void {
    this.staleCounts.set(ref, (this.staleCounts.get(ref) ?? 0) + 1);
    let c = this.staleCells.get(ref);
    if (c === undefined) {
      c = this.staleFamily!.cell({ feature: ref });
      this.staleCells.set(ref, c);
    }
    c.inc();
  }

  resolution(): void {
    this.resolutions++;
  }

  /** Share of resolutions that found each feature stale since the last call (features seen stale, or seen before). */
  takeStaleRatios(): [string, number][] {
    const n = this.resolutions;
    const out: [string, number][] = [];
    if (n > 0) {
      for (const ref of this.staleCells.keys()) out.push([ref, (this.staleCounts.get(ref) ?? 0) / n]);
    }
    this.staleCounts.clear();
    this.resolutions = 0;
    return out;
  }

  storeRoundTrip(seconds: number, ok: boolean): void {
    (ok ? this.rttOk : this.rttFailed).observe(seconds);
  }
}
