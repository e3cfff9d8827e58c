// Durations as configuration writes them (`500ms`, `30s`, `5m`, `1h`, `90d`), shared by feature
// definitions (TTLs, windows) and the retraining section (the out-of-time window).

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const MAX_DURATION_MS = 3650 * UNIT_MS.d;
const DURATION_HINT = 'a number with ms, s, m, h or d, e.g. 500ms, 30s, 5m, 1h, 90d';

/** Milliseconds of `500ms | 30s | 5m | 1h | 90d`, 0 for `0`/`none`; a message when invalid. */
export function parseDuration(value: unknown): number | string {
  if (value === 0 || value === '0' || value === 'none') return 0;
  if (typeof value === 'number') return `${value} has no unit (${DURATION_HINT}; or 0/none)`;
  const text = String(value).trim();
  if (/^-/.test(text)) return `'${text}' must not be negative`;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(text);
  if (!m) return `'${text}' is not a duration (${DURATION_HINT}; or 0/none)`;
  const ms = Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
  if (ms > MAX_DURATION_MS) return `'${text}' is longer than 3650d`;
  return ms;
}
