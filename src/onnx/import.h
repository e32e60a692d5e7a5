// ONNX import: an ONNX ModelProto -> a tilegraph Graph, the front end of the C++ API
// (session.h) and of tilegraph.onnx in Python.
//
//   graph inputs (not initializers) -> graph inputs, streamed per step;
//   initializers                    -> variables (floating point: trainable weights) or, for
//                                      integer ones and those marked constant, constants;
//   nodes                           -> IR ops by the converter table (converter.h);
//   graph outputs                   -> graph outputs.
// tilegraph compiles static shapes: a symbolic input dimension ("batch") needs a size from
// OnnxImportOptions::input_shapes. Nodes whose inputs are all known at import time (shape
// arithmetic: Shape -> Gather -> Concat -> Reshape) are evaluated at import. Every op the
// converter table lacks is reported at once, with node names. Where the model states a static
// type for a value (value_info, outputs) it is checked against the type tilegraph infers.
#pragma once

#include <onnx/onnx_pb.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace tg {

struct OnnxImportOptions {
  // Shapes of graph inputs, replacing the model's (needed where it has symbolic dims).
  std::map<std::string, Shape> input_shapes;
  // Initializers that stay constants even when floating point (not trained, foldable).
  bool weights_as_constants = false;
  // For a training step: BatchNormalization normalizes with batch statistics and updates the
  // running ones (momentum as the node says), Dropout drops. Otherwise both are inference.
  bool training = false;
  // Graph inputs whose values are fixed for this compilation: they become constants, so that
  // shapes, axes and sizes computed from them are static (value specialization; the Python
  // session recompiles when they change). Not fed per step.
  std::map<std::string, HostTensor> constant_inputs;
};

struct OnnxImport {
  std::unique_ptr<Graph> graph;
  std::vector<std::string> inputs;   // fed per step, in the model's order
  std::vector<std::string> outputs;  // in the model's order
  std::vector<std::string> weights;  // initializers that are variables (trainable)
  int64_t opset = 0;                 // of the default domain
  std::map<std::string, HostTensor> initial_values;  // of the weights
  std::map<std::string, Value*> values;  // every ONNX value name -> its IR value
};

OnnxImport ImportOnnx(const onnx::ModelProto& model, const OnnxImportOptions& options = {});

// The op types of the default domain that the importer converts, sorted.
std::vector<std::string> SupportedOnnxOps();

}  // namespace tg
