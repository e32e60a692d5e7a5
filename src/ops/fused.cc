// TODO(owner): ops of this family.
#include "ops/families.h"

namespace tg {

void RegisterFusedOps(OpRegistry& r) { (void)r; }

}  // namespace tg
