// The fused elementwise kernel: runs a straight-line program of block functions over the
// iteration space in blocks (one pass over memory). Inputs are loaded into block-local
// buffers of the compute type T (zero-copy for contiguous same-shape inputs of type T,
// converted for bool and half inputs, broadcast by strided gathers otherwise); outputs are
// stored as T, bool or half. Half values (f16 / bf16, with T = float) keep PyTorch's per-op
// rounding: a step whose value is half rounds its block to the format and back, so the
// fused chain gives the numbers of the unfused one in one pass over memory. Blocks run in
// parallel.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/broadcast.h"

namespace tg::cpu {

template <typename T>
using BlockFunction = void (*)(const T* const* in, T* out, int64_t n, const double* params);

// How a value is stored in memory: as the compute type, as bool (0/1), or as a 16-bit
// float (f16 / bf16 bits; only with T = float).
enum class Stored : uint8_t { kCompute, kBool, kF16, kBF16 };

// A step's operation where it is one the fused JIT (fused_jit.h) can emit, with the meaning
// of the op's block function: where(c, a, b) = c != 0 ? a : b; comparisons give 1 or 0;
// relu = x < 0 ? 0 : x; maximum / minimum propagate NaN; cast copies (params[0] != 0: to
// bool, x != 0). The activations and their backward helpers (exp .. hardswish_backward) are
// the elementwise ops of those names, on vector_math.h's functions; params as the op's
// (gelu's mode, the threshold). kNone: only its block function computes it.
enum class JitOp : uint8_t {
  kNone, kAdd, kSub, kMul, kDiv, kNeg, kSqrt, kAbs, kRelu, kMaximum, kMinimum, kWhere,
  kEq, kNe, kLt, kLe, kGt, kGe, kCast,
  kExp, kSigmoid, kTanh, kSilu, kErf, kGelu, kReciprocal, kRsqrt, kHardswish, kHardsigmoid,
  kThresholdBackward, kGeluBackward, kSiluBackward, kSigmoidBackward, kTanhBackward,
  kHardswishBackward
};

template <typename T>
struct FusedProgram {
  struct Load {
    int slot = 0;
    int arg = -1;                     // kernel input index, or -1 for `constant`
    const void* constant = nullptr;   // data of a constant (arg == -1)
    Stored stored = Stored::kCompute;
    Dims shape;                       // the operand's shape (broadcasts to the iteration space)
  };
  // How each load runs (direct, scalar, bool conversion, broadcast gather), derived from the
  // shapes on the first run and kept: later runs allocate nothing.
  struct PreparedLoad {
    int kind = 0;
    BroadcastPlan plan;
  };
  struct Step {
    BlockFunction<T> fn = nullptr;
    std::vector<int> in_slots;
    int out_slot = 0;
    std::vector<double> params;
    Stored round_to = Stored::kCompute;  // kF16 / kBF16: the result is rounded to the format
    JitOp jit = JitOp::kNone;            // the same operation, for the JIT
  };
  struct Store {
    int slot = 0;
    int arg = 0;  // kernel output index
    Stored stored = Stored::kCompute;
  };
  Dims shape;  // the iteration space
  int num_slots = 0;
  std::vector<Load> loads;
  std::vector<Step> steps;
  std::vector<Store> stores;
  mutable std::vector<PreparedLoad> prepared;  // filled by the first RunFused
};

// Elements per block.
inline constexpr int64_t kFusedBlock = 1024;

template <typename T>
void RunFused(const FusedProgram<T>& program, const void* const* inputs, void* const* outputs);

}  // namespace tg::cpu
