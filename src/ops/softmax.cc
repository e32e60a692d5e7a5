// Softmax op family: softmax and log_softmax over one axis (numerically stable), and their
// backward ops computed from the forward output. Kernels: kernels/cpu/softmax_kernels.h.
#include "kernels/cpu/softmax_kernels.h"
#include "ops/axes_util.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

cpu::SoftmaxDims DimsOf(const TensorType& t, const AttrMap& attrs, const std::string& op) {
  if (t.rank() == 0) return {};
  AxisSplit s = SplitAt(t.shape, AxisAttr(GetInt(attrs, "axis"), t.rank(), op));
  return {s.outer, s.dim, s.inner};
}

KernelFactory ForwardFactory(bool log, bool reference) {
  return [log, reference](const Node& n) -> Kernel {
    const TensorType& x = n.input(0)->type();
    cpu::SoftmaxDims dims = DimsOf(x, n.attrs(), n.op());
    DType dtype = x.dtype;
    std::string op = n.op();
    return [=](const KernelArgs& a) {
      DispatchFloat(dtype, op, [&](auto t) {
        using T = decltype(t);
        auto* in = static_cast<const T*>(a.inputs[0]);
        auto* out = static_cast<T*>(a.outputs[0]);
        if (reference) cpu::SoftmaxRef(in, out, dims, log);
        else cpu::Softmax(in, out, dims, log);
      });
    };
  };
}

KernelFactory BackwardFactory(bool log, bool reference) {
  return [log, reference](const Node& n) -> Kernel {
    const TensorType& y = n.input(1)->type();
    cpu::SoftmaxDims dims = DimsOf(y, n.attrs(), n.op());
    DType dtype = y.dtype;
    std::string op = n.op();
    return [=](const KernelArgs& a) {
      DispatchFloat(dtype, op, [&](auto t) {
        using T = decltype(t);
        auto* go = static_cast<const T*>(a.inputs[0]);
        auto* yv = static_cast<const T*>(a.inputs[1]);
        auto* gx = static_cast<T*>(a.outputs[0]);
        if (reference) cpu::SoftmaxBackwardRef(go, yv, gx, dims, log);
        else cpu::SoftmaxBackward(go, yv, gx, dims, log);
      });
    };
  };
}

OpSample Sample(std::vector<Shape> shapes, int64_t axis, bool skip_grad = false) {
  OpSample s;
  for (Shape& sh : shapes) s.inputs.push_back({DType::kF32, sh});
  s.attrs = {{"axis", axis}};
  s.skip_grad_check = skip_grad;
  return s;
}

void RegisterForward(OpRegistry& r, bool log) {
  OpDef d;
  d.name = log ? "log_softmax" : "softmax";
  d.attrs = {{"axis", Attr(int64_t{-1})}};
  d.doc = log ? "log(softmax(x)) along `axis`, computed as x - logsumexp(x)."
              : "exp(x) / sum(exp(x)) along `axis` (max-subtracted).";
  std::string name = d.name;
  d.infer = [name](const InferContext& c) -> std::vector<TensorType> {
    CheckFloating(c.in(0), name, "input");
    AxisAttr(GetInt(c.attrs, "axis"), c.in(0).rank(), name);
    return {c.in(0)};
  };
  std::string backward = name + "_backward";
  d.grad = [backward](const GradContext& g) -> std::vector<Value*> {
    return {g.b().Op1(backward, {g.GO(0), g.O(0)}, {{"axis", GetInt(g.attrs(), "axis")}})};
  };
  d.kernels[DeviceKind::kCpu] = ForwardFactory(log, false);
  d.kernels[DeviceKind::kReference] = ForwardFactory(log, true);
  d.samples = {Sample({{3, 5}}, -1), Sample({{2, 4, 3}}, 1), Sample({{2, 3, 4}}, 0),
               Sample({{6}}, 0), Sample({{16, 1000}}, -1, true), Sample({{8, 100, 9}}, 1, true)};
  r.Register(std::move(d));
}

void RegisterBackward(OpRegistry& r, bool log) {
  OpDef d;
  d.name = log ? "log_softmax_backward" : "softmax_backward";
  d.attrs = {{"axis", Attr(int64_t{-1})}};
  d.doc = log ? "Gradient of log_softmax from (GO, y): GO - exp(y) * sum(GO)."
              : "Gradient of softmax from (GO, y): y * (GO - sum(GO * y)).";
  std::string name = d.name;
  d.num_inputs = 2;
  d.infer = [name](const InferContext& c) -> std::vector<TensorType> {
    CheckFloating(c.in(1), name, "y");
    TG_CHECK(c.in(0) == c.in(1), kShape, name, ": expected a gradient of type ",
             c.in(1).ToString(), ", got ", c.in(0).ToString());
    AxisAttr(GetInt(c.attrs, "axis"), c.in(1).rank(), name);
    return {c.in(1)};
  };
  d.not_differentiable = true;
  d.kernels[DeviceKind::kCpu] = BackwardFactory(log, false);
  d.kernels[DeviceKind::kReference] = BackwardFactory(log, true);
  d.samples = {Sample({{3, 5}, {3, 5}}, -1), Sample({{2, 4, 3}, {2, 4, 3}}, 1),
               Sample({{16, 1000}, {16, 1000}}, 1)};
  r.Register(std::move(d));
}

}  // namespace

void RegisterSoftmaxOps(OpRegistry& r) {
  RegisterForward(r, false);
  RegisterForward(r, true);
  RegisterBackward(r, false);
  RegisterBackward(r, true);
}

}  // namespace tg
