// Generic elementwise CPU kernels: a unary map and broadcasting binary / ternary maps over raw
// buffers, parallel over large tensors. The per-element math is passed in as a functor, so
// each op writes its formula once and reuses it here, in block functions and in references.
// Fast paths: same-shape operands and scalar operands get plain vectorizable loops; anything
// else walks coalesced broadcast runs (broadcast.h).
#pragma once

#include <cstdint>

#include "kernels/cpu/broadcast.h"
#include "kernels/cpu/parallel.h"

namespace tg::cpu {

// Elements per parallel task below which a map runs on the calling thread.
inline constexpr int64_t kElementwiseGrain = 32768;

template <typename In, typename Out, typename F>
void MapUnary(const In* x, Out* y, int64_t n, F f) {
  ParallelFor(n, kElementwiseGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = f(x[i]);
  });
}

// out[i] = f(a[...], b[...]) with numpy broadcasting of a and b, as planned by
// MakeBroadcastPlan(out_shape, {a_shape, b_shape}) (kernels plan once, at build time).
template <typename A, typename B, typename Out, typename F>
void MapBinary(const A* a, const B* b, Out* out, const BroadcastPlan& plan, F f) {
  const int64_t n = plan.numel;
  ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    int64_t pos = begin;
    ForEachRun(plan, begin, end, [&](const int64_t* off, const int64_t* inner, int64_t count) {
      const A* pa = a + off[0];
      const B* pb = b + off[1];
      Out* po = out + pos;
      if (inner[0] == 1 && inner[1] == 1) {
        for (int64_t j = 0; j < count; ++j) po[j] = f(pa[j], pb[j]);
      } else if (inner[0] == 1 && inner[1] == 0) {
        const B sb = *pb;
        for (int64_t j = 0; j < count; ++j) po[j] = f(pa[j], sb);
      } else if (inner[0] == 0 && inner[1] == 1) {
        const A sa = *pa;
        for (int64_t j = 0; j < count; ++j) po[j] = f(sa, pb[j]);
      } else {
        for (int64_t j = 0; j < count; ++j) po[j] = f(pa[j * inner[0]], pb[j * inner[1]]);
      }
      pos += count;
    });
  });
}

// out[i] = f(a[...], b[...], c[...]) with numpy broadcasting of three operands, as planned by
// MakeBroadcastPlan(out_shape, {a_shape, b_shape, c_shape}).
template <typename A, typename B, typename C, typename Out, typename F>
void MapTernary(const A* a, const B* b, const C* c, Out* out, const BroadcastPlan& plan, F f) {
  ParallelFor(plan.numel, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    int64_t pos = begin;
    ForEachRun(plan, begin, end, [&](const int64_t* off, const int64_t* inner, int64_t count) {
      const A* pa = a + off[0];
      const B* pb = b + off[1];
      const C* pc = c + off[2];
      Out* po = out + pos;
      if (inner[0] == 1 && inner[1] == 1 && inner[2] == 1) {
        for (int64_t j = 0; j < count; ++j) po[j] = f(pa[j], pb[j], pc[j]);
      } else {
        for (int64_t j = 0; j < count; ++j) {
          po[j] = f(pa[j * inner[0]], pb[j * inner[1]], pc[j * inner[2]]);
        }
      }
      pos += count;
    });
  });
}

// Copies `count` elements of a broadcast operand, starting at flat output position `begin`,
// into dst converted to T (used by fused kernels to fill block buffers).
template <typename In, typename T>
void GatherRun(const In* src, const BroadcastPlan& plan, int64_t begin, int64_t count, T* dst) {
  int64_t pos = 0;
  ForEachRun(plan, begin, begin + count,
             [&](const int64_t* off, const int64_t* inner, int64_t run) {
               const In* p = src + off[0];
               if (inner[0] == 1) {
                 for (int64_t j = 0; j < run; ++j) dst[pos + j] = static_cast<T>(p[j]);
               } else if (inner[0] == 0) {
                 const T v = static_cast<T>(*p);
                 for (int64_t j = 0; j < run; ++j) dst[pos + j] = v;
               } else {
                 for (int64_t j = 0; j < run; ++j) dst[pos + j] = static_cast<T>(p[j * inner[0]]);
               }
               pos += run;
             });
}

}  // namespace tg::cpu
