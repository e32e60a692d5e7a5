// conv2d_epilogue: a forward convolution with its bias, an inference batch norm and an
// activation applied as it writes its output, made by passes/fuse_conv_epilogue.cc.
//
//   inputs: x [N,C,H,W], w [O,C/groups,kh,kw], then bias [O] when attr bias, then the batch
//           norm's weight, bias, running_mean, running_var [O] when attr batch_norm, then
//           the residual r [N,O,oh,ow] when attr residual (f32 / f64; y's layout)
//   y = act(bn(conv2d(x, w) + bias) + r)
//
// The batch norm folds into the convolution's weight and bias (in double, from the running
// statistics; redone whenever the variables change), and oneDNN applies the bias and the
// activation (and adds the residual, a binary post-op) as it writes the output.
//
// Mixed precision (passes/fuse_conv_epilogue.cc on Precision.setMixedPrecision's convolutions):
// x in bf16 / f16 while w and the epilogue's parameters are f32 (the master copies) and y is
// f32. The convolution then runs in x's dtype on the folded weight w * scale rounded once to
// it, with f32 sums, and the shift and activation apply to the f32 sums: one rounding of the
// weight, none of the convolution's result (the unfused graph rounds the weight and the
// result, then scales).
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/cast_kernels.h"
#include "kernels/cpu/channel_blocking.h"
#include "kernels/cpu/conv_im2col_kernels.h"
#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/reference_dense.h"
#include "ops/conv.h"
#include "ops/dense_common.h"
#include "ops/families.h"
#include "support/buffer_cache.h"

