// Builder: appends nodes to a Graph with output types inferred by each op's infer function,
// attributes completed with their defaults, and the current placement and source location
// stamped on every node. Gradient rules, the optimizer generator and the front end all build
// IR through it. The helpers below are thin wrappers over Op(); their names are the
// registered op names.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/registry.h"

namespace tg {

class Builder {
 public:
  explicit Builder(Graph& graph, const OpRegistry& registry = OpRegistry::Global())
      : graph_(graph), registry_(registry) {}

  Graph& graph() { return graph_; }
  const OpRegistry& registry() const { return registry_; }
  // Nodes built from now on carry this placement / source location.
  void set_placement(int p) { placement_ = p; }
  int placement() const { return placement_; }
  void set_source(std::string s) { source_ = std::move(s); }
  // Nodes are inserted before `n` instead of appended (null: append).
  void set_insertion_point(const Node* n) { before_ = n; }

  // Generic: any registered op. Returns the node's outputs.
  std::vector<Value*> Op(const std::string& op, std::vector<Value*> inputs, AttrMap attrs = {});
  Value* Op1(const std::string& op, std::vector<Value*> inputs, AttrMap attrs = {});
  Node* OpNode(const std::string& op, std::vector<Value*> inputs, AttrMap attrs = {});

  // Constants.
  Value* Scalar(double v, DType dtype = DType::kF32);
  Value* Full(const Shape& shape, double v, DType dtype = DType::kF32);  // a `full` node
  Value* ZerosLike(Value* x) { return Full(x->type().shape, 0.0, x->type().dtype); }

  // Elementwise (binary ops broadcast numpy-style).
  Value* Add(Value* a, Value* b) { return Op1("add", {a, b}); }
  Value* Sub(Value* a, Value* b) { return Op1("sub", {a, b}); }
  Value* Mul(Value* a, Value* b) { return Op1("mul", {a, b}); }
  Value* Div(Value* a, Value* b) { return Op1("div", {a, b}); }
  Value* Neg(Value* a) { return Op1("neg", {a}); }
  Value* Exp(Value* a) { return Op1("exp", {a}); }
  Value* Log(Value* a) { return Op1("log", {a}); }
  Value* Sqrt(Value* a) { return Op1("sqrt", {a}); }
  Value* Rsqrt(Value* a) { return Op1("rsqrt", {a}); }
  Value* Where(Value* c, Value* a, Value* b) { return Op1("where", {c, a, b}); }
  Value* Cast(Value* a, DType d);
  // a * s, a + s for a double scalar s (a constant of a's dtype).
  Value* MulScalar(Value* a, double s);
  Value* AddScalar(Value* a, double s);

  // Shapes.
  Value* Reshape(Value* a, const Shape& shape);
  Value* Permute(Value* a, const std::vector<int64_t>& perm);
  Value* Transpose(Value* a, int64_t d0, int64_t d1);
  Value* Expand(Value* a, const Shape& shape);  // no-op when shapes match
  // Sums a broadcast gradient back to `shape` (inverse of numpy broadcasting).
  Value* SumToShape(Value* g, const Shape& shape);
  Value* Sum(Value* a, const std::vector<int64_t>& axes, bool keepdim = false);
  Value* Mean(Value* a, const std::vector<int64_t>& axes, bool keepdim = false);
  Value* MatMul(Value* a, Value* b, bool transpose_a = false, bool transpose_b = false);

  // Losses composed from registered ops, with torch.nn.functional's semantics.
  // reduction: "mean", "sum" or "none". logits [N, C], target integer [N].
  Value* CrossEntropy(Value* logits, Value* target, const std::string& reduction = "mean",
                      int64_t ignore_index = -100, double label_smoothing = 0.0);
  Value* MseLoss(Value* input, Value* target, const std::string& reduction = "mean");

 private:
  Graph& graph_;
  const OpRegistry& registry_;
  int placement_ = 0;
  std::string source_;
  const Node* before_ = nullptr;
};

// Numpy broadcast of two shapes; throws a Shape error naming both when incompatible.
Shape BroadcastShapes(const Shape& a, const Shape& b);

}  // namespace tg
