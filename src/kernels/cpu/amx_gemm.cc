// bf16 GEMM on AMX tiles; see amx_gemm.h.
//
// Layouts. A tile holds 16 rows of 64 bytes. The left operand's tile is 16 rows of a, 32
// consecutive k each (a's rows as stored when a is row-major and k-contiguous). The right
// operand's tile is 16 rows of k *pairs*: row r holds, for 16 columns n, b[2r][n] and
// b[2r + 1][n] side by side ("VNNI" order), so b is always repacked: a "panel" is 16
// columns of b over one pass of k in that order ([depth / 2][16][2] bf16, zero-padded past
// k and n), and a 2 x 2 block reads two panels.
//
// Work. A call is split into items (batch, chunk of columns, part of the rows). A thread packs
// its item's panels (every pass of k) into its own buffer (<= kChunkBytes: in L2), unless a
// weight's panels are kept packed across runs (KeptB); then, strip by strip of 32 rows of a,
// pass by pass of k (<= kMaxDepth), it multiplies the strip's block of a (in L1) by every
// panel pair of the chunk (streamed from L2); with several passes, each block's f32 sums wait
// in a per-thread buffer of one strip. a is read in place when it can be; otherwise
// (transposed, k % 32 != 0, misaligned, or a last strip of fewer than 32 rows) each strip is
// first copied, once per call, into a contiguous zero-padded buffer by passes (StripCopy).
// A wide k against few rows (k-outer: a language model head's backward, k the vocabulary)
// turns the loops around so that a is not read once per chunk: pass by pass of k, each
// thread packs the pass's panels of its columns and keeps f32 sums for all rows (RunKOuter).
// Measured (2 threads, b packed per run): 256 x 30522 x 768 14.6 -> 5.6 ms, 256 x 3072 x 768
// 0.56 -> 0.50 ms.
#include "kernels/cpu/amx_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/cpu/float16.h"
#include "kernels/cpu/machine_limits.h"
#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/parallel.h"
#include "support/host_memory.h"
#include "support/error.h"

// GCC 12's AVX-512 headers start some masked loads and zeroed registers from an
// uninitialized placeholder on purpose, and warn about it wherever they are inlined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// AVX-512 for the packing, AMX for the products: compiled into every ISA build of the core
// and run only where AmxBf16GemmUsable() (a CPU with AMX has AVX-512 BW / VL / DQ / BF16).
#define TG_AMX_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))

