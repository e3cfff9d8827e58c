// `scoreline config check FILE`: validates a server config as `serve --config FILE` would (schema,
// paths relative to the file, the feature definitions it names, the model repository's model.yaml
// files) without starting anything, and prints the effective config: the file over the defaults.

import { dirname, resolve } from 'node:path';
import YAML from 'yaml';
import { loadConfigFile, resolveConfig } from '../config.js';
import { loadFeatureDefinitionsFile } from '../features/index.js';
import { scanRepository } from '../registry/index.js';
import { parse, UsageError, type Command } from './command.js';
import { anchorPaths } from './serve.js';

const USAGE = `Usage: scoreline config check FILE [--json]

Validates the server config FILE (YAML or JSON) the way 'scoreline serve --config FILE' reads it
-- unknown keys, bad values, the feature definitions and the model repository it names -- and
prints the effective config: every key, the file's values over the defaults. Exits 1 when invalid.

Options:
  --json        print the effective config as JSON
  -h, --help    show this help`;

export const configCommand: Command = {
  summary: 'validate a server config file and print the effective config',
  usage: USAGE,
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
      console.log(USAGE);
      return sub === undefined ? 2 : 0;
    }
    const { values, positionals } = parse(rest, { json: { type: 'boolean' } });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (sub !== 'check') throw new UsageError(`unknown subcommand '${sub}'`);
    const [file, extra] = positionals;
    if (file === undefined) throw new UsageError('check needs FILE');
    if (extra !== undefined) throw new UsageError(`unexpected argument '${extra}'`);
    const config = resolveConfig(anchorPaths(loadConfigFile(file), dirname(resolve(file))), file);
    const notes: string[] = [];
    if (config.features.definitions !== null) {
      const defs = await loadFeatureDefinitionsFile(config.features.definitions);
      notes.push(`feature definitions ${config.features.definitions}: ${defs.features.length} features`);
    }
    if (config.modelRepository === null) {
      notes.push('no modelRepository: serve needs --model-repo DIR');
    } else {
      const scan = scanRepository(config.modelRepository);
      notes.push(
        `model repository ${config.modelRepository}: ${scan.models.map((m) => `${m.name} (versions ${m.versions.map((v) => v.version).join(', ')})`).join(', ') || 'no models'}`,
      );
      for (const s of scan.skipped) notes.push(`skipped ${s}`);
    }
    if (values.json) {
      console.log(JSON.stringify(config, null, 2));
    } else {
      console.log(`# ${file} is valid. ${notes.join('; ')}.\n# The effective config (the file over the defaults):`);
      process.stdout.write(YAML.stringify(config));
    }
    return 0;
  },
};
