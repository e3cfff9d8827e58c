// API keys on the data plane: the keys the server accepts (auth.apiKeys, stored as SHA-256 digests,
// plus SCORELINE_API_KEYS, hashed as it is read), each with an id and scopes; checking a request's
// key (Authorization: Bearer <key>, or x-api-key) and scope; and making new keys for
// `scoreline keys create`. A key is never stored, logged or echoed: only its id is.
//
// SHA-256, not a password hash (scrypt, argon2): keys made here are 256 random bits, so a stolen
// digest cannot be searched back to its key whatever the hash costs, and a slow hash would put tens
// of milliseconds of CPU on every request (and hand anyone with a bad key a way to burn it).
// Keys given in SCORELINE_API_KEYS must be at least MIN_KEY_LENGTH characters for the same reason.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { API_KEY_SCOPES, type ApiKeyScope, type AuthConfig, type ServerConfig } from '../config.js';
import { apiKeyInvalid, apiKeyRequired, configInvalid, scopeMissing } from '../errors.js';

export const MIN_KEY_LENGTH = 24;
const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
/** Generated keys: a recognisable prefix (secret scanners look for it) and 32 random bytes. */
const KEY_PREFIX = 'slk_';

export interface ApiKey {
  readonly id: string;
  readonly scopes: ReadonlySet<ApiKeyScope>;
}

interface Entry extends ApiKey {
  readonly digest: Buffer;
}

const sha256 = (key: string): Buffer => createHash('sha256').update(key, 'utf8').digest();

/** The stored form of a key: `sha256:<hex>`. */
export const hashKey = (key: string): string => `sha256:${sha256(key).toString('hex')}`;

/** A new random key. */
export const generateKey = (): string => KEY_PREFIX + randomBytes(32).toString('base64url');

function parseScopes(raw: readonly string[], where: string): Set<ApiKeyScope> {
  if (raw.length === 0) throw configInvalid(`${where}: needs at least one scope (${API_KEY_SCOPES.join(', ')})`);
  const out = new Set<ApiKeyScope>();
  for (const s of raw) {
    if (!(API_KEY_SCOPES as readonly string[]).includes(s))
      throw configInvalid(`${where}: unknown scope '${s}' (scopes: ${API_KEY_SCOPES.join(', ')})`);
    out.add(s as ApiKeyScope);
  }
  return out;
}

/**
 * SCORELINE_API_KEYS: `id:key:scope1+scope2,...`. Errors name the entry and its id, never the key.
 */
export function parseEnvKeys(text: string): { id: string; key: string; scopes: Set<ApiKeyScope> }[] {
  const out: { id: string; key: string; scopes: Set<ApiKeyScope> }[] = [];
  const entries = text
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  entries.forEach((entry, i) => {
    // id and key hold no ':'; the rest is the scopes, one of which (monitoring:read) has a colon itself.
    const a = entry.indexOf(':');
    const b = a < 0 ? -1 : entry.indexOf(':', a + 1);
    const where = `SCORELINE_API_KEYS entry ${i + 1}`;
    if (b < 0 || b === entry.length - 1) throw configInvalid(`${where}: must be id:key:scope1+scope2 (the key may not contain ':' or ',')`);
    const id = entry.slice(0, a);
    const key = entry.slice(a + 1, b);
    const scopes = entry.slice(b + 1);
    if (!ID_PATTERN.test(id)) throw configInvalid(`${where}: the id must be 1-64 letters, digits, '.', '_' or '-'`);
    if (key.length < MIN_KEY_LENGTH)
      throw configInvalid(
        `${where} (id '${id}'): the key is shorter than ${MIN_KEY_LENGTH} characters; make one with \`scoreline keys create\``,
      );
    out.push({ id, key, scopes: parseScopes(scopes.split('+'), `${where} (id '${id}')`) });
  });
  return out;
}

export type Refusal = 'missing' | 'invalid' | 'scope';

export class ApiKeys {
  /** By digest: a lookup by the SHA-256 of what the client sent, whose timing tells nothing about any stored key. */
  private readonly byDigest = new Map<string, Entry>();
  readonly refusals: Record<Refusal, number> = { missing: 0, invalid: 0, scope: 0 };

