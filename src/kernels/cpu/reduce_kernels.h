// Reduction kernels (sum, mean, amax, var, argmax). The fast kernels see the input as
// [outer, reduce, inner] (the op layer permutes first when the reduced axes are not one
// block); float sums accumulate in double. Reference kernels loop naively over any shape with
// a per-axis "reduced" mask. T is float or double (sum and amax also int32_t / int64_t).
#pragma once

#include <cstdint>
#include <vector>

namespace tg::cpu {

// The input seen as [reduce_outer, outer, reduce, inner]; reduce_outer and reduce are
// reduced. reduce_outer > 1 (the bias-gradient pattern: [N, C, H*W] -> [C] without a
// permuting copy) is supported by Sum, Mean and Amax, with inner == 1.
struct ReduceDims {
  int64_t outer = 1, reduce = 1, inner = 1;
  int64_t reduce_outer = 1;
};

template <typename T> void Sum(const T* in, T* out, const ReduceDims& d);
template <typename T> void Mean(const T* in, T* out, const ReduceDims& d);
template <typename T> void Amax(const T* in, T* out, const ReduceDims& d);
// Variance with Bessel-style `correction` (divides by reduce - correction); two passes.
template <typename T> void Var(const T* in, T* out, const ReduceDims& d, double correction);
// Index of the first maximum along `reduce` (NaN counts as the maximum, like PyTorch).
template <typename T> void Argmax(const T* in, int64_t* out, const ReduceDims& d);

// Naive reference reductions over `shape`, reducing the axes where reduced[axis] is true;
// the output is the kept axes in row-major order.
struct ReduceShape {
  std::vector<int64_t> shape;
  std::vector<bool> reduced;
};
template <typename T> void SumRef(const T* in, T* out, const ReduceShape& s);
template <typename T> void MeanRef(const T* in, T* out, const ReduceShape& s);
template <typename T> void AmaxRef(const T* in, T* out, const ReduceShape& s);
template <typename T> void VarRef(const T* in, T* out, const ReduceShape& s, double correction);
template <typename T> void ArgmaxRef(const T* in, int64_t* out, const ReduceDims& d);

}  // namespace tg::cpu
