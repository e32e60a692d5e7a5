// attention: dropout(softmax(q k^T * scale + mask, causal)) v as one op
// (scaled_dot_product_attention kept whole by the front end), and its backward. Dropout
// draws from the Philox stream keyed by the node's rng_key (the backward, built with the
// same attributes, regenerates the same mask). Shapes: q [N, Sq, D], k [N, Sk, D],
// v [N, Sk, Dv], mask (additive) [M, 1 or Sq, Sk] with M dividing N (entry b / (N / M) for
// batch entry b: one mask per sample for N = samples x heads); outputs [N, Sq, Dv] and the rows'
// log-sum-exp [N, Sq], which the backward uses to recompute the probabilities. Memory is
// O(N * S * D): no [Sq, Sk] score matrix is stored (kernels/cpu/attention_kernels.h).
#include <algorithm>

#include "kernels/cpu/attention_kernels.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

cpu::AttentionDims DimsOf(const std::vector<TensorType>& in, const AttrMap& attrs) {
  const TensorType &q = in[0], &k = in[1], &v = in[2], &mask = in[3];
  for (const TensorType* t : {&q, &k, &v, &mask}) {
    TG_CHECK(t->rank() == 3, kShape, "attention: expected rank-3 q, k, v and mask, got ",
             t->ToString());
    TG_CHECK(t->dtype == q.dtype && IsFloating(q.dtype), kShape,
             "attention: expected floating q, k, v, mask of one dtype, got ", t->ToString());
  }
  cpu::AttentionDims d;
  d.n = q.shape[0], d.sq = q.shape[1], d.d = q.shape[2];
  d.sk = k.shape[1], d.dv = v.shape[2];
  d.mask_n = mask.shape[0], d.mask_q = mask.shape[1];
  TG_CHECK(k.shape[0] == d.n && k.shape[2] == d.d && v.shape[0] == d.n && v.shape[1] == d.sk,
           kShape, "attention: q ", q.ToString(), ", k ", k.ToString(), ", v ", v.ToString(),
           " do not agree");
  TG_CHECK(d.mask_n >= 1 && d.n % d.mask_n == 0 && (d.mask_q == 1 || d.mask_q == d.sq) &&
               mask.shape[2] == d.sk, kShape, "attention: mask ", mask.ToString(),
           " must be [a divisor of ", d.n, ", 1 or ", d.sq, ", ", d.sk, "]");
  d.causal = GetInt(attrs, "causal") != 0;
  d.scale = GetFloat(attrs, "scale");
  d.dropout = GetFloat(attrs, "dropout_p");
  TG_CHECK(d.dropout >= 0 && d.dropout <= 1, kInvalidInput,
           "attention: expected 0 <= dropout_p <= 1, got ", d.dropout);
  d.key = static_cast<uint64_t>(GetInt(attrs, "rng_key"));
  return d;
}

// attention_backward's other operands: out and d out [N, Sq, Dv], lse and d lse [N, Sq], in
// q's dtype (the kernel reads them at those sizes).
void CheckBackwardOperands(const std::vector<TensorType>& in, const cpu::AttentionDims& d) {
  const Shape out{d.n, d.sq, d.dv}, lse{d.n, d.sq};
  const char* names[] = {"out", "lse", "d out", "d lse"};
  for (int i = 4; i < 8; ++i) {
    const Shape& want = i % 2 == 0 ? out : lse;
    TG_CHECK(in[i].shape == want && in[i].dtype == in[0].dtype, kShape,
             "attention_backward: expected ", names[i - 4], " of shape ", ShapeToString(want),
             " and dtype ", DTypeName(in[0].dtype), ", got ", in[i].ToString());
  }
}

// The dims with the run's random stream position (seed and step are known per call only).
cpu::AttentionDims AtRun(cpu::AttentionDims dims, const KernelArgs& a) {
  dims.seed = a.ctx->seed;
  dims.step = a.ctx->step;
  return dims;
}

std::vector<TensorType> InputTypes(const Node& n, size_t count) {
  std::vector<TensorType> types;
  for (size_t i = 0; i < count; ++i) types.push_back(n.input(i)->type());
  return types;
}

// Element counts of the operands in the order the kernels take them: q, k, v, mask, then
// the backward's out, lse, d out, d lse.
std::vector<int64_t> OperandSizes(const cpu::AttentionDims& d) {
  return {d.n * d.sq * d.d, d.n * d.sk * d.d,  d.n * d.sk * d.dv, d.mask_n * d.mask_q * d.sk,
          d.n * d.sq * d.dv, d.n * d.sq,        d.n * d.sq * d.dv, d.n * d.sq};
}

