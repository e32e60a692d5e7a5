// ONNX neural-network ops: MatMul, Gemm, Conv, ConvTranspose, pooling, normalizations,
// Softmax / LogSoftmax, Gather / GatherElements, Det, and the two training losses
// (SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss).
//
// tilegraph's convolution and pooling are 2-D with symmetric padding: 1-D ones run as 2-D
// with a unit height, asymmetric padding becomes an explicit pad in front.
#include <cmath>
#include <limits>

#include "onnx/converter.h"
#include "support/error.h"

namespace tg {
namespace {

using Outs = std::vector<Value*>;
using Ints = std::vector<int64_t>;

// Window geometry of a Conv / pool node over spatial dims `in` (ONNX attribute semantics).
struct Window {
  Ints kernel, strides, dilations, pad_begin, pad_end;
  bool symmetric() const { return pad_begin == pad_end; }
};

Window WindowOf(const OnnxNode& n, const Ints& in, const Ints& kernel) {
  const size_t s = in.size();
  Window w;
  w.kernel = kernel;
  w.strides = n.attr_ints("strides", Ints(s, 1));
  w.dilations = n.attr_ints("dilations", Ints(s, 1));
  Ints pads = n.attr_ints("pads", Ints(2 * s, 0));
  TG_CHECK(w.strides.size() == s && w.dilations.size() == s && pads.size() == 2 * s &&
               kernel.size() == s, kInvalidInput, n.proto().op_type(),
           ": strides / dilations / pads / kernel_shape do not match ", s, " spatial dims");
  w.pad_begin.assign(pads.begin(), pads.begin() + s);
  w.pad_end.assign(pads.begin() + s, pads.end());
  std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  if (auto_pad == "VALID") {
    w.pad_begin.assign(s, 0);
    w.pad_end.assign(s, 0);
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (size_t i = 0; i < s; ++i) {
      int64_t out = (in[i] + w.strides[i] - 1) / w.strides[i];
      int64_t total = std::max<int64_t>(
          (out - 1) * w.strides[i] + (kernel[i] - 1) * w.dilations[i] + 1 - in[i], 0);
      int64_t small = total / 2, large = total - small;
      w.pad_begin[i] = auto_pad == "SAME_UPPER" ? small : large;
      w.pad_end[i] = auto_pad == "SAME_UPPER" ? large : small;
    }
  } else if (auto_pad != "NOTSET") {
    n.Unsupported("auto_pad '" + auto_pad + "'");
  }
  return w;
}

// x [N, C, L] -> [N, C, 1, L] (1-D ops run as 2-D); window attributes gain a unit height.
Value* As2d(Builder& b, Value* x) {
  Shape s = x->type().shape;
  s.insert(s.end() - 1, 1);
  return b.Reshape(x, s);
}
void WindowAs2d(Window& w) {
  w.kernel.insert(w.kernel.begin(), 1);
  w.strides.insert(w.strides.begin(), 1);
  w.dilations.insert(w.dilations.begin(), 1);
  w.pad_begin.insert(w.pad_begin.begin(), 0);
  w.pad_end.insert(w.pad_end.begin(), 0);
}

Ints SpatialOf(Value* x) {
  const Shape& s = x->type().shape;
  return Ints(s.begin() + 2, s.end());
}

void CheckSpatialRank(const OnnxNode& n, Value* x) {
  int64_t r = RankOf(x);
  if (r != 3 && r != 4) n.Unsupported(std::to_string(r - 2) + "-D windows (1-D and 2-D are)");
}

// Pads the spatial dims of x explicitly by the window's padding (value v); the op itself then
// pads nothing (w's padding is zeroed).
Value* PadWindow(Builder& b, Value* x, Window& w, double v) {
  Ints before(2, 0), after(2, 0);
  before.insert(before.end(), w.pad_begin.begin(), w.pad_begin.end());
  after.insert(after.end(), w.pad_end.begin(), w.pad_end.end());
  w.pad_begin.assign(w.pad_begin.size(), 0);
  w.pad_end.assign(w.pad_end.size(), 0);
  return b.Op1("pad", {x}, {{"before", before}, {"after", after}, {"value", v}});
}

// PadWindow when the padding is asymmetric (the ops pad symmetrically themselves).
Value* PadIfAsymmetric(Builder& b, Value* x, Window& w, double v) {
  return w.symmetric() ? x : PadWindow(b, x, w, v);
}

// Restores a 1-D result from the 2-D op's [N, C, 1, L].
Value* Back1d(Builder& b, Value* y, bool one_d) {
  if (!one_d) return y;
  Shape s = y->type().shape;
  s.erase(s.end() - 2);
  return b.Reshape(y, s);
}

// [C] -> [1, C, 1, ...] for adding per-channel vectors to [N, C, ...].
Value* PerChannel(Builder& b, Value* v, int64_t rank) {
  Shape s(rank, 1);
  s[1] = v->type().numel();
  return b.Reshape(v, s);
}

Outs Conv(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  Value* w = n.input(1);
  CheckSpatialRank(n, x);
  const bool one_d = RankOf(x) == 3;
  Ints kernel(w->type().shape.begin() + 2, w->type().shape.end());
  Window win = WindowOf(n, SpatialOf(x), n.attr_ints("kernel_shape", kernel));
  if (one_d) {
    x = As2d(b, x);
    w = As2d(b, w);
    WindowAs2d(win);
  }
  x = PadIfAsymmetric(b, x, win, 0.0);
  Value* y = b.Op1("conv2d", {x, w}, {{"stride", win.strides}, {"padding", win.pad_begin},
                                      {"dilation", win.dilations}, {"groups", n.attr_int("group", 1)}});
  if (n.has_input(2)) y = b.Add(y, PerChannel(b, n.input(2), RankOf(y)));
  return {Back1d(b, y, one_d)};
}

// ConvTranspose as the input gradient of the convolution it inverts: weight [C_in, C_out/g,
// k...] is that convolution's weight. Asymmetric pads and output_padding crop a padding-free
// result.
Outs ConvTranspose(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  Value* w = n.input(1);
  CheckSpatialRank(n, x);
  const bool one_d = RankOf(x) == 3;
  Ints kernel(w->type().shape.begin() + 2, w->type().shape.end());
  std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  Ints in = SpatialOf(x);
  const size_t s = in.size();
  Ints strides = n.attr_ints("strides", Ints(s, 1));
  Ints dil = n.attr_ints("dilations", Ints(s, 1));
  Ints pads = n.attr_ints("pads", Ints(2 * s, 0));
  Ints out_pad = n.attr_ints("output_padding", Ints(s, 0));
  if (auto_pad == "VALID") pads.assign(2 * s, 0);
  // An output_shape (or SAME padding: output = input * stride) fixes the total padding; it is
  // split as ONNX says (SAME_UPPER: the extra element at the end, otherwise at the start).
  Ints out_shape = n.attr_ints("output_shape");
  if (out_shape.size() > s) out_shape.erase(out_shape.begin(), out_shape.end() - s);
  if (out_shape.empty() && (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER"))
    for (size_t i = 0; i < s; ++i) out_shape.push_back(in[i] * strides[i]);
  if (!out_shape.empty()) {
    TG_CHECK(out_shape.size() == s, kInvalidInput, "ConvTranspose: output_shape has ",
             out_shape.size(), " dims, expected ", s);
    for (size_t i = 0; i < s; ++i) {
      int64_t total = strides[i] * (in[i] - 1) + out_pad[i] + (kernel.at(i) - 1) * dil[i] + 1 -
                      out_shape[i];
      TG_CHECK(total >= 0, kShape, "ConvTranspose: output_shape ", out_shape[i],
               " is larger than the full output");
      pads[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pads[s + i] = total - pads[i];
    }
  } else if (auto_pad != "NOTSET" && auto_pad != "VALID") {
    n.Unsupported("auto_pad '" + auto_pad + "'");
  }
  const int64_t groups = n.attr_int("group", 1);
  // The full (padding-free) output, then the crop [pad_begin, full - pad_end + out_pad).
  Shape full_shape{x->type().shape[0], w->type().shape[1] * groups};
  Ints full(s);
  for (size_t i = 0; i < s; ++i) {
    full[i] = (in[i] - 1) * strides[i] + dil[i] * (kernel.at(i) - 1) + 1 + out_pad[i];
    full_shape.push_back(full[i]);
  }
  if (one_d) {
    x = As2d(b, x);
    w = As2d(b, w);
    full_shape.insert(full_shape.end() - 1, 1);
    strides.insert(strides.begin(), 1);
    dil.insert(dil.begin(), 1);
  }
  Value* y = b.Op1("conv2d_backward_input", {x, w},
                   {{"stride", strides}, {"padding", Ints(strides.size(), 0)},
                    {"dilation", dil}, {"groups", groups}, {"input_shape", full_shape}});
  for (size_t i = 0; i < s; ++i) {
    int64_t axis = RankOf(y) - static_cast<int64_t>(s) + static_cast<int64_t>(i);
    int64_t begin = pads[i], end = full[i] - pads[s + i];
    if (begin != 0 || end != full[i])
      y = b.Op1("slice", {y}, {{"axis", axis}, {"start", begin}, {"end", end}});
  }
  if (n.has_input(2)) y = b.Add(y, PerChannel(b, n.input(2), RankOf(y)));
  return {Back1d(b, y, one_d)};
}

// Whether the op's own (symmetric) padding can express the window's: PyTorch-style pooling
// takes at most half the kernel.
bool PoolPaddingFits(const Window& w) {
  if (!w.symmetric()) return false;
  for (size_t i = 0; i < w.kernel.size(); ++i)
    if (2 * w.pad_begin[i] > w.kernel[i]) return false;
  return true;
}

Outs Pool(OnnxNode& n, bool max) {
  Builder& b = n.b();
  Value* x = n.input(0);
  CheckSpatialRank(n, x);
  if (max && n.wants_output(1)) n.Unsupported("the Indices output");
  if (n.attr_int("storage_order", 0) != 0) n.Unsupported("storage_order=1");
  const bool one_d = RankOf(x) == 3;
  Window win = WindowOf(n, SpatialOf(x), n.attr_ints("kernel_shape"));
  if (one_d) {
    x = As2d(b, x);
    WindowAs2d(win);
  }
  const bool ceil_mode = n.attr_int("ceil_mode", 0) != 0;
  if (ceil_mode && !PoolPaddingFits(win) && win.pad_begin != Ints(win.pad_begin.size(), 0))
    n.Unsupported("ceil_mode with padding the pooling op cannot take itself");
  Value* y;
  const DType in_dtype = x->type().dtype;
  if (max && !IsFloating(in_dtype)) x = b.Cast(x, DType::kF32);  // exact for |x| < 2^24
  if (max) {
    if (!PoolPaddingFits(win)) x = PadWindow(b, x, win, -std::numeric_limits<double>::infinity());
    y = b.Op1("max_pool2d", {x}, {{"kernel_size", win.kernel}, {"stride", win.strides},
                                  {"padding", win.pad_begin}, {"dilation", win.dilations},
                                  {"ceil_mode", ceil_mode}});
  } else {
    if (win.dilations != Ints(win.dilations.size(), 1)) n.Unsupported("dilations");
    const bool include_pad = n.attr_int("count_include_pad", 0) != 0;
    if (PoolPaddingFits(win)) {
      y = b.Op1("avg_pool2d", {x}, {{"kernel_size", win.kernel}, {"stride", win.strides},
                                    {"padding", win.pad_begin}, {"ceil_mode", ceil_mode},
                                    {"count_include_pad", include_pad}});
    } else {
      // Explicit zero padding, then: with count_include_pad the mean over the padded input;
      // without, the windows' sums over their counts of real elements (the mean of a padded
      // ones tensor, folded to a constant at import).
      Window padded = win;
      Value* xp = PadWindow(b, x, padded, 0.0);
      AttrMap attrs = {{"kernel_size", padded.kernel}, {"stride", padded.strides},
                       {"padding", padded.pad_begin}, {"ceil_mode", ceil_mode},
                       {"count_include_pad", true}};
      y = b.Op1("avg_pool2d", {xp}, attrs);
      if (!include_pad) {
        Window w2 = win;
        Value* ones = PadWindow(b, b.Full(x->type().shape, 1.0, x->type().dtype), w2, 0.0);
        y = b.Div(y, b.Op1("avg_pool2d", {ones}, attrs));
      }
    }
  }
  if (y->type().dtype != in_dtype) y = b.Cast(y, in_dtype);
  return {Back1d(b, y, one_d)};
}

Ints SpatialAxes(Value* x) {
  Ints axes;
  for (int64_t a = 2; a < RankOf(x); ++a) axes.push_back(a);
  return axes;
}

Outs BatchNormalization(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  const double eps = n.attr_float("epsilon", 1e-5);
  bool training = n.training();
  if (n.opset() >= 14) training = training || n.attr_int("training_mode", 0) != 0;
  if (!training)
    return {b.Op1("batch_norm_inference", {x, n.input(1), n.input(2), n.input(3), n.input(4)},
                  {{"eps", eps}})};
  std::vector<Value*> r = b.Op("batch_norm_train", {x, n.input(1), n.input(2)}, {{"eps", eps}});
  // ONNX: running = running * momentum + batch * (1 - momentum), var the population one.
  const double m = n.attr_float("momentum", 0.9);
  Value* outs[2] = {nullptr, nullptr};
  for (int k = 0; k < 2; ++k) {
    Value* running = n.input(3 + k);
    Value* batch = k == 0 ? r[1] : r[3];
    Value* next = b.Add(b.MulScalar(running, m), b.MulScalar(batch, 1.0 - m));
    if (running->kind() == ValueKind::kVariable) {
      running->set_trainable(false);
      b.graph().SetUpdate(running, next);
    }
    outs[k] = next;
  }
  return {r[0], outs[0], outs[1]};
}

Outs InstanceNormalization(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  Ints axes = SpatialAxes(x);
  Value* mean = b.Mean(x, axes, true);
  Value* var = b.Op1("var", {x}, {{"axes", axes}, {"keepdim", true}, {"correction", 0.0}});
  Value* xhat = b.Mul(b.Sub(x, mean),
                      b.Rsqrt(b.AddScalar(var, n.attr_float("epsilon", 1e-5))));
  return {b.Add(b.Mul(xhat, PerChannel(b, n.input(1), RankOf(x))),
                PerChannel(b, n.input(2), RankOf(x)))};
}

Outs LayerNormalization(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  int64_t axis = n.Axis(n.attr_int("axis", -1), RankOf(x));
  if (n.attr_int("stash_type", 1) != 1) n.Unsupported("stash_type other than float");
  Shape norm_shape(x->type().shape.begin() + axis, x->type().shape.end());
  auto fit = [&](Value* v) { return v->type().shape == norm_shape ? v : b.Expand(v, norm_shape); };
  Value* scale = fit(n.input(1));
  Value* bias = n.has_input(2) ? fit(n.input(2)) : b.Full(norm_shape, 0.0, x->type().dtype);
  std::vector<Value*> r = b.Op("layer_norm", {x, scale, bias},
                               {{"normalized_ndim", RankOf(x) - axis},
                                {"eps", n.attr_float("epsilon", 1e-5)}});
  // Mean and InvStdDev keep the normalized dims as 1s.
  Shape stat_shape(x->type().shape.begin(), x->type().shape.begin() + axis);
  stat_shape.resize(RankOf(x), 1);
  Outs outs{r[0]};
  for (int k = 1; k <= 2; ++k)
    outs.push_back(n.wants_output(k) ? b.Reshape(r[k], stat_shape) : nullptr);
  return outs;
}

// Softmax / LogSoftmax: opset 13 normalizes along one axis (default -1); before, the input
// is viewed as 2-D [prod(dims < axis), prod(dims >= axis)] (default axis 1).
Outs Softmax(OnnxNode& n, const std::string& op) {
  Builder& b = n.b();
  Value* x = n.input(0);
  if (n.opset() >= 13) {
    int64_t axis = n.Axis(n.attr_int("axis", -1), RankOf(x));
    return {b.Op1(op, {x}, {{"axis", axis}})};
  }
  int64_t axis = n.Axis(n.attr_int("axis", 1), RankOf(x));
  const Shape& s = x->type().shape;
  int64_t rows = 1, cols = 1;
  for (int64_t i = 0; i < RankOf(x); ++i) (i < axis ? rows : cols) *= s[i];
  Value* y = b.Op1(op, {b.Reshape(x, {rows, cols})}, {{"axis", int64_t{1}}});
  return {b.Reshape(y, s)};
}

// Indices made non-negative (ONNX allows -size <= i < size) as i64.
Value* WrapIndices(Builder& b, Value* idx, int64_t size, int64_t axis) {
  return b.Op1("index_wrap", {idx}, {{"size", size}, {"dim", axis}});
}

Outs Gather(OnnxNode& n) {
  Builder& b = n.b();
  Value* data = n.input(0);
  Value* idx = n.input(1);
  int64_t axis = n.Axis(n.attr_int("axis", 0), RankOf(data));
  const Shape& ds = data->type().shape;
  Value* flat = b.Reshape(WrapIndices(b, idx, ds[axis], axis), {idx->type().numel()});
  Value* picked = b.Op1("index_select", {data, flat}, {{"axis", axis}});
  Shape out(ds.begin(), ds.begin() + axis);
  out.insert(out.end(), idx->type().shape.begin(), idx->type().shape.end());
  out.insert(out.end(), ds.begin() + axis + 1, ds.end());
  return {picked->type().shape == out ? picked : b.Reshape(picked, out)};
}

Outs GatherElements(OnnxNode& n) {
  Builder& b = n.b();
  Value* data = n.input(0);
  int64_t axis = n.Axis(n.attr_int("axis", 0), RankOf(data));
  Value* idx = WrapIndices(b, n.input(1), data->type().shape[axis], axis);
  return {b.Op1("gather", {data, idx}, {{"axis", axis}})};
}

// NLL over class dim 1 of logp [N, C, d...] with targets [N, d...] and optional class
// weights [C]: ONNX's loss ops. Weighted mean divides by the weights of the counted targets.
Value* Nll(OnnxNode& n, Value* logp, Value* target) {
  Builder& b = n.b();
  std::string reduction = n.attr_string("reduction", "mean");
  if (reduction != "mean" && reduction != "sum" && reduction != "none")
    n.Unsupported("reduction '" + reduction + "'");
  const bool has_ignore = n.has_attr("ignore_index");
  const int64_t ignore = has_ignore ? n.attr_int("ignore_index", 0)
                                    : std::numeric_limits<int64_t>::min();
  const Shape& s = logp->type().shape;
  const int64_t classes = s.at(1);
  if (RankOf(logp) > 2) {
    Ints perm{0};
    for (int64_t a = 2; a < RankOf(logp); ++a) perm.push_back(a);
    perm.push_back(1);
    logp = b.Reshape(b.Permute(logp, perm), {-1, classes});
  }
  if (target->type().dtype != DType::kI64) target = b.Cast(target, DType::kI64);
  Shape target_shape = target->type().shape;
  target = b.Reshape(target, {target->type().numel()});
  if (!n.has_input(2)) {
    Value* loss = b.Op1("nll_loss", {logp, target},
                        {{"reduction", reduction}, {"ignore_index", ignore}});
    return reduction == "none" ? b.Reshape(loss, target_shape) : loss;
  }
  // Per-element losses times the target's class weight (0 for ignored targets).
  Value* each = b.Op1("nll_loss", {logp, target},
                      {{"reduction", std::string("none")}, {"ignore_index", ignore}});
  Value* counted = b.Op1("ne", {target, b.Scalar(static_cast<double>(ignore), DType::kI64)});
  Value* safe = b.Where(counted, target, b.Scalar(0, DType::kI64));
  Value* w = b.Op1("index_select", {n.input(2), safe}, {{"axis", int64_t{0}}});
  w = b.Where(counted, w, ScalarLike(b, w, 0.0));
  Value* weighted = b.Mul(each, w);
  if (reduction == "none") return b.Reshape(weighted, target_shape);
  if (reduction == "sum") return b.Sum(weighted, {});
  return b.Div(b.Sum(weighted, {}), b.Sum(w, {}));
}

// x normalized by the root mean square over the axes from `axis` on, times scale.
Outs RMSNormalization(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  int64_t axis = n.Axis(n.attr_int("axis", -1), RankOf(x));
  Ints axes;
  for (int64_t a = axis; a < RankOf(x); ++a) axes.push_back(a);
  Value* ms = b.Mean(b.Mul(x, x), axes, true);
  return {b.Mul(b.Mul(x, b.Rsqrt(b.AddScalar(ms, n.attr_float("epsilon", 1e-5)))), n.input(1))};
}

Outs GroupNormalization(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  const Shape& s = x->type().shape;
  const int64_t groups = n.attr_int("num_groups", 1), c = s[1];
  TG_CHECK(groups > 0 && c % groups == 0, kShape, "GroupNormalization: ", c, " channels in ",
           groups, " groups");
  Value* g = b.Reshape(x, {s[0], groups, -1});
  Value* mean = b.Mean(g, {2}, true);
  Value* var = b.Op1("var", {g}, {{"axes", Ints{2}}, {"keepdim", true}, {"correction", 0.0}});
  Value* xhat = b.Reshape(b.Mul(b.Sub(g, mean), b.Rsqrt(b.AddScalar(var, n.attr_float("epsilon", 1e-5)))), s);
  Value* scale = n.input(1);
  Value* bias = n.input(2);
  if (scale->type().numel() == groups && groups != c) n.Unsupported("per-group scale (opset 18)");
  return {b.Add(b.Mul(xhat, PerChannel(b, scale, RankOf(x))), PerChannel(b, bias, RankOf(x)))};
}

Outs MeanVarianceNormalization(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  Ints axes = NormalizeAxes(n, n.attr_ints("axes", {0, 2, 3}), RankOf(x));
  Value* mean = b.Mean(x, axes, true);
  Value* var = b.Op1("var", {x}, {{"axes", axes}, {"keepdim", true}, {"correction", 0.0}});
  return {b.Div(b.Sub(x, mean), b.AddScalar(b.Sqrt(var), 1e-9))};
}

Outs LpNormalization(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  int64_t axis = n.Axis(n.attr_int("axis", -1), RankOf(x));
  const int64_t p = n.attr_int("p", 2);
  Value* norm;
  if (p == 1) norm = b.Sum(b.Op1("abs", {x}), {axis}, true);
  else if (p == 2) norm = b.Sqrt(b.Sum(b.Mul(x, x), {axis}, true));
  else n.Unsupported("p=" + std::to_string(p));
  // A zero vector stays zero.
  Value* zero = b.Op1("eq", {norm, ScalarLike(b, norm, 0.0)});
  return {b.Where(zero, ScalarLike(b, x, 0.0), b.Div(x, b.Where(zero, ScalarLike(b, norm, 1.0), norm)))};
}

// LRN across channels: x / (bias + alpha / size * sum of x^2 over the channel window)^beta,
// the window sum as a (size, 1) average pool over [N, 1, C, H*W] with zero padding.
Outs Lrn(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  const Shape& s = x->type().shape;
  const int64_t size = n.attr_int("size", 1);
  const int64_t c = s[1];
  int64_t rest = 1;
  for (size_t a = 2; a < s.size(); ++a) rest *= s[a];
  Value* sq = b.Reshape(b.Mul(x, x), {s[0], 1, c, rest});
  const int64_t before = (size - 1) / 2, after = size - 1 - before;
  sq = b.Op1("pad", {sq}, {{"before", Ints{0, 0, before, 0}}, {"after", Ints{0, 0, after, 0}},
                           {"value", 0.0}});
  Value* sum = b.MulScalar(b.Op1("avg_pool2d", {sq}, {{"kernel_size", Ints{size, 1}},
                                                      {"stride", Ints{1, 1}},
                                                      {"count_include_pad", true}}),
                           static_cast<double>(size));
  Value* denom = b.AddScalar(b.MulScalar(b.Reshape(sum, s), n.attr_float("alpha", 1e-4) / size),
                             n.attr_float("bias", 1.0));
  return {b.Div(x, b.Op1("pow_scalar", {denom}, {{"exponent", n.attr_float("beta", 0.75)}}))};
}

// Hardmax: 1 at the first maximum along the axis, 0 elsewhere.
Outs Hardmax(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  int64_t axis = n.Axis(n.attr_int("axis", n.opset() >= 13 ? -1 : 1), RankOf(x));
  if (n.opset() < 13) {  // the 2-D view, as Softmax before opset 13
    const Shape& s = x->type().shape;
    int64_t rows = 1, cols = 1;
    for (int64_t i = 0; i < RankOf(x); ++i) (i < axis ? rows : cols) *= s[i];
    Value* flat = b.Reshape(x, {rows, cols});
    Value* arg = b.Op1("argmax", {flat}, {{"axis", int64_t{1}}, {"keepdim", true}});
    HostTensor iota({DType::kI64, {1, cols}});
    for (int64_t i = 0; i < cols; ++i) iota.as<int64_t>()[i] = i;
    Value* hot = b.Op1("eq", {arg, b.graph().AddConstant(std::move(iota))});
    return {b.Reshape(b.Cast(hot, x->type().dtype), s)};
  }
  const int64_t dim = x->type().shape[axis];
  Value* arg = b.Op1("argmax", {x}, {{"axis", axis}, {"keepdim", true}});
  Shape iota_shape(RankOf(x), 1);
  iota_shape[axis] = dim;
  HostTensor iota({DType::kI64, iota_shape});
  for (int64_t i = 0; i < dim; ++i) iota.as<int64_t>()[i] = i;
  return {b.Cast(b.Op1("eq", {arg, b.graph().AddConstant(std::move(iota))}), x->type().dtype)};
}

// ScatterElements: data with updates written at the indexed positions (reduction none, add,
// mul, max, min). "none" replaces: positions hit are cleared, then the updates added.
Outs ScatterElements(OnnxNode& n) {
  Builder& b = n.b();
  Value* data = n.input(0);
  int64_t axis = n.Axis(n.attr_int("axis", 0), RankOf(data));
  Value* idx = WrapIndices(b, n.input(1), data->type().shape[axis], axis);
  Value* upd = n.input(2);
  std::string reduction = n.attr_string("reduction", "none");
  AttrMap ax{{"axis", axis}};
  if (reduction == "add") return {b.Op1("scatter_add", {data, idx, upd}, ax)};
  if (reduction == "max") return {b.Op1("scatter_max", {data, idx, upd}, ax)};
  if (reduction == "min")
    return {b.Neg(b.Op1("scatter_max", {b.Neg(data), idx, b.Neg(upd)}, ax))};
  if (reduction == "mul") return {b.Op1("scatter_mul", {data, idx, upd}, ax)};
  Value* hit = b.Op1("scatter_add", {b.ZerosLike(data), idx, b.Op1("full", {}, {{"shape", upd->type().shape}, {"value", 1.0}, {"dtype", data->type().dtype}})}, ax);
  Value* cleared = b.Where(b.Op1("gt", {hit, ScalarLike(b, hit, 0.0)}), ScalarLike(b, data, 0.0), data);
  return {b.Op1("scatter_add", {cleared, idx, upd}, ax)};
}

// LpPool: (sum over the window of |x|^p)^(1/p), the sum as an average pool times the window.
Outs LpPool(OnnxNode& n, bool global) {
  Builder& b = n.b();
  Value* x = n.input(0);
  const double p = static_cast<double>(n.attr_int("p", 2));
  Value* xp = b.Op1("pow_scalar", {b.Op1("abs", {x})}, {{"exponent", p}});
  Value* sum;
  if (global) {
    sum = b.Sum(xp, SpatialAxes(x), true);
  } else {
    CheckSpatialRank(n, x);
    const bool one_d = RankOf(x) == 3;
    Window win = WindowOf(n, SpatialOf(x), n.attr_ints("kernel_shape"));
    if (one_d) {
      xp = As2d(b, xp);
      WindowAs2d(win);
    }
    int64_t taps = 1;
    for (int64_t k : win.kernel) taps *= k;
    if (win.dilations != Ints(win.dilations.size(), 1)) n.Unsupported("dilations");
    xp = PadWindow(b, xp, win, 0.0);
    sum = b.MulScalar(b.Op1("avg_pool2d", {xp}, {{"kernel_size", win.kernel}, {"stride", win.strides},
                                                 {"ceil_mode", n.attr_int("ceil_mode", 0) != 0},
                                                 {"count_include_pad", true}}),
                      static_cast<double>(taps));
    sum = Back1d(b, sum, one_d);
  }
  return {b.Op1("pow_scalar", {sum}, {{"exponent", 1.0 / p}})};
}

}  // namespace

void AddNnConverters(OnnxConverterTable& t) {
  t["RMSNormalization"] = RMSNormalization;
  t["GroupNormalization"] = GroupNormalization;
  t["MeanVarianceNormalization"] = MeanVarianceNormalization;
  t["LpNormalization"] = LpNormalization;
  t["LRN"] = Lrn;
  t["Hardmax"] = Hardmax;
  t["ScatterElements"] = ScatterElements;
  t["LpPool"] = [](OnnxNode& n) { return LpPool(n, false); };
  t["GlobalLpPool"] = [](OnnxNode& n) { return LpPool(n, true); };
  t["Det"] = [](OnnxNode& n) -> Outs {  // (f32 / f64; LU with partial pivoting)
    return {n.b().Op1("det", {n.input(0)})};
  };
  t["MatMul"] = [](OnnxNode& n) -> Outs {
    // numpy semantics: a 1-D left operand is a row, a 1-D right operand a column, and the
    // added dimension is removed from the result.
    Builder& b = n.b();
    Value* a = n.input(0);
    Value* c = n.input(1);
    const bool vec_a = RankOf(a) == 1, vec_c = RankOf(c) == 1;
    if (vec_a) a = b.Reshape(a, {1, a->type().shape[0]});
    if (vec_c) c = b.Reshape(c, {c->type().shape[0], 1});
    Value* y = b.MatMul(a, c);
    if (vec_a || vec_c) {
      Shape s = y->type().shape;
      if (vec_c) s.pop_back();
      if (vec_a) s.erase(s.end() - (vec_c ? 1 : 2));
      y = b.Reshape(y, s);
    }
    return {y};
  };
  t["Gemm"] = [](OnnxNode& n) -> Outs {
    Builder& b = n.b();
    Value* y = b.MatMul(n.input(0), n.input(1), n.attr_int("transA", 0) != 0,
                        n.attr_int("transB", 0) != 0);
    const double alpha = n.attr_float("alpha", 1.0), beta = n.attr_float("beta", 1.0);
    if (alpha != 1.0) y = b.MulScalar(y, alpha);
    if (n.has_input(2) && beta != 0.0) {
      Value* c = n.input(2);
      y = b.Add(y, beta == 1.0 ? c : b.MulScalar(c, beta));
    }
    return {y};
  };
  t["Conv"] = Conv;
  t["ConvTranspose"] = ConvTranspose;
  t["MaxPool"] = [](OnnxNode& n) { return Pool(n, true); };
  t["AveragePool"] = [](OnnxNode& n) { return Pool(n, false); };
  t["GlobalAveragePool"] = [](OnnxNode& n) -> Outs {
    return {n.b().Mean(n.input(0), SpatialAxes(n.input(0)), true)};
  };
  t["GlobalMaxPool"] = [](OnnxNode& n) -> Outs {
    return {n.b().Op1("amax", {n.input(0)}, {{"axes", SpatialAxes(n.input(0))}, {"keepdim", true}})};
  };
  t["BatchNormalization"] = BatchNormalization;
  t["InstanceNormalization"] = InstanceNormalization;
  t["LayerNormalization"] = LayerNormalization;
  t["Softmax"] = [](OnnxNode& n) { return Softmax(n, "softmax"); };
  t["LogSoftmax"] = [](OnnxNode& n) { return Softmax(n, "log_softmax"); };
  t["Gather"] = Gather;
  t["GatherElements"] = GatherElements;
  t["SoftmaxCrossEntropyLoss"] = [](OnnxNode& n) -> Outs {
    Value* logp = n.b().Op1("log_softmax", {n.input(0)}, {{"axis", int64_t{1}}});
    return {Nll(n, logp, n.input(1)), n.wants_output(1) ? logp : nullptr};
  };
  t["NegativeLogLikelihoodLoss"] = [](OnnxNode& n) -> Outs {
    return {Nll(n, n.input(0), n.input(1))};
  };
}

}  // namespace tg
