// Activations in oneDNN's channel-blocked layout nChw<B>c (B = ActivationBlock(): 16 with
// AVX-512, else 8): element (n, c, s) of an [N, C, H*W] tensor at
// ((n * C/B + c/B) * H*W + s) * B + c%B. With C divisible by B the layout has NCHW's size,
// so a blocked value and its NCHW twin share a buffer size (passes/block_conv_layout.cc
// keeps C divisible by 16, which serves both block sizes).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tg::cpu {

// Where element (n, c, s) of a blocked [n, c, plane] tensor with `block` channels per block is.
inline int64_t BlockedIndex(int64_t c_total, int64_t plane, int64_t block, int64_t n, int64_t c,
                            int64_t s) {
  return ((n * (c_total / block) + c / block) * plane + s) * block + c % block;
}

// NCHW -> blocked (to_blocked) or blocked -> NCHW of an [n, c, plane] tensor of elements of
// `elem_size` bytes (1, 2, 4 or 8), c divisible by ActivationBlock(). `parallel` splits the
// (batch, channel block) pairs over threads.
void ReblockActivation(const void* src, void* dst, size_t elem_size, int64_t n, int64_t c,
                       int64_t plane, bool to_blocked, bool parallel = false);

template <typename T>
void Reblock(const T* src, T* dst, int64_t n, int64_t c, int64_t plane, bool to_blocked) {
  ReblockActivation(src, dst, sizeof(T), n, c, plane, to_blocked);
}

}  // namespace tg::cpu