// The reference kernels run the generic loops in double on f32 operands (widened, the results
// rounded once), so the conformance tests check the f32 kernels' own blocked loops against
// them; `run(inputs, outputs)` takes double pointers. Outputs are the first inputs' shapes
// (backward: dq, dk, dv, dmask) or out and lse (forward).
template <typename Run>
void WidenedToDouble(const KernelArgs& a, const cpu::AttentionDims& dims, int inputs,
                     const std::vector<int64_t>& out_sizes, Run run) {
  const std::vector<int64_t> sizes = OperandSizes(dims);
  std::vector<std::vector<double>> in(static_cast<size_t>(inputs)), out;
  std::vector<const double*> in_ptrs;
  std::vector<double*> out_ptrs;
  for (int i = 0; i < inputs; ++i) {
    const float* x = static_cast<const float*>(a.inputs[i]);
    in[i].assign(x, x + sizes[i]);
    in_ptrs.push_back(in[i].data());
  }
  for (int64_t size : out_sizes) out.emplace_back(static_cast<size_t>(size));
  for (std::vector<double>& o : out) out_ptrs.push_back(o.data());
  run(in_ptrs, out_ptrs);
  for (size_t i = 0; i < out.size(); ++i) {
    std::transform(out[i].begin(), out[i].end(), static_cast<float*>(a.outputs[i]),
                   [](double x) { return static_cast<float>(x); });
  }
}

KernelFactory ForwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    cpu::AttentionDims dims = DimsOf(InputTypes(n, 4), n.attrs());
    DType dtype = n.input(0)->type().dtype;
    return [dims, dtype, reference](const KernelArgs& a) {
      if (reference && dtype == DType::kF32) {
        WidenedToDouble(a, dims, 4, {dims.n * dims.sq * dims.dv, dims.n * dims.sq},
                        [&](const std::vector<const double*>& in, const std::vector<double*>& out) {
                          cpu::AttentionForward(in[0], in[1], in[2], in[3], out[0], out[1],
                                                AtRun(dims, a));
                        });
        return;
      }
      DispatchFloat(dtype, "attention", [&](auto t) {
        using T = decltype(t);
        auto in = [&](int i) { return static_cast<const T*>(a.inputs[i]); };
        cpu::AttentionForward(in(0), in(1), in(2), in(3), static_cast<T*>(a.outputs[0]),
                              static_cast<T*>(a.outputs[1]), AtRun(dims, a));
      });
    };
  };
}

KernelFactory BackwardFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    cpu::AttentionDims dims = DimsOf(InputTypes(n, 4), n.attrs());
    DType dtype = n.input(0)->type().dtype;
    return [dims, dtype, reference](const KernelArgs& a) {
      if (reference && dtype == DType::kF32) {
        const std::vector<int64_t> sizes = OperandSizes(dims);
        WidenedToDouble(a, dims, 8, {sizes[0], sizes[1], sizes[2], sizes[3]},
                        [&](const std::vector<const double*>& in, const std::vector<double*>& out) {
                          cpu::AttentionBackward(in[0], in[1], in[2], in[3], in[4], in[5], in[6],
                                                 in[7], out[0], out[1], out[2], out[3],
                                                 AtRun(dims, a));
                        });
        return;
      }
      DispatchFloat(dtype, "attention_backward", [&](auto t) {
        using T = decltype(t);
        auto in = [&](int i) { return static_cast<const T*>(a.inputs[i]); };
        auto out = [&](int i) { return static_cast<T*>(a.outputs[i]); };
        cpu::AttentionBackward(in(0), in(1), in(2), in(3), in(4), in(5), in(6), in(7), out(0),
                               out(1), out(2), out(3), AtRun(dims, a));
      });
    };
  };
}

OpSample Sample(int64_t n, int64_t sq, int64_t sk, int64_t d, int64_t dv, Shape mask,
                int64_t causal, double dropout = 0.0) {
  OpSample s;
  s.inputs = {{DType::kF32, {n, sq, d}}, {DType::kF32, {n, sk, d}}, {DType::kF32, {n, sk, dv}},
              {DType::kF32, std::move(mask)}};
  s.attrs = {{"scale", 0.5}, {"causal", causal}, {"dropout_p", dropout},
             {"rng_key", int64_t{5}}};
  return s;
}

std::vector<AttrSpec> AttentionAttrs() {
  return {{"scale", std::nullopt}, {"causal", int64_t{0}}, {"dropout_p", 0.0},
          {"rng_key", int64_t{0}}};
}

// The products attention computes per (batch, head), as `products` GEMMs of the score
// matrix's size: q k^T and p v forward; the backward recomputes p and forms dv, dp, dq, dk.
GemmShapeFn AttentionGemm(int products) {
  return [products](const Node& n) {
    cpu::AttentionDims d = DimsOf(InputTypes(n, 4), n.attrs());
    return GemmShape{static_cast<double>(products * d.n), static_cast<double>(d.sq),
                     static_cast<double>(d.sk), static_cast<double>(std::max(d.d, d.dv))};
  };
}

}  // namespace

