#include "kernels/cpu/attention_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/philox.h"
#include "kernels/cpu/vector_math.h"

namespace tg::cpu {
namespace {

template <typename T>
double Dot(const T* a, const T* b, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

// out[c][j] = in[j][c] for in [rows, cols].
void Transpose(const float* in, int64_t rows, int64_t cols, float* out) {
  for (int64_t j = 0; j < rows; ++j) {
    for (int64_t c = 0; c < cols; ++c) out[c * rows + j] = in[j * cols + c];
  }
}

// The score of query row i against key j, or -inf where causality hides the key.
template <typename T>
double Score(const T* qi, const T* kj, const T* mask_row, int64_t i, int64_t j,
             const AttentionDims& dims) {
  if (dims.causal && j > i) return -std::numeric_limits<double>::infinity();
  return Dot(qi, kj, dims.d) * dims.scale + static_cast<double>(mask_row[j]);
}

// The mask entry of batch entry b: each serves n / mask_n consecutive entries (the heads of
// one sample, for a [batch, 1, sq, sk] mask over [batch, heads] rows).
int64_t MaskEntry(int64_t b, const AttentionDims& dims) {
  return dims.mask_n == 1 ? 0 : b / (dims.n / dims.mask_n);
}

template <typename T>
const T* MaskRow(const T* mask, int64_t b, int64_t i, const AttentionDims& dims) {
  int64_t mb = MaskEntry(b, dims), mi = dims.mask_q == 1 ? 0 : i;
  return mask + (mb * dims.mask_q + mi) * dims.sk;
}

// The dropout factor of each probability of one row: 1/(1-p) or 0, from the Philox block of
// its element (one block serves four consecutive elements); 1 without dropout.
class RowDropout {
 public:
  explicit RowDropout(const AttentionDims& dims)
      : gen_(dims.seed, dims.key), dims_(dims),
        keep_(static_cast<float>(1.0 - dims.dropout)),
        scale_(dims.dropout >= 1.0 ? 0.0 : 1.0 / (1.0 - dims.dropout)) {}

  double operator()(int64_t row, int64_t j) {
    if (dims_.dropout <= 0) return 1.0;
    const uint64_t e = static_cast<uint64_t>(row * dims_.sk + j);
    if (e / 4 != block_index_ || !valid_) {
      block_ = gen_(dims_.step, e / 4);
      block_index_ = e / 4;
      valid_ = true;
    }
    return UniformFloat(block_[e % 4]) < keep_ ? scale_ : 0.0;
  }

 private:
  Philox4x32 gen_;
  const AttentionDims& dims_;
  float keep_;
  double scale_;
  Philox4x32::Block block_{};
  uint64_t block_index_ = 0;
  bool valid_ = false;
};

}  // namespace

// Per query row: its scores against every key (a buffer of Sk, not a matrix), their max,
// the exponentials and their sum, then the probability-weighted sum of the values. (The
// row's scores are exactly what an online softmax over key blocks would see; keeping one row
// is the same memory order and lets every loop vectorize.)
template <typename T>
void AttentionForward(const T* q, const T* k, const T* v, const T* mask, T* out, T* lse,
                      const AttentionDims& dims) {
  const double neg_inf = -std::numeric_limits<double>::infinity();
  ParallelFor(dims.n * dims.sq, 8, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(static_cast<size_t>(dims.dv));
    std::vector<double> p(static_cast<size_t>(dims.sk));
    RowDropout drop(dims);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / dims.sq, i = row % dims.sq;
      const T* qi = q + row * dims.d;
      const T* kb = k + b * dims.sk * dims.d;
      const T* vb = v + b * dims.sk * dims.dv;
      const T* mrow = MaskRow(mask, b, i, dims);
      const int64_t visible = dims.causal ? std::min(dims.sk, i + 1) : dims.sk;
      double m = neg_inf;
      for (int64_t j = 0; j < visible; ++j) {
        p[j] = Dot(qi, kb + j * dims.d, dims.d) * dims.scale + static_cast<double>(mrow[j]);
        m = std::max(m, p[j]);
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      double l = 0;
      if (m != neg_inf) {
        for (int64_t j = 0; j < visible; ++j) {
          const double pj = std::exp(p[j] - m);
          l += pj;  // the softmax's denominator: dropout comes after normalizing
          const double wj = pj * drop(row, j);
          if (wj == 0) continue;
          const T* vj = vb + j * dims.dv;
          double* a = acc.data();
#pragma omp simd
          for (int64_t c = 0; c < dims.dv; ++c) a[c] += wj * static_cast<double>(vj[c]);
        }
      }
      T* o = out + row * dims.dv;
      for (int64_t c = 0; c < dims.dv; ++c) o[c] = static_cast<T>(l > 0 ? acc[c] / l : 0.0);
      lse[row] = static_cast<T>(l > 0 ? m + std::log(l) : neg_inf);
    }
  });
}

// f32 (every model's case), in blocks of kRowBlock query rows of one batch entry, against a
// transposed copy of the entry's keys and values ([d][sk], [dv][sk], made once per entry by
// each thread). Scores and outputs are register-blocked products (16 keys x 8 rows of
// accumulators; each key or value vector loaded once for the 8 rows), the softmax runs per
// row over vectors of keys with the softmax kernels' exp: f32 products as eager's kernels,
// sums in blocked float lanes added in double (near-double accuracy). The generic loop
// above (a double dot product and exp per score) ran Llama's attention at 1536 tokens 8x
// slower than eager PyTorch.
namespace {

constexpr int64_t kRowBlock = 8;
using vmath::Float16;
using vmath::kFloatLanes;

Float16 Load16(const float* p) {
  Float16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// sc[r][j] = sum_c qb[r][c] kt[c][j] for the block's 8 rows and j < keys (qb [8][d]).
void BlockScores(const float* qb, const float* kt, int64_t d, int64_t sk, int64_t keys,
                 float* sc) {
  int64_t j = 0;
  for (; j + kFloatLanes <= keys; j += kFloatLanes) {
    Float16 acc[kRowBlock] = {};
    for (int64_t c = 0; c < d; ++c) {
      const Float16 kv = Load16(kt + c * sk + j);
      for (int64_t r = 0; r < kRowBlock; ++r) acc[r] += qb[r * d + c] * kv;
    }
    for (int64_t r = 0; r < kRowBlock; ++r) __builtin_memcpy(sc + r * sk + j, &acc[r], 64);
  }
  for (; j < keys; ++j) {
    for (int64_t r = 0; r < kRowBlock; ++r) {
      float acc = 0;
      for (int64_t c = 0; c < d; ++c) acc += qb[r * d + c] * kt[c * sk + j];
      sc[r * sk + j] = acc;
    }
  }
}

// sums[r] = sum_{j < keys} p[r][j] vc[j] for the block's 8 rows, in double over blocks of
// float lanes (vmath::BlockedFloatSums' scheme).
void BlockColumn(const float* p, const float* vc, int64_t sk, int64_t keys, double* sums) {
  vmath::Double8 total[kRowBlock] = {};
  int64_t j = 0;
  while (j + kFloatLanes <= keys) {
    const int64_t block_end = std::min(keys, j + vmath::kFloatBlock);
    Float16 lanes[kRowBlock] = {};
    for (; j + kFloatLanes <= block_end; j += kFloatLanes) {
      const Float16 vv = Load16(vc + j);
      for (int64_t r = 0; r < kRowBlock; ++r) lanes[r] += Load16(p + r * sk + j) * vv;
    }
    for (int64_t r = 0; r < kRowBlock; ++r) vmath::AddBlock(total[r], lanes[r]);
  }
  for (int64_t r = 0; r < kRowBlock; ++r) {
    double rest = 0;
    for (int64_t t = j; t < keys; ++t) rest += static_cast<double>(p[r * sk + t]) * vc[t];
    sums[r] = vmath::SumLanes8(total[r]) + rest;
  }
}

}  // namespace

template <>
void AttentionForward<float>(const float* q, const float* k, const float* v,
                             const float* mask, float* out, float* lse,
                             const AttentionDims& dims) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const float scale = static_cast<float>(dims.scale);
  const int64_t d = dims.d, dv = dims.dv, sk = dims.sk, sq = dims.sq;
  const int64_t blocks_per_entry = (sq + kRowBlock - 1) / kRowBlock;
  ParallelFor(dims.n * blocks_per_entry, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(static_cast<size_t>(d * sk)), vt(static_cast<size_t>(dv * sk));
    std::vector<float> qb(static_cast<size_t>(kRowBlock * d));
    std::vector<float> scores(static_cast<size_t>(kRowBlock * sk));
    std::vector<double> l(kRowBlock), sums(kRowBlock);
    std::vector<float> m(kRowBlock);
    RowDropout drop(dims);
    int64_t transposed = -1;  // the batch entry kt and vt hold
    for (int64_t block = begin; block < end; ++block) {
      const int64_t b = block / blocks_per_entry;
      const int64_t i0 = block % blocks_per_entry * kRowBlock;
      const int64_t rows = std::min(kRowBlock, sq - i0);
      if (b != transposed) {
        Transpose(k + b * sk * d, sk, d, kt.data());
        Transpose(v + b * sk * dv, sk, dv, vt.data());
        transposed = b;
      }
      // The block's queries (rows past sq repeat the last one; their results are dropped).
      for (int64_t r = 0; r < kRowBlock; ++r) {
        const float* qi = q + (b * sq + i0 + std::min(r, rows - 1)) * d;
        std::copy(qi, qi + d, qb.begin() + r * d);
      }
      const int64_t keys = dims.causal ? std::min(sk, i0 + rows) : sk;
      float* sc = scores.data();
      BlockScores(qb.data(), kt.data(), d, sk, keys, sc);
      for (int64_t r = 0; r < kRowBlock; ++r) {
        float* sr = sc + r * sk;
        const int64_t i = i0 + std::min(r, rows - 1), row = b * sq + i;
        const float* mrow = MaskRow(mask, b, i, dims);
        const int64_t visible = dims.causal ? std::min(sk, i + 1) : sk;
        for (int64_t j = 0; j < visible; ++j) sr[j] = sr[j] * scale + mrow[j];
        std::fill(sr + visible, sr + keys, 0.0f);  // hidden keys: weight 0
        m[r] = visible > 0 ? vmath::MaxOf(sr, visible) : neg_inf;
        if (m[r] == neg_inf) {  // no visible key: 0, as torch's safe softmax gives
          std::fill(sr, sr + keys, 0.0f);
          l[r] = 0;
          continue;
        }
        for (int64_t j = 0; j < visible; ++j) sr[j] = vmath::ExpNonPositive(sr[j] - m[r]);
        l[r] = vmath::SumLanes(sr, visible);  // dropout comes after normalizing
        if (dims.dropout > 0 && r < rows) {
          for (int64_t j = 0; j < visible; ++j) sr[j] = static_cast<float>(sr[j] * drop(row, j));
        }
      }
      for (int64_t c = 0; c < dv; ++c) {
        BlockColumn(sc, vt.data() + c * sk, sk, keys, sums.data());
        for (int64_t r = 0; r < rows; ++r) {
          out[(b * sq + i0 + r) * dv + c] = l[r] > 0 ? static_cast<float>(sums[r] / l[r]) : 0.0f;
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        lse[b * sq + i0 + r] = l[r] > 0 ? static_cast<float>(m[r] + std::log(l[r])) : neg_inf;
      }
    }
  });
}

template <typename T>
void AttentionBackward(const T* q, const T* k, const T* v, const T* mask, const T* out,
                       const T* lse, const T* go, const T* glse, T* dq, T* dk, T* dv,
                       T* dmask, const AttentionDims& dims) {
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const int64_t mask_size = dims.mask_n * dims.mask_q * dims.sk;
  std::fill(dmask, dmask + mask_size, T(0));
  // One batch entry at a time per thread: dk and dv of an entry gather every query row.
  // A shared mask's gradient is summed per thread, then added up.
  const int threads = std::max(1, MaxThreads());
  std::vector<std::vector<double>> dmask_parts(static_cast<size_t>(threads));
  ParallelFor(dims.n, 1, [&](int64_t begin, int64_t end) {
    int part = 0;
#ifdef _OPENMP
    part = omp_in_parallel() ? omp_get_thread_num() : 0;
#endif
    std::vector<double>& dm = dmask_parts[static_cast<size_t>(part)];
    dm.assign(static_cast<size_t>(mask_size), 0.0);
    std::vector<double> dk_acc(static_cast<size_t>(dims.sk * dims.d));
    std::vector<double> dv_acc(static_cast<size_t>(dims.sk * dims.dv));
    std::vector<double> dq_row(static_cast<size_t>(dims.d));
    RowDropout drop(dims);
    for (int64_t b = begin; b < end; ++b) {
      std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
      std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
      const T* kb = k + b * dims.sk * dims.d;
      const T* vb = v + b * dims.sk * dims.dv;
      for (int64_t i = 0; i < dims.sq; ++i) {
        const int64_t row = b * dims.sq + i;
        const T* qi = q + row * dims.d;
        const T* goi = go + row * dims.dv;
        const double row_lse = static_cast<double>(lse[row]);
        std::fill(dq_row.begin(), dq_row.end(), 0.0);
        if (row_lse != neg_inf) {
          // With dropout factors z_ij: out_i = sum_j p_ij z_ij v_j, dp_ij = z_ij (go_i . v_j),
          // ds_ij = p_ij (dp_ij - sum_j p_ij dp_ij + glse_i), sum_j p_ij dp_ij = go_i . out_i
          const double delta = Dot(goi, out + row * dims.dv, dims.dv) -
                               (glse ? static_cast<double>(glse[row]) : 0.0);
          const T* mrow = MaskRow(mask, b, i, dims);
          const int64_t mb = MaskEntry(b, dims), mi = dims.mask_q == 1 ? 0 : i;
          double* dmrow = dm.data() + (mb * dims.mask_q + mi) * dims.sk;
          for (int64_t j = 0; j < dims.sk; ++j) {
            const double s = Score(qi, kb + j * dims.d, mrow, i, j, dims);
            if (s == neg_inf) continue;
            const double p = std::exp(s - row_lse);
            const double z = drop(row, j);
            const T* vj = vb + j * dims.dv;
            double* dvj = dv_acc.data() + j * dims.dv;
            const double pz = p * z;
#pragma omp simd
            for (int64_t c = 0; c < dims.dv; ++c) dvj[c] += pz * static_cast<double>(goi[c]);
            const double ds = p * ((z != 0 ? z * Dot(goi, vj, dims.dv) : 0.0) - delta);
            dmrow[j] += ds;
            const double dss = ds * dims.scale;
            const T* kj = kb + j * dims.d;
            double* dkj = dk_acc.data() + j * dims.d;
            double* dqr = dq_row.data();
#pragma omp simd
            for (int64_t c = 0; c < dims.d; ++c) {
              dqr[c] += dss * static_cast<double>(kj[c]);
              dkj[c] += dss * static_cast<double>(qi[c]);
            }
          }
        }
        T* dqi = dq + row * dims.d;
        for (int64_t c = 0; c < dims.d; ++c) dqi[c] = static_cast<T>(dq_row[c]);
      }
      T* dkb = dk + b * dims.sk * dims.d;
      T* dvb = dv + b * dims.sk * dims.dv;
      for (int64_t x = 0; x < dims.sk * dims.d; ++x) dkb[x] = static_cast<T>(dk_acc[x]);
      for (int64_t x = 0; x < dims.sk * dims.dv; ++x) dvb[x] = static_cast<T>(dv_acc[x]);
    }
  });
  for (const std::vector<double>& dm : dmask_parts) {
    for (size_t x = 0; x < dm.size(); ++x) dmask[x] = static_cast<T>(dmask[x] + dm[x]);
  }
}

template void AttentionForward<double>(const double*, const double*, const double*,
                                       const double*, double*, double*, const AttentionDims&);
template void AttentionBackward<float>(const float*, const float*, const float*, const float*,
                                       const float*, const float*, const float*, const float*,
                                       float*, float*, float*, float*, const AttentionDims&);
template void AttentionBackward<double>(const double*, const double*, const double*,
                                        const double*, const double*, const double*,
                                        const double*, const double*, double*, double*,
                                        double*, double*, const AttentionDims&);

}  // namespace tg::cpu
