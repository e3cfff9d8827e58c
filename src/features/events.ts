// Realtime events as clients send them (POST /v1/events, WebSocket event frames):
//   {"event": "transaction", "entity": {"customer_id": "C00042"}, "ts": 1764190000000 | "2026-11-26T12:00:00Z",
//    "fields": {"amount": 120.5}}
// or {"events": [...]} for several. Every event is checked before anything is stored, so a bad
// body changes nothing (400); events older than every window that reads them are accepted and
// ignored; events in the future (beyond a 5 s skew) are refused.

import { badRequest } from '../errors.js';
import type { FeatureRegistry, StreamSpec } from './plan.js';
import { parseTimestamp } from './sources.js';
import type { EventWrite } from './store.js';
import { classifyEventTime, DEFAULT_MAX_FUTURE_SKEW_MS } from './windows.js';

export interface ParsedEvents {
  readonly writes: EventWrite[];
  /** Events accepted but too old for any window. */
  readonly ignored: number;
  /** Events in the body. */
  readonly received: number;
}

const MAX_EVENTS = 10_000;

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Streams by event name, with the longest window reading each. */
export function streamsByEvent(registry: FeatureRegistry): Map<string, { spec: StreamSpec; longestMs: number }[]> {
  const out = new Map<string, { spec: StreamSpec; longestMs: number }[]>();
  for (const s of registry.streams) {
    const list = out.get(s.event) ?? [];
    list.push({ spec: s, longestMs: Math.max(...s.windowsMs) });
    out.set(s.event, list);
  }
  return out;
}

export function parseEvents(registry: FeatureRegistry, streams: ReadonlyMap<string, { spec: StreamSpec; longestMs: number }[]>, body: unknown, now: number): ParsedEvents {
  if (!isObject(body)) throw badRequest('body must be an event object or {"events": [...]}');
  const list = body.events !== undefined ? body.events : [body];
  if (!Array.isArray(list) || list.length === 0) throw badRequest('"events" must be a non-empty array');
  if (list.length > MAX_EVENTS) throw badRequest(`at most ${MAX_EVENTS} events per request`);
  const writes: EventWrite[] = [];
  let ignored = 0;
  list.forEach((e, i) => {
    const at = list === body.events ? `events[${i}]` : 'event';
    if (!isObject(e)) throw badRequest(`${at} must be an object`);
    if (typeof e.event !== 'string') throw badRequest(`${at}.event must be a string (one of: ${[...streams.keys()].join(', ')})`);
    const targets = streams.get(e.event);
    if (targets === undefined) throw badRequest(`${at}.event '${e.event}' feeds no feature (known events: ${[...streams.keys()].join(', ')})`);
    const ts = e.ts === undefined ? now : parseTimestamp(e.ts);
    if (ts === null) throw badRequest(`${at}.ts must be epoch milliseconds or an ISO date-time`);
    if (e.fields !== undefined && !isObject(e.fields)) throw badRequest(`${at}.fields must be an object`);
    const fields = (e.fields ?? {}) as Record<string, unknown>;
    let accepted = 0;
    for (const { spec, longestMs } of targets) {
      let id: string;
      try {
        id = registry.entityId(spec.entity, e.entity);
      } catch (err) {
        throw badRequest(`${at}: ${(err as Error).message}`);
      }
      let value = 1;
      if (spec.field !== null) {
        const v = fields[spec.field];
        if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`${at}.fields.${spec.field} must be a finite number (event '${e.event}' is summed on it)`);
        value = v;
      }
      const verdict = classifyEventTime(ts, now, longestMs, DEFAULT_MAX_FUTURE_SKEW_MS);
      if (verdict === 'future') throw badRequest(`${at}.ts is in the future (${new Date(ts).toISOString()})`);
      if (verdict === 'invalid') throw badRequest(`${at}.ts is not a valid time`);
      if (verdict === 'expired') continue;
      writes.push({ entity: spec.entity, id, stream: spec.stream, ts, value });
      accepted++;
    }
    if (accepted === 0) ignored++;
  });
  return { writes, ignored, received: list.length };
}
