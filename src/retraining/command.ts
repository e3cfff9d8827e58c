// The external trainer contract. scoreline writes the out-of-time split as two CSV files and runs
// the configured command (in the directory of the file that configured it) with:
//   SCORELINE_TRAIN_FILE       CSV: the feature columns in input order, the label, the time column
//   SCORELINE_VALIDATION_FILE  the same columns, the held-out latest rows
//   SCORELINE_FEATURES         feature names, comma-separated, in the model's input order
//   SCORELINE_LABEL            label column name
//   SCORELINE_TIME_COLUMN      time column name (ISO 8601 values)
//   SCORELINE_OUTPUT_DIR       an empty directory: write model.onnx there
// Exit status 0 means success; stdout and stderr go to the job log line by line; a command that
// runs past its timeout is killed (its whole process group) and the job fails.

import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { readOnnxMetadata } from '../onnx/index.js';

export interface CommandTrainerOptions {
  command: readonly string[];
  timeoutSeconds: number;
  env: Readonly<Record<string, string>>;
  cwd: string;
  trainFile: string;
  validationFile: string;
  features: readonly string[];
  label: string;
  timeColumn: string;
  outputDir: string;
  log: (line: string) => void;
  /** The trainer's pid (also its process group): recorded so a restart can stop an orphan. */
  onSpawn?: (pid: number) => void;
  onExit?: (pid: number) => void;
}

export class TrainerError extends Error {}

/** Kills a trainer's whole process group; false when it is already gone. */
export function killTrainer(pid: number): boolean {
  try {
    process.kill(-pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

export async function runCommandTrainer(o: CommandTrainerOptions): Promise<Uint8Array> {
  mkdirSync(o.outputDir, { recursive: true });
  const env = {
    ...process.env,
    ...o.env,
    SCORELINE_TRAIN_FILE: o.trainFile,
    SCORELINE_VALIDATION_FILE: o.validationFile,
    SCORELINE_FEATURES: o.features.join(','),
    SCORELINE_LABEL: o.label,
    SCORELINE_TIME_COLUMN: o.timeColumn,
    SCORELINE_OUTPUT_DIR: o.outputDir,
  };
  const [program, ...args] = o.command;
  await new Promise<void>((resolve, reject) => {
    const child = spawn(program!, args, { cwd: o.cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    if (child.pid !== undefined) o.onSpawn?.(child.pid);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      o.log(`trainer still running after ${o.timeoutSeconds} s: killing it`);
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, o.timeoutSeconds * 1000);
    createInterface({ input: child.stdout! }).on('line', (l) => o.log(`[trainer] ${l}`));
    createInterface({ input: child.stderr! }).on('line', (l) => o.log(`[trainer stderr] ${l}`));
    child.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new TrainerError(`cannot start trainer ${JSON.stringify(program)}: ${e.code ?? e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (child.pid !== undefined) o.onExit?.(child.pid);
      if (timedOut) reject(new TrainerError(`trainer timed out after ${o.timeoutSeconds} s and was killed`));
      else if (code !== 0) reject(new TrainerError(signal ? `trainer was killed by ${signal}` : `trainer exited with status ${code}`));
      else resolve();
    });
  });
  const file = join(o.outputDir, 'model.onnx');
  if (!existsSync(file)) throw new TrainerError('trainer exited 0 but wrote no model.onnx to SCORELINE_OUTPUT_DIR');
  const bytes = new Uint8Array(readFileSync(file));
  try {
    readOnnxMetadata(bytes, 'model.onnx');
  } catch (e) {
    throw new TrainerError(`the trainer's model.onnx is not a usable ONNX model: ${(e as Error).message}`);
  }
  return bytes;
}
