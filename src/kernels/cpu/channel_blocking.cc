// NCHW <-> nChw<B>c copies; see channel_blocking.h.
#include "kernels/cpu/channel_blocking.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

// (batch, channel block) pairs [begin, end): a [B, plane] <-> [plane, B] transpose each, in
// tiles of 16 channels x 16 positions so that both sides stay in cache lines being written.
// kFixedB: the block size as a compile-time constant (8 or 16: nChw8c / nChw16c, the loops
// unrolled), or 0 for `block` at run time (NHWC: one block of every channel).
template <typename E, int kFixedB>
void ReblockPairs(const E* src, E* dst, int64_t plane, int64_t block, bool to_blocked,
                  int64_t begin, int64_t end) {
  constexpr int64_t kTile = 16;
  const int64_t B = kFixedB > 0 ? kFixedB : block;
  for (int64_t pair = begin; pair < end; ++pair) {
    const E* in = src + pair * plane * B;
    E* out = dst + pair * plane * B;
    for (int64_t c0 = 0; c0 < B; c0 += kTile) {
      const int64_t c1 = std::min(c0 + kTile, B);
      for (int64_t s0 = 0; s0 < plane; s0 += kTile) {
        const int64_t s1 = std::min(s0 + kTile, plane);
        for (int64_t l = c0; l < c1; ++l) {
          for (int64_t s = s0; s < s1; ++s) {
            if (to_blocked) {
              out[s * B + l] = in[l * plane + s];
            } else {
              out[l * plane + s] = in[s * B + l];
            }
          }
        }
      }
    }
  }
}

template <typename E>
void ReblockAs(const void* src, void* dst, int64_t pairs, int64_t plane, int64_t block,
               bool to_blocked, bool parallel) {
  const E* in = static_cast<const E*>(src);
  E* out = static_cast<E*>(dst);
  auto run = [&](int64_t begin, int64_t end) {
    if (block == 16) {
      ReblockPairs<E, 16>(in, out, plane, block, to_blocked, begin, end);
    } else if (block == 8) {
      ReblockPairs<E, 8>(in, out, plane, block, to_blocked, begin, end);
    } else {
      ReblockPairs<E, 0>(in, out, plane, block, to_blocked, begin, end);
    }
  };
  if (parallel) {
    ParallelFor(pairs, 1, run);
  } else {
    run(0, pairs);
  }
}

}  // namespace

int64_t LayoutBlock(bool channels_last, int64_t channels) {
  return channels_last ? channels : ActivationBlock();
}

void ReblockActivation(const void* src, void* dst, size_t elem_size, int64_t n, int64_t c,
                       int64_t plane, bool to_blocked, bool parallel, int64_t block) {
  if (block == 0) block = ActivationBlock();
  TG_CHECK(block > 0 && c % block == 0, kInternal, "ReblockActivation: ", c,
           " channels are not whole blocks of ", block);
  const int64_t pairs = n * (c / block);
  switch (elem_size) {
    case 1: ReblockAs<uint8_t>(src, dst, pairs, plane, block, to_blocked, parallel); break;
    case 2: ReblockAs<uint16_t>(src, dst, pairs, plane, block, to_blocked, parallel); break;
    case 4: ReblockAs<uint32_t>(src, dst, pairs, plane, block, to_blocked, parallel); break;
    case 8: ReblockAs<uint64_t>(src, dst, pairs, plane, block, to_blocked, parallel); break;
    default: Fail(ErrorKind::kInternal, "ReblockActivation: element size ", elem_size);
  }
}

}  // namespace tg::cpu
