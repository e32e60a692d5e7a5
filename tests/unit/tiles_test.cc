// The tile machine (src/tiles/) and the IPU Model device: the IPU targets against Graphcore's
// published chip figures, linear tile mappings (bytes conserved, wrap-around), the GEMM
// planner's invariants, the auto-partitioner against a brute-force search, the tile
// estimate of a lowered program (memory categories, cycles, JSON report, out-of-memory
// report and CompileOptions::ipu_allow_out_of_memory), and kIpuModel executing bitwise
// like kCpu.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "autodiff/optimizer.h"
#include "devices/device.h"
#include "lowering/program.h"
#include "ops/builder.h"
#include "runtime/executable.h"
#include "support/device_kind.h"
#include "support/error.h"
#include "tiles/auto_partition.h"
#include "tiles/gemm_plan.h"
#include "tiles/half_regions.h"
#include "tiles/ipu_target.h"
#include "tiles/tile_estimate.h"
#include "tiles/tile_mapping.h"

namespace tg::tiles {
namespace {

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---- targets -------------------------------------------------------------------------------

// Graphcore's published chip totals (product pages / datasheets), independent of the code.
struct Published {
  const char* name;
  int tiles;
  double kib_per_tile, memory_bytes, threads, flops_f16, flops_f32, memory_bw, exchange_bw;
};

TEST(TilesIpuTarget, NamesResolveToTheTwoGenerations) {
  for (const char* name : {"GC200", "ipu2"}) {
    const IpuTarget& t = IpuTargetByName(name);
    EXPECT_EQ(t.name, "GC200") << name;
    EXPECT_EQ(t.tiles_per_ipu, 1472) << name;
    EXPECT_EQ(t.bytes_per_tile, 624.0 * 1024) << name;
  }
  for (const char* name : {"GC2", "ipu1"}) {
    const IpuTarget& t = IpuTargetByName(name);
    EXPECT_EQ(t.name, "GC2") << name;
    EXPECT_EQ(t.tiles_per_ipu, 1216) << name;
    EXPECT_EQ(t.bytes_per_tile, 256.0 * 1024) << name;
  }
  for (const std::string& name : IpuTargetNames()) EXPECT_EQ(IpuTargetByName(name).name, name);
}

TEST(TilesIpuTarget, PerTileRatesAgreeWithThePublishedChipTotals) {
  const Published chips[] = {
      {"GC200", 1472, 624, 900e6, 8832, 250e12, 62.5e12, 47.5e12, 8e12},
      {"GC2", 1216, 256, 304.0 * 1024 * 1024, 7296, 125e12, 31.1e12, 45e12, 8e12}};
  for (const Published& p : chips) {
    SCOPED_TRACE(p.name);
    const IpuTarget& t = IpuTargetByName(p.name);
    const double n = t.tiles_per_ipu;
    EXPECT_EQ(t.tiles_per_ipu, p.tiles);
    EXPECT_EQ(t.bytes_per_tile, p.kib_per_tile * 1024);
    EXPECT_EQ(n * t.workers_per_tile, p.threads);
    EXPECT_EQ(t.peak_flops_f16, p.flops_f16);
    EXPECT_EQ(t.peak_flops_f32, p.flops_f32);
    EXPECT_NEAR(n * 2 * t.macs_per_cycle_f16 * t.clock_hz / p.flops_f16, 1.0, 0.02);
    EXPECT_NEAR(n * 2 * t.macs_per_cycle_f32 * t.clock_hz / p.flops_f32, 1.0, 0.02);
    EXPECT_NEAR(n * t.memory_bytes_per_cycle * t.clock_hz / p.memory_bw, 1.0, 0.02);
    // 4 bytes per cycle per tile is the nearest whole rate: 2.1% (GC200), 2.7% (GC2) under.
    EXPECT_NEAR(n * t.exchange_bytes_per_cycle * t.clock_hz / p.exchange_bw, 1.0, 0.03);
    EXPECT_NEAR(n * t.bytes_per_tile / p.memory_bytes, 1.0, 0.05);  // "900 MB" is ~897 MiB
    EXPECT_GT(t.macs_per_cycle_f16, t.macs_per_cycle_f32);
    EXPECT_FALSE(t.sources.empty());
  }
}

TEST(TilesIpuTarget, AnUnknownNameIsInvalidInputNamingTheKnownTargets) {
  try {
    IpuTargetByName("GC300");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_TRUE(Contains(e.message(), "GC300")) << e.message();
    EXPECT_TRUE(Contains(e.message(), "GC200")) << e.message();
    EXPECT_TRUE(Contains(e.message(), "GC2 ")) << e.message();
  }
}

// ---- linear mapping ------------------------------------------------------------------------

TEST(TilesMapping, EveryByteLandsOnExactlyOneTile) {
  const int tiles = 1472;
  const double sizes[] = {1, 7, 100, 256, 1000, 12345, 64 * 1024 + 4,
                          1472.0 * 256 * 3 + 5, 64.0 * 1024 * 1024 + 12};
  for (double bytes : sizes) {
    for (int first : {0, 17, 1471}) {
      SCOPED_TRACE(std::to_string(bytes) + " bytes from tile " + std::to_string(first));
      TileSpan s = MapLinearly(bytes, tiles, first);
      ASSERT_GE(s.count, 1);
      EXPECT_LE(s.count, tiles);
      EXPECT_EQ(s.first, first);
      EXPECT_EQ(s.bytes, bytes);
      std::vector<double> per_tile(tiles, 0.0);
      AddSpan(per_tile, s);
      EXPECT_EQ(std::accumulate(per_tile.begin(), per_tile.end(), 0.0), bytes);
      for (int t = 0; t < tiles; ++t) {
        ASSERT_EQ(BytesOnTile(s, t, tiles), per_tile[t]) << "tile " << t;
        ASSERT_LE(per_tile[t], s.bytes_per_tile) << "tile " << t;
      }
      if (s.count > 1) {
        EXPECT_EQ(std::fmod(s.bytes_per_tile, 8.0), 0.0) << "whole grains";
      }
      AddSpan(per_tile, s, -1.0);
      EXPECT_EQ(*std::max_element(per_tile.begin(), per_tile.end()), 0.0);
      EXPECT_EQ(*std::min_element(per_tile.begin(), per_tile.end()), 0.0);
    }
  }
  // Bigger than tiles x the minimum: (nearly) every tile, each of the span holding bytes
  // (whole grains per tile may leave the last tiles out); tiny: one tile, all of it.
  TileSpan big = MapLinearly(1472.0 * 256 * 3 + 5, tiles, 0);
  EXPECT_GT(big.count, tiles * 9 / 10);
  EXPECT_LE(big.count, tiles);
  EXPECT_GT(BytesOnTile(big, big.count - 1, tiles), 0);
  TileSpan tiny = MapLinearly(100, tiles, 5);
  EXPECT_EQ(tiny.count, 1);
  EXPECT_EQ(BytesOnTile(tiny, 5, tiles), 100);
  EXPECT_EQ(BytesOnTile(tiny, 6, tiles), 0);
  EXPECT_TRUE(MapLinearly(0, tiles, 3).empty());
}

TEST(TilesMapping, ASpanNearTheLastTileWrapsToTileZero) {
  const int tiles = 1472;
  TileSpan s = MapLinearly(10 * 256, tiles, tiles - 2);  // 10 tiles of 256 bytes
  ASSERT_EQ(s.count, 10);
  std::vector<double> per_tile(tiles, 0.0);
  AddSpan(per_tile, s);
  EXPECT_EQ(per_tile[tiles - 2], 256);
  EXPECT_EQ(per_tile[tiles - 1], 256);
  EXPECT_EQ(per_tile[0], 256);
  EXPECT_EQ(per_tile[7], 256);
  EXPECT_EQ(per_tile[8], 0);
  EXPECT_EQ(per_tile[tiles - 3], 0);
  EXPECT_EQ(BytesOnTile(s, 3, tiles), 256);
  // A starting tile outside [0, tiles) is taken modulo the tile count.
  EXPECT_EQ(MapLinearly(1000, tiles, tiles + 3).first, 3);
  EXPECT_EQ(MapLinearly(1000, tiles, -1).first, tiles - 1);
}

// ---- GEMM planner --------------------------------------------------------------------------

const GemmShape kShapes[] = {{1, 64, 512, 256},  {1, 512, 512, 512}, {1, 3, 1000, 7},
                             {8, 128, 64, 64},   {100, 33, 17, 65},  {1, 1, 512, 256},
                             {1, 4096, 4096, 4096}, {3000, 16, 16, 16}, {1, 1, 1, 1}};

TEST(TilesGemmPlan, APlanCoversTheProductOnTheTilesThereAre) {
  const IpuTarget& t = IpuTargetByName("GC200");
  for (const GemmShape& s : kShapes) {
    SCOPED_TRACE(std::to_string(s.groups) + " x [" + std::to_string(s.m) + ", " +
                 std::to_string(s.k) + "] x [" + std::to_string(s.k) + ", " +
                 std::to_string(s.n) + "]");
    GemmPlan p = PlanGemm(s, GemmOperands{}, t, 1e12);
    EXPECT_TRUE(p.fits);
    EXPECT_GE(p.tiles_used, 1);
    EXPECT_LE(p.tiles_used, t.tiles_per_ipu);
    const double block = std::ceil(s.m / p.pm) * std::ceil(std::ceil(s.n / p.serial) / p.pn) *
                         std::ceil(s.k / p.pk);
    EXPECT_GE(p.serial * p.tiles_used * p.groups_per_tile * block, s.macs());
    EXPECT_GT(p.compute_cycles, 0);
    EXPECT_EQ(p.reduce_cycles > 0, p.pk > 1);
    EXPECT_DOUBLE_EQ(p.cycles(), p.exchange_cycles + p.compute_cycles + p.reduce_cycles);
  }
  GemmPlan many = PlanGemm({3000, 16, 16, 16}, GemmOperands{}, t, 1e12);
  EXPECT_GT(many.groups_per_tile, 1);
  EXPECT_EQ(many.groups_per_tile, std::ceil(3000.0 / t.tiles_per_ipu));
  EXPECT_EQ(many.tiles_used, t.tiles_per_ipu);
  EXPECT_GT(PlanGemm({1, 512, 512, 512}, GemmOperands{}, t, 1e12).tiles_used, 64)
      << "a large product should spread over many tiles";
}

TEST(TilesGemmPlan, LessMemoryNeverGivesAPlanWithMoreTemporaries) {
  const IpuTarget& t = IpuTargetByName("GC200");
  for (const GemmShape& s : kShapes) {
    SCOPED_TRACE(std::to_string(s.m) + " " + std::to_string(s.n) + " " + std::to_string(s.k));
    double previous = std::numeric_limits<double>::infinity();
    for (double available = 1e9; available >= 1; available /= 4) {
      GemmPlan p = PlanGemm(s, GemmOperands{}, t, available);
      EXPECT_LE(p.temp_bytes_per_tile, previous) << "available " << available;
      EXPECT_EQ(p.fits, p.temp_bytes_per_tile <= available) << "available " << available;
      previous = p.temp_bytes_per_tile;
    }
    EXPECT_FALSE(PlanGemm(s, GemmOperands{}, t, 1).fits) << "no plan fits in one byte";
  }
}

TEST(TilesGemmPlan, AProductTooLargeForTheTilesIsComputedInSerialSteps) {
  // BERT-Large's masked-LM projection for one sequence: [128, 1024] x [1024, 30522] in half
  // precision, the 62.5 MB weight exchanged to the tiles. Within 28% of a tile no split of
  // the whole product fits; computing it in serial steps over the columns does, at the cost
  // of more compute sets and cycles.
  const IpuTarget& t = IpuTargetByName("GC200");
  GemmOperands half;
  half.element_bytes = 2;
  half.half = true;
  const GemmShape mlm{1, 128, 30522, 1024};
  const double available = 0.28 * t.bytes_per_tile;
  GemmPlan roomy = PlanGemm(mlm, half, t, 1e12);
  GemmPlan tight = PlanGemm(mlm, half, t, available);
  EXPECT_EQ(roomy.serial, 1);
  EXPECT_TRUE(tight.fits) << tight.temp_bytes_per_tile;
  EXPECT_LE(tight.temp_bytes_per_tile, available);
  EXPECT_GT(tight.serial, 1);
  EXPECT_GT(tight.cycles(), roomy.cycles());
  const double block = std::ceil(mlm.m / tight.pm) *
                       std::ceil(std::ceil(mlm.n / tight.serial) / tight.pn) *
                       std::ceil(mlm.k / tight.pk);
  EXPECT_GE(tight.serial * tight.tiles_used * block, mlm.macs());
}

// Per split, a resident weight and half precision cost at most as much (exchange, compute,
// temporaries), so the best plan over the splits can only get cheaper. (The chosen plan may
// trade one term for another: e.g. [1, 256] x [256, 512] exchanges more bytes with a resident
// b, because it then splits differently.)
TEST(TilesGemmPlan, AResidentWeightAndHalfPrecisionNeverCostMore) {
  const IpuTarget& t = IpuTargetByName("GC200");
  GemmOperands f32, resident, half;
  resident.b_resident = true;
  half.element_bytes = 2;
  half.half = true;
  for (const GemmShape& s : kShapes) {
    for (double available : {1e12, 0.6 * t.bytes_per_tile, 20000.0}) {
      SCOPED_TRACE(std::to_string(s.m) + " " + std::to_string(s.n) + " " +
                   std::to_string(s.k) + " available " + std::to_string(available));
      GemmPlan a = PlanGemm(s, f32, t, available);
      GemmPlan r = PlanGemm(s, resident, t, available);
      GemmPlan h = PlanGemm(s, half, t, available);
      if (a.fits) {
        EXPECT_TRUE(r.fits);
        EXPECT_TRUE(h.fits);
        EXPECT_LE(r.cycles(), a.cycles());
        EXPECT_LE(h.cycles(), a.cycles());
      } else {
        EXPECT_LE(r.temp_bytes_per_tile, a.temp_bytes_per_tile);
        EXPECT_LE(h.temp_bytes_per_tile, a.temp_bytes_per_tile);
      }
    }
  }
  // One split on one tile: the terms themselves compare.
  GemmShape one{4096, 8, 8, 8};
  GemmPlan a = PlanGemm(one, f32, t, 1e12), r = PlanGemm(one, resident, t, 1e12),
           h = PlanGemm(one, half, t, 1e12);
  EXPECT_LT(r.exchange_bytes_per_tile, a.exchange_bytes_per_tile);
  EXPECT_LT(h.compute_cycles, a.compute_cycles);
}

// ---- auto-partitioner ----------------------------------------------------------------------

std::vector<PartitionUnit> Units(const std::vector<double>& cycles, double bytes_per_tile,
                                 int tiles = 4) {
  std::vector<PartitionUnit> units;
  for (size_t i = 0; i < cycles.size(); ++i) {
    units.push_back({"layer" + std::to_string(i), cycles[i],
                     std::vector<double>(tiles, bytes_per_tile)});
  }
  return units;
}

// The smallest slowest stage over all splits into `stages` contiguous non-empty stages of
// at most `max_units` units each (infinity when there is none).
double BruteForceBest(const std::vector<double>& cycles, size_t stages, size_t max_units) {
  double best = std::numeric_limits<double>::infinity();
  std::function<void(size_t, size_t, double)> place = [&](size_t first, size_t left,
                                                          double worst) {
    if (left == 0) {
      if (first == cycles.size()) best = std::min(best, worst);
      return;
    }
    for (size_t end = first + 1; end <= cycles.size() && end - first <= max_units; ++end) {
      double stage = std::accumulate(cycles.begin() + first, cycles.begin() + end, 0.0);
      place(end, left - 1, std::max(worst, stage));
    }
  };
  place(0, stages, 0.0);
  return best;
}

// Stages contiguous, in order, covering every unit; their cycles and balance consistent.
void ExpectCoversInOrder(const PartitionPlan& plan, const std::vector<double>& cycles,
                         size_t stages) {
  ASSERT_EQ(plan.first_unit.size(), stages);
  ASSERT_EQ(plan.stage_cycles.size(), stages);
  ASSERT_EQ(plan.stage_max_tile_bytes.size(), stages);
  EXPECT_EQ(plan.first_unit[0], 0);
  double slowest = 0, total = 0;
  for (size_t s = 0; s < stages; ++s) {
    int end = s + 1 < stages ? plan.first_unit[s + 1] : static_cast<int>(cycles.size());
    ASSERT_LT(plan.first_unit[s], end) << "stage " << s << " is empty or out of order";
    EXPECT_EQ(plan.stage_cycles[s],
              std::accumulate(cycles.begin() + plan.first_unit[s], cycles.begin() + end, 0.0));
    slowest = std::max(slowest, plan.stage_cycles[s]);
    total += plan.stage_cycles[s];
  }
  EXPECT_EQ(total, std::accumulate(cycles.begin(), cycles.end(), 0.0));
  EXPECT_DOUBLE_EQ(plan.balance, slowest / (total / stages));
}

double Slowest(const PartitionPlan& plan) {
  double slowest = 0;
  for (double c : plan.stage_cycles) slowest = std::max(slowest, c);
  return slowest;
}

TEST(TilesAutoPartition, WithAmpleMemoryTheSlowestStageIsAsFastAsPossible) {
  const std::vector<double> cycles = {5, 1, 8, 3, 3, 9, 2, 4};
  for (int ipus : {1, 2, 3, 4, 5, 8}) {
    SCOPED_TRACE(std::to_string(ipus) + " IPUs");
    PartitionPlan plan = AutoPartition(Units(cycles, 1000), ipus, 1e6, 100);
    EXPECT_TRUE(plan.fits);
    ExpectCoversInOrder(plan, cycles, ipus);
    EXPECT_EQ(Slowest(plan), BruteForceBest(cycles, ipus, cycles.size()));
    for (size_t s = 0; s < plan.first_unit.size(); ++s) {
      int end = s + 1 < plan.first_unit.size() ? plan.first_unit[s + 1] : 8;
      EXPECT_EQ(plan.stage_max_tile_bytes[s], 1000.0 * (end - plan.first_unit[s]) + 100);
    }
  }
  // More IPUs than units: one unit per stage.
  PartitionPlan spread = AutoPartition(Units({4, 2, 6}, 10), 5, 1e6, 0);
  ExpectCoversInOrder(spread, {4, 2, 6}, 3);
  EXPECT_EQ(spread.first_unit, (std::vector<int>{0, 1, 2}));
  // Equal units over as many IPUs: perfectly balanced.
  PartitionPlan even = AutoPartition(Units({3, 3, 3, 3}, 10), 2, 1e6, 0);
  EXPECT_DOUBLE_EQ(even.balance, 1.0);
}

TEST(TilesAutoPartition, ACapacityThatForcesASplitIsRespected) {
  // A tile holds 1000 bytes, base code 200 per IPU, each unit 400 on every tile: two units
  // fit a stage (1000), three do not (1400).
  const std::vector<double> cycles = {1, 1, 1, 1, 1, 1, 20, 20};
  for (int ipus : {4, 5, 6}) {
    SCOPED_TRACE(std::to_string(ipus) + " IPUs");
    PartitionPlan plan = AutoPartition(Units(cycles, 400), ipus, 1000, 200);
    EXPECT_TRUE(plan.fits);
    ExpectCoversInOrder(plan, cycles, ipus);
    for (double bytes : plan.stage_max_tile_bytes) EXPECT_LE(bytes, 1000);
    EXPECT_EQ(Slowest(plan), BruteForceBest(cycles, ipus, 2));
  }
  // On 4 IPUs the capacity leaves one split, 2 + 2 + 2 + 2 (the heavy units together: 40
  // cycles), where ample memory would give the heavy units a stage each (20).
  PartitionPlan forced = AutoPartition(Units(cycles, 400), 4, 1000, 200);
  EXPECT_EQ(forced.first_unit, (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(Slowest(forced), 40);
  EXPECT_EQ(Slowest(AutoPartition(Units(cycles, 400), 4, 1e6, 200)), 20);
}

TEST(TilesAutoPartition, WhenNothingFitsThePlanSaysSoAndStillCoversEveryUnit) {
  const std::vector<double> cycles = {1, 2, 3, 4, 5, 6, 7, 8};
  PartitionPlan plan = AutoPartition(Units(cycles, 400), 3, 1000, 200);  // 8 units > 3 x 2
  EXPECT_FALSE(plan.fits);
  ExpectCoversInOrder(plan, cycles, 3);
  // The fallback minimizes the fullest stage: 3 + 3 + 2 units, 200 + 3 x 400 bytes.
  EXPECT_EQ(*std::max_element(plan.stage_max_tile_bytes.begin(),
                              plan.stage_max_tile_bytes.end()),
            1400);
}

TEST(TilesAutoPartition, AStagesMemoryIsItsFullestTileNotTheSumOfItsUnitsPeaks) {
  std::vector<PartitionUnit> units = {{"a", 1, {600, 0}}, {"b", 1, {0, 600}}};
  PartitionPlan plan = AutoPartition(units, 1, 1000, 200);
  EXPECT_TRUE(plan.fits);
  ASSERT_EQ(plan.stage_max_tile_bytes.size(), 1u);
  EXPECT_EQ(plan.stage_max_tile_bytes[0], 800);
}

TEST(TilesAutoPartition, PeakBytesCountOncePerStageTheLargestUnits) {
  // Three units recomputed one at a time: 100 resident bytes per tile each (summed) and
  // 300, 500, 200 bytes of activations while each runs (the largest counts).
  std::vector<PartitionUnit> units = Units({1, 1, 1}, 100, 2);
  const double peaks[] = {300, 500, 200};
  for (size_t u = 0; u < 3; ++u) units[u].peak_bytes.assign(2, peaks[u]);
  PartitionPlan one = AutoPartition(units, 1, 1000, 50);
  ASSERT_EQ(one.stage_max_tile_bytes.size(), 1u);
  EXPECT_EQ(one.stage_max_tile_bytes[0], 3 * 100 + 500 + 50);
  EXPECT_TRUE(one.fits);
  // Summed as resident bytes instead, the same units overflow one IPU and need two.
  std::vector<PartitionUnit> summed = Units({1, 1, 1}, 100, 2);
  for (size_t u = 0; u < 3; ++u) summed[u].tile_bytes.assign(2, 100 + peaks[u]);
  EXPECT_FALSE(AutoPartition(summed, 1, 1000, 50).fits);
  PartitionPlan two = AutoPartition(units, 2, 1000, 50);
  ASSERT_EQ(two.first_unit, (std::vector<int>{0, 1}));  // the fastest split: 1 | 2 units
  EXPECT_EQ(two.stage_max_tile_bytes[1], 2 * 100 + 500 + 50);
}

TEST(TilesAutoPartition, InvalidInputIsRejected) {
  auto expect_invalid = [](const std::function<void()>& fn, const std::string& words) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning '" << words << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.message();
      EXPECT_TRUE(Contains(e.message(), words)) << e.message();
    }
  };
  expect_invalid([] { AutoPartition(Units({1, 2}, 10), 0, 1e6, 0); }, "at least one IPU");
  expect_invalid([] { AutoPartition({}, 2, 1e6, 0); }, "no units");
  std::vector<PartitionUnit> mismatched = Units({1, 2, 3}, 10, 4);
  mismatched[2].tile_bytes.resize(3);
  expect_invalid([&] { AutoPartition(mismatched, 2, 1e6, 0); }, "layer2");
  std::vector<PartitionUnit> bad_peaks = Units({1, 2}, 10, 4);
  bad_peaks[1].peak_bytes.resize(3);
  expect_invalid([&] { AutoPartition(bad_peaks, 2, 1e6, 0); }, "peak bytes");
}

// ---- the estimate of a lowered program -----------------------------------------------------

// relu(x [64, 256] @ w [256, 512]): an inference layer with one weight.
std::unique_ptr<Graph> DenseLayer() {
  auto g = std::make_unique<Graph>("dense");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {64, 256}});
  Value* w = g->AddVariable("w", {DType::kF32, {256, 512}});
  g->AddOutput(b.Op1("relu", {b.Op1("matmul", {x, w})}));
  return g;
}

