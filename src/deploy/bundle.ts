// The container bundle (`scoreline bundle`): one model's versions, read from the registry through its
// verified load, written as a self-contained deployable folder: a Triton-layout model repository,
// a server config, SHA256SUMS, a Dockerfile on the scoreline image and a README. The content depends
// only on the registry's bytes and the options (no timestamps, sorted listings), so two bundles of
// the same versions are byte-identical and can be diffed. Nothing is written until every artifact
// has been read and verified: a tampered registry leaves no half bundle behind. Every byte comes
// from the registry's artifact store (models and reference rows, by sha256); a path recorded with a
// version (lineage) is never opened, since whoever registered the version chose it.

import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import YAML from 'yaml';
import { parseModelConfig, resolveConfig } from '../config.js';
import { badRequest, conflict } from '../errors.js';
import { isObject } from '../json.js';
import type { JsonObject } from '../registry/index.js';
import type { Registry } from '../store/index.js';
import pkg from '../version.js';
import { versionsOf, type Strategy } from './strategies.js';

export const DEFAULT_BASE_IMAGE = `scoreline:${pkg.version}`;
/** Where the bundle's files live inside the image. */
export const BUNDLE_IMAGE_DIR = '/app/bundle';

export interface BundleOptions {
  registry: Registry;
  model: string;
  /**
   * Versions to bundle: numbers, aliases or `latest`, each optionally as `NAME@REF` (NAME must be the
   * model). Default: every version the model's deployment can route to; without a deployment, the latest.
   */
  versions?: readonly string[];
  /** The bundle folder; created if missing, refused if not empty unless `force`. */
  out: string;
  /** FROM of the Dockerfile: an image built from scoreline's own Dockerfile. */
  baseImage?: string;
  /** Replace a previous bundle in `out` (its models/ folder and the bundle's own files). */
  force?: boolean;
  /**
   * Server settings for the bundle's config.yaml (validated like any server config), e.g. batching
   * or log level. `modelRepository` and `dataDir` are the bundle's own and cannot be set here.
   */
  serverConfig?: Record<string, unknown>;
}

export interface BundledVersion {
  readonly version: number;
  readonly sha256: string;
  readonly size: number;
}

export interface BundleResult {
  /** The bundle folder, absolute. */
  readonly dir: string;
  /** Every file written, relative to dir, '/'-separated, sorted. */
  readonly files: readonly string[];
  readonly versions: readonly BundledVersion[];
  /** Where the versions came from. */
  readonly selectedBy: 'explicit' | 'deployment' | 'latest';
  /** Things the bundle could not carry over (e.g. a reference CSV the registry does not hold). */
  readonly warnings: readonly string[];
}

/** The bundle's own files at its top level; with `force` these and models/ are replaced. */
const OWN_FILES = ['Dockerfile', 'README.md', 'SHA256SUMS', 'config.yaml'];
// Docker image references: registry host, path, tag, digest. Anything else (a newline above all)
// could smuggle instructions into the Dockerfile.
const IMAGE_REF = /^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$/;

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const versionList = (versions: readonly number[]): string => `version${versions.length === 1 ? '' : 's'} ${versions.join(', ')}`;