namespace tg::cpu {
namespace {

constexpr int64_t kStrip = 32;       // rows of a per 2 x 2 block
constexpr int64_t kDepth = 32;       // k per tdpbf16ps
constexpr int64_t kPanel = 16;       // columns of b per panel (one tile)
constexpr int64_t kChunkBytes = 1024 << 10;  // packed b one item keeps in L2
// k per pass over a chunk: a 32 x 512 block of a (32 KB) stays in L1 while every panel pair
// of the chunk passes over it (measured on an AMX Xeon, one thread: 256 and 1024 were slower).
constexpr int64_t kMaxDepth = 512;
// f32 sums a thread may keep for its columns of every row between passes of k (the k-outer
// schedule, below): L2-resident next to the pass's packed panels.
constexpr int64_t kKOuterSumBytes = 512 << 10;

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// This thread's index in the enclosing parallel team, and the team's size.
int ThreadIndex() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}
int TeamSize() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

// A 64-byte aligned buffer of T, grown on demand and never shrunk (tile loads from 64-byte
// aligned rows are twice as fast as from unaligned ones).
template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { FreeHostMemory(data_); }
  T* Get(int64_t elements) {
    if (elements > capacity_) {
      FreeHostMemory(data_);
      data_ = nullptr;
      const auto bytes = static_cast<size_t>(RoundUp(elements * int64_t{sizeof(T)}, 64));
      data_ = static_cast<T*>(AllocateHostMemory(bytes));
      capacity_ = elements;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  int64_t capacity_ = 0;
};

// Each thread's packed panels of b and f32 partial sums, shared by Run's two schedules.
AlignedBuffer<uint16_t>& ThreadPanels() {
  thread_local AlignedBuffer<uint16_t> panels;
  return panels;
}
AlignedBuffer<float>& ThreadSums() {
  thread_local AlignedBuffer<float> sums;
  return sums;
}

// Palette 1, tiles 0-7 all 16 rows x 64 bytes: 0-3 accumulate a 2 x 2 block of the result,
// 4-5 hold two 16-row slices of a, 6-7 two panels of b.
TG_AMX_TARGET void ConfigureTiles() {
  alignas(64) unsigned char config[64] = {};
  config[0] = 1;
  for (int t = 0; t < 8; ++t) {
    const uint16_t bytes_per_row = 64;
    std::memcpy(config + 16 + 2 * t, &bytes_per_row, sizeof bytes_per_row);
    config[48 + t] = 16;
  }
  _tile_loadconfig(config);
}

// Transposes a 16 x 16 matrix of 32-bit elements held one row per register.
TG_AMX_TARGET void Transpose16x16(__m512i (&r)[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 8; ++i) {  // 32-bit interleave of row pairs, per 128-bit lane
    a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // b[4i + q], lane L: column 4L + q of rows 4i .. 4i + 3.
  for (int i = 0; i < 4; ++i) {
    b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  // A 4 x 4 transpose of 128-bit lanes for each q: row 4L + q = lane L of b[q], b[4 + q], ...
  for (int q = 0; q < 4; ++q) {
    const __m512i u0 = _mm512_shuffle_i32x4(b[q], b[4 + q], 0x44);
    const __m512i u1 = _mm512_shuffle_i32x4(b[q], b[4 + q], 0xEE);
    const __m512i u2 = _mm512_shuffle_i32x4(b[8 + q], b[12 + q], 0x44);
    const __m512i u3 = _mm512_shuffle_i32x4(b[8 + q], b[12 + q], 0xEE);
    r[q] = _mm512_shuffle_i32x4(u0, u2, 0x88);
    r[4 + q] = _mm512_shuffle_i32x4(u0, u2, 0xDD);
    r[8 + q] = _mm512_shuffle_i32x4(u1, u3, 0x88);
    r[12 + q] = _mm512_shuffle_i32x4(u1, u3, 0xDD);
  }
}

// Mask of the first `count` of `width` lanes (count clamped to [0, width]).
inline uint32_t FirstLanes(int64_t count, int width) {
  if (count <= 0) return 0;
  if (count >= width) return width == 32 ? 0xFFFFFFFFu : (1u << width) - 1;
  return (1u << count) - 1;
}

// 16 bf16 of `row` (the first `valid`), each paired with the same column of `next` (zero
// where next is null): the 32-bit lanes (row[j], next[j]) of one VNNI row.
TG_AMX_TARGET __m512i PairRows(const uint16_t* row, const uint16_t* next, int64_t valid) {
  const __mmask16 mask = static_cast<__mmask16>(FirstLanes(valid, 16));
  const __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, row));
  if (next == nullptr) return lo;
  const __m512i hi = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, next));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// One panel of b: columns c0 .. c0 + 15 over k0 .. k0 + depth - 1 (depth a multiple of 32;
// zero beyond n and k) in VNNI order, [depth / 2][16][2]. b is [k, n] row-major, or [n, k]
// when transposed.
// VNNI rows r0 .. r1 - 1 of the panel of columns c0 .. c0 + 15 of a row-major b ([k, n]):
// row r pairs b's rows k0 + 2r and k0 + 2r + 1 (zero beyond k and n).
TG_AMX_TARGET inline void PackRowPairs(const uint16_t* b, int64_t k, int64_t n, int64_t k0,
                                       int64_t r0, int64_t r1, int64_t c0, uint16_t* panel) {
  const int64_t cols = std::min<int64_t>(kPanel, n - c0);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t kk = k0 + 2 * r;
    __m512i v = _mm512_setzero_si512();
    if (kk < k && cols > 0) {
      const uint16_t* row = b + kk * n + c0;
      v = PairRows(row, kk + 1 < k ? row + n : nullptr, cols);
    }
    _mm512_store_si512(panel + r * 32, v);
  }
}

