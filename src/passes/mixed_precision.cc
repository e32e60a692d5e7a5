#include "passes/mixed_precision.h"

#include <cstdlib>
#include <vector>

#include "ir/attr.h"
#include "passes/half_casts.h"
#include "support/error.h"

namespace tg {

namespace {


// `v` (f32) in the half dtype: the half value it was widened from, or a new cast.
Value* InHalf(Graph& g, Value* v, DType half, const Node& user) {
  const Node* p = v->producer();
  if (p != nullptr && p->op() == "cast" && p->input(0)->type().dtype == half) return p->input(0);
  return AddCastOf(g, v, half, &user, user)->output(0);
}

bool IsDepthwiseConv(const Node& n) {
  if (n.op() != "conv2d" || !HasAttr(n.attrs(), "groups")) return false;
  const int64_t groups = GetInt(n.attrs(), "groups");
  const auto& x = n.input(0)->type().shape;
  return groups > 1 && x.size() == 4 && x[1] == groups;
}

// The result's rows: its elements over its columns (matmul) or output channels (conv2d).
int64_t ResultRows(const Node& n) {
  const auto& shape = n.output(0)->type().shape;
  if (shape.empty()) return 1;
  int64_t total = 1;
  for (int64_t d : shape) total *= d;
  const int64_t columns = n.op() == "conv2d" && shape.size() == 4 ? shape[1] : shape.back();
  return columns == 0 ? 0 : total / columns;
}

// A size rule's threshold: the environment's `name` when set (for measurements), else the
// policy's.
int64_t Threshold(const char* name, int64_t policy_value) {
  if (const char* env = std::getenv(name)) return std::atoll(env);
  return policy_value;
}

// The depth of the products summed for each result element: a convolution's C / groups x kh x
// kw (its weight's dims after the first), a matmul's contracted dimension.
int64_t ReductionDepth(const Node& n) {
  if (n.op() == "conv2d") {
    const auto& w = n.input(1)->type().shape;
    int64_t depth = 1;
    for (size_t d = 1; d < w.size(); ++d) depth *= w[d];
    return depth;
  }
  const auto& a = n.input(0)->type().shape;
  if (a.empty()) return 1;
  const bool transposed = GetFlag(n.attrs(), "transpose_a");
  return transposed && a.size() >= 2 ? a[a.size() - 2] : a.back();
}

bool Eligible(const Node& n, const MixedPrecisionPolicy& policy) {
  if (policy.half_ops.count(n.op()) == 0) return false;
  if (!policy.depthwise_in_half && IsDepthwiseConv(n)) return false;
  if ((n.op() == "matmul" || n.op() == "conv2d") &&
      (ResultRows(n) < Threshold("TILEGRAPH_AMP_MIN_ROWS", policy.min_rows) ||
       ReductionDepth(n) < Threshold("TILEGRAPH_AMP_MIN_DEPTH", policy.min_depth))) {
    return false;
  }
  bool any_float = false;
  for (const Value* v : n.inputs()) {
    if (!IsFloating(v->type().dtype)) continue;
    if (v->type().dtype != DType::kF32) return false;  // f64 or already half: left alone
    any_float = true;
  }
  return any_float;
}

}  // namespace

int ApplyMixedPrecision(Graph& graph, const MixedPrecisionPolicy& policy) {
  TG_CHECK(IsHalf(policy.half), kInvalidInput,
           "mixed precision: the half dtype must be f16 or bf16, got ", DTypeName(policy.half));
  std::vector<Node*> order;
  for (const auto& n : graph.nodes()) order.push_back(n.get());
  int converted = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    Node* n = order[i];
    if (!Eligible(*n, policy)) continue;
    for (size_t k = 0; k < n->inputs().size(); ++k) {
      Value* v = n->input(k);
      if (IsFloating(v->type().dtype)) n->set_input(k, InHalf(graph, v, policy.half, *n));
    }
    const Node* next = i + 1 < order.size() ? order[i + 1] : nullptr;
    for (Value* out : n->outputs()) {
      if (out->type().dtype != DType::kF32) continue;
      TensorType t = out->type();
      t.dtype = policy.half;
      out->set_type(t);
      // Every reader of the result reads it back in f32 (the cast itself reads the half value).
      Node* back = AddCastOf(graph, out, DType::kF32, next, *n);
      graph.ReplaceAllUsesWith(out, back->output(0));
      back->set_input(0, out);
    }
    ++converted;
  }
  return converted;
}

}  // namespace tg
