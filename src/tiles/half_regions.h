// HalfRegions: which f32 values of a program are half values in disguise. tilegraph runs a
// half-precision model on the CPU by widening: the capture casts half operands to f32, the
// op computes in f32 and its result is cast back. An IPU computes those ops in half. For the
// tile estimate a value is *effectively half* when it is the f32 result of an op with a
// half (or effectively half) operand and no full-precision one (full precision: f32
// variables such as optimizer state or running statistics, and what is computed from
// them); it is then counted at half width, the matrix unit multiplies it at the half rate,
// and a widening or narrowing cast between such values is free (nothing to convert on an
// IPU: the cast's output is the same tile memory as its input).
#pragma once

#include <unordered_map>
#include <unordered_set>

#include "lowering/program.h"

namespace tg::tiles {

class HalfRegions {
 public:
  // `roots`: views to the values that own their bytes (ViewRoots).
  HalfRegions(const Program& program, const std::unordered_map<const Value*, const Value*>& roots);

  // Half, or effectively half.
  bool IsHalf(const Value* v) const;
  // The value's bytes at its effective width.
  double Bytes(const Value* v) const;
  // A cast between a half value and its widened f32 form (either way), whose output lives
  // in the arena and is not a graph output: free on an IPU.
  bool IsFreeCast(const Instruction& inst) const;

 private:
  const std::unordered_map<const Value*, const Value*>& roots_;
  std::unordered_set<const Value*> widened_;  // f32 values that are effectively half
  std::unordered_set<const Value*> outputs_;  // graph outputs
};

}  // namespace tg::tiles