TG_AMX_TARGET void PackPanel(const uint16_t* b, bool trans_b, int64_t k, int64_t n, int64_t k0,
                             int64_t depth, int64_t c0, uint16_t* panel) {
  const int64_t cols = std::min<int64_t>(kPanel, n - c0);
  if (!trans_b) {
    PackRowPairs(b, k, n, k0, 0, depth / 2, c0, panel);
    return;
  }
  // b[c][k] for 16 columns c: as 32-bit pairs, 16 x 16 blocks to transpose.
  for (int64_t kb = 0; kb < depth; kb += 32) {
    __m512i r[16];
    const __mmask32 mask = FirstLanes(k - (k0 + kb), 32);
    for (int j = 0; j < 16; ++j) {
      r[j] = j < cols ? _mm512_maskz_loadu_epi16(mask, b + (c0 + j) * k + k0 + kb)
                      : _mm512_setzero_si512();
    }
    Transpose16x16(r);
    for (int i = 0; i < 16; ++i) _mm512_store_si512(panel + (kb / 2 + i) * 32, r[i]);
  }
}

// `count` panels of b, for columns c0, c0 + 16, ... over k0 .. k0 + depth - 1, panel j at
// out + j * panel_stride (each as PackPanel writes it). A row-major b ([k, n]) is read 16
// rows at a time across all the panels: each panel alone would walk every row of b n
// elements apart (n = 3072: every row in the same two L1 sets, a page per row or two), and
// the next panel would walk them again for the other half of each cache line; this way
// each line of b is read once, by 16 sequential streams. Measured on an AMX Xeon, two
// threads, b packed per run: 256 x 768 x 3072 (k x n) 0.90 -> 0.72 ms with b in cache,
// 1.5-1.65 -> 1.15 ms with the caches flushed first (as in a training step, where the
// weight's bf16 shadow was last written by the previous update); 256 x 768 x 768 cold
// 0.54 -> 0.44 ms. A transposed b is packed panel by panel (its 16 rows are the panel's
// columns, read along k).
TG_AMX_TARGET void PackPanels(const uint16_t* b, bool trans_b, int64_t k, int64_t n,
                              int64_t k0, int64_t depth, int64_t c0, int64_t count,
                              uint16_t* out, int64_t panel_stride) {
  if (trans_b) {
    for (int64_t j = 0; j < count; ++j) {
      PackPanel(b, true, k, n, k0, depth, c0 + j * kPanel, out + j * panel_stride);
    }
    return;
  }
  constexpr int64_t kRowPairs = 8;  // VNNI rows (pairs of b's rows) per block
  for (int64_t r0 = 0; r0 < depth / 2; r0 += kRowPairs) {
    const int64_t r1 = std::min(depth / 2, r0 + kRowPairs);
    for (int64_t j = 0; j < count; ++j) {
      PackRowPairs(b, k, n, k0, r0, r1, c0 + j * kPanel, out + j * panel_stride);
    }
  }
}

// Copies of a's 32-row strips. Strip m0 (rows m0 .. m0 + 31 of op(a), zero beyond m and k)
// is laid out in passes of `depth` of k: pass p's 32 x depth block is row-major at
// out + p * 32 * depth (contiguous: the block a pass multiplies stays in L1 without cache-set
// conflicts). a is [m, k] row-major, or [k, m] when transposed; kp is k rounded up to 32
// (every pass but the last is `depth` deep).
struct StripCopy {
  const uint16_t* a;
  bool trans_a;
  int64_t m, k, kp, depth;

  // Where element (row r, column kk) of the strip goes; kk a multiple of 32 or within a pass.
  uint16_t* At(uint16_t* out, int64_t r, int64_t kk) const {
    const int64_t pass = kk / depth, width = std::min(depth, kp - pass * depth);
    return out + pass * kStrip * depth + r * width + kk % depth;
  }

  TG_AMX_TARGET void Run(int64_t m0, uint16_t* out) const {
    if (trans_a) {  // 16 rows x 32 of k at a time
      for (int64_t half = 0; half < 2; ++half) {
        for (int64_t kb = 0; kb < kp; kb += 32) {
          Transposed(m0 + 16 * half, kb, At(out, 16 * half, kb));
        }
      }
      return;
    }
    for (int64_t r = 0; r < kStrip; ++r) {
      const uint16_t* src = m0 + r < m ? a + (m0 + r) * k : nullptr;
      for (int64_t k0 = 0; k0 < kp; k0 += depth) {
        const int64_t width = std::min(depth, kp - k0);
        const int64_t copied = src == nullptr ? 0 : std::clamp<int64_t>(k - k0, 0, width);
        uint16_t* dst = At(out, r, k0);
        if (copied > 0) std::memcpy(dst, src + k0, static_cast<size_t>(copied) * 2);
        std::memset(dst + copied, 0, static_cast<size_t>(width - copied) * 2);
      }
    }
  }

