// Feature serving: definitions (YAML -> compiled registry and plans), the online store (embedded:
// a SQLite file served from off-heap memory; in process only; or Redis), the native L1 cache, the
// feature server that resolves a model's features per request, realtime event ingestion and offline
// materialization. createFeatureService wires them from the server config.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configInvalid, eventsMaybeStored, eventsNotStored } from '../errors.js';
import type { FeaturesConfig } from '../config.js';
import type { Logger } from '../logger.js';
import { loadFeatureDefinitionsFile } from './definitions.js';
import { parseEvents, streamsByEvent } from './events.js';
import { NativeCache } from './native-cache.js';
import type { FeatureRegistry } from './plan.js';
import { RedisStore, StoreUnavailableError } from './redis-store.js';
import { FeatureServer, type FeatureObserver } from './server.js';
import { EmbeddedStore, fingerprintOf, type EmbeddedStoreOptions } from './embedded-store.js';
import { feedsOf, materializeSource, type MaterializeResult } from './sources.js';
import { MemoryStore, type OnlineStore } from './store.js';

export { FeatureServer, type ModelFeatures, type Resolved, type ValueStatus, type FeatureObserver } from './server.js';
export { loadFeatureDefinitionsFile, parseFeatureDefinitions, loadFeatureDefinitions } from './definitions.js';
export { FeatureRegistry } from './plan.js';
export { MemoryStore, SeenIds, groupKey, type OnlineStore, type EventRecord } from './store.js';
export { RedisStore, StoreUnavailableError } from './redis-store.js';
export { EmbeddedStore, fingerprintOf } from './embedded-store.js';
export { CircuitBreaker, type BreakerState } from './breaker.js';
export { NativeCache, BatchReadBuffer } from './native-cache.js';
export {
  feedsOf,
  materializeSource,
  readRowBatches,
  readRows,
  type MaterializeResult,
  type MaterializeProgress,
} from './sources.js';
export { parseEvents, streamsByEvent, nextEventId } from './events.js';

/** What POST /v1/events (and a WebSocket event frame) answers when the events were stored. */
export interface IngestResult {
  /** Events applied now. */
  accepted: number;
  /** Events accepted but too old for any window (nothing to store). */
  ignored: number;
  /** Events whose id was already applied (a retry, or repeated in the body): not counted again. */
  duplicates: number;
  /** Every event's id, in body order (the client's, else generated). */
  ids: string[];
}

export interface FeatureService {
  readonly registry: FeatureRegistry;
  readonly store: OnlineStore;
  readonly server: FeatureServer;
  readonly cache: NativeCache | null;
  /** Sources read into the in-process store at start. */
  readonly loaded: readonly MaterializeResult[];
  /**
   * Stores realtime events, each at most once per id; every event is checked before any is stored.
   * A store failure throws EventWriteError: `not_stored` when nothing was sent, `unknown` when the
   * write may have landed (a retry with the same ids is then safe).
   */
  ingest(body: unknown, now?: number): Promise<IngestResult>;
  /** 'ok', or why serving is degraded (store unreachable). */
  health(): { status: 'ok' | 'degraded'; reason?: string };
  close(): Promise<void>;
}

export interface ServiceObserver extends FeatureObserver {
  storeRoundTrip(seconds: number, ok: boolean): void;
}

export interface ServiceOptions {
  observer?: ServiceObserver;
  log?: Logger;
  /** Where the embedded store keeps its file (features.db); without it the embedded store is in memory only. */
  dataDir?: string;
}

function openEmbedded(path: string, opts: Omit<EmbeddedStoreOptions, 'path'>): EmbeddedStore {
  try {
    return new EmbeddedStore({ path, ...opts });
  } catch (e) {
    throw configInvalid(`cannot open the feature store ${path}: ${(e as Error).message}`);
  }
}

