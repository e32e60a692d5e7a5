// FMA-peak and triad-bandwidth probes; see machine_limits.h.
#include "kernels/cpu/machine_limits.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>

namespace tg::cpu {
namespace {

constexpr int kChains = 12;            // enough independent chains to cover FMA latency x ports
constexpr int64_t kIterations = 4000000;

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One thread's chains of the widest FMA this CPU has, whatever the build targets (the probe
// measures the machine, not the ISA level tilegraph's own kernels were compiled for); each
// returns a value that depends on every chain (so nothing is elided).
// Every lane of every chain, summed (not _mm512_reduce_add_ps: GCC 12 warns about its
// header's uninitialized placeholder).
__attribute__((target("avx512f"))) float SumOfLanes(const __m512 (&acc)[kChains]) {
  alignas(64) float lanes[16];
  float sum = 0;
  for (int c = 0; c < kChains; ++c) {
    _mm512_store_ps(lanes, acc[c]);
    for (float l : lanes) sum += l;
  }
  return sum;
}

__attribute__((target("avx512f"))) float FmaChains512(int64_t iterations) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], mul, add);
  }
  return SumOfLanes(acc);
}

__attribute__((target("avx2,fma"))) float FmaChains256(int64_t iterations) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(static_cast<float>(c));
  const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], mul, add);
  }
  alignas(32) float lanes[8];
  float sum = 0;
  for (int c = 0; c < kChains; ++c) {
    _mm256_store_ps(lanes, acc[c]);
    for (float l : lanes) sum += l;
  }
  return sum;
}

float ScalarChains(int64_t iterations) {
  float acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = static_cast<float>(c);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * 0.999999f + 1e-7f;
  }
  float sum = 0;
  for (float a : acc) sum += a;
  return sum;
}

struct FmaProbe {
  float (*chains)(int64_t);
  int lanes;
  const char* isa;
};

FmaProbe WidestFma() {
  if (__builtin_cpu_supports("avx512f")) return {FmaChains512, 16, "avx512f"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {FmaChains256, 8, "avx2+fma"};
  }
  return {ScalarChains, 1, "scalar"};
}

volatile float g_sink;  // keeps the chains' results alive

// kChains independent vdpbf16ps chains; compiled for AVX512_BF16 whatever the build targets,
// called only where the CPU has it.
__attribute__((target("avx512f,avx512bf16"))) float Bf16DotChains(int64_t iterations) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
  const __m512bh y = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(-1e-3f));
  for (int64_t i = 0; i < iterations; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], x, y);
  }
  return SumOfLanes(acc);
}


// Tiles 0-3 accumulate (16 x 16 f32), 4-5 hold A (16 rows x 32 bf16), 6-7 hold B (16 rows of
// 16 bf16 pairs): a 2 x 2 block of independent tdpbf16ps chains, each instruction
// 16 x 16 x 32 multiply-adds. Four chains cover the instruction's latency at one per 16
// cycles, the rate oneDNN's AMX GEMM kernels run at.
constexpr double kAmxFlopsPerIteration = 4.0 * 16 * 16 * 32 * 2;

__attribute__((target("amx-tile,amx-bf16"))) float AmxBf16Chains(int64_t iterations) {
  alignas(64) unsigned char config[64] = {};
  config[0] = 1;  // palette 1
  for (int t = 0; t < 8; ++t) {
    const uint16_t bytes_per_row = 64;
    std::memcpy(config + 16 + 2 * t, &bytes_per_row, sizeof bytes_per_row);
    config[48 + t] = 16;  // rows
  }
  _tile_loadconfig(config);
  alignas(64) uint16_t operand[16 * 32];
  for (int i = 0; i < 16 * 32; ++i) operand[i] = (i & 1) ? 0x3A83 : 0xBA83;  // bf16 +-1e-3
  alignas(64) float acc[16 * 16];
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, operand, 64);
  _tile_loadd(5, operand, 64);
  _tile_loadd(6, operand, 64);
  _tile_loadd(7, operand, 64);
  for (int64_t i = 0; i < iterations; ++i) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  float sum = 0;
  _tile_stored(0, acc, 64);
  for (float a : acc) sum += a;
  _tile_stored(3, acc, 64);
  for (float a : acc) sum += a;
  _tile_release();
  return sum;
}

}  // namespace

namespace {

// The best of `repeats` timed runs of `chains` on `threads` threads, in GFLOP/s, counting
// `flops_per_iteration` per thread and loop iteration.
double BestChainsGflops(int threads, int repeats, double flops_per_iteration,
                        float (*chains)(int64_t), int64_t iterations = kIterations) {
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    { g_sink = chains(iterations); }
    double flops = flops_per_iteration * static_cast<double>(iterations) * threads;
    best = std::max(best, flops / Seconds(t0) / 1e9);
  }
  return best;
}

}  // namespace

// CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
bool CpuHasAmxBf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return (d >> 22 & 1) && (d >> 24 & 1);
}

bool RequestAmxTileData() {
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtileData = 18;
  static const bool granted = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) == 0;
  return granted;
}

FmaPeak MeasureBf16DotPeak(int threads, int repeats) {
  if (CpuHasAmxBf16() && RequestAmxTileData()) {
    // ~1,000 times the flops of a vector instruction per tdpbf16ps: fewer iterations.
    return {BestChainsGflops(threads, repeats, kAmxFlopsPerIteration, AmxBf16Chains,
                             kIterations / 64),
            "amx_bf16"};
  }
  if (!__builtin_cpu_supports("avx512bf16")) return {0.0, "none"};
  // 16 f32 lanes x 2 products x (multiply + add) per instruction.
  return {BestChainsGflops(threads, repeats, 4.0 * 16 * kChains, Bf16DotChains), "avx512_bf16"};
}

FmaPeak MeasureFmaPeak(int threads, int repeats) {
  const FmaProbe probe = WidestFma();
  return {BestChainsGflops(threads, repeats, 2.0 * kChains * probe.lanes, probe.chains),
          probe.isa};
}

double MeasureTriadBandwidthGbs(int threads, int64_t megabytes_per_array, int repeats) {
  const int64_t n = megabytes_per_array * (1 << 20) / static_cast<int64_t>(sizeof(float));
  std::unique_ptr<float[]> a(new float[n]), b(new float[n]), c(new float[n]);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {  // first touch on the threads that will use the pages
    a[i] = 1.0f;
    b[i] = 2.0f;
    c[i] = 0.0f;
  }
  double best = 0;
  const float s = 3.0f;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) c[i] = a[i] + s * b[i];
    best = std::max(best, 3.0 * static_cast<double>(n) * sizeof(float) / Seconds(t0) / 1e9);
  }
  g_sink = c[n / 2];
  return best;
}

uint64_t PhysicalMemoryBytes() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

}  // namespace tg::cpu
