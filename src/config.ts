// Server configuration and per-model configuration (model.yaml): schemas, defaults, loading from
// YAML or JSON, and errors that name the failing path (`server.port: must be <= 65535`).

import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, extname, resolve } from 'node:path';
import YAML from 'yaml';
import { configInvalid } from './errors.js';
import { isObject } from './json.js';
import { DEFAULT_MIN_SAMPLES, type MinSamples } from './monitoring/sample-size.js';
import { parseRetrainingConfig } from './retraining-config.js';
import { compileSchema, schemaErrors, type ErrorObject, type Schema } from './validation.js';

export interface BatchingConfig {
  maxBatchSize: number;
  maxQueueDelayMicros: number;
  maxQueueSize: number;
}

export interface ServerConfig {
  server: {
    host: string;
    port: number;
    maxBodyBytes: number;
    requestTimeoutMs: number;
    shutdownTimeoutMs: number;
  };
  /** OIP over gRPC on server.host: its port (0: any free port), or null / false for no gRPC server. */
  grpc: { port: number | null | false };
  /**
   * HTTP threads: uWS apps sharing server.port, each a replica of the shared store in this process
   * (so N > 1 needs the PostgreSQL store); 'auto': one per core up to 8 with PostgreSQL, else 1.
   */
  http: { threads: number | 'auto' };
  modelRepository: string | null;
  /** How the model repository is watched: every `poll` seconds new version folders are imported and loaded (0: only at start). */
  repository: { poll: number };
  dataDir: string;
  inference: {
    /** Worker threads; 0 runs inference inline on the HTTP thread. */
    workers: number;
    tasksPerWorker: number;
    intraOpThreads: number;
    /** Models whose largest batch runs faster than this (us) are served inline anyway; 0 = never. */
    inlineBelowMicros: number;
    /** Serve plain tree ensembles with scoreline's tree engine once it answers as onnxruntime does. */
    treeEngine: boolean;
  };
  batching: BatchingConfig;
  websocket: {
    maxPayloadBytes: number;
    maxBackpressureBytes: number;
    maxInflightPerConnection: number;
    idleTimeoutSeconds: number;
  };
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  features: FeaturesConfig;
  deploy: {
    /** Largest-batch onnxruntime time a version may take to be deployed, in microseconds. */
    latencyBudgetMicros: number;
    analysisTickMs: number;
    analysis: {
      minRequests: number;
      maxErrorRateIncrease: number;
      maxP99Factor: number;
      p99SlackMs: number;
      maxScorePsi: number;
    };
  };
  admin: { maxModelBytes: number };
  /** Browser origins (scheme://host[:port], or '*') allowed to call the server cross-site; default none. */
  cors: { allowedOrigins: string[] };
  limits: {
    /** Rows one inference request may hold (413 beyond); batching splits larger requests into maxBatchSize chunks. */
    maxRowsPerRequest: number;
    /** Open client connections beyond which new ones are refused; null derives it from the open-files limit. */
    maxConnections: number | null;
  };
  monitoring: MonitoringConfig;
  /** Retraining sections by model name (see src/retraining-config.ts); they override model.yaml's. */
  retraining: Record<string, Record<string, unknown>>;
  auth: AuthConfig;
  /** TLS on the HTTP/WebSocket port (and the gRPC port): PEM files, re-read on SIGHUP; null: plain HTTP. */
  tls: { cert: string; key: string } | null;
  tracing: TracingConfig;
  accessLog: { enabled: boolean; sampleRate: number };
  store: StoreConfig;
}

/** Where registry, deployments, jobs and alerts are kept: SQLite under the data dir, or a PostgreSQL every replica shares. */
export interface StoreConfig {
  /** postgres:// URL (SCORELINE_STORE_URL when null); null and no variable: SQLite under the data dir. */
  url: string | null;
  /** host:port other replicas and operators reach this one at (default: this host's name and the bound port). */
  address: string | null;
  /** How often a replica reports itself and the leader renews its lease. */
  heartbeatSeconds: number;
  /** How often a replica writes its monitoring state for the merged view of the others. */
  shareSeconds: number;
  /** How long the leader lease lasts without a renewal: a dead leader is replaced within about this. */
  leaseSeconds: number;
  /** How often every replica reads the stored deployments and references again, besides being notified. */
  resyncSeconds: number;
}

