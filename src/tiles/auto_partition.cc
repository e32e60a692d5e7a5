#include "tiles/auto_partition.h"

#include <algorithm>
#include <limits>

#include "support/error.h"

namespace tg::tiles {

namespace {

// The fullest tile of every stage [i, j): per tile, the units' summed bytes (prefix sums)
// plus the largest of their peak bytes (a running maximum as j grows).
class StageMemory {
 public:
  StageMemory(const std::vector<PartitionUnit>& units, double base) : units_(units), base_(base) {
    tiles_ = units.empty() ? 0 : units[0].tile_bytes.size();
    prefix_.assign(units.size() + 1, std::vector<double>(tiles_, 0.0));
    for (size_t u = 0; u < units.size(); ++u) {
      TG_CHECK(units[u].tile_bytes.size() == tiles_, kInvalidInput, "auto-partition: unit '",
               units[u].name, "' has ", units[u].tile_bytes.size(), " tiles, expected ", tiles_);
      TG_CHECK(units[u].peak_bytes.empty() || units[u].peak_bytes.size() == tiles_,
               kInvalidInput, "auto-partition: unit '", units[u].name, "' has ",
               units[u].peak_bytes.size(), " tiles of peak bytes, expected ", tiles_);
      for (size_t t = 0; t < tiles_; ++t) {
        prefix_[u + 1][t] = prefix_[u][t] + units[u].tile_bytes[t];
      }
    }
  }
  // max_tile[i][j] for every stage [i, j).
  std::vector<std::vector<double>> AllStages() const {
    const size_t n = units_.size();
    std::vector<std::vector<double>> out(n + 1, std::vector<double>(n + 1, 0.0));
    std::vector<double> peak(tiles_);
    for (size_t i = 0; i < n; ++i) {
      std::fill(peak.begin(), peak.end(), 0.0);
      for (size_t j = i + 1; j <= n; ++j) {
        const std::vector<double>& p = units_[j - 1].peak_bytes;
        double worst = 0;
        for (size_t t = 0; t < tiles_; ++t) {
          if (!p.empty()) peak[t] = std::max(peak[t], p[t]);
          worst = std::max(worst, prefix_[j][t] - prefix_[i][t] + peak[t]);
        }
        out[i][j] = worst + base_;
      }
    }
    return out;
  }

 private:
  const std::vector<PartitionUnit>& units_;
  double base_;
  size_t tiles_ = 0;
  std::vector<std::vector<double>> prefix_;
};

}  // namespace

PartitionPlan AutoPartition(const std::vector<PartitionUnit>& units, int ipus,
                            double bytes_per_tile, double base_code_bytes) {
  TG_CHECK(ipus >= 1, kInvalidInput, "auto-partition: expected at least one IPU, got ", ipus);
  TG_CHECK(!units.empty(), kInvalidInput, "auto-partition: the model has no units to place");
  const size_t n = units.size();
  const size_t stages = std::min<size_t>(ipus, n);
  StageMemory memory(units, base_code_bytes);
  std::vector<double> cycles(n + 1, 0.0);
  for (size_t u = 0; u < n; ++u) cycles[u + 1] = cycles[u] + units[u].cycles;
  const std::vector<std::vector<double>> max_tile = memory.AllStages();
  // best[s][j]: the smallest achievable cost of placing units [0, j) on s stages, where the
  // cost is the slowest stage (fitting mode) or the fullest stage's tile (fallback mode).
  auto solve = [&](bool must_fit, std::vector<std::vector<size_t>>& cut) {
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<std::vector<double>> best(stages + 1, std::vector<double>(n + 1, inf));
    cut.assign(stages + 1, std::vector<size_t>(n + 1, 0));
    best[0][0] = 0;
    for (size_t s = 1; s <= stages; ++s) {
      for (size_t j = s; j <= n; ++j) {
        for (size_t i = s - 1; i < j; ++i) {
          if (best[s - 1][i] == inf) continue;
          bool fits = max_tile[i][j] <= bytes_per_tile;
          if (must_fit && !fits) continue;
          double stage = must_fit ? cycles[j] - cycles[i] : max_tile[i][j];
          double cost = std::max(best[s - 1][i], stage);
          if (cost < best[s][j]) {
            best[s][j] = cost;
            cut[s][j] = i;
          }
        }
      }
    }
    return best[stages][n] < inf;
  };
  std::vector<std::vector<size_t>> cut;
  PartitionPlan plan;
  plan.fits = solve(true, cut);
  if (!plan.fits) solve(false, cut);
  std::vector<int> firsts;
  for (size_t s = stages, j = n; s > 0; --s) {
    size_t i = cut[s][j];
    firsts.push_back(static_cast<int>(i));
    j = i;
  }
  std::reverse(firsts.begin(), firsts.end());
  plan.first_unit = firsts;
  double total = 0, slowest = 0;
  for (size_t s = 0; s < stages; ++s) {
    size_t i = firsts[s], j = s + 1 < stages ? firsts[s + 1] : n;
    plan.stage_cycles.push_back(cycles[j] - cycles[i]);
    plan.stage_max_tile_bytes.push_back(max_tile[i][j]);
    total += cycles[j] - cycles[i];
    slowest = std::max(slowest, cycles[j] - cycles[i]);
  }
  plan.balance = total > 0 ? slowest / (total / stages) : 1.0;
  return plan;
}

}  // namespace tg::tiles
