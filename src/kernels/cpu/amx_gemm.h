// tilegraph's own bf16 GEMM on AMX tiles (Intel Sapphire Rapids and later): bf16 operands,
// f32 sums, the result written in f32 or rounded once to bf16, with an optional bias and
// activation applied as each 32 x 32 block leaves the tiles.
//
// Why ours and not oneDNN's: the oneDNN we link (Debian's 2.6, the newest packaged) runs its
// AMX matmul (brg:avx512_core_amx_bf16) at 1.9-2.5 TFLOP/s on a 1024^3 bf16 GEMM on two
// cores of an AMX Xeon whose tiles peak at 5.6-6.7 (MeasureBf16DotPeak, same process); this
// kernel's products alone reach 5.2 there and the whole call 2.8-3.2 (packing and writing
// the result are what is left; bench/mixed_precision.py measures both kernels in one run).
// It is the textbook AMX GEMM: a 2 x 2 block of 16 x 16 f32 accumulator tiles
// (tdpbf16ps); the left operand's rows read by tile loads straight from the caller's
// row-major buffer where it is k-contiguous and aligned (else copied per strip into a
// contiguous zero-padded buffer); the right operand packed per thread into the
// pair-interleaved ("VNNI") panels tdpbf16ps reads, a chunk of columns at a time (sized to
// stay in L2 while every row strip of the left operand passes over it), or kept packed across
// runs for a weight; k in passes of at most 512 (a strip's block of the left operand stays in
// L1 while the chunk's panels stream past it) with f32 partial sums between passes.
//
// Numerics: every product of two bf16 values is exact in f32; sums are f32, in an order that
// differs from oneDNN's and from the widened reference (like any two GEMMs). AMX reads bf16
// denormals as zero and flushes denormal sums, as oneDNN's AMX kernels do; the bf16 rounding
// (vcvtneps2bf16) is to nearest even and also flushes denormals.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/dense_params.h"

namespace tg::cpu {

enum class DenseType;     // onednn_kernels.h
struct MatmulEpilogue;    // onednn_kernels.h

// Whether this process runs bf16 GEMMs on AMX tiles: the CPU has AMX-BF16, Linux granted
// the tile state, native bf16 kernels are on (NativeBf16Dense) and TILEGRAPH_AMX_GEMM is not
// "0" (read when a kernel is built, so a program compiled with it set runs oneDNN's bf16
// matmuls next to one without: for comparisons).
bool AmxBf16GemmUsable();

// out = act(op(a) op(b) + bias[n]) for bf16 a, b (MatmulParams: batches broadcast; any
// m, n, k >= 1; either transpose). DenseType kBF16: bf16 bias and result (rounded to nearest
// even once); kBF16ToF32: f32 result, no bias. Runs on up to MaxThreads() OpenMP threads.
class AmxBf16Gemm {
 public:
  AmxBf16Gemm(const MatmulParams& p, bool bias, Activation activation, bool bf16_result);
  // `b_version`: when given (b is a weight: one matrix for every batch), b's packed panels
  // are kept and reused while b and *b_version are unchanged (an inference program packs
  // each weight once). A b that changes between runs (trained every step) is packed per run
  // after its first change, into L2-sized per-thread buffers.
  void Run(const void* a, const void* b, void* out, const void* bias,
           const uint64_t* b_version = nullptr) const;
  // Whether the last run read b's kept panels (tests).
  bool used_kept_b() const;
  // Whether the last run took the k-outer schedule (a wide k; tests).
  bool used_k_outer() const;

 private:
  MatmulParams p_;  // after folding a shared b's batches into m
  bool bias_ = false;
  Activation activation_ = Activation::kNone;
  bool bf16_result_ = true;
  int64_t kp_ = 0;  // k rounded up to the tile depth (32)
  // Element offsets of a, b and out for each batch (broadcast batches repeat an offset).
  std::vector<int64_t> a_off_, b_off_, out_off_;
  bool one_b_ = false;  // every batch reads the same b
  // Copies of a's strips for a run (inside its parallel region; amx_gemm.cc).
  void CopyStrips(const uint16_t* a, int64_t batches, int64_t first_copied,
                  int64_t copied_per_batch, int64_t depth, uint16_t* a_copy) const;
  // Run's k-outer schedule (amx_gemm.cc): threads split the columns, k is the outer loop.
  // a_copy: Run's buffer for the strips from first_copied on (CopyStrips).
  void RunKOuter(const uint16_t* a, const uint16_t* b, uint8_t* out, const uint16_t* bias,
                 uint16_t* a_copy, int64_t first_copied, int threads, int64_t passes,
                 int64_t depth) const;
  struct KeptB;         // b's panels kept across runs (amx_gemm.cc); shared by copies
  std::shared_ptr<KeptB> kept_;
};

}  // namespace tg::cpu
