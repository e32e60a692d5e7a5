// The matmul kernel that ops and GEMM-based convolutions run: tilegraph's AMX GEMM
// (amx_gemm.h) for bf16 operands where the CPU has AMX (AmxBf16GemmUsable), oneDNN's
// primitive (OnednnMatmul) for everything else. One constructor and Run for both, so a
// caller states the problem and not the library.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/onednn_kernels.h"

namespace tg::cpu {

class DenseMatmul {
 public:
  // As OnednnMatmul's constructor. bf16 problems (DenseType kBF16, kBF16ToF32 without bias)
  // with m, n, k > 0 go to the AMX GEMM where usable (which keeps a weight's packed panels
  // whenever Run is given b_version; prepack_b says what oneDNN's path does).
  explicit DenseMatmul(const MatmulParams& p, const MatmulEpilogue& epilogue = {},
                       PrepackB prepack_b = PrepackB::kNo, DenseType type = DenseType::kF32);
  void Run(const void* a, const void* b, void* out, const void* bias = nullptr,
           const uint64_t* b_version = nullptr) const;
  // "amx_bf16:tilegraph" for the AMX GEMM, else oneDNN's implementation name.
  std::string implementation() const;

 private:
  std::shared_ptr<const AmxBf16Gemm> amx_;      // one of the two is set
  std::shared_ptr<const OnednnMatmul> onednn_;
};

}  // namespace tg::cpu
