// The casts around a half value in a widened graph, as the passes that fold them see them
// (narrow-half-dense, fold-norm-casts): the half value an f32 operand was widened from, and
// the half dtype an f32 result is only rounded to.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/registry.h"
#include "passes/half_exactness.h"
#include "passes/single_reader.h"

namespace tg {

// The half value `v` is a cast up to f32 of, on `reader`'s device; or null.
inline Value* HalfSource(const Value* v, DType half, const Node& reader) {
  const Node* cast = v->producer();
  if (cast == nullptr || cast->op() != "cast" || cast->inputs().size() != 1 ||
      cast->placement() != reader.placement()) {
    return nullptr;
  }
  Value* src = cast->input(0);
  return src->type().dtype == half && v->type().dtype == DType::kF32 ? src : nullptr;
}

// The half dtype every reader of `v` rounds it to (all readers casts to one half dtype on
// `n`'s device, and `v` neither a graph output nor a variable update); f32 when none.
inline DType RoundedTo(const Value* v, const Node& n, const SingleReaders& readers) {
  const std::vector<Node*>& rounding = readers.All(v);
  if (rounding.empty() || readers.uses(v) != static_cast<int>(rounding.size())) {
    return DType::kF32;
  }
  const DType half = rounding[0]->output()->type().dtype;
  for (const Node* r : rounding) {
    if (r->op() != "cast" || r->inputs().size() != 1 || r->output()->type().dtype != half ||
        r->placement() != n.placement()) {
      return DType::kF32;
    }
  }
  return HalfExactness::IsHalf(half) ? half : DType::kF32;
}

// Ops with a native half kernel somewhere (OpDef::half_kernels: matmul, matmul_epilogue, the
// convolutions and conv2d_epilogue): what narrow-half-dense and widen-half-dense rewrite.
inline bool HasNativeHalfKernel(const std::string& op) {
  const OpDef* def = OpRegistry::Global().Find(op);
  return def != nullptr && !def->half_kernels.empty();
}

// A cast of `v` to `to`, inserted before `before` (null: at the end), on `origin`'s device
// with its source line.
inline Node* AddCastOf(Graph& g, Value* v, DType to, const Node* before, const Node& origin) {
  TensorType t = v->type();
  t.dtype = to;
  Node* c = g.AddNode("cast", {v}, {t}, {{"dtype", to}}, before);
  c->set_placement(origin.placement());
  c->set_source(origin.source());
  return c;
}

// HalfSource for whichever half dtype `v` was widened from.
inline Value* HalfSource(const Value* v, const Node& reader) {
  const Node* cast = v->producer();
  if (cast == nullptr || cast->op() != "cast" || cast->inputs().size() != 1) return nullptr;
  const DType from = cast->input(0)->type().dtype;
  return HalfExactness::IsHalf(from) ? HalfSource(v, from, reader) : nullptr;
}

}  // namespace tg
