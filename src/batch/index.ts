// Batch scoring: a CSV or JSON Lines file scored with one registered model version on its own worker
// pool, streamed in constant memory, scores and rejected rows written in input order. The face of
// src/batch; the CLI's `score-batch` command and the batch benchmark use only what is exported here.
// Its CSV cell quoting and its write-then-rename file sink also serve the prediction export.

export { scoreBatch, DEFAULT_BATCH_ROWS, type ScoreBatchOptions, type BatchSummary, type BatchProgress } from './score-batch.js';
export { parseModelRef, type ModelRef } from './model.js';
export { csvCell, FileSink } from './output.js';
