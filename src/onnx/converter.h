// The ONNX op converters: one function per ONNX op type that builds the op's meaning out of
// tilegraph IR ops with a Builder. Converters live in families (convert_elementwise.cc,
// convert_nn.cc, convert_shape.cc, convert_reduce.cc, convert_attention.cc,
// convert_resize.cc, convert_rnn.cc), each adding its entries to the table.
//
// A converter sees one node through OnnxNode: its inputs as IR values (an omitted optional
// input is null), inputs whose value is known at import time (initializers kept constant,
// Constant nodes, shape computations folded by the importer), its attributes with ONNX's
// defaults, and the model's opset (ops changed attributes into inputs across opsets).
#pragma once

#include <onnx/onnx_pb.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ir/host_tensor.h"
#include "ops/builder.h"

namespace tg {

class OnnxNode {
 public:
  OnnxNode(const onnx::NodeProto& proto, Builder& b, int64_t opset, bool training,
           std::vector<Value*> inputs)
      : proto_(proto), b_(b), opset_(opset), training_(training), inputs_(std::move(inputs)) {}

  const onnx::NodeProto& proto() const { return proto_; }
  Builder& b() { return b_; }
  int64_t opset() const { return opset_; }
  // Imported for training: BatchNormalization uses batch statistics and updates its running
  // ones, Dropout drops (OnnxImportOptions::training).
  bool training() const { return training_; }

  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  bool has_input(int i) const { return i < num_inputs() && inputs_[i] != nullptr; }
  Value* input(int i) const;  // required input i (an Error naming the node when absent)
  const std::vector<Value*>& inputs() const { return inputs_; }
  // Input i's value when known at import time (a constant), else null.
  const HostTensor* constant(int i) const;
  // Input i as integers / doubles; it must be known at import time (an Error otherwise).
  std::vector<int64_t> ints_input(int i) const;
  std::vector<double> floats_input(int i) const;
  int num_outputs() const { return proto_.output_size(); }
  bool wants_output(int i) const { return i < num_outputs() && !proto_.output(i).empty(); }

  bool has_attr(const std::string& name) const { return Find(name) != nullptr; }
  int64_t attr_int(const std::string& name, int64_t def) const;
  double attr_float(const std::string& name, double def) const;
  std::string attr_string(const std::string& name, const std::string& def) const;
  std::vector<int64_t> attr_ints(const std::string& name, std::vector<int64_t> def = {}) const;
  std::vector<double> attr_floats(const std::string& name, std::vector<double> def = {}) const;
  const onnx::TensorProto* attr_tensor(const std::string& name) const;

  // Fails with kUnsupported naming this node ("Pad mode 'wrap' is not supported").
  [[noreturn]] void Unsupported(const std::string& what) const;
  // A rank-normalized axis of input-rank `rank` (ONNX allows negative axes).
  int64_t Axis(int64_t axis, int64_t rank) const;

 private:
  const onnx::AttributeProto* Find(const std::string& name) const;
  // The attribute `name` when present, checked to be of `type` (an attribute of another type,
  // `axis` given as a string say, is an error naming the node, as ONNX Runtime refuses it;
  // files that leave the type UNDEFINED are read by the field asked for).
  const onnx::AttributeProto* FindTyped(const std::string& name,
                                        onnx::AttributeProto::AttributeType type) const;
  // Input i's constant value, or an error saying it must be known at import.
  const HostTensor& Known(int i) const;
  const onnx::NodeProto& proto_;
  Builder& b_;
  int64_t opset_;
  bool training_;
  std::vector<Value*> inputs_;
};

// Returns the node's outputs in ONNX order (null for an optional output nobody reads).
using OnnxConverter = std::function<std::vector<Value*>(OnnxNode&)>;
using OnnxConverterTable = std::map<std::string, OnnxConverter>;

// The table of every supported op type (domain "" / "ai.onnx").
const OnnxConverterTable& OnnxConverters();

void AddElementwiseConverters(OnnxConverterTable& table);
void AddNnConverters(OnnxConverterTable& table);
void AddShapeConverters(OnnxConverterTable& table);
void AddReduceConverters(OnnxConverterTable& table);
void AddAttentionConverters(OnnxConverterTable& table);
void AddResizeConverters(OnnxConverterTable& table);
void AddRecurrentConverters(OnnxConverterTable& table);

// Helpers shared by the families.
// A constant of x's dtype (broadcastable scalar).
Value* ScalarLike(Builder& b, Value* x, double v);
// Rank of a value.
inline int64_t RankOf(Value* v) { return v->type().rank(); }
// Axes in [0, rank) from possibly negative ONNX axes.
std::vector<int64_t> NormalizeAxes(const OnnxNode& n, std::vector<int64_t> axes, int64_t rank);

}  // namespace tg
