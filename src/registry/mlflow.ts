// MLflow model directories (an `MLmodel` file with the `onnx` flavor, the flavor's model file, and
// optionally `input_example.json`), read from a model repository's version folder or from a tar.gz
// upload held in memory. What is served and hashed is the ONNX file alone; MLmodel, its signature
// and the input example are kept as lineage. The signature names the model's features when it is
// column based and the model has one 2-D input of that width: column types boolean (sent as 0/1),
// integer, long, float and double become feature columns; string, binary, datetime, array, object,
// map and any cannot feed a numeric input and are refused. A tensor-based signature names no
// columns, and gives no features. Flavors without ONNX are refused: the pickle-based ones (sklearn,
// python_function, pytorch, ...) because loading them runs code from the file, the others because
// scoreline serves ONNX only.
//
// Archives are parsed in memory (never unpacked on disk), bounded in their unpacked size, and
// refused when an entry is a link, has an absolute path or climbs out with '..'.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Parser, type ReadEntry } from 'tar';
import YAML from 'yaml';
import { badRequest, bodyTooLarge, isScorelineError, mlflowInvalid, notOnnx, unsupportedFormat } from '../errors.js';
import { assertOnnx } from './format.js';
import type { TensorSpec } from '../onnx/index.js';
import type { JsonObject } from './records.js';

export const MLMODEL = 'MLmodel';

/** An MLflow model as scoreline registers it. */
export interface MlflowModel {
  /** The ONNX bytes of the flavor's model file: what is served, and what the registry's sha256 covers. */
  readonly bytes: Uint8Array;
  /** The flavor's model file, relative to the model's folder. */
  readonly modelFile: string;
  /** Feature names from the signature, or null when it names none usable. */
  readonly features: string[] | null;
  /** Kept with the version: `{ mlflow: {...} }`. */
  readonly lineage: JsonObject;
}

/** Reads a file of the model's folder by its relative path; undefined when there is none. */
type ReadFile = (path: string) => Uint8Array | undefined;

/** Column types that feed a numeric input, and what a client sends for each. */
export const MLFLOW_NUMERIC_TYPES: Readonly<Record<string, string>> = {
  boolean: '0 or 1',
  integer: 'an integer',
  long: 'an integer',
  float: 'a number',
  double: 'a number',
};

// Flavors whose model file is a Python pickle (or cloudpickle): loading one executes code.
const PICKLE_FLAVORS = new Set([
  'sklearn',
  'python_function',
  'pytorch',
  'statsmodels',
  'fastai',
  'spacy',
  'h2o',
  'pmdarima',
  'prophet',
  'diviner',
  'langchain',
  'transformers',
  'sentence_transformers',
]);

const MAX_MLMODEL_BYTES = 1024 * 1024;
/** Input examples up to this size are kept in the lineage whole; larger ones by size and sha256. */
const MAX_EXAMPLE_BYTES = 64 * 1024;

