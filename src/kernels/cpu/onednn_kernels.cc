// oneDNN matmul / conv2d wrappers; see onednn_kernels.h.
#include "kernels/cpu/onednn_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/onednn_weight_layout.h"
#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

using dnnl::memory;
using Dims = memory::dims;

// Strides of a [batch..., rows, cols] operand whose matrix is stored transposed or not.
Dims MatrixStrides(const std::vector<int64_t>& batch, int64_t rows, int64_t cols,
                   bool transposed) {
  Dims strides(batch.size() + 2);
  strides[batch.size()] = transposed ? 1 : cols;
  strides[batch.size() + 1] = transposed ? rows : 1;
  int64_t s = rows * cols;
  for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
    strides[d] = s;
    s *= batch[d];
  }
  return strides;
}

Dims Concat(const std::vector<int64_t>& batch, int64_t r, int64_t c) {
  Dims dims(batch.begin(), batch.end());
  dims.push_back(r);
  dims.push_back(c);
  return dims;
}

// Scratchpads. oneDNN's library-managed scratchpad is one buffer shared by every primitive
// created on a thread, and such a primitive must run on the thread that created it. A
// program's kernels are built on the compiling thread and run on replicas' and pipeline
// stages' threads, concurrently: with the shared buffer, two replicas' bf16 convolutions
// backward-weight wrote each other's scratch (a segfault). So every primitive here takes
// its scratchpad from the caller (scratchpad_mode::user): a buffer of the executing thread,
// grown to the largest a primitive on it asked for. Primitives run one after another on a
// thread (each execute returns when the primitive is done), so one buffer serves them all.
dnnl::primitive_attr UserScratchpad(dnnl::primitive_attr attr = {}) {
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

memory::desc ScratchpadOf(const dnnl::primitive& prim) {
  const dnnl_memory_desc_t* md =
      dnnl_primitive_desc_query_md(prim.get_primitive_desc(), dnnl_query_scratchpad_md, 0);
  return md != nullptr ? memory::desc(*md) : memory::desc();
}

// A reorder from `from` into `to` (memory objects: rebindable or kernel-owned).
BoundPrimitive MakeReorder(const memory& from, const memory& to) {
  BoundPrimitive reorder(dnnl::reorder(dnnl::reorder::primitive_desc(
      CpuEngine(), from.get_desc(), CpuEngine(), to.get_desc(), UserScratchpad())));
  reorder.Add(DNNL_ARG_FROM, from);
  reorder.Add(DNNL_ARG_TO, to);
  return reorder;
}

// The type of a dense kernel's operands, and of its result (and bias).
memory::data_type DataTypeOf(DenseType t) {
  return t == DenseType::kF32 ? memory::data_type::f32 : memory::data_type::bf16;
}
memory::data_type ResultTypeOf(DenseType t) {
  return t == DenseType::kBF16 ? memory::data_type::bf16 : memory::data_type::f32;
}

}  // namespace

bool NativeBf16Dense() {
  static const bool native = [] {
    const char* env = std::getenv("TILEGRAPH_NATIVE_HALF");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
    return (isa & bf16) == bf16;  // AVX512_BF16, or AMX (a superset in oneDNN's bits)
  }();
  return native;
}

bool IsReferenceImplementation(const std::string& implementation) {
  return implementation.rfind("ref", 0) == 0 || implementation.find(":ref") != std::string::npos;
}

const dnnl::engine& CpuEngine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

memory Rebindable(const memory::desc& md) { return memory(md, CpuEngine(), nullptr); }

BoundPrimitive::BoundPrimitive(dnnl::primitive prim) : prim_(std::move(prim)) {
  scratch_md_ = ScratchpadOf(prim_);
  if (scratch_md_.get_size() > 0) {
    scratch_ = Rebindable(scratch_md_);
    Add(DNNL_ARG_SCRATCHPAD, scratch_);
  }
}

void BoundPrimitive::Add(int arg, const memory& m) {
  memories_.push_back(m);
  args_.push_back({arg, m.get()});
}

void BoundPrimitive::Run(dnnl::stream& stream) const {
  if (scratch_md_.get_size() > 0) {
    // One buffer per thread, grown to the largest a primitive on it asked for: primitives
    // run one after another on a thread (each returns when done).
    thread_local std::vector<uint8_t> buffer;
    if (buffer.size() < scratch_md_.get_size()) buffer.resize(scratch_md_.get_size());
    scratch_.set_data_handle(buffer.data());
  }
  dnnl::error::wrap_c_api(dnnl_primitive_execute(prim_.get(), stream.get(),
                                                 static_cast<int>(args_.size()), args_.data()),
                          "could not execute a primitive");
}