void RegisterAttentionOps(OpRegistry& r) {
  OpDef f;
  f.name = "attention";
  f.num_inputs = 4;
  f.num_outputs = 2;
  f.attrs = AttentionAttrs();
  f.traits.random = true;
  f.doc = "(dropout(softmax(q k^T * scale + mask [causal])) v, row log-sum-exp); no score "
          "matrix kept";
  f.infer = [](const InferContext& c) -> std::vector<TensorType> {
    cpu::AttentionDims d = DimsOf(c.inputs, c.attrs);
    DType t = c.in(0).dtype;
    return {{t, {d.n, d.sq, d.dv}}, {t, {d.n, d.sq}}};
  };
  f.grad = [](const GradContext& g) -> std::vector<Value*> {
    // A gradient may reach the output, the log-sum-exp, or both; a missing one is zero.
    if (g.GO(0) == nullptr && g.GO(1) == nullptr) return {nullptr, nullptr, nullptr, nullptr};
    Builder& b = g.b();
    Value* go = g.GO(0) ? g.GO(0) : b.ZerosLike(g.O(0));
    Value* glse = g.GO(1) ? g.GO(1) : b.ZerosLike(g.O(1));
    return b.Op("attention_backward",
                {g.I(0), g.I(1), g.I(2), g.I(3), g.O(0), g.O(1), go, glse}, g.attrs());
  };
  f.gemm = AttentionGemm(2);
  f.kernels[DeviceKind::kCpu] = ForwardFactory(false);
  f.kernels[DeviceKind::kReference] = ForwardFactory(true);
  f.samples = {Sample(2, 3, 4, 5, 3, {1, 1, 4}, 0), Sample(3, 4, 4, 2, 2, {3, 4, 4}, 1),
               Sample(1, 5, 3, 4, 6, {1, 5, 3}, 0), Sample(2, 4, 6, 3, 3, {2, 1, 6}, 1),
               // dropout: the gradient check holds only if the backward's mask is the forward's
               Sample(2, 4, 7, 3, 3, {1, 4, 7}, 0, 0.3), Sample(2, 5, 5, 2, 4, {2, 1, 5}, 1, 0.5),
               // one mask per sample over two heads each
               Sample(6, 4, 5, 3, 3, {3, 4, 5}, 0), Sample(4, 3, 6, 2, 2, {2, 1, 6}, 1, 0.2),
               // the f32 kernels' blocks: 8-row blocks with a ragged last one, 16-key vectors
               // with a tail, widths past one vector
               Sample(4, 19, 37, 18, 17, {2, 1, 37}, 1, 0.25), Sample(2, 17, 33, 16, 20, {1, 17, 33}, 0)};
  r.Register(std::move(f));

  OpDef b;
  b.name = "attention_backward";
  b.num_inputs = 8;
  b.num_outputs = 4;
  b.attrs = AttentionAttrs();
  b.traits.random = true;
  b.doc = "(dq, dk, dv, dmask) of attention from (q, k, v, mask, out, lse, d out, d lse), "
          "recomputing the probabilities from the lse";
  b.not_differentiable = true;
  b.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const cpu::AttentionDims d = DimsOf(c.inputs, c.attrs);
    CheckBackwardOperands(c.inputs, d);
    return {c.in(0), c.in(1), c.in(2), c.in(3)};
  };
  b.gemm = AttentionGemm(5);
  b.kernels[DeviceKind::kCpu] = BackwardFactory(false);
  b.kernels[DeviceKind::kReference] = BackwardFactory(true);
  // Its numbers are checked through attention's float64 gradient check; this sample runs
  // the kernel on its own (lse drawn where the probabilities stay finite).
  // lse drawn near the log of the key count and q, k, mask small, so that the probabilities
  // stay below 1 as the forward's would.
  auto backward_sample = [](OpSample s, double lse_lo, double lse_hi) {
    const Shape& q = s.inputs[0].shape;
    const int64_t dv = s.inputs[2].shape[2];
    s.inputs.insert(s.inputs.end(), {{DType::kF32, {q[0], q[1], dv}}, {DType::kF32, {q[0], q[1]}},
                                     {DType::kF32, {q[0], q[1], dv}}, {DType::kF32, {q[0], q[1]}}});
    const InputInit small = InputInit::Uniform(-0.5, 0.5);
    s.init = {small, small, InputInit::Normal(), InputInit::Uniform(-1.0, 0.0),
              InputInit::Normal(), InputInit::Uniform(lse_lo, lse_hi), InputInit::Normal(),
              InputInit::Normal()};
    return s;
  };
  b.samples = {backward_sample(Sample(2, 3, 4, 5, 3, {1, 1, 4}, 1), 1.0, 2.0),
               // the f32 kernel's blocks (as attention's last samples), dropout, shared masks
               backward_sample(Sample(4, 19, 37, 18, 17, {2, 1, 37}, 1, 0.25), 3.0, 4.0),
               backward_sample(Sample(2, 17, 33, 16, 20, {1, 17, 33}, 0), 3.0, 4.0)};
  r.Register(std::move(b));
}

}  // namespace tg
