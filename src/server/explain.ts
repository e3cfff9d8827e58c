// Explanations (reason codes) as a flavour of any inference protocol: a request that asks for them
// (`"explain": true` on entity scoring, OIP `parameters.explain`, v1 `:explain`) is scored through
// the same inference step, and its answer waits for the contributions of each row, computed after
// the score from the row as the model saw it. Requests that do not ask never meet this code.
//
// What a version needs is built once, on its first explanation, and cached on the version: the
// reference rows stored with it, the score function read from its ONNX graph (checked against
// onnxruntime's own scores on a sample of those rows), and then the means (linear), the covers
// (trees), or the background sample (KernelSHAP, for anything else or any reading that does not
// match onnxruntime). KernelSHAP's coalition rows run through the version's batcher as internal
// requests, under the request's deadline; exact explanations of many rows yield the thread between
// slices.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { artifactTampered, badRequest, explanationUnavailable } from '../errors.js';
import {
  explainExact,
  kernelShap,
  marginOf,
  prepareExact,
  rankContributions,
  recogniseScore,
  referenceRowsOf,
  rowSeed,
  scoreFromMargin,
  seededRandom,
  writeCoalitionRows,
  type CoalitionPlan,
  type ExactExplainer,
  type Link,
} from '../explain/index.js';
import type { LoadedModel, RunResult } from '../inference/index.js';
import { isObject } from '../json.js';
import { parseCsvTable } from '../monitoring/index.js';
import type { ServerContext } from './context.js';
import { scoreOf } from './encode.js';
import type { Answering, Protocol } from './inference.js';
import { intoSingleInput, scoreInternally } from './internal-rows.js';

/** What a request asked for: the `top_k` largest contributions, or all (null). */
export interface ExplainAsk {
  readonly topK: number | null;
}

/** A request's input with its explanation state: the version's explainer (prepare), its rows (decode). */
export interface Explaining<In> {
  readonly inner: In;
  readonly ask: ExplainAsk;
  readonly explainer: VersionExplainer | null;
  /** The request's rows as written into the batch (so as the model saw them), copied at decode. */
  rows: Float64Array | null;
}

export const explainingInput = <In>(inner: In, ask: ExplainAsk): Explaining<In> => ({ inner, ask, explainer: null, rows: null });

/** Reads `"explain"` and `"top_k"` from an object (a body, or OIP parameters); null when explanations are not asked for. */
export function explainAsk(o: Record<string, unknown>, where: string): ExplainAsk | null {
  const explain = o.explain;
  if (explain !== undefined && typeof explain !== 'boolean') throw badRequest(`${where}"explain" must be true or false`);
  const topK = topKOf(o.top_k, where);
  if (explain !== true) {
    if (o.top_k !== undefined) throw badRequest(`${where}"top_k" needs "explain": true`);
    return null;
  }
  return { topK };
}

/** v1 `:explain`: explanations are the point, `top_k` optional. */
export function v1ExplainAsk(body: unknown): ExplainAsk {
  return { topK: isObject(body) ? topKOf(body.top_k, '') : null };
}

/** OIP: `parameters: {"explain": true, "top_k": K}`. */
export function oipExplainAsk(body: unknown): ExplainAsk | null {
  if (!isObject(body) || !isObject(body.parameters)) return null;
  return explainAsk(body.parameters, 'parameters.');
}