// sum(w, 0) + x with w [20 Mi, 4] f32: 320 MiB of weights, more than a GC2 holds (304 MiB,
// less the code on every tile), well within a GC200 (~900 MB).
std::unique_ptr<Graph> BigWeight() {
  auto g = std::make_unique<Graph>("big");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {4}});
  Value* w = g->AddVariable("w", {DType::kF32, {int64_t{20} * 1024 * 1024, 4}});
  g->AddOutput(b.Add(b.Sum(w, {0}), x));
  return g;
}

void ExpectCategoriesAddUp(const TileEstimate& e) {
  for (size_t i = 0; i < e.ipus.size(); ++i) {
    const IpuMemory& m = e.ipus[i];
    const size_t tiles = e.target.tiles_per_ipu;
    ASSERT_EQ(m.total.size(), tiles);
    ASSERT_EQ(m.variables.size(), tiles);
    ASSERT_EQ(m.activations.size(), tiles);
    ASSERT_EQ(m.exchange.size(), tiles);
    ASSERT_EQ(m.vertex_state.size(), tiles);
    ASSERT_EQ(m.code.size(), tiles);
    double total = 0;
    for (size_t t = 0; t < tiles; ++t) {
      ASSERT_DOUBLE_EQ(m.total[t], m.variables[t] + m.activations[t] + m.exchange[t] +
                                       m.vertex_state[t] + m.code[t])
          << "IPU " << i << " tile " << t;
      ASSERT_GE(m.code[t], e.target.base_code_bytes);
      total += m.total[t];
    }
    EXPECT_DOUBLE_EQ(m.total_bytes, total);
    EXPECT_EQ(m.max_tile_bytes, *std::max_element(m.total.begin(), m.total.end()));
  }
}

