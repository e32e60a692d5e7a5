// Static memory planning: given buffers with sizes and live intervals over the schedule,
// assign each an offset in one arena so that no two buffers that are live at the same time
// overlap. Greedy by size (largest first, lowest fitting offset), the classic offline
// heuristic; intervals are inclusive on both ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tg {

struct BufferRequest {
  size_t bytes = 0;
  int64_t first = 0;  // schedule position of the definition
  int64_t last = 0;   // last position at which the buffer is read (>= first)
};

struct MemoryPlan {
  std::vector<size_t> offsets;  // per request
  size_t arena_bytes = 0;       // planned peak
  size_t naive_bytes = 0;       // sum of all buffers (no reuse)
};

constexpr size_t kBufferAlignment = 64;

MemoryPlan PlanMemory(const std::vector<BufferRequest>& requests);

// Checks the plan: every pair of buffers live at the same time is disjoint and inside the
// arena. Returns an empty string when valid, else a description of the first conflict.
std::string CheckMemoryPlan(const std::vector<BufferRequest>& requests, const MemoryPlan& plan);

}  // namespace tg
