// See onednn_weight_layout.h.
#include "kernels/cpu/onednn_weight_layout.h"

#include <cstring>

#include "kernels/cpu/parallel.h"

namespace tg::cpu {
namespace {

// The tile: up to 16 x 16 channels x 7 x 7 kernel positions (49 KiB of stack).
constexpr int64_t kMaxBlock = 16, kMaxKernel = 49;

}  // namespace

int64_t InMajorWeightBlock(const dnnl::memory::desc& md) {
  const dnnl_memory_desc_t& d = md.data;
  if (d.ndims != 4 || d.data_type != dnnl_f32 || d.format_kind != dnnl_blocked ||
      d.offset0 != 0) {
    return 0;
  }
  const auto& blk = d.format_desc.blocking;
  if (blk.inner_nblks != 2 || blk.inner_idxs[0] != 1 || blk.inner_idxs[1] != 0 ||
      blk.inner_blks[0] != blk.inner_blks[1] || blk.inner_blks[0] > kMaxBlock) {
    return 0;
  }
  const int64_t b = blk.inner_blks[0];
  for (int i = 0; i < 4; ++i) {
    if (d.padded_dims[i] != d.dims[i]) return 0;
  }
  if (d.dims[0] % b != 0 || d.dims[1] % b != 0 || d.dims[2] * d.dims[3] > kMaxKernel) return 0;
  return b;
}

// Per (O block, I block) pair, in parallel: the pair's B x B x KH*KW values are transposed into
// a tile ordered as the plain layout orders them ([o][i][k]), then each of the B plain rows
// gets one contiguous copy (B * KH*KW floats). Storing straight from the block into the B
// plain rows (I * KH*KW apart) ran 3-10x slower: every block's rows fall into the same cache
// sets.
void UnblockWeights(const dnnl::memory::desc& md, int64_t b, const float* blocked,
                    float* plain) {
  const dnnl_memory_desc_t& d = md.data;
  const auto& strides = d.format_desc.blocking.strides;
  const int64_t in = d.dims[1], kh = d.dims[2], kw = d.dims[3], khw = kh * kw;
  const int64_t i_blocks = in / b;
  ParallelFor(d.dims[0] / b * i_blocks, 1, [&](int64_t begin, int64_t end) {
    float tile[kMaxBlock * kMaxBlock * kMaxKernel];
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t ob = pair / i_blocks, ib = pair % i_blocks;
      for (int64_t y = 0; y < kh; ++y) {
        for (int64_t x = 0; x < kw; ++x) {
          const float* block = blocked + ob * strides[0] + ib * strides[1] + y * strides[2] +
                               x * strides[3];  // [i][o]
          const int64_t k = y * kw + x;
          for (int64_t ii = 0; ii < b; ++ii) {
            for (int64_t oi = 0; oi < b; ++oi) tile[(oi * b + ii) * khw + k] = block[ii * b + oi];
          }
        }
      }
      for (int64_t oi = 0; oi < b; ++oi) {
        std::memcpy(plain + ((ob * b + oi) * in + ib * b) * khw, tile + oi * b * khw,
                    static_cast<size_t>(b * khw) * sizeof(float));
      }
    }
  });
}

}  // namespace tg::cpu
