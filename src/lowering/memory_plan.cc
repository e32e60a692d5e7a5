#include "lowering/memory_plan.h"

#include <algorithm>
#include <numeric>
#include <string>

namespace tg {
namespace {

size_t AlignUp(size_t n) { return (n + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment; }

bool Overlaps(const BufferRequest& a, const BufferRequest& b) {
  return a.first <= b.last && b.first <= a.last;
}

}  // namespace

MemoryPlan PlanMemory(const std::vector<BufferRequest>& requests) {
  MemoryPlan plan;
  plan.offsets.assign(requests.size(), 0);
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return requests[a].bytes > requests[b].bytes;
  });
  struct Placed {
    size_t offset, size;
    size_t index;
  };
  std::vector<Placed> placed;  // kept sorted by offset
  for (size_t idx : order) {
    const BufferRequest& r = requests[idx];
    size_t size = AlignUp(std::max<size_t>(r.bytes, 1));
    plan.naive_bytes += size;
    // Find the lowest gap between conflicting placed buffers that fits.
    size_t candidate = 0;
    for (const Placed& p : placed) {
      if (!Overlaps(r, requests[p.index])) continue;
      if (candidate + size <= p.offset) break;
      candidate = std::max(candidate, p.offset + p.size);
    }
    plan.offsets[idx] = candidate;
    plan.arena_bytes = std::max(plan.arena_bytes, candidate + size);
    Placed np{candidate, size, idx};
    placed.insert(std::upper_bound(placed.begin(), placed.end(), np,
                                   [](const Placed& a, const Placed& b) {
                                     return a.offset < b.offset;
                                   }),
                  np);
  }
  return plan;
}

std::string CheckMemoryPlan(const std::vector<BufferRequest>& requests, const MemoryPlan& plan) {
  for (size_t i = 0; i < requests.size(); ++i) {
    if (plan.offsets[i] % kBufferAlignment != 0) return "buffer " + std::to_string(i) + " misaligned";
    if (plan.offsets[i] + requests[i].bytes > plan.arena_bytes) {
      return "buffer " + std::to_string(i) + " outside the arena";
    }
    for (size_t j = i + 1; j < requests.size(); ++j) {
      if (!Overlaps(requests[i], requests[j])) continue;
      size_t a0 = plan.offsets[i], a1 = a0 + requests[i].bytes;
      size_t b0 = plan.offsets[j], b1 = b0 + requests[j].bytes;
      if (a0 < b1 && b0 < a1) {
        return "buffers " + std::to_string(i) + " and " + std::to_string(j) +
               " are live together and overlap";
      }
    }
  }
  return "";
}

}  // namespace tg