namespace {

// The eltwise post-op computing `act` (alpha: swish's beta factor, 1 for SiLU). ReLU is
// ELU with alpha 0 (x > 0 ? x : 0 * (e^x - 1)): oneDNN's relu with alpha 0 is a max with 0,
// which turns NaN into 0 (a diverged training step showed a finite loss); ELU selects on
// x > 0, so NaN stays NaN, as in PyTorch (negative inputs give -0.0, equal to 0).
void AppendActivation(dnnl::post_ops& ops, Activation act) {
  using alg = dnnl::algorithm;
  switch (act) {
    case Activation::kNone: return;
    case Activation::kRelu: return ops.append_eltwise(1.0f, alg::eltwise_elu, 0.0f, 0.0f);
    case Activation::kGeluErf: return ops.append_eltwise(1.0f, alg::eltwise_gelu_erf, 0.0f, 0.0f);
    case Activation::kGeluTanh:
      return ops.append_eltwise(1.0f, alg::eltwise_gelu_tanh, 0.0f, 0.0f);
    case Activation::kSilu: return ops.append_eltwise(1.0f, alg::eltwise_swish, 1.0f, 0.0f);
    case Activation::kSigmoid: return ops.append_eltwise(1.0f, alg::eltwise_logistic, 0.0f, 0.0f);
    case Activation::kHardswish:
      return ops.append_eltwise(1.0f, alg::eltwise_hardswish, 0.0f, 0.0f);
  }
}

// Whether a convolution's activation runs as our vectorized pass over its finished output
// instead of as a oneDNN post-op. oneDNN's post-op injector evaluates an exp-based
// activation in the few vector registers the convolution's accumulators leave free: on one
// AVX-512 core, a SiLU after a 1x1 convolution 16 -> 96 (8 x 32 x 32) cost 0.46 ms in the
// post-op and 0.27 ms as a pass (EfficientNet-B0 inference 6% faster, a 3x3 CNN with GELU
// 5%). ReLU and hardswish cost the post-op next to nothing and stay in it.
bool ActivationAfterPrimitive(Activation act) {
  return act == Activation::kSilu || act == Activation::kSigmoid ||
         act == Activation::kGeluErf || act == Activation::kGeluTanh;
}

std::string ImplementationOf(const dnnl::primitive& prim) {
  const char* info = nullptr;
  dnnl_primitive_desc_query(prim.get_primitive_desc(), dnnl_query_impl_info_str, 0, &info);
  return info ? info : "";
}

}  // namespace