  // Rows c0 .. c0 + 15 of op(a) over k kb .. kb + 31 (a is [k, m]): rows kk, kk + 1 of a
  // paired into 32-bit lanes, then 16 k-pairs x 16 rows transposed into 16 rows of 32 k,
  // written `row` elements apart from dst.
  TG_AMX_TARGET void Transposed(int64_t c0, int64_t kb, uint16_t* dst) const {
    const int64_t cols = m - c0, row = std::min(depth, kp - kb / depth * depth);
    __m512i r[16];
    for (int i = 0; i < 16; ++i) {
      const int64_t kk = kb + 2 * i;
      r[i] = kk < k && cols > 0
                 ? PairRows(a + kk * m + c0, kk + 1 < k ? a + (kk + 1) * m + c0 : nullptr, cols)
                 : _mm512_setzero_si512();
    }
    Transpose16x16(r);
    for (int j = 0; j < 16; ++j) _mm512_storeu_si512(dst + j * row, r[j]);
  }
};

// The 2 x 2 block of tiles 0-3: rows of `a` (tile-loaded with a_stride bytes between rows,
// 32 of them) times panels p0, p1 over `steps` * 32 of k, added to `partial` (a 32 x 32 f32
// block, row stride 128 bytes) when given, else from zero. b's panels are loaded with the
// streaming hint (tileloaddt1): each is read once per strip, and without the hint they push
// the block of a that every panel pair reuses out of L1 (measured: 10-15% of the call).
TG_AMX_TARGET inline void MultiplyBlock(const uint16_t* a, int64_t a_stride, const uint16_t* p0,
                                        const uint16_t* p1, int64_t steps,
                                        const float* partial) {
  const uint16_t* a1 = a + 16 * (a_stride / 2);
  if (partial != nullptr) {
    _tile_loadd(0, partial, 128);
    _tile_loadd(1, partial + 16, 128);
    _tile_loadd(2, partial + 16 * 32, 128);
    _tile_loadd(3, partial + 16 * 32 + 16, 128);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t s = 0; s < steps; ++s) {
    _tile_loadd(4, a + s * kDepth, a_stride);
    _tile_stream_loadd(6, p0 + s * 512, 64);
    _tile_loadd(5, a1 + s * kDepth, a_stride);
    _tile_dpbf16ps(0, 4, 6);
    _tile_stream_loadd(7, p1 + s * 512, 64);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(3, 5, 7);
  }
}

TG_AMX_TARGET inline void StoreBlock(float* out, int64_t stride) {
  _tile_stored(0, out, stride);
  _tile_stored(1, out + 16, stride);
  _tile_stored(2, out + 16 * (stride / 4), stride);
  _tile_stored(3, out + 16 * (stride / 4) + 16, stride);
}

TG_AMX_TARGET void ReleaseTiles() { _tile_release(); }

// act(v) in place over a 32 x 32 block (vmath's float forms, as the fused kernels use).
template <Activation A>
void ActivateBlock(float* block) {
  for (int64_t i = 0; i < 32 * 32; ++i) block[i] = Activate<A>(block[i]);
}

// 16 bf16 (the first `count`) widened to f32 lanes.
TG_AMX_TARGET __m512 LoadBf16(const uint16_t* p, int64_t count) {
  const __m256i bits = _mm256_maskz_loadu_epi16(static_cast<__mmask16>(FirstLanes(count, 16)), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// Writes rows x cols of a 32 x 32 f32 block (row stride 32) to `out` (row stride ld), f32 or
// rounded to bf16 (to nearest even; NaN stays NaN), adding bias[c] and applying `act` first.
TG_AMX_TARGET void WriteBlock(float* block, int64_t rows, int64_t cols, const uint16_t* bias,
                              Activation act, bool bf16_result, void* out, int64_t ld) {
  if (bias != nullptr) {
    const __m512 b0 = LoadBf16(bias, cols), b1 = LoadBf16(bias + 16, cols - 16);
    for (int64_t r = 0; r < rows; ++r) {
      float* row = block + r * 32;
      _mm512_store_ps(row, _mm512_add_ps(_mm512_load_ps(row), b0));
      _mm512_store_ps(row + 16, _mm512_add_ps(_mm512_load_ps(row + 16), b1));
    }
  }
  if (act != Activation::kNone) {
    WithActivation(act, [&](auto a) { ActivateBlock<decltype(a)::value>(block); });
  }
  const __mmask16 m0 = static_cast<__mmask16>(FirstLanes(cols, 16));
  const __mmask16 m1 = static_cast<__mmask16>(FirstLanes(cols - 16, 16));
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 v0 = _mm512_load_ps(block + r * 32), v1 = _mm512_load_ps(block + r * 32 + 16);
    if (bf16_result) {
      uint16_t* dst = static_cast<uint16_t*>(out) + r * ld;
      _mm256_mask_storeu_epi16(dst, m0, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v0)));
      _mm256_mask_storeu_epi16(dst + 16, m1, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v1)));
    } else {
      float* dst = static_cast<float*>(out) + r * ld;
      _mm512_mask_storeu_ps(dst, m0, v0);
      _mm512_mask_storeu_ps(dst + 16, m1, v1);
    }
  }
}

}  // namespace

