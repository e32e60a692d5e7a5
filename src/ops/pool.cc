// 2-d pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d and their backward ops, over
// [N,C,H,W] (or [C,H,W]) inputs with PyTorch's output-size and window rules.
#include <string>

#include "kernels/cpu/channel_blocking.h"
#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/pool_kernels.h"
#include "ops/builder.h"
#include "ops/dense_common.h"
#include "support/checked_math.h"
#include "ops/families.h"
#include "ops/plain_copies.h"

namespace tg {
namespace {

using dense::F32;

enum class PoolKind { kMax, kAvg, kAdaptive };

void CheckPoolInput(const Shape& x, const std::string& op) {
  TG_CHECK(x.size() == 3 || x.size() == 4, kShape, op,
           ": expected input of rank 3 [C,H,W] or 4 [N,C,H,W], got ", ShapeToString(x));
}

// PyTorch's pooling_output_shape: with ceil_mode the last window must start inside the input
// or the left padding.
int64_t PoolOutSize(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil, bool ceil) {
  int64_t num = SubChecked(AddChecked(in, MulChecked(2, pad)),
                           AddChecked(MulChecked(dil, SubChecked(k, 1)), 1));
  if (ceil) num = AddChecked(num, stride - 1);
  int64_t out = (num >= 0 ? num / stride : -(AddChecked(SubChecked(0, num), stride - 1) / stride)) + 1;
  if (ceil && MulChecked(out - 1, stride) >= AddChecked(in, pad)) --out;
  return out;
}

// Window parameters of max/avg pooling from x's shape and the attributes.
cpu::Pool2dParams PoolParams(const Shape& x, const AttrMap& attrs, PoolKind kind,
                             const std::string& op) {
  CheckPoolInput(x, op);
  auto k = dense::GetPair(attrs, "kernel_size", op);
  std::vector<int64_t> s = GetInts(attrs, "stride");
  s = s.empty() ? k : dense::GetPair(attrs, "stride", op);
  auto pad = dense::GetPair(attrs, "padding", op);
  std::vector<int64_t> dil{1, 1};
  if (kind == PoolKind::kMax) dil = dense::GetPair(attrs, "dilation", op);
  bool ceil = GetBool(attrs, "ceil_mode");
  TG_CHECK(k[0] > 0 && k[1] > 0 && s[0] > 0 && s[1] > 0 && dil[0] > 0 && dil[1] > 0, kShape,
           op, ": expected positive kernel_size, stride and dilation");
  TG_CHECK(pad[0] >= 0 && pad[1] >= 0 && pad[0] <= k[0] / 2 && pad[1] <= k[1] / 2, kShape, op,
           ": expected padding between 0 and half the kernel size ", ShapeToString(k), ", got ",
           ShapeToString(pad));
  cpu::Pool2dParams p;
  size_t r = x.size();
  p.h = x[r - 2], p.w = x[r - 1];
  p.planes = NumElements(Shape(x.begin(), x.end() - 2));
  p.kh = k[0], p.kw = k[1], p.stride_h = s[0], p.stride_w = s[1];
  p.pad_h = pad[0], p.pad_w = pad[1], p.dil_h = dil[0], p.dil_w = dil[1];
  p.oh = PoolOutSize(p.h, p.kh, p.pad_h, p.stride_h, p.dil_h, ceil);
  p.ow = PoolOutSize(p.w, p.kw, p.pad_w, p.stride_w, p.dil_w, ceil);
  TG_CHECK(p.oh >= 1 && p.ow >= 1, kShape, op, ": input ", ShapeToString(x),
           " is too small for kernel ", ShapeToString(k), ": output size would be [", p.oh, ",",
           p.ow, "]");
  if (kind == PoolKind::kAvg) {
    p.count_include_pad = GetBool(attrs, "count_include_pad");
    // 0: none; any other value divides, as in torch (a negative one too).
    p.divisor_override = GetInt(attrs, "divisor_override");
  }
  return p;
}

cpu::Pool2dParams AdaptiveParams(const Shape& x, const AttrMap& attrs, const std::string& op) {
  CheckPoolInput(x, op);
  auto out = dense::GetPair(attrs, "output_size", op);
  TG_CHECK(out[0] > 0 && out[1] > 0, kShape, op, ": expected positive output_size, got ",
           ShapeToString(out));
  cpu::Pool2dParams p;
  size_t r = x.size();
  p.h = x[r - 2], p.w = x[r - 1];
  TG_CHECK(p.h > 0 && p.w > 0, kShape, op, ": expected non-empty spatial dims, got ",
           ShapeToString(x));
  p.planes = NumElements(Shape(x.begin(), x.end() - 2));
  p.oh = out[0], p.ow = out[1];
  return p;
}

Shape OutShape(const Shape& x, const cpu::Pool2dParams& p) {
  Shape out(x.begin(), x.end() - 2);
  out.push_back(p.oh);
  out.push_back(p.ow);
  return out;
}

// The forward input shape of a node: x itself, or the input_shape attribute of a backward op.
Shape ForwardInputShape(const Node& n) {
  if (n.op() == "max_pool2d" || n.op() == "avg_pool2d" || n.op() == "adaptive_avg_pool2d") {
    return n.input(0)->type().shape;
  }
  if (n.op() == "max_pool2d_backward") return n.input(1)->type().shape;
  return GetInts(n.attrs(), "input_shape");
}

// adaptive_avg_pool2d_backward has no output_size attribute: it is dy's spatial shape.
AttrMap WithOutputSize(AttrMap attrs, const Shape& dy) {
  attrs["output_size"] = std::vector<int64_t>(dy.end() - 2, dy.end());
  return attrs;
}

// max_pool2d / _backward's attribute "blocked" (absent: false): x, y, dy, dx in oneDNN's
// channel-blocked layout (kernels/cpu/channel_blocking.h), set by block-conv-layout.
bool IsBlocked(const AttrMap& attrs) {
  return GetFlag(attrs, "blocked");
}

void CheckBlockedShape(const AttrMap& attrs, const Shape& x, const std::string& op) {
  TG_CHECK(!IsBlocked(attrs) || (x.size() == 4 && x[1] % 16 == 0), kShape, op,
           ": blocked needs x [N, C, H, W] with C divisible by 16, got ", ShapeToString(x));
}

cpu::Pool2dParams ParamsOfNode(const Node& n, PoolKind kind) {
  Shape x = ForwardInputShape(n);
  if (n.op() == "adaptive_avg_pool2d_backward") {
    return AdaptiveParams(x, WithOutputSize(n.attrs(), n.input(0)->type().shape), n.op());
  }
  if (kind == PoolKind::kAdaptive) return AdaptiveParams(x, n.attrs(), n.op());
  cpu::Pool2dParams p = PoolParams(x, n.attrs(), kind, n.op());
  if (kind == PoolKind::kMax && IsBlocked(n.attrs())) {
    p.block = cpu::ActivationBlock();
    if (GetFlag(n.attrs(), "channels_last")) p.channels_last = x[1];
  }
  return p;
}

void CheckGradShape(const TensorType& go, const Shape& expected, const std::string& op) {
  TG_CHECK(go.shape == expected, kShape, op, ": expected output gradient of shape ",
           ShapeToString(expected), ", got ", go.ToString());
}

// Registers op `name` whose kernel is run(p, args, parallel) for T = float / double.
template <template <typename> class Run>
OpDef PoolDef(const std::string& name, PoolKind kind, int num_inputs) {
  OpDef d;
  d.name = name;
  d.num_inputs = num_inputs;
  auto make = [kind](bool parallel) {
    return [kind, parallel](auto t, const Node& n) -> Kernel {
      using T = decltype(t);
      cpu::Pool2dParams p = ParamsOfNode(n, kind);
      return [p, parallel](const KernelArgs& a) { Run<T>{}(p, a, parallel); };
    };
  };
  d.kernels[DeviceKind::kCpu] = dense::FloatKernel(name, make(true));
  d.kernels[DeviceKind::kReference] = dense::FloatKernel(name, make(false));
  return d;
}

using dense::In;
using dense::Out;
// A blocked max pooling's reference: the NCHW loops on NCHW copies of its inputs (x, or dy
// and x), the result blocked again; an independent check of the blocked kernels the CPU
// runs. `run(p, inputs, out)` runs the NCHW kernel.
template <typename T, typename Run>
void OnPlainCopies(const cpu::Pool2dParams& p, const KernelArgs& a, bool backward, Run run) {
  // (Blocked views regroup [N * C/B] block planes: reblock as n = planes / B images of B
  // channels, which is the same element order; NHWC is one block of all C channels.)
  const int64_t c = p.channels_last > 0 ? p.channels_last : p.block, n = p.planes / c;
  const int64_t x_plane = p.h * p.w, y_plane = p.oh * p.ow;
  std::vector<BlockedOperand> blocked = {{false, backward ? 1 : 0, n, c, x_plane, c},
                                         {true, 0, n, c, backward ? x_plane : y_plane, c}};
  if (backward) blocked.push_back({false, 0, n, c, y_plane, c});
  cpu::Pool2dParams nchw = p;
  nchw.block = 0;
  nchw.channels_last = 0;
  RunOnPlainCopies<T>(a, backward ? 2 : 1, 1, blocked, [&](const KernelArgs& plain) {
    run(nchw, backward ? In<T>(plain, 0) : nullptr, In<T>(plain, backward ? 1 : 0),
        Out<T>(plain, 0));
  });
}

template <typename T>
struct RunMax {
  void operator()(const cpu::Pool2dParams& p, const KernelArgs& a, bool par) {
    if (p.block == 0) return cpu::MaxPool2dForward<T>(p, In<T>(a, 0), Out<T>(a, 0), par);
    if (par) return cpu::MaxPool2dForwardBlocked<T>(p, In<T>(a, 0), Out<T>(a, 0), par);
    OnPlainCopies<T>(p, a, false, [](const cpu::Pool2dParams& q, const T*, const T* x, T* y) {
      cpu::MaxPool2dForward<T>(q, x, y, false);
    });
  }
};
template <typename T>
struct RunMaxBackward {
  void operator()(const cpu::Pool2dParams& p, const KernelArgs& a, bool par) {
    if (p.block == 0) {
      return cpu::MaxPool2dBackward<T>(p, In<T>(a, 0), In<T>(a, 1), Out<T>(a, 0), par);
    }
    if (par) {
      return cpu::MaxPool2dBackwardBlocked<T>(p, In<T>(a, 0), In<T>(a, 1), Out<T>(a, 0), par);
    }
    OnPlainCopies<T>(p, a, true, [](const cpu::Pool2dParams& q, const T* dy, const T* x, T* dx) {
      cpu::MaxPool2dBackward<T>(q, dy, x, dx, false);
    });
  }
};
template <typename T>
struct RunAvg {
  void operator()(const cpu::Pool2dParams& p, const KernelArgs& a, bool par) {
    cpu::AvgPool2dForward<T>(p, In<T>(a, 0), Out<T>(a, 0), par);
  }
};
template <typename T>
struct RunAvgBackward {
  void operator()(const cpu::Pool2dParams& p, const KernelArgs& a, bool par) {
    cpu::AvgPool2dBackward<T>(p, In<T>(a, 0), Out<T>(a, 0), par);
  }
};
template <typename T>
struct RunAdaptive {
  void operator()(const cpu::Pool2dParams& p, const KernelArgs& a, bool par) {
    cpu::AdaptiveAvgPool2dForward<T>(p, In<T>(a, 0), Out<T>(a, 0), par);
  }
};
template <typename T>
struct RunAdaptiveBackward {
  void operator()(const cpu::Pool2dParams& p, const KernelArgs& a, bool par) {
    cpu::AdaptiveAvgPool2dBackward<T>(p, In<T>(a, 0), Out<T>(a, 0), par);
  }
};

// ---- samples -----------------------------------------------------------------------------
using Ints = std::vector<int64_t>;

OpSample MaxSample(Shape x, Ints k, Ints s, Ints pad, Ints dil, bool ceil) {
  OpSample o;
  o.inputs = {F32(x)};
  o.attrs = {{"kernel_size", k}, {"stride", s},        {"padding", pad},
             {"dilation", dil},  {"ceil_mode", ceil}};
  o.init = {InputInit::Uniform(-2, 2)};
  return o;
}

// The blocked layout exists after autodiff only (block-conv-layout): no gradient to check.
OpSample Blocked(OpSample s) {
  s.attrs["blocked"] = true;
  s.skip_grad_check = true;
  return s;
}

OpSample ChannelsLast(OpSample s) {
  s.attrs["channels_last"] = true;
  return s;
}

std::vector<OpSample> MaxSamples() {
  return {MaxSample({1, 2, 5, 5}, {2, 2}, {}, {0, 0}, {1, 1}, false),
          MaxSample({2, 1, 7, 6}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false),
          MaxSample({1, 2, 7, 7}, {3, 3}, {2, 2}, {0, 0}, {1, 1}, true),
          MaxSample({1, 1, 8, 8}, {2, 2}, {1, 1}, {0, 0}, {2, 2}, false),
          MaxSample({1, 2, 6, 5}, {3, 2}, {2, 1}, {1, 1}, {1, 1}, true),
          MaxSample({2, 5, 5}, {2, 2}, {2, 2}, {1, 0}, {1, 1}, true),
          // blocked: tiling 2x2 windows with an odd last row and column, overlapping
          // padded 3x3 / 2 windows (ResNet's stem pool), dilated windows
          Blocked(MaxSample({2, 32, 7, 5}, {2, 2}, {}, {0, 0}, {1, 1}, false)),
          Blocked(MaxSample({1, 16, 7, 6}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true)),
          Blocked(MaxSample({1, 16, 8, 8}, {2, 2}, {1, 1}, {0, 0}, {2, 2}, false)),
          // channels last (NHWC): several lane groups per position, both window kinds
          ChannelsLast(Blocked(MaxSample({2, 48, 7, 6}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true))),
          ChannelsLast(Blocked(MaxSample({1, 32, 7, 5}, {2, 2}, {}, {0, 0}, {1, 1}, false)))};
}

OpSample AvgSample(Shape x, Ints k, Ints s, Ints pad, bool ceil, bool include_pad,
                   int64_t divisor) {
  OpSample o;
  o.inputs = {F32(x)};
  o.attrs = {{"kernel_size", k},   {"stride", s},
             {"padding", pad},     {"ceil_mode", ceil},
             {"count_include_pad", include_pad}, {"divisor_override", divisor}};
  return o;
}

std::vector<OpSample> AvgSamples() {
  return {AvgSample({1, 2, 5, 5}, {2, 2}, {}, {0, 0}, false, true, 0),
          AvgSample({2, 1, 7, 6}, {3, 3}, {2, 2}, {1, 1}, false, true, 0),
          AvgSample({2, 1, 7, 6}, {3, 3}, {2, 2}, {1, 1}, false, false, 0),
          AvgSample({1, 2, 6, 6}, {3, 3}, {2, 2}, {1, 1}, true, true, 0),
          AvgSample({1, 2, 6, 6}, {3, 3}, {2, 2}, {1, 1}, true, false, 0),
          AvgSample({1, 1, 5, 5}, {2, 2}, {1, 1}, {0, 0}, false, true, 3),
          AvgSample({2, 5, 4}, {3, 2}, {2, 1}, {1, 1}, true, true, 0)};
}

std::vector<OpSample> AdaptiveSamples() {
  auto s = [](Shape x, Ints out) {
    OpSample o;
    o.inputs = {F32(x)};
    o.attrs = {{"output_size", out}};
    return o;
  };
  return {s({1, 2, 7, 5}, {3, 2}), s({2, 3, 4, 4}, {2, 2}), s({1, 1, 5, 7}, {1, 1}),
          s({1, 1, 3, 3}, {4, 5}), s({2, 5, 6}, {3, 4})};
}

// Backward samples from forward ones: (GO) or (GO, x) with the forward attrs + input_shape.
std::vector<OpSample> BackwardSamples(const std::vector<OpSample>& fwd, PoolKind kind,
                                      const std::string& op) {
  std::vector<OpSample> out;
  for (const OpSample& f : fwd) {
    Shape x = f.inputs[0].shape;
    cpu::Pool2dParams p = kind == PoolKind::kAdaptive ? AdaptiveParams(x, f.attrs, op)
                                                      : PoolParams(x, f.attrs, kind, op);
    OpSample b = f;
    b.inputs = {F32(OutShape(x, p))};
    b.init = {InputInit::Normal()};
    if (kind == PoolKind::kMax) {
      b.inputs.push_back(F32(x));
      b.init.push_back(InputInit::Uniform(-2, 2));
    } else {
      b.attrs["input_shape"] = x;
    }
    if (kind == PoolKind::kAdaptive) b.attrs.erase("output_size");
    out.push_back(std::move(b));
  }
  return out;
}

std::vector<AttrSpec> MaxAttrs() {
  return {{"kernel_size", std::nullopt},   {"stride", Ints{}}, {"padding", Ints{0, 0}},
          {"dilation", Ints{1, 1}},        {"ceil_mode", false}, {"blocked", false},
          {"channels_last", false}};
}

std::vector<AttrSpec> AvgAttrs() {
  return {{"kernel_size", std::nullopt}, {"stride", Ints{}},
          {"padding", Ints{0, 0}},       {"ceil_mode", false},
          {"count_include_pad", true},   {"divisor_override", int64_t{0}}};
}

void RegisterMax(OpRegistry& r) {
  OpDef f = PoolDef<RunMax>("max_pool2d", PoolKind::kMax, 1);
  f.attrs = MaxAttrs();
  f.infer = [](const InferContext& ctx) -> std::vector<TensorType> {
    dense::CheckSameFloat(ctx, "max_pool2d");
    CheckBlockedShape(ctx.attrs, ctx.in(0).shape, "max_pool2d");
    auto p = PoolParams(ctx.in(0).shape, ctx.attrs, PoolKind::kMax, "max_pool2d");
    return {TensorType{ctx.in(0).dtype, OutShape(ctx.in(0).shape, p)}};
  };
  f.grad = [](const GradContext& c) -> std::vector<Value*> {
    TG_CHECK(!IsBlocked(c.attrs()), kInvalidInput, "max_pool2d with blocked has no gradient "
             "rule (the attribute is set after autodiff, by block-conv-layout)");
    return {c.b().Op1("max_pool2d_backward", {c.GO(0), c.I(0)}, c.attrs())};
  };
  f.samples = MaxSamples();
  f.doc = "y = max over each dilated window of x (padding taps ignored), PyTorch's sizes; "
          "blocked: x and y in the channel-blocked layout (NHWC with channels_last)";
  r.Register(std::move(f));

  OpDef b = PoolDef<RunMaxBackward>("max_pool2d_backward", PoolKind::kMax, 2);
  b.attrs = MaxAttrs();
  b.infer = [](const InferContext& ctx) -> std::vector<TensorType> {
    const std::string op = "max_pool2d_backward";
    dense::CheckSameFloat(ctx, op);
    CheckBlockedShape(ctx.attrs, ctx.in(1).shape, op);
    auto p = PoolParams(ctx.in(1).shape, ctx.attrs, PoolKind::kMax, op);
    CheckGradShape(ctx.in(0), OutShape(ctx.in(1).shape, p), op);
    return {ctx.in(1)};
  };
  b.not_differentiable = true;
  b.samples = BackwardSamples(MaxSamples(), PoolKind::kMax, "max_pool2d_backward");
  b.doc = "dx of max_pool2d from (dy, x): dy routed to each window's first argmax; blocked: "
          "dy, x and dx in the channel-blocked layout";
  r.Register(std::move(b));
}

void RegisterAvg(OpRegistry& r) {
  OpDef f = PoolDef<RunAvg>("avg_pool2d", PoolKind::kAvg, 1);
  f.attrs = AvgAttrs();
  f.infer = [](const InferContext& ctx) -> std::vector<TensorType> {
    dense::CheckSameFloat(ctx, "avg_pool2d");
    auto p = PoolParams(ctx.in(0).shape, ctx.attrs, PoolKind::kAvg, "avg_pool2d");
    return {TensorType{ctx.in(0).dtype, OutShape(ctx.in(0).shape, p)}};
  };
  f.grad = [](const GradContext& c) -> std::vector<Value*> {
    AttrMap attrs = c.attrs();
    attrs["input_shape"] = c.I(0)->type().shape;
    return {c.b().Op1("avg_pool2d_backward", {c.GO(0)}, attrs)};
  };
  f.samples = AvgSamples();
  f.doc = "y = mean over each window of x (count_include_pad, divisor_override as PyTorch)";
  r.Register(std::move(f));

  OpDef b = PoolDef<RunAvgBackward>("avg_pool2d_backward", PoolKind::kAvg, 1);
  b.attrs = AvgAttrs();
  b.attrs.push_back({"input_shape", std::nullopt});
  b.infer = [](const InferContext& ctx) -> std::vector<TensorType> {
    const std::string op = "avg_pool2d_backward";
    dense::CheckSameFloat(ctx, op);
    Shape x = GetInts(ctx.attrs, "input_shape");
    CheckGradShape(ctx.in(0), OutShape(x, PoolParams(x, ctx.attrs, PoolKind::kAvg, op)), op);
    return {TensorType{ctx.in(0).dtype, x}};
  };
  b.not_differentiable = true;
  b.samples = BackwardSamples(AvgSamples(), PoolKind::kAvg, "avg_pool2d_backward");
  b.doc = "dx of avg_pool2d from dy: each window's dy / divisor spread over its taps";
  r.Register(std::move(b));
}

void RegisterAdaptive(OpRegistry& r) {
  OpDef f = PoolDef<RunAdaptive>("adaptive_avg_pool2d", PoolKind::kAdaptive, 1);
  f.attrs = {{"output_size", std::nullopt}};
  f.infer = [](const InferContext& ctx) -> std::vector<TensorType> {
    dense::CheckSameFloat(ctx, "adaptive_avg_pool2d");
    auto p = AdaptiveParams(ctx.in(0).shape, ctx.attrs, "adaptive_avg_pool2d");
    return {TensorType{ctx.in(0).dtype, OutShape(ctx.in(0).shape, p)}};
  };
  f.grad = [](const GradContext& c) -> std::vector<Value*> {
    AttrMap attrs{{"input_shape", c.I(0)->type().shape}};
    return {c.b().Op1("adaptive_avg_pool2d_backward", {c.GO(0)}, attrs)};
  };
  f.samples = AdaptiveSamples();
  f.doc = "y[i,j] = mean of x over rows [floor(i*H/oh), ceil((i+1)*H/oh)) and likewise cols";
  r.Register(std::move(f));

  OpDef b = PoolDef<RunAdaptiveBackward>("adaptive_avg_pool2d_backward", PoolKind::kAdaptive, 1);
  b.attrs = {{"input_shape", std::nullopt}};
  b.infer = [](const InferContext& ctx) -> std::vector<TensorType> {
    const std::string op = "adaptive_avg_pool2d_backward";
    dense::CheckSameFloat(ctx, op);
    Shape x = GetInts(ctx.attrs, "input_shape");
    TG_CHECK(ctx.in(0).rank() == static_cast<int64_t>(x.size()), kShape, op,
             ": expected output gradient of rank ", x.size(), ", got ", ctx.in(0).ToString());
    AttrMap attrs = WithOutputSize(ctx.attrs, ctx.in(0).shape);
    CheckGradShape(ctx.in(0), OutShape(x, AdaptiveParams(x, attrs, op)), op);
    return {TensorType{ctx.in(0).dtype, x}};
  };
  b.not_differentiable = true;
  b.samples = BackwardSamples(AdaptiveSamples(), PoolKind::kAdaptive, "adaptive_avg_pool2d");
  b.doc = "dx of adaptive_avg_pool2d from dy";
  r.Register(std::move(b));
}

}  // namespace

void RegisterPoolOps(OpRegistry& r) {
  RegisterMax(r);
  RegisterAvg(r);
  RegisterAdaptive(r);
}

}  // namespace tg
