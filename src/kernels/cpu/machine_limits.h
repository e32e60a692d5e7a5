// Measured limits of this CPU, for the benchmark suite's efficiency figures: the FP32 FMA
// peak (independent fused multiply-add chains in the widest vector unit the build targets)
// and the DRAM bandwidth (a STREAM-style triad). Both run on `threads` OpenMP threads and
// return the best of `repeats` timed runs; they exist so that GEMM GFLOP/s and memory-bound
// GB/s are quoted as fractions of limits measured in the same run, not of datasheet numbers.
#pragma once

#include <cstdint>
#include <string>

namespace tg::cpu {

struct FmaPeak {
  double gflops = 0;   // FP32, all threads together
  std::string isa;     // "avx512f", "avx2+fma" or "scalar"
};

FmaPeak MeasureFmaPeak(int threads, int repeats = 5);

// The bf16 peak of the widest bf16 unit the CPU has (decided at run time): AMX tiles
// (tdpbf16ps on a 2 x 2 block of 16 x 16 accumulators, isa "amx_bf16") where the CPU has
// AMX-BF16 and Linux grants the tile state; else independent chains of AVX512_BF16's
// dot-product instruction (vdpbf16ps: per f32 lane, two bf16 products added to the f32
// accumulator; 4 flops per lane, isa "avx512_bf16"); else "none" with gflops 0. These are the
// instructions oneDNN's bf16 GEMM kernels run on.
FmaPeak MeasureBf16DotPeak(int threads, int repeats = 5);

// Whether the CPU has AMX-BF16 and AMX-TILE (CPUID; says nothing about the OS).
bool CpuHasAmxBf16();
// AMX needs the tile data state, which Linux hands out only on request (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; oneDNN asks the same way). Asked once per
// process; true when granted. Call before any tile instruction, on any thread.
bool RequestAmxTileData();

// c[i] = a[i] + s * b[i] over three arrays of `megabytes_per_array` MiB; bytes counted as
// 3 x array size per run (two reads, one write), as STREAM does.
double MeasureTriadBandwidthGbs(int threads, int64_t megabytes_per_array = 128, int repeats = 5);

// Physical memory of this machine in bytes (0 if unknown).
uint64_t PhysicalMemoryBytes();

}  // namespace tg::cpu
