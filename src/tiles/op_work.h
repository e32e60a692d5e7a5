// The per-tile work of one op on the tile machine: what kind of work it is, how many tiles
// it spreads over, and the estimated cycles of its sync, exchange and compute phases (BSP:
// every compute set is preceded by a sync and an exchange that brings its operands to the
// tiles that need them). Dense ops go through the GEMM planner (tiles/gemm_plan.h);
// elementwise ops run where their output lies; reductions take two compute sets (partials
// per tile, then the partials combined); collectives and stage copies cost link time
// between IPUs. All figures are estimates from the target description.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "tiles/gemm_plan.h"
#include "tiles/ipu_target.h"
#include "tiles/tile_mapping.h"

namespace tg::tiles {

enum class WorkKind { kGemm, kElementwise, kReduction, kDataMovement, kCollective, kIpuTransfer };
const char* WorkKindName(WorkKind kind);

struct OpWork {
  WorkKind kind = WorkKind::kDataMovement;
  int compute_sets = 1;
  int tiles_used = 1;
  double sync_cycles = 0, exchange_cycles = 0, compute_cycles = 0;
  double link_cycles = 0;            // between IPUs (collectives, stage copies)
  double temp_bytes_per_tile = 0;    // alive during the op only (received operands, partials)
  double vertex_bytes_per_tile = 0;  // resident for the whole program
  std::optional<GemmPlan> gemm;
  double cycles() const { return sync_cycles + exchange_cycles + compute_cycles + link_cycles; }
};

struct OpSite {
  const Node* node = nullptr;
  const IpuTarget* target = nullptr;
  double available_bytes_per_tile = 0;  // what a dense op may use for temporaries
  std::vector<TileSpan> inputs;         // where each input lies (empty span: not on tiles)
  std::vector<bool> input_resident;     // the input is a weight laid out for this op
  TileSpan output;                      // where output 0 will lie (elementwise: decided here)
  bool half = false;  // the op computes in half precision on an IPU (tiles/half_regions.h)
};

// The work of `site.node`; for dense ops, also the span its output takes (the tiles the
// planner used), returned through `output_tiles`.
OpWork EstimateOp(const OpSite& site, int* output_tiles);

// The kind of work an op is (by its registry traits and name).
WorkKind ClassifyOp(const Node& node);

}  // namespace tg::tiles