TEST(TilesEstimate, ALoweredLayerFitsAndItsFiguresAreConsistent) {
  Program p = Lower(DenseLayer());
  TileEstimate e = EstimateOnTiles(p);
  EXPECT_EQ(e.target.name, "GC200");
  EXPECT_TRUE(e.fits);
  EXPECT_TRUE(e.overflows.empty());
  EXPECT_EQ(e.OutOfMemoryMessage(), "");
  ASSERT_EQ(e.num_ipus, 1);
  ASSERT_EQ(e.ipus.size(), 1u);
  ExpectCategoriesAddUp(e);
  EXPECT_LE(e.ipus[0].max_tile_bytes, e.target.bytes_per_tile);
  const std::vector<double>& vars = e.ipus[0].variables;
  EXPECT_GE(std::accumulate(vars.begin(), vars.end(), 0.0), 256.0 * 512 * 4);

  ASSERT_EQ(e.compute_sets.size(), p.instructions.size());
  double sum = 0;
  bool saw_matmul = false, saw_relu = false;
  for (const ComputeSetEstimate& cs : e.compute_sets) {
    EXPECT_EQ(cs.ipu, 0);
    EXPECT_GT(cs.cycles(), 0) << cs.name;
    EXPECT_GE(cs.tiles_used, 1) << cs.name;
    sum += cs.cycles();
    if (cs.op == "matmul") {
      saw_matmul = true;
      EXPECT_EQ(cs.kind, "gemm");
      EXPECT_GT(cs.compute_cycles, 0);
      EXPECT_GT(cs.tiles_used, 1);
    }
    if (cs.op == "relu") {
      saw_relu = true;
      EXPECT_EQ(cs.kind, "elementwise");
    }
  }
  EXPECT_TRUE(saw_matmul);
  EXPECT_TRUE(saw_relu);
  EXPECT_GT(e.host_io_cycles, 0);
  EXPECT_GT(e.step_cycles, 0);
  EXPECT_DOUBLE_EQ(e.step_cycles, sum + e.host_io_cycles);
  EXPECT_DOUBLE_EQ(e.ipus[0].cycles, sum);
  EXPECT_DOUBLE_EQ(e.seconds_per_step(), e.step_cycles / e.target.clock_hz);

  const std::string json = e.ToJson();
  EXPECT_EQ(json.rfind("{\"format\":\"tilegraph-ipu-report\"", 0), 0u) << json.substr(0, 80);
  EXPECT_EQ(json.back(), '}');
  EXPECT_TRUE(Contains(json, "\"fits\":true"));
  EXPECT_TRUE(Contains(json, "\"samples_per_second\":null"));
  EXPECT_TRUE(Contains(json, "\"kind\":\"gemm\""));
  EXPECT_FALSE(Contains(e.ToJson(32), "\"samples_per_second\":null"));
}