/** What an API key may call. */
export type ApiKeyScope = 'infer' | 'feedback' | 'events' | 'monitoring:read';
export const API_KEY_SCOPES: readonly ApiKeyScope[] = ['infer', 'feedback', 'events', 'monitoring:read'];

export interface AuthConfig {
  /** API keys on the data plane (inference, feedback, events, monitoring reads); health and metadata stay open. */
  enabled: boolean;
  /** Keys by id, stored as `sha256:<hex>` of the key (made by `scoreline keys create`); SCORELINE_API_KEYS adds more. */
  apiKeys: { id: string; hash: string; scopes: ApiKeyScope[] }[];
  /** GET /metrics without a key (Prometheus scrapers rarely carry one); false: it needs monitoring:read. */
  metricsPublic: boolean;
}

export interface TracingConfig {
  /** OTLP/HTTP collector (`http://collector:4318`, or the full `.../v1/traces` URL); null: tracing off, nothing loaded. */
  otlpEndpoint: string | null;
  protocol: 'http/protobuf' | 'http/json';
  /** Share of new traces sampled; a request that arrives with a traceparent follows its caller's decision. */
  sampleRatio: number;
  serviceName: string;
  /** Extra headers on export requests (a collector's auth token). */
  headers: Record<string, string>;
  /** Longest a finished span waits before it is exported. */
  exportIntervalMs: number;
}

export interface MonitoringConfig {
  /** false turns per-request and per-prediction monitoring off (the benchmark's baseline). */
  enabled: boolean;
  predictionLog: {
    sampleRate: number;
    retentionDays: number;
    /** How long a logged prediction may wait in memory before it is sent to the log thread (ms). */
    flushMs: number;
    /** async: answer at once, write within flushMs; sync: answer only once the prediction is committed. */
    durability: 'async' | 'sync';
  };
  sla: { p95Ms: number | null; p99Ms: number | null; errorRate: number | null; availability: number | null };
  /** How often drift, performance and alert rules are evaluated. */
  evaluateSeconds: number;
  alerts: {
    /** Replaces the default rules when given (see README). */
    rules: unknown[] | null;
    webhooks: { url: string; timeoutMs?: number; retries?: number }[];
  };
  /** Samples each statistic needs before it has a band, a gauge, alerts and history (README: "Minimum samples"). */
  minSamples: MinSamples;
}

