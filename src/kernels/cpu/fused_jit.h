// The fused elementwise kernel as machine code: a FusedProgram whose steps are all simple
// arithmetic is compiled (with xbyak, at kernel-build time) into one loop that keeps every
// intermediate in vector registers and touches memory only to read its array inputs and write
// its outputs. The interpreter (RunFused) instead runs each step over a block buffer: about
// one L1 pass per step, so an 8-step SGD-momentum update ran at 1 ns per element in cache and
// 3 ns from memory (4x slower than a compiled loop, which streams at triad bandwidth).
//
// Which programs: f32 compute; every load is a same-shape contiguous f32 / f16 / bf16 array or
// a scalar (f32, bool or half), or a row broadcast (constant along the last dimensions of the
// iteration space, as a per-channel [N, C, 1, 1] operand over [N, C, H, W], with rows of at
// least four vectors: the loop then runs per row, the operand a scalar of each); every store
// f32 / f16 / bf16; every step one of JitOp: the
// arithmetic, comparisons and selects (one IEEE operation per element, no contraction) and
// the activations with their backward helpers (vector_math.h's functions, operation for
// operation: fused_jit_code.h says how that stays exact). Results are bit-identical to the
// interpreter's. Anything else (other broadcasts, bool arrays, log, pow, ...) returns no
// kernel and the caller keeps the interpreter. AVX-512 (zmm) where the CPU has AVX512F, AVX2
// (ymm) otherwise; no JIT on other CPUs or when TILEGRAPH_FUSED_JIT=0.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/cpu/fused_kernel.h"

namespace tg::cpu {

// Vector widths the generator can target (kAuto: the widest this CPU has).
enum class JitIsa : uint8_t { kAuto, kAvx512, kAvx };

class FusedJitKernel {
 public:
  virtual ~FusedJitKernel() = default;
  // Same contract as RunFused(program, inputs, outputs) for the program it was built from.
  virtual void Run(const void* const* inputs, void* const* outputs) const = 0;
  // Whether Run with these buffers writes the outputs marked streaming (CompileFusedJit's
  // `streaming`) with non-temporal stores.
  virtual bool Streams(const void* const* inputs, void* const* outputs) const = 0;
};

// The compiled program, or nullptr when the program, the CPU or the environment rules the JIT
// out (the caller then runs the interpreter). Constants' data must outlive the kernel.
// `streaming[o]` (by output index; missing entries false): output o is written with
// non-temporal stores, bypassing the caches, for outputs the compiler knows nothing reads
// soon (a weight's half shadow, read in the next step): no read-for-ownership of their lines,
// no eviction of what the step does read. Applied on runs where every such output is 64-byte
// aligned and shares no buffer with an input; otherwise, and for the last partial vector,
// plain stores. The values written are the same either way.
std::unique_ptr<FusedJitKernel> CompileFusedJit(const FusedProgram<float>& program,
                                                JitIsa isa = JitIsa::kAuto,
                                                std::vector<bool> streaming = {});

}  // namespace tg::cpu
