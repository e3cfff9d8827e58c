// The baseline a Node user would write first: Fastify + onnxruntime-node's public API, one
// session.run per request, the same OIP request and response JSON as scoreline.
// Usage: node fastify-ort.js PORT MODEL_PATH MODEL_NAME

import Fastify from 'fastify';
import ort from 'onnxruntime-node';

const [port, modelPath, modelName] = [Number(process.argv[2]), process.argv[3]!, process.argv[4]!];
const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential' });
const types: Record<string, string> = { float32: 'FP32', float64: 'FP64', int32: 'INT32', int64: 'INT64', bool: 'BOOL' };

interface Input {
  name: string;
  shape: number[];
  datatype: string;
  data: number[];
}

const app = Fastify({ logger: false, bodyLimit: 4 * 1024 * 1024 });
app.post<{ Params: { model: string }; Body: { id?: string; inputs: Input[] } }>('/v2/models/:model/infer', async (req, reply) => {
  if (req.params.model !== modelName) return reply.code(404).send({ error: 'unknown model' });
  const feeds: Record<string, ort.Tensor> = {};
  for (const input of req.body.inputs)
    feeds[input.name] = new ort.Tensor('float32', Float32Array.from(input.data.flat(4) as number[]), input.shape);
  const out = await session.run(feeds);
  return {
    model_name: modelName,
    model_version: '1',
    ...(req.body.id !== undefined ? { id: req.body.id } : {}),
    outputs: session.outputNames.map((name) => {
      const t = out[name]!;
      return { name, datatype: types[t.type] ?? t.type, shape: t.dims, data: Array.from(t.data as ArrayLike<number | bigint>, Number) };
    }),
  };
});
await app.listen({ port, host: '127.0.0.1' });
console.log('ready');
