// Point-cloud op family (torch_cluster's operators, PopTorch's fps and nearest), index
// results only, not differentiable (the indices are piecewise constant in the points):
//   farthest_point_sample(src [N, D], start [S] int) {ptr [S + 1], counts [S]} -> i64 [sum]
//   nearest_point(x [N, D], y [M, D], batch_x [N] int, batch_y [M] int)  -> i64 [N]
// See kernels/cpu/point_cloud_kernels.h for the algorithms, ties and errors. The front end
// computes counts as torch_cluster does (ceil(size * ratio) in the points' type) and a random
// start from the engine's generator when asked.
#include "kernels/cpu/point_cloud_kernels.h"
#include "ops/builder.h"
#include "ops/dispatch.h"
#include "ops/families.h"
#include "support/error.h"

namespace tg {
namespace {

bool IsIndex(DType d) { return d == DType::kI64 || d == DType::kI32; }

const TensorType& CheckPoints(const InferContext& c, size_t i, const char* op, const char* name) {
  const TensorType& t = c.in(i);
  TG_CHECK(IsFloating(t.dtype) && t.rank() == 2, kShape, op, ": expected floating points ",
           name, " [N, D], got ", t.ToString());
  return t;
}

void CheckIndexVector(const InferContext& c, size_t i, int64_t size, const char* op,
                      const char* name) {
  const TensorType& t = c.in(i);
  TG_CHECK(IsIndex(t.dtype) && t.shape == Shape{size}, kShape, op, ": expected integer ", name,
           " of shape [", size, "], got ", t.ToString());
}

// The segments of a farthest_point_sample node's attributes, checked against N points.
cpu::PointSegments SegmentsOf(const AttrMap& attrs, int64_t n) {
  cpu::PointSegments seg{GetInts(attrs, "ptr"), GetInts(attrs, "counts")};
  TG_CHECK(seg.ptr.size() >= 2 && seg.counts.size() + 1 == seg.ptr.size(), kInvalidInput,
           "farthest_point_sample: expected ptr with at least 2 entries and one count per "
           "segment, got ", seg.ptr.size(), " ptr entries and ", seg.counts.size(), " counts");
  TG_CHECK(seg.ptr.front() == 0 && seg.ptr.back() == n, kInvalidInput,
           "farthest_point_sample: ptr must run from 0 to the number of points ", n, ", got ",
           seg.ptr.front(), " ... ", seg.ptr.back());
  for (size_t s = 0; s < seg.counts.size(); ++s) {
    const int64_t size = seg.ptr[s + 1] - seg.ptr[s];
    TG_CHECK(size >= 0, kInvalidInput, "farthest_point_sample: ptr must be non-decreasing, got ",
             seg.ptr[s], " then ", seg.ptr[s + 1]);
    TG_CHECK(seg.counts[s] >= 0 && seg.counts[s] <= size, kInvalidInput,
             "farthest_point_sample: segment ", s, " has ", size, " points, cannot take ",
             seg.counts[s]);
  }
  return seg;
}

int64_t Total(const std::vector<int64_t>& v) {
  int64_t sum = 0;
  for (int64_t x : v) sum += x;
  return sum;
}

KernelFactory FpsFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    const TensorType& src = n.input(0)->type();
    const cpu::PointSegments seg = SegmentsOf(n.attrs(), src.shape[0]);
    const int64_t d = src.shape[1];
    const DType dtype = src.dtype;
    const bool start64 = n.input(1)->type().dtype == DType::kI64;
    return [=](const KernelArgs& a) {
      cpu::IntView start{a.inputs[1], start64};
      auto* out = static_cast<int64_t*>(a.outputs[0]);
      DispatchFloat(dtype, "farthest_point_sample", [&](auto t) {
        using T = decltype(t);
        auto* points = static_cast<const T*>(a.inputs[0]);
        if (reference) cpu::FarthestPointSampleRef(points, d, seg, start, out);
        else cpu::FarthestPointSample(points, d, seg, start, out);
      });
    };
  };
}

KernelFactory NearestFactory(bool reference) {
  return [reference](const Node& n) -> Kernel {
    cpu::NearestShape s;
    s.n = n.input(0)->type().shape[0];
    s.m = n.input(1)->type().shape[0];
    s.d = n.input(0)->type().shape[1];
    const DType dtype = n.input(0)->type().dtype;
    const bool bx64 = n.input(2)->type().dtype == DType::kI64;
    const bool by64 = n.input(3)->type().dtype == DType::kI64;
    return [=](const KernelArgs& a) {
      cpu::IntView bx{a.inputs[2], bx64}, by{a.inputs[3], by64};
      auto* out = static_cast<int64_t*>(a.outputs[0]);
      DispatchFloat(dtype, "nearest_point", [&](auto t) {
        using T = decltype(t);
        auto* x = static_cast<const T*>(a.inputs[0]);
        auto* y = static_cast<const T*>(a.inputs[1]);
        if (reference) cpu::NearestPointRef(x, y, bx, by, out, s);
        else cpu::NearestPoint(x, y, bx, by, out, s);
      });
    };
  };
}

