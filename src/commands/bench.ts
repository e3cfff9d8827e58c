// `scoreline bench NAME [args]`: runs one of the benchmarks in bench/ (compiled to dist/bench), the
// same as `npm run bench:NAME`. Each prints its table and writes it into bench/RESULTS.md.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UsageError, type Command } from './command.js';

const BENCHES: Record<string, { file: string; node?: string[]; what: string }> = {
  http: { file: 'http.js', what: 'HTTP inference vs the uWS ceiling and Fastify + onnxruntime-node (wrk)' },
  features: { file: 'features.js', node: ['--expose-gc'], what: 'the native feature cache vs lru-cache, and /v1/score vs plain inference' },
  batch: { file: 'batch.js', what: 'score-batch on 2 million rows vs one session.run per row' },
  monitoring: { file: 'monitoring.js', what: 'throughput with monitoring on vs off (wrk)' },
  tracing: { file: 'tracing.js', what: 'CPU per request with tracing and the access log off vs on (wrk)' },
  retrain: { file: 'retrain-latency.js', what: 'scoring latency while a retraining job trains' },
  export: { file: 'export.js', what: 'peak memory of export predictions as the log grows tenfold' },
  schemas: { file: 'schemas.js', what: "an inference body's schema check vs its JSON.parse" },
  cluster: { file: 'cluster.js', what: 'one replica with the PostgreSQL store vs with SQLite (wrk)' },
};

const USAGE = `Usage: scoreline bench NAME [options of that benchmark]

${Object.entries(BENCHES)
  .map(([k, b]) => `  ${k.padEnd(11)} ${b.what}`)
  .join('\n')}

Load tests need wrk (apt-get install -y wrk) and only target 127.0.0.1. Results go to
bench/RESULTS.md unless --no-write.`;

export const bench: Command = {
  summary: 'run a benchmark (http, features, batch, monitoring, tracing, retrain, export, schemas, cluster)',
  usage: USAGE,
  async run(argv) {
    const [name, ...rest] = argv;
    if (name === undefined || name === '-h' || name === '--help') {
      console.log(USAGE);
      return name === undefined ? 2 : 0;
    }
    const b = BENCHES[name];
    if (b === undefined) throw new UsageError(`unknown benchmark '${name}' (${Object.keys(BENCHES).join(', ')})`);
    const file = fileURLToPath(new URL(`../../bench/${b.file}`, import.meta.url));
    if (!existsSync(file)) throw new UsageError(`${file} is missing: build first (npm run build)`);
    const r = spawnSync(process.execPath, [...(b.node ?? []), file, ...rest], { stdio: 'inherit' });
    return r.status ?? 1;
  },
};