TEST(TilesEstimate, AVariableNothingReadsOrWritesTakesNoTileMemory) {
  // A tied weight's second name: declared, never read, never updated.
  std::unique_ptr<Graph> with_unused = DenseLayer();
  with_unused->AddVariable("unused", {DType::kF32, {1024, 1024}});
  const TileEstimate a = EstimateOnTiles(Lower(DenseLayer()));
  const TileEstimate b = EstimateOnTiles(Lower(std::move(with_unused)));
  const auto sum = [](const std::vector<double>& v) {
    return std::accumulate(v.begin(), v.end(), 0.0);
  };
  EXPECT_DOUBLE_EQ(sum(b.ipus[0].variables), sum(a.ipus[0].variables));
  EXPECT_GE(sum(a.ipus[0].variables), 256.0 * 512 * 4);  // the used weight is there
}

TEST(TilesEstimate, AProgramTooBigForItsTargetSaysWhatWouldHelp) {
  Program p = Lower(BigWeight());  // lowering allocates nothing
  TileOptions gc200;
  TileEstimate big_ipu = EstimateOnTiles(p, gc200);
  EXPECT_TRUE(big_ipu.fits) << big_ipu.OutOfMemoryMessage();
  TileOptions gc2;
  gc2.target = "GC2";
  TileEstimate e = EstimateOnTiles(p, gc2);
  EXPECT_FALSE(e.fits);
  ExpectCategoriesAddUp(e);
  ASSERT_EQ(e.ipus.size(), 1u);
  const int over = e.ipus[0].overflowing_tiles;
  EXPECT_GT(over, 0);
  EXPECT_LE(over, 1216);
  ASSERT_FALSE(e.overflows.empty());
  EXPECT_LE(e.overflows.size(), 32u);
  for (size_t i = 1; i < e.overflows.size(); ++i) {
    EXPECT_GE(e.overflows[i - 1].over_by, e.overflows[i].over_by) << "worst first";
  }
  EXPECT_GT(e.ipus[0].max_tile_bytes, e.target.bytes_per_tile);
  ASSERT_FALSE(e.largest.empty());
  EXPECT_EQ(e.largest[0].kind, "variable") << e.largest[0].name;
  const std::string message = e.OutOfMemoryMessage();
  EXPECT_TRUE(Contains(message, "does not fit")) << message;
  EXPECT_TRUE(Contains(message, std::to_string(over) + " of 1216 tiles")) << message;
  EXPECT_TRUE(Contains(message, "what would help")) << message;
  EXPECT_TRUE(Contains(message, "pipeline the model over 2")) << message;
  EXPECT_TRUE(Contains(e.ToJson(), "\"fits\":false"));
}

