// `scoreline keys create --id ID --scopes infer,feedback`: makes a new random API key, prints it once
// (it is not stored anywhere) and the config entry that holds its SHA-256 digest, plus the
// SCORELINE_API_KEYS form for deployments that pass keys through the environment (a Secret).

import { API_KEY_SCOPES } from '../config.js';
import { isScorelineError } from '../errors.js';
import { generateKey, hashKey, parseEnvKeys } from '../server/api-keys.js';
import { parse, stringFlag, UsageError, type Command } from './command.js';

const USAGE = `Usage: scoreline keys create --id ID --scopes SCOPE[,SCOPE...] [--json]

Make a new API key for the data plane. The key is printed once and stored nowhere: keep it in your
secret store. Put the printed entry under auth.apiKeys in the server config (it holds only the
key's SHA-256), or pass the key to the server as SCORELINE_API_KEYS=ID:KEY:SCOPE+SCOPE.

Options:
  --id ID          the key's name in logs, the access log and the prediction log (letters, digits, . _ -)
  --scopes LIST    comma-separated: ${API_KEY_SCOPES.join(', ')}
  --json           print {"id", "key", "hash", "scopes", "env"} as one JSON object
  -h, --help       show this help`;

export const keys: Command = {
  summary: 'make API keys for the data plane',
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, { id: { type: 'string' }, scopes: { type: 'string' }, json: { type: 'boolean' } });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals[0] !== 'create')
      throw new UsageError(positionals.length === 0 ? 'missing subcommand: create' : `unknown subcommand '${positionals[0]}'`);
    if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`);
    const id = stringFlag(values.id);
    const scopeList = stringFlag(values.scopes);
    if (id === undefined) throw new UsageError('--id is required');
    if (scopeList === undefined) throw new UsageError(`--scopes is required (${API_KEY_SCOPES.join(', ')})`);
    const key = generateKey();
    const env = `${id}:${key}:${scopeList
      .split(',')
      .map((s) => s.trim())
      .join('+')}`;
    let scopes: string[];
    try {
      // The same checks the server applies when it reads the key.
      scopes = [...parseEnvKeys(env)[0]!.scopes];
    } catch (e) {
      if (isScorelineError(e)) throw new UsageError(e.message.replace(/^SCORELINE_API_KEYS entry 1( \(id '[^']*'\))?: /, ''));
      throw e;
    }
    const hash = hashKey(key);
    if (values.json) {
      console.log(JSON.stringify({ id, key, hash, scopes, env }));
      return 0;
    }
    console.log(`API key '${id}' (shown once; it is not stored):\n\n  ${key}\n`);
    console.log(
      `Server config (auth.apiKeys):\n\n  auth:\n    enabled: true\n    apiKeys:\n      - id: ${id}\n        hash: ${hash}\n        scopes: [${scopes.join(', ')}]\n`,
    );
    console.log(`Or in the environment (e.g. a Kubernetes Secret; entries separated by commas):\n\n  SCORELINE_API_KEYS=${env}\n`);
    console.log(`Clients send it as "Authorization: Bearer <key>" or "x-api-key: <key>".`);
    return 0;
  },
};