  constructor(entries: readonly { id: string; digest: Buffer; scopes: ReadonlySet<ApiKeyScope> }[]) {
    const ids = new Set<string>();
    for (const e of entries) {
      if (ids.has(e.id))
        throw configInvalid(`API key id '${e.id}' is defined twice (auth.apiKeys and SCORELINE_API_KEYS share one namespace)`);
      ids.add(e.id);
      const hex = e.digest.toString('hex');
      const other = this.byDigest.get(hex);
      if (other !== undefined) throw configInvalid(`API keys '${other.id}' and '${e.id}' are the same key`);
      this.byDigest.set(hex, { id: e.id, digest: e.digest, scopes: e.scopes });
    }
  }

  /** The server's keys: auth.apiKeys plus the environment's. */
  static fromConfig(auth: AuthConfig, env: string | undefined): ApiKeys {
    const entries: { id: string; digest: Buffer; scopes: ReadonlySet<ApiKeyScope> }[] = auth.apiKeys.map((k) => ({
      id: k.id,
      digest: Buffer.from(k.hash.slice('sha256:'.length), 'hex'),
      scopes: parseScopes(k.scopes, `auth.apiKeys '${k.id}'`),
    }));
    for (const k of parseEnvKeys(env ?? '')) entries.push({ id: k.id, digest: sha256(k.key), scopes: k.scopes });
    return new ApiKeys(entries);
  }

  /**
   * The keys a server checks: null when auth is off (with a warning if keys are configured anyway);
   * refuses auth on without a key, which would lock everyone out.
   */
  static forServer(config: ServerConfig, env: string | undefined, serverLog: Logger): ApiKeys | null {
    const log = serverLog.child({ component: 'auth' });
    const keys = ApiKeys.fromConfig(config.auth, env);
    if (!config.auth.enabled) {
      if (keys.size > 0)
        log.warn(
          { keys: keys.ids },
          'API keys are configured but auth.enabled is false: the data plane is open to anyone who reaches the port',
        );
      return null;
    }
    if (keys.size === 0)
      throw configInvalid(
        'auth.enabled is true but no API key is configured (auth.apiKeys or SCORELINE_API_KEYS); make one with `scoreline keys create`',
      );
    log.info({ keys: keys.ids, metricsPublic: config.auth.metricsPublic }, 'API keys required on the data plane');
    return keys;
  }

  get size(): number {
    return this.byDigest.size;
  }

  get ids(): string[] {
    return [...this.byDigest.values()].map((e) => e.id);
  }

  /**
   * The key a request presents: `Authorization: Bearer <key>` or `x-api-key: <key>` (header values as
   * uWS gives them, '' when absent). Throws 401 when there is none or it is not a key of this server.
   */
  authenticate(authorization: string, xApiKey: string): ApiKey {
    let key = xApiKey;
    if (key === '' && authorization !== '') {
      const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
      if (m === null) {
        this.refusals.invalid++;
        throw apiKeyInvalid('the Authorization header must be "Bearer <API key>"');
      }
      key = m[1]!;
    }
    if (key === '') {
      this.refusals.missing++;
      throw apiKeyRequired();
    }
    const digest = sha256(key);
    const entry = this.byDigest.get(digest.toString('hex'));
    // Compared in constant time as well, so nothing rests on how the map finds its entries.
    if (entry === undefined || !timingSafeEqual(digest, entry.digest)) {
      this.refusals.invalid++;
      throw apiKeyInvalid();
    }
    return entry;
  }

  /** Both steps for a transport that has the header values at hand (gRPC metadata): 401, 403 or the key. */
  check(authorization: string, xApiKey: string, scope: ApiKeyScope): ApiKey {
    const key = this.authenticate(authorization, xApiKey);
    this.authorize(key, scope);
    return key;
  }

  /** Throws 403 when `key` lacks `scope`. */
  authorize(key: ApiKey, scope: ApiKeyScope): void {
    if (!key.scopes.has(scope)) {
      this.refusals.scope++;
      throw scopeMissing(key.id, scope);
    }
  }
}
