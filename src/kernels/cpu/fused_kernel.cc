// The fused elementwise kernel (see fused_kernel.h).
#include "kernels/cpu/fused_kernel.h"

#include <cstring>

#include "kernels/cpu/elementwise_kernels.h"
#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

enum class LoadKind { kDirect, kScalar, kContiguous, kBroadcast };

struct PreparedLoad {
  LoadKind kind;
  const void* src;
  BroadcastPlan plan;
};

}  // namespace

template <typename T>
void RunFused(const FusedProgram<T>& p, const void* const* inputs, void* const* outputs) {
  int64_t numel = 1;
  for (int64_t d : p.shape) numel *= d;
  if (numel == 0) return;
  // Classify each load once.
  std::vector<PreparedLoad> loads;
  for (const auto& l : p.loads) {
    PreparedLoad pl{LoadKind::kBroadcast, l.arg >= 0 ? inputs[l.arg] : l.constant, {}};
    int64_t n = 1;
    for (int64_t d : l.shape) n *= d;
    if (n == 1) {
      pl.kind = LoadKind::kScalar;
    } else if (n == numel) {
      pl.kind = l.is_bool ? LoadKind::kContiguous : LoadKind::kDirect;
    } else {
      pl.plan = MakeBroadcastPlan(p.shape, {l.shape});
    }
    loads.push_back(std::move(pl));
  }
  const int64_t blocks = (numel + kFusedBlock - 1) / kFusedBlock;
  ParallelFor(blocks, 32, [&](int64_t b0, int64_t b1) {
    std::vector<T> buf(static_cast<size_t>(p.num_slots) * kFusedBlock);
    std::vector<const T*> slot(p.num_slots, nullptr);
    std::vector<const T*> args;
    auto slot_buf = [&](int s) { return buf.data() + static_cast<int64_t>(s) * kFusedBlock; };
    // Scalars are the same for every block: fill them once.
    for (size_t i = 0; i < loads.size(); ++i) {
      if (loads[i].kind != LoadKind::kScalar) continue;
      const auto& l = p.loads[i];
      T v = l.is_bool ? T(*static_cast<const bool*>(loads[i].src) ? 1 : 0)
                      : *static_cast<const T*>(loads[i].src);
      T* dst = slot_buf(l.slot);
      for (int64_t j = 0; j < kFusedBlock; ++j) dst[j] = v;
      slot[l.slot] = dst;
    }
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t start = blk * kFusedBlock;
      const int64_t n = std::min(kFusedBlock, numel - start);
      for (size_t i = 0; i < loads.size(); ++i) {
        const auto& l = p.loads[i];
        const PreparedLoad& pl = loads[i];
        T* dst = slot_buf(l.slot);
        switch (pl.kind) {
          case LoadKind::kScalar: break;
          case LoadKind::kDirect: slot[l.slot] = static_cast<const T*>(pl.src) + start; break;
          case LoadKind::kContiguous: {
            const bool* src = static_cast<const bool*>(pl.src) + start;
            for (int64_t j = 0; j < n; ++j) dst[j] = src[j] ? T(1) : T(0);
            slot[l.slot] = dst;
            break;
          }
          case LoadKind::kBroadcast:
            if (l.is_bool) {
              GatherRun(static_cast<const bool*>(pl.src), pl.plan, start, n, dst);
            } else {
              GatherRun(static_cast<const T*>(pl.src), pl.plan, start, n, dst);
            }
            slot[l.slot] = dst;
            break;
        }
      }
      for (const auto& s : p.steps) {
        args.clear();
        for (int in : s.in_slots) args.push_back(slot[in]);
        T* out = slot_buf(s.out_slot);
        s.fn(args.data(), out, n, s.params.data());
        slot[s.out_slot] = out;
      }
      for (const auto& s : p.stores) {
        const T* src = slot[s.slot];
        if (s.is_bool) {
          bool* dst = static_cast<bool*>(outputs[s.arg]) + start;
          for (int64_t j = 0; j < n; ++j) dst[j] = src[j] != T(0);
        } else {
          std::memcpy(static_cast<T*>(outputs[s.arg]) + start, src, n * sizeof(T));
        }
      }
    }
  });
}

template void RunFused<float>(const FusedProgram<float>&, const void* const*, void* const*);
template void RunFused<double>(const FusedProgram<double>&, const void* const*, void* const*);

}  // namespace tg::cpu
