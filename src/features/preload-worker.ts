// Worker thread of the embedded store (embedded-store.ts): copies every group row of the SQLite file
// into the store's native table, in key order, a page of rows per query (short read transactions,
// so the WAL can be checkpointed meanwhile). Rows go in with insert-if-absent: a group the main
// thread wrote after this thread read it is newer and is kept. Posts {rows} as it goes and
// {rows, done: true} at the end.

import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { NativeTable } from './native-cache.js';

const PAGE = 8192;

const { path, table: name } = workerData as { path: string; table: string };
const db = new Database(path, { readonly: true, fileMustExist: true });
const table = new NativeTable(name);
const first = db.prepare<[number], [string, Buffer]>('SELECT key, value FROM groups ORDER BY key LIMIT ?').raw();
const next = db.prepare<[string, number], [string, Buffer]>('SELECT key, value FROM groups WHERE key > ? ORDER BY key LIMIT ?').raw();

let rows = 0;
let last: string | null = null;
for (;;) {
  const page: [string, Buffer][] = last === null ? first.all(PAGE) : next.all(last, PAGE);
  if (page.length === 0) break;
  table.insertMany(
    page.map((r) => r[0]),
    page.map((r) => r[1]),
  );
  rows += page.length;
  last = page[page.length - 1]![0];
  if (rows % (PAGE * 16) < PAGE) parentPort!.postMessage({ rows });
}
db.close();
parentPort!.postMessage({ rows, done: true });