// ---- the IPU Model device ------------------------------------------------------------------

// The same layer written the way tilegraph captures a half model: f16 operands widened to
// f32 for the CPU kernels, the result narrowed back (half_regions.h).
std::unique_ptr<Graph> WidenedHalfLayer() {
  auto g = std::make_unique<Graph>("widened");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF16, {64, 256}});
  Value* w = g->AddVariable("w", {DType::kF16, {256, 512}});
  Value* y = b.Op1("matmul", {b.Cast(x, DType::kF32), b.Cast(w, DType::kF32)});
  g->AddOutput(b.Cast(b.Op1("relu", {y}), DType::kF16));
  return g;
}

TEST(TilesEstimate, WidenedHalfValuesAreHalfOnTheIpu) {
  Program half = Lower(WidenedHalfLayer());
  auto roots = ViewRoots(*half.graph);
  HalfRegions regions(half, roots);
  int free_casts = 0;
  for (const Instruction& inst : half.instructions) {
    const Value* out = inst.node->output(0);
    EXPECT_TRUE(regions.IsHalf(out)) << inst.node->Describe();
    EXPECT_DOUBLE_EQ(regions.Bytes(out), static_cast<double>(out->type().numel()) * 2);
    free_casts += regions.IsFreeCast(inst);
  }
  EXPECT_EQ(free_casts, 2) << "the two widening casts (the narrowing one makes the output)";
  TileEstimate h = EstimateOnTiles(half);
  TileEstimate f = EstimateOnTiles(Lower(DenseLayer()));
  auto gemm_cycles = [](const TileEstimate& e) {
    for (const ComputeSetEstimate& c : e.compute_sets) {
      if (c.kind == "gemm") return c.compute_cycles;
    }
    return -1.0;
  };
  ASSERT_GT(gemm_cycles(f), 0);
  EXPECT_LT(gemm_cycles(h), gemm_cycles(f) / 2) << "the matrix unit's half rate is 4x";
  EXPECT_LT(h.ipus[0].total_bytes, f.ipus[0].total_bytes);
}

