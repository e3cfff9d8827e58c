// The Kubernetes manifests of deploy/kubernetes, parsed with the `yaml` package and checked as a
// cluster would use them: kinds and apiVersions, probes on the OIP health paths, resources, scrape
// annotations, a non-root read-only pod, a grace period that covers the server's drain, the
// ConfigMap's config through the real validator and the Deployment's args through the real CLI,
// selectors that match, and a kustomization that lists exactly the manifests present. NetworkPolicies
// admit only what they should; Redis requires the password of a Secret that scoreline reads as a
// file; and Redis and scoreline are run as the manifests configure them (args, config, definitions).
// The replicas share PostgreSQL, not a volume: the store URL comes from a Secret whose example
// agrees with the PostgreSQL StatefulSet (user, database, password, Service, port), each pod's data
// dir is an emptyDir, and no claim anywhere asks for ReadWriteMany.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { serveConfig } from '../src/cli.js';
import { resolveConfig } from '../src/config.js';
import { storeUrl } from '../src/store/index.js';
import { parseFeatureDefinitions } from '../src/features/index.js';
import { parseEnvKeys } from '../src/server/api-keys.js';
import { accessOf } from '../src/server/gate.js';
import { redisAvailable } from './e2e/redis.js';
import { CLI, request, ROOT, startServer } from './e2e/server.js';
import { waitFor } from './fixtures/wait.js';

type Obj = Record<string, any>;

const DIR = join(ROOT, 'deploy', 'kubernetes');
const files = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
  .sort();

function load(file: string): Obj[] {
  const docs = YAML.parseAllDocuments(readFileSync(join(DIR, file), 'utf8'));
  return (Array.isArray(docs) ? docs : [docs])
    .map((d) => {
      assert.deepEqual(
        d.errors.map((e) => e.message),
        [],
        `${file} parses`,
      );
      return d.toJS() as Obj;
    })
    .filter((d) => d !== null);
}

const docs = new Map(files.map((f) => [f, load(f)]));
const all: Obj[] = [...docs.entries()].flatMap(([file, ds]) => ds.map((d): Obj => ({ file, ...d })));
const find = (kind: string, name: string): Obj => {
  const d = all.find((x) => x.kind === kind && x.metadata?.name === name);
  assert.ok(d, `${kind}/${name} is defined`);
  return d;
};

const deployment = find('Deployment', 'scoreline');
const pod = deployment.spec.template;
const container = pod.spec.containers.find((c: Obj) => c.name === 'scoreline') as Obj;
const configMap = find('ConfigMap', 'scoreline-config');
const configText = configMap.data['config.yaml'] as string;

