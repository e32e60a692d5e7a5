// cumsum: the running sum along an axis (torch.cumsum), forward or, with `reverse`, from
// the end. Floating sums accumulate in double and integer sums in int64, as torch's CPU
// kernel does. Its gradient is the reverse cumulative sum of the incoming gradient.
#include <cstdint>

#include "ops/builder.h"
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
  TG_CHECK(axis >= -rank && axis < rank, kShape, "cumsum: axis ", axis, " out of range for ",
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

}  // namespace

void RegisterScanOps(OpRegistry& r) {
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
