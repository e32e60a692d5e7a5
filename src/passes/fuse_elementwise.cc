// TODO(owner): elementwise fusion. Placeholder: a pass that changes nothing.
#include "passes/passes.h"

namespace tg {
namespace {
class FuseElementwisePass : public Pass {
 public:
  std::string name() const override { return "fuse-elementwise"; }
  bool Run(Graph&, PassContext&) override { return false; }
};
}  // namespace

std::unique_ptr<Pass> CreateFuseElementwisePass() { return std::make_unique<FuseElementwisePass>(); }

}  // namespace tg