function topKOf(v: unknown, where: string): number | null {
  if (v === undefined) return null;
  if (!(typeof v === 'number' && Number.isSafeInteger(v) && v >= 1))
    throw badRequest(`${where}"top_k" must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/** A version's explainer, built on its first explanation. */
export interface VersionExplainer {
  readonly method: 'linear' | 'tree_shap' | 'kernel_shap';
  readonly names: readonly string[];
  /** How the score follows from the explained margin. */
  readonly link: Link;
  readonly referenceRows: number;
  /** What the graph was read as, or why KernelSHAP explains it. */
  readonly source: string;
  readonly exact: ExactExplainer | null;
  readonly kernel: { readonly background: Float64Array; readonly rows: number; readonly mean: number } | null;
  /** Feature values are shown as float32 (an FP32 input). */
  readonly float32: boolean;
  /** `{"feature":<name>,"value":` per feature, built once. */
  readonly heads: readonly string[];
}

const explainers = new WeakMap<LoadedModel, Promise<VersionExplainer>>();

/** The version's explainer, built on first use; a failed build is retried by the next request. */
export function explainerOf(ctx: ServerContext, m: LoadedModel): Promise<VersionExplainer> {
  let p = explainers.get(m);
  if (p === undefined) {
    const built = buildExplainer(ctx, m);
    p = built;
    explainers.set(m, p);
    built.catch(() => {
      if (explainers.get(m) === built) explainers.delete(m);
    });
  }
  return p;
}

/** Drops a version's explainer (its reference rows changed). */
export function forgetExplainer(m: LoadedModel): void {
  explainers.delete(m);
}

/** Reference rows scored at build: to check the graph reading against onnxruntime, and KernelSHAP's background. */
const CHECK_ROWS = 256;
/** KernelSHAP background rows: each coalition runs the model on this many rows. */
export const BACKGROUND_ROWS = 50;
/** A reading is used when it gives onnxruntime's scores to this (relative beyond 1). */
const READING_TOLERANCE = 1e-4;
/** Exact explanations of a many-row request yield the thread after this long. */
const SLICE_MS = 4;

async function buildExplainer(ctx: ServerContext, m: LoadedModel): Promise<VersionExplainer> {
  const where = `model '${m.name}' version ${m.version}`;
  const names = m.config.features;
  const input = m.inputs[0]!;
  if (!names || m.inputs.length !== 1 || input.shape.length !== 2) {
    throw explanationUnavailable(
      `${where} cannot be explained: explanations name features, so the model needs one 2-D input and a features list in its model.yaml`,
    );
  }
  if (input.datatype !== 'FP32' && input.datatype !== 'FP64')
    throw explanationUnavailable(`${where} cannot be explained: its input is ${input.datatype}; explanations need FP32 or FP64 features`);
  if (!m.batchable)
    throw explanationUnavailable(
      `${where} cannot be explained: its input has no dynamic batch dimension, which explanations need to run it on reference rows`,
    );
  const M = names.length;
  const csv = await ctx.registry.referenceData(m.name, m.versionNumber);
  if (csv === null) {
    throw explanationUnavailable(
      `${where} has no reference rows, and explanations are measured against them: the base value is the expected score over them, ` +
        'linear contributions are relative to their means, tree covers are counted on them and KernelSHAP draws its background from them. ' +
        `Store them with the version (model.yaml \`reference\`, or PUT /admin/models/${m.name}/versions/${m.version}/reference with a CSV of its features)`,
    );
  }
  const float32 = input.datatype === 'FP32';
  const rows = referenceMatrix(csv, names, float32, where);
  const count = rows.length / M;
  const bytes = await readFile(m.path);
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (digest !== m.sha256) throw artifactTampered(m.sha256, digest);
  const output = m.outputs[m.scoreOutput.output]!.name;
  const reading = recogniseScore(bytes, {
    input: input.name,
    inputType: input.datatype,
    features: M,
    output,
    column: m.scoreOutput.column,
  });

  // The sample onnxruntime scores: the reading must reproduce it, and KernelSHAP's background is drawn from it.
  const order = shuffled(count, parseInt(m.sha256.slice(0, 8), 16));
  const sample = order.slice(0, Math.min(CHECK_ROWS, count));
  const sampleRows = new Float64Array(sample.length * M);
  sample.forEach((i, k) => {
    sampleRows.set(rows.subarray(i * M, (i + 1) * M), k * M);
  });
  const scores = new Float64Array(sample.length);
  await scoreInternally(
    m,
    sample.length,
    intoSingleInput(m, (buf, at, first, n) => buf.set(sampleRows.subarray(first * M, (first + n) * M), at)),
    (first, n, result, rowStart) => {
      for (let r = 0; r < n; r++) scores[first + r] = scoreOf(m, result, rowStart + r);
    },
    performance.now() + 120_000,
  );

  let why: string;
  if (reading.ok) {
    const model = reading.model;
    let mismatch: string | null = null;
    for (let k = 0; k < sample.length && mismatch === null; k++) {
      const mine = scoreFromMargin(model, marginOf(model, sampleRows.subarray(k * M, (k + 1) * M)));
      const theirs = scores[k]!;
      if (Number.isNaN(mine) && Number.isNaN(theirs)) continue;
      if (!(Math.abs(mine - theirs) <= READING_TOLERANCE * Math.max(1, Math.abs(theirs))))
        mismatch = `reference row ${sample[k]! + 1}: onnxruntime scores ${theirs}, the reading ${mine}`;
    }
    if (mismatch === null) {
      const exact = prepareExact(model, rows, count, names);
      ctx.log.info(
        { model: m.name, version: m.version, method: exact.method, source: model.source, referenceRows: count },
        'explanations ready',
      );
      return {
        method: exact.method,
        names,
        link: model.link,
        referenceRows: referenceRowsOf(exact),
        source: model.source,
        exact,
        kernel: null,
        float32,
        heads: headsOf(names),
      };
    }
    why = `the graph reads as ${model.source}, but that reading does not reproduce onnxruntime (${mismatch})`;
    ctx.log.warn({ model: m.name, version: m.version, reason: why }, 'explanations fall back to KernelSHAP');
  } else {
    why = reading.reason;
  }

  const background: number[] = [];
  const backgroundScores: number[] = [];
  for (let k = 0; k < sample.length && backgroundScores.length < BACKGROUND_ROWS; k++) {
    const x = sampleRows.subarray(k * M, (k + 1) * M);
    if (!x.every(Number.isFinite) || !Number.isFinite(scores[k]!)) continue;
    background.push(...x);
    backgroundScores.push(scores[k]!);
  }
  if (backgroundScores.length === 0)
    throw explanationUnavailable(`${where}: no reference row has every feature and a finite score, so KernelSHAP has no background`);
  const mean = backgroundScores.reduce((s, v) => s + v, 0) / backgroundScores.length;
  const probability = m.config.task === 'classification' || (m.config.task === undefined && output === 'probabilities');
  const link: Link = probability && backgroundScores.every((s) => s >= 0 && s <= 1) ? 'logit' : 'identity';
  ctx.log.info(
    { model: m.name, version: m.version, method: 'kernel_shap', reason: why, background: backgroundScores.length, link },
    'explanations ready',
  );
  return {
    method: 'kernel_shap',
    names,
    link,
    referenceRows: count,
    source: why,
    exact: null,
    kernel: { background: Float64Array.from(background), rows: backgroundScores.length, mean },
    float32,
    heads: headsOf(names),
  };
}

const headsOf = (names: readonly string[]) => names.map((n) => `{"feature":${JSON.stringify(n)},"value":`);

/** The reference CSV as a row-major matrix of the model's features; blanks and non-numbers are NaN (missing). */
function referenceMatrix(csv: Buffer, names: readonly string[], float32: boolean, where: string): Float64Array {
  let table: ReturnType<typeof parseCsvTable>;
  try {
    table = parseCsvTable(csv);
  } catch (e) {
    throw explanationUnavailable(`${where}: its reference rows cannot be read: ${(e as Error).message}`);
  }
  const M = names.length;
  const cols = names.map((n) => {
    const i = table.columns.indexOf(n);
    if (i < 0) throw explanationUnavailable(`${where}: its reference rows have no column '${n}' (columns: ${table.columns.join(', ')})`);
    return table.values[i]!;
  });
  const count = cols[0]!.length;
  const out = new Float64Array(count * M);
  for (let r = 0; r < count; r++) {
    for (let j = 0; j < M; j++) {
      const raw = cols[j]![r];
      const v = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : typeof raw === 'number' ? raw : Number.NaN;
      out[r * M + j] = float32 ? Math.fround(v) : v;
    }
  }
  return out;
}

function shuffled(n: number, seed: number): number[] {
  const random = seededRandom(seed);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/**
 * Wraps a protocol so that its requests carry explanations: the version's explainer is readied in
 * prepare (a version that cannot explain answers 422 before anything is scored), the rows are copied
 * as decoded, and the answer is the base protocol's with `render` adding the explanations.
 */
export function explaining<In>(
  ctx: ServerContext,
  base: Protocol<In>,
  render: (body: string, explanations: readonly string[]) => string,
): Protocol<Explaining<In>> {
  return {
    route: 'explain',
    async prepare(m, input) {
      const explainer = await explainerOf(ctx, m);
      const inner = base.prepare === undefined ? input.inner : await base.prepare.call(base, m, input.inner);
      return { inner, ask: input.ask, explainer, rows: null };
    },
    decode(m, input) {
      const d = base.decode(m, input.inner);
      const M = m.batcher.rowElements(d.batch, 0);
      const start = d.batch.rows;
      input.rows = Float64Array.from((d.batch.buffers[0] as Float32Array | Float64Array).subarray(start * M, (start + d.rows) * M));
      return d;
    },
    encode(m: LoadedModel, result: RunResult, rowStart: number, a: Answering<Explaining<In>>) {
      const inner: Answering<In> = {
        decoded: a.decoded,
        requestId: a.requestId,
        variant: a.variant,
        input: a.input.inner,
        deadline: a.deadline,
      };
      const body = base.encode(m, result, rowStart, inner);
      const n = a.decoded.rows;
      const scores = new Float64Array(n);
      for (let r = 0; r < n; r++) scores[r] = scoreOf(m, result, rowStart + r);
      const out = result.outputs[m.scoreOutput.output]!;
      let width = 1;
      for (let i = 1; i < out.dims.length; i++) width *= out.dims[i]!;
      const column = Math.min(m.scoreOutput.column ?? width - 1, width - 1);
      return Promise.all([body, explainRows(m, a.input.explainer!, a.input.rows!, scores, column, a.input.ask, a.deadline)]).then(
        ([text, list]) => render(text, list),
      );
    },
    shadow: (m, input) => base.shadow(m, input.inner),
  };
}

/** One JSON explanation per row. */
async function explainRows(
  m: LoadedModel,
  e: VersionExplainer,
  rows: Float64Array,
  scores: Float64Array,
  column: number,
  ask: ExplainAsk,
  deadline: number,
): Promise<string[]> {
  const M = e.names.length;
  const n = rows.length / M;
  const out: string[] = [];
  const phi = new Float64Array(M);
  const head = `{"method":"${e.method}","output":${JSON.stringify(m.outputs[m.scoreOutput.output]!.name)},"column":${column},"link":"${e.link}"`;
  let slice = performance.now();
  for (let r = 0; r < n; r++) {
    const x = rows.subarray(r * M, (r + 1) * M);
    if (e.exact !== null) {
      const { base, margin } = explainExact(e.exact, x, phi);
      out.push(explanationJson(head, e, x, scores[r]!, base, margin, phi, null, ask.topK, `"source":${JSON.stringify(e.source)}`));
      if (performance.now() - slice > SLICE_MS && r + 1 < n) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        slice = performance.now();
      }
      continue;
    }
    const k = e.kernel!;
    const fit = await kernelShap(M, scores[r]!, k.mean, e.link, (plan) => coalitionMeans(m, plan, x, k.background, k.rows, deadline), {
      seed: rowSeed(x),
    });
    let maxSe = 0;
    for (const v of fit.standardError) maxSe = Math.max(maxSe, v);
    const kernel =
      `"kernel":{"coalitions":${fit.plan.count},"exact":${fit.plan.exact},"background_rows":${k.rows},"model_rows":${fit.plan.count * k.rows},` +
      `"max_standard_error":${num(maxSe)},"reason":${JSON.stringify(e.source)}}`;
    out.push(explanationJson(head, e, x, scores[r]!, fit.base, fit.margin, fit.phi, fit.standardError, ask.topK, kernel));
  }
  return out;
}

/** Mean score over the background per coalition, the coalition rows run through the version's batcher. */
async function coalitionMeans(
  m: LoadedModel,
  plan: CoalitionPlan,
  x: Float64Array,
  background: Float64Array,
  K: number,
  deadline: number,
): Promise<Float64Array> {
  const means = new Float64Array(plan.count);
  await scoreInternally(
    m,
    plan.count * K,
    intoSingleInput(m, (buf, at, first, n) => writeCoalitionRows(buf, at, plan, x, background, K, first, n)),
    (first, n, result, rowStart) => {
      for (let r = 0; r < n; r++) means[Math.floor((first + r) / K)]! += scoreOf(m, result, rowStart + r) / K;
    },
    deadline,
  );
  return means;
}

const num = (v: number): string => (Number.isFinite(v) ? String(v) : 'null');

/**
 * A feature value as the model saw it: for an FP32 input, the shortest decimal that is the same
 * float32 (0.35, not the 0.3499999940395355 the float32 is as a double).
 */
function valueText(v: number, float32: boolean): string {
  if (!Number.isFinite(v)) return 'null';
  if (!float32 || Number.isInteger(v)) return String(v);
  // v rounded to p significant digits, by arithmetic (toPrecision costs a microsecond): an integer
  // over a power of ten that is exact, so the double is the decimal's nearest and prints as it.
  const e = Math.floor(Math.log10(Math.abs(v)));
  for (let p = 1; p <= 9; p++) {
    const k = p - 1 - e;
    const d = k >= 0 ? Math.round(v * 10 ** k) / 10 ** k : Math.round(v / 10 ** -k) * 10 ** -k;
    if (Math.fround(d) === v) return String(d);
  }
  return String(v);
}

function explanationJson(
  head: string,
  e: VersionExplainer,
  x: ArrayLike<number>,
  score: number,
  base: number,
  margin: number,
  phi: Float64Array,
  se: Float64Array | null,
  topK: number | null,
  tail: string,
): string {
  const order = rankContributions(phi, topK);
  let s = `${head},"score":${num(score)},"margin":${num(margin)},"base_value":${num(base)},"contributions":[`;
  for (let i = 0; i < order.length; i++) {
    const j = order[i]!;
    s += `${i > 0 ? ',' : ''}${e.heads[j]}${valueText(x[j]!, e.float32)},"contribution":${num(phi[j]!)}`;
    s += se === null ? '}' : `,"standard_error":${num(se[j]!)}}`;
  }
  s += ']';
  if (order.length < phi.length) {
    // What the listed contributions leave out, so base + listed + rest is still the margin.
    const listed = new Set(order);
    let rest = 0;
    for (let j = 0; j < phi.length; j++) if (!listed.has(j)) rest += phi[j]!;
    s += `,"rest":{"features":${phi.length - order.length},"contribution":${num(rest)}}`;
  }
  return `${s},"reference_rows":${e.referenceRows},${tail}}`;
}
