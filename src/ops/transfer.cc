// Transfer op family: where values live. checkpoint marks a forward value to keep for the
// backward pass (the recompute pass recomputes the others: passes/recompute.cc); it is a
// view, free at run time. stop_gradient (torch's detach) is a view no gradient flows through. stage_copy is the explicit move of a tensor from one device
// (pipeline stage) to another. Model-parallel programs get one wherever a node reads a value produced
// on another device (parallel/stage_copies.h), so the memory planner, the profile and the IR
// text all see inter-stage traffic. On host-memory devices it is a copy; its gradient is the
// copy back. Not elementwise: fusion never merges it into another device's kernel.
#include <cstring>

#include "ops/builder.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

KernelFactory CopyFactory() {
  return [](const Node& n) -> Kernel {
    size_t bytes = n.output(0)->type().bytes();
    return [bytes](const KernelArgs& a) {
      if (bytes > 0 && a.outputs[0] != a.inputs[0]) std::memcpy(a.outputs[0], a.inputs[0], bytes);
    };
  };
}

}  // namespace

void RegisterTransferOps(OpRegistry& r) {
  {
    OpDef d;
    d.name = "checkpoint";
    d.traits.half_native = true;  // moves elements: any dtype
    d.doc = "x, kept for the backward pass; values between checkpoints are recomputed.";
    d.infer = [](const InferContext& c) -> std::vector<TensorType> { return {c.in(0)}; };
    d.grad = [](const GradContext& g) -> std::vector<Value*> { return {g.GO(0)}; };
    d.traits.view = true;
    d.kernels[DeviceKind::kCpu] = CopyFactory();
    d.kernels[DeviceKind::kReference] = CopyFactory();
    OpSample s;
    s.inputs = {TensorType{DType::kF32, {2, 3}}};
    d.samples = {s};
    r.Register(std::move(d));
  }
  {
    OpDef d;
    d.name = "stop_gradient";
    d.traits.half_native = true;  // moves elements: any dtype
    d.doc = "x, through which no gradient flows (torch's detach).";
    d.infer = [](const InferContext& c) -> std::vector<TensorType> { return {c.in(0)}; };
    d.grad = [](const GradContext&) -> std::vector<Value*> { return {nullptr}; };
    d.stops_gradient = true;
    d.traits.view = true;
    d.kernels[DeviceKind::kCpu] = CopyFactory();
    d.kernels[DeviceKind::kReference] = CopyFactory();
    OpSample s;
    s.inputs = {TensorType{DType::kF32, {2, 3}}};
    s.skip_grad_check = true;  // zero by definition (Autodiff.StopGradientBlocksTheGradient)
    d.samples = {s};
    r.Register(std::move(d));
  }
  OpDef d;
  d.name = "stage_copy";
  d.traits.half_native = true;  // moves elements: any dtype
  d.attrs = {{"from_stage", std::nullopt}, {"to_stage", std::nullopt}};
  d.doc = "x moved from device `from_stage` to device `to_stage` (model parallelism).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    TG_CHECK(GetInt(c.attrs, "from_stage") >= 0 && GetInt(c.attrs, "to_stage") >= 0, kShape,
             "stage_copy: expected non-negative stages");
    return {c.in(0)};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    return {b.Op1("stage_copy", {g.GO(0)},
                  {{"from_stage", GetInt(g.attrs(), "to_stage")},
                   {"to_stage", GetInt(g.attrs(), "from_stage")}})};
  };
  d.kernels[DeviceKind::kCpu] = CopyFactory();
  d.kernels[DeviceKind::kReference] = CopyFactory();
  OpSample s;
  s.inputs = {TensorType{DType::kF32, {3, 4}}};
  s.attrs = {{"from_stage", int64_t{0}}, {"to_stage", int64_t{1}}};
  d.samples = {s};
  r.Register(std::move(d));
}

}  // namespace tg
