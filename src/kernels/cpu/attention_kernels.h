// Fused attention kernels (ops/attention.cc): dropout(softmax(q k^T * scale + mask [+ causal])) v
// computed row by row with an online softmax, so no [Sq, Sk] matrix is ever stored; the
// backward recomputes the probabilities from the saved log-sum-exp and the dropout mask from
// its Philox counters.
#pragma once

#include <cstdint>

namespace tg::cpu {

struct AttentionDims {
  int64_t n = 1;       // batch x heads
  int64_t sq = 1;      // query length
  int64_t sk = 1;      // key length
  int64_t d = 1;       // query/key width
  int64_t dv = 1;      // value width
  int64_t mask_n = 1;  // mask entries, a divisor of n: entry b / (n / mask_n) for batch entry b
  int64_t mask_q = 1;  // 1 (one row for every query) or sq
  bool causal = false; // key j is visible to query i only if j <= i
  double scale = 1.0;
  // Dropout of the probabilities: p_ij kept (scaled by 1/(1-p)) with probability 1-p. The
  // decision for element e = (b*sq + i)*sk + j is the `dropout` op's for element e of an
  // [n, sq, sk] tensor with the same (seed, key, step): word e % 4 of Philox block e / 4.
  double dropout = 0.0;
  uint64_t seed = 0, key = 0, step = 0;
};

// out [n, sq, dv], lse [n, sq] (log-sum-exp of each row's scores, before dropout; -inf for
// a row with no visible key, whose output is 0, as torch's safe softmax gives).
template <typename T>
void AttentionForward(const T* q, const T* k, const T* v, const T* mask, T* out, T* lse,
                      const AttentionDims& dims);
// f32 has its own loops, vectorized across keys (attention_kernels.cc).
template <>
void AttentionForward<float>(const float* q, const float* k, const float* v, const float* mask,
                             float* out, float* lse, const AttentionDims& dims);

// dq, dk, dv like q, k, v; dmask like mask (the score gradient summed over the rows and
// batch entries the mask is shared by). `glse` is the gradient reaching the log-sum-exp
// output (d lse_i / d s_ij = p_ij), or null.
template <typename T>
void AttentionBackward(const T* q, const T* k, const T* v, const T* mask, const T* out,
                       const T* lse, const T* go, const T* glse, T* dq, T* dk, T* dv,
                       T* dmask, const AttentionDims& dims);
// f32 has its own blocked loops (attention_kernels.cc).
template <>
void AttentionBackward<float>(const float* q, const float* k, const float* v, const float* mask,
                              const float* out, const float* lse, const float* go,
                              const float* glse, float* dq, float* dk, float* dv, float* dmask,
                              const AttentionDims& dims);

}  // namespace tg::cpu
