// `scoreline export predictions` on a real monitoring.db written by the log's own store code, read
// back by an independent reader: the Parquet file through parquet-wasm (the Rust parquet crate in
// WebAssembly) into Apache Arrow, JSON Lines and CSV by parsing them. Every row and every type is
// checked: ids (a reused id is kept by its first prediction only, the other row exports null),
// times, versions with different features (the union of columns, null where a version has none), a
// feature named like a fixed column, labels joined by feedback, scores and inputs that were not
// finite, the time window, other models left out, several row groups.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { tableFromIPC, type Table } from 'apache-arrow';
import Database from 'better-sqlite3';
import { ParquetFile, readParquet } from 'parquet-wasm';
import { openStore, type AppendSegment } from '../src/monitoring/log-store.js';
import { ModelRegistry } from '../src/registry/store.js';
import { writeSumModel } from './fixtures/models.js';
import { CLI, ROOT, tempDir } from './e2e/server.js';

const T0 = Date.UTC(2026, 2, 1, 9, 0, 0);

interface Row {
  request_id: string | null;
  ts: number;
  model: string;
  version: number;
  variant: string;
  score: number | null;
  label: number | null;
  labelled_at: number | null;
  features: Record<string, number | null>;
}

const V1 = ['income', 'score', 'age'];
const V2 = ['income', 'debt'];
const COLUMNS = [
  'request_id',
  'ts',
  'model',
  'version',
  'variant',
  'score',
  'label',
  'labelled_at',
  'income',
  'feature_score',
  'age',
  'debt',
];

function segment(
  model: string,
  version: number,
  variant: string,
  width: number,
  rows: { id: string; ts: number; score: number; x: number[] }[],
): AppendSegment {
  const n = rows.length;
  const ts = new Float64Array(n);
  const scores = new Float64Array(n);
  const features = new Float32Array(n * width);
  rows.forEach((r, i) => {
    ts[i] = r.ts;
    scores[i] = r.score;
    features.set(r.x, i * width);
  });
  return { model, version, variant, task: 'classification', width, n, ids: JSON.stringify(rows.map((r) => r.id)), ts, scores, features };
}

/** A data dir with a registry (feature names) and a prediction log; returns what an export of `credit` must hold. */
async function fixture(): Promise<{ dataDir: string; rows: Row[] }> {
  const dir = await tempDir('scoreline-export-');
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir);
  const registry = ModelRegistry.open(dataDir);
  registry.register('credit', (await writeSumModel(join(dir, 'm'), 'sum', 1)).bytes, { version: 1, config: { features: V1 } });
  registry.register('credit', (await writeSumModel(join(dir, 'm'), 'sum', 2)).bytes, { version: 2, config: { features: V2 } });
  registry.close();

  const db = new Database(join(dataDir, 'monitoring.db'));
  const store = openStore(db, false);
  const v1a = Array.from({ length: 5 }, (_, i) => ({
    id: `r1-${i}`,
    ts: T0 + i * 1000,
    score: 0.1 * i + 0.05,
    x: [1000 + i, i / 3, 30 + i],
  }));
  // The id with a comma and a quote checks CSV quoting; 'dup' comes back in the next segment.
  v1a[1]!.id = 'a,"quoted" id';
  v1a[2]!.id = 'dup';
  // A score the model gave as NaN, and a row logged without inputs (NaN throughout).
  v1a[3]!.score = NaN;
  v1a[4]!.x = [NaN, NaN, NaN];
  const other = [{ id: 'o-1', ts: T0 + 500, score: 0.9, x: [1, 2] }];
  const v2 = Array.from({ length: 6 }, (_, i) => ({
    id: `r2-${i}`,
    ts: T0 + 10_000 + i * 1000,
    score: 1 - 0.1 * i,
    x: [2000.5 + i, -0.5 - i * 1.25],
  }));
  v2[0]!.id = 'dup';
  // Outside the window the test asks for.
  const late = [{ id: 'late-1', ts: T0 + 3_600_000, score: 0.5, x: [1, 2, 3] }];
  store.writeGroup([
    {
      kind: 'append',
      through: 1,
      position: 0,
      rows: 13,
      segments: [
        segment('credit', 1, 'default', 3, v1a),
        segment('other', 1, 'default', 2, other),
        segment('credit', 2, 'canary', 2, v2),
        segment('credit', 1, 'default', 3, late),
      ],
    },
  ]);
  const labelledAt = T0 + 7_200_000;
  const fb = store.feedback(
    [
      { requestId: 'r1-0', label: 1 },
      { requestId: 'r2-3', label: 0 },
      { requestId: 'a,"quoted" id', label: 0 },
    ],
    labelledAt,
  );
  assert.equal(fb.joined, 3);
  db.close();

  const f32 = (x: number) => (Number.isNaN(x) ? null : Math.fround(x));
  const rows: Row[] = [
    ...v1a.map((r) => ({
      request_id: r.id,
      ts: r.ts,
      model: 'credit',
      version: 1,
      variant: 'default',
      score: Number.isNaN(r.score) ? null : r.score,
      label: r.id === 'r1-0' ? 1 : r.id === 'a,"quoted" id' ? 0 : null,
      labelled_at: r.id === 'r1-0' || r.id === 'a,"quoted" id' ? labelledAt : null,
      features: { income: f32(r.x[0]!), feature_score: f32(r.x[1]!), age: f32(r.x[2]!), debt: null },
    })),
    ...v2.map((r, i) => ({
      // the second 'dup' was not kept: the first prediction owns the id
      request_id: i === 0 ? null : r.id,
      ts: r.ts,
      model: 'credit',
      version: 2,
      variant: 'canary',
      score: r.score,
      label: r.id === 'r2-3' ? 0 : null,
      labelled_at: r.id === 'r2-3' ? labelledAt : null,
      features: { income: f32(r.x[0]!), feature_score: null, age: null, debt: f32(r.x[1]!) },
    })),
  ];
  return { dataDir, rows };
}

