// Depthwise conv2d backward-weight loops; see conv_depthwise_kernels.h.
#include "kernels/cpu/conv_depthwise_kernels.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"

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

}  // namespace

// Channels are taken 16 at a time and transposed to position-major order (x into a
// zero-padded plane), so that every tap's sum is a chain of 16-wide multiply-adds over the
// output positions (four independent chains, added in a fixed order), with no bounds
// checks; a block's missing channels are zero lanes.
void Conv2dBackwardWeightDepthwise::Run(const float* dy, const float* x, float* dw) const {
  const Conv2dParams& p = p_;
  const int64_t hp = p.h + 2 * p.pad_h, wp = p.w + 2 * p.pad_w;
  const int64_t plane_in = p.h * p.w, plane_out = p.oh * p.ow, taps = p.kh * p.kw;
  const int64_t blocks = (p.c + kLanes - 1) / kLanes;
  ParallelFor(blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> padded(hp * wp * kLanes), grad(plane_out * kLanes), acc(taps * kLanes);
    for (int64_t block = begin; block < end; ++block) {
      const int64_t c0 = block * kLanes, lanes = std::min(kLanes, p.c - c0);
      std::fill(padded.begin(), padded.end(), 0.0f);
      std::fill(grad.begin(), grad.end(), 0.0f);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t n = 0; n < p.n; ++n) {
        for (int64_t lane = 0; lane < lanes; ++lane) {
          const float* x_plane = x + (n * p.c + c0 + lane) * plane_in;
          const float* dy_plane = dy + (n * p.c + c0 + lane) * plane_out;
          for (int64_t iy = 0; iy < p.h; ++iy) {
            float* row = padded.data() + ((iy + p.pad_h) * wp + p.pad_w) * kLanes + lane;
            for (int64_t ix = 0; ix < p.w; ++ix) row[ix * kLanes] = x_plane[iy * p.w + ix];
          }
          for (int64_t q = 0; q < plane_out; ++q) grad[q * kLanes + lane] = dy_plane[q];
        }
        for (int64_t ky = 0; ky < p.kh; ++ky) {
          for (int64_t kx = 0; kx < p.kw; ++kx) {
            Lanes sum[4] = {};
            for (int64_t oy = 0; oy < p.oh; ++oy) {
              const float* window = padded.data() +
                  ((oy * p.stride_h + ky * p.dil_h) * wp + kx * p.dil_w) * kLanes;
              const float* g = grad.data() + oy * p.ow * kLanes;
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
