// docker-compose.yml, checked without a Docker engine: parsed as Compose reads it (YAML merge keys,
// ${VAR:-default} interpolation), every service has an image (built from this Dockerfile for
// scoreline), every depends_on names a service that can satisfy its condition, the store and Redis
// URLs point at the services that exist on the ports they listen on with the credentials they
// create, the replicas' config and command pass the real validator and CLI, the nginx proxy
// round-robins over exactly the three replicas on their HTTP and gRPC ports, and Prometheus's config
// passes `promtool check config` and scrapes each replica. Then one replica and the features loader
// run as the file configures them, against a real PostgreSQL and Redis.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { serveConfig } from '../src/cli.js';
import { loadConfigFile, resolveConfig } from '../src/config.js';
import { storeUrl } from '../src/store/index.js';
import { postgresSkip, startPostgres } from './fixtures/postgres.js';
import { redisAvailable, startRedis } from './e2e/redis.js';
import { CLI, request, ROOT, startServer } from './e2e/server.js';

type Obj = Record<string, any>;

const composeText = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');

/** Compose's interpolation of the forms the file may use: $$, ${VAR}, ${VAR:-default}. */
function interpolate(text: string, env: Record<string, string>): string {
  return text.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}/g,
    (m, name: string | undefined, def: string | undefined) => {
      if (m === '$$') return '$';
      assert.ok(name !== undefined, `${m}: an interpolation form this test does not know (only \${VAR} and \${VAR:-default})`);
      const v = env[name];
      return v !== undefined && v !== '' ? v : (def ?? '');
    },
  );
}

function load(env: Record<string, string> = {}): Obj {
  const doc = YAML.parseDocument(interpolate(composeText, env), { merge: true });
  assert.deepEqual(
    doc.errors.map((e) => e.message),
    [],
  );
  return doc.toJS() as Obj;
}

const compose = load();
const services = compose.services as Record<string, Obj>;
const names = Object.keys(services);
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const IMAGE = /docker build -t (scoreline:\S+) \./.exec(dockerfile)![1]!;
const replicas = names.filter((n) => services[n]!.command?.[0] === 'serve').sort();

const dependsOn = (s: Obj): Record<string, string> =>
  Array.isArray(s.depends_on)
    ? Object.fromEntries(s.depends_on.map((d: string) => [d, 'service_started']))
    : Object.fromEntries(Object.entries(s.depends_on ?? {}).map(([k, v]) => [k, (v as Obj).condition ?? 'service_started']));

/** A bind mount's repository file for a container path, checked to exist. */
function bindSource(service: string, target: string): string {
  const v = (services[service]!.volumes as string[]).find((x) => x.split(':')[1] === target);
  assert.ok(v, `${service} mounts ${target}`);
  const [source, , mode] = v.split(':');
  assert.ok(source!.startsWith('./'), `${service}: ${target} comes from the repository`);
  assert.equal(mode, 'ro', `${service}: ${target} is read-only`);
  const file = join(ROOT, source!);
  assert.ok(existsSync(file), `${source} exists`);
  return file;
}

/** Container paths of the image (WORKDIR /app) mapped onto this checkout, as the Dockerfile copies them. */
const inImage = (p: string) => {
  assert.ok(p.startsWith('/app/examples/'), p);
  assert.match(
    dockerfile,
    new RegExp(`^COPY --from=build /app/examples/${p.split('/')[3]} examples/${p.split('/')[3]}$`, 'm'),
    `the image carries ${p}`,
  );
  return join(ROOT, p.slice('/app/'.length));
};

const replicaConfigFile = bindSource('scoreline-1', '/etc/scoreline/scoreline.yaml');
const replicaConfig = resolveConfig(loadConfigFile(replicaConfigFile), 'deploy/compose/scoreline.yaml');

