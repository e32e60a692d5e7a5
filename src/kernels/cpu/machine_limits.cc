// FMA-peak and triad-bandwidth probes; see machine_limits.h.
#include "kernels/cpu/machine_limits.h"

#include <unistd.h>

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
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

}  // namespace

namespace {

// The best of `repeats` timed runs of `chains` on `threads` threads, in GFLOP/s, counting
// `flops_per_iteration` per thread and loop iteration.
double BestChainsGflops(int threads, int repeats, double flops_per_iteration,
                        float (*chains)(int64_t)) {
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    { g_sink = chains(kIterations); }
    double flops = flops_per_iteration * static_cast<double>(kIterations) * threads;
    best = std::max(best, flops / Seconds(t0) / 1e9);
  }
  return best;
}

}  // namespace

FmaPeak MeasureBf16DotPeak(int threads, int repeats) {
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
