// matmul: batched matrix product with optional transposes and numpy batch broadcasting.
// CPU kernel: oneDNN (f32), the reference loops for f64.
#include <string>

#include "kernels/cpu/dense_matmul.h"
#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/reference_dense.h"
#include "ops/builder.h"
#include "ops/dense_common.h"
#include "ops/families.h"

namespace tg {
namespace {

using dense::F32;

Shape BatchOf(const Shape& s) { return Shape(s.begin(), s.end() - 2); }

Shape PadLeft(const Shape& s, size_t rank) {
  Shape out(rank - s.size(), 1);
  out.insert(out.end(), s.begin(), s.end());
  return out;
}

cpu::MatmulParams ParamsOf(const TensorType& a, const TensorType& b, bool ta, bool tb) {
  cpu::MatmulParams p;
  p.trans_a = ta;
  p.trans_b = tb;
  p.m = ta ? a.shape[a.rank() - 1] : a.shape[a.rank() - 2];
  p.k = ta ? a.shape[a.rank() - 2] : a.shape[a.rank() - 1];
  p.n = tb ? b.shape[b.rank() - 2] : b.shape[b.rank() - 1];
  int64_t kb = tb ? b.shape[b.rank() - 1] : b.shape[b.rank() - 2];
  TG_CHECK(p.k == kb, kShape, "matmul: expected matching contraction dims, got a ", a.ToString(),
           (ta ? " (transposed)" : ""), " with K=", p.k, " and b ", b.ToString(),
           (tb ? " (transposed)" : ""), " with K=", kb);
  Shape ab = BatchOf(a.shape), bb = BatchOf(b.shape);
  size_t rank = std::max(ab.size(), bb.size());
  p.a_batch = PadLeft(ab, rank);
  p.b_batch = PadLeft(bb, rank);
  p.batch.resize(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t x = p.a_batch[i], y = p.b_batch[i];
    TG_CHECK(x == y || x == 1 || y == 1, kShape, "matmul: batch dims of a ", a.ToString(),
             " and b ", b.ToString(), " do not broadcast");
    p.batch[i] = x == 1 ? y : x;
  }
  return p;
}

cpu::MatmulParams ParamsOf(const Node& n) {
  return ParamsOf(n.input(0)->type(), n.input(1)->type(), GetBool(n.attrs(), "transpose_a"),
                  GetBool(n.attrs(), "transpose_b"));
}

double MatmulFlops(const Node& n) {
  cpu::MatmulParams p = ParamsOf(n);
  double batches = 1;
  for (int64_t b : p.batch) batches *= static_cast<double>(b);
  return 2.0 * batches * static_cast<double>(p.m) * static_cast<double>(p.n) *
         static_cast<double>(p.k);
}

GemmShape MatmulGemm(const Node& n) {
  cpu::MatmulParams p = ParamsOf(n);
  double batches = 1;
  for (int64_t b : p.batch) batches *= static_cast<double>(b);
  return {batches, static_cast<double>(p.m), static_cast<double>(p.n), static_cast<double>(p.k)};
}

std::vector<TensorType> InferMatmul(const InferContext& ctx) {
  const TensorType &a = ctx.in(0), &b = ctx.in(1);
  dense::CheckSameFloat(ctx, "matmul");
  TG_CHECK(a.rank() >= 2 && b.rank() >= 2, kShape,
           "matmul: expected operands of rank >= 2, got a ", a.ToString(), " and b ",
           b.ToString());
  cpu::MatmulParams p = ParamsOf(a, b, GetBool(ctx.attrs, "transpose_a"),
                                 GetBool(ctx.attrs, "transpose_b"));
  Shape out = p.batch;
  out.push_back(p.m);
  out.push_back(p.n);
  return {TensorType{a.dtype, out}};
}

// dA and dB for C = op(A) op(B), before reduction over broadcast batch dims.
std::vector<Value*> GradMatmul(const GradContext& c) {
  Builder& b = c.b();
  Value *a = c.I(0), *w = c.I(1), *go = c.GO(0);
  bool ta = GetBool(c.attrs(), "transpose_a"), tb = GetBool(c.attrs(), "transpose_b");
  const Shape &as = a->type().shape, &ws = w->type().shape;
  Value* da = !ta ? b.MatMul(go, w, false, !tb)   // GO op(B)^T
                  : b.MatMul(w, go, tb, true);    // (GO op(B)^T)^T = op(B) GO^T
  Value* dw = nullptr;
  if (ws.size() == 2 && as.size() > 2 && !ta) {
    // One GEMM over the folded batch: A2 [B*M, K], GO2 [B*M, N].
    int64_t rows = NumElements(as) / as.back();
    Value* a2 = b.Reshape(a, {rows, as.back()});
    Value* go2 = b.Reshape(go, {rows, go->type().shape.back()});
    dw = !tb ? b.MatMul(a2, go2, true, false) : b.MatMul(go2, a2, true, false);
  } else {
    dw = !tb ? b.MatMul(a, go, !ta, false)  // op(A)^T GO
             : b.MatMul(go, a, true, ta);   // (op(A)^T GO)^T = GO^T op(A)
  }
  return {b.SumToShape(da, as), b.SumToShape(dw, ws)};
}

std::vector<OpSample> MatmulSamples() {
  auto s = [](Shape a, Shape b, bool ta, bool tb) {
    OpSample x;
    x.inputs = {F32(std::move(a)), F32(std::move(b))};
    x.attrs = {{"transpose_a", ta}, {"transpose_b", tb}};
    x.tolerance = 1e-4;
    return x;
  };
  return {s({3, 4}, {4, 5}, false, false),       s({4, 3}, {4, 5}, true, false),
          s({3, 4}, {5, 4}, false, true),        s({4, 3}, {5, 4}, true, true),
          s({2, 3, 4}, {2, 4, 5}, false, false), s({2, 4, 3}, {2, 5, 4}, true, true),
          s({2, 3, 4}, {4, 5}, false, false),    s({2, 3, 4}, {5, 4}, false, true),
          s({2, 4, 3}, {4, 5}, true, false),     s({3, 4}, {2, 4, 5}, false, false),
          s({4, 3}, {2, 5, 4}, true, true),      s({2, 1, 3, 4}, {3, 4, 2}, false, false),
          s({2, 1, 4, 3}, {3, 2, 4}, true, true), s({1, 1}, {1, 7}, false, false),
          // a batch of a's times one b: one GEMM over the folded batch (FoldSharedB)
          s({2, 3, 2, 4}, {1, 4, 5}, false, false)};
}

// ---- matmul_epilogue: act(op(a) @ op(b) + bias), made by passes/fuse_matmul_epilogue.cc ----

cpu::Activation ActivationOf(const Node& n) {
  cpu::Activation act = cpu::Activation::kNone;
  cpu::ActivationFromName(GetString(n.attrs(), "activation"), &act);
  return act;
}

std::vector<TensorType> InferMatmulEpilogue(const InferContext& ctx) {
  const std::string& act = GetString(ctx.attrs, "activation");
  TG_CHECK(act == "none" || act == "relu" || act == "gelu" || act == "gelu_tanh", kShape,
           "matmul_epilogue: expected activation none, relu, gelu or gelu_tanh, got \"", act,
           "\"");
  std::vector<TensorType> out = InferMatmul(ctx);
  const TensorType& bias = ctx.in(2);
  TG_CHECK(bias.dtype == out[0].dtype && bias.shape == Shape{out[0].shape.back()}, kShape,
           "matmul_epilogue: expected a bias of shape [", out[0].shape.back(), "] and dtype ",
           DTypeName(out[0].dtype), ", got ", bias.ToString());
  return out;
}

// The reference: the matmul's loops, then the bias and the activation per element.
template <typename T>
void MatmulEpilogueRef(const cpu::MatmulParams& p, cpu::Activation act,
                       const KernelArgs& a) {
  T* out = dense::Out<T>(a, 0);
  const T* bias = dense::In<T>(a, 2);
  cpu::MatmulRef<T>(p, dense::In<T>(a, 0), dense::In<T>(a, 1), out);
  int64_t total = p.m * p.n;
  for (int64_t d : p.batch) total *= d;
  for (int64_t i = 0; i < total; ++i) {
    out[i] = static_cast<T>(cpu::ApplyActivation(act, static_cast<double>(out[i]) + bias[i % p.n]));
  }
}

KernelFactory MatmulEpilogueKernel(bool reference) {
  return dense::FloatKernel("matmul_epilogue", [reference](auto t, const Node& n) -> Kernel {
    using T = decltype(t);
    cpu::MatmulParams p = ParamsOf(n);
    cpu::Activation act = ActivationOf(n);
    if constexpr (std::is_same_v<T, float>) {
      if (!reference) {
        const bool weight = IsWeightDerived(n.input(1));  // a Linear weight
        cpu::OnednnMatmul mm(p, {true, act},
                             weight ? cpu::PrepackB::kIfBlocked : cpu::PrepackB::kNo);
        return [mm, weight](const KernelArgs& a) {
          mm.Run(dense::In<float>(a, 0), dense::In<float>(a, 1), dense::Out<float>(a, 0),
                 dense::In<float>(a, 2), weight ? &a.ctx->variables_version : nullptr);
        };
      }
    }
    return [p, act](const KernelArgs& a) { MatmulEpilogueRef<T>(p, act, a); };
  });
}

// A bf16 matmul (or matmul_epilogue, whose bias is bf16 too) on native bf16 kernels when
// this CPU has them (cpu::NativeBf16Dense: tilegraph's AMX GEMM where the CPU has AMX, else
// oneDNN's AVX512_BF16 kernels; cpu::DenseMatmul); empty, so widened, otherwise. The same numbers as
// the widened kernel up to the order of the f32 sums: bf16 products are exact in f32, and
// the result is rounded once.
KernelFactory NativeBf16MatmulKernel(bool epilogue) {
  return [epilogue](const Node& n) -> Kernel {
    if (!cpu::NativeBf16Dense() || n.output()->type().dtype != DType::kBF16) return nullptr;
    cpu::MatmulParams p = ParamsOf(n);
    if (p.k == 0) return nullptr;
    const bool weight = IsWeightDerived(n.input(1));
    cpu::DenseMatmul mm(p, {epilogue, epilogue ? ActivationOf(n) : cpu::Activation::kNone},
                        weight ? cpu::PrepackB::kIfBlocked : cpu::PrepackB::kNo,
                        cpu::DenseType::kBF16);
    if (cpu::IsReferenceImplementation(mm.implementation())) return nullptr;
    return [mm, weight, epilogue](const KernelArgs& a) {
      mm.Run(a.inputs[0], a.inputs[1], a.outputs[0], epilogue ? a.inputs[2] : nullptr,
             weight ? &a.ctx->variables_version : nullptr);
    };
  };
}

std::vector<OpSample> MatmulEpilogueSamples() {
  auto s = [](Shape a, Shape b, bool ta, bool tb, const char* act) {
    OpSample x;
    int64_t n = tb ? b[b.size() - 2] : b.back();
    x.inputs = {F32(std::move(a)), F32(std::move(b)), F32({n})};
    x.attrs = {{"transpose_a", ta}, {"transpose_b", tb}, {"activation", std::string(act)}};
    x.tolerance = 1e-4;
    return x;
  };
  return {s({3, 4}, {4, 5}, false, false, "none"), s({3, 4}, {5, 4}, false, true, "relu"),
          s({4, 3}, {4, 5}, true, false, "gelu"), s({2, 3, 4}, {4, 5}, false, false, "gelu_tanh"),
          s({2, 3, 4}, {2, 5, 4}, false, true, "relu"), s({7, 16}, {16, 9}, false, false, "gelu"),
          s({3, 0}, {0, 5}, false, false, "gelu")};
}

void RegisterMatmulEpilogue(OpRegistry& r) {
  OpDef d;
  d.name = "matmul_epilogue";
  d.num_inputs = 3;
  d.attrs = {{"transpose_a", false}, {"transpose_b", false}, {"activation", std::string("none")}};
  d.infer = InferMatmulEpilogue;
  d.not_differentiable = true;  // made after autodiff, by a pass
  d.kernels[DeviceKind::kCpu] = MatmulEpilogueKernel(false);
  d.kernels[DeviceKind::kReference] = MatmulEpilogueKernel(true);
  d.half_kernels[DeviceKind::kCpu] = NativeBf16MatmulKernel(true);
  d.flops = MatmulFlops;
  d.gemm = MatmulGemm;
  d.samples = MatmulEpilogueSamples();
  d.doc = "act(op(a) @ op(b) + bias[N]) in one pass over the output (oneDNN bias and post-op); "
          "activation none, relu, gelu (erf) or gelu_tanh. Made by the fuse-matmul-epilogue "
          "pass from matmul -> add(bias) [-> relu / gelu]";
  r.Register(std::move(d));
}

}  // namespace

void RegisterMatmulOps(OpRegistry& r) {
  RegisterMatmulEpilogue(r);
  OpDef d;
  d.name = "matmul";
  d.num_inputs = 2;
  d.attrs = {{"transpose_a", false}, {"transpose_b", false}};
  d.infer = InferMatmul;
  d.grad = GradMatmul;
  d.kernels[DeviceKind::kCpu] = dense::FloatKernel("matmul", [](auto t, const Node& n) -> Kernel {
    using T = decltype(t);
    cpu::MatmulParams p = ParamsOf(n);
    if constexpr (std::is_same_v<T, float>) {
      const bool weight = IsWeightDerived(n.input(1));
      cpu::OnednnMatmul mm(p, {}, weight ? cpu::PrepackB::kIfBlocked : cpu::PrepackB::kNo);
      return [mm, weight](const KernelArgs& a) {
        mm.Run(dense::In<float>(a, 0), dense::In<float>(a, 1), dense::Out<float>(a, 0), nullptr,
               weight ? &a.ctx->variables_version : nullptr);
      };
    } else {
      return [p](const KernelArgs& a) {
        cpu::MatmulRef<T>(p, dense::In<T>(a, 0), dense::In<T>(a, 1), dense::Out<T>(a, 0));
      };
    }
  });
  d.half_kernels[DeviceKind::kCpu] = NativeBf16MatmulKernel(false);
  d.kernels[DeviceKind::kReference] = dense::FloatKernel("matmul", [](auto t, const Node& n) -> Kernel {
    using T = decltype(t);
    cpu::MatmulParams p = ParamsOf(n);
    return [p](const KernelArgs& a) {
      cpu::MatmulRef<T>(p, dense::In<T>(a, 0), dense::In<T>(a, 1), dense::Out<T>(a, 0));
    };
  });
  d.flops = MatmulFlops;
  d.gemm = MatmulGemm;
  d.samples = MatmulSamples();
  d.doc = "out[..., M, N] = op(a) @ op(b), op = optional transpose of the last two dims; "
          "batch dims broadcast";
  r.Register(std::move(d));
}

}  // namespace tg