TEST(TilesIpuModel, TheDeviceIsAnIpuModelRunningTheCpuKernels) {
  std::unique_ptr<Device> d = CreateDevice(DeviceKind::kIpuModel, DeviceOptions{1});
  EXPECT_EQ(d->kind(), DeviceKind::kIpuModel);
  EXPECT_TRUE(Contains(d->name(), "ipu_model")) << d->name();
  EXPECT_EQ(d->threads(), 1);
  ASSERT_TRUE(ParseDeviceKind("ipu_model").has_value());
  EXPECT_EQ(*ParseDeviceKind("ipu_model"), DeviceKind::kIpuModel);
  EXPECT_STREQ(DeviceKindName(DeviceKind::kIpuModel), "ipu_model");
  EXPECT_EQ(KernelLibraryOf(DeviceKind::kIpuModel), DeviceKind::kCpu);
  EXPECT_EQ(KernelLibraryOf(DeviceKind::kReference), DeviceKind::kReference);
}

TEST(TilesIpuModel, CompilingAProgramTooBigForTheTargetFailsUnlessAllowed) {
  std::unique_ptr<Graph> g = BigWeight();
  CompileOptions options;
  options.pipeline = PipelineKind::kInference;
  options.device = DeviceKind::kIpuModel;
  options.ipu_target = "GC2";
  try {
    Executable::Compile(*g, options);
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kRuntime);
    EXPECT_TRUE(Contains(e.message(), "does not fit")) << e.message();
    EXPECT_TRUE(Contains(e.message(), "of 1216 tiles")) << e.message();
    EXPECT_TRUE(Contains(e.message(), "what would help")) << e.message();
  }
  options.ipu_allow_out_of_memory = true;  // allocates the 320 MiB weight in host memory
  std::unique_ptr<Executable> exe = Executable::Compile(*g, options);
  ASSERT_NE(exe->tile_estimate(), nullptr);
  EXPECT_FALSE(exe->tile_estimate()->fits);
  EXPECT_EQ(exe->tile_estimate()->target.name, "GC2");
}

