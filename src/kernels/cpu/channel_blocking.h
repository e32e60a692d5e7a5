// Activations in oneDNN's channel-blocked layout nChw<B>c: element (n, c, s) of an
// [N, C, H*W] tensor at ((n * C/B + c/B) * H*W + s) * B + c%B. Two block sizes are used:
//   - B = ActivationBlock() (16 with AVX-512, else 8): the layout of oneDNN's f32 kernels;
//   - B = C: one block of every channel, i.e. NHWC ("channels last"), the layout of oneDNN's
//     bf16 (AMX / AVX-512 BF16) convolutions.
// With C divisible by B the layout has NCHW's size, so a blocked value and its NCHW twin
// share a buffer size (passes/block_conv_layout.cc keeps C divisible by 16, which serves
// every block size).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tg::cpu {

// Where element (n, c, s) of a blocked [n, c, plane] tensor with `block` channels per block is.
inline int64_t BlockedIndex(int64_t c_total, int64_t plane, int64_t block, int64_t n, int64_t c,
                            int64_t s) {
  return ((n * (c_total / block) + c / block) * plane + s) * block + c % block;
}

// The block of a layout: `channels` when channels_last (NHWC), else ActivationBlock().
int64_t LayoutBlock(bool channels_last, int64_t channels);

// NCHW -> blocked (to_blocked) or blocked -> NCHW of an [n, c, plane] tensor of elements of
// `elem_size` bytes (1, 2, 4 or 8), in blocks of `block` channels (0: ActivationBlock(); c
// divisible by it). `parallel` splits the (batch, channel block) pairs over threads.
void ReblockActivation(const void* src, void* dst, size_t elem_size, int64_t n, int64_t c,
                       int64_t plane, bool to_blocked, bool parallel = false, int64_t block = 0);

template <typename T>
void Reblock(const T* src, T* dst, int64_t n, int64_t c, int64_t plane, bool to_blocked,
             int64_t block = 0) {
  ReblockActivation(src, dst, sizeof(T), n, c, plane, to_blocked, false, block);
}

}  // namespace tg::cpu
