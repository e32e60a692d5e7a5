// DenseMatmul: chooses the AMX GEMM or oneDNN; see dense_matmul.h.
#include "kernels/cpu/dense_matmul.h"

namespace tg::cpu {

namespace {

bool TakesAmx(const MatmulParams& p, const MatmulEpilogue& epilogue, DenseType type) {
  if (type == DenseType::kF32 || !AmxBf16GemmUsable()) return false;
  if (type == DenseType::kBF16ToF32 && epilogue.bias) return false;
  int64_t batches = 1;
  for (int64_t d : p.batch) batches *= d;
  return batches > 0 && p.m > 0 && p.n > 0 && p.k > 0;
}

}  // namespace

DenseMatmul::DenseMatmul(const MatmulParams& p, const MatmulEpilogue& epilogue,
                         PrepackB prepack_b, DenseType type) {
  if (TakesAmx(p, epilogue, type)) {
    amx_ = std::make_shared<const AmxBf16Gemm>(p, epilogue.bias, epilogue.activation,
                                               type == DenseType::kBF16);
  } else {
    onednn_ = std::make_shared<const OnednnMatmul>(p, epilogue, prepack_b, type);
  }
}

void DenseMatmul::Run(const void* a, const void* b, void* out, const void* bias,
                      const uint64_t* b_version) const {
  if (amx_) return amx_->Run(a, b, out, bias, b_version);
  onednn_->Run(a, b, out, bias, b_version);
}

std::string DenseMatmul::implementation() const {
  return amx_ ? "amx_bf16:tilegraph" : onednn_->implementation();
}

}  // namespace tg::cpu
