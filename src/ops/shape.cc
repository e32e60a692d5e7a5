// TODO(owner): ops of this family.
#include "ops/families.h"

namespace tg {

void RegisterShapeOps(OpRegistry& r) { (void)r; }

}  // namespace tg