OnednnMatmul::OnednnMatmul(const MatmulParams& params, const MatmulEpilogue& epilogue,
                           PrepackB prepack_b, DenseType type)
    : n_(params.n), type_(type), epilogue_(epilogue) {
  const MatmulParams p = FoldSharedB(params);
  TG_CHECK(type != DenseType::kBF16ToF32 || !epilogue.bias, kInternal,
           "OnednnMatmul: bf16 to f32 takes no bias");
  int64_t batches = 1;
  for (int64_t d : p.batch) batches *= d;
  if (batches == 0 || p.m == 0 || p.n == 0) {
    empty_ = true;
    return;
  }
  if (p.k == 0) {
    TG_CHECK(type == DenseType::kF32, kInternal, "OnednnMatmul: an empty bf16 contraction");
    zero_fill_ = batches * p.m * p.n;
    return;
  }
  const auto f32 = DataTypeOf(type);  // the operands' type (bf16 where asked)
  a_md_ = memory::desc(Concat(p.a_batch, p.m, p.k), f32,
                       MatrixStrides(p.a_batch, p.m, p.k, p.trans_a));
  b_md_ = memory::desc(Concat(p.b_batch, p.k, p.n), f32,
                       MatrixStrides(p.b_batch, p.k, p.n, p.trans_b));
  out_md_ = memory::desc(Concat(p.batch, p.m, p.n), ResultTypeOf(type),
                         MatrixStrides(p.batch, p.m, p.n, false));
  dnnl::primitive_attr attr = UserScratchpad();
  if (epilogue.activation != Activation::kNone) {
    dnnl::post_ops ops;
    AppendActivation(ops, epilogue.activation);
    attr.set_post_ops(ops);
  }
  if (epilogue.bias) {
    std::vector<int64_t> ones(p.batch.size(), 1);
    bias_md_ = memory::desc(Concat(ones, 1, p.n), f32, MatrixStrides(ones, 1, p.n, false));
  }
  auto make_pd = [&](const memory::desc& b_md) {
    return epilogue.bias
               ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md_, b_md, bias_md_, out_md_),
                                              attr, CpuEngine())
               : dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md_, b_md, out_md_), attr,
                                              CpuEngine());
  };
  a_ = Rebindable(a_md_);
  b_ = Rebindable(b_md_);
  out_ = Rebindable(out_md_);
  if (epilogue.bias) bias_ = Rebindable(bias_md_);
  // The primitive on b as given (b_) or on b's packed copy (b_packed_).
  auto bind = [&](const dnnl::matmul::primitive_desc& pd, const memory& b) {
    BoundPrimitive prim{dnnl::matmul(pd)};
    prim.Add(DNNL_ARG_SRC, a_);
    prim.Add(DNNL_ARG_WEIGHTS, b);
    prim.Add(DNNL_ARG_DST, out_);
    if (epilogue.bias) prim.Add(DNNL_ARG_BIAS, bias_);
    return prim;
  };
  prim_ = bind(make_pd(b_md_), b_);
  const bool one_b = std::all_of(p.b_batch.begin(), p.b_batch.end(),
                                 [](int64_t d) { return d == 1; });
  if (prepack_b != PrepackB::kNo && one_b) {
    // Let oneDNN choose b's layout; keep its choice as PrepackB says.
    memory::desc b_any(b_md_.dims(), f32, memory::format_tag::any);
    dnnl::matmul::primitive_desc packed = make_pd(b_any);
    const dnnl::memory::desc chosen = packed.weights_desc();
    const bool blocked = chosen.data.format_kind == dnnl_blocked &&
                         chosen.data.format_desc.blocking.inner_nblks > 0;
    if ((blocked || prepack_b == PrepackB::kAnyLayout) && chosen != b_md_) {
      b_packed_ = memory(packed.weights_desc(), CpuEngine());
      packed_prim_ = bind(packed, b_packed_);
      b_reorder_ = MakeReorder(b_, b_packed_);
    }
  }
  stream_ = dnnl::stream(CpuEngine());
}

std::string OnednnMatmul::implementation() const {
  if (empty_ || zero_fill_ > 0) return "";
  return ImplementationOf(packs_b() ? packed_prim_.primitive() : prim_.primitive());
}

void OnednnMatmul::Run(const void* a, const void* b, void* out, const void* bias,
                       const uint64_t* b_version) const {
  if (empty_) return;
  if (zero_fill_ > 0) {  // an empty contraction: act(0 + bias), f32 only
    const float* bias_f32 = static_cast<const float*>(bias);
    float* out_f32 = static_cast<float*>(out);
    for (int64_t i = 0; i < zero_fill_; ++i) {
      double x = epilogue_.bias ? bias_f32[i % n_] : 0.0;
      out_f32[i] = static_cast<float>(ApplyActivation(epilogue_.activation, x));
    }
    return;
  }
  a_.set_data_handle(const_cast<void*>(a));
  b_.set_data_handle(const_cast<void*>(b));
  out_.set_data_handle(out);
  if (epilogue_.bias) bias_.set_data_handle(const_cast<void*>(bias));
  const BoundPrimitive* prim = &prim_;
  if (packs_b()) {
    PackedFrom& from = *packed_from_;
    const bool current = b_version != nullptr && from.data == b && from.version == *b_version;
    // Packed once and changed since, or no version to key a packed copy on: a weight that
    // changes every run, cheaper to read as it is.
    from.gave_up = !current && (from.packs >= 1 || b_version == nullptr);
    if (!from.gave_up) {
      if (!current) {
        b_reorder_.Run(stream_);
        from.data = b;
        from.version = *b_version;
        ++from.packs;
      }
      prim = &packed_prim_;
    }
  }
  prim->Run(stream_);
  stream_.wait();
}