/** Writes the bundle of `model` into `out`; see BundleOptions. */
export async function writeBundle(options: BundleOptions): Promise<BundleResult> {
  const { registry, model } = options;
  const baseImage = options.baseImage ?? DEFAULT_BASE_IMAGE;
  if (!IMAGE_REF.test(baseImage)) throw badRequest(`'${baseImage}' is not a container image reference`);
  const dir = resolve(options.out);
  const { versions: numbers, selectedBy } = await selectVersions(options);

  // Read (and verify) everything first: nothing touches the folder until the whole bundle is known.
  const loaded: { record: { version: number; sha256: string; size: number; config: JsonObject }; bytes: Buffer }[] = [];
  for (const v of numbers) loaded.push(await registry.load(model, v));
  const config = sharedConfig(
    model,
    loaded.map((l) => ({ version: l.record.version, config: l.record.config })),
  );
  const warnings: string[] = [];
  const files = new Map<string, Uint8Array>();
  for (const { record, bytes } of loaded) files.set(`models/${model}/${record.version}/model.onnx`, bytes);

  const modelConfig: Record<string, unknown> = { ...config };
  if (typeof modelConfig.reference === 'string') {
    const found = await storedReference(registry, model, modelConfig.reference, numbers);
    if (found) {
      modelConfig.reference = found.name;
      files.set(`models/${model}/${found.name}`, found.bytes);
    } else {
      warnings.push(
        `model.yaml names the reference data '${modelConfig.reference}', which the registry does not hold for the bundled ` +
          `versions (it keeps the reference rows of versions imported from a model repository); the bundle leaves out ` +
          `'reference' and 'label' (no drift baseline until one is set)`,
      );
      delete modelConfig.reference;
      delete modelConfig.label;
    }
  }
  const modelYaml = `# model.yaml of '${model}' (${versionList(numbers)}), from the scoreline registry\n${YAML.stringify(modelConfig)}`;
  parseModelConfig(modelYaml, `models/${model}/model.yaml`); // the bundle never carries a config the server refuses
  files.set(`models/${model}/model.yaml`, Buffer.from(modelYaml));
  files.set('config.yaml', Buffer.from(serverConfigYaml(options.serverConfig)));

  // SHA256SUMS covers the payload, exactly what the image copies, so the image build verifies it.
  const payload = [...files.keys()].sort();
  files.set('SHA256SUMS', Buffer.from(payload.map((p) => `${sha256(files.get(p)!)}  ${p}\n`).join('')));
  const bundled = loaded.map(({ record }) => ({ version: record.version, sha256: record.sha256, size: record.size }));
  files.set('Dockerfile', Buffer.from(dockerfile(model, numbers, baseImage)));
  files.set('README.md', Buffer.from(readme(model, bundled, baseImage, warnings)));

  prepareFolder(dir, options.force === true);
  for (const [path, bytes] of files) {
    const target = join(dir, ...path.split('/'));
    mkdirTree(dirname(target));
    writeFileSync(target, bytes);
    // Explicit modes: a restrictive umask must not make the image's files unreadable to its non-root user.
    chmodSync(target, 0o644);
  }
  return { dir, files: [...files.keys()].sort(), versions: bundled, selectedBy, warnings };
}

async function selectVersions(options: BundleOptions): Promise<{ versions: number[]; selectedBy: BundleResult['selectedBy'] }> {
  const { registry, model } = options;
  await registry.getModel(model); // MODEL_NOT_FOUND before anything else
  if (options.versions !== undefined) {
    if (options.versions.length === 0) throw badRequest('no versions to bundle: name at least one, or none for the deployed ones');
    const picked: number[] = [];
    for (const ref of options.versions) {
      const at = ref.lastIndexOf('@');
      if (at >= 0 && ref.slice(0, at) !== model) {
        throw badRequest(`'${ref}' names model '${ref.slice(0, at)}', but the bundle is of model '${model}'`);
      }
      const r = at >= 0 ? ref.slice(at + 1) : ref;
      if (r === '') throw badRequest(`'${ref}' names no version or alias`);
      picked.push((await registry.resolve(model, r)).version);
    }
    return { versions: [...new Set(picked)].sort((a, b) => a - b), selectedBy: 'explicit' };
  }
  const deployment = await registry.getDeployment(model);
  if (deployment) {
    const strategy = strategyIn(deployment.state);
    if (!strategy) {
      throw badRequest(
        `the deployment of model '${model}' does not name its versions in a form the bundle knows; name the versions to bundle`,
      );
    }
    for (const v of versionsOf(strategy)) await registry.getVersion(model, v);
    return { versions: [...new Set(versionsOf(strategy))].sort((a, b) => a - b), selectedBy: 'deployment' };
  }
  return { versions: [(await registry.getModel(model)).latestVersion], selectedBy: 'latest' };
}