/** Kubernetes CPU quantity in cores ("2", "500m"). */
const cores = (q: string | number): number => (typeof q === 'number' ? q : q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q));
/** Kubernetes memory quantity in bytes (Ki/Mi/Gi or plain). */
function bytes(q: string): number {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(q);
  assert.ok(m, `memory quantity ${q}`);
  return Number(m[1]) * ({ Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[m[2] as 'Ki'] ?? 1);
}
const matches = (selector: Obj, labels: Obj) => Object.entries(selector).every(([k, v]) => labels[k] === v);

test('every manifest parses, with the expected kinds and apiVersions', () => {
  const seen = all.map((d) => `${d.file}: ${d.apiVersion} ${d.kind}/${d.metadata?.name ?? ''}`).sort();
  assert.deepEqual(
    seen,
    [
      'kustomization.yaml: kustomize.config.k8s.io/v1beta1 Kustomization/',
      'redis.yaml: apps/v1 Deployment/scoreline-redis',
      'redis.yaml: v1 PersistentVolumeClaim/scoreline-redis-data',
      'redis.yaml: v1 Service/scoreline-redis',
      'scoreline-configmap.yaml: v1 ConfigMap/scoreline-config',
      'postgres.yaml: apps/v1 StatefulSet/scoreline-postgres',
      'postgres.yaml: v1 Service/scoreline-postgres',
      'scoreline-deployment.yaml: apps/v1 Deployment/scoreline',
      'scoreline-hpa.yaml: autoscaling/v2 HorizontalPodAutoscaler/scoreline',
      'scoreline-networkpolicy.yaml: networking.k8s.io/v1 NetworkPolicy/scoreline',
      'scoreline-networkpolicy.yaml: networking.k8s.io/v1 NetworkPolicy/scoreline-postgres',
      'scoreline-networkpolicy.yaml: networking.k8s.io/v1 NetworkPolicy/scoreline-redis',
      'scoreline-pdb.yaml: policy/v1 PodDisruptionBudget/scoreline',
      'scoreline-postgres-secret.example.yaml: v1 Secret/scoreline-postgres',
      'scoreline-postgres-secret.example.yaml: v1 Secret/scoreline-store',
      'scoreline-redis-secret.example.yaml: v1 Secret/scoreline-redis',
      'scoreline-secret.example.yaml: v1 Secret/scoreline-admin',
      'scoreline-secret.example.yaml: v1 Secret/scoreline-api-keys',
      'scoreline-service.yaml: v1 Service/scoreline',
      'scoreline-servicemonitor.yaml: monitoring.coreos.com/v1 ServiceMonitor/scoreline',
    ].sort(),
  );
  for (const file of files) assert.match(readFileSync(join(DIR, file), 'utf8'), /^# /, `${file} starts with a comment saying what it is`);
});

test('the kustomization lists exactly the manifests present, not the example secrets nor the opt-in ServiceMonitor', () => {
  const k = docs.get('kustomization.yaml')![0]!;
  const resources = [...(k.resources as string[])].sort();
  const manifests = files.filter((f) => f !== 'kustomization.yaml' && !f.includes('.example.') && f !== 'scoreline-servicemonitor.yaml');
  assert.deepEqual(resources, manifests);
  assert.equal(new Set(k.resources).size, k.resources.length, 'no resource listed twice');
  assert.ok(!resources.some((r) => r.includes('example')), 'applying the kustomization never installs the placeholder token');
  const text = readFileSync(join(DIR, 'kustomization.yaml'), 'utf8');
  assert.match(text, /scoreline-servicemonitor\.yaml is opt-in/, 'the kustomization says how to add the ServiceMonitor');
  for (const secret of ['scoreline-admin', 'scoreline-redis', 'scoreline-postgres', 'scoreline-store'])
    assert.match(text, new RegExp(`kubectl create secret generic ${secret} `));
});

test('the container serves HTTP on 8080 and gRPC on 8081, and is probed on the OIP health paths', () => {
  assert.equal(container.image, 'scoreline:0.1.0');
  assert.deepEqual(container.ports, [
    { name: 'http', containerPort: 8080, protocol: 'TCP' },
    { name: 'grpc', containerPort: 8081, protocol: 'TCP' },
  ]);
  const probe = (p: Obj) => ({ path: p.httpGet.path, port: p.httpGet.port });
  assert.deepEqual(probe(container.readinessProbe), { path: '/v2/health/ready', port: 'http' });
  assert.deepEqual(probe(container.livenessProbe), { path: '/v2/health/live', port: 'http' });
  assert.deepEqual(probe(container.startupProbe), { path: '/v2/health/live', port: 'http' });
  // Readiness reacts faster than liveness; warm-up gets minutes before liveness may restart the pod.
  assert.ok(container.readinessProbe.periodSeconds < container.livenessProbe.periodSeconds);
  assert.ok(container.livenessProbe.failureThreshold >= 3);
  const startupBudget = container.startupProbe.periodSeconds * container.startupProbe.failureThreshold;
  assert.ok(startupBudget >= 120, `startup budget ${startupBudget} s`);
  for (const p of [container.readinessProbe, container.livenessProbe, container.startupProbe]) {
    assert.ok(p.timeoutSeconds >= 1 && p.timeoutSeconds < p.periodSeconds + 1);
  }
});

test('requests and limits for CPU and memory; the config runs cores - 1 workers', () => {
  const { requests, limits } = container.resources as Obj;
  for (const r of ['cpu', 'memory']) {
    assert.ok(requests[r] !== undefined && limits[r] !== undefined, `${r} request and limit`);
  }
  assert.ok(cores(limits.cpu) >= cores(requests.cpu));
  assert.ok(bytes(limits.memory) >= bytes(requests.memory));
  const config = resolveConfig(YAML.parse(configText));
  assert.equal(config.inference.workers, cores(limits.cpu) - 1);
  assert.ok(config.inference.workers * config.inference.intraOpThreads <= cores(limits.cpu));
  // The declared memory budget covers the V8 heap cap and the native cache.
  const heap = /--max-old-space-size=(\d+)/.exec(container.env.find((e: Obj) => e.name === 'NODE_OPTIONS').value)!;
  assert.ok(Number(heap[1]) * 1024 ** 2 + config.features.cache.maxBytes < bytes(limits.memory));
  assert.match(readFileSync(join(DIR, 'scoreline-deployment.yaml'), 'utf8'), /workers is cores - 1/, 'the numbers are explained');
});

test('pods carry the Prometheus scrape annotations for the container port and /metrics', () => {
  assert.deepEqual(pod.metadata.annotations, {
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': '8080',
    'prometheus.io/path': '/metrics',
  });
  assert.equal(Number(pod.metadata.annotations['prometheus.io/port']), container.ports[0].containerPort);
});

test("the pod runs as the image's node user, read-only, without capabilities", () => {
  const ps = pod.spec.securityContext as Obj;
  assert.equal(ps.runAsNonRoot, true);
  assert.equal(ps.runAsUser, 1000);
  assert.equal(ps.fsGroup, 1000);
  const cs = container.securityContext as Obj;
  assert.equal(cs.runAsNonRoot, true);
  assert.equal(cs.allowPrivilegeEscalation, false);
  assert.equal(cs.readOnlyRootFilesystem, true);
  assert.deepEqual(cs.capabilities.drop, ['ALL']);
  assert.equal(cs.capabilities.add, undefined);
  const tmp = container.volumeMounts.find((m: Obj) => m.mountPath === '/tmp');
  assert.ok(tmp, '/tmp is writable');
  assert.ok(pod.spec.volumes.find((v: Obj) => v.name === tmp.name).emptyDir, '/tmp is an emptyDir');
  // The only other writable mount is the data dir, and nothing a pod writes is shared with another pod.
  const writable = container.volumeMounts.filter((m: Obj) => !m.readOnly);
  assert.deepEqual(writable.map((m: Obj) => m.mountPath).sort(), ['/data', '/tmp']);
  for (const m of writable) assert.ok(pod.spec.volumes.find((v: Obj) => v.name === m.name).emptyDir, `${m.mountPath} is an emptyDir`);
});

test('shutdown: preStop sleep, then the server drains within the grace period; rollouts keep capacity', () => {
  const config = resolveConfig(YAML.parse(configText));
  const preStop = container.lifecycle.preStop.exec.command as string[];
  assert.equal(preStop[0], 'sleep');
  const sleep = Number(preStop[1]);
  assert.ok(sleep >= 3, 'endpoints get time to be removed before SIGTERM');
  assert.equal(config.server.shutdownTimeoutMs, 10_000);
  assert.ok(
    pod.spec.terminationGracePeriodSeconds > sleep + config.server.shutdownTimeoutMs / 1000,
    `grace ${pod.spec.terminationGracePeriodSeconds} s > preStop ${sleep} s + drain ${config.server.shutdownTimeoutMs / 1000} s`,
  );
  assert.deepEqual(deployment.spec.strategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } });
  assert.equal(deployment.spec.replicas, undefined, 'the HPA owns the replica count');
});

