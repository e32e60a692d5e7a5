// Registry completeness: every op has infer, a gradient (or an explicit no-gradient), CPU and
// reference kernels, a doc line, and at least one test sample; the ops that the engine's
// model families need are all present.
#include <gtest/gtest.h>

#include "ops/registry.h"

namespace tg {
namespace {

TEST(Registry, EveryOpIsComplete) {
  const OpRegistry& r = OpRegistry::Global();
  for (const OpDef* def : r.All()) {
    SCOPED_TRACE(def->name);
    EXPECT_TRUE(def->infer != nullptr);
    EXPECT_TRUE(def->grad != nullptr || def->not_differentiable);
    EXPECT_TRUE(def->kernels.count(DeviceKind::kCpu) && def->kernels.at(DeviceKind::kCpu));
    EXPECT_TRUE(def->kernels.count(DeviceKind::kReference) &&
                def->kernels.at(DeviceKind::kReference));
    EXPECT_FALSE(def->doc.empty());
    EXPECT_FALSE(def->samples.empty()) << "no test samples: the op would go untested";
    if (!def->not_differentiable && !def->stops_gradient) {
      bool checked = false;
      for (const OpSample& s : def->samples) checked |= !s.skip_grad_check;
      EXPECT_TRUE(checked) << "differentiable op whose gradient no sample checks";
    }
    if (def->traits.elementwise && def->name != "fused_elementwise") {
      EXPECT_TRUE(def->elementwise.has_value()) << "elementwise op without block functions";
    }
  }
}

TEST(Registry, RequiredOpsArePresent) {
  const char* required[] = {
      "add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "rsqrt", "abs", "relu", "gelu",
      "silu", "sigmoid", "tanh", "hardswish", "where", "eq", "ne", "lt", "le", "gt", "ge",
      "cast", "dropout", "matmul", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
      "batch_norm_train", "batch_norm_inference", "layer_norm", "softmax", "log_softmax",
      "embedding", "nll_loss", "reshape", "permute", "expand", "slice", "cat", "gather",
      "index_select", "sum", "mean", "amax", "var", "full", "fused_elementwise"};
  for (const char* name : required) {
    EXPECT_NE(OpRegistry::Global().Find(name), nullptr) << "missing op " << name;
  }
}

}  // namespace
}  // namespace tg