function runExport(dataDir: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'export', 'predictions', '--data-dir', dataDir, '--model', 'credit', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const WINDOW = ['--from', new Date(T0).toISOString(), '--to', String(T0 + 60_000)];

/** What a text export says of a row, in the row's own terms. */
function fromRecord(get: (column: string) => unknown, times: 'iso' | 'ms' = 'iso'): Row {
  const n = (v: unknown) => (v === null || v === '' ? null : Number(v));
  const t = (v: unknown) => (v === null || v === '' ? null : times === 'ms' ? Number(v) : Date.parse(v as string));
  return {
    request_id: get('request_id') === '' ? null : (get('request_id') as string | null),
    ts: t(get('ts'))!,
    model: get('model') as string,
    version: Number(get('version')),
    variant: get('variant') as string,
    score: n(get('score')),
    label: n(get('label')),
    labelled_at: t(get('labelled_at')),
    features: Object.fromEntries(COLUMNS.slice(8).map((c) => [c, n(get(c))])),
  };
}

/** RFC 4180: quoted fields with doubled quotes; no newlines inside fields in these files. */
function csvFields(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let v = '';
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        v += line.slice(i, q);
        if (line[q + 1] === '"') {
          v += '"';
          i = q + 2;
        } else {
          i = q + 2;
          break;
        }
      }
      out.push(v);
    } else {
      const c = line.indexOf(',', i);
      const end = c < 0 ? line.length : c;
      out.push(line.slice(i, end));
      i = end + 1;
    }
  }
  return out;
}

