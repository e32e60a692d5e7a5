// topk: the k largest (or smallest) elements along an axis and their indices (torch.topk;
// torch.sort is topk with k = the axis' size). NaN counts as larger than every number, as in
// torch. Which of equal elements comes first is the `ties` attribute: "stable" (index
// order: torch.sort(stable=True), and what tilegraph's own decompositions rely on), or the
// order eager's CPU kernels leave, by running their algorithms on (value, index) pairs
// compared by value: "sort" (torch.sort's std::sort), "topk" (torch.topk's std::partial_sort
// when k * 64 <= n, else std::nth_element and a std::sort of the first k - 1) and
// "topk_unsorted" (sorted=False: the selection's order as it is) and "kthvalue" (torch's
// quickselect for the k-th smallest: only position k - 1 is ordered; the first k are the k
// smallest in the selection's order). Equal values' indices then
// match eager's, and so do the positions their gradients go back to (a scatter-add by the
// indices).
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

enum class Ties { kStable, kSort, kTopK, kTopKUnsorted, kKthValue };

Ties TiesOf(const AttrMap& attrs) {
  const std::string t = GetString(attrs, "ties");
  if (t == "stable") return Ties::kStable;
  if (t == "sort") return Ties::kSort;
  if (t == "topk") return Ties::kTopK;
  if (t == "kthvalue") return Ties::kKthValue;
  TG_CHECK(t == "topk_unsorted", kInvalidInput, "topk: ties must be stable, sort, topk, "
           "topk_unsorted or kthvalue, got ", t);
  return Ties::kTopKUnsorted;
}

// Puts the k-th smallest (0-based, NaN the largest) of row at position k by eager's
// quickselect for kthvalue (a median-of-three pivot moved to the front, Hoare partitions),
// so that equal values resolve to the same index.
template <typename T>
void QuickSelect(std::vector<std::pair<T, int64_t>>& row, int64_t k) {
  auto greater = [&](int64_t a, int64_t b) {  // row[a] > row[b], NaN the largest
    const T x = row[a].first, y = row[b].first;
    return (IsNan(x) && !IsNan(y)) || x > y;
  };
  auto swap = [&](int64_t a, int64_t b) { std::swap(row[a], row[b]); };
  int64_t lo = 0, hi = static_cast<int64_t>(row.size()) - 1;
  while (hi > lo) {
    if (hi == lo + 1) {
      if (greater(lo, hi)) swap(lo, hi);
      return;
    }
    swap(lo + (hi - lo) / 2, lo + 1);
    if (greater(lo + 1, hi)) swap(lo + 1, hi);
    if (greater(lo, hi)) swap(lo, hi);
    if (greater(lo + 1, lo)) swap(lo + 1, lo);
    int64_t i = lo + 1, j = hi;
    const T pivot = row[lo].first;
    auto above = [&](T x) { return (IsNan(x) && !IsNan(pivot)) || x > pivot; };
    auto below = [&](T x) { return (IsNan(pivot) && !IsNan(x)) || pivot > x; };
    while (true) {
      do ++i; while (below(row[i].first));
      do --j; while (above(row[j].first));
      if (j < i) break;
      swap(i, j);
    }
    swap(lo, j);
    if (j <= k) lo = i;
    if (j >= k) hi = j - 1;
  }
}

// Orders one row's (value, index) pairs so that the first k are the result, by `ties`'s
// algorithm (eager's comparators: by value alone, NaN the largest).
template <typename T>
void Select(std::vector<std::pair<T, int64_t>>& row, int64_t k, bool largest, Ties ties) {
  auto before = [largest](const std::pair<T, int64_t>& a, const std::pair<T, int64_t>& b) {
    if (largest) return (IsNan(a.first) && !IsNan(b.first)) || a.first > b.first;
    return (!IsNan(a.first) && IsNan(b.first)) || a.first < b.first;
  };
  const int64_t n = static_cast<int64_t>(row.size());
  switch (ties) {
    case Ties::kStable: return std::stable_sort(row.begin(), row.end(), before);
    case Ties::kSort: return std::sort(row.begin(), row.end(), before);
    case Ties::kKthValue:
      if (k > 0) QuickSelect(row, k - 1);
      return;
    case Ties::kTopK:
    case Ties::kTopKUnsorted:
      if (k == 0) return;
      if (k * 64 <= n) return std::partial_sort(row.begin(), row.begin() + k, row.end(), before);
      std::nth_element(row.begin(), row.begin() + (k - 1), row.end(), before);
      if (ties == Ties::kTopK) std::sort(row.begin(), row.begin() + (k - 1), before);
  }
}

