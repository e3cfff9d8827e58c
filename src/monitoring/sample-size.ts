// Minimum samples before a monitoring statistic speaks. Below its minimum a figure is still
// computed and shown with its sample size, but its band is `insufficient_data`, and the periodic
// evaluation (gauges, alert rules, history points) treats it as missing: a PSI of 8 from three
// requests, or an AUC from 40 labels, is sampling noise, not drift or decay. Why each default is
// what it is: README, Monitoring, "Minimum samples".

export interface MinSamples {
  /**
   * Score PSI and per-feature CSI: the effective number of current values (see psiMinCount) for
   * bins with up to 10 reference shares above 0; more bins scale it up.
   */
  psi: number;
  /** AUC, KS and Gini: labelled rows, and rows of each class. */
  auc: { labelled: number; perClass: number };
  /** Accuracy, precision, recall, F1, log loss, Brier: labelled rows, and rows of each class (precision: of predicted positives). */
  accuracy: { labelled: number; perClass: number };
  /** MAE, RMSE, R2, MAPE: labelled rows. */
  regression: number;
}

export const DEFAULT_MIN_SAMPLES: MinSamples = {
  psi: 300,
  auc: { labelled: 1000, perClass: 200 },
  accuracy: { labelled: 400, perClass: 100 },
  regression: 200,
};

export const INSUFFICIENT = 'insufficient_data';
export type SampleBand = 'sufficient' | typeof INSUFFICIENT;

/**
 * Current values a PSI over these reference shares needs before it means anything; null when no
 * number of them is enough because the reference itself is too small.
 *
 * When the current values come from the reference population, n * PSI is about chi-square with
 * (bins - 1) degrees of freedom (mean (bins - 1) / n). The reference is a sample too: with m rows
 * the shares it froze are off by the same kind of noise, so the PSI behaves as if it came from
 * n_eff = n m / (n + m) values, and n_eff >= min asks for n >= min m / (m - min). Only bins the
 * reference holds count (repeated edges and the unused "other" category are empty on both sides
 * under no drift); past 10 of them the minimum grows with the degrees of freedom, keeping the
 * noise's mean PSI where 10 bins put it. A reference size of 0 (unknown) applies no correction.
 */
export function psiMinCount(refShares: ArrayLike<number>, referenceRows: number, min: number): number | null {
  let bins = 0;
  for (let i = 0; i < refShares.length; i++) if (refShares[i]! > 0) bins++;
  const need = min * Math.max(1, (bins - 1) / 9);
  if (!(referenceRows > 0) || referenceRows === Infinity) return Math.ceil(need);
  if (referenceRows <= need) return null;
  return Math.ceil((need * referenceRows) / (referenceRows - need));
}

/** Which count falls short of which minimum, for "insufficient data (n = 40 of 1000)". */
export interface Shortfall {
  count: 'labelled' | 'positives' | 'negatives' | 'predicted_positives';
  n: number;
  min: number;
}

export const RANKING_METRICS = ['auc', 'ks', 'gini'] as const;
export const THRESHOLD_METRICS = ['accuracy', 'precision', 'recall', 'f1', 'log_loss', 'brier'] as const;
export const REGRESSION_METRICS = ['mae', 'rmse', 'r2', 'mape'] as const;
export type ClassificationMetricName = (typeof RANKING_METRICS)[number] | (typeof THRESHOLD_METRICS)[number];
export type RegressionMetricName = (typeof REGRESSION_METRICS)[number];

export interface ClassCounts {
  labelled: number;
  positives: number;
  /** Rows scored at or above the threshold. */
  predictedPositives: number;
}

function firstShort(checks: readonly Shortfall[]): Shortfall | null {
  return checks.find((c) => c.n < c.min) ?? null;
}

/** Per classification metric, the first count below its minimum (null: the metric speaks). */
export function classificationShortfalls(c: ClassCounts, min: MinSamples): Record<ClassificationMetricName, Shortfall | null> {
  const negatives = c.labelled - c.positives;
  const group = (m: { labelled: number; perClass: number }): Shortfall[] => [
    { count: 'labelled', n: c.labelled, min: m.labelled },
    { count: 'positives', n: c.positives, min: m.perClass },
    { count: 'negatives', n: negatives, min: m.perClass },
  ];
  const ranking = firstShort(group(min.auc));
  const thresholded = firstShort(group(min.accuracy));
  // Precision is a share of the predicted positives, so those are its sample.
  const precision = thresholded ?? firstShort([{ count: 'predicted_positives', n: c.predictedPositives, min: min.accuracy.perClass }]);
  return {
    auc: ranking,
    ks: ranking,
    gini: ranking,
    accuracy: thresholded,
    precision,
    recall: thresholded,
    f1: thresholded,
    log_loss: thresholded,
    brier: thresholded,
  };
}

export function regressionShortfalls(labelled: number, min: MinSamples): Record<RegressionMetricName, Shortfall | null> {
  const s = firstShort([{ count: 'labelled', n: labelled, min: min.regression }]);
  return { mae: s, rmse: s, r2: s, mape: s };
}

export const bandOfShortfall = (s: Shortfall | null): SampleBand => (s === null ? 'sufficient' : INSUFFICIENT);
