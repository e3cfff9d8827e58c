// One worker HTTP thread of the process (threads.ts): a whole server on the shared port, started
// with the main thread's config (its own data dir, no gRPC); asked to close, it finishes its
// requests, says so, and the main thread then stops it.

import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '../logger.js';
import { startServer } from './index.js';
import type { ThreadData, ThreadMessage } from './threads.js';

const { config, role } = workerData as ThreadData;
const port = parentPort!;
const post = (m: ThreadMessage) => port.postMessage(m);
const log = createLogger(config.log.level).child({ thread: role.index });

try {
  const server = await startServer({ config, log, thread: role });
  // A bug that throws out of a callback: the thread stops serving, closes its sockets (a thread that
  // holds uWS sockets cannot end) and exits; the main thread starts another.
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e }, `HTTP thread ${role.index}: uncaught exception; the thread stops and is started again`);
    server.abort();
    process.stdout.write('', () => process.exit(1));
  });
  port.on('message', (m: { kind: 'close' } | { kind: 'reloadTls' }) => {
    if (m.kind === 'reloadTls') server.reloadTls();
    else
      void server
        .close()
        .then(async (drained) => {
          // The last log lines reach the main thread's stdout before the thread is stopped.
          await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
          return drained;
        })
        .then((drained) => post({ kind: 'closed', drained }));
  });
  post({ kind: 'listening', port: server.port });
} catch (e) {
  post({ kind: 'failed', error: (e as Error).message });
  process.exit(1);
}
