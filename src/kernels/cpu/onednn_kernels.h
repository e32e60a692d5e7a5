// oneDNN matmul and conv2d kernels (f32, and bf16 where the CPU has bf16 instructions) on
// plain row-major memory. Each object creates its
// primitive once (at kernel-build time) and binds the caller's buffers on every Run.
// Convolutions let oneDNN pick its blocked layouts (nChw8c / nChw16c and blocked weights,
// which its direct JIT kernels need; on plain nchw it falls back to im2col + GEMM) and
// reorder plain operands into kernel-owned buffers around the primitive.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/dense_params.h"
#include "kernels/cpu/onednn_weight_layout.h"

namespace tg::cpu {

// The process-wide oneDNN CPU engine.
const dnnl::engine& CpuEngine();

// A primitive with its arguments bound once, run through oneDNN's C API: no memory object,
// argument map or vector is made per run (making them cost about 1 us of a tiny
// convolution's 3). Arguments are fixed memory (a kernel-owned buffer) or rebindable memory
// made with no buffer, which the kernel points at the caller's buffer before each run
// (set_data_handle). Copies share the memory objects: a kernel runs on one thread at a time
// (every replica builds its own kernels; a pipeline stage's instructions run on its thread).
// The scratchpad is the executing thread's (scratchpad_mode::user; see UserScratchpad in
// onednn_kernels.cc).
class BoundPrimitive {
 public:
  BoundPrimitive() = default;
  explicit BoundPrimitive(dnnl::primitive prim);
  // Adds argument `arg`, bound to `m` (fixed or rebindable: dnnl::memory is a handle).
  void Add(int arg, const dnnl::memory& m);
  void Run(dnnl::stream& stream) const;
  const dnnl::primitive& primitive() const { return prim_; }
  explicit operator bool() const { return prim_.get(true) != nullptr; }

 private:
  dnnl::primitive prim_;
  dnnl::memory::desc scratch_md_;
  mutable dnnl::memory scratch_;        // pointed at the thread's buffer on each run
  std::vector<dnnl::memory> memories_;  // keeps args_' memory objects alive
  std::vector<dnnl_exec_arg_t> args_;
};
// A memory object for `md` with no buffer yet (BoundPrimitive's rebindable arguments).
dnnl::memory Rebindable(const dnnl::memory::desc& md);

// The element type a dense kernel reads and writes. kBF16: bf16 operands and result with f32
// accumulation, the result rounded once to nearest even (the semantics of a widened bf16 op,
// ops/half_widening.h, up to the order of the f32 sums).
// kBF16ToF32 (forward convolutions, matmuls without bias): bf16 operands, f32 bias and
// result, f32 accumulation (mixed precision's conv2d_epilogue: the result is not rounded to
// bf16; the GEMM backward-input convolution's columns, summed in f32 before one rounding).
enum class DenseType { kF32, kBF16, kBF16ToF32 };

// Whether this process computes bf16 matmuls and convolutions natively (oneDNN's bf16
// kernels, AVX512_BF16 or AMX): true when the CPU has the instructions and
// TILEGRAPH_NATIVE_HALF is not "0" (read once; the widened f32 kernels are used otherwise).
bool NativeBf16Dense();
// Whether `implementation` is one of oneDNN's reference (unoptimized C++) kernels.
bool IsReferenceImplementation(const std::string& implementation);

// What a matmul applies to its result before writing it (oneDNN bias and post-ops: one pass
// over the output instead of three): out = act(op(a) op(b) + bias[n]).
struct MatmulEpilogue {
  bool bias = false;  // a bias of n values, broadcast over rows and batches
  Activation activation = Activation::kNone;
};

// Whether a matmul keeps its right operand (a weight: a variable or constant, one matrix for
// every batch) in the layout oneDNN chooses for it, across runs (see Run's b_version):
// kIfBlocked keeps a blocked layout (brgemm's packed panels, AVX-512 and up) and not a plain
// transpose (with AVX2's gemm:jit, reading a Linear weight untransposed measured 20% slower
// on BERT-Base); kAnyLayout keeps whatever differs from b's own (tests of the mechanism).
enum class PrepackB { kNo, kIfBlocked, kAnyLayout };

// out = op(a) * op(b) with batch broadcasting; see MatmulParams.
class OnednnMatmul {
 public:
  explicit OnednnMatmul(const MatmulParams& p, const MatmulEpilogue& epilogue = {},
                        PrepackB prepack_b = PrepackB::kNo, DenseType type = DenseType::kF32);
  // `bias`: n values when the epilogue has a bias. `b_version`: when given (prepack_b), b's
  // blocked copy is reused while b and *b_version are unchanged. A b that changes between
  // runs (a weight trained every step) is not worth packing each time: after it has, the
  // kernel uses the unpacked primitive for good. Buffers hold the constructor's DenseType
  // (bf16 as uint16 bits); an empty contraction (k == 0) is f32 only.
  void Run(const void* a, const void* b, void* out, const void* bias = nullptr,
           const uint64_t* b_version = nullptr) const;
  // The implementation oneDNN chose ("brg:avx512_core", "gemm:jit", ...; "" when empty).
  std::string implementation() const;
  // Whether b is reordered into a blocked layout (kept across runs while unchanged).
  bool packs_b() const { return b_packed_.get(true) != nullptr && !packed_from_->gave_up; }

