// scoreBatch: scores a CSV or JSON Lines file with one registered model version and writes the scores
// and the rejected rows, streaming in constant memory. The main thread reads the file in chunks and
// parses rows straight into batch buffers; batches run on the model's own worker pool with a bounded
// number in flight; outputs are written in input order, waiting whenever the disk is behind. A batch
// the model refuses is split in halves until only the rows it refuses are left, and those are
// rejected. Nothing here knows HTTP or the CLI.
//
// Contract, in short:
// - Input columns: model.yaml `features` name them (a CSV header must hold all of them, in any order,
//   extra columns allowed; a JSONL object must hold all of them). A model without `features` takes
//   every non-id column of the CSV header (or non-id key of the first JSONL object) in file order,
//   and their count must match the input's width when the model fixes it.
// - A row is one CSV record (RFC 4180; a quoted field may span lines) or one JSONL line; blank lines
//   are skipped and counted apart. A row that cannot be scored goes to the rejects file
//   (`line,reason,raw`, line = the file line where the row starts, header = line 1) in line order.
// - Output: id columns, then every output flattened in output order (`label`, `probabilities_0`,
//   `probabilities_1`; an output with one value per row is one column named after it). Floats are
//   written as the HTTP responses write them (String() of the value).
// - Output and rejects appear under their names only when the run succeeds (temp file + rename).

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { extname, resolve } from 'node:path';
import { badRequest, inferenceFailed, tooManyRejects } from '../errors.js';
import { significant3 } from '../numbers.js';
import { ModelRunError, PoolExecutor, type RunResult } from '../inference/index.js';
import type { SessionSpec } from '../inference/session.js';
import type { Registry } from '../store/index.js';
import { CsvReader, type RecordReader } from './csv.js';
import { JsonlReader } from './jsonl.js';
import { bindColumns } from './layout.js';
import { resolveBatchModel, sessionSpec, type BatchModel } from './model.js';
import {
  FileSink,
  outputColumns,
  REJECTS_HEADER,
  RowFormatter,
  rejectLines,
  type ModelReject,
  type OutputFormat,
  type Segment,
} from './output.js';
import { BatchAssembler, type RowBatch } from './rows.js';

export interface BatchProgress {
  /** Data rows read so far (scored, rejected or waiting). */
  readonly rows: number;
  readonly rejected: number;
  readonly bytesRead: number;
  readonly bytesTotal: number;
  readonly rowsPerSecond: number;
}

export interface ScoreBatchOptions {
  readonly registry: Registry;
  /** NAME (its latest version), NAME@VERSION or NAME@ALIAS. */
  readonly model: string;
  /** .csv, or .jsonl / .ndjson. */
  readonly input: string;
  /** .csv, or .jsonl / .ndjson. */
  readonly output: string;
  /** Default `<output>.rejects.csv`. */
  readonly rejects?: string;
  /** Input columns copied to every output row, first. */
  readonly idColumns?: readonly string[];
  /** Rows per model run (default 4096). */
  readonly batchRows?: number;
  /** Worker threads running the model (default cores - 1, at least 1). */
  readonly workers?: number;
  /** Called about every 200 ms and once at the end. */
  readonly progress?: (p: BatchProgress) => void;
  /**
   * More rejected rows than this (a count, or a percentage of the rows read) fails the run: the
   * output is not written, the rejects file is, so the reasons can be read.
   */
  readonly maxRejects?: { count: number } | { percent: number };
}

export interface BatchSummary {
  readonly model: string;
  readonly version: number;
  /** Data rows read: scored + rejected (blank lines are not rows). */
  readonly rows: number;
  readonly scored: number;
  readonly rejected: number;
  readonly blankLines: number;
  readonly seconds: number;
  readonly rowsPerSecond: number;
  /** Highest resident set size of the process seen during the run (main thread and workers). */
  readonly peakRssBytes: number;
  readonly output: string;
  readonly rejects: string;
}

export const DEFAULT_BATCH_ROWS = 4096;
/** Batches queued per worker, so a worker never waits for the main thread between two. */
const BATCHES_PER_WORKER = 2;
const CHUNK_BYTES = 512 * 1024;
const MAX_RECORD_BYTES = 1024 * 1024;
const PROGRESS_MS = 200;