TEST(TilesIpuModel, AShardedProgramsStepIsTheSumOfItsIpus) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {32, 64}});
  Value* w0 = g.AddVariable("w0", {DType::kF32, {64, 128}});
  Value* w1 = g.AddVariable("w1", {DType::kF32, {128, 16}});
  Value* h = b.Op1("relu", {b.Op1("matmul", {x, w0})});
  b.set_placement(1);
  g.AddOutput(b.Op1("matmul", {h, w1}));
  CompileOptions options;
  options.pipeline = PipelineKind::kInference;
  options.device = DeviceKind::kIpuModel;
  std::unique_ptr<Executable> exe = Executable::Compile(g, options);
  const TileEstimate* e = exe->tile_estimate();
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->fits) << e->OutOfMemoryMessage();
  ASSERT_EQ(e->num_ipus, 2);
  ASSERT_EQ(e->ipus.size(), 2u);
  ExpectCategoriesAddUp(*e);
  EXPECT_EQ(e->compute_sets.size(), exe->num_instructions());
  double sum = 0;
  std::vector<int> sets_on(2, 0);
  for (const ComputeSetEstimate& cs : e->compute_sets) {
    ASSERT_GE(cs.ipu, 0);
    ASSERT_LT(cs.ipu, 2);
    ++sets_on[cs.ipu];
    sum += cs.cycles();
  }
  EXPECT_GT(sets_on[0], 0);
  EXPECT_GT(sets_on[1], 0);
  EXPECT_GT(e->ipus[0].cycles, 0);
  EXPECT_GT(e->ipus[1].cycles, 0);
  EXPECT_NEAR(e->step_cycles, e->ipus[0].cycles + e->ipus[1].cycles + e->host_io_cycles,
              1e-9 * e->step_cycles);
  EXPECT_NEAR(e->step_cycles, sum + e->host_io_cycles, 1e-9 * e->step_cycles);
}

// An MLP training step (matmul, relu, log_softmax, nll_loss, SGD with momentum).
std::unique_ptr<Graph> MlpTrainingStep() {
  auto g = std::make_unique<Graph>("mlp");
  Builder b(*g);
  Value* x = g->AddInput("x", {DType::kF32, {8, 16}});
  Value* y = g->AddInput("y", {DType::kI64, {8}});
  Value* w1 = g->AddVariable("w1", {DType::kF32, {16, 32}});
  Value* w2 = g->AddVariable("w2", {DType::kF32, {32, 5}});
  Value* h = b.Op1("relu", {b.Op1("matmul", {x, w1})});
  Value* loss = b.Op1("nll_loss", {b.Op1("log_softmax", {b.Op1("matmul", {h, w2})}), y});
  g->AddOutput(loss);
  ParamGroup group;
  group.params = {w1, w2};
  group.hyper.lr = 0.05;
  group.hyper.momentum = 0.9;
  OptimizerConfig config;
  config.use_momentum = true;
  AddTrainingStep(b, loss, {group}, config);
  return g;
}

