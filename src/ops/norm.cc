// Normalization ops: batch_norm_train (batch statistics), batch_norm_inference (running
// statistics), layer_norm, and the dedicated backward ops batch_norm_backward and
// layer_norm_backward. Statistics are computed in double by the kernels.
#include <string>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/channel_blocking.h"
#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/norm_kernels.h"
#include "ops/builder.h"
#include "ops/dense_common.h"
#include "ops/families.h"
#include "ops/plain_copies.h"

namespace tg {
namespace {

using dense::F32;
using dense::In;
using dense::Out;

// ---- shapes ------------------------------------------------------------------------------

// Batch norm views x as [N, C, S]; x needs rank >= 2.
cpu::BatchNormParams BatchNormParamsOf(const Shape& x, const std::string& op) {
  TG_CHECK(x.size() >= 2, kShape, op, ": expected input of rank >= 2 [N,C,...], got ",
           ShapeToString(x));
  cpu::BatchNormParams p;
  p.n = x[0];
  p.c = x[1];
  p.s = NumElements(Shape(x.begin() + 2, x.end()));
  return p;
}

// batch_norm_train / _backward's attribute "blocked" (absent: false): x, y, dy, dx in oneDNN's
// channel-blocked layout (kernels/cpu/channel_blocking.h), set by block-conv-layout.
bool IsBlocked(const AttrMap& attrs) {
  return GetFlag(attrs, "blocked");
}

void CheckBlockedShape(const AttrMap& attrs, const Shape& x, const std::string& op) {
  TG_CHECK(!IsBlocked(attrs) || (x.size() == 4 && x[1] % 16 == 0), kShape, op,
           ": blocked needs x [N, C, H, W] with C divisible by 16, got ", ShapeToString(x));
}

void CheckChannelVector(const TensorType& t, int64_t c, const std::string& op, const char* what) {
  TG_CHECK(t.shape == Shape{c}, kShape, op, ": expected ", what, " of shape [", c, "], got ",
           t.ToString());
}

// Shape [1, C, 1, ...] of x's rank: per-channel values broadcast against x.
Shape ChannelBroadcastShape(const Shape& x) {
  Shape s(x.size(), 1);
  s[1] = x[1];
  return s;
}

int64_t NormalizedNdim(const AttrMap& attrs, const Shape& x, const std::string& op) {
  int64_t nd = GetInt(attrs, "normalized_ndim");
  TG_CHECK(nd >= 1 && nd <= static_cast<int64_t>(x.size()), kShape, op,
           ": expected normalized_ndim in [1, ", x.size(), "] for input ", ShapeToString(x),
           ", got ", nd);
  return nd;
}

// The activation epilogue of a layer_norm (attribute "activation"; absent: none).
cpu::Activation LayerNormActivation(const AttrMap& attrs, const std::string& op) {
  cpu::Activation act = cpu::Activation::kNone;
  if (!HasAttr(attrs, "activation")) return act;
  const std::string& name = GetString(attrs, "activation");
  TG_CHECK(cpu::ActivationFromName(name, &act), kShape, op,
           ": expected activation none, relu, gelu, gelu_tanh, silu, sigmoid or hardswish, got "
           "\"", name, "\"");
  return act;
}

// Layer norm views x as [rows, d] with d = product of the last normalized_ndim dims.
cpu::LayerNormParams LayerNormParamsOf(const Shape& x, int64_t nd) {
  cpu::LayerNormParams p;
  p.d = NumElements(Shape(x.end() - nd, x.end()));
  p.rows = NumElements(Shape(x.begin(), x.end() - nd));
  return p;
}

Shape RowShape(const Shape& x, int64_t nd) { return Shape(x.begin(), x.end() - nd); }
Shape NormShape(const Shape& x, int64_t nd) { return Shape(x.end() - nd, x.end()); }

// Shape x.shape[:-nd] + [1]*nd: per-row values broadcast against x.
Shape RowBroadcastShape(const Shape& x, int64_t nd) {
  Shape s = RowShape(x, nd);
  s.resize(x.size(), 1);
  return s;
}

// ---- grads -------------------------------------------------------------------------------

// Gradient reaching x through the statistics outputs (mean, and a 1/sqrt(var+eps) output
// `rstd` and / or the variance itself): d mean/dx = 1/M, d var/dx = 2 (x - mean) / M,
// d rstd/d var = -rstd^3 / 2. Returns null when none of the statistics has a gradient.
Value* StatisticsGrad(Builder& b, Value* x, Value* mean, Value* rstd, Value* g_mean,
                      Value* g_rstd, Value* g_var, const Shape& bshape, double count) {
  Value* g_v = g_var;
  if (g_rstd != nullptr) {
    Value* r3 = b.Mul(b.Mul(rstd, rstd), rstd);
    Value* t = b.MulScalar(b.Mul(g_rstd, r3), -0.5);
    g_v = g_v ? b.Add(g_v, t) : t;
  }
  Value* dx = nullptr;
  if (g_mean != nullptr) {
    dx = b.Expand(b.MulScalar(b.Reshape(g_mean, bshape), 1.0 / count), x->type().shape);
  }
  if (g_v != nullptr) {
    Value* centered = b.Sub(x, b.Reshape(mean, bshape));
    Value* t = b.Mul(centered, b.MulScalar(b.Reshape(g_v, bshape), 2.0 / count));
    dx = dx ? b.Add(dx, t) : t;
  }
  return dx;
}

Value* AddMaybe(Builder& b, Value* a, Value* c) {
  if (a == nullptr) return c;
  if (c == nullptr) return a;
  return b.Add(a, c);
}

std::vector<Value*> GradBatchNormTrain(const GradContext& c) {
  TG_CHECK(!IsBlocked(c.attrs()), kInvalidInput, "batch_norm_train with blocked has no gradient "
           "rule (the attribute is set after autodiff, by block-conv-layout)");
  Builder& b = c.b();
  Value *x = c.I(0), *w = c.I(1);
  Value *dx = nullptr, *dw = nullptr, *db = nullptr;
  if (c.GO(0) != nullptr) {
    auto g = b.Op("batch_norm_backward", {c.GO(0), x, w, c.O(1), c.O(2)},
                  {{"eps", GetFloat(c.attrs(), "eps")}});
    dx = g[0], dw = g[1], db = g[2];
  }
  const Shape& xs = x->type().shape;
  double count = static_cast<double>(NumElements(xs) / xs[1]);
  Value* stats = StatisticsGrad(b, x, c.O(1), c.O(2), c.GO(1), c.GO(2), c.GO(3),
                                ChannelBroadcastShape(xs), count);
  return {AddMaybe(b, dx, stats), dw, db};
}

std::vector<Value*> GradBatchNormInference(const GradContext& c) {
  Builder& b = c.b();
  Value *x = c.I(0), *w = c.I(1), *rm = c.I(3), *rv = c.I(4), *go = c.GO(0);
  const Shape& xs = x->type().shape;
  Shape bshape = ChannelBroadcastShape(xs), cshape{xs[1]};
  Value* rs = b.Rsqrt(b.AddScalar(rv, GetFloat(c.attrs(), "eps")));
  Value* dx = b.Mul(go, b.Reshape(b.Mul(w, rs), bshape));
  Value* xhat = b.Mul(b.Sub(x, b.Reshape(rm, bshape)), b.Reshape(rs, bshape));
  Value* dw = b.Reshape(b.SumToShape(b.Mul(go, xhat), bshape), cshape);
  Value* db = b.Reshape(b.SumToShape(go, bshape), cshape);
  // Running statistics are normally non-trainable (then these nodes are dead code), but the
  // rule stays exact for them: dy/drm = -w*rs, dy/drv = -(x-rm) * w * rs^3 / 2.
  Value* scale = b.Mul(w, rs);
  Value* drm = b.Neg(b.Mul(db, scale));
  Value* drv = b.MulScalar(b.Mul(dw, b.Mul(scale, rs)), -0.5);
  return {dx, dw, db, drm, drv};
}

std::vector<Value*> GradLayerNorm(const GradContext& c) {
  TG_CHECK(!HasAttr(c.attrs(), "activation") || GetString(c.attrs(), "activation") == "none",
           kUnsupported, "layer_norm: no gradient with an activation epilogue (made after "
           "autodiff, by fuse-norm-activation)");
  Builder& b = c.b();
  Value *x = c.I(0), *w = c.I(1);
  int64_t nd = GetInt(c.attrs(), "normalized_ndim");
  Value *dx = nullptr, *dw = nullptr, *db = nullptr;
  if (c.GO(0) != nullptr) {
    auto g = b.Op("layer_norm_backward", {c.GO(0), x, w, c.O(1), c.O(2)},
                  {{"normalized_ndim", nd}});
    dx = g[0], dw = g[1], db = g[2];
  }
  const Shape& xs = x->type().shape;
  double count = static_cast<double>(NumElements(NormShape(xs, nd)));
  Value* stats = StatisticsGrad(b, x, c.O(1), c.O(2), c.GO(1), c.GO(2), nullptr,
                                RowBroadcastShape(xs, nd), count);
  return {AddMaybe(b, dx, stats), dw, db};
}

// ---- infer -------------------------------------------------------------------------------

// Batch norm's x (input `x_index`) in a half dtype with f32 parameters: an f32 model's half
// activation (mixed precision), the cast to f32 folded into the kernel (fold-norm-casts).
bool HalfActivation(const InferContext& ctx, size_t x_index) {
  return IsHalf(ctx.in(x_index).dtype) && ctx.in(x_index == 0 ? 1 : 0).dtype == DType::kF32;
}

// Every input in one floating dtype, or x half and the rest f32 (HalfActivation), not blocked.
void CheckBatchNormDtypes(const InferContext& ctx, size_t x_index, const std::string& op) {
  if (!HalfActivation(ctx, x_index)) return dense::CheckSameFloat(ctx, op);
  for (size_t i = 0; i < ctx.inputs.size(); ++i) {
    if (i == x_index) continue;
    TG_CHECK(ctx.in(i).dtype == DType::kF32, kShape, op, ": with a ",
             DTypeName(ctx.in(x_index).dtype), " x, expected input ", i, " of dtype f32, got ",
             ctx.in(i).ToString());
  }
  TG_CHECK(!IsBlocked(ctx.attrs), kShape, op, ": blocked needs x of the parameters' dtype, got ",
           ctx.in(x_index).ToString());
}

std::vector<TensorType> InferBatchNormTrain(const InferContext& ctx) {
  const std::string op = "batch_norm_train";
  CheckBatchNormDtypes(ctx, 0, op);
  auto p = BatchNormParamsOf(ctx.in(0).shape, op);
  CheckBlockedShape(ctx.attrs, ctx.in(0).shape, op);
  CheckChannelVector(ctx.in(1), p.c, op, "weight");
  CheckChannelVector(ctx.in(2), p.c, op, "bias");
  TensorType stat{ctx.in(1).dtype, {p.c}};
  return {{ctx.in(1).dtype, ctx.in(0).shape}, stat, stat, stat};
}

std::vector<TensorType> InferBatchNormInference(const InferContext& ctx) {
  const std::string op = "batch_norm_inference";
  dense::CheckSameFloat(ctx, op);
  auto p = BatchNormParamsOf(ctx.in(0).shape, op);
  CheckChannelVector(ctx.in(1), p.c, op, "weight");
  CheckChannelVector(ctx.in(2), p.c, op, "bias");
  CheckChannelVector(ctx.in(3), p.c, op, "running_mean");
  CheckChannelVector(ctx.in(4), p.c, op, "running_var");
  return {ctx.in(0)};
}

std::vector<TensorType> InferBatchNormBackward(const InferContext& ctx) {
  const std::string op = "batch_norm_backward";
  CheckBatchNormDtypes(ctx, 1, op);
  auto p = BatchNormParamsOf(ctx.in(1).shape, op);
  CheckBlockedShape(ctx.attrs, ctx.in(1).shape, op);
  TG_CHECK(ctx.in(0).shape == ctx.in(1).shape, kShape, op,
           ": expected output gradient of x's shape ", ShapeToString(ctx.in(1).shape), ", got ",
           ctx.in(0).ToString());
  CheckChannelVector(ctx.in(2), p.c, op, "weight");
  CheckChannelVector(ctx.in(3), p.c, op, "mean");
  CheckChannelVector(ctx.in(4), p.c, op, "invstd");
  TensorType stat{ctx.in(0).dtype, {p.c}};
  return {ctx.in(1), stat, stat};
}

void CheckLayerNormParams(const InferContext& ctx, size_t w_index, const Shape& x, int64_t nd,
                          const std::string& op) {
  Shape ns = NormShape(x, nd);
  TG_CHECK(ctx.in(w_index).shape == ns, kShape, op, ": expected weight of shape ",
           ShapeToString(ns), " (the last ", nd, " dims of ", ShapeToString(x), "), got ",
           ctx.in(w_index).ToString());
}

std::vector<TensorType> InferLayerNorm(const InferContext& ctx) {
  const std::string op = "layer_norm";
  dense::CheckSameFloat(ctx, op);
  LayerNormActivation(ctx.attrs, op);  // a known name
  const Shape& x = ctx.in(0).shape;
  int64_t nd = NormalizedNdim(ctx.attrs, x, op);
  CheckLayerNormParams(ctx, 1, x, nd, op);
  TG_CHECK(ctx.in(2).shape == NormShape(x, nd), kShape, op, ": expected bias of shape ",
           ShapeToString(NormShape(x, nd)), ", got ", ctx.in(2).ToString());
  TensorType stat{ctx.in(0).dtype, RowShape(x, nd)};
  return {ctx.in(0), stat, stat};
}

std::vector<TensorType> InferLayerNormBackward(const InferContext& ctx) {
  const std::string op = "layer_norm_backward";
  dense::CheckSameFloat(ctx, op);
  const Shape& x = ctx.in(1).shape;
  int64_t nd = NormalizedNdim(ctx.attrs, x, op);
  TG_CHECK(ctx.in(0).shape == x, kShape, op, ": expected output gradient of x's shape ",
           ShapeToString(x), ", got ", ctx.in(0).ToString());
  CheckLayerNormParams(ctx, 2, x, nd, op);
  for (size_t i : {size_t{3}, size_t{4}}) {
    TG_CHECK(ctx.in(i).shape == RowShape(x, nd), kShape, op, ": expected ",
             i == 3 ? "mean" : "rstd", " of shape ", ShapeToString(RowShape(x, nd)), ", got ",
             ctx.in(i).ToString());
  }
  TensorType w{ctx.in(0).dtype, NormShape(x, nd)};
  return {ctx.in(1), w, w};
}

// ---- kernels -----------------------------------------------------------------------------

// Kernel factories for the CPU (parallel) and reference (serial) variants of one op:
// run(T{}, params, args, parallel).
template <typename Params, typename MakeParams, typename Run>
void SetKernels(OpDef& d, MakeParams make_params, Run run) {
  auto factory = [make_params, run](bool parallel) {
    return [make_params, run, parallel](auto t, const Node& n) -> Kernel {
      using T = decltype(t);
      Params p = make_params(n);
      return [p, run, parallel](const KernelArgs& a) { run(T{}, p, a, parallel); };
    };
  };
  d.kernels[DeviceKind::kCpu] = dense::FloatKernel(d.name, factory(true));
  d.kernels[DeviceKind::kReference] = dense::FloatKernel(d.name, factory(false));
}

cpu::BatchNormParams BatchNormParamsOfNode(const Node& n, size_t x_index) {
  auto p = BatchNormParamsOf(n.input(x_index)->type().shape, n.op());
  if (HasAttr(n.attrs(), "eps")) p.eps = GetFloat(n.attrs(), "eps");
  if (IsBlocked(n.attrs())) p.block = cpu::ActivationBlock();
  return p;
}

// Wraps `d`'s CPU and reference kernel factories: a node whose x (input `x_index`) is a half
// activation with f32 parameters runs `run(make_params(node), bf16, args, parallel)` (the
// CPU kernel parallel, the reference one on one thread), any other the factory's own kernel.
template <typename MakeParams, typename Run>
void WithHalfActivationKernels(OpDef& d, size_t x_index, MakeParams make_params, Run run) {
  for (auto [kind, parallel] : {std::pair{DeviceKind::kCpu, true},
                                std::pair{DeviceKind::kReference, false}}) {
    KernelFactory plain = d.kernels.at(kind);
    d.kernels[kind] = [plain, x_index, make_params, run, parallel](const Node& n) -> Kernel {
      const DType x = n.input(x_index)->type().dtype;
      if (!IsHalf(x)) return plain(n);
      const cpu::BatchNormParams p = make_params(n);
      const bool bf16 = x == DType::kBF16;
      return [p, bf16, run, parallel](const KernelArgs& a) { run(p, bf16, a, parallel); };
    };
  }
}

// A blocked batch norm's reference: the NCHW loops (`run(nchw_params, args)`) on NCHW copies
// of its first `activations` inputs (x, or dy and x) and of output 0 (y or dx): an
// independent check of the blocked loops the CPU kernel runs.
template <typename T, typename Run>
void OnPlainCopies(const cpu::BatchNormParams& p, const KernelArgs& a, int num_inputs,
                   int num_outputs, int activations, Run run) {
  std::vector<BlockedOperand> blocked;
  for (int i = 0; i < activations; ++i) blocked.push_back({false, i, p.n, p.c, p.s});
  blocked.push_back({true, 0, p.n, p.c, p.s});
  cpu::BatchNormParams nchw = p;
  nchw.block = 0;
  RunOnPlainCopies<T>(a, num_inputs, num_outputs, blocked,
                      [&](const KernelArgs& plain) { run(nchw, plain); });
}

cpu::LayerNormParams LayerNormParamsOfNode(const Node& n, size_t x_index) {
  auto p = LayerNormParamsOf(n.input(x_index)->type().shape, GetInt(n.attrs(), "normalized_ndim"));
  if (HasAttr(n.attrs(), "eps")) p.eps = GetFloat(n.attrs(), "eps");
  if (n.op() == "layer_norm") p.activation = LayerNormActivation(n.attrs(), n.op());
  return p;
}

// ---- samples -----------------------------------------------------------------------------

OpSample Sample(std::vector<Shape> shapes, AttrMap attrs, std::vector<InputInit> init = {}) {
  OpSample s;
  for (Shape& sh : shapes) s.inputs.push_back(F32(std::move(sh)));
  s.attrs = std::move(attrs);
  s.init = std::move(init);
  return s;
}

// The blocked layout exists after autodiff only (block-conv-layout): no gradient to check.
OpSample WithoutGradCheck(OpSample s) {
  s.skip_grad_check = true;
  return s;
}

std::vector<OpSample> BatchNormTrainSamples() {
  return {Sample({{4, 3}, {3}, {3}}, {}), Sample({{2, 3, 4, 4}, {3}, {3}}, {}),
          Sample({{3, 2, 5}, {2}, {2}}, {{"eps", 1e-3}}),
          WithoutGradCheck(Sample({{2, 32, 3, 5}, {32}, {32}}, {{"blocked", true}}))};
}

std::vector<OpSample> BatchNormInferenceSamples() {
  auto init = std::vector<InputInit>(4, InputInit::Normal());
  init.push_back(InputInit::Uniform(0.5, 2.0));
  return {Sample({{4, 3}, {3}, {3}, {3}, {3}}, {}, init),
          Sample({{2, 3, 4, 4}, {3}, {3}, {3}, {3}}, {}, init),
          Sample({{3, 2, 5}, {2}, {2}, {2}, {2}}, {{"eps", 1e-3}}, init)};
}

std::vector<OpSample> BatchNormBackwardSamples() {
  auto init = std::vector<InputInit>(4, InputInit::Normal());
  init.push_back(InputInit::Uniform(0.5, 2.0));
  return {Sample({{4, 3}, {4, 3}, {3}, {3}, {3}}, {}, init),
          Sample({{2, 3, 4, 4}, {2, 3, 4, 4}, {3}, {3}, {3}}, {}, init),
          // statistics recomputed from x (the mean / invstd inputs are then unused)
          Sample({{2, 3, 1, 1}, {2, 3, 1, 1}, {3}, {3}, {3}}, {{"eps", 1e-5}}, init),
          // blocked (block-conv-layout), with saved and with recomputed statistics
          WithoutGradCheck(Sample({{2, 16, 3, 3}, {2, 16, 3, 3}, {16}, {16}, {16}},
                                  {{"blocked", true}}, init)),
          WithoutGradCheck(Sample({{3, 32, 2, 2}, {3, 32, 2, 2}, {32}, {32}, {32}},
                                  {{"blocked", true}, {"eps", 1e-5}}, init))};
}

// The activation epilogue exists after autodiff only: no gradient to check (as the blocked
// layout's samples above).

std::vector<OpSample> LayerNormSamples() {
  return {Sample({{2, 3, 4}, {4}, {4}}, {{"normalized_ndim", int64_t{1}}}),
          Sample({{2, 3, 4}, {3, 4}, {3, 4}}, {{"normalized_ndim", int64_t{2}}}),
          Sample({{5, 6}, {6}, {6}}, {{"normalized_ndim", int64_t{1}}, {"eps", 1e-3}}),
          Sample({{7}, {7}, {7}}, {{"normalized_ndim", int64_t{1}}}),
          WithoutGradCheck(Sample({{3, 40}, {40}, {40}},
                                  {{"normalized_ndim", int64_t{1}}, {"activation", std::string("gelu")}})),
          WithoutGradCheck(Sample({{2, 3, 4}, {3, 4}, {3, 4}},
                                  {{"normalized_ndim", int64_t{2}}, {"activation", std::string("silu")}}))};
}

std::vector<OpSample> LayerNormBackwardSamples() {
  auto init = std::vector<InputInit>(4, InputInit::Normal());
  init.push_back(InputInit::Uniform(0.5, 2.0));
  return {Sample({{2, 3, 4}, {2, 3, 4}, {4}, {2, 3}, {2, 3}}, {{"normalized_ndim", int64_t{1}}},
                 init),
          Sample({{2, 3, 4}, {2, 3, 4}, {3, 4}, {2}, {2}}, {{"normalized_ndim", int64_t{2}}},
                 init)};
}

// ---- registration ------------------------------------------------------------------------

void RegisterBatchNorm(OpRegistry& r) {
  OpDef t;
  t.name = "batch_norm_train";
  t.num_inputs = 3;
  t.num_outputs = 4;
  t.attrs = {{"eps", 1e-5}, {"blocked", false}};
  t.infer = InferBatchNormTrain;
  t.grad = GradBatchNormTrain;
  auto train_params = [](const Node& n) { return BatchNormParamsOfNode(n, 0); };
  SetKernels<cpu::BatchNormParams>(
      t, train_params,
      [](auto v, const cpu::BatchNormParams& p, const KernelArgs& a, bool par) {
        using T = decltype(v);
        auto run = [&](const cpu::BatchNormParams& q, const KernelArgs& c) {
          cpu::BatchNormTrain<T>(q, In<T>(c, 0), In<T>(c, 1), In<T>(c, 2), Out<T>(c, 0),
                                 Out<T>(c, 1), Out<T>(c, 2), Out<T>(c, 3), par);
        };
        if (p.block > 1 && !par) return OnPlainCopies<T>(p, a, 3, 4, 1, run);
        run(p, a);
      });
  WithHalfActivationKernels(t, 0, train_params, [](const cpu::BatchNormParams& p, bool bf16,
                                                    const KernelArgs& a, bool par) {
    cpu::BatchNormTrainHalfX(p, In<uint16_t>(a, 0), bf16, In<float>(a, 1), In<float>(a, 2),
                             Out<float>(a, 0), Out<float>(a, 1), Out<float>(a, 2),
                             Out<float>(a, 3), par);
  });
  t.samples = BatchNormTrainSamples();
  t.doc = "(y, mean, invstd, var): x normalized per channel (dim 1) with batch statistics, "
          "scaled by weight, shifted by bias; var is biased";
  r.Register(std::move(t));

  OpDef i;
  i.name = "batch_norm_inference";
  i.num_inputs = 5;
  i.attrs = {{"eps", 1e-5}};
  i.infer = InferBatchNormInference;
  i.grad = GradBatchNormInference;
  SetKernels<cpu::BatchNormParams>(
      i, [](const Node& n) { return BatchNormParamsOfNode(n, 0); },
      [](auto v, const cpu::BatchNormParams& p, const KernelArgs& a, bool par) {
        using T = decltype(v);
        cpu::BatchNormInference<T>(p, In<T>(a, 0), In<T>(a, 1), In<T>(a, 2), In<T>(a, 3),
                                   In<T>(a, 4), Out<T>(a, 0), par);
      });
  i.samples = BatchNormInferenceSamples();
  i.doc = "y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, per channel";
  r.Register(std::move(i));

  OpDef b;
  b.name = "batch_norm_backward";
  b.num_inputs = 5;
  b.num_outputs = 3;
  // eps >= 0: the forward's eps, and the statistics are recomputed from x in double; the
  // default (-1) uses the saved mean / invstd inputs as they are.
  b.attrs = {{"eps", -1.0}, {"blocked", false}};
  b.infer = InferBatchNormBackward;
  b.not_differentiable = true;
  auto backward_params = [](const Node& n) {
    auto p = BatchNormParamsOfNode(n, 1);
    p.recompute_stats = p.eps >= 0;
    return p;
  };
  SetKernels<cpu::BatchNormParams>(
      b, backward_params,
      [](auto v, const cpu::BatchNormParams& p, const KernelArgs& a, bool par) {
        using T = decltype(v);
        auto run = [&](const cpu::BatchNormParams& q, const KernelArgs& c) {
          cpu::BatchNormBackward<T>(q, In<T>(c, 0), In<T>(c, 1), In<T>(c, 2), In<T>(c, 3),
                                    In<T>(c, 4), Out<T>(c, 0), Out<T>(c, 1), Out<T>(c, 2), par);
        };
        if (p.block > 1 && !par) return OnPlainCopies<T>(p, a, 5, 3, 2, run);
        run(p, a);
      });
  WithHalfActivationKernels(b, 1, backward_params, [](const cpu::BatchNormParams& p, bool bf16,
                                                       const KernelArgs& a, bool par) {
    cpu::BatchNormBackwardHalfX(p, In<float>(a, 0), In<uint16_t>(a, 1), bf16, In<float>(a, 2),
                                In<float>(a, 3), In<float>(a, 4), Out<uint16_t>(a, 0),
                                Out<float>(a, 1), Out<float>(a, 2), par);
  });
  b.samples = BatchNormBackwardSamples();
  b.doc = "(dx, dweight, dbias) of batch_norm_train's y from (dy, x, weight, mean, invstd)";
  r.Register(std::move(b));
}

void RegisterLayerNorm(OpRegistry& r) {
  OpDef f;
  f.name = "layer_norm";
  f.num_inputs = 3;
  f.num_outputs = 3;
  f.attrs = {{"normalized_ndim", int64_t{1}}, {"eps", 1e-5}, {"activation", std::string("none")}};
  f.infer = InferLayerNorm;
  f.grad = GradLayerNorm;
  SetKernels<cpu::LayerNormParams>(
      f, [](const Node& n) { return LayerNormParamsOfNode(n, 0); },
      [](auto v, const cpu::LayerNormParams& p, const KernelArgs& a, bool par) {
        using T = decltype(v);
        cpu::LayerNormForward<T>(p, In<T>(a, 0), In<T>(a, 1), In<T>(a, 2), Out<T>(a, 0),
                                 Out<T>(a, 1), Out<T>(a, 2), par);
      });
  f.samples = LayerNormSamples();
  f.doc = "(y, mean, rstd): x normalized over its last normalized_ndim dims, scaled by "
          "weight, shifted by bias, then the activation (none, relu, gelu, gelu_tanh, silu, "
          "sigmoid, hardswish; not none only after fuse-norm-activation, no gradient)";
  r.Register(std::move(f));

  OpDef b;
  b.name = "layer_norm_backward";
  b.num_inputs = 5;
  b.num_outputs = 3;
  b.attrs = {{"normalized_ndim", int64_t{1}}};
  b.infer = InferLayerNormBackward;
  b.not_differentiable = true;
  SetKernels<cpu::LayerNormParams>(
      b, [](const Node& n) { return LayerNormParamsOfNode(n, 1); },
      [](auto v, const cpu::LayerNormParams& p, const KernelArgs& a, bool par) {
        using T = decltype(v);
        cpu::LayerNormBackward<T>(p, In<T>(a, 0), In<T>(a, 1), In<T>(a, 2), In<T>(a, 3),
                                  In<T>(a, 4), Out<T>(a, 0), Out<T>(a, 1), Out<T>(a, 2), par);
      });
  b.samples = LayerNormBackwardSamples();
  b.doc = "(dx, dweight, dbias) of layer_norm's y from (dy, x, weight, mean, rstd)";
  r.Register(std::move(b));
}

}  // namespace

void RegisterNormOps(OpRegistry& r) {
  RegisterBatchNorm(r);
  RegisterLayerNorm(r);
}

}  // namespace tg
