// Realtime events as clients send them (POST /v1/events, WebSocket event frames):
//   {"event": "transaction", "id": "tx-981"?, "entity": {"customer_id": "C00042"},
//    "ts": 1764190000000 | "2026-11-26T12:00:00Z", "fields": {"amount": 120.5}}
// or {"events": [...]} for several. Every event is checked before anything is stored, so a bad
// body changes nothing (400); events older than every window that reads them are accepted and
// ignored; events in the future (beyond a 5 s skew) are refused.
//
// Every event has an id, the client's or one generated here (returned in the answer): the store
// applies an (event type, id) once, so a client that did not get an answer retries with the same
// ids without counting anything twice.

import { randomBytes } from 'node:crypto';
import { badRequest } from '../errors.js';
import { isObject } from '../json.js';
import type { FeatureRegistry, StreamSpec } from './plan.js';
import { parseTimestamp } from './sources.js';
import type { EventRecord, EventWrite } from './store.js';
import { classifyEventTime, DEFAULT_MAX_FUTURE_SKEW_MS, retentionMs } from './windows.js';

export interface ParsedEvents {
  /** One per event to apply (not the ignored ones), in body order. */
  readonly records: EventRecord[];
  /** The id of every event of the body, in body order. */
  readonly ids: string[];
  /** Events accepted but too old for any window. */
  readonly ignored: number;
  /** Events in the body. */
  readonly received: number;
}

const MAX_EVENTS = 10_000;
export const MAX_EVENT_ID_LENGTH = 200;

// Generated ids: a random per-process prefix and a counter, unique across replicas and restarts.
const ID_PREFIX = `ev-${randomBytes(8).toString('hex')}`;
let idCounter = 0;
export const nextEventId = (): string => `${ID_PREFIX}-${(++idCounter).toString(36)}`;

export interface EventTarget {
  readonly spec: StreamSpec;
  /** The longest window reading the stream. */
  readonly longestMs: number;
  /** How long after its time any event of this name can still change a window: the id is kept that long. */
  readonly keepMs: number;
}

/** Streams by event name, with the longest window reading each. */
export function streamsByEvent(registry: FeatureRegistry): Map<string, EventTarget[]> {
  const out = new Map<string, { spec: StreamSpec; longestMs: number; keepMs: number }[]>();
  for (const s of registry.streams) {
    const list = out.get(s.event) ?? [];
    const longestMs = Math.max(...s.windowsMs);
    list.push({ spec: s, longestMs, keepMs: 0 });
    out.set(s.event, list);
  }
  for (const list of out.values()) {
    const keepMs = Math.max(...list.map((t) => retentionMs(t.longestMs)));
    for (const t of list) t.keepMs = keepMs;
  }
  return out;
}

export function parseEvents(
  registry: FeatureRegistry,
  streams: ReadonlyMap<string, readonly EventTarget[]>,
  body: unknown,
  now: number,
): ParsedEvents {
  if (!isObject(body)) throw badRequest('body must be an event object or {"events": [...]}');
  const list = body.events !== undefined ? body.events : [body];
  if (!Array.isArray(list) || list.length === 0) throw badRequest('"events" must be a non-empty array');
  if (list.length > MAX_EVENTS) throw badRequest(`at most ${MAX_EVENTS} events per request`);
  const records: EventRecord[] = [];
  const ids: string[] = [];
  let ignored = 0;
  list.forEach((e, i) => {
    const at = list === body.events ? `events[${i}]` : 'event';
    if (!isObject(e)) throw badRequest(`${at} must be an object`);
    if (typeof e.event !== 'string') throw badRequest(`${at}.event must be a string (one of: ${[...streams.keys()].join(', ')})`);
    const targets = streams.get(e.event);
    if (targets === undefined)
      throw badRequest(`${at}.event '${e.event}' feeds no feature (known events: ${[...streams.keys()].join(', ')})`);
    if (e.id !== undefined && (typeof e.id !== 'string' || e.id.length === 0 || e.id.length > MAX_EVENT_ID_LENGTH)) {
      throw badRequest(`${at}.id must be a non-empty string of at most ${MAX_EVENT_ID_LENGTH} characters (the event's idempotency key)`);
    }
    const ts = e.ts === undefined ? now : parseTimestamp(e.ts);
    if (ts === null) throw badRequest(`${at}.ts must be epoch milliseconds or an ISO date-time`);
    if (e.fields !== undefined && !isObject(e.fields)) throw badRequest(`${at}.fields must be an object`);
    const fields = (e.fields ?? {}) as Record<string, unknown>;
    const writes: EventWrite[] = [];
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
        if (typeof v !== 'number' || !Number.isFinite(v))
          throw badRequest(`${at}.fields.${spec.field} must be a finite number (event '${e.event}' is summed on it)`);
        value = v;
      }
      const verdict = classifyEventTime(ts, now, longestMs, DEFAULT_MAX_FUTURE_SKEW_MS);
      if (verdict === 'future') throw badRequest(`${at}.ts is in the future (${new Date(ts).toISOString()})`);
      if (verdict === 'invalid') throw badRequest(`${at}.ts is not a valid time`);
      if (verdict === 'expired') continue;
      writes.push({ entity: spec.entity, id, stream: spec.stream, ts, value });
    }
    const eventId = (e.id as string | undefined) ?? nextEventId();
    ids.push(eventId);
    if (writes.length === 0) ignored++;
    else records.push({ event: e.event, eventId, keepUntil: ts + targets[0]!.keepMs, writes });
  });
  return { records, ids, ignored, received: list.length };
}