 private:
  bool empty_ = false;     // nothing to compute (a zero-sized output)
  int64_t zero_fill_ = 0;  // k == 0: the output is this many zeros (plus the epilogue)
  int64_t n_ = 0;
  DenseType type_ = DenseType::kF32;
  MatmulEpilogue epilogue_;
  BoundPrimitive prim_;         // b as given
  BoundPrimitive packed_prim_;  // b in b_packed_'s layout (prepack_b, when oneDNN chose one)
  dnnl::memory::desc a_md_, b_md_, out_md_, bias_md_;
  dnnl::memory a_, b_, out_, bias_;  // rebindable: the caller's buffers
  // b in the layout the primitive chose, when it chose one (prepack_b); shared by copies.
  mutable dnnl::memory b_packed_;
  BoundPrimitive b_reorder_;  // b_ -> b_packed_
  struct PackedFrom {
    const void* data = nullptr;
    uint64_t version = 0;
    int packs = 0;         // reorders done
    bool gave_up = false;  // b changed between runs: use prim_
  };
  std::shared_ptr<PackedFrom> packed_from_ = std::make_shared<PackedFrom>();
  mutable dnnl::stream stream_;  // a handle; waiting on it does not change the kernel
};

// Which conv2d computation: forward (in0 = x, in1 = w, out = y), backward input
// (in0 = dy, in1 = w, out = dx), backward weight (in0 = dy, in1 = x, out = dw).
enum class ConvPass { kForward, kBackwardInput, kBackwardWeight };

// What a forward convolution applies to its output before writing it:
// y = act(conv(x, w) + bias[o] + residual). oneDNN computes it with its bias argument, a
// binary-add post-op reading the residual (a tensor of y's shape and layout) and an eltwise
// post-op while the output block is in registers; where that would cost oneDNN its optimized
// kernel, the convolution runs unfused and the epilogue follows in one vectorized pass of
// ours (fused_in_primitive() says which).
struct ConvEpilogue {
  bool bias = false;
  bool residual = false;  // f32 only
  Activation activation = Activation::kNone;
  bool any() const { return bias || residual || activation != Activation::kNone; }
};

// How a convolution's x side (x, or dx of the backward-input pass) and y side (y, or dy of
// both backward passes) are laid out in memory: NCHW, or oneDNN's channel-blocked nChw8c /
// nChw16c (ActivationBlock() channels per block; channel_blocking.h) where activations and
// their gradients are handed between convolutions without a reorder out of and back into
// the blocked layout (passes/block_conv_layout.cc; channels divisible by 16, so both layouts
// have the byte size of NCHW). A blocked side may be channels-last instead (NHWC: one block
// of every channel), the layout of oneDNN's bf16 convolutions.
struct ConvLayout {
  bool src_blocked = false, dst_blocked = false;
  bool src_channels_last = false, dst_channels_last = false;  // each only when blocked
  // The channel block of the x side (c channels) / y side (o channels) when blocked.
  int64_t src_block(int64_t c) const;
  int64_t dst_block(int64_t o) const;
};
// The channel block of activations handed between convolutions on this CPU: 16 with
// AVX-512, else 8. Every kernel of a process agrees on it.
int64_t ActivationBlock();

class OnednnConv2d {
 public:
  // `epilogue`: forward convolutions only; `layout`: f32 (or kBF16ToF32) only.
  OnednnConv2d(const Conv2dParams& p, ConvPass pass, const ConvEpilogue& epilogue = {},
               const ConvLayout& layout = {}, DenseType type = DenseType::kF32);
  // in1_version: when given, in1 (the weight, for forward and backward-input) is a variable
  // or constant, and its blocked copy is reused while in1 and *in1_version are unchanged
  // (weight prepacking: an inference program reorders each weight once, not every step).
  // `bias`: O values when the epilogue has a bias. Buffers (and the bias) hold the
  // constructor's DenseType; a bf16 convolution's epilogue must be fused_in_primitive().
  // `residual`: y's shape and layout, when the epilogue has one.
  void Run(const void* in0, const void* in1, void* out, const uint64_t* in1_version = nullptr,
           const void* bias = nullptr, const void* residual = nullptr) const;
  // Whether operand `i` (0: in0, 1: in1, 2: out) is reordered (tests and profiling).
  bool reorders(int i) const { return operands_[i].blocked.get(true) != nullptr; }
  // The implementation oneDNN chose ("jit:avx2", "jit_1x1:avx512_core", ...).
  std::string implementation() const;
  // The weight gradient leaves oneDNN's blocked layout through UnblockWeights.
  bool unblocks_weights() const { return operands_[2].weight_block > 0; }
  // Whether oneDNN's post-ops compute the epilogue (else our pass after the primitive).
  bool fused_in_primitive() const { return fused_in_primitive_; }

