// The performance figures of a window as the snapshot shows them: each metric's value (kept even
// below its minimum sample), the counts behind them, and per metric its band and the count that
// falls short of its minimum (./sample-size.ts).

import type { ClassificationMetrics, RegressionMetrics } from './metrics.js';
import {
  bandOfShortfall,
  classificationShortfalls,
  regressionShortfalls,
  type ClassificationMetricName,
  type MinSamples,
  type RegressionMetricName,
  type SampleBand,
  type Shortfall,
} from './sample-size.js';

/** Six decimals for JSON; null for anything not finite. */
export const r4 = (x: number | null | undefined): number | null => (x === null || x === undefined || !Number.isFinite(x) ? null : Math.round(x * 1e6) / 1e6);

export type Performance =
  | ({ [K in ClassificationMetricName]: number | null } & {
      labelled: number;
      positives: number;
      negatives: number;
      predicted_positives: number;
      threshold: number;
      reference_auc: number | null;
      bands: Record<ClassificationMetricName, SampleBand>;
      shortfall: Record<ClassificationMetricName, Shortfall | null>;
    })
  | ({ [K in RegressionMetricName]: number | null } & {
      labelled: number;
      bands: Record<RegressionMetricName, SampleBand>;
      shortfall: Record<RegressionMetricName, Shortfall | null>;
    });

const mapValues = <K extends string, A, B>(o: Record<K, A>, f: (a: A) => B): Record<K, B> =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v as A)])) as Record<K, B>;

/** The figures of a window's metrics (null: no labelled rows). */
export function performanceOf(
  task: 'classification' | 'regression',
  metrics: ClassificationMetrics | RegressionMetrics | null,
  threshold: number,
  referenceAuc: number | null,
  min: MinSamples,
): Performance {
  if (task === 'regression') {
    const m = metrics as RegressionMetrics | null;
    const shortfall = regressionShortfalls(m?.count ?? 0, min);
    return { mae: r4(m?.mae), rmse: r4(m?.rmse), r2: r4(m?.r2), mape: r4(m?.mape), labelled: m?.count ?? 0, bands: mapValues(shortfall, bandOfShortfall), shortfall };
  }
  const m = metrics as ClassificationMetrics | null;
  const labelled = m?.labelled ?? 0;
  const positives = m?.positives ?? 0;
  const predictedPositives = m?.predictedPositives ?? 0;
  const shortfall = classificationShortfalls({ labelled, positives, predictedPositives }, min);
  return {
    auc: r4(m?.auc),
    ks: r4(m?.ks),
    gini: r4(m?.gini),
    accuracy: r4(m?.accuracy),
    precision: r4(m?.precision),
    recall: r4(m?.recall),
    f1: r4(m?.f1),
    log_loss: r4(m?.log_loss),
    brier: r4(m?.brier),
    labelled,
    positives,
    negatives: labelled - positives,
    predicted_positives: predictedPositives,
    threshold,
    reference_auc: r4(referenceAuc),
    bands: mapValues(shortfall, bandOfShortfall),
    shortfall,
  };
}