test("the ConfigMap's config passes the real validator and the Deployment's args parse with the real CLI", () => {
  const raw = YAML.parse(configText) as Obj;
  const config = resolveConfig(raw, 'scoreline-configmap.yaml');
  assert.equal(config.features.redis?.url, 'redis://scoreline-redis:6379');
  // With a store there must be definitions (else the store is never used, and the config is refused).
  assert.equal(config.features.definitions, 'features.yaml');
  assert.throws(
    () => resolveConfig({ ...raw, features: { ...raw.features, definitions: null } }),
    /features\.redis is set but features\.definitions is not/,
  );
  assert.equal(config.server.port, 8080);
  assert.equal(config.log.level, 'info');
  for (const key of ['server', 'inference', 'batching', 'features', 'log']) assert.ok(key in raw, `${key} is set explicitly`);

  const args = container.args as string[];
  assert.deepEqual(args, [
    'serve',
    '--config',
    '/etc/scoreline/config.yaml',
    '--model-repo',
    '/app/examples/models',
    '--data-dir',
    '/data',
  ]);
  // The repository is the one the image carries (the Dockerfile's WORKDIR is /app).
  const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  assert.match(dockerfile, /^WORKDIR \/app$/m);
  assert.match(dockerfile, /^COPY --from=build \/app\/examples\/models examples\/models$/m);
  // The config file is where the ConfigMap is mounted.
  const mount = container.volumeMounts.find((m: Obj) => m.name === 'config');
  const volume = pod.spec.volumes.find((v: Obj) => v.name === 'config');
  assert.equal(volume.configMap.name, 'scoreline-config');
  const item = volume.configMap.items.find((i: Obj) => i.key === 'config.yaml');
  assert.equal(`${mount.mountPath}/${item.path}`, '/etc/scoreline/config.yaml');
  assert.equal(mount.readOnly, true);

  const dir = mkdtempSync(join(tmpdir(), 'scoreline-k8s-'));
  try {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, configText);
    const parsed = serveConfig(args.slice(1).map((a) => (a === '/etc/scoreline/config.yaml' ? file : a)));
    assert.ok(parsed);
    assert.equal(
      parsed.features.definitions,
      join(dir, 'features.yaml'),
      'definitions are found next to the config, where the ConfigMap mounts them',
    );
    assert.equal(parsed.modelRepository, '/app/examples/models');
    assert.equal(parsed.dataDir, '/data');
    assert.equal(parsed.server.port, container.ports.find((p: Obj) => p.name === 'http').containerPort);
    assert.equal(parsed.grpc.port, container.ports.find((p: Obj) => p.name === 'grpc').containerPort);
    assert.equal(parsed.store.url, null, "no store URL in the ConfigMap: it would win over the Secret's SCORELINE_STORE_URL");
    assert.equal(parsed.inference.workers, config.inference.workers);
    assert.deepEqual(parsed.features.redis, config.features.redis);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('no volume is shared between pods: the data dir is an emptyDir, and no claim anywhere asks for ReadWriteMany', () => {
  const data = container.volumeMounts.find((m: Obj) => m.mountPath === '/data');
  assert.ok(data, '/data is mounted');
  const volume = pod.spec.volumes.find((v: Obj) => v.name === data.name) as Obj;
  assert.ok(volume.emptyDir, "the data dir is the pod's own");
  assert.ok(bytes(volume.emptyDir.sizeLimit) >= 1024 ** 3, 'with room for the cached models and the prediction log');
  assert.deepEqual(
    pod.spec.volumes.filter((v: Obj) => v.persistentVolumeClaim).map((v: Obj) => v.name),
    [],
    'the Deployment mounts no claim',
  );
  const claims = [
    ...all.filter((d) => d.kind === 'PersistentVolumeClaim').map((d) => ({ name: d.metadata.name, spec: d.spec })),
    ...all.flatMap((d) =>
      (d.spec?.volumeClaimTemplates ?? []).map((t: Obj) => ({ name: `${d.metadata.name}/${t.metadata.name}`, spec: t.spec })),
    ),
  ];
  assert.deepEqual(claims.map((c) => c.name).sort(), ['scoreline-postgres/data', 'scoreline-redis-data']);
  for (const c of claims) assert.deepEqual(c.spec.accessModes, ['ReadWriteOnce'], `${c.name} is one pod's`);
  // Every claim a workload mounts exists, and every claim is mounted by something.
  const mounted = all
    .filter((d) => d.spec?.template?.spec?.volumes)
    .flatMap((d) =>
      d.spec.template.spec.volumes.filter((v: Obj) => v.persistentVolumeClaim).map((v: Obj) => v.persistentVolumeClaim.claimName),
    );
  for (const name of mounted) find('PersistentVolumeClaim', name);
  assert.deepEqual(
    mounted.sort(),
    all
      .filter((d) => d.kind === 'PersistentVolumeClaim')
      .map((d) => d.metadata.name)
      .sort(),
  );
  const text = readFileSync(join(DIR, 'scoreline-deployment.yaml'), 'utf8');
  assert.match(text, /scoreline bundle/, 'the bundle image is named as the alternative repository');
  assert.match(text, /emptyDir/);
  assert.doesNotMatch(text, /ReadWriteMany/);
});

test('the store URL comes from a Secret whose example agrees with the PostgreSQL StatefulSet: user, database, password, Service, port', () => {
  const env = container.env.find((e: Obj) => e.name === 'SCORELINE_STORE_URL');
  assert.ok(env, 'SCORELINE_STORE_URL is set');
  assert.equal(env.value, undefined, 'never inline: it carries the password');
  const ref = env.valueFrom.secretKeyRef;
  assert.notEqual(ref.optional, true, 'a missing Secret stops the pod instead of running it on a registry of its own');
  const secret = find('Secret', ref.name);
  assert.equal(secret.file, 'scoreline-postgres-secret.example.yaml');
  assert.match(readFileSync(join(DIR, secret.file), 'utf8'), /^# EXAMPLE ONLY/);
  const url = secret.stringData[ref.key] as string;
  // What the server does with it: the ConfigMap names no store, so the variable is the store.
  assert.equal(storeUrl(resolveConfig(YAML.parse(configText)).store.url, { SCORELINE_STORE_URL: url }), url);
  const u = new URL(url);
  assert.equal(u.protocol, 'postgres:');

  const sts = find('StatefulSet', 'scoreline-postgres');
  const pgPod = sts.spec.template;
  const pgc = pgPod.spec.containers[0] as Obj;
  const pgEnv = (name: string) => pgc.env.find((e: Obj) => e.name === name) as Obj;
  assert.equal(sts.spec.replicas, 1);
  assert.ok(matches(sts.spec.selector.matchLabels, pgPod.metadata.labels));
  // The URL's host is the StatefulSet's Service, on the port the container listens on.
  const svc = find('Service', u.hostname);
  assert.equal(sts.spec.serviceName, svc.metadata.name, 'the governing Service');
  assert.ok(matches(svc.spec.selector, pgPod.metadata.labels));
  assert.ok(!matches(svc.spec.selector, pod.metadata.labels), 'it never selects scoreline pods');
  const port = svc.spec.ports.find((p: Obj) => p.port === Number(u.port || 5432));
  assert.ok(port, `the Service serves port ${u.port}`);
  assert.equal(pgc.ports.find((p: Obj) => p.name === port.targetPort).containerPort, 5432);
  // The URL's user, database and password are the ones the postgres image creates.
  assert.equal(decodeURIComponent(u.username), pgEnv('POSTGRES_USER').value);
  assert.equal(u.pathname.slice(1), pgEnv('POSTGRES_DB').value);
  const pwRef = pgEnv('POSTGRES_PASSWORD').valueFrom.secretKeyRef;
  assert.equal(pgEnv('POSTGRES_PASSWORD').value, undefined);
  const pgSecret = find('Secret', pwRef.name);
  assert.equal(pgSecret.file, 'scoreline-postgres-secret.example.yaml');
  assert.equal(decodeURIComponent(u.password), pgSecret.stringData[pwRef.key], 'the URL carries the PostgreSQL password');
  assert.match(pgSecret.stringData[pwRef.key], /REPLACE-ME/);
  assert.ok(
    !container.env.some((e: Obj) => e.valueFrom?.secretKeyRef?.name === pwRef.name),
    "scoreline reads the URL, not the server's password Secret",
  );
  // Readiness asks the server for the same user and database.
  const probe = pgc.readinessProbe.exec.command as string[];
  assert.equal(probe[0], 'pg_isready');
  assert.equal(probe[probe.indexOf('-U') + 1], pgEnv('POSTGRES_USER').value);
  assert.equal(probe[probe.indexOf('-d') + 1], pgEnv('POSTGRES_DB').value);

  // PGDATA lives on the claim template's volume; the read-only root has emptyDirs where the server writes.
  const [template] = sts.spec.volumeClaimTemplates as Obj[];
  assert.ok(template, 'the StatefulSet has a volume claim template');
  const dataMount = pgc.volumeMounts.find((m: Obj) => m.name === template.metadata.name);
  assert.ok(dataMount, 'the claim template is mounted');
  assert.ok(pgEnv('PGDATA').value.startsWith(`${dataMount.mountPath}/`), 'PGDATA is a subdirectory of the volume (lost+found)');
  assert.equal(pgc.securityContext.readOnlyRootFilesystem, true);
  for (const m of pgc.volumeMounts.filter((x: Obj) => x.name !== template.metadata.name)) {
    assert.ok(pgPod.spec.volumes.find((v: Obj) => v.name === m.name).emptyDir, `${m.mountPath} is an emptyDir`);
  }
  assert.ok(
    pgc.volumeMounts.some((m: Obj) => m.mountPath === '/var/run/postgresql'),
    'the socket dir is writable',
  );
  assert.equal(pgPod.spec.securityContext.runAsNonRoot, true);
  assert.ok(pgc.resources.limits.memory && pgc.resources.limits.cpu);

  const text = readFileSync(join(DIR, 'postgres.yaml'), 'utf8');
  assert.match(text, /managed PostgreSQL/, 'the file says it is for a demo or staging cluster');
  // The commands that create the real Secrets build the URL from the same password.
  for (const f of ['postgres.yaml', 'scoreline-postgres-secret.example.yaml', 'kustomization.yaml']) {
    const t = readFileSync(join(DIR, f), 'utf8');
    assert.match(t, /--from-literal=password="\$PGPASSWORD"/, f);
    assert.match(t, new RegExp(`--from-literal=url="postgres://${u.username}:\\$PGPASSWORD@${u.host}${u.pathname}"`), f);
  }
});

test('the Service, the autoscaler and the disruption budget point at the scoreline pods', () => {
  const labels = pod.metadata.labels as Obj;
  assert.ok(matches(deployment.spec.selector.matchLabels, labels));

  const svc = find('Service', 'scoreline');
  assert.equal(svc.spec.type, 'ClusterIP');
  assert.ok(matches(svc.spec.selector, labels));
  assert.deepEqual(svc.spec.ports, [
    { name: 'http', port: 8080, targetPort: 'http', protocol: 'TCP' },
    { name: 'grpc', port: 8081, targetPort: 'grpc', protocol: 'TCP' },
  ]);
  for (const p of svc.spec.ports)
    assert.ok(
      container.ports.some((c: Obj) => c.name === p.targetPort && c.containerPort === p.port),
      `${p.name} reaches the container port of that name`,
    );

  const hpa = find('HorizontalPodAutoscaler', 'scoreline');
  assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'scoreline' });
  assert.equal(hpa.spec.minReplicas, 2);
  assert.equal(hpa.spec.maxReplicas, 10);
  assert.deepEqual(
    hpa.spec.metrics.map((m: Obj) => [m.type, m.resource.name, m.resource.target.type]),
    [['Resource', 'cpu', 'Utilization']],
  );
  const target = hpa.spec.metrics[0].resource.target.averageUtilization;
  assert.ok(target > 0 && target < 100);
  assert.ok(hpa.spec.behavior.scaleDown.stabilizationWindowSeconds >= 60, 'scale-down is stabilized');
  assert.ok(hpa.spec.behavior.scaleUp.stabilizationWindowSeconds < hpa.spec.behavior.scaleDown.stabilizationWindowSeconds);

  const pdb = find('PodDisruptionBudget', 'scoreline');
  assert.equal(pdb.spec.minAvailable, 1);
  assert.ok(pdb.spec.minAvailable < hpa.spec.minReplicas, 'a drain can always evict one pod');
  assert.ok(matches(pdb.spec.selector.matchLabels, labels));

  // Redis pods are never selected as scoreline pods, nor the other way round.
  const redisPods = find('Deployment', 'scoreline-redis').spec.template.metadata.labels;
  assert.ok(!matches(svc.spec.selector, redisPods));
  assert.ok(!matches(find('Service', 'scoreline-redis').spec.selector, labels));
});

test('the admin token comes from a Secret whose example file is marked as an example', () => {
  const env = container.env.find((e: Obj) => e.name === 'SCORELINE_ADMIN_TOKEN');
  assert.ok(env, 'SCORELINE_ADMIN_TOKEN is set');
  assert.equal(env.value, undefined, 'never inline');
  const ref = env.valueFrom.secretKeyRef;
  assert.notEqual(ref.optional, true, 'replicas must not fall back to a token each of their own');
  const secret = find('Secret', ref.name);
  assert.equal(secret.file, 'scoreline-secret.example.yaml');
  assert.ok(ref.key in secret.stringData);
  assert.match(secret.stringData[ref.key], /REPLACE-ME/);
  assert.match(readFileSync(join(DIR, secret.file), 'utf8'), /^# EXAMPLE ONLY/);
});

test('API keys are on, from a Secret whose example is marked as an example; probes and scrapes need none', () => {
  const config = resolveConfig(YAML.parse(configText), 'scoreline-configmap.yaml');
  assert.equal(config.auth.enabled, true);
  assert.equal(config.auth.metricsPublic, true, 'the scrape annotations carry no credentials');
  assert.deepEqual(config.auth.apiKeys, [], 'no key digests in the ConfigMap: they come from the Secret');
  const env = container.env.find((e: Obj) => e.name === 'SCORELINE_API_KEYS');
  assert.ok(env, 'SCORELINE_API_KEYS is set');
  assert.equal(env.value, undefined, 'never inline');
  const ref = env.valueFrom.secretKeyRef;
  assert.notEqual(ref.optional, true, 'a missing Secret stops the pod instead of serving without keys');
  const secret = find('Secret', ref.name);
  assert.equal(secret.file, 'scoreline-secret.example.yaml');
  assert.match(secret.stringData[ref.key], /REPLACE-ME/);
  // The example's shape is one the server reads (the placeholder key is long enough to pass).
  assert.deepEqual(
    parseEnvKeys(secret.stringData[ref.key]).map((k) => [k.id, [...k.scopes]]),
    [['REPLACE-ME-loan-origination', ['infer']]],
  );
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe'])
    assert.equal(accessOf('get', container[probe].httpGet.path), 'open', `${probe} needs no key`);
  assert.equal(accessOf('get', pod.metadata.annotations['prometheus.io/path']), 'metrics');
});

test("Redis: a single node with an append-only file, reachable at the config's URL", () => {
  const url = new URL(resolveConfig(YAML.parse(configText)).features.redis!.url);
  const svc = find('Service', url.hostname);
  assert.equal(svc.spec.ports[0].port, Number(url.port));
  const redis = find('Deployment', 'scoreline-redis');
  assert.equal(redis.spec.replicas, 1);
  assert.equal(redis.spec.strategy.type, 'Recreate');
  assert.ok(matches(svc.spec.selector, redis.spec.template.metadata.labels));
  const c = redis.spec.template.spec.containers[0] as Obj;
  assert.equal(c.ports[0].containerPort, 6379);
  const args = c.args as string[];
  assert.equal(args[args.indexOf('--appendonly') + 1], 'yes');
  assert.ok(c.resources.limits.memory && c.resources.limits.cpu);
  const dataVolume = redis.spec.template.spec.volumes.find((v: Obj) => v.name === c.volumeMounts[0].name);
  find('PersistentVolumeClaim', dataVolume.persistentVolumeClaim.claimName);
  assert.match(readFileSync(join(DIR, 'redis.yaml'), 'utf8'), /Redis Cluster[\s\S]*managed Redis/);
});

test('the ConfigMap carries the feature definitions its config names, mounted next to the config', () => {
  const defs = configMap.data['features.yaml'] as string;
  assert.ok(defs, 'features.yaml is in the ConfigMap');
  // The real loader accepts them, and they are the demo's (what the bundled model's bindings expect).
  const parsed = parseFeatureDefinitions(defs, { source: 'scoreline-configmap.yaml: features.yaml' });
  assert.equal(parsed.features.length, 9);
  assert.deepEqual(YAML.parse(defs), YAML.parse(readFileSync(join(ROOT, 'examples', 'features', 'features.yaml'), 'utf8')));
  const volume = pod.spec.volumes.find((v: Obj) => v.name === 'config');
  assert.deepEqual(volume.configMap.items.map((i: Obj) => i.key).sort(), ['config.yaml', 'features.yaml']);
  assert.ok(volume.configMap.items.every((i: Obj) => i.key === i.path));
});

test('NetworkPolicies: scoreline pods admit only the ingress controller and Prometheus; Redis and PostgreSQL only scoreline pods', () => {
  const labels = pod.metadata.labels as Obj;
  const server = find('NetworkPolicy', 'scoreline');
  assert.ok(matches(server.spec.podSelector.matchLabels, labels));
  assert.deepEqual(server.spec.policyTypes, ['Ingress']);
  assert.equal(server.spec.ingress.length, 1);
  const [rule] = server.spec.ingress;
  assert.deepEqual(rule.ports, [
    { port: 'http', protocol: 'TCP' },
    { port: 'grpc', protocol: 'TCP' },
  ]);
  for (const p of rule.ports)
    assert.ok(
      container.ports.some((c: Obj) => c.name === p.port),
      `${p.port} is a container port`,
    );
  const peers = rule.from.map(
    (f: Obj) =>
      `${f.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name']}/${f.podSelector?.matchLabels?.['app.kubernetes.io/name']}`,
  );
  assert.deepEqual(
    peers,
    ['ingress-nginx/ingress-nginx', 'monitoring/prometheus'],
    'each peer is a namespace AND pod selector, not either',
  );
  for (const f of rule.from) assert.ok(f.namespaceSelector && f.podSelector);

  const redisPods = find('Deployment', 'scoreline-redis').spec.template.metadata.labels;
  const redisPort = find('Deployment', 'scoreline-redis').spec.template.spec.containers[0].ports[0].containerPort;
  const pgPod = find('StatefulSet', 'scoreline-postgres').spec.template;
  const pgPort = pgPod.spec.containers[0].ports[0].containerPort;
  assert.equal(pgPort, 5432);
  for (const [name, port, podLabels] of [
    ['scoreline-redis', redisPort, redisPods],
    ['scoreline-postgres', pgPort, pgPod.metadata.labels],
  ] as const) {
    const np = find('NetworkPolicy', name);
    assert.ok(matches(np.spec.podSelector.matchLabels, podLabels), `${name} selects its pods`);
    assert.ok(!matches(np.spec.podSelector.matchLabels, labels), `${name} does not select scoreline pods`);
    assert.deepEqual(np.spec.policyTypes, ['Ingress']);
    assert.equal(np.spec.ingress.length, 1);
    assert.deepEqual(np.spec.ingress[0].ports, [{ port, protocol: 'TCP' }]);
    assert.equal(np.spec.ingress[0].from.length, 1);
    const from = np.spec.ingress[0].from[0];
    assert.equal(from.namespaceSelector, undefined, 'same namespace only');
    assert.ok(matches(from.podSelector.matchLabels, labels), `${name} admits the scoreline pods`);
    assert.ok(!matches(from.podSelector.matchLabels, redisPods), `${name} admits nothing else`);
  }
});

test("Redis requires the Secret's password; scoreline reads the same Secret as the passwordFile", () => {
  const redis = find('Deployment', 'scoreline-redis').spec.template.spec.containers[0] as Obj;
  const args = redis.args as string[];
  assert.equal(args[args.indexOf('--requirepass') + 1], '$(REDIS_PASSWORD)');
  const env = (name: string) => redis.env.find((e: Obj) => e.name === name)?.valueFrom?.secretKeyRef;
  assert.deepEqual(env('REDIS_PASSWORD'), { name: 'scoreline-redis', key: 'password' });
  assert.deepEqual(env('REDISCLI_AUTH'), { name: 'scoreline-redis', key: 'password' }, 'the readiness probe authenticates');
  assert.ok(
    redis.env.findIndex((e: Obj) => e.name === 'REDIS_PASSWORD') >= 0,
    'the kubelet expands $(REDIS_PASSWORD) from the container env',
  );

  const passwordFile = resolveConfig(YAML.parse(configText)).features.redis!.passwordFile!;
  const mount = container.volumeMounts.find((m: Obj) => m.mountPath === dirname(passwordFile));
  assert.ok(mount, `${dirname(passwordFile)} is mounted`);
  assert.equal(mount.readOnly, true);
  const volume = pod.spec.volumes.find((v: Obj) => v.name === mount.name);
  assert.equal(volume.secret.secretName, 'scoreline-redis');
  assert.deepEqual(volume.secret.items, [{ key: 'password', path: basename(passwordFile) }]);
  assert.ok(!container.env.some((e: Obj) => e.valueFrom?.secretKeyRef?.name === 'scoreline-redis'), "never in the server's environment");
  const example = find('Secret', 'scoreline-redis');
  assert.equal(example.file, 'scoreline-redis-secret.example.yaml');
  assert.match(example.stringData.password, /REPLACE-ME/);
});

test("the ServiceMonitor scrapes /metrics on the Service's http port", () => {
  const sm = find('ServiceMonitor', 'scoreline');
  const svc = find('Service', 'scoreline');
  assert.ok(matches(sm.spec.selector.matchLabels, svc.metadata.labels), 'it selects the Service by its labels');
  assert.deepEqual(
    sm.spec.endpoints.map((e: Obj) => [e.port, e.path]),
    [['http', '/metrics']],
  );
  assert.ok(svc.spec.ports.some((p: Obj) => p.name === 'http'));
  const e = sm.spec.endpoints[0];
  assert.ok(Number.parseInt(e.scrapeTimeout, 10) < Number.parseInt(e.interval, 10));
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

test("run as configured: Redis with the manifest's args and password, scoreline with the ConfigMap's config and definitions", {
  skip: !redisAvailable() && 'redis-server is not installed',
  timeout: 120_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'scoreline-k8s-run-'));
  const password = 'pw-from-the-secret';
  const port = await freePort();
  const manifest = find('Deployment', 'scoreline-redis').spec.template.spec.containers[0] as Obj;
  // The container's args as the kubelet expands them, on a free port and a temp dir; memory as configured.
  const args = (manifest.args as string[]).slice(1).map((a) => (a === '$(REDIS_PASSWORD)' ? password : a === '/data' ? dir : a));
  const redis = spawn('redis-server', [...args, '--port', String(port), '--bind', '127.0.0.1'], { stdio: 'ignore' });
  try {
    const cli = (env: Record<string, string>) =>
      spawnSync('redis-cli', ['-p', String(port), 'ping'], { env: { ...process.env, ...env }, encoding: 'utf8' });
    await waitFor(() => cli({ REDISCLI_AUTH: password }).stdout.trim() === 'PONG', {
      timeoutMs: 10_000,
      intervalMs: 50,
      message: "redis-server to start with the manifest's args",
    });
    assert.match(cli({ REDISCLI_AUTH: '' }).stdout, /NOAUTH/, 'without the password Redis refuses');

    // /etc/scoreline as the ConfigMap mounts it, the Secret as a file, Redis at its Service name -> here.
    const etc = join(dir, 'etc');
    mkdirSync(etc);
    writeFileSync(join(etc, 'features.yaml'), configMap.data['features.yaml']);
    writeFileSync(join(dir, 'password'), `${password}\n`);
    const raw = YAML.parse(configText) as Obj;
    raw.features.redis.url = `redis://127.0.0.1:${port}`;
    raw.features.redis.passwordFile = join(dir, 'password');
    raw.inference.workers = 1;
    writeFileSync(join(etc, 'config.yaml'), YAML.stringify(raw));
    const config = join(etc, 'config.yaml');
    const check = spawnSync(process.execPath, [CLI, 'config', 'check', config], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr);
    const m = spawnSync(
      process.execPath,
      [CLI, 'features', 'materialize', '--config', config, '--from', join(ROOT, 'examples', 'features', 'customers.csv'), '--quiet'],
      { cwd: ROOT, encoding: 'utf8' },
    );
    assert.equal(m.status, 0, m.stderr);
    // The Deployment turns API keys on from the scoreline-api-keys Secret: give this run one, as that Secret would.
    const server = await startServer(
      ['--config', config, '--model-repo', join(ROOT, 'examples', 'models'), '--data-dir', join(dir, 'data')],
      {
        SCORELINE_API_KEYS: 'manifest-test:manifest-test-key-0123456789abcdef:infer+events+feedback+monitoring:read',
      },
    );
    try {
      const r = await request(`${server.url}/v1/score/credit-default`, {
        headers: { 'x-api-key': 'manifest-test-key-0123456789abcdef' },
        json: { entity: { customer_id: 'C00042' }, context: { amount: 5200, duration_months: 24 }, debug: true },
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.features['income@1'].status, 'present', "the customer's features come from Redis");
      const metrics = await request(`${server.url}/metrics`);
      assert.match(metrics.text, /^scoreline_feature_store_up\{store="redis"\} 1$/m);
    } finally {
      await server.stop();
    }
  } finally {
    redis.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
