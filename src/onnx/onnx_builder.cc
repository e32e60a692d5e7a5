#include "onnx/onnx_builder.h"

#include "onnx/model_file.h"
#include "support/error.h"

namespace tg {

OnnxBuilder::OnnxBuilder(int64_t opset, std::string graph_name) {
  model_.set_ir_version(8);
  model_.set_producer_name("tilegraph");
  auto* op = model_.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  model_.mutable_graph()->set_name(std::move(graph_name));
}

std::string OnnxBuilder::AddInput(const std::string& name, const TensorType& type) {
  auto* in = model_.mutable_graph()->add_input();
  in->set_name(name);
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(OnnxTypeOf(type.dtype));
  for (int64_t d : type.shape) tt->mutable_shape()->add_dim()->set_dim_value(d);
  return name;
}

std::string OnnxBuilder::AddInitializer(const std::string& name, const HostTensor& value) {
  *model_.mutable_graph()->add_initializer() = TensorToProto(value, name);
  return name;
}

std::vector<std::string> OnnxBuilder::OpN(const std::string& op_type,
                                          const std::vector<std::string>& inputs,
                                          int num_outputs,
                                          const std::vector<Attribute>& attributes) {
  auto* node = model_.mutable_graph()->add_node();
  node->set_op_type(op_type);
  const std::string base = op_type + "_" + std::to_string(next_++);
  node->set_name(base);
  for (const auto& i : inputs) node->add_input(i);
  std::vector<std::string> outs;
  for (int k = 0; k < num_outputs; ++k) {
    outs.push_back(num_outputs == 1 ? base : base + "_" + std::to_string(k));
    node->add_output(outs.back());
  }
  for (const auto& a : attributes) {
    auto* attr = node->add_attribute();
    attr->set_name(a.name);
    std::visit([&](const auto& v) {
      using T = std::decay_t<decltype(v)>;
      if constexpr (std::is_same_v<T, int64_t>) {
        attr->set_type(onnx::AttributeProto::INT);
        attr->set_i(v);
      } else if constexpr (std::is_same_v<T, double>) {
        attr->set_type(onnx::AttributeProto::FLOAT);
        attr->set_f(static_cast<float>(v));
      } else if constexpr (std::is_same_v<T, std::string>) {
        attr->set_type(onnx::AttributeProto::STRING);
        attr->set_s(v);
      } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
        attr->set_type(onnx::AttributeProto::INTS);
        for (int64_t x : v) attr->add_ints(x);
      } else {
        attr->set_type(onnx::AttributeProto::FLOATS);
        for (double x : v) attr->add_floats(static_cast<float>(x));
      }
    }, a.value);
  }
  return outs;
}

std::string OnnxBuilder::Op(const std::string& op_type, const std::vector<std::string>& inputs,
                            const std::vector<Attribute>& attributes) {
  return OpN(op_type, inputs, 1, attributes)[0];
}

std::string OnnxBuilder::Ints(const std::vector<int64_t>& values) {
  HostTensor t({DType::kI64, {static_cast<int64_t>(values.size())}});
  for (size_t i = 0; i < values.size(); ++i) t.as<int64_t>()[i] = values[i];
  return AddInitializer("ints_" + std::to_string(next_++), t);
}

void OnnxBuilder::AddOutput(const std::string& name) {
  model_.mutable_graph()->add_output()->set_name(name);
}

}  // namespace tg
