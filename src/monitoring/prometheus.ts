// Counter and histogram families whose cells are plain numbers and Float64Arrays updated on the hot
// path for a few nanoseconds, exposed through prom-client's registry at scrape time (prom-client's
// own label-hashing metrics cost about a microsecond per observation, too much per request).

import type client from 'prom-client';

type Labels = Record<string, string>;

interface MetricValue {
  value: number;
  labels: Labels;
  metricName?: string;
}

interface Exposed {
  name: string;
  help: string;
  type: 'counter' | 'histogram' | 'gauge';
  values: MetricValue[];
  aggregator: 'sum';
}

abstract class Family<Cell> {
  protected readonly cells = new Map<string, { labels: Labels; cell: Cell }>();

  constructor(
    registry: client.Registry,
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    registry.registerMetric(this as unknown as client.Metric);
  }

  /** The cell for these label values; cache it, looking it up per event would defeat the purpose. */
  cell(labels: Labels): Cell {
    const key = this.labelNames.map((n) => labels[n] ?? '').join('\u0000');
    let entry = this.cells.get(key);
    if (entry === undefined) {
      const clean: Labels = {};
      for (const n of this.labelNames) clean[n] = labels[n] ?? '';
      entry = { labels: clean, cell: this.create() };
      this.cells.set(key, entry);
    }
    return entry.cell;
  }

  /** Drops every cell whose labels match all of `labels` (e.g. an unloaded version). */
  remove(labels: Labels): void {
    for (const [key, e] of this.cells) {
      if (Object.entries(labels).every(([k, v]) => e.labels[k] === v)) this.cells.delete(key);
    }
  }

  protected abstract create(): Cell;
  abstract get(): Exposed;
  reset(): void {
    this.cells.clear();
  }
}

export class CounterCell {
  value = 0;
  inc(n = 1): void {
    this.value += n;
  }
}

export class CounterFamily extends Family<CounterCell> {
  readonly type = 'counter';
  protected create(): CounterCell {
    return new CounterCell();
  }
  get(): Exposed {
    const values: MetricValue[] = [];
    for (const { labels, cell } of this.cells.values()) values.push({ value: cell.value, labels });
    return { name: this.name, help: this.help, type: 'counter', values, aggregator: 'sum' };
  }
}

export class HistogramCell {
  /** Per-bucket (not cumulative) counts; the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(private readonly bounds: Float64Array) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

export class HistogramFamily extends Family<HistogramCell> {
  readonly type = 'histogram';
  private readonly bounds: Float64Array;

  constructor(registry: client.Registry, name: string, help: string, labelNames: readonly string[], buckets: readonly number[]) {
    super(registry, name, help, labelNames);
    this.bounds = Float64Array.from([...buckets].sort((a, b) => a - b));
  }

  protected create(): HistogramCell {
    return new HistogramCell(this.bounds);
  }

  get(): Exposed {
    const values: MetricValue[] = [];
    for (const { labels, cell } of this.cells.values()) {
      let cumulative = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += cell.counts[i]!;
        const le = i < this.bounds.length ? String(this.bounds[i]) : '+Inf';
        values.push({ metricName: `${this.name}_bucket`, value: cumulative, labels: { ...labels, le } });
      }
      values.push({ metricName: `${this.name}_sum`, value: cell.sum, labels });
      values.push({ metricName: `${this.name}_count`, value: cell.count, labels });
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }
}

/** A counter or gauge whose samples are read from their source at scrape time. */
export class CallbackFamily {
  constructor(
    registry: client.Registry,
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge',
    private readonly read: () => readonly { labels: Labels; value: number }[],
  ) {
    registry.registerMetric(this as unknown as client.Metric);
  }

  get(): Exposed {
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      values: this.read().map((s) => ({ value: s.value, labels: s.labels })),
      aggregator: 'sum',
    };
  }

  reset(): void {}
}
