// Half precision by widening: every op computes f16 / bf16 values, also the ops that have no
// half kernel of their own. Such an op's types are inferred as if its half operands were f32
// (results that would be f32 are the half dtype), and its kernel is the f32 kernel between
// conversions: half operands are widened into f32 scratch, the f32 kernel runs, f32 results
// are rounded (nearest even) into the half outputs. That is PyTorch's CPU semantics for half
// ops (compute in float, round each op's result), so eager parity holds op by op. Ops whose
// own infer accepts the half types and whose kernel builds for them (casts, data movement)
// run natively. Mixed half / f32 operands are not widened: they stay the op's dtype error.
#pragma once

#include <optional>
#include <vector>

#include "ops/registry.h"

namespace tg {

// The half dtype (f16 or bf16) shared by every floating type in `types`; nullopt when there
// is none, or when another floating dtype (f32, f64, the other half) is among them.
std::optional<DType> UniformHalf(const std::vector<TensorType>& types);

// `types` with `half` replaced by f32, and back.
std::vector<TensorType> WidenTypes(std::vector<TensorType> types, DType half);
std::vector<TensorType> NarrowTypes(std::vector<TensorType> types, DType half);

// The infer function of `def`, retried on widened types when the op refuses half operands.
std::vector<TensorType> InferWithHalfWidening(const OpDef& def,
                                              const std::vector<TensorType>& inputs,
                                              const AttrMap& attrs);

// `inner` (an op's kernel factory) made to build the widened kernel for half nodes the op
// does not compute natively: `native` (optional, OpDef::half_kernels) is asked first and
// builds the half node's kernel when it returns a non-empty one.
KernelFactory WithHalfWidening(const OpDef& def, KernelFactory inner, KernelFactory native);

}  // namespace tg