test('JSON Lines and CSV exports hold every row of the window with its id, time, label and named inputs', async () => {
  const { dataDir, rows } = await fixture();
  const jsonl = join(dataDir, '..', 'out.jsonl');
  const r = runExport(dataDir, ['--output', jsonl, ...WINDOW, '--quiet']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /exported 11 predictions of credit \(versions 1, 2; 3 labelled; 4 feature columns\)/);
  assert.match(r.stderr, /feature 'score' is exported as column 'feature_score'/);
  const lines = readFileSync(jsonl, 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(Object.keys(lines[0]!), COLUMNS);
  assert.deepEqual(
    lines.map((l) => fromRecord((c) => l[c])),
    rows,
  );
  // Times are UTC with milliseconds; the inputs are the float32 values that were logged.
  assert.equal(lines[0]!.ts, new Date(T0).toISOString());
  assert.equal(lines[1]!.feature_score, Math.fround(1 / 3));

  const csv = join(dataDir, '..', 'out.csv');
  assert.equal(runExport(dataDir, ['--output', csv, ...WINDOW, '--quiet']).status, 0);
  const [header, ...body] = readFileSync(csv, 'utf8').trimEnd().split('\n');
  assert.deepEqual(header!.split(','), COLUMNS);
  assert.deepEqual(
    body.map((l) => {
      const f = csvFields(l);
      assert.equal(f.length, COLUMNS.length, l);
      return fromRecord((c) => f[COLUMNS.indexOf(c)]);
    }),
    rows,
  );
  assert.ok(body[1]!.startsWith('"a,""quoted"" id",'), body[1]);
});

test('the Parquet export reads back in parquet-wasm/Arrow with every row, column type and null intact, over several row groups', async () => {
  const { dataDir, rows } = await fixture();
  const file = join(dataDir, '..', 'out.parquet');
  const r = runExport(dataDir, ['--format', 'parquet', '--output', file, ...WINDOW, '--row-group-rows', '4', '--quiet']);
  assert.equal(r.status, 0, r.stderr);
  const bytes = new Uint8Array(readFileSync(file));
  const table: Table = tableFromIPC(readParquet(bytes).intoIPCStream());
  assert.equal(table.numRows, rows.length);
  const types = Object.fromEntries(table.schema.fields.map((f) => [f.name, `${f.type}${f.nullable ? '?' : ''}`]));
  assert.deepEqual(
    table.schema.fields.map((f) => f.name),
    COLUMNS,
  );
  assert.deepEqual(types, {
    request_id: 'Utf8?',
    ts: 'Timestamp<MILLISECOND, UTC>',
    model: 'Utf8',
    version: 'Int32',
    variant: 'Utf8',
    score: 'Float64?',
    label: 'Float64?',
    labelled_at: 'Timestamp<MILLISECOND, UTC>?',
    income: 'Float32?',
    feature_score: 'Float32?',
    age: 'Float32?',
    debt: 'Float32?',
  });
  const read = table.toArray().map((rec) => {
    const o = rec.toJSON() as Record<string, unknown>;
    return fromRecord((c) => o[c], 'ms');
  });
  assert.deepEqual(read, rows);

  const meta = (await ParquetFile.fromFile(new Blob([bytes]))).metadata();
  assert.equal(meta.numRowGroups(), 3, '11 rows in groups of 4');
  assert.equal(meta.fileMetadata().keyValueMetadata().get('scoreline.model'), 'credit');
  assert.match(meta.fileMetadata().createdBy() ?? '', /^scoreline /);
});

test('a version filter, an empty window, and the errors: unknown model, no log, bad flags; a failed export leaves no file', async () => {
  const { dataDir } = await fixture();
  const out = join(dataDir, '..', 'v2.jsonl');
  assert.equal(runExport(dataDir, ['--version', '2', '--output', out, ...WINDOW, '--quiet']).status, 0);
  const lines = readFileSync(out, 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    lines.map((l) => l.version),
    [2, 2, 2, 2, 2, 2],
  );
  // Only version 2's features are columns now.
  assert.deepEqual(Object.keys(lines[0]!).slice(8), ['income', 'debt']);

  const empty = join(dataDir, '..', 'empty.csv');
  const e = runExport(dataDir, ['--output', empty, '--from', String(T0 - 10_000), '--to', String(T0 - 5_000), '--quiet']);
  assert.equal(e.status, 0, e.stderr);
  assert.equal(readFileSync(empty, 'utf8'), `${COLUMNS.slice(0, 8).join(',')}\n`);

  const unknown = spawnSync(
    process.execPath,
    [CLI, 'export', 'predictions', '--data-dir', dataDir, '--model', 'nope', '--output', join(dataDir, '..', 'x.csv')],
    { encoding: 'utf8' },
  );
  assert.equal(unknown.status, 1);
  assert.match(unknown.stderr, /the prediction log has no predictions of model 'nope' \(it has: credit, other\)/);
  assert.equal(existsSync(join(dataDir, '..', 'x.csv')), false);
  assert.deepEqual(
    readdirSync(join(dataDir, '..')).filter((f) => f.includes('.partial')),
    [],
    'no partial file left',
  );

  const noLog = runExport(join(dataDir, 'nowhere'), ['--output', join(dataDir, '..', 'y.csv')]);
  assert.equal(noLog.status, 1);
  assert.match(noLog.stderr, /there is no prediction log at .*monitoring\.db/);

  const bad = runExport(dataDir, ['--output', join(dataDir, '..', 'z.txt')]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--format must be one of parquet, jsonl, csv/);
  assert.equal(runExport(dataDir, ['--output', out, '--from', 'yesterday']).status, 2);
});
