// OnnxBuilder: makes ONNX models from C++ (PopART's Builder): inputs, initializers from host
// tensors, nodes of any ONNX op with attributes, outputs. The result is a ModelProto that
// the sessions (session.h) load like a file, or that SaveOnnxModel writes.
//
//   OnnxBuilder ob(17);
//   std::string x = ob.AddInput("x", {DType::kF32, {32, 16}});
//   std::string w = ob.AddInitializer("w", weights);
//   std::string y = ob.Op("Relu", {ob.Op("MatMul", {x, w})});
//   ob.AddOutput(y);
//   onnx::ModelProto model = ob.Build();
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "ir/host_tensor.h"

namespace tg {

class OnnxBuilder {
 public:
  using AttrValue = std::variant<int64_t, double, std::string, std::vector<int64_t>,
                                 std::vector<double>>;
  struct Attribute {
    std::string name;
    AttrValue value;
  };

  explicit OnnxBuilder(int64_t opset = 17, std::string graph_name = "model");

  std::string AddInput(const std::string& name, const TensorType& type);
  std::string AddInitializer(const std::string& name, const HostTensor& value);
  // A node; returns its first output's name (generated: "<op>_<n>").
  std::string Op(const std::string& op_type, const std::vector<std::string>& inputs,
                 const std::vector<Attribute>& attributes = {});
  // A node with `num_outputs` outputs.
  std::vector<std::string> OpN(const std::string& op_type, const std::vector<std::string>& inputs,
                               int num_outputs, const std::vector<Attribute>& attributes = {});
  // An int64 constant (shapes, axes).
  std::string Ints(const std::vector<int64_t>& values);
  void AddOutput(const std::string& name);

  onnx::ModelProto Build() const { return model_; }

 private:
  onnx::ModelProto model_;
  int next_ = 0;
};

}  // namespace tg
