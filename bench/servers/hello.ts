// The ceiling: uWS answering every request with a fixed body, without reading it. Nothing that
// does real work on the same HTTP stack can be faster. Usage: node hello.js PORT BODY_FILE [read-async]
// With `read-async` it is the floor of any server that answers after looking at the request: it
// copies the body out of uWS's chunks and answers one microtask later, corked, as scoreline's
// batched answers are written.

import { readFileSync } from 'node:fs';
import { loadUws, type HttpResponse } from '../../src/server/uws.js';

const port = Number(process.argv[2]);
const body = readFileSync(process.argv[3]!, 'utf8');
const readAsync = process.argv[4] === 'read-async';

function answerLater(res: HttpResponse): void {
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  const chunks: Buffer[] = [];
  res.onData((chunk, last) => {
    chunks.push(Buffer.from(chunk.slice(0)));
    if (!last) return;
    const size = Buffer.concat(chunks).length;
    void Promise.resolve(size).then(() => {
      if (!aborted) res.cork(() => res.writeHeader('content-type', 'application/json').end(body));
    });
  });
}

loadUws()
  .App()
  .any('/*', (res) => {
    if (readAsync) answerLater(res);
    else res.writeHeader('content-type', 'application/json').end(body);
  })
  .listen('127.0.0.1', port, (s) => {
    if (!s) process.exit(1);
    console.log('ready');
  });
