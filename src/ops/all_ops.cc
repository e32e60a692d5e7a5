// RegisterAllOps: the one place that lists the op families.
#include "ops/families.h"

namespace tg {

void RegisterAllOps(OpRegistry& registry) {
  RegisterElementwiseOps(registry);
  RegisterRandomOps(registry);
  RegisterFusedOps(registry);
  RegisterMatmulOps(registry);
  RegisterConvOps(registry);
  RegisterConvEpilogueOps(registry);
  RegisterPoolOps(registry);
  RegisterNormOps(registry);
  RegisterReduceOps(registry);
  RegisterSoftmaxOps(registry);
  RegisterShapeOps(registry);
  RegisterIndexOps(registry);
  RegisterLossOps(registry);
  RegisterCtcOps(registry);
  RegisterPointCloudOps(registry);
  RegisterRecurrentOps(registry);
  RegisterCollectiveOps(registry);
  RegisterTransferOps(registry);
  RegisterCheckOps(registry);
  RegisterPadOps(registry);
  RegisterBlockedLayoutOps(registry);
  RegisterScanOps(registry);
  RegisterSortOps(registry);
  RegisterAttentionOps(registry);
  RegisterLinalgOps(registry);
}

}  // namespace tg
