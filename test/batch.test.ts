// Tests for batch scoring (src/batch): real registry in a temp dir, real onnxruntime workers, real
// files. Scores checked against the fixture models' known answers; order across many batches and
// workers; id columns; rejects with line numbers and reasons (text, missing/extra fields, NaN,
// Infinity, empty values, bad JSON, model errors) while good rows are scored; blank lines skipped;
// CRLF, BOM and quoted fields; version and alias resolution; errors for unknown models; and memory
// staying bounded on 200k rows. The decimal parser is checked against Number().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createWriteStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scoreBatch, parseModelRef, type BatchProgress, type ScoreBatchOptions } from '../src/batch/index.js';
import { cellType, parseDecimal } from '../src/batch/cells.js';
import { CsvReader, type RecordReader } from '../src/batch/csv.js';
import { JsonlReader } from '../src/batch/jsonl.js';
import { bindColumns } from '../src/batch/layout.js';
import { BatchAssembler } from '../src/batch/rows.js';
import { parseModelConfig } from '../src/config.js';
import type { ScorelineError } from '../src/errors.js';
import { ModelRegistry } from '../src/registry/store.js';
import { SqliteRegistry } from '../src/store/index.js';
import { scanRepository } from '../src/registry/repository.js';
import { generateCreditData, toCsv } from '../examples/credit-data.js';
import { writeGatherModel, writeLogisticModel, writeSumModel, type LogisticFixture } from './fixtures/models.js';

interface Env {
  dir: string;
  registry: ModelRegistry;
  logistic: LogisticFixture;
  file: (name: string, text: string) => string;
  score: (opts: Omit<ScoreBatchOptions, 'registry'>) => ReturnType<typeof scoreBatch>;
}

