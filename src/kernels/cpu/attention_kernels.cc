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

// The mask's gradient (the score gradients summed over the rows and batch entries that share
// each mask entry), summed in double per thread, then added up.
class MaskGradient {
 public:
  explicit MaskGradient(const AttentionDims& dims)
      : size_(static_cast<size_t>(dims.mask_n * dims.mask_q * dims.sk)),
        parts_(static_cast<size_t>(std::max(1, MaxThreads()))) {}

  // The calling thread's sums (zeroed): call once per thread, inside ParallelFor.
  std::vector<double>& ThreadPart() {
    int part = 0;
#ifdef _OPENMP
    part = omp_in_parallel() ? omp_get_thread_num() : 0;
#endif
    std::vector<double>& sums = parts_[static_cast<size_t>(part)];
    sums.assign(size_, 0.0);
    return sums;
  }

  template <typename T>
  void SumInto(T* dmask) const {
    for (size_t x = 0; x < size_; ++x) {
      double total = 0;
      for (const std::vector<double>& part : parts_) total += part.empty() ? 0.0 : part[x];
      dmask[x] = static_cast<T>(total);
    }
  }

 private:
  size_t size_;
  std::vector<std::vector<double>> parts_;
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

// f32 (every model's case), in blocks of kRowBlock query rows of one batch entry. Every
// product is register-blocked over the block's 8 rows: the scores (and the backward's
// go . v_j) as 8 rows x 16 keys of accumulators against the entry's keys packed in 16-key
// column blocks (PackColumnBlocks), the probability-weighted sums of value rows (and the
// backward's ds k) as 8 rows x 32 columns (RowsTimesRows), the backward's dk and dv as rank-8
// updates (AddRank8). The softmax runs per row over vectors of keys with the softmax
// kernels' exp. f32 products as eager's kernels; the sums over keys in f32 within blocks of
// vmath::kFloatBlock keys and in double across blocks, dk and dv in f32 within kFlushRows
// query rows and in double across them (near-double accuracy). The generic loops above (a
// double dot product and exp per score) ran Llama's attention at 1536 tokens 8x slower than
// eager PyTorch; a first blocked version reading keys transposed ([d][sk]: 2 KB-multiple
// strides at 512 tokens) and summing outputs column by column reached 17-27 GFLOP/s on one
// core, this one (scratch microbenchmark, 32 x 128^2 x 64) ...
namespace {

constexpr int64_t kRowBlock = 8;
constexpr int64_t kFlushRows = 64;
using vmath::Float16;
using vmath::kFloatLanes;

int64_t RoundUpToLanes(int64_t x) { return (x + kFloatLanes - 1) / kFloatLanes * kFloatLanes; }

Float16 Load16(const float* p) {
  Float16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

void Store16(float* p, const Float16& v) { __builtin_memcpy(p, &v, sizeof(v)); }

// x [rows][width] as blocks of 16 rows stored column by column ([rows / 16][width][16], the
// rows past the end zero): the scores read one block's column as one vector.
void PackColumnBlocks(const float* x, int64_t rows, int64_t width, float* packed) {
  for (int64_t j0 = 0; j0 < rows; j0 += kFloatLanes) {
    float* block = packed + j0 * width;
    for (int64_t c = 0; c < width; ++c) {
      for (int64_t jj = 0; jj < kFloatLanes; ++jj) {
        block[c * kFloatLanes + jj] = j0 + jj < rows ? x[(j0 + jj) * width + c] : 0.0f;
      }
    }
  }
}

// x's rows with the width padded with zeros to whole vectors, or x itself where it is.
const float* PaddedRows(const float* x, int64_t rows, int64_t width, std::vector<float>& buffer) {
  const int64_t padded = RoundUpToLanes(width);
  if (padded == width) return x;
  buffer.assign(static_cast<size_t>(rows * padded), 0.0f);
  for (int64_t j = 0; j < rows; ++j) {
    std::copy(x + j * width, x + (j + 1) * width, buffer.begin() + j * padded);
  }
  return buffer.data();
}

// sc[r][j] = sum_c a[r][c] x[j][c] for the block's 8 rows (a [8][width]) over the 16-key
// blocks that cover j < keys, two blocks at a time (x packed by PackColumnBlocks; sc rows
// `stride` apart, stride >= keys rounded up to 16).
void BlockScores(const float* a, const float* packed, int64_t width, int64_t keys,
                 int64_t stride, float* sc) {
  for (int64_t j0 = 0; j0 < keys; j0 += 2 * kFloatLanes) {
    const bool pair = j0 + kFloatLanes < keys;
    const float* block0 = packed + j0 * width;
    const float* block1 = block0 + kFloatLanes * width;
    Float16 acc0[kRowBlock] = {}, acc1[kRowBlock] = {};
    for (int64_t c = 0; c < width; ++c) {
      const Float16 x0 = Load16(block0 + c * kFloatLanes);
      const Float16 x1 = pair ? Load16(block1 + c * kFloatLanes) : Float16{};
      for (int64_t r = 0; r < kRowBlock; ++r) {
        const float ar = a[r * width + c];
        acc0[r] += ar * x0;
        if (pair) acc1[r] += ar * x1;
      }
    }
    for (int64_t r = 0; r < kRowBlock; ++r) {
      Store16(sc + r * stride + j0, acc0[r]);
      if (pair) Store16(sc + r * stride + j0 + kFloatLanes, acc1[r]);
    }
  }
}

// sums[r][c] = sum_{j < keys} w[r][j] x[j][c] for the block's 8 rows (w rows `stride` apart;
// x [keys][width], width a whole number of vectors), in f32 over vmath::kFloatBlock keys at a
// time and in double across them.
void RowsTimesRows(const float* w, int64_t stride, const float* x, int64_t width, int64_t keys,
                   double* sums) {
  std::fill(sums, sums + kRowBlock * width, 0.0);
  for (int64_t c0 = 0; c0 < width; c0 += 2 * kFloatLanes) {
    const bool pair = c0 + kFloatLanes < width;  // two vectors of columns, or the last one
    for (int64_t j0 = 0; j0 < keys; j0 += vmath::kFloatBlock) {
      const int64_t j1 = std::min(keys, j0 + vmath::kFloatBlock);
      Float16 acc0[kRowBlock] = {}, acc1[kRowBlock] = {};
      for (int64_t j = j0; j < j1; ++j) {
        const Float16 x0 = Load16(x + j * width + c0);
        const Float16 x1 = pair ? Load16(x + j * width + c0 + kFloatLanes) : Float16{};
        for (int64_t r = 0; r < kRowBlock; ++r) {
          const float wr = w[r * stride + j];
          acc0[r] += wr * x0;
          if (pair) acc1[r] += wr * x1;
        }
      }
      for (int64_t r = 0; r < kRowBlock; ++r) {
        double* s = sums + r * width + c0;
        for (int64_t lane = 0; lane < kFloatLanes; ++lane) {
          s[lane] += acc0[r][lane];
          if (pair) s[kFloatLanes + lane] += acc1[r][lane];
        }
      }
    }
  }
}

// acc[j][:] += sum_r w[r][j] x[r][:] for j < keys (w rows `stride` apart, x [8][width], acc
// [keys][width]): two vectors of x's columns for the 8 rows held in registers while j runs.
void AddRank8(const float* w, int64_t stride, const float* x, int64_t keys, int64_t width,
              float* acc) {
  const int64_t vec_end = width / kFloatLanes * kFloatLanes;
  for (int64_t c0 = 0; c0 < vec_end; c0 += 2 * kFloatLanes) {
    const bool pair = c0 + kFloatLanes < vec_end;
    Float16 x0[kRowBlock], x1[kRowBlock] = {};
    for (int64_t r = 0; r < kRowBlock; ++r) {
      x0[r] = Load16(x + r * width + c0);
      if (pair) x1[r] = Load16(x + r * width + c0 + kFloatLanes);
    }
    for (int64_t j = 0; j < keys; ++j) {
      float* a = acc + j * width + c0;
      Float16 sum0 = Load16(a), sum1 = pair ? Load16(a + kFloatLanes) : Float16{};
      for (int64_t r = 0; r < kRowBlock; ++r) {
        const float wr = w[r * stride + j];
        sum0 += wr * x0[r];
        if (pair) sum1 += wr * x1[r];
      }
      Store16(a, sum0);
      if (pair) Store16(a + kFloatLanes, sum1);
    }
  }
  for (int64_t j = 0; j < keys; ++j) {
    for (int64_t c = vec_end; c < width; ++c) {
      for (int64_t r = 0; r < kRowBlock; ++r) acc[j * width + c] += w[r * stride + j] * x[r * width + c];
    }
  }
}

// total += part, part = 0 (the f32 partial sums of kFlushRows rows moved into double).
void Flush(std::vector<float>& part, std::vector<double>& total) {
  for (size_t x = 0; x < part.size(); ++x) total[x] += part[x];
  std::fill(part.begin(), part.end(), 0.0f);
}

// The block's rows of x [sq][width] (rows past sq repeat the last; their weights are 0).
void CopyBlockRows(const float* x, int64_t i0, int64_t rows, int64_t width, float* block) {
  for (int64_t r = 0; r < kRowBlock; ++r) {
    const float* src = x + (i0 + std::min(r, rows - 1)) * width;
    std::copy(src, src + width, block + r * width);
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
  const int64_t sk_pad = RoundUpToLanes(sk), dv_pad = RoundUpToLanes(dv);
  const int64_t blocks_per_entry = (sq + kRowBlock - 1) / kRowBlock;
  ParallelFor(dims.n * blocks_per_entry, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kp(static_cast<size_t>(sk_pad * d)), v_buffer;
    std::vector<float> qb(static_cast<size_t>(kRowBlock * d));
    std::vector<float> scores(static_cast<size_t>(kRowBlock * sk_pad));
    std::vector<double> l(kRowBlock), sums(static_cast<size_t>(kRowBlock * dv_pad));
    std::vector<float> m(kRowBlock);
    RowDropout drop(dims);
    const float* v_rows = nullptr;
    int64_t prepared = -1;  // the batch entry kp and v_rows hold
    for (int64_t block = begin; block < end; ++block) {
      const int64_t b = block / blocks_per_entry;
      const int64_t i0 = block % blocks_per_entry * kRowBlock;
      const int64_t rows = std::min(kRowBlock, sq - i0);
      if (b != prepared) {
        PackColumnBlocks(k + b * sk * d, sk, d, kp.data());
        v_rows = PaddedRows(v + b * sk * dv, sk, dv, v_buffer);
        prepared = b;
      }
      CopyBlockRows(q + b * sq * d, i0, rows, d, qb.data());
      const int64_t keys = dims.causal ? std::min(sk, i0 + rows) : sk;
      float* sc = scores.data();
      BlockScores(qb.data(), kp.data(), d, keys, sk_pad, sc);
      for (int64_t r = 0; r < kRowBlock; ++r) {
        float* sr = sc + r * sk_pad;
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
      RowsTimesRows(sc, sk_pad, v_rows, dv_pad, keys, sums.data());
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = b * sq + i0 + r;
        for (int64_t c = 0; c < dv; ++c) {
          out[row * dv + c] = l[r] > 0 ? static_cast<float>(sums[r * dv_pad + c] / l[r]) : 0.0f;
        }
        lse[row] = l[r] > 0 ? static_cast<float>(m[r] + std::log(l[r])) : neg_inf;
      }
    }
  });
}

// The backward, blocked as the forward: per batch entry (one thread owns its dk and dv),
// blocks of 8 query rows recompute their scores and go . v_j (BlockScores against the packed
// keys and values), turn them into the probabilities (from the saved log-sum-exp) and the
// score gradients, add the block's rank-8 updates to dv (p^T go) and dk (ds^T q), and take
// dq (ds k) as the forward takes its outputs.
template <>
void AttentionBackward<float>(const float* q, const float* k, const float* v, const float* mask,
                              const float* out, const float* lse, const float* go,
                              const float* glse, float* dq, float* dk, float* dv, float* dmask,
                              const AttentionDims& dims) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const float scale = static_cast<float>(dims.scale);
  const int64_t d = dims.d, dvw = dims.dv, sk = dims.sk, sq = dims.sq;
  const int64_t sk_pad = RoundUpToLanes(sk), d_pad = RoundUpToLanes(d);
  MaskGradient mask_grad(dims);
  ParallelFor(dims.n, 1, [&](int64_t begin, int64_t end) {
    std::vector<double>& dm = mask_grad.ThreadPart();
    std::vector<float> kp(static_cast<size_t>(sk_pad * d)), vp(static_cast<size_t>(sk_pad * dvw));
    std::vector<float> k_buffer;
    std::vector<float> qb(static_cast<size_t>(kRowBlock * d));
    std::vector<float> gob(static_cast<size_t>(kRowBlock * dvw));
    std::vector<float> pz(static_cast<size_t>(kRowBlock * sk_pad));  // scores, then p * z
    std::vector<float> ds(static_cast<size_t>(kRowBlock * sk_pad));  // go . v_j, then ds * scale
    std::vector<float> dk_part(static_cast<size_t>(sk * d)), dv_part(static_cast<size_t>(sk * dvw));
    std::vector<double> dk_acc(dk_part.size()), dv_acc(dv_part.size());
    std::vector<double> sums(static_cast<size_t>(kRowBlock * d_pad));
    std::vector<float> zrow(static_cast<size_t>(sk)), ones(static_cast<size_t>(sk), 1.0f);
    RowDropout drop(dims);
    for (int64_t b = begin; b < end; ++b) {
      PackColumnBlocks(k + b * sk * d, sk, d, kp.data());
      PackColumnBlocks(v + b * sk * dvw, sk, dvw, vp.data());
      const float* k_rows = PaddedRows(k + b * sk * d, sk, d, k_buffer);
      std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
      std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
      for (int64_t i0 = 0; i0 < sq; i0 += kRowBlock) {
        const int64_t rows = std::min(kRowBlock, sq - i0);
        CopyBlockRows(q + b * sq * d, i0, rows, d, qb.data());
        CopyBlockRows(go + b * sq * dvw, i0, rows, dvw, gob.data());
        const int64_t keys = dims.causal ? std::min(sk, i0 + rows) : sk;
        BlockScores(qb.data(), kp.data(), d, keys, sk_pad, pz.data());
        BlockScores(gob.data(), vp.data(), dvw, keys, sk_pad, ds.data());
        for (int64_t r = 0; r < kRowBlock; ++r) {
          float* pr = pz.data() + r * sk_pad;
          float* dr = ds.data() + r * sk_pad;
          const int64_t i = i0 + std::min(r, rows - 1), row = b * sq + i;
          const float row_lse = lse[row];
          if (r >= rows || row_lse == neg_inf) {  // no visible key (or a padding row): 0
            std::fill(pr, pr + keys, 0.0f);
            std::fill(dr, dr + keys, 0.0f);
            continue;
          }
          // ds_ij = p_ij (z_ij (go_i . v_j) - delta_i), delta_i = go_i . out_i - glse_i
          const double delta = Dot(go + row * dvw, out + row * dvw, dvw) -
                               (glse ? static_cast<double>(glse[row]) : 0.0);
          const float* mrow = MaskRow(mask, b, i, dims);
          const int64_t mb = MaskEntry(b, dims), mi = dims.mask_q == 1 ? 0 : i;
          double* dmrow = dm.data() + (mb * dims.mask_q + mi) * sk;
          const int64_t visible = dims.causal ? std::min(sk, i + 1) : sk;
          if (dims.dropout > 0) {  // the row's dropout factors (the loop below vectorizes)
            for (int64_t j = 0; j < visible; ++j) zrow[j] = static_cast<float>(drop(row, j));
          }
          const float* z = dims.dropout > 0 ? zrow.data() : ones.data();
          const float delta_f = static_cast<float>(delta);
          for (int64_t j = 0; j < visible; ++j) {
            const float p = vmath::Exp(pr[j] * scale + mrow[j] - row_lse);
            const float g = p * (z[j] * dr[j] - delta_f);
            dmrow[j] += g;
            pr[j] = p * z[j];
            dr[j] = g * scale;
          }
          std::fill(pr + visible, pr + keys, 0.0f);
          std::fill(dr + visible, dr + keys, 0.0f);
        }
        AddRank8(pz.data(), sk_pad, gob.data(), keys, dvw, dv_part.data());
        AddRank8(ds.data(), sk_pad, qb.data(), keys, d, dk_part.data());
        RowsTimesRows(ds.data(), sk_pad, k_rows, d_pad, keys, sums.data());
        for (int64_t r = 0; r < rows; ++r) {
          float* dqi = dq + (b * sq + i0 + r) * d;
          for (int64_t c = 0; c < d; ++c) dqi[c] = static_cast<float>(sums[r * d_pad + c]);
        }
        if ((i0 / kRowBlock + 1) % (kFlushRows / kRowBlock) == 0 || i0 + kRowBlock >= sq) {
          Flush(dk_part, dk_acc);
          Flush(dv_part, dv_acc);
        }
      }
      float* dkb = dk + b * sk * d;
      float* dvb = dv + b * sk * dvw;
      for (size_t x = 0; x < dk_acc.size(); ++x) dkb[x] = static_cast<float>(dk_acc[x]);
      for (size_t x = 0; x < dv_acc.size(); ++x) dvb[x] = static_cast<float>(dv_acc[x]);
    }
  });
  mask_grad.SumInto(dmask);
}

template <typename T>
void AttentionBackward(const T* q, const T* k, const T* v, const T* mask, const T* out,
                       const T* lse, const T* go, const T* glse, T* dq, T* dk, T* dv,
                       T* dmask, const AttentionDims& dims) {
  const double neg_inf = -std::numeric_limits<double>::infinity();
  // One batch entry at a time per thread: dk and dv of an entry gather every query row.
  MaskGradient mask_grad(dims);
  ParallelFor(dims.n, 1, [&](int64_t begin, int64_t end) {
    std::vector<double>& dm = mask_grad.ThreadPart();
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
  mask_grad.SumInto(dmask);
}

template void AttentionForward<double>(const double*, const double*, const double*,
                                       const double*, double*, double*, const AttentionDims&);
template void AttentionBackward<double>(const double*, const double*, const double*,
                                        const double*, const double*, const double*,
                                        const double*, const double*, double*, double*,
                                        double*, double*, const AttentionDims&);

}  // namespace tg::cpu