test("every service has an image; scoreline's is built from this Dockerfile with its tag", () => {
  assert.deepEqual(names.sort(), [
    'features-load',
    'postgres',
    'prometheus',
    'proxy',
    'redis',
    'scoreline-1',
    'scoreline-2',
    'scoreline-3',
  ]);
  for (const [name, s] of Object.entries(services)) {
    assert.ok(typeof s.image === 'string' && /^[a-z0-9./-]+:[\w.-]+$/.test(s.image), `${name} names a tagged image`);
    assert.ok(!s.image.endsWith(':latest'), `${name}: a tag that does not move`);
    if (s.build !== undefined) {
      const context = typeof s.build === 'string' ? s.build : s.build.context;
      assert.ok(existsSync(join(ROOT, context, 'Dockerfile')), `${name} builds from a Dockerfile`);
      assert.equal(s.image, IMAGE, `${name} tags the build as the Dockerfile says`);
    }
    if (s.image === IMAGE) assert.equal(s.build, '.', `${name} can be built here, not pulled`);
  }
  assert.deepEqual(replicas, ['scoreline-1', 'scoreline-2', 'scoreline-3']);
  assert.match(composeText, /^# .*three replicas/m, 'the file starts by saying what it runs');
});

test('depends_on names services that exist and can meet the condition; no cycle', () => {
  const healthy = (n: string) =>
    services[n]!.healthcheck !== undefined || (services[n]!.image === IMAGE && /^HEALTHCHECK /m.test(dockerfile));
  for (const [name, s] of Object.entries(services)) {
    for (const [dep, condition] of Object.entries(dependsOn(s))) {
      assert.ok(dep in services, `${name} depends on ${dep}, which exists`);
      assert.ok(
        ['service_started', 'service_healthy', 'service_completed_successfully'].includes(condition),
        `${name} -> ${dep}: ${condition}`,
      );
      if (condition === 'service_healthy') assert.ok(healthy(dep), `${dep} has a healthcheck for ${name} to wait on`);
      if (condition === 'service_completed_successfully') assert.equal(services[dep]!.restart, 'no', `${dep} runs once`);
    }
  }
  const order: string[] = [];
  const visit = (n: string, path: string[]) => {
    assert.ok(!path.includes(n), `a depends_on cycle: ${[...path, n].join(' -> ')}`);
    if (order.includes(n)) return;
    for (const d of Object.keys(dependsOn(services[n]!))) visit(d, [...path, n]);
    order.push(n);
  };
  for (const n of names) visit(n, []);
  for (const r of replicas) {
    assert.deepEqual(dependsOn(services[r]!), {
      postgres: 'service_healthy',
      redis: 'service_healthy',
      'features-load': 'service_completed_successfully',
    });
  }
  assert.deepEqual(Object.keys(dependsOn(services.proxy!)).sort(), replicas);
  assert.deepEqual(Object.keys(dependsOn(services.prometheus!)).sort(), replicas);
});

test('the store URL points at the postgres service, on its port, with the user, database and password it creates', () => {
  for (const env of [{}, { POSTGRES_PASSWORD: 'from-the-env' }] as Record<string, string>[]) {
    const c = load(env);
    const pgEnv = c.services.postgres.environment as Obj;
    const urls = replicas.map((r) => c.services[r].environment.SCORELINE_STORE_URL as string);
    assert.equal(new Set(urls).size, 1, 'one store for all replicas');
    const u = new URL(urls[0]!);
    assert.equal(u.protocol, 'postgres:');
    assert.equal(u.hostname, 'postgres');
    assert.match(c.services[u.hostname].image, /^postgres:\d+/);
    assert.equal(u.port, '5432', 'the postgres image listens on 5432');
    assert.equal(pgEnv.PGPORT, undefined);
    assert.equal(u.username, pgEnv.POSTGRES_USER);
    assert.equal(u.pathname.slice(1), pgEnv.POSTGRES_DB);
    assert.equal(decodeURIComponent(u.password), pgEnv.POSTGRES_PASSWORD, 'the password the server was created with');
    assert.equal(pgEnv.POSTGRES_PASSWORD, env.POSTGRES_PASSWORD ?? 'scoreline-demo', 'a password from the environment reaches both');
    // The replicas' config names no store of its own, so the variable is what they use.
    assert.equal(storeUrl(replicaConfig.store.url, { SCORELINE_STORE_URL: urls[0]! }), urls[0]);
  }
  const hc = services.postgres!.healthcheck.test as string[];
  assert.deepEqual(hc.slice(0, 2), ['CMD', 'pg_isready']);
  assert.equal(hc[hc.indexOf('-U') + 1], services.postgres!.environment.POSTGRES_USER);
});

test("the replicas run the checked-in config: Redis at the redis service's port, HTTP 8080, gRPC 8081; each its own data volume", () => {
  const redisUrl = new URL(replicaConfig.features.redis!.url);
  assert.ok(redisUrl.hostname in services, `${redisUrl.hostname} is a service`);
  const redis = services[redisUrl.hostname]!;
  assert.match(redis.image, /^redis:\d/);
  const redisArgs = redis.command as string[];
  const redisPort = redisArgs.includes('--port') ? redisArgs[redisArgs.indexOf('--port') + 1] : '6379';
  assert.equal(redisUrl.port || '6379', redisPort);
  assert.equal(redis.healthcheck.test.join(' '), 'CMD redis-cli ping');
  assert.equal(replicaConfig.store.url, null);
  assert.ok(existsSync(inImage(replicaConfig.features.definitions!)), "the definitions are the image's");

  const dataVolumes = new Set<string>();
  for (const r of replicas) {
    const s = services[r]!;
    assert.equal(s.hostname, r, `${r}: the name others reach it by is the address it reports`);
    assert.equal(bindSource(r, '/etc/scoreline/scoreline.yaml'), replicaConfigFile, 'one config for all');
    const data = (s.volumes as string[]).find((v) => v.endsWith(':/data'))!;
    assert.ok(data, `${r} has a data volume`);
    const volume = data.split(':')[0]!;
    assert.ok(volume in compose.volumes, `${volume} is a named volume`);
    dataVolumes.add(volume);
    // The command through the real CLI, with the image's paths on this checkout.
    const args = (s.command as string[])
      .slice(1)
      .map((a) => (a === '/etc/scoreline/scoreline.yaml' ? replicaConfigFile : a.startsWith('/app/') ? inImage(a) : a));
    const parsed = serveConfig(args)!;
    assert.ok(parsed);
    assert.equal(parsed.server.port, 8080);
    assert.equal(parsed.server.host, '0.0.0.0', 'reachable from the proxy and Prometheus');
    assert.equal(parsed.grpc.port, 8081);
    assert.equal(parsed.dataDir, '/data');
    assert.equal(parsed.modelRepository, join(ROOT, 'examples', 'models'));
    assert.equal(s.ports, undefined, `${r} is reached through the proxy only`);
  }
  assert.equal(dataVolumes.size, 3, 'no data dir is shared');

  const load = services['features-load']!;
  const cmd = load.command as string[];
  assert.deepEqual(cmd.slice(0, 2), ['features', 'materialize']);
  assert.equal(cmd[cmd.indexOf('--config') + 1], '/etc/scoreline/scoreline.yaml');
  assert.equal(bindSource('features-load', '/etc/scoreline/scoreline.yaml'), replicaConfigFile);
  assert.ok(existsSync(inImage(cmd[cmd.indexOf('--from') + 1]!)));
});

test('the nginx proxy round-robins HTTP and gRPC over exactly the three replicas', () => {
  const conf = readFileSync(bindSource('proxy', '/etc/nginx/nginx.conf'), 'utf8').replace(/#.*$/gm, '');
  assert.equal((conf.match(/\{/g) ?? []).length, (conf.match(/\}/g) ?? []).length, 'braces balance');
  const upstreams = new Map([...conf.matchAll(/upstream\s+(\w+)\s*\{([^}]*)\}/g)].map((m) => [m[1]!, m[2]!]));
  const servers = (name: string) => [...upstreams.get(name)!.matchAll(/^\s*server\s+(\S+)/gm)].map((m) => m[1]!).sort();
  const http = /proxy_pass\s+http:\/\/(\w+);/.exec(conf)![1]!;
  const grpc = /grpc_pass\s+grpc:\/\/(\w+);/.exec(conf)![1]!;
  assert.deepEqual(
    servers(http),
    replicas.map((r) => `${r}:${replicaConfig.server.port}`),
  );
  assert.deepEqual(
    servers(grpc),
    replicas.map((r) => `${r}:${replicaConfig.grpc.port}`),
  );
  for (const body of upstreams.values()) assert.doesNotMatch(body, /\b(ip_hash|least_conn|hash|random)\b/, "round robin, nginx's default");
  assert.match(conf, /listen\s+8080;/);
  assert.match(conf, /listen\s+8081;\s+http2\s+on;/, 'HTTP/2 on the gRPC port (nginx 1.25.1+ syntax)');
  assert.match(services.proxy!.image, /^nginx:1\.(2[5-9]|[3-9]\d)/, 'an nginx that knows `http2 on`');
  assert.match(conf, /proxy_http_version\s+1\.1;/, 'uWebSockets.js needs HTTP/1.1 upstream');
  assert.match(conf, /proxy_set_header\s+Upgrade\s+\$http_upgrade;/, 'the WebSocket passes');
  assert.deepEqual(services.proxy!.ports, ['8080:8080', '8081:8081']);
  assert.match(
    readFileSync(join(ROOT, 'deploy', 'compose', 'nginx.conf'), 'utf8'),
    /a label joins on any replica,\s+# since each ships its prediction log to PostgreSQL/,
    'the proxy says where feedback lands',
  );
});

test('Prometheus scrapes /metrics of each replica; promtool check config passes', (t) => {
  const file = bindSource('prometheus', '/etc/prometheus/prometheus.yml');
  const prom = YAML.parse(readFileSync(file, 'utf8')) as Obj;
  const jobs = prom.scrape_configs as Obj[];
  const job = jobs.find((j) => j.job_name === 'scoreline')!;
  assert.ok(job, 'a scoreline job');
  assert.equal(job.metrics_path ?? '/metrics', '/metrics');
  const targets = (job.static_configs as Obj[]).flatMap((s) => s.targets as string[]).sort();
  assert.deepEqual(
    targets,
    replicas.map((r) => `${r}:${replicaConfig.server.port}`),
    'each replica directly, not the proxy',
  );
  assert.ok(replicaConfig.auth.metricsPublic || !replicaConfig.auth.enabled, 'the scrape carries no key, so /metrics must be open');

  if (spawnSync('sh', ['-c', 'command -v promtool']).status !== 0) {
    if (process.env.CI) assert.fail('promtool is missing: .ci/run installs the Debian package prometheus');
    t.skip('promtool not installed (apt-get install prometheus)');
    return;
  }
  const r = spawnSync('promtool', ['check', 'config', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout + r.stderr, /SUCCESS/);
  // The check has teeth: a broken copy fails it.
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-compose-prom-'));
  try {
    const bad = join(dir, 'prometheus.yml');
    writeFileSync(bad, readFileSync(file, 'utf8').replace('scrape_interval: 15s', 'scrape_interval: fifteen'));
    assert.notEqual(spawnSync('promtool', ['check', 'config', bad]).status, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const runSkip = postgresSkip() || (!redisAvailable() && 'redis-server is not installed');
test("run as configured: features-load fills Redis, and a replica with the file's command, config and store URL scores from it and leads", {
  skip: runSkip,
  timeout: 120_000,
}, async () => {
  const pg = await startPostgres();
  const redis = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-compose-run-'));
  try {
    // The service names resolve to this machine's servers; everything else is the file's.
    const raw = loadConfigFile(replicaConfigFile) as Obj;
    raw.features.redis.url = redis.url;
    raw.features.definitions = inImage(raw.features.definitions);
    const config = join(dir, 'scoreline.yaml');
    writeFileSync(config, YAML.stringify(raw));
    const mapArgs = (cmd: string[]) =>
      cmd.map((a) =>
        a === '/etc/scoreline/scoreline.yaml' ? config : a === '/data' ? join(dir, 'data') : a.startsWith('/app/') ? inImage(a) : a,
      );
    const m = spawnSync(process.execPath, [CLI, ...mapArgs(services['features-load']!.command)], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(m.status, 0, m.stderr + m.stdout);
    assert.ok(Number(redis.cli('dbsize')) > 0, 'the customers are in Redis');

    const url = new URL(services['scoreline-1']!.environment.SCORELINE_STORE_URL);
    assert.equal(`${url.hostname}:${url.port}`, 'postgres:5432');
    const server = await startServer(mapArgs(services['scoreline-1']!.command).slice(1), {
      SCORELINE_STORE_URL: pg.url,
      SCORELINE_ADMIN_TOKEN: 'compose-test-token',
    });
    try {
      const r = await request(`${server.url}/v1/score/credit-default`, {
        json: { entity: { customer_id: 'C00042' }, context: { amount: 5200, duration_months: 24 }, debug: true },
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.features['income@1'].status, 'present', "the customer's features come from Redis");
      const cluster = await request(`${server.url}/admin/cluster`, { headers: { authorization: 'Bearer compose-test-token' } });
      assert.equal(cluster.status, 200, cluster.text);
      assert.equal(cluster.body.replicas.length, 1);
      assert.equal(cluster.body.leader, cluster.body.replicas[0].id, 'the one replica on the store leads');
      const models = await pg.query<{ name: string }>('SELECT DISTINCT model AS name FROM versions ORDER BY 1');
      assert.deepEqual(
        models.map((x) => x.name),
        ['credit-default', 'credit-purpose'],
        "the image's repository was imported into the store",
      );
    } finally {
      await server.stop();
    }
  } finally {
    await redis.kill();
    await pg.remove();
    rmSync(dir, { recursive: true, force: true });
  }
});