async function withEnv(fn: (env: Env) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-batch-'));
  const repo = join(dir, 'repo');
  const logistic = await writeLogisticModel(repo, 'logistic', 1, { modelYaml: { features: ['f0', 'f1', 'f2'] } });
  const registry = ModelRegistry.open(join(dir, 'data'));
  registry.importRepository(scanRepository(repo));
  const env: Env = {
    dir,
    registry,
    logistic,
    file: (name, text) => {
      const path = join(dir, name);
      writeFileSync(path, text);
      return path;
    },
    score: (opts) => scoreBatch({ registry: new SqliteRegistry(registry), workers: 1, ...opts }),
  };
  try {
    await fn(env);
  } finally {
    registry.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** RFC 4180 records of a whole file (test-sized). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else if (c !== '\r') field += c;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

const readCsv = (path: string) => parseCsv(readFileSync(path, 'utf8'));
const readJsonl = (path: string) =>
  readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

/** Asserts one scored row of the logistic model: label and both class probabilities. */
function assertLogistic(fx: LogisticFixture, features: readonly number[], label: unknown, p0: unknown, p1: unknown): void {
  const p = fx.expectedProbability(features);
  assert.equal(Number(label), p > 0.5 ? 1 : 0, `label for ${features}`);
  assert.ok(Math.abs(Number(p1) - p) < 1e-6, `P(1) for ${features}: ${p1} vs ${p}`);
  assert.ok(Math.abs(Number(p0) - (1 - p)) < 1e-6, `P(0) for ${features}: ${p0} vs ${1 - p}`);
}

async function rejectsCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e: ScorelineError) => {
    assert.equal(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

const ROWS: number[][] = [
  [1, 10, 0],
  [3, 15, 1],
  [-3, 0, -2],
  [0.5, 12.25, 2.5],
  [100, -40, 7],
];

test('scores a CSV whose columns come in another order, with extra columns, copying the id column', async () => {
  await withEnv(async (env) => {
    const input = env.file('in.csv', `${['id,f2,note,f0,f1', ...ROWS.map((r, i) => `c${i},${r[2]},x,${r[0]},${r[1]}`)].join('\n')}\n`);
    const output = join(env.dir, 'out.csv');
    const summary = await env.score({ model: 'logistic', input, output, idColumns: ['id'] });
    assert.equal(summary.model, 'logistic');
    assert.equal(summary.version, 1);
    assert.deepEqual([summary.rows, summary.scored, summary.rejected, summary.blankLines], [5, 5, 0, 0]);
    assert.equal(summary.output, output);
    assert.equal(summary.rejects, `${output}.rejects.csv`);
    assert.ok(summary.peakRssBytes > 0 && summary.seconds > 0 && summary.rowsPerSecond > 0);
    const out = readCsv(output);
    assert.deepEqual(out[0], ['id', 'label', 'probabilities_0', 'probabilities_1']);
    assert.equal(out.length, ROWS.length + 1);
    ROWS.forEach((r, i) => {
      const [id, label, p0, p1] = out[i + 1]!;
      assert.equal(id, `c${i}`);
      assertLogistic(env.logistic, r, label, p0, p1);
    });
    assert.equal(readFileSync(summary.rejects, 'utf8'), 'line,reason,raw\n');
    // Only the two result files remain: the temp files were renamed into place.
    assert.deepEqual((await readdir(env.dir)).filter((f) => f.startsWith('out')).sort(), ['out.csv', 'out.csv.rejects.csv']);
  });
});

test('scores JSON Lines to JSON Lines and to CSV; ids keep their JSON type', async () => {
  await withEnv(async (env) => {
    const input = env.file(
      'in.jsonl',
      ROWS.map((r, i) => JSON.stringify({ f1: r[1], id: i === 0 ? 'first' : i, f0: r[0], f2: r[2], other: [1] })).join('\n'),
    );
    const summary = await env.score({ model: 'logistic', input, output: join(env.dir, 'out.jsonl'), idColumns: ['id'] });
    assert.equal(summary.scored, ROWS.length);
    const out = readJsonl(summary.output);
    assert.deepEqual(Object.keys(out[0]!), ['id', 'label', 'probabilities_0', 'probabilities_1']);
    ROWS.forEach((r, i) => {
      const o = out[i]!;
      assert.equal(o.id, i === 0 ? 'first' : i);
      assertLogistic(env.logistic, r, o.label, o.probabilities_0, o.probabilities_1);
    });

    const toCsvOut = await env.score({ model: 'logistic', input, output: join(env.dir, 'out2.csv') });
    const rows = readCsv(toCsvOut.output);
    assert.deepEqual(rows[0], ['label', 'probabilities_0', 'probabilities_1']);
    ROWS.forEach((r, i) => {
      assertLogistic(env.logistic, r, ...(rows[i + 1] as [string, string, string]));
    });
  });
});

test('keeps input order across many small batches on several workers', async () => {
  await withEnv(async (env) => {
    const n = 20_000;
    const row = (i: number) => [(i % 97) / 10 - 4, (i % 13) * 2, ((i * 7) % 31) / 5 - 3];
    const lines = ['key,f0,f1,f2'];
    for (let i = 0; i < n; i++) lines.push(`k${i},${row(i).join(',')}`);
    const input = env.file('many.csv', `${lines.join('\n')}\n`);
    const progress: BatchProgress[] = [];
    const summary = await env.score({
      model: 'logistic',
      input,
      output: join(env.dir, 'many-out.csv'),
      idColumns: ['key'],
      batchRows: 64,
      workers: 3,
      progress: (p) => progress.push(p),
    });
    assert.equal(summary.scored, n);
    const out = readCsv(summary.output);
    assert.equal(out.length, n + 1);
    for (let i = 0; i < n; i++) {
      const [key, label, p0, p1] = out[i + 1]!;
      assert.equal(key, `k${i}`);
      if (i % 500 === 0 || i === n - 1) assertLogistic(env.logistic, row(i), label, p0, p1);
    }
    const last = progress.at(-1)!;
    assert.equal(last.rows, n);
    assert.equal(last.bytesRead, last.bytesTotal);
    assert.equal(last.bytesTotal, Buffer.byteLength(`${lines.join('\n')}\n`));
  });
});

test('bad CSV rows go to the rejects file with line numbers and reasons; good rows are scored', async () => {
  await withEnv(async (env) => {
    const text = [
      'id,f0,f1,f2', //            line 1
      'a,1,10,0', //               2 good
      'b,abc,10,0', //             3 text in a number
      'c,1,10', //                 4 missing field
      'd,1,10,0,9', //             5 extra field
      '', //                       6 blank: skipped
      'e,NaN,1,1', //              7
      'f,1,Infinity,1', //         8
      'g,1,,1', //                 9 empty value
      'h,1e39,1,1', //             10 beyond FP32
      'i, 2.5 ,1e1,-0', //         11 good: spaces trimmed, exponent, -0
      '   ', //                    12 a line of spaces is one empty field: rejected
      'j,0x10,1,1', //             13 hex is not a decimal number
      'k,3,15,1', //               14 good
      '', //                       (the final newline ends line 14: not a blank line)
    ].join('\n');
    const input = env.file('bad.csv', text);
    const output = join(env.dir, 'bad-out.csv');
    const summary = await env.score({ model: 'logistic', input, output, idColumns: ['id'], batchRows: 2 });
    assert.deepEqual([summary.rows, summary.scored, summary.rejected, summary.blankLines], [12, 3, 9, 1]);
    const out = readCsv(output);
    assert.deepEqual(
      out.slice(1).map((r) => r[0]),
      ['a', 'i', 'k'],
    );
    assertLogistic(env.logistic, [2.5, 10, -0], ...(out[2]!.slice(1) as [string, string, string]));
    const rejects = readCsv(summary.rejects);
    assert.deepEqual(rejects[0], ['line', 'reason', 'raw']);
    assert.deepEqual(rejects.slice(1), [
      ['3', `"abc" is not a number (column 'f0')`, 'b,abc,10,0'],
      ['4', 'expected 4 fields as in the header, found 3', 'c,1,10'],
      ['5', 'expected 4 fields as in the header, found 5', 'd,1,10,0,9'],
      ['7', `non-finite value "NaN" for 'f0'`, 'e,NaN,1,1'],
      ['8', `non-finite value "Infinity" for 'f1'`, 'f,1,Infinity,1'],
      ['9', `missing value for 'f1'`, 'g,1,,1'],
      ['10', `value 1e+39 is out of the FP32 range (column 'f0')`, 'h,1e39,1,1'],
      ['12', 'expected 4 fields as in the header, found 1', '   '],
      ['13', `"0x10" is not a number (column 'f0')`, 'j,0x10,1,1'],
    ]);
  });
});

test('CRLF, a BOM, quoted fields with commas, quotes and newlines, and an unclosed quote', async () => {
  await withEnv(async (env) => {
    const text =
      '\ufeff"id","f0",f1,f2\r\n' + //                        1
      '"Smith, J.",1,10,0\r\n' + //                            2
      '"say ""hi""","3",15,1\r\n' + //                         3 quoted number
      '"two\r\nlines",-3,0,-2\r\n' + //                        4-5: one record over two lines
      'bad,"1"x,10,0\r\n' + //                                 6 text after a closing quote
      'open,"1,10,0\r\n' + //                                  7 quote never closed
      'last,0.5,12.25,2.5'; //                                 8 no final newline
    const input = env.file('quoted.csv', text);
    const summary = await env.score({ model: 'logistic', input, output: join(env.dir, 'q.csv'), idColumns: ['id'] });
    assert.deepEqual([summary.rows, summary.scored, summary.rejected], [6, 4, 2]);
    const out = readCsv(summary.output);
    assert.deepEqual(
      out.slice(1).map((r) => r[0]),
      ['Smith, J.', 'say "hi"', 'two\r\nlines', 'last'],
    );
    assert.ok(readFileSync(summary.output, 'utf8').includes('"Smith, J.",'), 'ids with commas are quoted in the output');
    assertLogistic(env.logistic, [3, 15, 1], ...(out[2]!.slice(1) as [string, string, string]));
    assertLogistic(env.logistic, [0.5, 12.25, 2.5], ...(out[4]!.slice(1) as [string, string, string]));
    const rejects = readCsv(summary.rejects).slice(1);
    assert.deepEqual(
      rejects.map((r) => [r[0], r[1]]),
      [
        ['6', 'unexpected text after the closing quote of field 2'],
        ['7', 'a quoted field is not closed before the end of the line'],
      ],
    );
    assert.equal(rejects[1]![2], 'open,"1,10,0');
  });
});

test('bad JSON Lines rows are rejected with reasons; blank lines are skipped', async () => {
  await withEnv(async (env) => {
    const lines = [
      '{"id":1,"f0":1,"f1":10,"f2":0}', //        1 good
      '{"id":2,"f0":"1","f1":10,"f2":0}', //      2 string
      '{"id":3,"f0":1,"f2":0}', //                3 missing feature
      '{"id":4,"f0":1,"f1":null,"f2":0}', //      4 null
      '[1,10,0]', //                              5 not an object
      '{"id":6,"f0":1,', //                       6 invalid JSON
      '', //                                      7 blank
      '{"f0":1,"f1":10,"f2":0}', //               8 no id
      '{"id":9,"f0":1e400,"f1":10,"f2":0}', //    9 Infinity
      '{"id":10,"f0":3,"f1":15,"f2":1}\r', //    10 good, CRLF
    ];
    const input = env.file('bad.ndjson', `${lines.join('\n')}\n`);
    const summary = await env.score({ model: 'logistic', input, output: join(env.dir, 'bad.jsonl'), idColumns: ['id'] });
    assert.deepEqual([summary.rows, summary.scored, summary.rejected, summary.blankLines], [9, 2, 7, 1]);
    assert.deepEqual(
      readJsonl(summary.output).map((o) => o.id),
      [1, 10],
    );
    const rejects = readCsv(summary.rejects).slice(1);
    assert.deepEqual(
      rejects.map((r) => r[0]),
      ['2', '3', '4', '5', '6', '8', '9'],
    );
    assert.equal(rejects[0]![1], `feature 'f0' is "1", not a number`);
    assert.equal(rejects[1]![1], `missing feature 'f1'`);
    assert.equal(rejects[2]![1], `feature 'f1' is null, not a number`);
    assert.equal(rejects[3]![1], 'not a JSON object (an array)');
    assert.match(rejects[4]![1]!, /^invalid JSON: /);
    assert.equal(rejects[5]![1], `missing id column 'id'`);
    assert.equal(rejects[6]![1], `value Infinity is out of the FP32 range (column 'f0')`);
    assert.equal(rejects[0]![2], lines[1]);
  });
});

test('a batch the model refuses is split until only the refused rows are rejected', async () => {
  await withEnv(async (env) => {
    // The gather model fails a run whose index is outside 0..9; no features list: the file's columns feed it in order.
    const fx = await writeGatherModel(join(env.dir, 'repo2'));
    env.registry.register('table', fx.bytes);
    const idx = [3, 7, 12, 5, 0, 9, 10, 4, 1.5, 2];
    const input = env.file('idx.csv', `${['row,idx', ...idx.map((v, i) => `r${i},${v}`)].join('\n')}\n`);
    const summary = await env.score({
      model: 'table',
      input,
      output: join(env.dir, 'idx-out.csv'),
      idColumns: ['row'],
      batchRows: 4,
      workers: 2,
    });
    assert.deepEqual([summary.rows, summary.scored, summary.rejected], [10, 7, 3]);
    const out = readCsv(summary.output);
    assert.deepEqual(out[0], ['row', 'value']);
    assert.deepEqual(out.slice(1), [
      ['r0', '103'],
      ['r1', '107'],
      ['r3', '105'],
      ['r4', '100'],
      ['r5', '109'],
      ['r7', '104'],
      ['r9', '102'],
    ]);
    const rejects = readCsv(summary.rejects).slice(1);
    assert.deepEqual(
      rejects.map((r) => [r[0], r[2]]),
      [
        ['4', 'r2,12'],
        ['8', 'r6,10'],
        ['10', 'r8,1.5'],
      ],
    );
    assert.match(rejects[0]![1]!, /^model error: /);
    assert.match(rejects[1]![1]!, /^model error: /);
    assert.equal(rejects[2]![1], `1.5 is not an integer (column 'idx')`);
  });
});

test('model references: NAME is the latest version, NAME@VERSION and NAME@ALIAS pick one', async () => {
  await withEnv(async (env) => {
    // y = version * (a + b + c + d): each version answers differently.
    for (const v of [1, 2, 3]) env.registry.register('sum', (await writeSumModel(join(env.dir, 'repo3'), 'sum', v)).bytes);
    env.registry.setAlias('sum', 'champion', 2);
    const input = env.file('sum.csv', 'a,b,c,d\n1,2,3,4\n');
    const y = async (model: string) => {
      const s = await env.score({ model, input, output: join(env.dir, 'sum-out.csv') });
      return [s.version, readCsv(s.output)[1]![0]];
    };
    assert.deepEqual(await y('sum'), [3, '30']);
    assert.deepEqual(await y('sum@1'), [1, '10']);
    assert.deepEqual(await y('sum@champion'), [2, '20']);
    assert.deepEqual(await y('sum@latest'), [3, '30']);
    assert.deepEqual(parseModelRef('sum@champion'), { name: 'sum', ref: 'champion' });
    assert.deepEqual(parseModelRef('sum'), { name: 'sum', ref: 'latest' });

    const output = join(env.dir, 'never.csv');
    await rejectsCode(env.score({ model: 'nope', input, output }), 'MODEL_NOT_FOUND', /'nope'/);
    await rejectsCode(env.score({ model: 'sum@9', input, output }), 'VERSION_NOT_FOUND', /'9'/);
    await rejectsCode(env.score({ model: 'sum@challenger', input, output }), 'ALIAS_NOT_FOUND', /'challenger'/);
    await rejectsCode(env.score({ model: 'sum@', input, output }), 'BAD_REQUEST', /NAME@VERSION/);
    // Wrong width without a features list, then missing feature and id columns: the run stops before scoring.
    await rejectsCode(
      env.score({ model: 'sum', input: env.file('three.csv', 'a,b,c\n1,2,3\n'), output }),
      'BAD_REQUEST',
      /3 columns besides the id columns, but the model's input has 4/,
    );
    await rejectsCode(
      env.score({ model: 'logistic', input: env.file('nof.csv', 'f0,x\n1,2\n'), output }),
      'BAD_REQUEST',
      /lacks the model's feature columns: f1, f2/,
    );
    await rejectsCode(
      env.score({ model: 'logistic', input: env.file('noid.csv', 'f0,f1,f2\n1,2,3\n'), output, idColumns: ['id'] }),
      'BAD_REQUEST',
      /no id column id/,
    );
    await rejectsCode(env.score({ model: 'logistic', input: join(env.dir, 'missing.csv'), output }), 'BAD_REQUEST', /ENOENT/);
    await rejectsCode(
      env.score({ model: 'logistic', input, output: join(env.dir, 'out.parquet') }),
      'BAD_REQUEST',
      /\.csv, \.jsonl or \.ndjson/,
    );
    assert.equal(existsSync(output), false, 'a failed run leaves no output file');
    assert.deepEqual(
      (await readdir(env.dir)).filter((f) => f.includes('never') || f.endsWith('.partial')),
      [],
    );
  });
});

/** Everything a reader produced: committed rows (line, ids, values) and rejects, in order. */
function readAll(text: string, format: 'csv' | 'jsonl', chunk: number, maxRecordBytes = 1 << 20): unknown[] {
  const type = cellType('FP32')!;
  const asm = new BatchAssembler(3, 1, type, 3, 4);
  const cols = { features: ['f0', 'f1', 'f2'], width: 3, idColumns: ['id'] };
  const reader: RecordReader =
    format === 'csv'
      ? new CsvReader(asm, { type, maxRecordBytes, source: 't.csv', bind: (h) => bindColumns(h, cols, 't.csv') })
      : new JsonlReader(asm, {
          type,
          features: cols.features,
          width: 3,
          idColumns: cols.idColumns,
          onColumns: () => undefined,
          maxRecordBytes,
          source: 't.jsonl',
        });
  const seen: unknown[] = [];
  const drain = () => {
    for (const b of asm.ready.splice(0)) {
      for (let r = 0; r < b.rows; r++) seen.push([b.lines[r], b.ids[r], ...b.data.subarray(r * 3, r * 3 + 3)]);
      for (const j of b.rejects) seen.push([j.line, j.reason, j.raw]);
    }
  };
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += chunk) {
    reader.push(Buffer.from(bytes.subarray(i, i + chunk)));
    drain();
  }
  reader.end();
  drain();
  return seen.sort((a, b) => (a as number[])[0]! - (b as number[])[0]!);
}

test('readers give the same rows and rejects wherever the chunks end', () => {
  const csv =
    '\ufeffid,f0,f1,f2\r\n"a,1",1,2,3\r\n\r\n"q""x",4.5,"5",6\n"multi\r\nline",7,8,9\r\nbad,1,x,2\nopen,"1,2,3\n' +
    `long,${'1'.repeat(100)},1,1\nshort,1,2,3\nafter"q,1,2,3\r\nlast,-1,-2,-3`;
  const whole = readAll(csv, 'csv', 1 << 20, 64);
  assert.deepEqual(whole, [
    [2, 'a,1', 1, 2, 3],
    [4, 'q"x', 4.5, 5, 6],
    [5, 'multi\r\nline', 7, 8, 9],
    [7, `"x" is not a number (column 'f1')`, 'bad,1,x,2'],
    [8, 'a quoted field is not closed before the end of the line', 'open,"1,2,3'],
    [9, 'the line is longer than 64 bytes', `long,${'1'.repeat(100)},1,1`.slice(0, 64)],
    [10, 'short', 1, 2, 3],
    [11, 'after"q', 1, 2, 3],
    [12, 'last', -1, -2, -3],
  ]);
  for (const chunk of [1, 2, 3, 5, 7, 13, 64]) assert.deepEqual(readAll(csv, 'csv', chunk, 64), whole, `chunks of ${chunk} bytes`);

  const long = `{"id":5,"f0":1,"f1":2,"f2":3,"pad":"${'x'.repeat(300)}"}`;
  const jsonl = `{"id":1,"f0":1,"f1":2,"f2":3}\r\n\n{"id":"é","f0":4,"f1":5,"f2":6}\n{"id":3,"f0":"x","f1":5,"f2":6}\n${long}\n{"id":4,"f0":7,"f1":8,"f2":9}`;
  const wholeJson = readAll(jsonl, 'jsonl', 1 << 20, 256);
  assert.deepEqual(wholeJson, [
    [1, 1, 1, 2, 3],
    [3, 'é', 4, 5, 6],
    [4, `feature 'f0' is "x", not a number`, jsonl.split('\n')[3]],
    [5, 'the line is longer than 256 bytes', long.slice(0, 200)],
    [6, 4, 7, 8, 9],
  ]);
  for (const chunk of [1, 2, 3, 7, 16]) assert.deepEqual(readAll(jsonl, 'jsonl', chunk, 256), wholeJson, `chunks of ${chunk} bytes`);
});

test('parseDecimal reads what Number() reads, and nothing that is not a decimal number', () => {
  const cases = [
    '0',
    '-0',
    '+1',
    '1.',
    '.5',
    '-.5',
    '007',
    '1e5',
    '1E-5',
    '2.5e+3',
    ' 42 ',
    '\t-1.25',
    '123456789012345',
    '1234567890123456789',
    '0.1',
    '0.30000000000000004',
    '1e22',
    '1e23',
    '4.9e-324',
    '1e-400',
    '1e400',
    '9007199254740993',
    '3.4028234663852886e38',
    '0.000001234',
    '100000000000000000000000',
  ];
  for (const s of cases) assert.equal(Object.is(parseDecimal(Buffer.from(s), 0, s.length), Number(s)), true, s);
  for (let i = 0; i < 20_000; i++) {
    const digits = String(Math.floor(Math.random() * 10 ** (1 + (i % 17))));
    const cut = i % digits.length;
    const s = `${i % 3 === 0 ? '-' : ''}${digits.slice(0, cut)}.${digits.slice(cut)}${i % 5 === 0 ? `e${(i % 41) - 20}` : ''}`;
    assert.equal(parseDecimal(Buffer.from(s), 0, s.length), Number(s), s);
  }
  for (const s of ['', ' ', '-', '+', '.', 'e5', '1e', '1e+', '1.2.3', '0x10', 'NaN', 'Infinity', '1,5', '--1', '1 2', '١']) {
    assert.ok(Number.isNaN(parseDecimal(Buffer.from(s), 0, Buffer.byteLength(s))), JSON.stringify(s));
  }
});

test('200k demo rows score with memory under 300 MB', async () => {
  await withEnv(async (env) => {
    const demo = fileURLToPath(new URL('../../examples/models/credit-default/', import.meta.url));
    const config = parseModelConfig(readFileSync(join(demo, 'model.yaml'), 'utf8'), 'model.yaml');
    env.registry.register('credit', readFileSync(join(demo, '1', 'model.onnx')), { config: { ...config } });
    const input = join(env.dir, 'credit.csv');
    const file = createWriteStream(input);
    const n = 200_000;
    for (let i = 0; i < n / 10_000; i++) {
      const csv = toCsv(generateCreditData({ n: 10_000, seed: 100 + i }));
      if (!file.write(i === 0 ? csv : csv.slice(csv.indexOf('\n') + 1))) await once(file, 'drain');
    }
    file.end();
    await once(file, 'close');
    const summary = await env.score({ model: 'credit@1', input, output: join(env.dir, 'credit-out.csv'), idColumns: ['customer_id'] });
    assert.deepEqual([summary.rows, summary.scored, summary.rejected], [n, n, 0]);
    assert.ok(summary.peakRssBytes < 300 * 2 ** 20, `peak RSS ${(summary.peakRssBytes / 2 ** 20).toFixed(0)} MB`);
    const text = readFileSync(summary.output, 'utf8');
    assert.equal(text.split('\n').length, n + 2);
    assert.ok(text.startsWith('customer_id,label,probabilities_0,probabilities_1\nC'));
  });
});
