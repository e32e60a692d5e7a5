// Helpers shared by the dense op families (matmul, conv, pool, norm): attribute pairs,
// typed buffer access in kernels, float-dispatched kernel factories and sample types.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/dispatch.h"
#include "ops/registry.h"
#include "ops/weight_derived.h"
#include "support/error.h"

namespace tg::dense {

// A two-element int list attribute (a single element is used for both dims).
inline std::vector<int64_t> GetPair(const AttrMap& attrs, const std::string& name,
                                    const std::string& op) {
  std::vector<int64_t> v = GetInts(attrs, name);
  if (v.size() == 1) v.push_back(v[0]);
  TG_CHECK(v.size() == 2, kShape, op, ": expected ", name, " of 2 values, got ", v.size());
  return v;
}

template <typename T>
const T* In(const KernelArgs& a, int i) {
  return static_cast<const T*>(a.inputs[i]);
}
template <typename T>
T* Out(const KernelArgs& a, int i) {
  return static_cast<T*>(a.outputs[i]);
}

// A kernel factory that dispatches on input 0's float dtype: make(T{}, node) -> Kernel.
template <typename Make>
KernelFactory FloatKernel(const std::string& op, Make make) {
  return [op, make](const Node& node) -> Kernel {
    return DispatchFloat(node.input(0)->type().dtype, op,
                         [&](auto t) -> Kernel { return make(t, node); });
  };
}

inline TensorType F32(Shape shape) { return TensorType{DType::kF32, std::move(shape)}; }

// Checks that all inputs share input 0's floating dtype.
inline void CheckSameFloat(const InferContext& ctx, const std::string& op) {
  CheckFloating(ctx.in(0), op, "input 0");
  for (size_t i = 1; i < ctx.inputs.size(); ++i) {
    TG_CHECK(ctx.in(i).dtype == ctx.in(0).dtype, kShape, op, ": expected input ", i,
             " of dtype ", DTypeName(ctx.in(0).dtype), ", got ", ctx.in(i).ToString());
  }
}

}  // namespace tg::dense
