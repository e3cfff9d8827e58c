// What an ONNX file says about itself, read from its protobuf without onnxruntime: the signature
// (inputs and outputs with datatypes and shapes, -1 for dynamic dims), its metadata, and whether it
// keeps tensor data in other files, and whether one model can take the inputs another takes. The lowest layer after errors: the registry judges uploads with
// it, and inference workers and the retraining child read models with it without loading the registry.

export { readOnnxMetadata, type Datatype, type OnnxMetadata, type TensorSpec } from './metadata.js';
export { findExternalData, refuseExternalData, type ExternalTensor } from './external-data.js';
export { inputIncompatibility } from './signature.js';
