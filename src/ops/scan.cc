// Ops along one axis. cumsum: the running sum (torch.cumsum), forward or, with `reverse`,
// from the end; its gradient is the reverse cumulative sum of the incoming gradient. prod:
// the product over the axis (the axis removed); its gradient, prod_backward, multiplies the
// incoming gradient by the product of the *other* elements (prefix times suffix products:
// exact where elements are zero, unlike prod / x). Floating results accumulate in double
// and integer ones in int64, as torch's CPU kernels do.
#include <cstdint>
#include <vector>

#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

int64_t ScanAxis(const TensorType& t, const AttrMap& attrs) {
  const int64_t rank = static_cast<int64_t>(t.shape.size());
  int64_t axis = GetInt(attrs, "axis");
  if (rank == 0) {
    TG_CHECK(axis == 0 || axis == -1, kShape, "cumsum: axis ", axis, " of a 0-d tensor");
    return 0;
  }
  TG_CHECK(axis >= -rank && axis < rank, kShape, "axis ", axis, " out of range for ",
           t.ToString());
  return axis < 0 ? axis + rank : axis;
}

template <typename T, typename Acc>
void Scan(const T* x, T* y, int64_t outer, int64_t length, int64_t inner, bool reverse) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      Acc sum = 0;
      for (int64_t k = 0; k < length; ++k) {
        const int64_t j = reverse ? length - 1 - k : k;
        const int64_t at = (o * length + j) * inner + i;
        sum += static_cast<Acc>(x[at]);
        y[at] = static_cast<T>(sum);
      }
    }
  }
}

KernelFactory CumsumFactory() {
  return [](const Node& n) -> Kernel {
    const TensorType t = n.input(0)->type();
    const int64_t axis = ScanAxis(t, n.attrs());
    const bool reverse = GetInt(n.attrs(), "reverse") != 0;
    int64_t outer = 1, inner = 1, length = t.shape.empty() ? 1 : t.shape[axis];
    for (int64_t d = 0; d < axis; ++d) outer *= t.shape[d];
    for (size_t d = axis + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
    const DType dtype = t.dtype;
    return [=](const KernelArgs& a) {
      const void* x = a.inputs[0];
      void* y = a.outputs[0];
      switch (dtype) {
        case DType::kF32:
          return Scan<float, double>(static_cast<const float*>(x), static_cast<float*>(y),
                                     outer, length, inner, reverse);
        case DType::kF64:
          return Scan<double, double>(static_cast<const double*>(x), static_cast<double*>(y),
                                      outer, length, inner, reverse);
        case DType::kI32:
          return Scan<int32_t, int64_t>(static_cast<const int32_t*>(x),
                                        static_cast<int32_t*>(y), outer, length, inner,
                                        reverse);
        case DType::kI64:
          return Scan<int64_t, int64_t>(static_cast<const int64_t*>(x),
                                        static_cast<int64_t*>(y), outer, length, inner,
                                        reverse);
        default:
          Fail(ErrorKind::kUnsupported, "cumsum: dtype ", DTypeName(dtype),
               " is not supported (f32, f64, i32, i64 are)");
      }
    };
  };
}

struct AxisSplit3 {
  int64_t outer = 1, length = 1, inner = 1;
};

AxisSplit3 Split(const TensorType& t, int64_t axis) {
  AxisSplit3 s;
  s.length = t.shape.empty() ? 1 : t.shape[axis];
  for (int64_t d = 0; d < axis; ++d) s.outer *= t.shape[d];
  for (size_t d = axis + 1; d < t.shape.size(); ++d) s.inner *= t.shape[d];
  return s;
}

template <typename T, typename Acc>
void Prod(const T* x, T* y, const AxisSplit3& s) {
  for (int64_t o = 0; o < s.outer; ++o) {
    for (int64_t i = 0; i < s.inner; ++i) {
      Acc p = 1;
      for (int64_t k = 0; k < s.length; ++k) p *= static_cast<Acc>(x[(o * s.length + k) * s.inner + i]);
      y[o * s.inner + i] = static_cast<T>(p);
    }
  }
}

// gx[o, k, i] = go[o, i] * prod_{j != k} x[o, j, i], from prefix and suffix products.
template <typename T>
void ProdBackward(const T* x, const T* go, T* gx, const AxisSplit3& s) {
  std::vector<double> suffix(static_cast<size_t>(s.length + 1));
  for (int64_t o = 0; o < s.outer; ++o) {
    for (int64_t i = 0; i < s.inner; ++i) {
      auto at = [&](int64_t k) { return (o * s.length + k) * s.inner + i; };
      suffix[s.length] = 1.0;
      for (int64_t k = s.length - 1; k >= 0; --k) suffix[k] = suffix[k + 1] * x[at(k)];
      double prefix = 1.0;
      const double g = static_cast<double>(go[o * s.inner + i]);
      for (int64_t k = 0; k < s.length; ++k) {
        gx[at(k)] = static_cast<T>(g * prefix * suffix[k + 1]);
        prefix *= static_cast<double>(x[at(k)]);
      }
    }
  }
}

KernelFactory ProdFactory() {
  return [](const Node& n) -> Kernel {
    const TensorType t = n.input(0)->type();
    const AxisSplit3 s = Split(t, ScanAxis(t, n.attrs()));
    const DType dtype = t.dtype;
    return [=](const KernelArgs& a) {
      switch (dtype) {
        case DType::kF32:
          return Prod<float, double>(static_cast<const float*>(a.inputs[0]),
                                     static_cast<float*>(a.outputs[0]), s);
        case DType::kF64:
          return Prod<double, double>(static_cast<const double*>(a.inputs[0]),
                                      static_cast<double*>(a.outputs[0]), s);
        case DType::kI32:
          return Prod<int32_t, int64_t>(static_cast<const int32_t*>(a.inputs[0]),
                                        static_cast<int32_t*>(a.outputs[0]), s);
        case DType::kI64:
          return Prod<int64_t, int64_t>(static_cast<const int64_t*>(a.inputs[0]),
                                        static_cast<int64_t*>(a.outputs[0]), s);
        default:
          Fail(ErrorKind::kUnsupported, "prod: dtype ", DTypeName(dtype), " is not supported");
      }
    };
  };
}

KernelFactory ProdBackwardFactory() {
  return [](const Node& n) -> Kernel {
    const TensorType t = n.input(0)->type();
    const AxisSplit3 s = Split(t, ScanAxis(t, n.attrs()));
    const DType dtype = t.dtype;
    return [=](const KernelArgs& a) {
      DispatchFloat(dtype, "prod_backward", [&](auto tag) {
        using T = decltype(tag);
        ProdBackward(static_cast<const T*>(a.inputs[0]), static_cast<const T*>(a.inputs[1]),
                     static_cast<T*>(a.outputs[0]), s);
      });
    };
  };
}

Shape Without(const Shape& shape, int64_t axis) {
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (static_cast<int64_t>(d) != axis) out.push_back(shape[d]);
  }
  return out;
}