export interface FeaturesConfig {
  /** Feature definitions (YAML); null turns entity scoring off. Relative paths: to the config file. */
  definitions: string | null;
  /** The shared online store; null keeps features in process (one replica, no Redis needed). */
  redis: {
    url: string;
    keyPrefix: string;
    timeoutMs: number;
    /**
     * Stop waiting on Redis after `failures` timeouts or connection errors in a row (default 5);
     * probe it every `probeMs` (default 1000) and resume when it answers.
     */
    breaker?: { failures?: number; probeMs?: number };
    /**
     * A file holding the Redis password (e.g. a mounted Kubernetes Secret), so that the password is
     * neither in the config nor in the environment. Relative paths: to the config file.
     */
    passwordFile?: string;
  } | null;
  /** Read the definitions' offline sources into the embedded store at start (ignored with Redis). */
  loadSources: boolean;
  /**
   * The embedded store (no Redis). durable (default true): kept in <dataDir>/features.db and served
   * from off-heap memory; false: in process only, lost on restart. memoryBytes (default null: all):
   * caps the memory copy of the stored groups; groups beyond it are read from the file.
   */
  embedded: { durable: boolean; memoryBytes: number | null };
  /**
   * The native L1 cache in front of the store. `windows` (default true) keeps realtime window
   * snapshots in it as well: events this replica writes show at once, other replicas' events after
   * at most ttlSeconds.
   */
  cache: { maxEntries: number; maxBytes: number; ttlSeconds: number; negativeTtlSeconds: number; windows?: boolean };
}

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export function defaultConfig(): ServerConfig {
  return {
    server: {
      host: '0.0.0.0',
      port: 8080,
      maxBodyBytes: 4 * 1024 * 1024,
      requestTimeoutMs: 5000,
      shutdownTimeoutMs: 10000,
    },
    grpc: { port: 8081 },
    http: { threads: 1 },
    modelRepository: null,
    repository: { poll: 0 },
    dataDir: 'data',
    inference: {
      // One core stays with the HTTP thread; the rest run onnxruntime.
      workers: Math.max(1, availableParallelism() - 1),
      tasksPerWorker: 2,
      intraOpThreads: 1,
      // A batch's hop to a worker and back has a fixed cost; a model whose largest batch runs faster
      // than that is served better inline (bench/RESULTS.md compares the two).
      inlineBelowMicros: 100,
      treeEngine: true,
    },
    batching: { maxBatchSize: 64, maxQueueDelayMicros: 200, maxQueueSize: 4096 },
    websocket: {
      maxPayloadBytes: 1024 * 1024,
      maxBackpressureBytes: 1024 * 1024,
      maxInflightPerConnection: 1024,
      idleTimeoutSeconds: 120,
    },
    log: { level: 'info' },
    deploy: {
      latencyBudgetMicros: 100_000,
      analysisTickMs: 1000,
      analysis: { minRequests: 50, maxErrorRateIncrease: 0.01, maxP99Factor: 1.5, p99SlackMs: 5, maxScorePsi: 0.25 },
    },
    admin: { maxModelBytes: 512 * 1024 * 1024 },
    cors: { allowedOrigins: [] },
    limits: { maxRowsPerRequest: 100_000, maxConnections: null },
    monitoring: {
      enabled: true,
      predictionLog: { sampleRate: 1, retentionDays: 30, flushMs: 100, durability: 'async' },
      sla: { p95Ms: null, p99Ms: null, errorRate: null, availability: null },
      evaluateSeconds: 10,
      alerts: { rules: null, webhooks: [] },
      minSamples: { ...DEFAULT_MIN_SAMPLES, auc: { ...DEFAULT_MIN_SAMPLES.auc }, accuracy: { ...DEFAULT_MIN_SAMPLES.accuracy } },
    },
    retraining: {},
    auth: { enabled: false, apiKeys: [], metricsPublic: true },
    tls: null,
    tracing: {
      otlpEndpoint: null,
      protocol: 'http/protobuf',
      sampleRatio: 1,
      serviceName: 'scoreline',
      headers: {},
      exportIntervalMs: 2000,
    },
    accessLog: { enabled: true, sampleRate: 0.01 },
    store: { url: null, address: null, heartbeatSeconds: 2, shareSeconds: 1, leaseSeconds: 8, resyncSeconds: 5 },
    features: {
      definitions: null,
      redis: null,
      loadSources: true,
      embedded: { durable: true, memoryBytes: null },
      cache: { maxEntries: 1_000_000, maxBytes: 256 * 1024 * 1024, ttlSeconds: 30, negativeTtlSeconds: 5 },
    },
  };
}

const int = (minimum: number, maximum = Number.MAX_SAFE_INTEGER) => ({ type: 'integer', minimum, maximum }) as const;

const batchingSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    maxBatchSize: int(1, 4096),
    maxQueueDelayMicros: int(0, 10_000_000),
    maxQueueSize: int(1, 10_000_000),
  },
} as const;

const minClassSamplesSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { labelled: int(1, 1_000_000_000), perClass: int(1, 1_000_000_000) },
} as const;

const configSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    server: {
      type: 'object',
      additionalProperties: false,
      properties: {
        host: { type: 'string', minLength: 1 },
        port: int(0, 65535),
        maxBodyBytes: int(1024, 1024 * 1024 * 1024),
        requestTimeoutMs: int(1, 3_600_000),
        shutdownTimeoutMs: int(0, 3_600_000),
      },
    },
    grpc: {
      type: 'object',
      additionalProperties: false,
      properties: { port: { anyOf: [int(0, 65535), { type: 'null' }, { const: false }] } },
    },
    http: {
      type: 'object',
      additionalProperties: false,
      properties: { threads: { anyOf: [int(1, 64), { const: 'auto' }] } },
    },
    modelRepository: { type: ['string', 'null'] },
    repository: {
      type: 'object',
      additionalProperties: false,
      // 0 turns polling off; otherwise at least a second between scans (each one hashes changed files).
      properties: { poll: { anyOf: [{ const: 0 }, { type: 'number', minimum: 1, maximum: 86_400 }] } },
    },
    dataDir: { type: 'string', minLength: 1 },
    inference: {
      type: 'object',
      additionalProperties: false,
      properties: {
        workers: int(0, 256),
        tasksPerWorker: int(1, 16),
        intraOpThreads: int(1, 256),
        inlineBelowMicros: int(0, 10_000_000),
        treeEngine: { type: 'boolean' },
      },
    },
    batching: batchingSchema,
    websocket: {
      type: 'object',
      additionalProperties: false,
      properties: {
        maxPayloadBytes: int(1024, 1024 * 1024 * 1024),
        maxBackpressureBytes: int(1024, 1024 * 1024 * 1024),
        maxInflightPerConnection: int(1, 1_000_000),
        idleTimeoutSeconds: int(0, 3600),
      },
    },
    log: {
      type: 'object',
      additionalProperties: false,
      properties: { level: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] } },
    },
    deploy: {
      type: 'object',
      additionalProperties: false,
      properties: {
        latencyBudgetMicros: int(1, 3_600_000_000),
        analysisTickMs: int(10, 3_600_000),
        analysis: {
          type: 'object',
          additionalProperties: false,
          properties: {
            minRequests: int(1, 1_000_000_000),
            maxErrorRateIncrease: { type: 'number', minimum: 0, maximum: 1 },
            maxP99Factor: { type: 'number', minimum: 1 },
            p99SlackMs: { type: 'number', minimum: 0 },
            maxScorePsi: { type: 'number', minimum: 0 },
          },
        },
      },
    },
    admin: { type: 'object', additionalProperties: false, properties: { maxModelBytes: int(1024, 64 * 1024 * 1024 * 1024) } },
    cors: {
      type: 'object',
      additionalProperties: false,
      properties: { allowedOrigins: { type: 'array', items: { type: 'string', pattern: '^(\\*|https?://[^/\\s]+)$' } } },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      properties: { maxRowsPerRequest: int(1, 100_000_000), maxConnections: { anyOf: [int(1, 10_000_000), { type: 'null' }] } },
    },
    retraining: { type: 'object', additionalProperties: { type: 'object' } },
    auth: {
      type: 'object',
      additionalProperties: false,
      properties: {
        enabled: { type: 'boolean' },
        apiKeys: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['id', 'hash', 'scopes'],
            properties: {
              id: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' },
              hash: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' },
              scopes: {
                type: 'array',
                minItems: 1,
                uniqueItems: true,
                items: { enum: ['infer', 'feedback', 'events', 'monitoring:read'] },
              },
            },
          },
        },
        metricsPublic: { type: 'boolean' },
      },
    },
    tls: {
      type: ['object', 'null'],
      additionalProperties: false,
      required: ['cert', 'key'],
      properties: { cert: { type: 'string', minLength: 1 }, key: { type: 'string', minLength: 1 } },
    },
    tracing: {
      type: 'object',
      additionalProperties: false,
      properties: {
        otlpEndpoint: { type: ['string', 'null'], pattern: '^https?://' },
        protocol: { enum: ['http/protobuf', 'http/json'] },
        sampleRatio: { type: 'number', minimum: 0, maximum: 1 },
        serviceName: { type: 'string', minLength: 1, maxLength: 256 },
        headers: { type: 'object', additionalProperties: { type: 'string' } },
        exportIntervalMs: int(10, 600_000),
      },
    },
    accessLog: {
      type: 'object',
      additionalProperties: false,
      properties: { enabled: { type: 'boolean' }, sampleRate: { type: 'number', minimum: 0, maximum: 1 } },
    },
    store: {
      type: 'object',
      additionalProperties: false,
      properties: {
        url: { type: ['string', 'null'], pattern: '^postgres(ql)?://' },
        address: { type: ['string', 'null'], minLength: 1 },
        heartbeatSeconds: { type: 'number', minimum: 0.1, maximum: 60 },
        shareSeconds: { type: 'number', minimum: 0.1, maximum: 60 },
        leaseSeconds: { type: 'number', minimum: 1, maximum: 600 },
        resyncSeconds: { type: 'number', minimum: 0.5, maximum: 3600 },
      },
    },
    monitoring: {
      type: 'object',
      additionalProperties: false,
      properties: {
        enabled: { type: 'boolean' },
        predictionLog: {
          type: 'object',
          additionalProperties: false,
          properties: {
            sampleRate: { type: 'number', minimum: 0, maximum: 1 },
            retentionDays: { type: 'number', exclusiveMinimum: 0 },
            flushMs: int(1, 60_000),
            durability: { enum: ['async', 'sync'] },
          },
        },
        sla: {
          type: 'object',
          additionalProperties: false,
          properties: {
            p95Ms: { type: ['number', 'null'], exclusiveMinimum: 0 },
            p99Ms: { type: ['number', 'null'], exclusiveMinimum: 0 },
            errorRate: { type: ['number', 'null'], minimum: 0, maximum: 1 },
            availability: { type: ['number', 'null'], minimum: 0, maximum: 1 },
          },
        },
        evaluateSeconds: { type: 'number', minimum: 0.1, maximum: 3600 },
        alerts: {
          type: 'object',
          additionalProperties: false,
          properties: {
            rules: { type: ['array', 'null'] },
            webhooks: {
              type: 'array',
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['url'],
                properties: { url: { type: 'string', pattern: '^https?://' }, timeoutMs: int(1, 600_000), retries: int(0, 20) },
              },
            },
          },
        },
        minSamples: {
          type: 'object',
          additionalProperties: false,
          properties: {
            psi: int(1, 1_000_000_000),
            auc: minClassSamplesSchema,
            accuracy: minClassSamplesSchema,
            regression: int(1, 1_000_000_000),
          },
        },
      },
    },
    features: {
      type: 'object',
      additionalProperties: false,
      properties: {
        definitions: { type: ['string', 'null'], minLength: 1 },
        redis: {
          type: ['object', 'null'],
          additionalProperties: false,
          required: ['url'],
          properties: {
            url: { type: 'string', pattern: '^rediss?://' },
            keyPrefix: { type: 'string', maxLength: 64 },
            timeoutMs: int(1, 60_000),
            breaker: {
              type: 'object',
              additionalProperties: false,
              properties: { failures: int(1, 1_000_000), probeMs: int(10, 3_600_000) },
            },
            passwordFile: { type: 'string', minLength: 1 },
          },
        },
        loadSources: { type: 'boolean' },
        embedded: {
          type: 'object',
          additionalProperties: false,
          properties: { durable: { type: 'boolean' }, memoryBytes: { anyOf: [{ type: 'null' }, int(1 << 20, 2 ** 50)] } },
        },
        cache: {
          type: 'object',
          additionalProperties: false,
          properties: {
            maxEntries: int(64, 1_000_000_000),
            maxBytes: int(65536, 1024 * 1024 * 1024 * 1024),
            ttlSeconds: int(0, 86_400 * 365),
            negativeTtlSeconds: int(0, 86_400),
            windows: { type: 'boolean' },
          },
        },
      },
    },
  },
} as const;

