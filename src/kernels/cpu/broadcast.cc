// Broadcast strides and plans (see broadcast.h).
#include "kernels/cpu/broadcast.h"

#include "support/error.h"

namespace tg::cpu {

Dims BroadcastStrides(const Dims& in, const Dims& out) {
  TG_ASSERT(in.size() <= out.size(), "broadcast to a lower rank");
  Dims strides(out.size(), 0);
  size_t lead = out.size() - in.size();
  int64_t s = 1;
  for (size_t i = in.size(); i-- > 0;) {
    TG_ASSERT(in[i] == out[lead + i] || in[i] == 1, "shape does not broadcast");
    strides[lead + i] = in[i] == 1 ? 0 : s;
    s *= in[i];
  }
  return strides;
}

BroadcastPlan MakeBroadcastPlan(const Dims& out, const std::vector<Dims>& in_shapes) {
  TG_ASSERT(in_shapes.size() <= 8, "too many broadcast operands");
  BroadcastPlan plan;
  std::vector<Dims> full;
  for (const Dims& s : in_shapes) full.push_back(BroadcastStrides(s, out));
  plan.strides.resize(in_shapes.size());
  for (size_t d = 0; d < out.size(); ++d) {
    plan.numel *= out[d];
    if (out[d] == 1) continue;
    bool merge = !plan.shape.empty();
    for (size_t k = 0; merge && k < full.size(); ++k) {
      merge = plan.strides[k].back() == full[k][d] * out[d];
    }
    if (merge) {
      plan.shape.back() *= out[d];
      for (size_t k = 0; k < full.size(); ++k) plan.strides[k].back() = full[k][d];
    } else {
      plan.shape.push_back(out[d]);
      for (size_t k = 0; k < full.size(); ++k) plan.strides[k].push_back(full[k][d]);
    }
  }
  TG_ASSERT(plan.shape.size() <= 16, "rank too large");
  return plan;
}

}  // namespace tg::cpu