struct AmxBf16Gemm::KeptB {
  AlignedBuffer<uint16_t> panels;  // [panel of 16 columns][pass][depth / 2][16][2]
  const void* data = nullptr;
  uint64_t version = 0;
  int packs = 0;
  bool gave_up = false;
  bool used = false;  // by the last run
  bool k_outer = false;  // the last run's schedule
};

bool AmxBf16Gemm::used_kept_b() const { return kept_->used; }
bool AmxBf16Gemm::used_k_outer() const { return kept_->k_outer; }

bool AmxBf16GemmUsable() {
  const char* env = std::getenv("TILEGRAPH_AMX_GEMM");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  static const bool hardware = NativeBf16Dense() && CpuHasAmxBf16() && RequestAmxTileData();
  return hardware;
}

AmxBf16Gemm::AmxBf16Gemm(const MatmulParams& params, bool bias, Activation activation,
                         bool bf16_result)
    : p_(FoldSharedB(params)), bias_(bias), activation_(activation), bf16_result_(bf16_result) {
  TG_CHECK(CpuHasAmxBf16() && RequestAmxTileData(), kInternal,
           "AmxBf16Gemm: this process cannot run AMX tiles");
  kp_ = RoundUp(p_.k, kDepth);
  // Offsets per batch: the batch index's digits, each operand skipping the dims it
  // broadcasts.
  int64_t batches = 1;
  for (int64_t d : p_.batch) batches *= d;
  for (int64_t i = 0; i < batches; ++i) {
    int64_t rest = i, a = 0, b = 0, a_stride = 1, b_stride = 1;
    for (int64_t d = static_cast<int64_t>(p_.batch.size()) - 1; d >= 0; --d) {
      const int64_t idx = rest % p_.batch[d];
      rest /= p_.batch[d];
      if (p_.a_batch[d] != 1) a += idx * a_stride;
      if (p_.b_batch[d] != 1) b += idx * b_stride;
      a_stride *= p_.a_batch[d];
      b_stride *= p_.b_batch[d];
    }
    a_off_.push_back(a * p_.m * p_.k);
    b_off_.push_back(b * p_.k * p_.n);
    out_off_.push_back(i * p_.m * p_.n);
  }
  one_b_ = std::all_of(b_off_.begin(), b_off_.end(), [](int64_t o) { return o == 0; });
  kept_ = std::make_shared<KeptB>();
}

// Copies strips first_copied .. of every batch's a into a_copy (StripCopy's layout, one
// after another), shared out over the enclosing parallel team.
TG_AMX_TARGET void AmxBf16Gemm::CopyStrips(const uint16_t* a, int64_t batches,
                                           int64_t first_copied, int64_t copied_per_batch,
                                           int64_t depth, uint16_t* a_copy) const {
  if (copied_per_batch == 0) return;
#pragma omp for schedule(static)
  for (int64_t i = 0; i < batches * copied_per_batch; ++i) {
    const int64_t bi = i / copied_per_batch, s = first_copied + i % copied_per_batch;
    const StripCopy copy{a + a_off_[bi], p_.trans_a, p_.m, p_.k, kp_, depth};
    copy.Run(s * kStrip, a_copy + i * kStrip * kp_);
  }
}