/**
 * The strategy in a stored deployment state. The deployer owns the state's shape: it may be the
 * strategy itself or wrap it (`{strategy: {...}}`, `{spec: {...}}`); runtime fields next to the
 * strategy's own (current canary step, timestamps) are ignored.
 */
function strategyIn(state: unknown): Strategy | null {
  const obj = (v: unknown): Record<string, unknown> | null => (isObject(v) ? v : null);
  const s = obj(state);
  if (!s) return null;
  for (const candidate of [s, obj(s.strategy), obj(s.spec), obj(s.desired), obj(s.target)]) {
    if (!candidate || typeof candidate.strategy !== 'string') continue;
    const fields: Record<string, string[]> = {
      direct: ['version'],
      'blue-green': ['blue', 'green'],
      canary: ['stable', 'canary'],
      shadow: ['primary', 'shadow'],
      ab: [],
    };
    const needed = fields[candidate.strategy];
    if (!needed) continue;
    const ok =
      candidate.strategy === 'ab'
        ? Array.isArray(candidate.variants) && candidate.variants.length > 0 && candidate.variants.every((v) => isVersion(obj(v)?.version))
        : needed.every((f) => isVersion(candidate[f]));
    if (ok) return candidate as unknown as Strategy;
  }
  return null;
}

const isVersion = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 1;

/** model.yaml is per model in the repository layout, so the bundled versions must agree on it. */
function sharedConfig(model: string, configs: { version: number; config: JsonObject }[]): JsonObject {
  const first = configs[0]!;
  const text = JSON.stringify(first.config);
  const other = configs.find((c) => JSON.stringify(c.config) !== text);
  if (other) {
    throw conflict(
      `versions ${first.version} and ${other.version} of model '${model}' have different model.yaml settings, and a model ` +
        `repository holds one model.yaml per model; bundle them separately`,
    );
  }
  return first.config;
}

/**
 * The reference rows the registry keeps for the newest bundled version that has any (re-hashed as
 * they are read), under the base name model.yaml gives them, next to the version folders.
 */
async function storedReference(
  registry: Registry,
  model: string,
  reference: string,
  versions: readonly number[],
): Promise<{ name: string; bytes: Buffer } | null> {
  const name = basename(reference);
  // Next to the version folders and model.yaml, the file must not take one of their names.
  if (/^[0-9]+$|^model\.(ya?ml|json)$|^\.{0,2}$/.test(name)) return null;
  for (const v of [...versions].sort((a, b) => b - a)) {
    const bytes = await registry.referenceData(model, v);
    if (bytes !== null) return { name, bytes };
  }
  return null;
}

function serverConfigYaml(extra: Record<string, unknown> | undefined): string {
  const own = { modelRepository: 'models', dataDir: '/data' };
  if (extra !== undefined && ('modelRepository' in extra || 'dataDir' in extra)) {
    throw badRequest('the bundle sets modelRepository and dataDir itself; leave them out of its server config');
  }
  const features = extra?.features as Record<string, unknown> | undefined;
  if (features !== null && typeof features === 'object' && typeof features.definitions === 'string') {
    throw badRequest('feature definitions are files the bundle does not carry; leave features.definitions out of its server config');
  }
  // The partial settings are written, not the resolved defaults: defaults such as the worker count
  // depend on the machine, and must be taken where the bundle runs, not where it was written.
  const config = { ...own, ...extra };
  resolveConfig(config, 'the bundle server config');
  return (
    '# scoreline server config of this bundle. Relative paths are relative to this file, so it serves\n' +
    '# models/ next to it both in the image and from the folder itself.\n' +
    YAML.stringify(config)
  );
}