namespace tg {
namespace {

using dense::F32;

struct EpilogueSpec {
  bool bias = false, batch_norm = false, residual = false;
  cpu::ConvLayout layout;  // x and / or y (and the residual) in oneDNN's blocked layout
  double eps = 1e-5;
  cpu::Activation activation = cpu::Activation::kNone;
  int residual_index() const { return 2 + (bias ? 1 : 0) + (batch_norm ? 4 : 0); }
  int num_inputs() const { return residual_index() + (residual ? 1 : 0); }
};

EpilogueSpec SpecOf(const AttrMap& attrs, const cpu::Conv2dParams& p) {
  EpilogueSpec s;
  s.layout = ConvLayoutOf(attrs, p, "conv2d_epilogue");
  s.bias = GetBool(attrs, "bias");
  s.batch_norm = GetBool(attrs, "batch_norm");
  // Absent in nodes made before the attribute existed (files, AddNode): none.
  s.residual = GetFlag(attrs, "residual");
  s.eps = GetFloat(attrs, "eps");
  const std::string& act = GetString(attrs, "activation");
  TG_CHECK(cpu::ActivationFromName(act, &s.activation), kShape,
           "conv2d_epilogue: expected activation none, relu, gelu, gelu_tanh, silu, sigmoid or "
           "hardswish, got \"", act, "\"");
  return s;
}

// x half, w f32: mixed precision (see the top of this file).
bool IsMixed(DType x, DType w) { return IsHalf(x) && w == DType::kF32; }
bool IsMixed(const Node& n) {
  return IsMixed(n.input(0)->type().dtype, n.input(1)->type().dtype);
}

std::vector<TensorType> InferConvEpilogue(const InferContext& ctx) {
  const std::string op = "conv2d_epilogue";
  const cpu::Conv2dParams p = ConvParams(ctx.in(0).shape, ctx.in(1).shape, ctx.attrs, op);
  const EpilogueSpec s = SpecOf(ctx.attrs, p);
  TG_CHECK(static_cast<int>(ctx.inputs.size()) == s.num_inputs(), kShape, op, ": expected ",
           s.num_inputs(), " inputs (x, w", s.bias ? ", bias" : "",
           s.batch_norm ? ", the batch norm's weight, bias, running_mean, running_var" : "",
           s.residual ? ", the residual" : "", "), got ", ctx.inputs.size());
  const bool mixed = IsMixed(ctx.in(0).dtype, ctx.in(1).dtype);
  if (mixed) {
    for (size_t i = 2; i < ctx.inputs.size(); ++i) {
      TG_CHECK(ctx.in(i).dtype == DType::kF32, kShape, op, ": with x in ",
               DTypeName(ctx.in(0).dtype), " and w in f32 (mixed precision), expected input ",
               i, " of dtype f32, got ", ctx.in(i).ToString());
    }
  } else {
    dense::CheckSameFloat(ctx, op);
  }
  for (int i = 2; i < s.residual_index(); ++i) {
    TG_CHECK(ctx.in(i).shape == Shape{p.o}, kShape, op, ": expected input ", i, " of shape [",
             p.o, "] (one value per output channel), got ", ctx.in(i).ToString());
  }
  if (s.residual) {
    TG_CHECK(!mixed, kShape, op, ": a residual needs x and w of one dtype (f32 or f64), got x ",
             DTypeName(ctx.in(0).dtype), " and w ", DTypeName(ctx.in(1).dtype));
    TG_CHECK(ctx.in(s.residual_index()).shape == ConvOutShape(p), kShape, op,
             ": expected the residual of the output's shape ", ShapeToString(ConvOutShape(p)),
             ", got ", ctx.in(s.residual_index()).ToString());
  }
  return {TensorType{mixed ? DType::kF32 : ctx.in(0).dtype, ConvOutShape(p)}};
}

cpu::Conv2dParams ParamsOf(const Node& n) {
  return ConvParams(n.input(0)->type().shape, n.input(1)->type().shape, n.attrs(), n.op());
}

// scale / shift per output channel: y = conv * scale + shift equals bn(conv + bias).
template <typename T>
void FoldEpilogue(const EpilogueSpec& s, const KernelArgs& a, int64_t channels, double* scale,
                  double* shift) {
  const T* bias = s.bias ? dense::In<T>(a, 2) : nullptr;
  const int bn = s.bias ? 3 : 2;
  for (int64_t o = 0; o < channels; ++o) {
    double k = 1.0, b = bias ? static_cast<double>(bias[o]) : 0.0;
    if (s.batch_norm) {
      const double w = dense::In<T>(a, bn)[o], beta = dense::In<T>(a, bn + 1)[o];
      const double mean = dense::In<T>(a, bn + 2)[o], var = dense::In<T>(a, bn + 3)[o];
      k = w / std::sqrt(var + s.eps);
      b = beta + (b - mean) * k;
    }
    scale[o] = k;
    shift[o] = b;
  }
}

// The reference: the convolution's loops, then the epilogue per element in double (on NCHW
// copies of blocked operands).
template <typename T>
Kernel MakeRef(const Node& n) {
  const cpu::Conv2dParams p = ParamsOf(n);
  const EpilogueSpec s = SpecOf(n.attrs(), p);
  return [p, s](const KernelArgs& a) {
    const T* x = dense::In<T>(a, 0);
    std::vector<T> x_plain, y_plain;
    if (s.layout.src_blocked) {
      x_plain.resize(p.n * p.c * p.h * p.w);
      cpu::Reblock(x, x_plain.data(), p.n, p.c, p.h * p.w, false, s.layout.src_block(p.c));
      x = x_plain.data();
    }
    T* y = dense::Out<T>(a, 0);
    if (s.layout.dst_blocked) {
      y_plain.resize(p.n * p.o * p.oh * p.ow);
      y = y_plain.data();
    }
    cpu::Conv2dForwardRef<T>(p, x, dense::In<T>(a, 1), y);
    std::vector<double> scale(p.o), shift(p.o);
    FoldEpilogue<T>(s, a, p.o, scale.data(), shift.data());
    const int64_t plane = p.oh * p.ow;
    const T* r = s.residual ? dense::In<T>(a, s.residual_index()) : nullptr;
    std::vector<T> r_plain;
    if (r != nullptr && s.layout.dst_blocked) {
      r_plain.resize(p.n * p.o * plane);
      cpu::Reblock(r, r_plain.data(), p.n, p.o, plane, false, s.layout.dst_block(p.o));
      r = r_plain.data();
    }
    for (int64_t i = 0; i < p.n * p.o * plane; ++i) {
      const int64_t o = (i / plane) % p.o;
      double v = static_cast<double>(y[i]) * scale[o] + shift[o];
      if (r != nullptr) v += static_cast<double>(r[i]);
      y[i] = static_cast<T>(cpu::ApplyActivation(s.activation, v));
    }
    if (s.layout.dst_blocked) {
      cpu::Reblock(y, dense::Out<T>(a, 0), p.n, p.o, plane, true, s.layout.dst_block(p.o));
    }
  };
}

// The batch norm folded into the convolution (what ONNX Runtime does at load time):
// w'[o] = w[o] * scale[o], bias'[o] = shift[o]. Kept across runs while the variables are
// unchanged, so oneDNN's blocked copy of w' (weight prepacking) is kept too.
struct FoldedWeights {
  std::vector<float> weight, bias;
  std::vector<const void*> sources;  // the input buffers it was folded from
  uint64_t version = 0;
  bool valid = false;
};

// Whether `state` holds the fold of these inputs at this variables version.
bool FoldIsCurrent(const FoldedWeights& state, const KernelArgs& a, int inputs, bool cacheable) {
  if (!cacheable || !state.valid || state.version != a.ctx->variables_version) return false;
  for (int i = 1; i < inputs; ++i) {
    if (state.sources[i - 1] != a.inputs[i]) return false;
  }
  return true;
}

// `weight`: also the folded weight (else only the shift: the caller reads w itself, which
// without a batch norm is the folded weight).
void Fold(const EpilogueSpec& s, const cpu::Conv2dParams& p, const KernelArgs& a,
          FoldedWeights* state, bool weight = true) {
  std::vector<double> scale(p.o), shift(p.o);
  FoldEpilogue<float>(s, a, p.o, scale.data(), shift.data());
  const int64_t per_channel = p.c / p.groups * p.kh * p.kw;
  const float* w = dense::In<float>(a, 1);
  state->weight.resize(weight ? p.o * per_channel : 0);
  state->bias.resize(p.o);
  for (int64_t o = 0; o < p.o; ++o) {
    for (int64_t k = 0; weight && k < per_channel; ++k) {
      const int64_t i = o * per_channel + k;
      state->weight[i] = static_cast<float>(w[i] * scale[o]);
    }
    state->bias[o] = static_cast<float>(shift[o]);
  }
  state->sources.assign(a.inputs + 1, a.inputs + s.residual_index());
  state->version = a.ctx->variables_version;
  state->valid = true;
}

Kernel MakeCpu(auto t, const Node& n) {
  using T = decltype(t);
  if constexpr (!std::is_same_v<T, float>) {
    return MakeRef<T>(n);
  } else {
    const cpu::Conv2dParams p = ParamsOf(n);
    const EpilogueSpec s = SpecOf(n.attrs(), p);
    cpu::ConvEpilogue epilogue;
    epilogue.bias = s.bias || s.batch_norm;
    epilogue.residual = s.residual;
    epilogue.activation = s.activation;
    cpu::OnednnConv2d conv(p, cpu::ConvPass::kForward, epilogue, s.layout);
    // Weights (and batch norm parameters) that are variables or constants change only
    // between runs that bump the variables version: their fold and blocked copy are kept.
    bool cacheable = true;
    for (int i = 1; i < s.residual_index(); ++i) cacheable = cacheable && IsWeight(n.input(i));
    const bool prepack_plain = IsWeight(n.input(1));
    auto state = std::make_shared<FoldedWeights>();  // per kernel copy's owner (per replica)
    return [conv, s, p, cacheable, prepack_plain, state](const KernelArgs& a) {
      const float* x = dense::In<float>(a, 0);
      float* y = dense::Out<float>(a, 0);
      const float* residual = s.residual ? dense::In<float>(a, s.residual_index()) : nullptr;
      if (!s.batch_norm) {
        conv.Run(x, dense::In<float>(a, 1), y, prepack_plain ? &a.ctx->variables_version : nullptr,
                 s.bias ? dense::In<float>(a, 2) : nullptr, residual);
        return;
      }
      if (!FoldIsCurrent(*state, a, s.residual_index(), cacheable)) Fold(s, p, a, state.get());
      conv.Run(x, state->weight.data(), y, cacheable ? &a.ctx->variables_version : nullptr,
               state->bias.data(), residual);
    };
  }
}

// A bf16 conv2d_epilogue with a bias and / or activation (no batch norm to fold, plain
// layouts) on oneDNN's bf16 convolution with the epilogue fused in the primitive, where the
// CPU has bf16 instructions; empty, so widened, otherwise.
Kernel MakeNativeBf16(const Node& n) {
  const EpilogueSpec s = SpecOf(n.attrs(), ParamsOf(n));
  if (!cpu::NativeBf16Dense() || n.output()->type().dtype != DType::kBF16 || s.batch_norm ||
      s.residual || s.layout.src_blocked || s.layout.dst_blocked) {
    return nullptr;
  }
  cpu::ConvEpilogue epilogue;
  epilogue.bias = s.bias;
  epilogue.activation = s.activation;
  cpu::OnednnConv2d conv(ParamsOf(n), cpu::ConvPass::kForward, epilogue, {},
                         cpu::DenseType::kBF16);
  if (cpu::IsReferenceImplementation(conv.implementation()) ||
      (epilogue.any() && !conv.fused_in_primitive())) {
    return nullptr;
  }
  const bool prepack = IsWeight(n.input(1));
  const bool bias = s.bias;
  return [conv, prepack, bias](const KernelArgs& a) {
    conv.Run(a.inputs[0], a.inputs[1], a.outputs[0], prepack ? &a.ctx->variables_version : nullptr,
             bias ? a.inputs[2] : nullptr);
  };
}

// The kernels' element type of a float dtype (cpu::ElemType follows DType's order).
cpu::ElemType Elem(DType d) { return static_cast<cpu::ElemType>(d); }

// n half values (x's dtype) widened to f32.
std::vector<float> Widened(const void* x, DType half, int64_t n) {
  std::vector<float> out(n);
  cpu::CastBuffer(x, Elem(half), out.data(), cpu::ElemType::kF32, n);
  return out;
}

// w rounded to `half` (nearest even) in place, its half bits in `bits`.
template <typename Bits>
void RoundTo(DType half, std::vector<float>& w, Bits& bits) {
  const int64_t n = static_cast<int64_t>(w.size());
  bits.resize(w.size());
  cpu::CastBuffer(w.data(), cpu::ElemType::kF32, bits.data(), Elem(half), n);
  cpu::CastBuffer(bits.data(), Elem(half), w.data(), cpu::ElemType::kF32, n);
}

// The reference of a mixed node: the folded weight rounded to x's dtype (in double from the
// f32 parameters, as the CPU kernel folds), the convolution's loops in double on the widened x,
// then the shift and activation.
Kernel MakeMixedRef(const Node& n) {
  const cpu::Conv2dParams p = ParamsOf(n);
  const EpilogueSpec s = SpecOf(n.attrs(), p);
  const DType half = n.input(0)->type().dtype;
  return [p, s, half](const KernelArgs& a) {
    std::vector<double> scale(p.o), shift(p.o);
    FoldEpilogue<float>(s, a, p.o, scale.data(), shift.data());
    const int64_t per_channel = p.c / p.groups * p.kh * p.kw;
    const float* w = dense::In<float>(a, 1);
    std::vector<float> folded(p.o * per_channel);
    for (int64_t i = 0; i < static_cast<int64_t>(folded.size()); ++i) {
      folded[i] = static_cast<float>(w[i] * scale[i / per_channel]);
    }
    std::vector<uint16_t> bits;
    RoundTo(half, folded, bits);
    std::vector<double> wd(folded.begin(), folded.end()), xd(p.n * p.c * p.h * p.w),
        y(p.n * p.o * p.oh * p.ow);
    std::vector<float> xf = Widened(a.inputs[0], half, static_cast<int64_t>(xd.size()));
    if (s.layout.src_blocked) {
      std::vector<float> plain(xf.size());
      cpu::Reblock(xf.data(), plain.data(), p.n, p.c, p.h * p.w, false,
                   s.layout.src_block(p.c));
      xf.swap(plain);
    }
    std::copy(xf.begin(), xf.end(), xd.begin());
    cpu::Conv2dForwardRef<double>(p, xd.data(), wd.data(), y.data());
    const int64_t plane = p.oh * p.ow;
    std::vector<float> out(y.size());
    for (int64_t i = 0; i < static_cast<int64_t>(y.size()); ++i) {
      const int64_t o = (i / plane) % p.o;
      out[i] = static_cast<float>(cpu::ApplyActivation(s.activation, y[i] + shift[o]));
    }
    if (s.layout.dst_blocked) {
      cpu::Reblock(out.data(), dense::Out<float>(a, 0), p.n, p.o, plane, true,
                   s.layout.dst_block(p.o));
    } else {
      std::copy(out.begin(), out.end(), dense::Out<float>(a, 0));
    }
  };
}

// The CPU kernel of a mixed node: oneDNN's bf16 convolution with f32 bias (the shift) and
// result where the CPU has bf16 instructions; elsewhere (and for f16) the f32 convolution
// on x widened and the folded weight rounded to x's dtype and widened back: the same
// numbers up to the order of the f32 sums. The folded, rounded weight is kept while the
// variables are unchanged, like the f32 fold.
Kernel MakeMixedCpu(const Node& n) {
  const cpu::Conv2dParams p = ParamsOf(n);
  const EpilogueSpec s = SpecOf(n.attrs(), p);
  const DType half = n.input(0)->type().dtype;
  cpu::ConvEpilogue epilogue;
  epilogue.bias = true;  // the shift: the bias and / or the batch norm's
  epilogue.activation = s.activation;
  bool native = half == DType::kBF16 && cpu::NativeBf16Dense();
  // Few output positions (cpu::PreferGemmEpilogue), where oneDNN's reorders cost more than
  // its convolution: one GEMM on the rounded weight, the shift and activation after it.
  std::shared_ptr<const cpu::Conv2dGemmEpilogue> gemm;
  std::optional<cpu::OnednnConv2d> conv;  // else oneDNN's convolution
  if (native && cpu::PreferGemmEpilogue(p)) {
    gemm = std::make_shared<const cpu::Conv2dGemmEpilogue>(p, s.layout, s.activation);
  } else {
    if (native) {
      conv.emplace(p, cpu::ConvPass::kForward, epilogue, s.layout, cpu::DenseType::kBF16ToF32);
      native = !cpu::IsReferenceImplementation(conv->implementation());
    }
    if (!native) conv.emplace(p, cpu::ConvPass::kForward, epilogue, s.layout);
  }
  // The fold is kept while the variables are unchanged when every input but x is a weight
  // or computed from weights alone (a squeeze-excite convolution's reshaped bias).
  bool cacheable = true;
  for (int i = 1; i < s.residual_index(); ++i) {
    cacheable = cacheable && IsWeightDerived(n.input(i));
  }
  struct Rounded {
    FoldedWeights fold;
    // The folded weight in x's dtype (native), 64-byte aligned (the GEMM reads it in place).
    std::vector<uint16_t, HostBufferAllocator<uint16_t>> bits;
  };
  auto state = std::make_shared<Rounded>();
  const int64_t x_numel = p.n * p.c * p.h * p.w;
  return [conv, gemm, s, p, half, native, cacheable, state, x_numel](const KernelArgs& a) {
    FoldedWeights& f = state->fold;
    if (!FoldIsCurrent(f, a, s.residual_index(), cacheable)) {
      // Native kernels read the weight's bf16 bits only: without a batch norm w itself is the
      // folded weight and is rounded straight from the input; the widened path also needs the
      // rounded weight in f32.
      Fold(s, p, a, &f, s.batch_norm || !native);
      if (native) {
        const float* w = s.batch_norm ? f.weight.data() : dense::In<float>(a, 1);
        const int64_t count = p.o * (p.c / p.groups) * p.kh * p.kw;
        state->bits.resize(static_cast<size_t>(count));
        cpu::CastBuffer(w, cpu::ElemType::kF32, state->bits.data(), Elem(half), count);
      } else {
        RoundTo(half, f.weight, state->bits);
      }
    }
    if (gemm) {
      gemm->Run(static_cast<const uint16_t*>(a.inputs[0]), state->bits.data(), f.bias.data(),
                dense::Out<float>(a, 0));
      return;
    }
    const uint64_t* version = cacheable ? &a.ctx->variables_version : nullptr;
    if (native) {
      conv->Run(a.inputs[0], state->bits.data(), a.outputs[0], version, f.bias.data());
      return;
    }
    const std::vector<float> x = Widened(a.inputs[0], half, x_numel);
    conv->Run(x.data(), f.weight.data(), a.outputs[0], version, f.bias.data());
  };
}

std::vector<OpSample> ConvEpilogueSamples() {
  struct Case {
    Shape x, w;
    bool bias, batch_norm;
    const char* activation;
    int64_t groups = 1;
    std::vector<int64_t> stride{1, 1}, padding{1, 1};
    bool src_blocked = false, dst_blocked = false;
    bool residual = false;
    bool channels_last = false;  // the blocked sides NHWC
  };
  const Case cases[] = {
      {{2, 3, 6, 6}, {8, 3, 3, 3}, true, false, "relu"},
      {{2, 3, 6, 6}, {8, 3, 3, 3}, false, true, "silu"},
      {{1, 4, 5, 5}, {4, 4, 1, 1}, true, true, "none", 1, {1, 1}, {0, 0}},
      {{2, 8, 7, 7}, {8, 1, 3, 3}, false, true, "relu", 8, {2, 2}},  // depthwise, strided
      {{1, 4, 6, 5}, {6, 2, 3, 3}, true, true, "sigmoid", 2},
      {{2, 3, 5, 5}, {5, 3, 3, 3}, false, true, "hardswish"},
      {{2, 3, 5, 5}, {5, 3, 3, 3}, true, false, "gelu"},
      {{1, 16, 4, 4}, {16, 16, 1, 1}, false, true, "gelu_tanh", 1, {1, 1}, {0, 0}},
      {{1, 2, 3, 3}, {3, 2, 3, 3}, false, false, "silu"},
      // channel-blocked input and / or output (block-conv-layout), 16 channels
      {{2, 16, 5, 5}, {16, 16, 3, 3}, true, true, "relu", 1, {1, 1}, {1, 1}, true, true},
      {{1, 16, 6, 6}, {16, 1, 3, 3}, false, true, "silu", 16, {2, 2}, {1, 1}, true, false},
      {{1, 3, 6, 6}, {32, 3, 3, 3}, true, false, "none", 1, {1, 1}, {1, 1}, false, true},
      // a residual added before the activation (fuse-conv-epilogue's residual blocks), NCHW
      // and blocked
      {{2, 3, 5, 5}, {4, 3, 3, 3}, false, true, "relu", 1, {1, 1}, {1, 1}, false, false, true},
      {{2, 16, 5, 5}, {16, 16, 3, 3}, false, true, "gelu", 1, {1, 1}, {1, 1}, true, true, true},
      {{1, 16, 6, 6}, {32, 16, 1, 1}, true, false, "none", 1, {2, 2}, {0, 0}, false, true, true},
      // depthwise into a blocked y with an exp-based activation (EfficientNet's blocks): the
      // epilogue where oneDNN does not fuse it (OnednnConv2d::RunEpilogueOurselves)
      {{2, 32, 7, 7}, {32, 1, 3, 3}, false, true, "silu", 32, {1, 1}, {1, 1}, true, true},
      {{2, 32, 6, 6}, {32, 1, 3, 3}, true, true, "sigmoid", 32, {2, 2}, {1, 1}, false, true},
      {{1, 32, 5, 5}, {32, 1, 3, 3}, true, false, "gelu", 32, {1, 1}, {1, 1}, true, true, true},
      // channels-last (NHWC) sides, with a residual and an epilogue oneDNN does not fuse
      {{2, 32, 5, 5}, {16, 32, 3, 3}, false, true, "relu", 1, {1, 1}, {1, 1}, true, true, true,
       true},
      {{2, 32, 6, 6}, {32, 1, 3, 3}, true, true, "silu", 32, {2, 2}, {1, 1}, true, false, false,
       true},
      {{1, 3, 6, 6}, {32, 3, 3, 3}, true, false, "none", 1, {1, 1}, {1, 1}, false, true, false,
       true},
  };
  std::vector<OpSample> out;
  for (const Case& c : cases) {
    OpSample s;
    s.attrs = {{"stride", c.stride},  {"padding", c.padding},      {"dilation", std::vector<int64_t>{1, 1}},
               {"groups", c.groups},  {"bias", c.bias},            {"batch_norm", c.batch_norm},
               {"eps", 1e-5},         {"activation", std::string(c.activation)},
               {"src_blocked", c.src_blocked}, {"dst_blocked", c.dst_blocked},
               {"src_channels_last", c.src_blocked && c.channels_last},
               {"dst_channels_last", c.dst_blocked && c.channels_last},
               {"residual", c.residual}};
    s.inputs = {F32(c.x), F32(c.w)};
    s.init = {InputInit::Normal(), InputInit::Normal()};
    const int64_t o = c.w[0];
    if (c.bias) {
      s.inputs.push_back(F32({o}));
      s.init.push_back(InputInit::Normal());
    }
    if (c.batch_norm) {
      for (int i = 0; i < 3; ++i) {
        s.inputs.push_back(F32({o}));
        s.init.push_back(InputInit::Normal());
      }
      s.inputs.push_back(F32({o}));
      s.init.push_back(InputInit::Uniform(0.5, 2.0));  // running_var > 0
    }
    if (c.residual) {
      const int64_t oh = (c.x[2] + 2 * c.padding[0] - c.w[2]) / c.stride[0] + 1;
      const int64_t ow = (c.x[3] + 2 * c.padding[1] - c.w[3]) / c.stride[1] + 1;
      s.inputs.push_back(F32({c.x[0], o, oh, ow}));
      s.init.push_back(InputInit::Normal());
    }
    s.tolerance = 1e-4;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

void RegisterConvEpilogueOps(OpRegistry& r) {
  OpDef d;
  d.name = "conv2d_epilogue";
  d.num_inputs = -1;
  d.min_inputs = 2;
  d.attrs = {{"stride", std::vector<int64_t>{1, 1}},
             {"padding", std::vector<int64_t>{0, 0}},
             {"dilation", std::vector<int64_t>{1, 1}},
             {"groups", int64_t{1}},
             {"bias", false},
             {"batch_norm", false},
             {"eps", 1e-5},
             {"activation", std::string("none")},
             {"src_blocked", false},
             {"dst_blocked", false},
             {"src_channels_last", false},
             {"dst_channels_last", false},
             {"residual", false}};
  d.infer = InferConvEpilogue;
  d.not_differentiable = true;  // made after autodiff, by a pass
  // Mixed nodes (x half, the rest f32) are not uniform half nodes: half widening leaves them
  // to these factories, which route them to their own kernels.
  auto cpu = dense::FloatKernel(d.name, [](auto t, const Node& n) { return MakeCpu(t, n); });
  d.kernels[DeviceKind::kCpu] = [cpu](const Node& n) {
    return IsMixed(n) ? MakeMixedCpu(n) : cpu(n);
  };
  d.half_kernels[DeviceKind::kCpu] = MakeNativeBf16;
  auto ref = dense::FloatKernel(
      d.name, [](auto t, const Node& n) { return MakeRef<decltype(t)>(n); });
  d.kernels[DeviceKind::kReference] = [ref](const Node& n) {
    return IsMixed(n) ? MakeMixedRef(n) : ref(n);
  };
  d.flops = [](const Node& n) { return ConvFlops(ParamsOf(n)); };
  d.gemm = [](const Node& n) { return ConvGemm(ParamsOf(n), "conv2d"); };
  d.samples = ConvEpilogueSamples();
  d.doc = "act(bn(conv2d(x, w) + bias) + residual) in one pass over the output: optional "
          "bias [O], optional inference batch norm (weight, bias, running_mean, running_var "
          "[O], eps) folded into a per-channel scale and shift, optional residual of the "
          "output's shape and layout (f32 / f64), activation none, relu, gelu, gelu_tanh, "
          "silu, sigmoid or hardswish (oneDNN post-ops). src_blocked / dst_blocked: x / y are "
          "in oneDNN's nChw8c (nChw16c with AVX-512) layout, or NHWC with src_channels_last / "
          "dst_channels_last, handed between convolutions "
          "(channels divisible by 16). Mixed precision: x bf16 / f16 with w and the "
          "parameters f32 gives y f32, the folded weight rounded once to x's dtype. Made by the "
          "fuse-conv-epilogue and block-conv-layout passes";
  r.Register(std::move(d));
}

}  // namespace tg