void RegisterProd(OpRegistry& r) {
  OpDef d;
  d.name = "prod";
  d.attrs = {{"axis", std::nullopt}};
  d.doc = "product of x along `axis` (the axis removed)";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& t = c.in(0);
    TG_CHECK(t.rank() >= 1 && (t.dtype == DType::kF32 || t.dtype == DType::kF64 ||
                               t.dtype == DType::kI32 || t.dtype == DType::kI64),
             kShape, "prod: expected a f32, f64, i32 or i64 tensor of rank >= 1, got ",
             t.ToString());
    return {{t.dtype, Without(t.shape, ScanAxis(t, c.attrs))}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    return {g.b().Op1("prod_backward", {g.I(0), g.GO(0)}, g.attrs())};
  };
  d.kernels[DeviceKind::kCpu] = ProdFactory();
  d.kernels[DeviceKind::kReference] = ProdFactory();
  auto sample = [](Shape shape, int64_t axis, InputInit init) {
    OpSample s;
    s.inputs = {TensorType{DType::kF32, std::move(shape)}};
    s.attrs = {{"axis", axis}};
    s.init = {init};
    return s;
  };
  // Integer-valued samples hold exact zeros: the gradient must stay exact there.
  d.samples = {sample({5}, 0, InputInit::Uniform(0.5, 1.5)),
               sample({3, 4}, 1, InputInit::Normal()),
               sample({2, 3, 4}, -2, InputInit::Ints(-2, 2)),
               sample({4, 3}, 0, InputInit::Ints(-1, 1))};
  r.Register(std::move(d));

  OpDef b;
  b.name = "prod_backward";
  b.num_inputs = 2;
  b.attrs = {{"axis", std::nullopt}};
  b.doc = "gradient of prod: the incoming gradient times the product of the other elements";
  b.not_differentiable = true;
  b.infer = [](const InferContext& c) -> std::vector<TensorType> {
    CheckFloating(c.in(0), "prod_backward", "x");
    TG_CHECK(c.in(1).dtype == c.in(0).dtype &&
                 c.in(1).shape == Without(c.in(0).shape, ScanAxis(c.in(0), c.attrs)),
             kShape, "prod_backward: gradient ", c.in(1).ToString(), " does not match ",
             c.in(0).ToString());
    return {c.in(0)};
  };
  b.kernels[DeviceKind::kCpu] = ProdBackwardFactory();
  b.kernels[DeviceKind::kReference] = ProdBackwardFactory();
  OpSample s;
  s.inputs = {TensorType{DType::kF32, {3, 4}}, TensorType{DType::kF32, {3}}};
  s.attrs = {{"axis", int64_t{1}}};
  s.init = {InputInit::Ints(-2, 2), InputInit::Normal()};
  b.samples = {s};
  r.Register(std::move(b));
}

}  // namespace

void RegisterScanOps(OpRegistry& r) {
  RegisterProd(r);
  OpDef d;
  d.name = "cumsum";
  d.attrs = {{"axis", std::nullopt}, {"reverse", int64_t{0}}};
  d.doc = "running sum of x along `axis` (from the end when `reverse` is 1)";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    ScanAxis(c.in(0), c.attrs);
    TG_CHECK(c.in(0).dtype == DType::kF32 || c.in(0).dtype == DType::kF64 ||
                 c.in(0).dtype == DType::kI32 || c.in(0).dtype == DType::kI64,
             kShape, "cumsum: expected f32, f64, i32 or i64, got ", c.in(0).ToString());
    return {c.in(0)};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    const int64_t reverse = GetInt(g.attrs(), "reverse");
    return {g.b().Op1("cumsum", {g.GO(0)}, {{"axis", GetInt(g.attrs(), "axis")},
                                             {"reverse", int64_t{1 - reverse}}})};
  };
  d.kernels[DeviceKind::kCpu] = CumsumFactory();
  d.kernels[DeviceKind::kReference] = CumsumFactory();
  auto sample = [](Shape shape, int64_t axis, int64_t reverse) {
    OpSample s;
    s.inputs = {TensorType{DType::kF32, std::move(shape)}};
    s.attrs = {{"axis", axis}, {"reverse", reverse}};
    return s;
  };
  d.samples = {sample({5}, 0, 0), sample({3, 4}, 1, 0), sample({3, 4}, -2, 1),
               sample({2, 3, 4}, 1, 0), sample({}, 0, 0)};
  r.Register(std::move(d));
}

}  // namespace tg
