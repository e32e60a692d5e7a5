// TileEstimate: a lowered Program laid onto the tiles of one or more emulated IPUs. Every
// tensor gets a tile mapping (tiles/tile_mapping.h), every instruction becomes BSP compute
// sets with a sync and an exchange (tiles/op_work.h), and walking the instructions in
// program order gives, per tile, the peak of what is alive there (weights and optimizer
// state, live activations, the current op's received operands, resident vertex state and
// code) and, per compute set, estimated cycles. The device executes with the CPU kernels
// (devices/ipu_model/), so this is the only IPU-specific result: an estimate, labelled so
// wherever it is shown.
//
// An output lowering writes in place over a dying input takes over that input's tile memory.
// What it does not model (said plainly): overlap of exchange with compute, stream copies
// overlapping the step, tile-level code layout.
#pragma once

#include <string>
#include <vector>

#include "lowering/program.h"
#include "tiles/ipu_target.h"

namespace tg::tiles {

struct TileOptions {
  std::string target = "GC200";
  // Per IPU (index = placement): the share of a tile dense ops may use for temporaries
  // (PopTorch's setAvailableMemoryProportion); missing entries: 0.6, Poplar's default.
  std::vector<double> available_memory_proportion;
  int replicas = 1;        // data-parallel replicas (each on its own IPUs)
  bool pipelined = false;  // the IPUs run concurrently on successive micro-batches
};

struct ComputeSetEstimate {
  size_t instruction = 0;
  int ipu = 0;
  std::string name, op, source, kind;
  double start_cycle = 0, sync_cycles = 0, exchange_cycles = 0, compute_cycles = 0,
         link_cycles = 0;
  int tiles_used = 0;
  double cycles() const { return sync_cycles + exchange_cycles + compute_cycles + link_cycles; }
};

// Per tile of one IPU, bytes at that tile's peak.
struct IpuMemory {
  std::vector<double> variables, activations, exchange, vertex_state, code, total;
  int max_tile = 0;
  double max_tile_bytes = 0;
  double total_bytes = 0;  // sum over tiles of the peaks
  int overflowing_tiles = 0;
  double cycles = 0;       // this IPU's compute sets in one step
  double control_code_bytes = 0;  // of `code`, on every tile: the program's control code
};

struct LiveStep {
  size_t step = 0;
  int ipu = 0;
  std::string label;
  double live_bytes = 0, max_tile_bytes = 0;  // all of the IPU's tiles / the fullest one
  double activation_bytes = 0;  // of live_bytes, the values alive (not the op's temporaries)
};

struct TileOverflow {
  int ipu = 0, tile = 0;
  double bytes = 0, over_by = 0;
};

struct TileContributor {
  std::string name, source, kind;
  double bytes_on_tile = 0;
  int ipu = 0, tile = 0;
};

struct TileEstimate {
  IpuTarget target;
  int num_ipus = 1;  // per replica
  int replicas = 1;
  bool pipelined = false;
  bool fits = true;
  double step_cycles = 0;     // one step (one micro-batch when pipelined) of one replica
  double host_io_cycles = 0;  // streaming the step's inputs and outputs (included above)
  std::vector<IpuMemory> ipus;
  std::vector<ComputeSetEstimate> compute_sets;
  std::vector<LiveStep> liveness;
  std::vector<TileOverflow> overflows;  // worst first, at most 32
  // On each IPU's fullest tile at its peak, the IPU with the fullest tile first; per IPU at
  // most 12, largest first.
  std::vector<TileContributor> largest;

  double seconds_per_step() const { return step_cycles / target.clock_hz; }
  // The report (docs/IPU_MODEL.md: "Report JSON"); samples_per_step <= 0 leaves the
  // throughput null.
  std::string ToJson(double samples_per_step = 0) const;
  // Why it does not fit and what would help (empty when it fits).
  std::string OutOfMemoryMessage() const;
};

TileEstimate EstimateOnTiles(const Program& program, const TileOptions& options = {});

}  // namespace tg::tiles
