// Every reader of CSV in scoreline goes through src/csv.ts: one file with a BOM, CRLF line ends,
// quoted fields (an embedded comma, an escaped quote, a field over two lines) and a blank line is
// accepted identically by batch scoring, reference freezing, retraining data loading and a
// feature source; and each keeps its own words for bad content (field count, unclosed quote).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scoreBatch } from '../src/batch/index.js';
import { parseCsv } from '../src/csv.js';
import { parseFeatureDefinitions } from '../src/features/definitions.js';
import { FeatureRegistry } from '../src/features/plan.js';
import { materializeSource, readRows } from '../src/features/sources.js';
import { MemoryStore, type GroupWrite } from '../src/features/store.js';
import { freezeReference, parseCsvTable } from '../src/monitoring/index.js';
import { ModelRegistry } from '../src/registry/store.js';
import { scanRepository } from '../src/registry/repository.js';
import { readDataFile } from '../src/retraining/data.js';
import { SqliteRegistry } from '../src/store/index.js';
import { writeLogisticModel } from './fixtures/models.js';

const FILE = [
  '\uFEFF"id",f0,f1,f2,"note",when,label',
  '"a,1",0.5,"1.5",2,"says ""hi"", twice",2024-01-01,1',
  'b2,-3,0,"-2","two',
  'lines",2024-01-02,0',
  '',
  '"c""3",100,-40,7,plain,2024-01-03,1',
  '',
].join('\r\n');
const IDS = ['a,1', 'b2', 'c"3'];
const X = [
  [0.5, 1.5, 2],
  [-3, 0, -2],
  [100, -40, 7],
];
const NOTES = ['says "hi", twice', 'two\r\nlines', 'plain'];
const LINES = [2, 3, 6];

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'scoreline-csv-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('one CSV with a BOM, CRLF, quoted fields and a field over two lines is read alike by every consumer', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'data.csv');
    writeFileSync(path, FILE);

    // Batch scoring.
    const repo = join(dir, 'repo');
    const logistic = await writeLogisticModel(repo, 'logistic', 1, { modelYaml: { features: ['f0', 'f1', 'f2'] } });
    const registry = ModelRegistry.open(join(dir, 'registry'));
    let probabilities: number[];
    try {
      registry.importRepository(scanRepository(repo));
      const output = join(dir, 'out.csv');
      const summary = await scoreBatch({
        registry: new SqliteRegistry(registry),
        workers: 1,
        model: 'logistic',
        input: path,
        output,
        idColumns: ['id'],
      });
      assert.deepEqual([summary.rows, summary.scored, summary.rejected, summary.blankLines], [3, 3, 0, 1]);
      const out = parseCsv(readFileSync(output), output);
      assert.deepEqual(out.header, ['id', 'label', 'probabilities_0', 'probabilities_1']);
      assert.deepEqual(
        out.records.map((r) => r.fields?.[0]),
        IDS,
      );
      probabilities = out.records.map((r) => Number(r.fields![3]));
      for (const [i, p] of probabilities.entries()) assert.ok(Math.abs(p - logistic.expectedProbability(X[i]!)) < 1e-6, `row ${i}: ${p}`);
    } finally {
      registry.close();
    }

    // Reference freezing.
    const table = parseCsvTable(readFileSync(path));
    assert.deepEqual(table.columns, ['id', 'f0', 'f1', 'f2', 'note', 'when', 'label']);
    assert.deepEqual(table.values[0], IDS);
    assert.deepEqual(table.values[4], NOTES);
    assert.deepEqual(table.lines, LINES);
    const record = freezeReference(['f0', 'f1', 'f2'], table, probabilities, 'label');
    assert.equal(record.rows, 3);
    assert.equal(record.label, 'label');
    assert.ok(record.referenceAuc !== null);
    assert.deepEqual(
      record.features.map((f) => [f.name, f.baseline.kind]),
      [
        ['f0', 'numeric'],
        ['f1', 'numeric'],
        ['f2', 'numeric'],
      ],
    );

    // Retraining data.
    const data = readDataFile(path, { features: ['f0', 'f1', 'f2'], label: 'label', timeColumn: 'when', defs: null });
    assert.deepEqual([data.report.rows, data.report.skipped], [3, 0]);
    assert.deepEqual(
      data.rows.map((r) => r.x),
      X,
    );
    assert.deepEqual(
      data.rows.map((r) => r.y),
      [1, 0, 1],
    );
    assert.deepEqual(
      data.rows.map((r) => r.t),
      [Date.parse('2024-01-01T00:00:00Z'), Date.parse('2024-01-02T00:00:00Z'), Date.parse('2024-01-03T00:00:00Z')],
    );

    // A feature source.
    const rows = [];
    for await (const r of readRows(path, 'csv')) rows.push(r);
    assert.deepEqual(
      rows.map((r) => [r.line, r.row?.id, r.row?.note]),
      LINES.map((l, i) => [l, IDS[i], NOTES[i]]),
    );
    const defs = parseFeatureDefinitions(
      JSON.stringify({
        entities: [{ name: 'account', key: 'id' }],
        sources: { accounts: { path: 'data.csv', entity: 'account', timestampColumn: 'when' } },
        features: ['f0', 'f1', 'f2'].map((name) => ({
          name,
          version: 1,
          entity: 'account',
          type: 'offline',
          dtype: 'float64',
          source: 'accounts',
          fallback: { default: 0 },
        })),
      }),
      { baseDir: dir },
    );
    const features = new FeatureRegistry(defs);
    const writes: GroupWrite[] = [];
    const store = new (class extends MemoryStore {
      override writeGroups(w: readonly GroupWrite[]): Promise<void> {
        writes.push(...w);
        return super.writeGroups(w);
      }
    })(features.streams);
    const result = await materializeSource(features, features.sources.get('accounts')!, store);
    assert.deepEqual([result.rows, result.written, result.rejected], [3, 3, 0]);
    assert.deepEqual(
      writes.map((w) => [w.id, w.values.f0?.value, w.values.f1?.value, w.values.f2?.value, w.values.f0?.eventTs]),
      X.map((x, i) => [IDS[i], ...x, Date.parse(`2024-01-0${i + 1}T00:00:00Z`)]),
    );
  });
});

test('each consumer keeps its words for a row with the wrong field count or a quote left open', async () => {
  await withDir(async (dir) => {
    const text = 'x,y,label\r\n1,2,0\r\n3,4\r\n"5,6,1\r\n7,8,1\r\n';
    assert.throws(() => parseCsvTable(text), { message: 'reference CSV line 3 has 2 fields, the header 3' });
    assert.throws(() => parseCsvTable('x,y,label\n1,"2,0\n3,4,1\n'), {
      message: 'reference CSV line 2: a quoted field is not closed before the end of the line',
    });
    assert.throws(() => parseCsvTable('\uFEFFx,y\r\n\r\n'), { message: 'reference CSV needs a header and at least one row' });
    const path = join(dir, 'bad.csv');
    writeFileSync(path, text);
    const rows = [];
    for await (const r of readRows(path, 'csv')) rows.push(r);
    assert.deepEqual(
      rows.map((r) => [r.line, r.error ?? null]),
      [
        [2, null],
        [3, '2 fields, the header has 3'],
        [4, 'a quoted field is not closed before the end of the line'],
        [5, null],
      ],
    );
  });
});