int64_t ActivationBlock() {
  static const int64_t block = [] {
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    const bool avx512 = isa == dnnl::cpu_isa::avx512_core || isa == dnnl::cpu_isa::avx512_core_vnni ||
                        isa == dnnl::cpu_isa::avx512_core_bf16 ||
                        isa == dnnl::cpu_isa::avx512_core_amx || isa == dnnl::cpu_isa::avx512_mic ||
                        isa == dnnl::cpu_isa::avx512_mic_4ops;
    return avx512 ? int64_t{16} : int64_t{8};
  }();
  return block;
}

int64_t ConvLayout::src_block(int64_t c) const { return src_channels_last ? c : ActivationBlock(); }
int64_t ConvLayout::dst_block(int64_t o) const { return dst_channels_last ? o : ActivationBlock(); }

OnednnConv2d::OnednnConv2d(const Conv2dParams& p, ConvPass pass, const ConvEpilogue& epilogue,
                           const ConvLayout& layout, DenseType type)
    : type_(type), epilogue_(epilogue), layout_(layout), channels_(p.o), plane_(p.oh * p.ow),
      batch_(p.n) {
  TG_CHECK(type != DenseType::kBF16 || (!layout.src_blocked && !layout.dst_blocked), kInternal,
           "OnednnConv2d: blocked layouts are f32 (or bf16 to f32) only");
  TG_CHECK(type != DenseType::kBF16ToF32 || pass == ConvPass::kForward, kInternal,
           "OnednnConv2d: bf16 to f32 is forward only");
  TG_CHECK(!epilogue.residual || type == DenseType::kF32, kInternal,
           "OnednnConv2d: a residual epilogue is f32 only");
  out_numel_ = pass == ConvPass::kForward         ? p.n * p.o * p.oh * p.ow
               : pass == ConvPass::kBackwardInput ? p.n * p.c * p.h * p.w
                                                  : p.o * (p.c / p.groups) * p.kh * p.kw;
  if (p.n == 0 || p.o == 0 || p.oh == 0 || p.ow == 0 || p.c == 0) {
    empty_ = true;
    return;
  }
  using tag = memory::format_tag;
  const auto f32 = DataTypeOf(type);  // the operands' type (bf16 where asked)
  const auto result_type = ResultTypeOf(type);
  const tag blocked = ActivationBlock() == 16 ? tag::nChw16c : tag::nChw8c;
  // One position per channel and whole channel blocks: NCHW and the blocked layout are the
  // same bytes, so the operand is described blocked whatever it is (the squeeze-excite 1x1
  // convolutions on [N, C, 1, 1], where oneDNN picks the blocked layout: no reorder).
  const bool x_either = p.h * p.w == 1 && p.c % ActivationBlock() == 0;
  const bool y_either = p.oh * p.ow == 1 && p.o % ActivationBlock() == 0;
  const tag x_blocked = layout.src_channels_last ? tag::nhwc : blocked;
  const tag y_blocked = layout.dst_channels_last ? tag::nhwc : blocked;
  memory::desc x_md({p.n, p.c, p.h, p.w}, f32,
                    layout.src_blocked ? x_blocked : x_either ? blocked : tag::nchw);
  memory::desc y_md({p.n, p.o, p.oh, p.ow}, result_type,
                    layout.dst_blocked ? y_blocked : y_either ? blocked : tag::nchw);
  Dims w_dims = p.groups == 1 ? Dims{p.o, p.c, p.kh, p.kw}
                              : Dims{p.groups, p.o / p.groups, p.c / p.groups, p.kh, p.kw};
  memory::desc w_md(w_dims, f32, p.groups == 1 ? tag::oihw : tag::goihw);
  // "any": the primitive picks its layouts.
  memory::desc x_any(x_md.dims(), f32, tag::any), y_any(y_md.dims(), result_type, tag::any);
  memory::desc w_any(w_dims, f32, tag::any);
  Dims strides = {p.stride_h, p.stride_w};
  Dims dilates = {p.dil_h - 1, p.dil_w - 1};  // oneDNN counts extra gaps: 0 is dense
  Dims pad = {p.pad_h, p.pad_w};
  // PyTorch pads symmetrically; oneDNN's floor formula then gives the same oh / ow.
  Dims pad_r = pad;
  auto alg = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::desc fwd_desc(dnnl::prop_kind::forward_training, alg, x_any, w_any,
                                           y_any, strides, dilates, pad, pad_r);
  dnnl::convolution_forward::primitive_desc fwd_pd(fwd_desc, UserScratchpad(), CpuEngine());
  dnnl::primitive prim;
  switch (pass) {
    case ConvPass::kForward: {
      dnnl::convolution_forward::primitive_desc pd = fwd_pd;
      prim = dnnl::convolution_forward(fwd_pd);
      if (epilogue.any()) {
        // The epilogue in oneDNN's post-ops, unless that changes the kernel oneDNN picks
        // (post-ops it cannot fuse send it to a reference or GEMM implementation).
        dnnl::primitive_attr attr = UserScratchpad();
        dnnl::post_ops ops;
        residual_md_ = y_md;
        if (epilogue.residual) ops.append_binary(dnnl::algorithm::binary_add, residual_md_);
        const bool after = result_type == memory::data_type::f32 &&
                           ActivationAfterPrimitive(epilogue.activation);
        if (!after) AppendActivation(ops, epilogue.activation);
        attr.set_post_ops(ops);
        memory::desc bias_md({p.o}, result_type, tag::x);
        auto fused_desc = epilogue.bias
                              ? dnnl::convolution_forward::desc(
                                    dnnl::prop_kind::forward_training, alg, x_any, w_any,
                                    bias_md, y_any, strides, dilates, pad, pad_r)
                              : fwd_desc;
        dnnl::convolution_forward::primitive_desc fused_pd(fused_desc, attr, CpuEngine());
        dnnl::convolution_forward fused(fused_pd);
        if (ImplementationOf(fused) == ImplementationOf(prim)) {
          prim = fused;
          pd = fused_pd;
          fused_in_primitive_ = true;
          activation_after_primitive_ = after;
        }
      }
      SetOperand(0, DNNL_ARG_SRC, x_md, pd.src_desc(), false);
      SetOperand(1, DNNL_ARG_WEIGHTS, w_md, pd.weights_desc(), false);
      SetOperand(2, DNNL_ARG_DST, y_md, pd.dst_desc(), true);
      break;
    }
    case ConvPass::kBackwardInput: {
      dnnl::convolution_backward_data::desc d(alg, x_any, w_any, y_any, strides, dilates, pad,
                                              pad_r);
      dnnl::convolution_backward_data::primitive_desc pd(d, UserScratchpad(), CpuEngine(), fwd_pd);
      prim = dnnl::convolution_backward_data(pd);
      SetOperand(0, DNNL_ARG_DIFF_DST, y_md, pd.diff_dst_desc(), false);
      SetOperand(1, DNNL_ARG_WEIGHTS, w_md, pd.weights_desc(), false);
      SetOperand(2, DNNL_ARG_DIFF_SRC, x_md, pd.diff_src_desc(), true);
      break;
    }
    case ConvPass::kBackwardWeight: {
      dnnl::convolution_backward_weights::desc d(alg, x_any, w_any, y_any, strides, dilates,
                                                 pad, pad_r);
      dnnl::convolution_backward_weights::primitive_desc pd(d, UserScratchpad(), CpuEngine(),
                                                            fwd_pd);
      prim = dnnl::convolution_backward_weights(pd);
      SetOperand(0, DNNL_ARG_DIFF_DST, y_md, pd.diff_dst_desc(), false);
      SetOperand(1, DNNL_ARG_SRC, x_md, pd.src_desc(), false);
      SetOperand(2, DNNL_ARG_DIFF_WEIGHTS, w_md, pd.diff_weights_desc(), true);
      break;
    }
  }
  prim_ = BoundPrimitive(prim);
  for (const Operand& o : operands_) prim_.Add(o.arg, o.blocked ? o.blocked : o.user);
  if (fused_in_primitive_ && epilogue.bias) {
    bias_ = Rebindable(memory::desc({p.o}, result_type, tag::x));
    prim_.Add(DNNL_ARG_BIAS, bias_);
  }
  if (fused_in_primitive_ && epilogue.residual) {  // post-op 0: the binary add
    residual_ = Rebindable(residual_md_);
    prim_.Add(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, residual_);
  }
  stream_ = dnnl::stream(CpuEngine());
}