/** A path inside the model's folder as MLmodel names it: relative, '/'-separated, no '.' or '..' segments. */
function innerPath(value: unknown, what: string, source: string): string {
  if (typeof value !== 'string' || value.length === 0) throw mlflowInvalid(source, `${what} must name a file in the model's folder`);
  const path = value.startsWith('./') ? value.slice(2) : value;
  const segments = path.split('/');
  if (
    path.startsWith('/') ||
    /^[A-Za-z]:/.test(path) ||
    path.includes('\\') ||
    path.includes('\0') ||
    segments.some((s) => s === '' || s === '.' || s === '..')
  ) {
    throw mlflowInvalid(source, `${what} '${value}' is not a plain relative path inside the model's folder`);
  }
  return path;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function parseMlmodel(bytes: Uint8Array, source: string): Record<string, unknown> {
  if (bytes.length > MAX_MLMODEL_BYTES) throw mlflowInvalid(source, `MLmodel is larger than ${MAX_MLMODEL_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = YAML.parse(utf8.decode(bytes));
  } catch (e) {
    throw mlflowInvalid(source, `MLmodel is not YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw mlflowInvalid(source, 'MLmodel must be a YAML mapping');
  return doc as Record<string, unknown>;
}

interface Column {
  readonly name: string | undefined;
  readonly type: string;
}

/** signature.inputs: MLflow writes a JSON string; a YAML list is taken too. Null when absent. */
function signatureInputs(signature: unknown, source: string): { columns: Column[] | null; tensor: boolean; raw: unknown } {
  if (signature === undefined || signature === null) return { columns: null, tensor: false, raw: null };
  if (typeof signature !== 'object' || Array.isArray(signature))
    throw mlflowInvalid(source, 'MLmodel signature must be a mapping with "inputs"');
  let inputs = (signature as Record<string, unknown>).inputs;
  if (inputs === undefined || inputs === null) return { columns: null, tensor: false, raw: null };
  if (typeof inputs === 'string') {
    try {
      inputs = JSON.parse(inputs);
    } catch (e) {
      throw mlflowInvalid(source, `MLmodel signature.inputs is not JSON: ${(e as Error).message}`);
    }
  }
  if (!Array.isArray(inputs)) throw mlflowInvalid(source, 'MLmodel signature.inputs must be a list of column or tensor specs');
  const columns: Column[] = [];
  let tensor = false;
  for (const [i, spec] of inputs.entries()) {
    if (spec === null || typeof spec !== 'object' || Array.isArray(spec))
      throw mlflowInvalid(source, `MLmodel signature.inputs[${i}] must be an object`);
    const s = spec as Record<string, unknown>;
    if (s.name !== undefined && typeof s.name !== 'string')
      throw mlflowInvalid(source, `MLmodel signature.inputs[${i}].name must be a string`);
    if (s.type === 'tensor') tensor = true;
    // Array/object/map columns carry their type as an object; "any" and the scalar types as a string.
    const type =
      typeof s.type === 'string'
        ? s.type
        : s.type !== null && typeof s.type === 'object'
          ? String((s.type as Record<string, unknown>).type ?? 'object')
          : '?';
    columns.push({ name: s.name as string | undefined, type });
  }
  if (tensor && columns.some((c) => c.type !== 'tensor'))
    throw mlflowInvalid(source, 'MLmodel signature.inputs mixes tensor and column specs');
  return { columns: tensor ? null : columns, tensor, raw: inputs };
}

/** The feature names the signature gives this model, or null; throws when the signature cannot describe its input. */
function featuresOf(columns: Column[] | null, inputs: readonly TensorSpec[], source: string): string[] | null {
  if (columns === null || columns.length === 0) return null;
  const input = inputs[0]!;
  // Columns matched to several ONNX inputs by name are the model's own contract: no feature columns.
  if (inputs.length !== 1 || input.shape.length !== 2) return null;
  if (columns.some((c) => c.name === undefined || c.name === '')) return null;
  const width = input.shape[1]!;
  if (width !== -1 && width !== columns.length) {
    throw mlflowInvalid(source, `its signature has ${columns.length} input columns but the ONNX input '${input.name}' has ${width}`);
  }
  const names = columns.map((c) => c.name!);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup !== undefined) throw mlflowInvalid(source, `its signature names column '${dup}' twice`);
  const bad = columns.find((c) => MLFLOW_NUMERIC_TYPES[c.type] === undefined);
  if (bad !== undefined) {
    throw mlflowInvalid(
      source,
      `signature column '${bad.name}' has type '${bad.type}', which cannot feed the model's numeric input '${input.name}' (${input.datatype}); ` +
        `accepted column types: ${Object.keys(MLFLOW_NUMERIC_TYPES).join(', ')}. Encode '${bad.name}' as numbers before the model, or inside the ONNX graph`,
    );
  }
  return names;
}

/** What MLmodel, its signature and the input example say, for the version's lineage. */
function lineageOf(
  doc: Record<string, unknown>,
  modelFile: string,
  mlmodel: Uint8Array,
  signatureRaw: unknown,
  read: ReadFile,
  source: string,
): JsonObject {
  const pick = (k: string) => (typeof doc[k] === 'string' || typeof doc[k] === 'number' ? doc[k] : undefined);
  const flavors = doc.flavors as Record<string, Record<string, unknown>>;
  const signature = doc.signature as Record<string, unknown> | undefined;
  const parseMaybe = (v: unknown) => {
    if (typeof v !== 'string') return v ?? null;
    try {
      return JSON.parse(v) as unknown;
    } catch {
      return v;
    }
  };
  const info = doc.saved_input_example_info as Record<string, unknown> | undefined;
  const examplePath = innerPath(info?.artifact_path ?? 'input_example.json', 'saved_input_example_info.artifact_path', source);
  const example = read(examplePath);
  let inputExample: unknown = null;
  if (example !== undefined) {
    const sha256 = createHash('sha256').update(example).digest('hex');
    let parsed: unknown;
    try {
      parsed = example.length <= MAX_EXAMPLE_BYTES ? JSON.parse(utf8.decode(example)) : undefined;
    } catch {
      parsed = undefined;
    }
    inputExample = { file: examplePath, bytes: example.length, sha256, ...(parsed !== undefined ? { value: parsed } : {}) };
  }
  const mlflow: Record<string, unknown> = {
    model_file: modelFile,
    mlmodel_sha256: createHash('sha256').update(mlmodel).digest('hex'),
    flavors: Object.keys(flavors),
    onnx_version: flavors.onnx?.onnx_version ?? null,
    signature:
      signature === undefined
        ? null
        : { inputs: signatureRaw, outputs: parseMaybe(signature.outputs), params: parseMaybe(signature.params) },
    input_example: inputExample,
  };
  for (const k of ['run_id', 'model_uuid', 'mlflow_version', 'utc_time_created', 'artifact_path', 'model_id']) {
    const v = pick(k);
    if (v !== undefined) mlflow[k] = v;
  }
  // Round-trip through JSON: what YAML produced must be plain data before the registry stores it.
  return { mlflow: JSON.parse(JSON.stringify(mlflow)) as JsonObject };
}

/** The onnx flavor's model file MLmodel names, or the refusal of a model without it. */
function flavorFile(doc: Record<string, unknown>, source: string): string {
  const flavors = doc.flavors;
  if (flavors === null || typeof flavors !== 'object' || Array.isArray(flavors) || Object.keys(flavors).length === 0) {
    throw mlflowInvalid(source, 'MLmodel names no flavors');
  }
  const names = Object.keys(flavors);
  const onnx = (flavors as Record<string, unknown>).onnx as Record<string, unknown> | undefined;
  if (onnx === undefined || onnx === null) {
    const pickled = names.filter((f) => PICKLE_FLAVORS.has(f));
    if (pickled.length > 0)
      throw unsupportedFormat(
        source,
        `an MLflow model without the onnx flavor (flavors: ${names.join(', ')}), whose model is a Python pickle`,
      );
    throw notOnnx(source, `an MLflow model without the onnx flavor (flavors: ${names.join(', ')})`);
  }
  if (typeof onnx !== 'object' || Array.isArray(onnx)) throw mlflowInvalid(source, 'MLmodel flavors.onnx must be a mapping');
  return innerPath(onnx.data, 'flavors.onnx.data', source);
}

/** Reads the MLflow model whose folder `read` sees; `source` names it in every error. */
export function readMlflowModel(read: ReadFile, source: string): MlflowModel {
  const mlmodel = read(MLMODEL);
  if (mlmodel === undefined) throw mlflowInvalid(source, `there is no ${MLMODEL} file`);
  const doc = parseMlmodel(mlmodel, source);
  const modelFile = flavorFile(doc, source);
  const bytes = read(modelFile);
  if (bytes === undefined) throw mlflowInvalid(source, `the onnx flavor's model file '${modelFile}' is not there`);
  const where = `${source} (${modelFile})`;
  let meta: ReturnType<typeof assertOnnx>;
  try {
    meta = assertOnnx(bytes, where);
  } catch (e) {
    // MLflow saves ONNX with external data by default: say which switch turns it off.
    if (isScorelineError(e) && e.code === 'EXTERNAL_DATA') {
      e.message += '. With MLflow: mlflow.onnx.log_model(..., save_as_external_data=False)';
    }
    throw e;
  }
  const signature = signatureInputs(doc.signature, source);
  const features = featuresOf(signature.columns, meta.inputs, source);
  return { bytes, modelFile, features, lineage: lineageOf(doc, modelFile, mlmodel, signature.raw, read, source) };
}

/** Whether a folder holds an MLflow model (an MLmodel file). */
export const isMlflowFolder = (dir: string): boolean => existsSync(join(dir, MLMODEL));

const folderReader =
  (dir: string): ReadFile =>
  (path) => {
    const file = join(dir, path);
    return existsSync(file) && statSync(file).isFile() ? readFileSync(file) : undefined;
  };

/** Reads an MLflow model folder of a model repository. */
export function readMlflowFolder(dir: string): MlflowModel {
  return readMlflowModel(folderReader(dir), dir);
}

/** The model file (relative to the folder) of an MLflow model folder, reading MLmodel only: what a repository scan hashes. */
export function mlflowModelFile(dir: string): string {
  const mlmodel = folderReader(dir)(MLMODEL);
  if (mlmodel === undefined) throw mlflowInvalid(dir, `there is no ${MLMODEL} file`);
  const file = flavorFile(parseMlmodel(mlmodel, dir), dir);
  const path = join(dir, file);
  if (!existsSync(path) || !statSync(path).isFile()) throw mlflowInvalid(dir, `the onnx flavor's model file '${file}' is not there`);
  return file;
}

export const ARCHIVE_TYPES: readonly string[] = ['application/gzip', 'application/x-gzip', 'application/x-tar+gzip', 'application/x-tar'];

/**
 * Reads an MLflow model from a tar (gzip-compressed or not) held in memory: MLmodel at the top of
 * the archive, or inside its one top-level folder (`tar czf model.tar.gz model/`). Unpacked bytes
 * beyond `maxBytes` refuse the archive (413).
 */
export function readMlflowArchive(archive: Uint8Array, maxBytes: number, source: string): MlflowModel {
  const files = new Map<string, Uint8Array>();
  let unpacked = 0;
  let failure: Error | null = null;
  const fail = (e: Error) => {
    failure ??= e;
    parser.abort(e);
  };
  const parser = new Parser({
    strict: true,
    onReadEntry: (entry: ReadEntry) => {
      if (failure !== null) return entry.resume();
      const path = entry.path.startsWith('./') ? entry.path.slice(2) : entry.path;
      if (entry.type === 'SymbolicLink' || entry.type === 'Link')
        return fail(badRequest(`${source}: entry '${entry.path}' is a link; the archive must hold plain files`));
      if (path.startsWith('/') || /^[A-Za-z]:/.test(path) || path.split(/[\\/]/).includes('..')) {
        return fail(badRequest(`${source}: entry '${entry.path}' points outside the archive (absolute, or with '..')`));
      }
      if (entry.type === 'Directory') return entry.resume();
      if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'ContiguousFile') {
        return fail(badRequest(`${source}: entry '${entry.path}' is a ${entry.type}; the archive must hold plain files`));
      }
      unpacked += entry.size;
      if (unpacked > maxBytes) return fail(bodyTooLarge(maxBytes));
      const chunks: Buffer[] = [];
      entry.on('data', (c: Buffer) => chunks.push(c));
      entry.on('end', () => {
        files.set(path.replace(/\/+$/, ''), Buffer.concat(chunks));
      });
      return undefined;
    },
  });
  parser.on('error', (e: Error) => {
    failure ??= badRequest(`${source} is not a readable tar or tar.gz archive: ${e.message}`);
  });
  parser.on('warn', (_code: string, message: string | Error) => {
    failure ??= badRequest(`${source} is not a readable tar or tar.gz archive: ${typeof message === 'string' ? message : message.message}`);
  });
  // The parser is synchronous over a buffer: every entry has been seen once end() returns.
  parser.end(Buffer.from(archive.buffer, archive.byteOffset, archive.byteLength));
  if (failure !== null) throw failure;
  if (files.size === 0) throw badRequest(`${source} holds no files; send a tar.gz of an MLflow model folder`);
  let prefix = '';
  if (!files.has(MLMODEL)) {
    const tops = new Set([...files.keys()].map((p) => p.split('/')[0]!));
    const top = [...tops][0]!;
    if (tops.size !== 1 || !files.has(`${top}/${MLMODEL}`)) {
      throw mlflowInvalid(source, `there is no ${MLMODEL} at the top of the archive or in its one top-level folder`);
    }
    prefix = `${top}/`;
  }
  return readMlflowModel((path) => files.get(prefix + path), source);
}