TEST(TilesIpuModel, ExecutesBitwiseLikeTheCpuDevice) {
  std::unique_ptr<Graph> g = MlpTrainingStep();
  const int64_t steps = 2;
  HostTensor x({DType::kF32, {steps, 8, 16}}), y({DType::kI64, {steps, 8}});
  for (int64_t i = 0; i < x.type().numel(); ++i) {
    x.as<float>()[i] = 0.1f * static_cast<float>((i * 37) % 23 - 11);
  }
  for (int64_t i = 0; i < y.type().numel(); ++i) y.as<int64_t>()[i] = (i * 7) % 5;
  std::vector<std::vector<HostTensor>> results;
  for (DeviceKind kind : {DeviceKind::kCpu, DeviceKind::kIpuModel}) {
    CompileOptions options;
    options.device = kind;
    std::unique_ptr<Executable> exe = Executable::Compile(*g, options);
    EXPECT_EQ(exe->device().kind(), kind);
    EXPECT_EQ(exe->tile_estimate() != nullptr, kind == DeviceKind::kIpuModel);
    exe->SetHyperParam("group0.lr", 0.05);  // hyperparameters start at zero
    exe->SetHyperParam("group0.momentum", 0.9);
    for (const char* name : {"w1", "w2"}) {
      HostTensor w(exe->VariableType(name));
      for (int64_t i = 0; i < w.type().numel(); ++i) {
        w.as<float>()[i] = 0.05f * static_cast<float>((i * 13) % 17 - 8);
      }
      exe->WriteVariable(name, {w.data(), w.type()});
    }
    std::vector<HostTensor> r;
    for (int call = 0; call < 2; ++call) {
      for (HostTensor& out : exe->Run({{x.data(), x.type()}, {y.data(), y.type()}}, steps,
                                      OutputMode::kAll)) {
        r.push_back(std::move(out));
      }
    }
    r.push_back(exe->ReadVariable("w1"));
    r.push_back(exe->ReadVariable("w2"));
    results.push_back(std::move(r));
  }
  ASSERT_EQ(results[0].size(), results[1].size());
  for (size_t k = 0; k < results[0].size(); ++k) {
    const HostTensor &cpu = results[0][k], &ipu = results[1][k];
    ASSERT_EQ(cpu.type(), ipu.type()) << "result " << k;
    EXPECT_EQ(std::memcmp(cpu.data(), ipu.data(), cpu.bytes()), 0) << "result " << k;
  }
  // The weights moved: the comparison is of a program that did something.
  HostTensor start(results[0].back().type());
  for (int64_t i = 0; i < start.type().numel(); ++i) {
    start.as<float>()[i] = 0.05f * static_cast<float>((i * 13) % 17 - 8);
  }
  EXPECT_NE(std::memcmp(start.data(), results[0].back().data(), start.bytes()), 0);
}

// x [256, 128] through three stages of relu(h @ w), one per IPU, and a summed loss (SGD).
std::unique_ptr<Graph> ThreeStageTraining() {
  auto g = std::make_unique<Graph>("three_stages");
  Builder b(*g);
  Value* h = g->AddInput("x", {DType::kF32, {256, 128}});
  std::vector<Value*> weights;
  for (int stage = 0; stage < 3; ++stage) {
    b.set_placement(stage);
    Value* w = g->AddVariable("w" + std::to_string(stage), {DType::kF32, {128, 128}});
    weights.push_back(w);
    h = b.Op1("relu", {b.Op1("matmul", {h, w})});
  }
  Value* loss = b.Sum(h, {0, 1});
  g->AddOutput(loss);
  ParamGroup group;
  group.params = weights;
  group.hyper.lr = 0.01;
  OptimizerConfig config;
  config.accumulation_steps = 3;  // pipelined: the update applies once per 3 micro-batches
  AddTrainingStep(b, loss, {group}, config);
  return g;
}

// The most bytes of values alive at once on `ipu` (temporaries aside) over the program.
double PeakLive(const TileEstimate& e, int ipu) {
  double peak = 0;
  for (const LiveStep& s : e.liveness) {
    if (s.ipu == ipu) peak = std::max(peak, s.activation_bytes);
  }
  return peak;
}

TEST(TilesIpuModel, APipelinedIpuHoldsTheActivationsOfEveryMicroBatchInFlight) {
  std::unique_ptr<Graph> g = ThreeStageTraining();
  auto estimate = [&](bool pipelined, bool recompute) {
    CompileOptions options;
    options.device = DeviceKind::kIpuModel;
    options.pipeline_micro_batches = pipelined ? 3 : 0;
    options.accumulation_steps = 3;
    options.recompute_stages = recompute;
    std::unique_ptr<Executable> exe = Executable::Compile(*g, options);
    EXPECT_EQ(exe->pipelined(), pipelined) << exe->pipeline_fallback_reason();
    return *exe->tile_estimate();
  };
  const TileEstimate sharded = estimate(false, false), pipelined = estimate(true, false),
                     recomputed = estimate(true, true);
  ASSERT_EQ(pipelined.num_ipus, 3);
  ExpectCategoriesAddUp(pipelined);
  // IPU 0 has 3 micro-batches in flight (1F1B), so what its forward keeps for its backward
  // (x and the first relu's output, 128 KiB each) is there 3 times instead of once.
  const double kept = 2 * 256 * 128 * 4.0;
  EXPECT_NEAR(PeakLive(pipelined, 0) - PeakLive(sharded, 0), 2 * kept, 1e-6 * kept);
  // Recomputation keeps only the stage's input in flight (x) and recomputes the relu.
  EXPECT_NEAR(PeakLive(recomputed, 0) - PeakLive(sharded, 0), 2 * (kept / 2), 1e-6 * kept);
  // The last IPU runs each micro-batch's forward and backward back to back: no stash.
  EXPECT_NEAR(PeakLive(pipelined, 2), PeakLive(sharded, 2), 0.01 * PeakLive(sharded, 2));
}

}  // namespace
}  // namespace tg::tiles
