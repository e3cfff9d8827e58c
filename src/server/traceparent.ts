// W3C Trace Context's traceparent header: `version-traceid-parentid-flags`, lower-case hex. A header
// that breaks the rules is ignored (the request starts a new trace), as the specification asks.

export interface TraceParent {
  readonly traceId: string;
  readonly spanId: string;
  readonly flags: number;
}

const HEX = /^[0-9a-f]+$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** The parent a traceparent names, or null when the header is malformed. */
export function parseTraceparent(header: string): TraceParent | null {
  const h = header.trim();
  if (h.length < 55) return null;
  const version = h.slice(0, 2);
  if (!HEX.test(version) || version === 'ff') return null;
  // Version 00 is exactly 55 characters; a later version may append fields after a dash.
  if (version === '00' ? h.length !== 55 : h.length > 55 && h[55] !== '-') return null;
  if (h[2] !== '-' || h[35] !== '-' || h[52] !== '-') return null;
  const traceId = h.slice(3, 35);
  const spanId = h.slice(36, 52);
  const flags = h.slice(53, 55);
  if (!HEX.test(traceId) || !HEX.test(spanId) || !HEX.test(flags)) return null;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return null;
  return { traceId, spanId, flags: parseInt(flags, 16) };
}

export function formatTraceparent(traceId: string, spanId: string, flags: number): string {
  return `00-${traceId}-${spanId}-${(flags & 0xff).toString(16).padStart(2, '0')}`;
}