template <typename T>
void TopK(const T* x, T* values, int64_t* indices, int64_t outer, int64_t length,
          int64_t inner, int64_t k, bool largest, Ties ties) {
  std::vector<std::pair<T, int64_t>> row(static_cast<size_t>(length));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const T* base = x + o * length * inner + i;
      for (int64_t j = 0; j < length; ++j) row[j] = {base[j * inner], j};
      Select(row, k, largest, ties);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t at = (o * k + j) * inner + i;
        values[at] = row[j].first;
        indices[at] = row[j].second;
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
    const Ties ties = TiesOf(n.attrs());
    int64_t outer = 1, inner = 1, length = t.shape[axis];
    for (int64_t d = 0; d < axis; ++d) outer *= t.shape[d];
    for (size_t d = axis + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
    const DType dtype = t.dtype;
    return [=](const KernelArgs& a) {
      auto* idx = static_cast<int64_t*>(a.outputs[1]);
      auto run = [&](auto tag) {
        using T = decltype(tag);
        TopK(static_cast<const T*>(a.inputs[0]), static_cast<T*>(a.outputs[0]), idx, outer,
             length, inner, k, largest, ties);
      };
      switch (dtype) {
        case DType::kF32: return run(float{});
        case DType::kF64: return run(double{});
        case DType::kI32: return run(int32_t{});
        case DType::kI64: return run(int64_t{});
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
  d.attrs = {{"k", std::nullopt}, {"axis", int64_t{-1}}, {"largest", int64_t{1}},
             {"ties", std::string("stable")}};
  d.doc = "(values, indices) of the k largest (largest=1) or smallest elements along `axis`, "
          "in order (but for ties = topk_unsorted); equal elements in `ties`' order: stable "
          "(by index), or as eager's CPU sort / topk / topk(sorted=False) leave them";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& t = c.in(0);
    TG_CHECK(t.dtype == DType::kF32 || t.dtype == DType::kF64 || t.dtype == DType::kI32 ||
                 t.dtype == DType::kI64, kShape, "topk: expected f32, f64, i32 or i64, got ",
             t.ToString());
    const int64_t axis = SortAxis(t, c.attrs);
    const int64_t k = GetInt(c.attrs, "k");
    TG_CHECK(TiesOf(c.attrs) != Ties::kKthValue || GetInt(c.attrs, "largest") == 0, kShape,
             "topk: ties = kthvalue selects the smallest (largest = 0)");
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
  auto sample = [](Shape shape, int64_t k, int64_t axis, int64_t largest,
                   std::string ties = "stable") {
    OpSample s;
    s.inputs = {TensorType{DType::kF32, std::move(shape)}};
    s.attrs = {{"k", k}, {"axis", axis}, {"largest", largest}, {"ties", std::move(ties)}};
    return s;
  };
  // Many equal values (no gradient check: a tie's finite difference is not its gradient).
  auto tied = [&](Shape shape, int64_t k, int64_t largest, std::string ties) {
    OpSample s = sample(std::move(shape), k, -1, largest, std::move(ties));
    s.init = {InputInit::Ints(0, 3)};
    s.skip_grad_check = true;
    return s;
  };
  d.samples = {sample({7}, 3, 0, 1), sample({3, 6}, 6, 1, 0), sample({5, 4}, 2, 0, 1),
               sample({2, 5, 3}, 4, 1, 0), sample({4, 9}, 9, 1, 1, "sort"),
               sample({3, 130}, 2, 1, 0, "topk"), sample({3, 20}, 5, 1, 1, "topk_unsorted"),
               tied({3, 40}, 40, 0, "sort"), tied({2, 200}, 3, 1, "topk"),
               tied({2, 50}, 7, 0, "topk"), tied({2, 50}, 7, 1, "topk_unsorted"),
               tied({3, 33}, 17, 0, "kthvalue"), sample({4, 9}, 3, 1, 0, "kthvalue")};
  r.Register(std::move(d));
}

}  // namespace tg
