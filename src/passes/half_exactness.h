// Which half dtypes an f32 / f64 value of a widened half-precision graph holds exactly.
// A half model is captured widened (ops/half_widening.h): half values are cast up to f32
// before each op reads them. Such a cast's result is exact in its half dtype; so is the
// result of an op that only moves, selects, negates or zeroes elements (a reshape, relu,
// max-pool, where...) when all its floating operands are exact in it. Anything else (sums,
// products, ...) is not. Passes that remove or move roundings ask this (fold-exact-casts,
// narrow-half-dense): a rounding to a dtype the value is exact in changes nothing.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "ir/graph.h"

namespace tg {

class HalfExactness {
 public:
  // Bit of each half dtype in a mask (f16 1, bf16 2; 0 for other dtypes).
  static uint8_t Bit(DType d);
  static bool IsHalf(DType d) { return d == DType::kF16 || d == DType::kBF16; }

  // Records what `n`'s results are exact in; call in program order.
  void Visit(const Node& n);
  // The half dtypes `v` is exact in (a half value: its own dtype).
  uint8_t MaskOf(const Value* v) const;
  bool IsExactIn(const Value* v, DType half) const { return (MaskOf(v) & Bit(half)) != 0; }

 private:
  std::unordered_map<const Value*, uint8_t> exact_;  // f32 / f64 value -> mask
};

}  // namespace tg