function dockerfile(model: string, versions: readonly number[], baseImage: string): string {
  const args = ['serve', '--config', `${BUNDLE_IMAGE_DIR}/config.yaml`, '--model-repo', `${BUNDLE_IMAGE_DIR}/models`];
  return [
    `# Model bundle written by \`scoreline bundle\`: model '${model}', ${versionList(versions)}.`,
    "# The base image is built from scoreline's own Dockerfile (its ENTRYPOINT runs the scoreline CLI).",
    `FROM ${baseImage}`,
    '# Owned by root and read-only to the server, which only reads its models and config.',
    `COPY models ${BUNDLE_IMAGE_DIR}/models`,
    `COPY config.yaml SHA256SUMS ${BUNDLE_IMAGE_DIR}/`,
    '# The build fails if a file changed after the bundle was written.',
    `RUN cd ${BUNDLE_IMAGE_DIR} && sha256sum -c --quiet SHA256SUMS`,
    'USER node',
    `CMD ${JSON.stringify(args).replace(/","/g, '", "')}`,
    '',
  ].join('\n');
}

/** The tag the bundle's image is built under, in its README and in what `scoreline bundle` prints. */
export function bundleImageTag(model: string, versions: readonly number[]): string {
  return `scoreline-${model.toLowerCase()}:${versions.join('-')}`;
}

function readme(model: string, versions: readonly BundledVersion[], baseImage: string, warnings: readonly string[]): string {
  const tag = bundleImageTag(
    model,
    versions.map((v) => v.version),
  );
  const highest = versions[versions.length - 1]!.version;
  return [
    `# scoreline bundle: ${model}`,
    '',
    `Versions of model \`${model}\` taken from the scoreline registry, each verified against its sha256 as it was read:`,
    '',
    '| version | sha256 | bytes |',
    '| --- | --- | --- |',
    ...versions.map((v) => `| ${v.version} | \`${v.sha256}\` | ${v.size} |`),
    '',
    '```',
    'models/<model>/<version>/model.onnx   the artifacts, in the model repository layout scoreline serves',
    "models/<model>/model.yaml             the model's settings from the registry",
    'config.yaml                           the server config (serves models/ next to it, state in /data)',
    'SHA256SUMS                            sha256 of every file above; the image build checks them',
    'Dockerfile                            the image: these files on top of the scoreline image',
    '```',
    '',
    '## Build and run',
    '',
    `The base image \`${baseImage}\` is built from the scoreline repository's Dockerfile`,
    `(\`docker build -t ${baseImage} .\` there).`,
    '',
    '```sh',
    'sha256sum -c SHA256SUMS',
    `docker build -t ${tag} .`,
    `docker run --rm -p 8080:8080 -v scoreline-data:/data ${tag}`,
    `curl -s localhost:8080/v2/models/${model}/versions/${highest}/ready`,
    '```',
    '',
    'Without Docker, from this folder: `scoreline serve --config config.yaml --data-dir ./data`.',
    '',
    'Requests that name no version are answered by the highest version until a deployment says otherwise',
    `(\`scoreline deploy\`, or \`PUT /admin/deployments/${model}\`).`,
    '',
    "On Kubernetes (deploy/kubernetes in the scoreline repository), set the Deployment's image to this one",
    `and its \`--model-repo\` argument to \`${BUNDLE_IMAGE_DIR}/models\`.`,
    ...(warnings.length > 0 ? ['', '## Warnings', '', ...warnings.map((w) => `- ${w}`)] : []),
    '',
  ].join('\n');
}

function prepareFolder(dir: string, force: boolean): void {
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o755);
    return;
  }
  if (!statSync(dir).isDirectory()) throw conflict(`${dir} exists and is not a folder`);
  if (readdirSync(dir).length === 0) return;
  if (!force) throw conflict(`${dir} is not empty; refusing to write a bundle into it (force replaces a previous bundle)`);
  // Only the bundle's own entries go: stale versions under models/ would otherwise end up in the image.
  rmSync(join(dir, 'models'), { recursive: true, force: true });
  for (const f of OWN_FILES) rmSync(join(dir, f), { force: true });
}

function mkdirTree(dir: string): void {
  if (existsSync(dir)) return;
  mkdirTree(dirname(dir));
  mkdirSync(dir);
  chmodSync(dir, 0o755);
}
