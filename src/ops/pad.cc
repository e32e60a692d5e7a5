// pad: constant padding (torch's constant_pad_nd, F.pad mode "constant"). `before[d]` and
// `after[d]` elements are added on each side of dimension d, filled with `value`; a
// negative amount crops instead. Its gradient is the pad of the incoming gradient by the
// negated amounts (crop what was added, zero-fill what was cropped).
#include <algorithm>
#include <cstring>

#include "ops/builder.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

constexpr int64_t kMaxPad = int64_t{1} << 40;

Shape PaddedShape(const TensorType& in, const AttrMap& attrs) {
  std::vector<int64_t> before = GetInts(attrs, "before"), after = GetInts(attrs, "after");
  TG_CHECK(before.size() == in.shape.size() && after.size() == in.shape.size(), kShape,
           "pad: expected `before` and `after` with one amount per dimension of ",
           in.ToString(), ", got ", before.size(), " and ", after.size());
  Shape out = in.shape;
  for (size_t d = 0; d < out.size(); ++d) {
    TG_CHECK(before[d] > -kMaxPad && before[d] < kMaxPad && after[d] > -kMaxPad &&
                 after[d] < kMaxPad, kShape, "pad: amount out of range in dimension ", d);
    out[d] = in.shape[d] + before[d] + after[d];
    TG_CHECK(out[d] >= 0, kShape, "pad: dimension ", d, " of ", in.ToString(),
             " would have negative size ", out[d]);
  }
  return out;
}

// Fills the output with `value`, then copies the part of the input that survives, a row
// (the last dimension) at a time.
KernelFactory PadFactory() {
  return [](const Node& n) -> Kernel {
    const TensorType in = n.input(0)->type(), out = n.output(0)->type();
    const std::vector<int64_t> before = GetInts(n.attrs(), "before");
    HostTensor fill(TensorType{in.dtype, {}});
    fill.SetFromDouble(0, GetFloat(n.attrs(), "value"));
    const size_t elem = SizeOf(in.dtype);
    const int rank = static_cast<int>(in.shape.size());
    return [in, out, before, fill, elem, rank](const KernelArgs& a) {
      uint8_t* y = static_cast<uint8_t*>(a.outputs[0]);
      const uint8_t* x = static_cast<const uint8_t*>(a.inputs[0]);
      const int64_t total = out.numel();
      for (int64_t i = 0; i < total; ++i) std::memcpy(y + i * elem, fill.data(), elem);
      if (total == 0 || in.numel() == 0) return;
      if (rank == 0) {
        std::memcpy(y, x, elem);
        return;
      }
      const int64_t in_cols = in.shape[rank - 1], out_cols = out.shape[rank - 1];
      // Columns of the input row that land in the output row.
      const int64_t c0 = std::max<int64_t>(0, -before[rank - 1]);
      const int64_t c1 = std::min<int64_t>(in_cols, out_cols - before[rank - 1]);
      if (c1 <= c0) return;
      const int64_t rows = in.numel() / in_cols;
      std::vector<int64_t> index(rank - 1, 0);  // the input row's index
      for (int64_t r = 0; r < rows; ++r) {
        int64_t out_row = 0;
        bool inside = true;
        for (int d = 0; d < rank - 1; ++d) {
          int64_t o = index[d] + before[d];
          inside = inside && o >= 0 && o < out.shape[d];
          out_row = out_row * out.shape[d] + o;
        }
        if (inside) {
          std::memcpy(y + (out_row * out_cols + c0 + before[rank - 1]) * elem,
                      x + (r * in_cols + c0) * elem, static_cast<size_t>(c1 - c0) * elem);
        }
        for (int d = rank - 2; d >= 0 && ++index[d] == in.shape[d]; --d) index[d] = 0;
      }
    };
  };
}

}  // namespace

void RegisterPadOps(OpRegistry& r) {
  OpDef d;
  d.name = "pad";
  d.traits.half_native = true;  // moves elements: any dtype
  d.attrs = {{"before", std::nullopt}, {"after", std::nullopt}, {"value", 0.0}};
  d.doc = "x with `before` / `after` elements of `value` added per dimension (negative crops)";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    return {{c.in(0).dtype, PaddedShape(c.in(0), c.attrs)}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    std::vector<int64_t> before = GetInts(g.attrs(), "before"), after = GetInts(g.attrs(), "after");
    for (int64_t& v : before) v = -v;
    for (int64_t& v : after) v = -v;
    return {g.b().Op1("pad", {g.GO(0)}, {{"before", before}, {"after", after}, {"value", 0.0}})};
  };
  d.kernels[DeviceKind::kCpu] = PadFactory();
  d.kernels[DeviceKind::kReference] = PadFactory();
  auto sample = [](Shape shape, std::vector<int64_t> before, std::vector<int64_t> after,
                   double value) {
    OpSample s;
    s.inputs = {TensorType{DType::kF32, std::move(shape)}};
    s.attrs = {{"before", before}, {"after", after}, {"value", value}};
    return s;
  };
  d.samples = {sample({2, 3}, {1, 0}, {0, 2}, 0.0), sample({3, 4}, {0, -1}, {1, 2}, 1.5),
               sample({2, 3, 4}, {1, 1, 1}, {1, 1, 1}, -2.0),
               sample({4, 5}, {-1, -2}, {-1, 1}, 0.0), sample({}, {}, {}, 0.0)};
  r.Register(std::move(d));
}

}  // namespace tg
