// The tile planner of dense ops. A dense op (matmul, convolution as its implicit GEMM,
// attention) is `groups` products [m, k] x [k, n]; the planner splits each product over a
// grid of pm x pn x pk tiles (groups side by side), every tile multiplying one block with
// the matrix unit, and picks the split with the fewest estimated cycles among those whose
// per-tile temporaries (the operand blocks it receives, its partial sums) fit the memory the
// op may use on a tile (Poplar's "available memory proportion"). When k is split, a second
// compute set reduces the partial sums. This is the spirit of Poplar's poplin planner: the
// cost terms are the same (MACs per tile, bytes exchanged per tile, a reduction), the
// figures are the target's (tiles/ipu_target.h), the search is over powers of two. A product
// too large for any split of the tiles' memory is also serialized: its n columns computed in
// ps steps one after another (Poplar's serial split, Graphcore's "serialized" projections),
// each step a split of n / ps columns, its temporaries reused by the next.
#pragma once

#include "ops/registry.h"
#include "tiles/ipu_target.h"

namespace tg::tiles {

struct GemmPlan {
  double pm = 1, pn = 1, pk = 1;  // the split of one product (of one serial step)
  double serial = 1;              // serial steps over the columns (1: all at once)
  double groups_per_tile = 1;     // > 1 when there are more groups than tiles
  int tiles_used = 0;
  double compute_cycles = 0;      // the multiply compute sets (one per serial step)
  double exchange_bytes_per_tile = 0;  // operand blocks a tile receives
  double exchange_cycles = 0;
  double reduce_cycles = 0;       // partial sums exchanged and added (pk > 1), 0 otherwise
  double temp_bytes_per_tile = 0; // operand blocks + partial sums, alive during the op
  bool fits = true;               // temp_bytes_per_tile within the available memory
  double cycles() const { return exchange_cycles + compute_cycles + reduce_cycles; }
};

struct GemmOperands {
  double element_bytes = 4;  // of the operands (f32: 4, f16 / bf16: 2)
  bool half = false;         // the matrix unit's half-precision rate applies
  bool b_resident = false;   // b is a weight laid out for this op (not exchanged)
};

GemmPlan PlanGemm(const GemmShape& shape, const GemmOperands& operands,
                  const IpuTarget& target, double available_bytes_per_tile);

}  // namespace tg::tiles