TG_AMX_TARGET void AmxBf16Gemm::Run(const void* a_ptr, const void* b_ptr, void* out,
                                    const void* bias_ptr, const uint64_t* b_version) const {
  const auto* a = static_cast<const uint16_t*>(a_ptr);
  const auto* b = static_cast<const uint16_t*>(b_ptr);
  const auto* bias = static_cast<const uint16_t*>(bias_ptr);
  const int64_t m = p_.m, n = p_.n, k = p_.k, kp = kp_;
  const int64_t batches = static_cast<int64_t>(out_off_.size());
  const int64_t strips = (m + kStrip - 1) / kStrip;
  // Whether a's full strips are read in place: row-major ([m, k], not transposed), rows a
  // multiple of 64 bytes apart (k % 32 == 0) and the buffer 64-byte aligned.
  const bool in_place = !p_.trans_a && k % kDepth == 0 && reinterpret_cast<uintptr_t>(a) % 64 == 0;
  // Strips copied before the products (once per call, shared by the threads): all of them,
  // or only a short last one.
  const int64_t first_copied = in_place ? m / kStrip : 0;
  const int64_t copied_per_batch = strips - first_copied;
  thread_local AlignedBuffer<uint16_t> copies;  // the calling thread's; read by the whole team
  uint16_t* a_copy = copies.Get(std::max<int64_t>(1, batches * copied_per_batch * kStrip * kp));

  int threads = MaxThreads();
#ifdef _OPENMP
  if (omp_in_parallel()) threads = 1;
#endif
  // k in passes of at most kMaxDepth: the 32 x depth block of a that a pass multiplies by
  // every panel pair of a chunk stays in L1; each block's f32 sums wait between passes.
  const int64_t passes = (kp + kMaxDepth - 1) / kMaxDepth;
  const int64_t depth = RoundUp((kp + passes - 1) / passes, kDepth);
  // Column chunks: packed panels (every pass) of at most kChunkBytes (they stay in L2 while
  // every strip passes over them), whole 32-column pairs, and a multiple of the threads in
  // number where there are enough pairs (3 chunks on 2 threads would leave one idle a third
  // of the time).
  const int64_t pairs = (n + 2 * kPanel - 1) / (2 * kPanel);
  const int64_t max_pairs = std::max<int64_t>(1, kChunkBytes / (2 * kPanel * kp * 2));
  int64_t chunks = (pairs + max_pairs - 1) / max_pairs;
  if (batches < threads && pairs >= threads) chunks = RoundUp(chunks, threads);
  const int64_t chunk_cols = 2 * kPanel * ((pairs + chunks - 1) / chunks);
  chunks = (n + chunk_cols - 1) / chunk_cols;
  // Split rows too when batches x chunks leave threads idle.
  const int64_t parts = std::min<int64_t>(
      strips, std::max<int64_t>(1, (threads + batches * chunks - 1) / (batches * chunks)));
  const int64_t items = batches * chunks * parts;
  threads = static_cast<int>(
      std::min<int64_t>(threads, std::max(items, batches * copied_per_batch)));
  const bool plain_out = !bf16_result_ && !bias_ && activation_ == Activation::kNone;
  // Kept panels of b (a weight): packed on the first run and after b changes, until it has
  // changed once (then b is packed per item, as without a version).
  KeptB& kept = *kept_;
  const int64_t panels_total = RoundUp(n, 2 * kPanel) / kPanel;
  const bool current = b_version != nullptr && kept.data == b && kept.version == *b_version;
  kept.gave_up = kept.gave_up || (!current && kept.packs >= 1);
  kept.used = one_b_ && b_version != nullptr && !kept.gave_up;
  // k-outer schedule, for a wide k (one chunk holds few column pairs over all of k, so a
  // would be read once per chunk: a language model head's backward, k = the vocabulary):
  // pass by pass of k, each thread packs its columns' panels for the pass and multiplies
  // every strip by them, its f32 sums for all rows waiting between passes (when they fit
  // beside the panels in L2). a is read once per thread, b packed once. Not for kept panels
  // (nothing to pack).
  const int64_t thread_pairs = (pairs + threads - 1) / threads;
  kept.k_outer = !kept.used && passes > 1 && chunks > threads && pairs >= threads &&
                 strips * thread_pairs * kStrip * 2 * kPanel * 4 <= kKOuterSumBytes;
  if (kept.k_outer) {
    RunKOuter(a, b, static_cast<uint8_t*>(out), bias, a_copy, first_copied, threads, passes,
              depth);
    return;
  }
  const bool pack_kept = kept.used && !current;
  uint16_t* kept_panels = kept.used ? kept.panels.Get(panels_total * kPanel * kp) : nullptr;
  if (pack_kept) {
    kept.data = b;
    kept.version = *b_version;
    ++kept.packs;
  }
  // A panel of 16 columns holds every pass: pass p at p * 16 * depth ([depth / 2][16][2]).
  const int64_t panel_stride = kPanel * kp;
  auto pack_panel = [&](const uint16_t* b_batch, int64_t c, uint16_t* panel) {
    for (int64_t pass = 0; pass < passes; ++pass) {
      const int64_t k0 = pass * depth;
      PackPanel(b_batch, p_.trans_b, k, n, k0, std::min(depth, kp - k0), c,
                panel + pass * kPanel * depth);
    }
  };

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    ConfigureTiles();
    if (pack_kept) {
#pragma omp for schedule(static)
      for (int64_t panel = 0; panel < panels_total; ++panel) {
        pack_panel(b, panel * kPanel, kept_panels + panel * panel_stride);
      }
    }
    CopyStrips(a, batches, first_copied, copied_per_batch, depth, a_copy);
    uint16_t* packed = kept_panels == nullptr ? ThreadPanels().Get(chunk_cols * kp) : nullptr;
    float* partial = passes > 1 ? ThreadSums().Get(kStrip * chunk_cols) : nullptr;
    // A finished block waits in one of two buffers for its epilogue until the next block's
    // products are issued: read back at once, a tile store stalls the core until the tiles
    // drain (measured: the epilogue cost as much as a third of a 256 x 768 x 768 call).
    alignas(64) float blocks[2][kStrip * 32];
    struct Pending {
      float* block = nullptr;
      int64_t rows = 0, cols = 0, at = 0, c = 0;
    } pending;
    auto finish_pending = [&] {
      if (pending.block == nullptr) return;
      void* dst = bf16_result_ ? static_cast<void*>(static_cast<uint16_t*>(out) + pending.at)
                               : static_cast<void*>(static_cast<float*>(out) + pending.at);
      WriteBlock(pending.block, pending.rows, pending.cols, bias_ ? bias + pending.c : nullptr,
                 activation_, bf16_result_, dst, n);
      pending.block = nullptr;
    };
    int64_t next_buffer = 0;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t bi = item / (chunks * parts);
      const int64_t chunk = item / parts % chunks, part = item % parts;
      const int64_t c_begin = chunk * chunk_cols, c_end = std::min(n, c_begin + chunk_cols);
      const int64_t s_begin = strips * part / parts, s_end = strips * (part + 1) / parts;
      // Panel of columns c: kept_panels[c / 16], or packed here for this item (whole pairs
      // of panels; a last panel past n packs as zeros).
      const uint16_t* panel_base = kept_panels + c_begin * kp;
      if (kept_panels == nullptr) {
        for (int64_t pass = 0; pass < passes; ++pass) {
          const int64_t k0 = pass * depth;
          PackPanels(b + b_off_[bi], p_.trans_b, k, n, k0, std::min(depth, kp - k0), c_begin,
                     RoundUp(c_end - c_begin, 2 * kPanel) / kPanel, packed + kPanel * k0,
                     panel_stride);
        }
        panel_base = packed;
      }
      for (int64_t s = s_begin; s < s_end; ++s) {
        const int64_t m0 = s * kStrip, rows = std::min(kStrip, m - m0);
        const bool direct = s < first_copied;
        const uint16_t* strip =
            direct ? nullptr : a_copy + (bi * copied_per_batch + s - first_copied) * kStrip * kp;
        for (int64_t pass = 0; pass < passes; ++pass) {
          const int64_t k0 = pass * depth, width = std::min(depth, kp - k0);
          const bool last = pass == passes - 1;
          const uint16_t* a_block = direct ? a + a_off_[bi] + m0 * k + k0 : strip + kStrip * k0;
          for (int64_t c = c_begin; c < c_end; c += 2 * kPanel) {
            const uint16_t* p0 = panel_base + (c - c_begin) * kp + kPanel * k0;
            float* sums = partial == nullptr ? nullptr : partial + (c - c_begin) * kStrip;
            MultiplyBlock(a_block, direct ? 2 * k : 2 * width, p0, p0 + panel_stride, width / kDepth,
                          pass > 0 ? sums : nullptr);
            finish_pending();  // the previous block's, while these products run
            if (!last) {
              StoreBlock(sums, 4 * 32);
              continue;
            }
            const int64_t cols = std::min<int64_t>(2 * kPanel, n - c);
            const int64_t at = out_off_[bi] + m0 * n + c;
            if (plain_out && rows == kStrip && cols == 2 * kPanel) {
              StoreBlock(static_cast<float*>(out) + at, 4 * n);
              continue;
            }
            pending = {blocks[next_buffer], rows, cols, at, c};
            next_buffer ^= 1;
            StoreBlock(pending.block, 4 * 32);
          }
        }
      }
    }
    finish_pending();
    ReleaseTiles();
  }
}

