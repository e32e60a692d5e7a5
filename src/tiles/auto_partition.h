// The auto-partitioner: splits a model's sequence of units (its layers, in forward order)
// into contiguous pipeline stages, one per IPU, so that every stage fits its IPU's tiles and
// the slowest stage (which sets a pipeline's pace) is as fast as possible.
//
// Each unit is described by what it costs alone on an IPU: its estimated cycles (forward
// and backward) and its bytes per tile (resident and peak live, without the base code every
// IPU carries once). A stage's cost is the sum of its units' cycles; its memory the sum of
// their per-tile bytes plus one base code, taken at the fullest tile (an upper bound: the
// units' peaks need not coincide). Bytes a unit needs only while it runs (`peak_bytes`: its
// activations when the units are recomputed one at a time) count once per stage, the
// largest unit's, instead of being summed. Dynamic programming over (units placed, stages used)
// minimizes the largest stage time among the splits whose stages all fit; when none fits,
// it minimizes the largest stage memory instead and says so.
#pragma once

#include <string>
#include <vector>

namespace tg::tiles {

struct PartitionUnit {
  std::string name;
  double cycles = 0;
  std::vector<double> tile_bytes;  // one entry per tile of an IPU; summed over a stage
  std::vector<double> peak_bytes;  // per tile too (or empty); the stage's largest counts
};

struct PartitionPlan {
  bool fits = false;
  std::vector<int> first_unit;          // of each stage (stage s: [first_unit[s], first_unit[s+1]))
  std::vector<double> stage_cycles;
  std::vector<double> stage_max_tile_bytes;
  double balance = 0;                   // slowest stage / mean stage (1 = perfectly balanced)
};

// `ipus` stages (fewer when there are fewer units); tile capacity `bytes_per_tile`, of which
// `base_code_bytes` (code its units share: runtime and codelets) are taken once per IPU.
PartitionPlan AutoPartition(const std::vector<PartitionUnit>& units, int ipus,
                            double bytes_per_tile, double base_code_bytes);

}  // namespace tg::tiles
