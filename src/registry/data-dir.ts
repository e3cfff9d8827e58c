// The data dir is private to the user the server runs as: it holds every logged prediction's inputs
// (monitoring.db), the registry, the model artifacts, retraining data and the admin token. It is
// created 0700; scoreline's own files in it are made 0600 (directories 0700) as they are created. An
// existing data dir whose mode lets group or others in is tightened at start, and what was changed
// is returned for the server to log. Only scoreline's own entries are touched, never other files
// that happen to live in the same directory.

import { chmodSync, lstatSync, mkdirSync, readdirSync, type Stats } from 'node:fs';
import { join } from 'node:path';

/** Files scoreline keeps at the top of the data dir (SQLite's -wal, -shm and -journal files follow their database). */
const OWN_FILES = ['registry.db', 'monitoring.db', 'retraining.db', 'features.db', 'admin-token'];
const SQLITE_SUFFIXES = ['', '-wal', '-shm', '-journal'];
/** Folders scoreline owns entirely. */
const OWN_DIRS = ['artifacts', 'retraining'];

export interface ModeChange {
  path: string;
  /** Octal modes, e.g. "755" -> "700". */
  from: string;
  to: string;
}

export interface DataDirPreparation {
  created: boolean;
  /** Entries whose group/other permission bits were removed. */
  tightened: ModeChange[];
  /** Entries that could not be tightened (not owned by this user, read-only filesystem), with why. */
  failed: { path: string; error: string }[];
}

const octal = (mode: number) => (mode & 0o777).toString(8);

/** Creates the data dir (0700), or tightens an existing one and scoreline's entries in it. */
export function prepareDataDir(dataDir: string): DataDirPreparation {
  const out: DataDirPreparation = { created: false, tightened: [], failed: [] };
  // mkdir applies the mode to every folder it creates, parents included.
  out.created = mkdirSync(dataDir, { recursive: true, mode: 0o700 }) !== undefined;
  tighten(dataDir, out, false);
  for (const name of OWN_FILES) {
    for (const suffix of name.endsWith('.db') ? SQLITE_SUFFIXES : ['']) tighten(join(dataDir, name + suffix), out, false);
  }
  for (const name of OWN_DIRS) tighten(join(dataDir, name), out, true);
  return out;
}

/** Removes group and other bits from `path` (and, with `deep`, everything under it); symlinks are left alone. */
function tighten(path: string, out: DataDirPreparation, deep: boolean): void {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch {
    return; // not there (yet)
  }
  if (st.isSymbolicLink()) return;
  if ((st.mode & 0o077) !== 0) {
    const to = st.mode & 0o700;
    try {
      chmodSync(path, to);
      out.tightened.push({ path, from: octal(st.mode), to: octal(to) });
    } catch (e) {
      out.failed.push({ path, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message });
    }
  }
  if (deep && st.isDirectory()) {
    let names: string[];
    try {
      names = readdirSync(path);
    } catch {
      return;
    }
    for (const name of names) tighten(join(path, name), out, true);
  }
}
