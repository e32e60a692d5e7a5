// ONNX Resize (and the older Upsample): nearest, linear and cubic interpolation, separable
// over the resized axes. Each resized axis gathers its source positions with index_select
// (constant indices, computed at import from the coordinate transformation and rounding
// modes) and, for linear / cubic, sums the taps with constant weights — so the result is
// differentiable and exact to ONNX's reference for every coordinate_transformation_mode
// except tf_crop_and_resize.
#include <cmath>

#include "onnx/converter.h"
#include "support/error.h"

namespace tg {
namespace {

using Outs = std::vector<Value*>;
using Ints = std::vector<int64_t>;

struct ResizeMode {
  std::string mode, ctm, nearest;
  double cubic_a = -0.75;
  bool exclude_outside = false;
};

// The source coordinate of output index i along an axis of `in` elements resized to `out`
// with scale `scale`.
double SourceCoordinate(const OnnxNode& n, const ResizeMode& m, int64_t i, int64_t in,
                        int64_t out, double scale) {
  const double x = static_cast<double>(i);
  if (m.ctm == "half_pixel") return (x + 0.5) / scale - 0.5;
  if (m.ctm == "pytorch_half_pixel") return out > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
  if (m.ctm == "align_corners") return out == 1 ? 0.0 : x * (in - 1) / static_cast<double>(out - 1);
  if (m.ctm == "asymmetric") return x / scale;
  if (m.ctm == "half_pixel_symmetric") {
    const double adjustment = out / (scale * in);
    const double center = in / 2.0;
    return center * (1 - adjustment) + (x + 0.5) / scale - 0.5;
  }
  n.Unsupported("coordinate_transformation_mode '" + m.ctm + "'");
}

int64_t NearestIndex(const OnnxNode& n, const ResizeMode& m, double x) {
  double r;
  if (m.nearest == "round_prefer_floor") r = (x - std::floor(x) == 0.5) ? std::floor(x) : std::round(x);
  else if (m.nearest == "round_prefer_ceil") r = (x - std::floor(x) == 0.5) ? std::ceil(x) : std::round(x);
  else if (m.nearest == "floor") r = std::floor(x);
  else if (m.nearest == "ceil") r = std::ceil(x);
  else n.Unsupported("nearest_mode '" + m.nearest + "'");
  return static_cast<int64_t>(r);
}

double CubicWeight(double d, double a) {
  d = std::fabs(d);
  if (d <= 1) return ((a + 2) * d - (a + 3)) * d * d + 1;
  if (d < 2) return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a;
  return 0;
}

// Taps (indices per output position) and their weights for one axis.
struct Taps {
  std::vector<Ints> index;              // [tap][out]
  std::vector<std::vector<double>> weight;
};

Taps TapsFor(const OnnxNode& n, const ResizeMode& m, int64_t in, int64_t out, double scale) {
  Taps t;
  auto clamp = [&](int64_t k) { return std::min<int64_t>(std::max<int64_t>(k, 0), in - 1); };
  const int taps = m.mode == "nearest" ? 1 : m.mode == "linear" ? 2 : 4;
  t.index.assign(taps, Ints(out));
  t.weight.assign(taps, std::vector<double>(out));
  for (int64_t i = 0; i < out; ++i) {
    double x = SourceCoordinate(n, m, i, in, out, scale);
    if (m.mode == "nearest") {
      t.index[0][i] = clamp(NearestIndex(n, m, x));
      t.weight[0][i] = 1;
    } else if (m.mode == "linear") {
      x = std::min(std::max(x, 0.0), static_cast<double>(in - 1));
      int64_t x0 = static_cast<int64_t>(std::floor(x));
      double w = x - x0;
      t.index[0][i] = clamp(x0);
      t.index[1][i] = clamp(x0 + 1);
      t.weight[0][i] = 1 - w;
      t.weight[1][i] = w;
    } else {
      int64_t x0 = static_cast<int64_t>(std::floor(x));
      double frac = x - x0, total = 0;
      for (int k = 0; k < 4; ++k) {
        int64_t pos = x0 - 1 + k;
        double w = CubicWeight(frac - (k - 1), m.cubic_a);
        if (m.exclude_outside && (pos < 0 || pos >= in)) w = 0;
        t.index[k][i] = clamp(pos);
        t.weight[k][i] = w;
        total += w;
      }
      if (m.exclude_outside && total != 0)
        for (int k = 0; k < 4; ++k) t.weight[k][i] /= total;
    }
  }
  return t;
}

Value* ConstantOf(Builder& b, DType dtype, const Shape& shape, const std::vector<double>& v) {
  HostTensor t({dtype, shape});
  for (size_t i = 0; i < v.size(); ++i) t.SetFromDouble(static_cast<int64_t>(i), v[i]);
  return b.graph().AddConstant(std::move(t));
}

Outs Resize(OnnxNode& n) {
  Builder& b = n.b();
  Value* x = n.input(0);
  const Shape in = x->type().shape;
  const int64_t rank = RankOf(x);
  ResizeMode m;
  m.mode = n.attr_string("mode", "nearest");
  if (m.mode != "nearest" && m.mode != "linear" && m.mode != "cubic") n.Unsupported("mode '" + m.mode + "'");
  const bool upsample_op = n.proto().op_type() == "Upsample";
  m.ctm = upsample_op || n.opset() < 11 ? "asymmetric"
                                        : n.attr_string("coordinate_transformation_mode", "half_pixel");
  m.nearest = upsample_op || n.opset() < 11 ? "floor" : n.attr_string("nearest_mode", "round_prefer_floor");
  m.cubic_a = n.attr_float("cubic_coeff_a", -0.75);
  m.exclude_outside = n.attr_int("exclude_outside", 0) != 0;
  if (m.mode == "linear" && n.opset() < 11) m.ctm = "asymmetric";
  Ints axes;
  if (n.has_attr("axes")) axes = NormalizeAxes(n, n.attr_ints("axes"), rank);
  else for (int64_t a = 0; a < rank; ++a) axes.push_back(a);

  // Scales and output sizes per axis.
  std::vector<double> scales(rank, 1.0);
  Ints out = in;
  Ints sizes;
  std::vector<double> given;
  if (upsample_op) {
    given = n.opset() < 9 ? n.attr_floats("scales") : n.floats_input(1);
  } else if (n.opset() < 11) {
    given = n.floats_input(1);
  } else if (n.has_input(3) && (!n.constant(3) || n.constant(3)->type().numel() > 0)) {
    sizes = n.ints_input(3);
  } else {
    given = n.floats_input(2);
  }
  if (!sizes.empty()) {
    TG_CHECK(sizes.size() == axes.size(), kInvalidInput, "Resize: ", sizes.size(), " sizes for ",
             axes.size(), " axes");
    std::string policy = n.attr_string("keep_aspect_ratio_policy", "stretch");
    double common = policy == "not_larger" ? 1e300 : 0.0;
    for (size_t i = 0; i < axes.size(); ++i) {
      double s = static_cast<double>(sizes[i]) / in[axes[i]];
      if (policy == "not_larger") common = std::min(common, s);
      else if (policy == "not_smaller") common = std::max(common, s);
    }
    for (size_t i = 0; i < axes.size(); ++i) {
      const int64_t a = axes[i];
      if (policy == "stretch") {
        scales[a] = static_cast<double>(sizes[i]) / in[a];
        out[a] = sizes[i];
      } else {
        scales[a] = common;
        out[a] = static_cast<int64_t>(std::round(common * in[a]));
      }
    }
  } else {
    TG_CHECK(given.size() == axes.size(), kInvalidInput, "Resize: ", given.size(),
             " scales for ", axes.size(), " axes");
    for (size_t i = 0; i < axes.size(); ++i) {
      TG_CHECK(given[i] > 0, kInvalidInput, "Resize: scale ", given[i], " must be positive");
      scales[axes[i]] = given[i];
      out[axes[i]] = static_cast<int64_t>(std::floor(in[axes[i]] * given[i]));
    }
  }
  if (n.attr_int("antialias", 0) != 0 && m.mode != "nearest")
    for (int64_t a = 0; a < rank; ++a)
      if (scales[a] < 1) n.Unsupported("antialias when downsampling");

  Value* y = x;
  for (int64_t a = 0; a < rank; ++a) {
    if (out[a] == in[a] && scales[a] == 1.0) continue;
    Taps taps = TapsFor(n, m, in[a], out[a], scales[a]);
    Shape weight_shape(rank, 1);
    weight_shape[a] = out[a];
    Value* sum = nullptr;
    for (size_t k = 0; k < taps.index.size(); ++k) {
      Value* idx = ConstantOf(b, DType::kI64, {out[a]}, std::vector<double>(taps.index[k].begin(), taps.index[k].end()));
      Value* picked = b.Op1("index_select", {y, idx}, {{"axis", a}});
      if (m.mode != "nearest")
        picked = b.Mul(picked, ConstantOf(b, x->type().dtype, weight_shape, taps.weight[k]));
      sum = sum ? b.Add(sum, picked) : picked;
    }
    y = sum;
  }
  return {y == x ? b.Op1("reshape", {x}, {{"shape", x->type().shape}}) : y};
}

}  // namespace

void AddResizeConverters(OnnxConverterTable& t) {
  t["Resize"] = Resize;
  t["Upsample"] = Resize;
}

}  // namespace tg
