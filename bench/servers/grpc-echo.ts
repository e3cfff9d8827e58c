// The gRPC ceiling: @grpc/grpc-js answering every ModelInfer with fixed bytes (scoreline's own
// answer, serialized once), without decoding the request. Nothing that does real work on the same
// gRPC stack can be faster. Usage: node grpc-echo.js PORT ANSWER_FILE

import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';

const port = Number(process.argv[2]);
const answer = readFileSync(process.argv[3]!);
const same = (b: Buffer) => b;
const server = new grpc.Server();
server.register(
  '/inference.GRPCInferenceService/ModelInfer',
  (_call: unknown, done: grpc.sendUnaryData<Buffer>) => done(null, answer),
  same,
  same,
  'unary',
);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) process.exit(1);
  console.log('ready');
});
