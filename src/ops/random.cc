// Random ops on the counter-based Philox generator (kernels/cpu/philox.h): dropout, uniform,
// normal. Each node is keyed by (session seed, its "rng_key" attribute, assigned by the
// Builder) and draws with counter (step, element group), so results are reproducible and
// independent of thread count; the reference kernels run the same draws serially.
#include "kernels/cpu/random_kernels.h"
#include "ops/elementwise_common.h"
#include "ops/families.h"

namespace tg {
namespace {

KernelFactory DropoutKernel(bool parallel) {
  return [parallel](const Node& node) -> Kernel {
    double p = GetFloat(node.attrs(), "p");
    int64_t n = node.input(0)->type().numel();
    return DispatchFloat(node.input(0)->type().dtype, "dropout", [&](auto tag) -> Kernel {
      using T = decltype(tag);
      return [p, n, parallel, key = GetInt(node.attrs(), "rng_key")](const KernelArgs& a) {
        cpu::RngParams rng{a.ctx->seed, static_cast<uint64_t>(key), a.ctx->step};
        cpu::Dropout(static_cast<const T*>(a.inputs[0]), static_cast<T*>(a.outputs[0]),
                     static_cast<T*>(a.outputs[1]), n, p, rng, parallel);
      };
    });
  };
}

OpDef DropoutOp() {
  OpDef def;
  def.name = "dropout";
  def.num_inputs = 1;
  def.num_outputs = 2;
  def.attrs = {{"p", 0.5}, {"rng_key", int64_t{0}}};
  def.infer = [](const InferContext& c) {
    CheckFloating(c.in(0), "dropout", "input");
    double p = GetFloat(c.attrs, "p");
    TG_CHECK(p >= 0 && p <= 1, kInvalidInput, "dropout: expected 0 <= p <= 1, got ", p);
    return std::vector<TensorType>{c.in(0), c.in(0)};
  };
  def.grad = [](const GradContext& g) {
    return std::vector<Value*>{g.b().Mul(g.GO(0), g.O(1))};
  };
  def.traits.random = true;
  def.kernels[DeviceKind::kCpu] = DropoutKernel(true);
  def.kernels[DeviceKind::kReference] = DropoutKernel(false);
  for (double p : {0.5, 0.1}) {
    for (Shape shape : {Shape{3, 4}, Shape{}, Shape{300, 256}}) {
      OpSample s{{{DType::kF32, shape}}, {{"p", p}, {"rng_key", int64_t{3}}}};
      s.skip_grad_check = NumElements(shape) > 1000;
      def.samples.push_back(s);
    }
  }
  def.doc = "(x * mask, mask): mask is 0 with probability p, else 1 / (1 - p)";
  return def;
}

// uniform and normal: 0 inputs, attributes shape, dtype and two distribution parameters.
OpDef FillOp(const std::string& name, const std::string& a, double a_default,
             const std::string& b, double b_default, const std::string& doc) {
  OpDef def;
  def.name = name;
  def.num_inputs = 0;
  def.attrs = {{"shape", std::nullopt}, {a, a_default}, {b, b_default},
               {"dtype", DType::kF32}, {"rng_key", int64_t{0}}};
  def.infer = [name](const InferContext& c) {
    TensorType t{GetDType(c.attrs, "dtype"), GetInts(c.attrs, "shape")};
    CheckFloating(t, name, "dtype");
    for (int64_t d : t.shape) {
      TG_CHECK(d >= 0, kShape, name, ": expected a non-negative shape, got ",
               ShapeToString(t.shape));
    }
    return std::vector<TensorType>{t};
  };
  def.not_differentiable = true;
  def.traits.random = true;
  auto factory = [name, a, b](bool parallel) -> KernelFactory {
    return [name, a, b, parallel](const Node& node) -> Kernel {
      double pa = GetFloat(node.attrs(), a), pb = GetFloat(node.attrs(), b);
      int64_t n = node.output(0)->type().numel();
      bool normal = name == "normal";
      int64_t key = GetInt(node.attrs(), "rng_key");
      return DispatchFloat(node.output(0)->type().dtype, name, [&](auto tag) -> Kernel {
        using T = decltype(tag);
        return [=](const KernelArgs& args) {
          cpu::RngParams rng{args.ctx->seed, static_cast<uint64_t>(key), args.ctx->step};
          T* out = static_cast<T*>(args.outputs[0]);
          if (normal) {
            cpu::FillNormal(out, n, pa, pb, rng, parallel);
          } else {
            cpu::FillUniform(out, n, pa, pb, rng, parallel);
          }
        };
      });
    };
  };
  def.kernels[DeviceKind::kCpu] = factory(true);
  def.kernels[DeviceKind::kReference] = factory(false);
  for (Shape shape : {Shape{3, 4}, Shape{}, Shape{300, 257}}) {
    def.samples.push_back(OpSample{{}, {{"shape", shape}, {"rng_key", int64_t{1}}}});
    def.samples.push_back(OpSample{
        {}, {{"shape", shape}, {a, -2.0}, {b, 3.0}, {"dtype", DType::kF64}}});
  }
  def.doc = doc;
  return def;
}

// stochastic_round: f32 -> f16 / bf16 rounding that is unbiased (kernels/cpu/random_kernels.h);
// PopTorch's Precision.enableStochasticRounding for half-precision weight updates.
OpDef StochasticRoundOp() {
  OpDef def;
  def.name = "stochastic_round";
  def.num_inputs = 1;
  def.attrs = {{"dtype", std::nullopt}, {"rng_key", int64_t{0}}};
  def.infer = [](const InferContext& c) {
    DType to = GetDType(c.attrs, "dtype");
    CheckFloating(c.in(0), "stochastic_round", "input");
    TG_CHECK(IsHalf(to), kShape,
             "stochastic_round: dtype must be f16 or bf16, got ", DTypeName(to));
    return std::vector<TensorType>{{to, c.in(0).shape}};
  };
  def.not_differentiable = true;  // rounds optimizer updates, after the backward
  def.traits.random = true;
  def.traits.half_native = true;
  auto factory = [](bool parallel) -> KernelFactory {
    return [parallel](const Node& node) -> Kernel {
      bool bf16 = GetDType(node.attrs(), "dtype") == DType::kBF16;
      int64_t n = node.input(0)->type().numel(), key = GetInt(node.attrs(), "rng_key");
      auto from = static_cast<cpu::ElemType>(node.input(0)->type().dtype);
      return [=](const KernelArgs& a) {
        cpu::RngParams rng{a.ctx->seed, static_cast<uint64_t>(key), a.ctx->step};
        const float* x = static_cast<const float*>(a.inputs[0]);
        std::vector<float> wide;  // f64 / half inputs: through f32 (exact for half)
        if (from != cpu::ElemType::kF32) {
          wide.resize(n);
          cpu::CastBuffer(a.inputs[0], from, wide.data(), cpu::ElemType::kF32, n);
          x = wide.data();
        }
        cpu::StochasticRound(x, static_cast<uint16_t*>(a.outputs[0]), n, bf16, rng, parallel);
      };
    };
  };
  def.kernels[DeviceKind::kCpu] = factory(true);
  def.kernels[DeviceKind::kReference] = factory(false);
  for (DType to : {DType::kF16, DType::kBF16}) {
    for (Shape shape : {Shape{3, 4}, Shape{}, Shape{300, 257}}) {
      OpSample s{{{DType::kF32, shape}}, {{"dtype", to}, {"rng_key", int64_t{5}}}};
      // Against the f64 reference: within one step of the format (2^-7 relative for bf16).
      s.tolerance = to == DType::kF16 ? 1e-3 : 8e-3;
      def.samples.push_back(s);
    }
  }
  def.doc = "x rounded to f16 / bf16 stochastically: unbiased, keyed by the session's RNG";
  return def;
}

}  // namespace

void RegisterRandomOps(OpRegistry& r) {
  r.Register(DropoutOp());
  r.Register(StochasticRoundOp());
  r.Register(FillOp("uniform", "low", 0.0, "high", 1.0, "uniform in [low, high) of `shape`"));
  r.Register(FillOp("normal", "mean", 0.0, "std", 1.0, "normal(mean, std) of `shape`"));
}

}  // namespace tg
