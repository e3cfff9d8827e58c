// The performance figures of a window as the snapshot shows them: each metric's value (kept even
// below its minimum sample), the counts behind them, and per metric its band and the count that
// falls short of its minimum (./sample-size.ts).

import { round6 } from '../numbers.js';
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
    return {
      mae: round6(m?.mae),
      rmse: round6(m?.rmse),
      r2: round6(m?.r2),
      mape: round6(m?.mape),
      labelled: m?.count ?? 0,
      bands: mapValues(shortfall, bandOfShortfall),
      shortfall,
    };
  }
  const m = metrics as ClassificationMetrics | null;
  const labelled = m?.labelled ?? 0;
  const positives = m?.positives ?? 0;
  const predictedPositives = m?.predictedPositives ?? 0;
  const shortfall = classificationShortfalls({ labelled, positives, predictedPositives }, min);
  return {
    auc: round6(m?.auc),
    ks: round6(m?.ks),
    gini: round6(m?.gini),
    accuracy: round6(m?.accuracy),
    precision: round6(m?.precision),
    recall: round6(m?.recall),
    f1: round6(m?.f1),
    log_loss: round6(m?.log_loss),
    brier: round6(m?.brier),
    labelled,
    positives,
    negatives: labelled - positives,
    predicted_positives: predictedPositives,
    threshold,
    reference_auc: round6(referenceAuc),
    bands: mapValues(shortfall, bandOfShortfall),
    shortfall,
  };
}
