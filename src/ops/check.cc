// Check op family: runtime assertions a program makes about its data. assert_all fails the
// step with the user's message (an Error naming the node and the user's line) when any
// element of its bool input is false; its output is that verdict. It has side effects: DCE,
// CSE and constant folding leave it alone (integer division's zero-divisor check, too). PyTorch exports such checks as
// aten._assert_async (one_hot's range check, for example).
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

KernelFactory AssertAllFactory() {
  return [](const Node& n) -> Kernel {
    int64_t count = n.input(0)->type().numel();
    std::string message = GetString(n.attrs(), "message");
    const bool runtime = GetInt(n.attrs(), "runtime_error") != 0;
    return [count, message, runtime](const KernelArgs& a) {
      const bool* x = static_cast<const bool*>(a.inputs[0]);
      bool all = true;
      for (int64_t i = 0; i < count && all; ++i) all = x[i];
      *static_cast<bool*>(a.outputs[0]) = all;
      if (runtime) {
        TG_CHECK(all, kRuntime, message);
      } else {
        TG_CHECK(all, kInvalidInput, "assertion failed: ", message);
      }
    };
  };
}

}  // namespace

void RegisterCheckOps(OpRegistry& r) {
  OpDef d;
  d.name = "assert_all";
  // runtime_error: fail as torch's kernels do (a RuntimeError, e.g. "ZeroDivisionError"),
  // rather than as a failed data check of the model's (a ValueError: "assertion failed").
  d.attrs = {{"message", std::string("assertion failed")}, {"runtime_error", int64_t{0}}};
  d.doc = "all(x), failing the step with `message` when it is false";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    TG_CHECK(c.in(0).dtype == DType::kBool, kShape, "assert_all: expected a bool tensor, got ",
             c.in(0).ToString());
    return {TensorType{DType::kBool, {}}};
  };
  d.not_differentiable = true;
  d.traits.side_effects = true;
  d.kernels[DeviceKind::kCpu] = AssertAllFactory();
  d.kernels[DeviceKind::kReference] = AssertAllFactory();
  OpSample s;  // all true: the check passes
  s.inputs = {TensorType{DType::kBool, {2, 3}}};
  s.init = {InputInit::Values({1, 1, 1, 1, 1, 1})};
  s.attrs = {{"message", std::string("sample")}};
  d.samples = {s};
  r.Register(std::move(d));
}

}  // namespace tg