// The k-outer schedule (see Run): thread t owns column pairs [pair_begin, pair_end) of every
// batch; per pass of k it packs those panels (pass-deep, [depth / 2][16][2] each) and
// multiplies every strip's block of a by them into its f32 block sums ([strip][pair] 32 x 32
// blocks), which the last pass writes out through the epilogue.
TG_AMX_TARGET void AmxBf16Gemm::RunKOuter(const uint16_t* a, const uint16_t* b, uint8_t* out,
                                          const uint16_t* bias, uint16_t* a_copy,
                                          int64_t first_copied, int threads, int64_t passes,
                                          int64_t depth) const {
  const int64_t m = p_.m, n = p_.n, k = p_.k, kp = kp_;
  const int64_t batches = static_cast<int64_t>(out_off_.size());
  const int64_t strips = (m + kStrip - 1) / kStrip;
  const int64_t pairs = (n + 2 * kPanel - 1) / (2 * kPanel);
  const int64_t copied_per_batch = strips - first_copied;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    ConfigureTiles();
    CopyStrips(a, batches, first_copied, copied_per_batch, depth, a_copy);
    const int t = ThreadIndex(), team = TeamSize();
    const int64_t pair_begin = pairs * t / team, pair_end = pairs * (t + 1) / team;
    const int64_t my_pairs = pair_end - pair_begin;
    uint16_t* slab = ThreadPanels().Get(std::max<int64_t>(1, my_pairs * 2 * kPanel * depth));
    float* sums = ThreadSums().Get(std::max<int64_t>(1, strips * my_pairs * kStrip * 2 * kPanel));
    for (int64_t bi = 0; bi < batches && my_pairs > 0; ++bi) {
      const uint16_t* b_batch = b + b_off_[bi];
      for (int64_t pass = 0; pass < passes; ++pass) {
        const int64_t k0 = pass * depth, width = std::min(depth, kp - k0);
        PackPanels(b_batch, p_.trans_b, k, n, k0, width, 2 * pair_begin * kPanel, 2 * my_pairs,
                   slab, kPanel * width);
        for (int64_t s = 0; s < strips; ++s) {
          const bool direct = s < first_copied;
          const uint16_t* a_block =
              direct ? a + a_off_[bi] + s * kStrip * k + k0
                     : a_copy + (bi * copied_per_batch + s - first_copied) * kStrip * kp +
                           kStrip * k0;
          for (int64_t q = 0; q < my_pairs; ++q) {
            const uint16_t* p0 = slab + 2 * q * kPanel * width;
            float* block = sums + (s * my_pairs + q) * kStrip * 2 * kPanel;
            MultiplyBlock(a_block, direct ? 2 * k : 2 * width, p0, p0 + kPanel * width,
                          width / kDepth, pass > 0 ? block : nullptr);
            StoreBlock(block, 4 * 32);
          }
        }
      }
      for (int64_t s = 0; s < strips; ++s) {
        for (int64_t q = 0; q < my_pairs; ++q) {
          const int64_t m0 = s * kStrip, c = (pair_begin + q) * 2 * kPanel;
          const int64_t at = out_off_[bi] + m0 * n + c;
          void* dst = out + at * (bf16_result_ ? 2 : 4);
          WriteBlock(sums + (s * my_pairs + q) * kStrip * 2 * kPanel,
                     std::min(kStrip, m - m0), std::min<int64_t>(2 * kPanel, n - c),
                     bias_ ? bias + c : nullptr, activation_, bf16_result_, dst, n);
        }
      }
    }
    ReleaseTiles();
  }
}

}  // namespace tg::cpu