type Settled = { result: RunResult } | { error: unknown };

interface InFlight {
  readonly batch: RowBatch;
  readonly run: Promise<Settled> | null;
}

function formatOf(path: string, what: string): OutputFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  throw badRequest(`${what} ${path} must end in .csv, .jsonl or .ndjson (got '${ext || 'no extension'}')`);
}

function positiveInt(v: number | undefined, fallback: number, what: string, max: number): number {
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || v < 1 || v > max) throw badRequest(`${what} must be an integer from 1 to ${max}, got ${v}`);
  return v;
}

export async function scoreBatch(opts: ScoreBatchOptions): Promise<BatchSummary> {
  const started = performance.now();
  const inputFormat = formatOf(opts.input, 'input');
  const outputFormat = formatOf(opts.output, 'output');
  const rejectsPath = opts.rejects ?? `${opts.output}.rejects.csv`;
  const paths = [opts.input, opts.output, rejectsPath].map((p) => resolve(p));
  if (new Set(paths).size !== 3) throw badRequest('the input, output and rejects files must be three different files');
  const idColumns = [...(opts.idColumns ?? [])];
  if (new Set(idColumns).size !== idColumns.length) throw badRequest(`id columns are named more than once: ${idColumns.join(', ')}`);
  const batchRows = positiveInt(opts.batchRows, DEFAULT_BATCH_ROWS, 'batchRows', 1_000_000);
  const workers = positiveInt(opts.workers, Math.max(1, availableParallelism() - 1), 'workers', 256);

  const model = await resolveBatchModel(opts.registry, opts.model, batchRows);
  let bytesTotal: number;
  try {
    const s = await stat(opts.input);
    if (!s.isFile()) throw new Error('not a file');
    bytesTotal = s.size;
  } catch (e) {
    throw badRequest(`cannot read input ${opts.input}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }

  const executor = new PoolExecutor({ workers, tasksPerWorker: BATCHES_PER_WORKER });
  const sinks: FileSink[] = [];
  try {
    const run = new BatchRun(model, executor, idColumns, outputFormat, started, bytesTotal, opts.progress);
    // Workers load the model while the first chunks are parsed (when the width is known up front).
    if (model.width > 0) run.load(model.width);
    const out = await FileSink.open(opts.output);
    sinks.push(out);
    const rejects = await FileSink.open(rejectsPath);
    sinks.push(rejects);
    await rejects.write(REJECTS_HEADER);
    await run.stream(opts.input, inputFormat, out, rejects);
    const a = run.assembler;
    const rejected = a.rejected + run.modelRejected;
    const over = overRejectLimit(opts.maxRejects, rejected, a.rows);
    if (over !== null) {
      await rejects.commit();
      sinks.splice(sinks.indexOf(rejects), 1);
      throw tooManyRejects(`${over}; the output was not written, the rejected rows and their reasons are in ${rejectsPath}`);
    }
    await out.commit();
    await rejects.commit();
    const seconds = (performance.now() - started) / 1000;
    return {
      model: model.name,
      version: model.version,
      rows: a.rows,
      scored: run.scored,
      rejected,
      blankLines: a.blankLines,
      seconds,
      rowsPerSecond: a.rows / seconds,
      peakRssBytes: run.peakRss,
      output: opts.output,
      rejects: rejectsPath,
    };
  } catch (e) {
    await Promise.all(sinks.map((s) => s.abort()));
    throw e;
  } finally {
    await executor.close();
  }
}

/** Why a run's rejects exceed its limit, or null when they do not. */
export function overRejectLimit(limit: ScoreBatchOptions['maxRejects'], rejected: number, rows: number): string | null {
  if (limit === undefined) return null;
  if ('count' in limit)
    return rejected > limit.count ? `${rejected} of ${rows} rows were rejected, more than the limit of ${limit.count}` : null;
  const share = rows === 0 ? 0 : (100 * rejected) / rows;
  return share > limit.percent
    ? `${rejected} of ${rows} rows were rejected (${significant3(share)}%), more than the limit of ${limit.percent}%`
    : null;
}

/** One run's state: the reader's batches in, scored text out, in order. */
class BatchRun {
  readonly assembler: BatchAssembler;
  scored = 0;
  modelRejected = 0;
  peakRss = process.memoryUsage.rss();
  private spec: SessionSpec | null = null;
  private loading: Promise<void> | null = null;
  private formatter: RowFormatter | null = null;
  private readonly inFlight: InFlight[] = [];
  private readonly maxInFlight: number;
  private bytesRead = 0;
  private lastProgress = 0;

  constructor(
    private readonly model: BatchModel,
    private readonly executor: PoolExecutor,
    private readonly idColumns: readonly string[],
    private readonly outputFormat: OutputFormat,
    private readonly started: number,
    private readonly bytesTotal: number,
    private readonly onProgress: ((p: BatchProgress) => void) | undefined,
  ) {
    this.maxInFlight = executor.slots;
    this.assembler = new BatchAssembler(model.batchRows, idColumns.length, model.type, model.width, this.maxInFlight + 4);
  }

  /** Starts loading the model on every worker (once); the first batch waits for it. */
  load(width: number): void {
    if (this.loading !== null) return;
    const spec = sessionSpec(this.model, width);
    this.spec = spec;
    this.loading = this.executor.load(spec).then(
      () => undefined,
      (e: unknown) => {
        throw inferenceFailed(`model '${this.model.name}' version ${this.model.version} failed to load: ${(e as Error).message}`);
      },
    );
    this.loading.catch(() => undefined); // awaited before the first batch; this only keeps it from counting as unhandled
  }

  /** Waits until every worker holds the model; rows are only committed after the width is known, which starts the load. */
  private async loaded(): Promise<void> {
    if (this.loading === null) throw new Error('rows were read before the input columns were bound');
    await this.loading;
  }

  async stream(path: string, format: OutputFormat, out: FileSink, rejects: FileSink): Promise<void> {
    const reader = this.reader(path, format);
    const input = createReadStream(path, { highWaterMark: CHUNK_BYTES });
    for await (const chunk of input) {
      this.bytesRead += (chunk as Buffer).length;
      reader.push(chunk as Buffer);
      await this.dispatch(out, rejects);
      this.progress(false);
    }
    reader.end();
    await this.dispatch(out, rejects);
    while (this.inFlight.length > 0) await this.complete(this.inFlight.shift()!, out, rejects);
    // A file without rows still proves the model loads, as every other run does.
    if (this.loading !== null) await this.loading;
    if (this.formatter === null) await out.write(this.makeFormatter(this.model.outputs.map((o) => ({ ...o, dims: o.shape }))).header());
    this.progress(true);
  }

  private reader(path: string, format: OutputFormat): RecordReader {
    const m = this.model;
    const onColumns = (names: readonly string[]) => {
      this.assembler.setWidth(names.length);
      this.load(names.length);
    };
    if (format === 'csv') {
      return new CsvReader(this.assembler, {
        type: m.type,
        maxRecordBytes: MAX_RECORD_BYTES,
        source: path,
        bind: (header) => {
          const b = bindColumns(header, { features: m.features, width: m.width, idColumns: this.idColumns }, path);
          onColumns(b.featureNames);
          return b;
        },
      });
    }
    return new JsonlReader(this.assembler, {
      type: m.type,
      features: m.features,
      width: m.width,
      idColumns: this.idColumns,
      onColumns,
      maxRecordBytes: MAX_RECORD_BYTES,
      source: path,
    });
  }

  /** Sends every sealed batch to the workers, first writing the oldest results whenever all slots are taken. */
  private async dispatch(out: FileSink, rejects: FileSink): Promise<void> {
    const ready = this.assembler.ready;
    while (ready.length > 0) {
      const batch = ready.shift()!;
      while (this.inFlight.length >= this.maxInFlight) await this.complete(this.inFlight.shift()!, out, rejects);
      if (batch.rows > 0) await this.loaded();
      this.inFlight.push({ batch, run: batch.rows > 0 ? this.runRows(batch, 0, batch.rows) : null });
    }
  }

  private runRows(batch: RowBatch, start: number, rows: number): Promise<Settled> {
    const w = batch.width;
    const data = batch.data.subarray(start * w, (start + rows) * w);
    const input = { name: this.model.input.name, datatype: this.model.input.datatype, dims: [rows, w], data };
    return this.executor.run(this.spec!, [input]).then(
      (result) => ({ result }),
      (error: unknown) => ({ error }),
    );
  }

  /** Waits for a batch's scores (splitting it if the model refuses it) and writes its rows and rejects. */
  private async complete(job: InFlight, out: FileSink, rejects: FileSink): Promise<void> {
    const { batch } = job;
    const segments: Segment[] = [];
    const refused: ModelReject[] = [];
    if (job.run !== null) {
      let settled = await job.run;
      // A lost worker is not the rows' fault: try the batch once more before giving up the run.
      if ('error' in settled && !(settled.error instanceof ModelRunError)) settled = await this.runRows(batch, 0, batch.rows);
      await this.split(batch, 0, batch.rows, settled, segments, refused);
    }
    if (segments.length > 0) {
      const formatter = this.formatter ?? this.makeFormatter(segments[0]!.result.outputs);
      if (this.formatter === null) {
        this.formatter = formatter;
        await out.write(formatter.header());
      }
      for (const s of segments) this.checkShapes(s);
      await out.write(formatter.rows(batch, segments));
    }
    await rejects.write(rejectLines(batch, refused));
    this.scored += batch.rows - refused.length;
    this.modelRejected += refused.length;
    this.assembler.recycle(batch);
    const rss = process.memoryUsage.rss();
    if (rss > this.peakRss) this.peakRss = rss;
  }

  /** Scored parts of rows [start, start + rows) into `segments`, refused single rows into `refused`. */
  private async split(
    batch: RowBatch,
    start: number,
    rows: number,
    settled: Settled,
    segments: Segment[],
    refused: ModelReject[],
  ): Promise<void> {
    if ('result' in settled) {
      segments.push({ start, rows, result: settled.result });
      return;
    }
    const error = settled.error;
    if (!(error instanceof ModelRunError)) throw inferenceFailed(error instanceof Error ? error.message : String(error));
    if (rows === 1) {
      refused.push({ row: start, reason: `model error: ${error.message.split('\n')[0]!.slice(0, 500)}` });
      return;
    }
    const half = rows >> 1;
    await this.split(batch, start, half, await this.runRows(batch, start, half), segments, refused);
    await this.split(batch, start + half, rows - half, await this.runRows(batch, start + half, rows - half), segments, refused);
  }

  private makeFormatter(
    outputs: readonly { name: string; datatype: RunResult['outputs'][number]['datatype']; dims: readonly number[] }[],
  ): RowFormatter {
    return new RowFormatter(this.outputFormat, this.idColumns, outputColumns(outputs));
  }

  private checkShapes(s: Segment): void {
    const cols = this.formatter!.outputs;
    s.result.outputs.forEach((t, i) => {
      let perRow = 1;
      for (let d = 1; d < t.dims.length; d++) perRow *= t.dims[d]!;
      if (t.dims[0] !== s.rows || perRow !== cols[i]!.perRow) {
        throw inferenceFailed(
          `output '${t.name}' has shape [${t.dims.join(', ')}] for ${s.rows} rows; expected [${s.rows}, ...] with ${cols[i]!.perRow} values per row as in the first batch`,
        );
      }
    });
  }

  private progress(final: boolean): void {
    if (this.onProgress === undefined) return;
    const now = performance.now();
    if (!final && now - this.lastProgress < PROGRESS_MS) return;
    this.lastProgress = now;
    const a = this.assembler;
    const seconds = (now - this.started) / 1000;
    this.onProgress({
      rows: a.rows,
      rejected: a.rejected + this.modelRejected,
      bytesRead: this.bytesRead,
      bytesTotal: this.bytesTotal,
      rowsPerSecond: seconds > 0 ? a.rows / seconds : 0,
    });
  }
}
