// The ceiling: uWS answering every request with a fixed body, without reading it. Nothing that
// does real work on the same HTTP stack can be faster. Usage: node hello.js PORT BODY_FILE

import { readFileSync } from 'node:fs';
import { loadUws } from '../../src/server/uws.js';

const port = Number(process.argv[2]);
const body = readFileSync(process.argv[3]!, 'utf8');
loadUws()
  .App()
  .any('/*', (res) => {
    res.writeHeader('content-type', 'application/json').end(body);
  })
  .listen('127.0.0.1', port, (s) => {
    if (!s) process.exit(1);
    console.log('ready');
  });
