// conv2d (NCHW, OIHW weights, no bias) and its two backward ops. CPU kernels: oneDNN (f32;
// backward-weight of single-channel inputs over im2col columns, of convolutions with few
// output positions as one GEMM over im2col columns, of depthwise convolutions
// with small planes as direct loops; bf16 where the CPU has bf16 instructions), the
// reference loops for f64. After autodiff, block-conv-layout may put a node's x side and / or
// y side in oneDNN's channel-blocked layout (attributes src_blocked / dst_blocked): oneDNN
// reads and writes it directly; the other kernels run on NCHW copies.
#include <string>

#include "kernels/cpu/conv_depthwise_kernels.h"
#include "kernels/cpu/conv_im2col_kernels.h"
#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/reference_dense.h"
#include "ops/builder.h"
#include "ops/dense_common.h"
#include "ops/plain_copies.h"
#include "support/checked_math.h"
#include "ops/families.h"
#include "ops/conv.h"

namespace tg {

cpu::Conv2dParams ConvParams(const Shape& x, const Shape& w, const AttrMap& attrs,
                             const std::string& op) {
  TG_CHECK(x.size() == 4, kShape, op, ": expected input of rank 4 [N,C,H,W], got ",
           ShapeToString(x));
  TG_CHECK(w.size() == 4, kShape, op, ": expected weight of rank 4 [O,C/groups,kh,kw], got ",
           ShapeToString(w));
  auto stride = dense::GetPair(attrs, "stride", op);
  auto pad = dense::GetPair(attrs, "padding", op);
  auto dil = dense::GetPair(attrs, "dilation", op);
  int64_t groups = GetInt(attrs, "groups");
  TG_CHECK(stride[0] > 0 && stride[1] > 0 && dil[0] > 0 && dil[1] > 0 && pad[0] >= 0 &&
               pad[1] >= 0,
           kShape, op, ": expected positive stride and dilation and non-negative padding");
  TG_CHECK(groups > 0 && x[1] % groups == 0 && w[0] % groups == 0, kShape, op,
           ": expected channels ", x[1], " and out channels ", w[0], " divisible by groups ",
           groups);
  TG_CHECK(MulChecked(w[1], groups) == x[1], kShape, op, ": expected weight ", ShapeToString(w),
           " with ", x[1] / groups, " input channels per group for input ", ShapeToString(x),
           " and groups=", groups);
  cpu::Conv2dParams p;
  p.n = x[0], p.c = x[1], p.h = x[2], p.w = x[3];
  p.o = w[0], p.kh = w[2], p.kw = w[3];
  p.stride_h = stride[0], p.stride_w = stride[1];
  p.pad_h = pad[0], p.pad_w = pad[1];
  p.dil_h = dil[0], p.dil_w = dil[1];
  p.groups = groups;
  int64_t ext_h = AddChecked(MulChecked(p.dil_h, p.kh - 1), 1);
  int64_t ext_w = AddChecked(MulChecked(p.dil_w, p.kw - 1), 1);
  int64_t padded_h = AddChecked(p.h, MulChecked(2, p.pad_h));
  int64_t padded_w = AddChecked(p.w, MulChecked(2, p.pad_w));
  TG_CHECK(padded_h >= ext_h && padded_w >= ext_w, kShape, op,
           ": expected the padded input ", ShapeToString(x), " to hold the dilated kernel ",
           ShapeToString(w), ", got padded size [", padded_h, ",", padded_w,
           "] < [", ext_h, ",", ext_w, "]");
  p.oh = (padded_h - ext_h) / p.stride_h + 1;
  p.ow = (padded_w - ext_w) / p.stride_w + 1;
  return p;
}

Shape ConvOutShape(const cpu::Conv2dParams& p) { return {p.n, p.o, p.oh, p.ow}; }

cpu::ConvLayout ConvLayoutOf(const AttrMap& attrs, const cpu::Conv2dParams& p,
                             const std::string& op) {
  cpu::ConvLayout layout;
  // Absent in nodes made before the layout attributes existed (files, AddNode): NCHW.
  layout.src_blocked = GetFlag(attrs, "src_blocked");
  layout.dst_blocked = GetFlag(attrs, "dst_blocked");
  layout.src_channels_last = layout.src_blocked && GetFlag(attrs, "src_channels_last");
  layout.dst_channels_last = layout.dst_blocked && GetFlag(attrs, "dst_channels_last");
  // Blocked tensors have NCHW's size only when no channel block is padded (8 or 16 lanes).
  TG_CHECK(!layout.src_blocked || p.c % 16 == 0, kShape, op, ": src_blocked needs input "
           "channels divisible by 16, got ", p.c);
  TG_CHECK(!layout.dst_blocked || p.o % 16 == 0, kShape, op, ": dst_blocked needs output "
           "channels divisible by 16, got ", p.o);
  return layout;
}

GemmShape ConvGemm(const cpu::Conv2dParams& p, const std::string& op) {
  const double g = static_cast<double>(p.groups);
  const double pixels = static_cast<double>(p.n * p.oh * p.ow);
  const double window = static_cast<double>(p.kh * p.kw);
  const double in_per_group = static_cast<double>(p.c) / g;
  const double out_per_group = static_cast<double>(p.o) / g;
  if (op == "conv2d_backward_input") return {g, pixels, in_per_group, out_per_group * window};
  if (op == "conv2d_backward_weight") return {g, out_per_group, in_per_group * window, pixels};
  return {g, pixels, out_per_group, in_per_group * window};
}

namespace {

using dense::F32;

// Checks that the incoming gradient has the forward output's shape.
void CheckGradShape(const TensorType& go, const cpu::Conv2dParams& p, const std::string& op) {
  TG_CHECK(go.shape == ConvOutShape(p), kShape, op, ": expected output gradient of shape ",
           ShapeToString(ConvOutShape(p)), ", got ", go.ToString());
}

cpu::Conv2dParams ParamsOfNode(const Node& n) {
  if (n.op() == "conv2d") {
    return ConvParams(n.input(0)->type().shape, n.input(1)->type().shape, n.attrs(), n.op());
  }
  if (n.op() == "conv2d_backward_input") {
    return ConvParams(GetInts(n.attrs(), "input_shape"), n.input(1)->type().shape, n.attrs(),
                      n.op());
  }
  return ConvParams(n.input(1)->type().shape, GetInts(n.attrs(), "weight_shape"), n.attrs(),
                    n.op());
}

cpu::ConvPass PassOf(const Node& n) {
  if (n.op() == "conv2d") return cpu::ConvPass::kForward;
  if (n.op() == "conv2d_backward_input") return cpu::ConvPass::kBackwardInput;
  return cpu::ConvPass::kBackwardWeight;
}

template <typename T>
void RunRef(cpu::ConvPass pass, const cpu::Conv2dParams& p, const KernelArgs& a) {
  const T *in0 = dense::In<T>(a, 0), *in1 = dense::In<T>(a, 1);
  T* out = dense::Out<T>(a, 0);
  switch (pass) {
    case cpu::ConvPass::kForward: cpu::Conv2dForwardRef<T>(p, in0, in1, out); break;
    case cpu::ConvPass::kBackwardInput: cpu::Conv2dBackwardInputRef<T>(p, in0, in1, out); break;
    case cpu::ConvPass::kBackwardWeight: cpu::Conv2dBackwardWeightRef<T>(p, in0, in1, out); break;
  }
}

// The operands of `pass` that `layout` blocks: the x side is x (forward, backward-weight's
// in1) or dx (backward-input's output); the y side is y (forward's output) or dy (in0 of
// both backward passes).
std::vector<BlockedOperand> BlockedOperands(const cpu::Conv2dParams& p, cpu::ConvPass pass,
                                            const cpu::ConvLayout& layout) {
  const BlockedOperand x_side{false, 0, p.n, p.c, p.h * p.w, layout.src_block(p.c)};
  const BlockedOperand y_side{false, 0, p.n, p.o, p.oh * p.ow, layout.dst_block(p.o)};
  std::vector<BlockedOperand> out;
  // index 0, 1: in0, in1; 2: the output.
  auto add = [&](bool blocked, BlockedOperand o, int index) {
    o.output = index == 2;
    o.index = o.output ? 0 : index;
    if (blocked) out.push_back(o);
  };
  switch (pass) {
    case cpu::ConvPass::kForward:
      add(layout.src_blocked, x_side, 0);
      add(layout.dst_blocked, y_side, 2);
      break;
    case cpu::ConvPass::kBackwardInput:
      add(layout.dst_blocked, y_side, 0);
      add(layout.src_blocked, x_side, 2);
      break;
    case cpu::ConvPass::kBackwardWeight:
      add(layout.dst_blocked, y_side, 0);
      add(layout.src_blocked, x_side, 1);
      break;
  }
  return out;
}

// `plain` (a kernel on NCHW operands) run on NCHW copies of the blocked operands, its
// blocked output written back in the blocked layout: the kernels other than oneDNN's.
template <typename T>
Kernel OnPlainCopies(Kernel plain, std::vector<BlockedOperand> blocked) {
  if (blocked.empty()) return plain;
  return [plain = std::move(plain), blocked](const KernelArgs& a) {
    RunOnPlainCopies<T>(a, 2, 1, blocked, plain);
  };
}

std::vector<BlockedOperand> BlockedOperandsOf(const Node& n) {
  const cpu::Conv2dParams p = ParamsOfNode(n);
  return BlockedOperands(p, PassOf(n), ConvLayoutOf(n.attrs(), p, n.op()));
}

Kernel MakeRef(auto t, const Node& n) {
  using T = decltype(t);
  cpu::Conv2dParams p = ParamsOfNode(n);
  cpu::ConvPass pass = PassOf(n);
  return OnPlainCopies<T>([p, pass](const KernelArgs& a) { RunRef<T>(pass, p, a); },
                          BlockedOperandsOf(n));
}

// Whether a conv pass's weight operand (forward, backward-input) is a variable or constant
// whose blocked copy is kept across steps while the variables do not change
// (RunContext::variables_version).
bool PrepacksWeight(const Node& n) {
  return PassOf(n) != cpu::ConvPass::kBackwardWeight && IsWeight(n.input(1));
}

// Whether a depthwise backward-weight runs our direct loops: where oneDNN (`conv`, built for
// the same pass) has no depthwise kernel for the shape and falls back to a GEMM per group.
bool UsesDirectDepthwise(const cpu::Conv2dParams& p, cpu::ConvPass pass,
                         const cpu::OnednnConv2d& conv) {
  return pass == cpu::ConvPass::kBackwardWeight && cpu::IsDepthwise(p) &&
         conv.implementation().find("gemm") != std::string::npos;
}

Kernel MakeCpu(auto t, const Node& n) {
  using T = decltype(t);
  if constexpr (std::is_same_v<T, float>) {
    const cpu::Conv2dParams p = ParamsOfNode(n);
    const cpu::ConvLayout layout = ConvLayoutOf(n.attrs(), p, n.op());
    if (PassOf(n) == cpu::ConvPass::kBackwardWeight && cpu::PreferIm2colBackwardWeight(p)) {
      cpu::Conv2dBackwardWeightIm2col conv(p);
      return OnPlainCopies<float>([conv](const KernelArgs& a) {
        conv.Run(dense::In<float>(a, 0), dense::In<float>(a, 1), dense::Out<float>(a, 0));
      }, BlockedOperandsOf(n));
    }
    if (PassOf(n) == cpu::ConvPass::kBackwardWeight &&
        cpu::PreferGemmBackwardWeight(p, cpu::DenseType::kF32)) {
      cpu::Conv2dBackwardWeightGemm conv(p);
      return OnPlainCopies<float>([conv](const KernelArgs& a) {
        conv.Run(dense::In<float>(a, 0), dense::In<float>(a, 1), dense::Out<float>(a, 0));
      }, BlockedOperandsOf(n));
    }
    cpu::OnednnConv2d conv(p, PassOf(n), {}, layout);
    const bool channels_last = layout.src_channels_last || layout.dst_channels_last;
    if (!channels_last && UsesDirectDepthwise(p, PassOf(n), conv)) {  // blocked in place
      const int64_t block = cpu::ActivationBlock();
      cpu::Conv2dBackwardWeightDepthwise direct(p, layout.src_blocked ? block : 0,
                                                layout.dst_blocked ? block : 0);
      return [direct](const KernelArgs& a) {
        direct.Run(dense::In<float>(a, 0), dense::In<float>(a, 1), dense::Out<float>(a, 0));
      };
    }
    const bool prepack = PrepacksWeight(n);
    return [conv, prepack](const KernelArgs& a) {
      conv.Run(dense::In<float>(a, 0), dense::In<float>(a, 1), dense::Out<float>(a, 0),
               prepack ? &a.ctx->variables_version : nullptr);
    };
  } else {
    return MakeRef(t, n);
  }
}

// A bf16 convolution pass on oneDNN's bf16 kernels when this CPU has them
// (cpu::NativeBf16Dense); empty, so widened, otherwise (see NativeBf16MatmulKernel).
Kernel MakeNativeBf16(const Node& n) {
  if (!cpu::NativeBf16Dense() || n.output()->type().dtype != DType::kBF16) return nullptr;
  const cpu::Conv2dParams p = ParamsOfNode(n);
  if (!BlockedOperandsOf(n).empty()) return nullptr;  // widened: the f32 kernel's layouts
  if (cpu::PreferGemm(p, PassOf(n))) {  // GEMMs on the NCHW buffers (conv_im2col_kernels.h)
    if (PassOf(n) == cpu::ConvPass::kBackwardWeight) {
      cpu::Conv2dBackwardWeightGemm conv(p, cpu::DenseType::kBF16);
      return [conv](const KernelArgs& a) { conv.Run(a.inputs[0], a.inputs[1], a.outputs[0]); };
    }
    cpu::Conv2dGemm conv(p, PassOf(n), cpu::DenseType::kBF16);
    return [conv](const KernelArgs& a) { conv.Run(a.inputs[0], a.inputs[1], a.outputs[0]); };
  }
  cpu::OnednnConv2d conv(p, PassOf(n), {}, {}, cpu::DenseType::kBF16);
  if (cpu::IsReferenceImplementation(conv.implementation())) return nullptr;
  if (UsesDirectDepthwise(p, PassOf(n), conv)) return nullptr;  // widened: the direct loops
  const bool prepack = PrepacksWeight(n);
  return [conv, prepack](const KernelArgs& a) {
    conv.Run(a.inputs[0], a.inputs[1], a.outputs[0], prepack ? &a.ctx->variables_version : nullptr);
  };
}

std::vector<AttrSpec> ConvAttrs() {
  return {{"stride", std::vector<int64_t>{1, 1}},
          {"padding", std::vector<int64_t>{0, 0}},
          {"dilation", std::vector<int64_t>{1, 1}},
          {"groups", int64_t{1}},
          {"src_blocked", false},
          {"dst_blocked", false},
          {"src_channels_last", false},
          {"dst_channels_last", false}};
}

// Blocked layouts exist after autodiff only (block-conv-layout): a gradient rule sees none.
void CheckPlainForGrad(const GradContext& c) {
  for (const char* attr : {"src_blocked", "dst_blocked"}) {
    TG_CHECK(!HasAttr(c.attrs(), attr) || !GetBool(c.attrs(), attr), kInvalidInput,
             "a convolution with ", attr, " has no gradient rule (the attribute is set after "
             "autodiff, by block-conv-layout)");
  }
}

AttrMap ConvAttrsOf(const AttrMap& attrs) {
  AttrMap out;
  for (const char* k : {"stride", "padding", "dilation", "groups"}) out[k] = attrs.at(k);
  return out;
}

std::vector<Value*> GradConv(const GradContext& c) {
  CheckPlainForGrad(c);
  AttrMap in_attrs = ConvAttrsOf(c.attrs()), w_attrs = in_attrs;
  in_attrs["input_shape"] = c.I(0)->type().shape;
  w_attrs["weight_shape"] = c.I(1)->type().shape;
  Value* dx = c.b().Op1("conv2d_backward_input", {c.GO(0), c.I(1)}, in_attrs);
  Value* dw = c.b().Op1("conv2d_backward_weight", {c.GO(0), c.I(0)}, w_attrs);
  return {dx, dw};
}

struct ConvCase {
  Shape x, w;
  std::vector<int64_t> stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1;
  bool src_blocked = false, dst_blocked = false;  // (no gradient check: made after autodiff)
  bool channels_last = false;                     // the blocked sides NHWC
};

std::vector<ConvCase> ConvCases() {
  return {{{2, 3, 5, 5}, {4, 3, 3, 3}},
          {{1, 2, 7, 6}, {3, 2, 3, 3}, {2, 2}, {1, 1}},
          {{1, 2, 7, 7}, {2, 2, 3, 3}, {1, 1}, {2, 1}, {2, 2}},
          {{2, 4, 5, 5}, {6, 2, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 2},
          {{1, 3, 6, 6}, {3, 1, 3, 3}, {2, 2}, {1, 1}, {1, 1}, 3},
          {{2, 3, 4, 4}, {5, 3, 1, 1}},
          {{1, 2, 6, 7}, {2, 2, 2, 3}, {2, 1}, {1, 0}, {1, 2}},
          // single-channel inputs (the im2col backward-weight kernel): 9 and 6 taps, more
          // positions than a vector with a remainder, stride / padding / dilation
          {{2, 1, 7, 9}, {4, 1, 3, 3}, {1, 1}, {1, 1}},
          {{3, 1, 10, 11}, {5, 1, 3, 2}, {2, 1}, {0, 1}, {1, 2}},
          // few output positions in the batch (the GEMM backward-weight kernel): strided,
          // padded and dilated, a non-square window
          {{3, 16, 4, 5}, {8, 16, 3, 2}, {2, 1}, {1, 1}, {1, 2}},
          // bf16 backward-input as one GEMM (<= 128 positions): several 32-row strips of
          // positions and 32-column pairs of taps
          {{2, 16, 8, 6}, {24, 16, 3, 3}, {1, 1}, {1, 1}},
          // depthwise with small planes (where oneDNN's backward-weight falls back to GEMM
          // and the direct depthwise loops run): 5x5 on 2x2, strided and dilated 3x3
          {{2, 32, 2, 2}, {32, 1, 5, 5}, {1, 1}, {2, 2}, {1, 1}, 32},
          {{2, 16, 5, 4}, {16, 1, 3, 3}, {2, 2}, {1, 1}, {2, 1}, 16},
          // channel-blocked x side and / or y side (block-conv-layout; 16 channels): oneDNN
          // and the direct depthwise loops on the blocked layout
          {{2, 16, 5, 5}, {16, 16, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true, true},
          {{2, 16, 6, 6}, {32, 16, 3, 3}, {2, 2}, {1, 1}, {1, 1}, 1, true, false},
          {{1, 3, 5, 5}, {16, 3, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, false, true},
          {{2, 32, 2, 2}, {32, 1, 5, 5}, {1, 1}, {2, 2}, {1, 1}, 32, true, true},
          {{2, 32, 5, 4}, {32, 1, 5, 5}, {2, 1}, {2, 2}, {1, 1}, 32, true, false},
          {{2, 48, 3, 3}, {48, 1, 5, 5}, {1, 1}, {2, 2}, {1, 1}, 48, false, true},
          // channels-last (NHWC) sides: oneDNN's NHWC kernels, the plain-copy fallbacks
          {{2, 32, 5, 5}, {16, 32, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true, true, true},
          {{2, 16, 6, 6}, {48, 16, 1, 1}, {2, 2}, {0, 0}, {1, 1}, 1, false, true, true},
          {{2, 32, 5, 4}, {32, 1, 5, 5}, {2, 1}, {2, 2}, {1, 1}, 32, true, false, true},
          {{3, 16, 4, 5}, {16, 16, 3, 2}, {2, 1}, {1, 1}, {1, 2}, 1, true, true, true}};
}

AttrMap AttrsOf(const ConvCase& cc) {
  return {{"stride", cc.stride}, {"padding", cc.padding}, {"dilation", cc.dilation},
          {"groups", cc.groups}, {"src_blocked", cc.src_blocked},
          {"dst_blocked", cc.dst_blocked},
          {"src_channels_last", cc.src_blocked && cc.channels_last},
          {"dst_channels_last", cc.dst_blocked && cc.channels_last}};
}

// Samples of op `which` (0: conv2d, 1: backward input, 2: backward weight).
std::vector<OpSample> ConvSamples(int which) {
  std::vector<OpSample> out;
  for (const ConvCase& cc : ConvCases()) {
    OpSample s;
    s.attrs = AttrsOf(cc);
    s.tolerance = 1e-4;
    s.skip_grad_check = cc.src_blocked || cc.dst_blocked;
    cpu::Conv2dParams p = ConvParams(cc.x, cc.w, s.attrs, "conv2d");
    if (which == 0) {
      s.inputs = {F32(cc.x), F32(cc.w)};
    } else if (which == 1) {
      s.inputs = {F32(ConvOutShape(p)), F32(cc.w)};
      s.attrs["input_shape"] = cc.x;
    } else {
      s.inputs = {F32(ConvOutShape(p)), F32(cc.x)};
      s.attrs["weight_shape"] = cc.w;
    }
    out.push_back(std::move(s));
  }
  return out;
}

OpDef ConvDef(const std::string& name) {
  OpDef d;
  d.name = name;
  d.num_inputs = 2;
  d.attrs = ConvAttrs();
  d.kernels[DeviceKind::kCpu] = dense::FloatKernel(name, [](auto t, const Node& n) { return MakeCpu(t, n); });
  d.half_kernels[DeviceKind::kCpu] = MakeNativeBf16;
  d.kernels[DeviceKind::kReference] =
      dense::FloatKernel(name, [](auto t, const Node& n) { return MakeRef(t, n); });
  d.flops = [](const Node& n) { return ConvFlops(ParamsOfNode(n)); };
  d.gemm = [](const Node& n) { return ConvGemm(ParamsOfNode(n), n.op()); };
  return d;
}

}  // namespace

void RegisterConvOps(OpRegistry& r) {
  OpDef fwd = ConvDef("conv2d");
  fwd.infer = [](const InferContext& ctx) -> std::vector<TensorType> {
    dense::CheckSameFloat(ctx, "conv2d");
    auto p = ConvParams(ctx.in(0).shape, ctx.in(1).shape, ctx.attrs, "conv2d");
    ConvLayoutOf(ctx.attrs, p, "conv2d");
    return {TensorType{ctx.in(0).dtype, ConvOutShape(p)}};
  };
  fwd.grad = GradConv;
  fwd.samples = ConvSamples(0);
  fwd.doc = "y[N,O,oh,ow] = cross-correlation of x[N,C,H,W] with w[O,C/groups,kh,kw] "
            "(stride, zero padding, dilation, groups; no bias)";
  r.Register(std::move(fwd));

  OpDef bi = ConvDef("conv2d_backward_input");
  bi.attrs.push_back({"input_shape", std::nullopt});
  bi.infer = [](const InferContext& ctx) -> std::vector<TensorType> {
    const std::string op = "conv2d_backward_input";
    dense::CheckSameFloat(ctx, op);
    Shape xs = GetInts(ctx.attrs, "input_shape");
    const cpu::Conv2dParams p = ConvParams(xs, ctx.in(1).shape, ctx.attrs, op);
    CheckGradShape(ctx.in(0), p, op);
    ConvLayoutOf(ctx.attrs, p, op);
    return {TensorType{ctx.in(0).dtype, xs}};
  };
  // Differentiable, so that it also serves as transposed convolution (ConvTranspose2d):
  // it is conv2d's adjoint in its first input, so that input's gradient is conv2d of the
  // incoming gradient, and the weight's is conv2d_backward_weight(first input, gradient).
  bi.grad = [](const GradContext& c) -> std::vector<Value*> {
    CheckPlainForGrad(c);
    AttrMap conv_attrs = ConvAttrsOf(c.attrs()), w_attrs = conv_attrs;
    w_attrs["weight_shape"] = c.I(1)->type().shape;
    return {c.b().Op1("conv2d", {c.GO(0), c.I(1)}, conv_attrs),
            c.b().Op1("conv2d_backward_weight", {c.I(0), c.GO(0)}, w_attrs)};
  };
  bi.samples = ConvSamples(1);
  bi.doc = "dx of conv2d from (dy, w); input_shape gives x's shape. Also transposed "
           "convolution of dy by w";
  r.Register(std::move(bi));

  OpDef bw = ConvDef("conv2d_backward_weight");
  bw.attrs.push_back({"weight_shape", std::nullopt});
  bw.infer = [](const InferContext& ctx) -> std::vector<TensorType> {
    const std::string op = "conv2d_backward_weight";
    dense::CheckSameFloat(ctx, op);
    Shape ws = GetInts(ctx.attrs, "weight_shape");
    const cpu::Conv2dParams p = ConvParams(ctx.in(1).shape, ws, ctx.attrs, op);
    CheckGradShape(ctx.in(0), p, op);
    ConvLayoutOf(ctx.attrs, p, op);
    return {TensorType{ctx.in(0).dtype, ws}};
  };
  bw.not_differentiable = true;
  bw.samples = ConvSamples(2);
  bw.doc = "dw of conv2d from (dy, x); weight_shape gives w's shape";
  r.Register(std::move(bw));
}

}  // namespace tg
