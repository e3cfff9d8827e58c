// The registry's SQLite schema and how a database file is brought to it: connection pragmas (WAL so
// readers in other processes never wait for a writer, foreign keys, a busy timeout) and an ordered
// list of migrations applied once each, recorded in schema_version. Append migrations; never edit one
// that has shipped.

import { closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import { configInvalid } from '../errors.js';

export type Db = Database.Database;

/** Migration i (0-based) takes the schema from version i to version i + 1. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE models (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
  );

  CREATE TABLE versions (
    model      TEXT    NOT NULL REFERENCES models(name),
    version    INTEGER NOT NULL CHECK (version > 0),
    sha256     TEXT    NOT NULL CHECK (length(sha256) = 64),
    size       INTEGER NOT NULL CHECK (size >= 0),
    created_at TEXT    NOT NULL,
    signature  TEXT    NOT NULL,               -- {"inputs": [{name, datatype, shape}], "outputs": [...]}
    metrics    TEXT    NOT NULL DEFAULT '{}',  -- {"auc": 0.81, ...}
    tags       TEXT    NOT NULL DEFAULT '{}',  -- {"team": "risk", ...}
    lineage    TEXT    NOT NULL DEFAULT '{}',  -- {"source": path, "trainingJobId": ..., "dataWindow": ...}
    config     TEXT    NOT NULL DEFAULT '{}',  -- model.yaml as it was at registration
    reference  TEXT,                           -- drift baseline, written later by monitoring
    PRIMARY KEY (model, version),
    UNIQUE (model, sha256)
  );

  CREATE TABLE aliases (
    model      TEXT    NOT NULL,
    alias      TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES versions(model, version)
  );

  CREATE TABLE alias_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    model        TEXT    NOT NULL REFERENCES models(name),
    alias        TEXT    NOT NULL,
    from_version INTEGER,          -- NULL: the alias was created
    to_version   INTEGER,          -- NULL: the alias was deleted
    at           TEXT    NOT NULL,
    reason       TEXT    NOT NULL DEFAULT '',
    actor        TEXT    NOT NULL DEFAULT ''
  );
  CREATE INDEX alias_history_by_alias ON alias_history (model, alias, id);

  CREATE TABLE deployments (
    model      TEXT PRIMARY KEY REFERENCES models(name),
    state      TEXT NOT NULL,      -- opaque to the registry: the deployer's JSON
    updated_at TEXT NOT NULL
  );

  CREATE TABLE deployment_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    model      TEXT NOT NULL REFERENCES models(name),
    at         TEXT NOT NULL,
    action     TEXT NOT NULL,
    from_state TEXT,               -- NULL: first deployment of the model
    to_state   TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX deployment_history_by_model ON deployment_history (model, id);
  `,
  // The reference rows (model.yaml `reference`) kept in the artifact store with the version, by sha256,
  // so nothing that needs them (a bundle, above all) reads a path recorded at registration.
  `
  ALTER TABLE versions ADD COLUMN reference_data TEXT CHECK (reference_data IS NULL OR length(reference_data) = 64);
  `,
  // A deployment's revision, so that a change based on an older state is refused rather than lost;
  // and the alerts with their events, the store's other control-plane records in SQLite.
  `
  ALTER TABLE deployments ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;

  CREATE TABLE alerts (
    id         TEXT    PRIMARY KEY,
    state      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,   -- epoch ms of the latest state change
    data       TEXT    NOT NULL    -- the alert manager's JSON
  );
  CREATE INDEX alerts_by_update ON alerts (updated_at);

  CREATE TABLE alert_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    data     TEXT    NOT NULL
  );
  `,
];

/** Opens (creating if needed) the database file and migrates it to the newest schema. */
export function openDatabase(file: string): Db {
  // Created private before SQLite opens it: its -wal and -shm files are made with the same mode.
  if (file !== ':memory:') closeSync(openSync(file, 'a', 0o600));
  const db = new Database(file);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    migrate(db, file);
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

/** The schema version the file is at. */
export function schemaVersion(db: Db): number {
  const row = db.prepare('SELECT MAX(version) AS version FROM schema_version').get() as { version: number | null };
  return row.version ?? 0;
}

function migrate(db: Db, file: string): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
  const tooNew = (current: number) =>
    configInvalid(
      `${file} has registry schema version ${current}, newer than this scoreline knows (${MIGRATIONS.length}); upgrade scoreline`,
    );
  // Read first: an up-to-date file is opened without taking the write lock, so opening never waits
  // for another process's write transaction.
  const seen = schemaVersion(db);
  if (seen > MIGRATIONS.length) throw tooNew(seen);
  if (seen === MIGRATIONS.length) return;
  // IMMEDIATE, and re-read inside: two processes opening a fresh file at once apply each migration once.
  db.transaction(() => {
    const current = schemaVersion(db);
    if (current > MIGRATIONS.length) throw tooNew(current);
    const record = db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)');
    for (let v = current; v < MIGRATIONS.length; v++) {
      db.exec(MIGRATIONS[v]!);
      record.run(v + 1, new Date().toISOString());
    }
  }).immediate();
}
