// Depthwise conv2d backward-weight loops; see conv_depthwise_kernels.h.
#include "kernels/cpu/conv_depthwise_kernels.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {

bool IsDepthwise(const Conv2dParams& p) { return p.groups > 1 && p.groups == p.c && p.o == p.c; }

namespace {

// Sixteen channels' values at one position, one vector register (AVX-512; two with AVX2).
using Lanes = float __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

inline Lanes Load(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Copies channels c0 .. c0 + lanes of batch n of an [n, c, h * w] activation (NCHW when
// `block` is 0, else nChw<block>c) into position-major order: position (y, x)'s lanes at
// dst[(y * row_stride + x) * kLanes]. Lanes past `lanes` are left as they are.
void GatherLanes(const float* src, int64_t block, int64_t c, int64_t n, int64_t c0,
                 int64_t lanes, int64_t h, int64_t w, float* dst, int64_t row_stride) {
  const int64_t plane = h * w;
  if (block == 0) {
    for (int64_t lane = 0; lane < lanes; ++lane) {
      const float* s = src + (n * c + c0 + lane) * plane;
      for (int64_t y = 0; y < h; ++y) {
        float* row = dst + y * row_stride * kLanes + lane;
        for (int64_t x = 0; x < w; ++x) row[x * kLanes] = s[y * w + x];
      }
    }
    return;
  }
  // Whole blocks of the layout land side by side in the 16 lanes (block 16: one, block 8: two).
  for (int64_t j = 0; j * block < lanes; ++j) {
    const float* s = src + (n * (c / block) + (c0 / block) + j) * plane * block;
    for (int64_t y = 0; y < h; ++y) {
      float* row = dst + y * row_stride * kLanes + j * block;
      if (block == kLanes) {
        std::memcpy(row, s + y * w * block, w * block * sizeof(float));
        continue;
      }
      for (int64_t x = 0; x < w; ++x) {
        std::memcpy(row + x * kLanes, s + (y * w + x) * block, block * sizeof(float));
      }
    }
  }
}

}  // namespace

Conv2dBackwardWeightDepthwise::Conv2dBackwardWeightDepthwise(const Conv2dParams& p,
                                                             int64_t x_block, int64_t dy_block)
    : p_(p), x_block_(x_block), dy_block_(dy_block) {
  for (int64_t block : {x_block, dy_block}) {
    TG_CHECK(block == 0 || ((block == 8 || block == kLanes) && p.c % block == 0), kInternal,
             "depthwise backward-weight: channel block ", block, " for ", p.c, " channels");
  }
}

// Channels are taken 16 at a time in position-major order (x into a zero-padded plane, dy
// read in place when it is blocked by 16), so that every tap's sum is a chain of 16-wide
// multiply-adds over the output positions (four independent chains, added in a fixed
// order), with no bounds checks; a block's missing channels are zero lanes.
void Conv2dBackwardWeightDepthwise::Run(const float* dy, const float* x, float* dw) const {
  const Conv2dParams& p = p_;
  const int64_t hp = p.h + 2 * p.pad_h, wp = p.w + 2 * p.pad_w;
  const int64_t plane_out = p.oh * p.ow, taps = p.kh * p.kw;
  const int64_t blocks = (p.c + kLanes - 1) / kLanes;
  const bool dy_in_place = dy_block_ == kLanes;
  ParallelFor(blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> padded(hp * wp * kLanes), grad(dy_in_place ? 0 : plane_out * kLanes),
        acc(taps * kLanes);
    for (int64_t block = begin; block < end; ++block) {
      const int64_t c0 = block * kLanes, lanes = std::min(kLanes, p.c - c0);
      std::fill(padded.begin(), padded.end(), 0.0f);
      std::fill(grad.begin(), grad.end(), 0.0f);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t n = 0; n < p.n; ++n) {
        GatherLanes(x, x_block_, p.c, n, c0, lanes, p.h, p.w,
                    padded.data() + (p.pad_h * wp + p.pad_w) * kLanes, wp);
        const float* g_plane = grad.data();
        if (dy_in_place) {
          g_plane = dy + (n * (p.c / kLanes) + block) * plane_out * kLanes;
        } else {
          GatherLanes(dy, dy_block_, p.c, n, c0, lanes, p.oh, p.ow, grad.data(), p.ow);
        }
        for (int64_t ky = 0; ky < p.kh; ++ky) {
          for (int64_t kx = 0; kx < p.kw; ++kx) {
            Lanes sum[4] = {};
            for (int64_t oy = 0; oy < p.oh; ++oy) {
              const float* window = padded.data() +
                  ((oy * p.stride_h + ky * p.dil_h) * wp + kx * p.dil_w) * kLanes;
              const float* g = g_plane + oy * p.ow * kLanes;
              for (int64_t ox = 0; ox < p.ow; ++ox) {
                sum[ox & 3] += Load(g + ox * kLanes) * Load(window + ox * p.stride_w * kLanes);
              }
            }
            float* a = acc.data() + (ky * p.kw + kx) * kLanes;
            const Lanes total = Load(a) + ((sum[0] + sum[1]) + (sum[2] + sum[3]));
            std::memcpy(a, &total, sizeof total);
          }
        }
      }
      for (int64_t lane = 0; lane < lanes; ++lane) {
        for (int64_t t = 0; t < taps; ++t) dw[(c0 + lane) * taps + t] = acc[t * kLanes + lane];
      }
    }
  });
}

}  // namespace tg::cpu
