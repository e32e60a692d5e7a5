#include "tiles/gemm_plan.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tg::tiles {

namespace {

constexpr double kMatrixUnitEfficiency = 0.75;  // AMP pipeline fill, block edges (assumed)
constexpr double kVertexOverheadCycles = 60;    // vertex launch per worker (assumed)
constexpr double kPartialBytes = 4;             // partial sums in f32 (setPartialsType float)
constexpr double kMaxSerialSteps = 64;          // column steps at most (Poplar's serialSplit)

std::vector<double> PowersOfTwoUpTo(double limit) {
  std::vector<double> out;
  for (double p = 1; p <= limit; p *= 2) out.push_back(p);
  return out;
}

// The cost of one candidate split: `ps` serial steps, each a pm x pn x pk split of the
// product's n / ps columns (the operand a's block stays on its tile across the steps).
GemmPlan Evaluate(const GemmShape& s, const GemmOperands& o, const IpuTarget& t, double pm,
                  double pn, double pk, double ps, double groups_per_tile, double available) {
  GemmPlan p;
  p.pm = pm;
  p.pn = pn;
  p.pk = pk;
  p.serial = ps;
  p.groups_per_tile = groups_per_tile;
  const double n_step = std::ceil(s.n / ps);
  const double mb = std::ceil(s.m / pm), nb = std::ceil(n_step / pn), kb = std::ceil(s.k / pk);
  const double rate = o.half ? t.macs_per_cycle_f16 : t.macs_per_cycle_f32;
  const double macs = groups_per_tile * mb * nb * kb;
  p.compute_cycles = ps * (macs / (rate * kMatrixUnitEfficiency) + kVertexOverheadCycles);
  const double a_block = groups_per_tile * mb * kb * o.element_bytes;
  const double b_block = groups_per_tile * kb * nb * o.element_bytes;
  const double b_received = o.b_resident ? 0 : b_block;
  p.exchange_bytes_per_tile = a_block + ps * b_received;
  p.exchange_cycles = p.exchange_bytes_per_tile / t.exchange_bytes_per_cycle +
                      ps * t.exchange_setup_cycles;
  const double partials = pk > 1 ? groups_per_tile * mb * nb * kPartialBytes : 0;
  if (pk > 1) {
    // Each of the pk tiles of an output block reduces 1/pk of it: it receives pk - 1 pieces.
    const double piece = partials / pk;
    const double received = (pk - 1) * piece;
    p.reduce_cycles = ps * (t.sync_cycles + received / t.exchange_bytes_per_cycle +
                            t.exchange_setup_cycles +
                            (pk - 1) * (piece / kPartialBytes) / t.vector_f32_per_cycle +
                            kVertexOverheadCycles);
  }
  p.temp_bytes_per_tile = a_block + b_received + partials;  // one step's, reused by the next
  p.fits = p.temp_bytes_per_tile <= available;
  return p;
}

}  // namespace

GemmPlan PlanGemm(const GemmShape& s, const GemmOperands& o, const IpuTarget& t,
                  double available) {
  const double tiles = t.tiles_per_ipu;
  const double groups = std::max(1.0, s.groups);
  if (groups >= tiles || s.m * s.n * s.k <= 0) {  // one tile per group (or several groups)
    GemmPlan p = Evaluate(s, o, t, 1, 1, 1, 1, std::ceil(groups / tiles), available);
    p.tiles_used = static_cast<int>(std::min(groups, tiles));
    return p;
  }
  const double tiles_per_group = std::floor(tiles / groups);
  GemmPlan best;
  double best_cost = std::numeric_limits<double>::infinity();
  bool best_fits = false;
  for (double ps : PowersOfTwoUpTo(std::min(s.n, kMaxSerialSteps))) {
    const double n_step = std::ceil(s.n / ps);
    for (double pm : PowersOfTwoUpTo(std::min(s.m, tiles_per_group))) {
      for (double pn : PowersOfTwoUpTo(std::min(n_step, tiles_per_group / pm))) {
        for (double pk : PowersOfTwoUpTo(std::min(s.k, tiles_per_group / (pm * pn)))) {
          GemmPlan p = Evaluate(s, o, t, pm, pn, pk, ps, 1, available);
          // Fitting beats not fitting; then fewer cycles; a plan that does not fit at all
          // is judged by its memory.
          double cost = p.fits ? p.cycles() : p.temp_bytes_per_tile;
          bool better = (p.fits && !best_fits) || (p.fits == best_fits && cost < best_cost);
          if (better) {
            best = p;
            best_cost = cost;
            best_fits = p.fits;
          }
        }
      }
    }
  }
  best.tiles_used = static_cast<int>(groups * best.pm * best.pn * best.pk);
  return best;
}

}  // namespace tg::tiles
