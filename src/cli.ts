// The `scoreline` command. Each subcommand parses and validates its own flags, prints --help, and
// reports bad usage on stderr with exit code 2 (runtime failures exit 1).

import { deploy, feedback, models, promote, rollback, status } from './commands/admin.js';
import { UsageError, type Command } from './commands/command.js';
import { features } from './commands/features.js';
import { incident, jobs, retrain } from './commands/retrain.js';
import { bench } from './commands/bench.js';
import { exportCommand } from './commands/export.js';
import { configCommand } from './commands/config.js';
import { keys } from './commands/keys.js';
import { bundleCommand, scoreBatchCommand } from './commands/offline.js';
import { serve } from './commands/serve.js';
import { isDiskFull, isScorelineError } from './errors.js';
import pkg from './version.js';

export { serveConfig } from './commands/serve.js';

const COMMANDS: Record<string, Command> = {
  serve,
  models,
  deploy,
  promote,
  rollback,
  status,
  'score-batch': scoreBatchCommand,
  bundle: bundleCommand,
  export: exportCommand,
  features,
  feedback,
  retrain,
  jobs,
  incident,
  config: configCommand,
  bench,
  keys,
};

function mainUsage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`);
  return `scoreline ${pkg.version}: low-latency ML scoring runtime\n\nUsage: scoreline <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun 'scoreline <command> --help' for a command's options.`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(mainUsage());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    console.log(pkg.version);
    return 0;
  }
  const cmd = COMMANDS[name];
  if (cmd === undefined) {
    console.error(`scoreline: unknown command '${name}'\n\n${mainUsage()}`);
    return 2;
  }
  try {
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`scoreline ${name}: ${e.message}\n\n${cmd.usage}`);
      return 2;
    }
    if (isScorelineError(e)) {
      console.error(`scoreline ${name}: ${e.message}`);
      return 1;
    }
    if (isDiskFull(e)) {
      console.error(`scoreline ${name}: no space left on the device (ENOSPC): ${(e as Error).message.split('\n')[0]}`);
      return 1;
    }
    console.error(`scoreline ${name}: ${(e as Error).stack ?? e}`);
    return 1;
  }
}
