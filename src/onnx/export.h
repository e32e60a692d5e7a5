// Export: a tilegraph inference graph -> an ONNX ModelProto (opset 17), the way back from our
// IR. Inputs stay inputs, variables become initializers with the given values, constants
// become initializers, and every op maps to ONNX nodes (some as a few nodes: rsqrt as
// Reciprocal(Sqrt), gelu through Erf, attention as MatMul / Softmax). Only nodes the outputs
// need are exported. A graph with ops that do not map (or a training step: updates,
// hyperparameters) is refused with every such op listed at once.
#pragma once

#include <onnx/onnx_pb.h>

#include <map>
#include <string>

#include "ir/graph.h"

namespace tg {

// `variables`: the value of each variable (e.g. Executable::ReadVariable); every variable the
// exported nodes read must have one.
onnx::ModelProto ExportOnnx(const Graph& graph, const std::map<std::string, HostTensor>& variables);

}  // namespace tg