/** model.yaml: optional per-model settings next to the version folders. */
export interface ModelConfig {
  /** Column names of the model's single 2-D input, in order; or of several inputs, one after the other (e.g. 10 numeric columns, then a categorical BYTES one). */
  features?: string[];
  /** CSV with those columns (relative to the model folder), the drift baseline. */
  reference?: string;
  /** Label column of the reference CSV. */
  label?: string;
  batching?: Partial<BatchingConfig>;
  /**
   * Where each column's value comes from when scoring an entity: a feature (`name` or
   * `name@version`) or a request field (`request.<field>`). Columns not listed use the feature of
   * the same name.
   */
  bindings?: Record<string, string>;
  task?: 'classification' | 'regression';
  /** Decision threshold on the score (classification). */
  threshold?: number;
  /** Which output is the score: default the output `probabilities` if present, else the only output; last column. */
  score?: { output: string; index?: number };
  /** Automated retraining (src/retraining-config.ts); paths relative to the model folder. */
  retraining?: Record<string, unknown>;
}

const modelConfigSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    features: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', minLength: 1 } },
    reference: { type: 'string', minLength: 1 },
    label: { type: 'string', minLength: 1 },
    batching: batchingSchema,
    bindings: {
      type: 'object',
      additionalProperties: { type: 'string', pattern: '^(request\\.[A-Za-z_][A-Za-z0-9_]*|[a-z_][a-z0-9_]*(@[1-9][0-9]*)?)$' },
    },
    task: { enum: ['classification', 'regression'] },
    threshold: { type: 'number' },
    score: {
      type: 'object',
      additionalProperties: false,
      required: ['output'],
      properties: { output: { type: 'string', minLength: 1 }, index: { type: 'integer', minimum: 0 } },
    },
    retraining: { type: 'object' },
  },
} as const;