void OnednnConv2d::SetOperand(int i, int arg, const memory::desc& plain,
                              const memory::desc& chosen, bool is_output) {
  Operand& o = operands_[i];
  o.arg = arg;
  o.plain = plain;
  o.user = Rebindable(plain);
  if (chosen == plain) return;
  o.blocked = memory(chosen, CpuEngine());  // owned by the kernel, allocated once
  if (arg == DNNL_ARG_DIFF_WEIGHTS) {
    o.weight_block = InMajorWeightBlock(chosen);
    if (o.weight_block > 0) return;  // UnblockWeights instead of a reorder
  }
  o.reorder = is_output ? MakeReorder(o.blocked, o.user) : MakeReorder(o.user, o.blocked);
}

std::string OnednnConv2d::implementation() const {
  return empty_ ? "" : ImplementationOf(prim_.primitive());
}

void OnednnConv2d::ActivateInPlace(float* out) const {
  ParallelFor(out_numel_, 16384, [&](int64_t begin, int64_t end) {
    BiasActivate(epilogue_.activation, out + begin, end - begin, 0.0f);
  });
}

void OnednnConv2d::RunEpilogueOurselves(float* out, const float* bias,
                                        const float* residual) const {
  // The residual has y's layout: element k of y adds element k of the residual.
  auto at = [&](int64_t k) { return epilogue_.residual ? residual + k : nullptr; };
  if (layout_.dst_blocked) {  // [N, O / B, plane, B]: a bias per lane of each position
    const int64_t b = layout_.dst_block(channels_), blocks = channels_ / b;
    ParallelFor(batch_ * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* lane_bias = epilogue_.bias ? bias + (i % blocks) * b : nullptr;
        for (int64_t pos = 0; pos < plane_; ++pos) {
          const int64_t k = (i * plane_ + pos) * b;
          for (int64_t j = 0; j < b; ++j) {
            BiasActivate(epilogue_.activation, out + k + j, 1, lane_bias ? lane_bias[j] : 0.0f,
                         at(k + j));
          }
        }
      }
    });
    return;
  }
  ParallelFor(batch_ * channels_, std::max<int64_t>(1, 16384 / std::max<int64_t>(plane_, 1)),
              [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t o = i % channels_;
      const float shift = epilogue_.bias ? bias[o] : 0.0f;
      BiasActivate(epilogue_.activation, out + i * plane_, plane_, shift, at(i * plane_));
    }
  });
}

