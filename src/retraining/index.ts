// Automated retraining: the Retrainer (triggers become jobs; the leader runs them through data,
// training, the validation gate and the rollout) and the built-in trainers, logistic regression
// and gradient-boosted trees, with their ONNX export. Jobs run in a child process (./worker.ts).
// The `retraining` config section is parsed below this module, in src/retraining-config.ts,
// because a model's config is refused at load when that section is invalid.

export { Retrainer, summary, type RetrainerOptions } from './retrainer.js';
export { parseRetrainingConfig, type RetrainingConfig, type TrainerConfig } from '../retraining-config.js';
export {
  addClassifierOutputs,
  addLogisticNodes,
  logisticToOnnx,
  logit,
  originalScaleCoefficients,
  predictProba,
  sigmoid,
  trainLogistic,
  type LogisticModel,
  type LogisticOnnxOptions,
  type LogisticOptions,
} from './logistic.js';
export {
  fitTrees,
  treeMargin,
  treeProba,
  treesToOnnx,
  type Tree,
  type TreeEnsemble,
  type TreeOnnxOptions,
  type TreeOptions,
} from './trees.js';
