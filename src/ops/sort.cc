// topk: the k largest (or smallest) elements along an axis and their indices, in order
// (torch.topk with sorted=True; torch.sort is topk with k = the axis' size). NaN counts as
// larger than every number, as in torch; ties keep index order. The gradient of the values
// goes back to the positions they came from (a scatter-add by the indices).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "ops/builder.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

int64_t SortAxis(const TensorType& t, const AttrMap& attrs) {
  const int64_t rank = static_cast<int64_t>(t.shape.size());
  int64_t axis = GetInt(attrs, "axis");
  TG_CHECK(rank > 0, kShape, "topk: expected a tensor of rank >= 1, got ", t.ToString());
  TG_CHECK(axis >= -rank && axis < rank, kShape, "topk: axis ", axis, " out of range for ",
           t.ToString());
  return axis < 0 ? axis + rank : axis;
}

template <typename T>
bool IsNan(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::isnan(v);
  } else {
    return false;
  }
}

template <typename T>
void TopK(const T* x, T* values, int64_t* indices, int64_t outer, int64_t length,
          int64_t inner, int64_t k, bool largest) {
  std::vector<int64_t> order(static_cast<size_t>(length));
  auto before = [largest](T a, T b) {  // a ranks before b
    if (IsNan(a) || IsNan(b)) return largest ? (IsNan(a) && !IsNan(b)) : (IsNan(b) && !IsNan(a));
    return largest ? a > b : a < b;
  };
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const T* base = x + o * length * inner + i;
      std::iota(order.begin(), order.end(), int64_t{0});
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return before(base[a * inner], base[b * inner]);
      });
      for (int64_t j = 0; j < k; ++j) {
        const int64_t at = (o * k + j) * inner + i;
        values[at] = base[order[j] * inner];
        indices[at] = order[j];
      }
    }
  }
}

KernelFactory TopKFactory() {
  return [](const Node& n) -> Kernel {
    const TensorType t = n.input(0)->type();
    const int64_t axis = SortAxis(t, n.attrs());
    const int64_t k = GetInt(n.attrs(), "k");
    const bool largest = GetInt(n.attrs(), "largest") != 0;
    int64_t outer = 1, inner = 1, length = t.shape[axis];
    for (int64_t d = 0; d < axis; ++d) outer *= t.shape[d];
    for (size_t d = axis + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
    const DType dtype = t.dtype;
    return [=](const KernelArgs& a) {
      auto* idx = static_cast<int64_t*>(a.outputs[1]);
      switch (dtype) {
        case DType::kF32:
          return TopK(static_cast<const float*>(a.inputs[0]), static_cast<float*>(a.outputs[0]),
                      idx, outer, length, inner, k, largest);
        case DType::kF64:
          return TopK(static_cast<const double*>(a.inputs[0]),
                      static_cast<double*>(a.outputs[0]), idx, outer, length, inner, k, largest);
        case DType::kI32:
          return TopK(static_cast<const int32_t*>(a.inputs[0]),
                      static_cast<int32_t*>(a.outputs[0]), idx, outer, length, inner, k, largest);
        case DType::kI64:
          return TopK(static_cast<const int64_t*>(a.inputs[0]),
                      static_cast<int64_t*>(a.outputs[0]), idx, outer, length, inner, k, largest);
        default:
          Fail(ErrorKind::kUnsupported, "topk: dtype ", DTypeName(dtype), " is not supported");
      }
    };
  };
}

}  // namespace

void RegisterSortOps(OpRegistry& r) {
  OpDef d;
  d.name = "topk";
  d.num_outputs = 2;
  d.attrs = {{"k", std::nullopt}, {"axis", int64_t{-1}}, {"largest", int64_t{1}}};
  d.doc = "(values, indices) of the k largest (largest=1) or smallest elements along `axis`, "
          "in order";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& t = c.in(0);
    TG_CHECK(t.dtype == DType::kF32 || t.dtype == DType::kF64 || t.dtype == DType::kI32 ||
                 t.dtype == DType::kI64, kShape, "topk: expected f32, f64, i32 or i64, got ",
             t.ToString());
    const int64_t axis = SortAxis(t, c.attrs);
    const int64_t k = GetInt(c.attrs, "k");
    TG_CHECK(k >= 0 && k <= t.shape[axis], kShape, "topk: k = ", k, " out of range for ",
             t.shape[axis], " elements along axis ", axis);
    Shape out = t.shape;
    out[axis] = k;
    return {{t.dtype, out}, {DType::kI64, out}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    const int64_t axis = SortAxis(g.I(0)->type(), g.attrs());
    return {b.Op1("scatter_add", {b.ZerosLike(g.I(0)), g.O(1), g.GO(0)}, {{"axis", axis}})};
  };
  d.kernels[DeviceKind::kCpu] = TopKFactory();
  d.kernels[DeviceKind::kReference] = TopKFactory();
  auto sample = [](Shape shape, int64_t k, int64_t axis, int64_t largest) {
    OpSample s;
    s.inputs = {TensorType{DType::kF32, std::move(shape)}};
    s.attrs = {{"k", k}, {"axis", axis}, {"largest", largest}};
    return s;
  };
  d.samples = {sample({7}, 3, 0, 1), sample({3, 6}, 6, 1, 0), sample({5, 4}, 2, 0, 1),
               sample({2, 5, 3}, 4, 1, 0)};
  r.Register(std::move(d));
}

}  // namespace tg