void OnednnConv2d::Run(const void* in0, const void* in1, void* out,
                       const uint64_t* in1_version, const void* bias,
                       const void* residual) const {
  TG_CHECK(!epilogue_.residual || residual != nullptr, kInternal,
           "OnednnConv2d: the epilogue's residual is missing");
  if (empty_) {  // zeros: all-zero bits in f32 and bf16 alike
    const bool bf16_result = ResultTypeOf(type_) == memory::data_type::bf16;
    std::memset(out, 0, static_cast<size_t>(out_numel_) * (bf16_result ? 2 : 4));
    return;
  }
  const void* ptrs[3] = {in0, in1, out};
  for (int i = 0; i < 3; ++i) {
    const Operand& o = operands_[i];
    o.user.set_data_handle(const_cast<void*>(ptrs[i]));
    if (!o.blocked || i == 2) continue;
    if (i == 1) {
      In1Cache& c = *cache_;
      const bool current = in1_version != nullptr && c.data == in1 && c.version == *in1_version;
      if (current) continue;
      c.data = in1_version != nullptr ? in1 : nullptr;
      c.version = in1_version != nullptr ? *in1_version : 0;
    }
    o.reorder.Run(stream_);
  }
  if (bias_) bias_.set_data_handle(const_cast<void*>(bias));
  if (residual_) residual_.set_data_handle(const_cast<void*>(residual));
  prim_.Run(stream_);
  const Operand& result = operands_[2];
  if (result.weight_block > 0) {
    stream_.wait();
    UnblockWeights(result.blocked.get_desc(), result.weight_block,
                   static_cast<const float*>(result.blocked.get_data_handle()),
                   static_cast<float*>(out));
  } else if (result.blocked) {
    result.reorder.Run(stream_);
  }
  stream_.wait();
  if (activation_after_primitive_) ActivateInPlace(static_cast<float*>(out));
  if (epilogue_.any() && !fused_in_primitive_) {
    TG_CHECK(ResultTypeOf(type_) == memory::data_type::f32, kInternal,
             "OnednnConv2d: a bf16 epilogue oneDNN did not fuse");
    RunEpilogueOurselves(static_cast<float*>(out), static_cast<const float*>(bias),
                         static_cast<const float*>(residual));
  }
}

}  // namespace tg::cpu