 private:
  // One primitive argument: the caller's plain layout and, when the primitive chose a
  // different one, a reorder and a buffer in the chosen layout (allocated at build time).
  struct Operand {
    int arg = 0;
    dnnl::memory::desc plain;
    dnnl::memory user;             // rebindable: the caller's buffer, in `plain`
    mutable dnnl::memory blocked;  // scratch contents, rewritten by every Run
    BoundPrimitive reorder;  // user -> blocked for inputs, blocked -> user for the output
    // > 0: the output is a weight gradient in ABcd<B>b<B>a that UnblockWeights copies out
    // (onednn_weight_layout.h: oneDNN's reorder for it is slow).
    int64_t weight_block = 0;
  };
  void SetOperand(int i, int arg, const dnnl::memory::desc& plain,
                  const dnnl::memory::desc& chosen, bool is_output);

  void RunEpilogueOurselves(float* out, const float* bias, const float* residual) const;
  void ActivateInPlace(float* out) const;

  bool empty_ = false;
  int64_t out_numel_ = 0;
  DenseType type_ = DenseType::kF32;
  ConvEpilogue epilogue_;
  bool fused_in_primitive_ = false;
  // The primitive adds the bias and residual; our vectorized pass applies the activation
  // (ActivationAfterPrimitive says when that is faster).
  bool activation_after_primitive_ = false;
  ConvLayout layout_;
  int64_t channels_ = 0, plane_ = 0, batch_ = 0;  // the output's O, oh * ow and N
  dnnl::memory::desc residual_md_;  // y's shape and layout
  dnnl::memory bias_, residual_;    // rebindable, when fused in the primitive
  BoundPrimitive prim_;
  Operand operands_[3];  // in0, in1, out
  // Which in1 the blocked copy of operand 1 holds; shared by copies of the kernel, as the
  // blocked buffer is.
  struct In1Cache {
    const void* data = nullptr;
    uint64_t version = 0;
  };
  std::shared_ptr<In1Cache> cache_ = std::make_shared<In1Cache>();
  mutable dnnl::stream stream_;  // a handle; waiting on it does not change the kernel
};

}  // namespace tg::cpu