const validateServer = compileSchema(configSchema);
const validateModel = compileSchema<ModelConfig>(modelConfigSchema);

function describe(errors: ErrorObject[] | null | undefined, data: unknown, schema: Schema): string {
  return schemaErrors(errors, { data, schema }).join('; ');
}

/** Parses YAML or JSON text (by file extension; YAML accepts JSON too). */
export function parseConfigText(text: string, source: string): unknown {
  try {
    return extname(source).toLowerCase() === '.json' ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw configInvalid(`${source}: cannot parse: ${(e as Error).message.split('\n')[0]}`);
  }
}

function merge<T>(base: T, over: unknown): T {
  if (!isObject(over)) return (over === undefined ? base : over) as T;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isObject(b) ? merge(b, v) : v;
  }
  return out as T;
}

/** Validates a partial config (from a file, flags or code) and merges it over the defaults. */
export function resolveConfig(partial: unknown, source = 'config'): ServerConfig {
  const value = partial ?? {};
  if (!validateServer(value)) throw configInvalid(`${source} is invalid: ${describe(validateServer.errors, value, configSchema)}`);
  const config = merge(defaultConfig(), value);
  // Without definitions there is no entity scoring, so a configured store would never be read: say
  // so at start rather than serve with the store silently unused.
  if (config.features.redis !== null && config.features.definitions === null) {
    throw configInvalid(
      `${source} is invalid: features.redis is set but features.definitions is not; without feature definitions entity ` +
        'scoring is off and the store is never used: set features.definitions to the feature definitions file (YAML), or remove features.redis',
    );
  }
  const { heartbeatSeconds, leaseSeconds } = config.store;
  // The leader renews at every heartbeat: a lease shorter than two of them lapses between renewals.
  if (leaseSeconds < 2 * heartbeatSeconds) {
    throw configInvalid(
      `${source} is invalid: store.leaseSeconds (${leaseSeconds}) must be at least twice store.heartbeatSeconds (${heartbeatSeconds})`,
    );
  }
  return config;
}

export function loadConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw configInvalid(`cannot read config file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseConfigText(text, path) ?? {};
}

export function parseModelConfig(text: string, source: string): ModelConfig {
  const value = parseConfigText(text, source) ?? {};
  if (!validateModel(value)) throw configInvalid(`${source} is invalid: ${describe(validateModel.errors, value, modelConfigSchema)}`);
  const config = value as ModelConfig;
  // A bad retraining section fails the model's load, naming the field, not the first job.
  if (config.retraining !== undefined)
    parseRetrainingConfig(config.retraining, `${source}: retraining`, dirname(resolve(source)), config.label);
  return config;
}

export { merge as mergeConfig };