export async function createFeatureService(cfg: FeaturesConfig, options: ServiceOptions = {}): Promise<FeatureService | null> {
  const { observer, dataDir } = options;
  const log = options.log?.child({ component: 'features' });
  if (cfg.definitions === null) return null;
  const registry = await loadFeatureDefinitionsFile(cfg.definitions);
  let store: OnlineStore;
  let cache: NativeCache | null = null;
  if (cfg.redis !== null) {
    const password = cfg.redis.passwordFile !== undefined ? readPasswordFile(cfg.redis.passwordFile) : undefined;
    const redis = new RedisStore({
      url: cfg.redis.url,
      ...(password !== undefined ? { password } : {}),
      keyPrefix: cfg.redis.keyPrefix ?? 'sl:',
      timeoutMs: cfg.redis.timeoutMs ?? 50,
      streams: registry.streams,
      onRoundTrip: observer ? (s, ok) => observer.storeRoundTrip(s, ok) : undefined,
      breaker: cfg.redis.breaker,
      log,
    });
    // Starting while Redis is down is allowed: serving is degraded until it connects.
    await redis.ready(3000).catch(() => undefined);
    store = redis;
    cache = new NativeCache();
    cache.configure({ maxEntries: cfg.cache.maxEntries, maxBytes: cfg.cache.maxBytes });
  } else if (cfg.embedded.durable && dataDir !== undefined) {
    const path = join(dataDir, 'features.db');
    store = openEmbedded(path, {
      streams: registry.streams,
      ...(cfg.embedded.memoryBytes !== null ? { memoryBytes: cfg.embedded.memoryBytes } : {}),
      onPreloaded: (rows, seconds) =>
        log?.info(
          { path, rows, seconds: Math.round(seconds * 100) / 100 },
          'feature store in memory: every stored group is served without reading the file',
        ),
      onPreloadError: (e) =>
        log?.error({ path, err: e.message }, 'copying the feature store into memory failed: groups not in memory are read from the file'),
    });
  } else {
    store = new MemoryStore(registry.streams);
  }
  const server = new FeatureServer({
    registry,
    store,
    cache,
    cacheTtlMs: cfg.cache.ttlSeconds * 1000,
    negativeTtlMs: cfg.cache.negativeTtlSeconds * 1000,
    cacheWindows: cfg.cache.windows ?? true,
    storeTimeoutMs: cfg.redis?.timeoutMs ?? 50,
    observer,
  });
  const loaded: MaterializeResult[] = [];
  if (store.kind !== 'redis' && cfg.loadSources) {
    for (const source of registry.sources.values()) {
      try {
        // The durable store keeps what it loaded: a source file unchanged since is not read again.
        const fingerprint =
          store instanceof EmbeddedStore
            ? fingerprintOf(
                source.path,
                feedsOf(registry, source).map((f) => f.group),
              )
            : null;
        if (store instanceof EmbeddedStore && store.sourceLoaded(source.name, fingerprint!)) {
          log?.info(
            { source: source.name, path: source.path },
            'feature source unchanged since it was loaded into the feature store: not read again',
          );
          continue;
        }
        const result = await materializeSource(registry, source, store);
        if (store instanceof EmbeddedStore && result.rejected === 0) store.markSourceLoaded(source.name, fingerprint!);
        loaded.push(result);
      } catch (e) {
        throw configInvalid(`cannot load feature source '${source.name}' from ${source.path}: ${(e as Error).message}`);
      }
    }
  }
  const streams = streamsByEvent(registry);
  return {
    registry,
    store,
    server,
    cache,
    loaded,
    async ingest(body, now = Date.now()) {
      const parsed = parseEvents(registry, streams, body, now);
      let applied: boolean[];
      try {
        applied = await store.addEvents(parsed.records, now);
      } catch (e) {
        if (!(e instanceof StoreUnavailableError)) throw e;
        if (e.sent) server.eventsUncertain(parsed.records);
        throw e.sent ? eventsMaybeStored(e.message, parsed.ids) : eventsNotStored(e.message, parsed.ids);
      }
      server.eventsWritten(parsed.records, applied);
      let accepted = 0;
      for (const a of applied) if (a) accepted++;
      return { accepted, ignored: parsed.ignored, duplicates: parsed.records.length - accepted, ids: parsed.ids };
    },
    health() {
      if (store.available) return { status: 'ok' };
      const what = store instanceof RedisStore ? store.describeOutage() : `the online store (${store.kind}) is unreachable`;
      return { status: 'degraded', reason: `${what}: serving from cache and fallbacks` };
    },
    async close() {
      await store.close();
    },
  };
}

/** features.redis.passwordFile: the file's content without its trailing newline. */
export function readPasswordFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw configInvalid(`cannot read features.redis.passwordFile ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const password = text.replace(/\r?\n$/, '');
  if (password === '') throw configInvalid(`features.redis.passwordFile ${path} is empty`);
  return password;
}
