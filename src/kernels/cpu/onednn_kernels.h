// oneDNN (f32) matmul and conv2d kernels on plain row-major memory. Each object creates its
// primitive once (at kernel-build time) and binds the caller's buffers on every Run.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include "kernels/cpu/dense_params.h"

namespace tg::cpu {

// The process-wide oneDNN CPU engine.
const dnnl::engine& CpuEngine();

// out = op(a) * op(b) with batch broadcasting; see MatmulParams.
class OnednnMatmul {
 public:
  explicit OnednnMatmul(const MatmulParams& p);
  void Run(const float* a, const float* b, float* out) const;

 private:
  bool empty_ = false;     // nothing to compute (a zero-sized output)
  int64_t zero_fill_ = 0;  // k == 0: the output is this many zeros
  dnnl::matmul prim_;
  dnnl::memory::desc a_md_, b_md_, out_md_;
  mutable dnnl::stream stream_;  // a handle; waiting on it does not change the kernel
};

// Which conv2d computation: forward (in0 = x, in1 = w, out = y), backward input
// (in0 = dy, in1 = w, out = dx), backward weight (in0 = dy, in1 = x, out = dw).
enum class ConvPass { kForward, kBackwardInput, kBackwardWeight };

class OnednnConv2d {
 public:
  OnednnConv2d(const Conv2dParams& p, ConvPass pass);
  void Run(const float* in0, const float* in1, float* out) const;

 private:
  ConvPass pass_;
  bool empty_ = false;
  int64_t out_numel_ = 0;
  dnnl::primitive prim_;
  dnnl::memory::desc x_md_, w_md_, y_md_;
  mutable dnnl::stream stream_;  // a handle; waiting on it does not change the kernel
};

}  // namespace tg::cpu