// ---- samples ----------------------------------------------------------------------------

OpSample FpsSample(int64_t n, int64_t d, std::vector<int64_t> ptr, std::vector<int64_t> counts,
                   std::vector<double> start) {
  OpSample s;
  s.inputs = {{DType::kF32, {n, d}}, {DType::kI64, {static_cast<int64_t>(start.size())}}};
  s.init = {InputInit::Normal(), InputInit::Values(std::move(start))};
  s.attrs = {{"ptr", std::move(ptr)}, {"counts", std::move(counts)}};
  return s;
}

OpSample NearestSample(int64_t n, int64_t m, int64_t d, std::vector<double> bx,
                       std::vector<double> by) {
  OpSample s;
  s.inputs = {{DType::kF32, {n, d}}, {DType::kF32, {m, d}}, {DType::kI64, {n}},
              {DType::kI32, {m}}};
  s.init = {InputInit::Normal(), InputInit::Normal(), InputInit::Values(std::move(bx)),
            InputInit::Values(std::move(by))};
  return s;
}

// ---- ops --------------------------------------------------------------------------------

void RegisterFarthestPointSample(OpRegistry& r) {
  OpDef d;
  d.name = "farthest_point_sample";
  d.num_inputs = 2;
  d.attrs = {{"ptr", std::nullopt}, {"counts", std::nullopt}};
  d.doc = "Farthest point sampling (torch_cluster.fps): per segment [ptr[s], ptr[s+1]) of "
          "src [N, D], counts[s] points starting at start[s], each next the farthest from "
          "those taken; their indices into src (i64).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& src = CheckPoints(c, 0, "farthest_point_sample", "src");
    const cpu::PointSegments seg = SegmentsOf(c.attrs, src.shape[0]);
    CheckIndexVector(c, 1, static_cast<int64_t>(seg.counts.size()), "farthest_point_sample",
                     "start");
    return {{DType::kI64, {Total(seg.counts)}}};
  };
  d.not_differentiable = true;
  d.kernels[DeviceKind::kCpu] = FpsFactory(false);
  d.kernels[DeviceKind::kReference] = FpsFactory(true);
  d.samples = {FpsSample(10, 3, {0, 10}, {5}, {0}),
               FpsSample(19, 3, {0, 2, 3, 4, 9, 11, 19}, {1, 1, 1, 3, 2, 5}, {1, 0, 0, 4, 1, 7}),
               FpsSample(12, 2, {0, 0, 7, 12}, {0, 7, 2}, {0, 3, 0}),  // an empty segment
               FpsSample(200, 4, {0, 120, 200}, {40, 80}, {17, 0})};
  r.Register(std::move(d));
}

void RegisterNearestPoint(OpRegistry& r) {
  OpDef d;
  d.name = "nearest_point";
  d.num_inputs = 4;
  d.doc = "torch_cluster.nearest: for each row of x [N, D], the index of the nearest row of "
          "y [M, D] with the same (sorted) batch value (i64 [N]).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& x = CheckPoints(c, 0, "nearest_point", "x");
    const TensorType& y = CheckPoints(c, 1, "nearest_point", "y");
    TG_CHECK(y.dtype == x.dtype && y.shape[1] == x.shape[1], kShape,
             "nearest_point: expected y [M, ", x.shape[1], "] of x's dtype ",
             DTypeName(x.dtype), ", got ", y.ToString());
    CheckIndexVector(c, 2, x.shape[0], "nearest_point", "batch_x");
    CheckIndexVector(c, 3, y.shape[0], "nearest_point", "batch_y");
    return {{DType::kI64, {x.shape[0]}}};
  };
  d.not_differentiable = true;
  d.kernels[DeviceKind::kCpu] = NearestFactory(false);
  d.kernels[DeviceKind::kReference] = NearestFactory(true);
  d.samples = {NearestSample(9, 4, 3, {0, 0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0}),
               NearestSample(7, 6, 2, {0, 0, 1, 1, 1, 3, 3}, {0, 1, 1, 2, 3, 3}),
               NearestSample(300, 50, 3, std::vector<double>(300, 0.0),
                             std::vector<double>(50, 0.0))};
  r.Register(std::move(d));
}

}  // namespace

void RegisterPointCloudOps(OpRegistry& r) {
  RegisterFarthestPointSample(r);
  RegisterNearestPoint(r);
}

}  // namespace tg
