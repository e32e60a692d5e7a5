// Every op in f16 and bf16, generated over the registry like op_conformance_test.cc: for each
// op with floating operands, every sample's inputs are rounded to the half format, the op runs
// on the half values (its CPU and reference kernels, native or widened to f32, see
// ops/half_widening.h) and is compared with the f64 reference kernel on the same (rounded)
// values (held exactly in f32; the reference kernels compute in f64). Tolerances are in units of the format's epsilon (f16 2^-10, bf16 2^-7): a kernel that
// computes in f32 and rounds once is within half an epsilon; the gradient test allows the
// per-op rounding of a backward graph (a few ops deep).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autodiff/autodiff.h"
#include "ops/builder.h"
#include "ops/evaluate.h"
#include "ops/op_test_util.h"
#include "support/error.h"

namespace tg {
namespace {

using testing::BuildSingleOpGraph;
using testing::MakeSampleInputs;

double Epsilon(DType half) { return half == DType::kF16 ? 0x1p-10 : 0x1p-7; }

HostTensor Converted(const HostTensor& t, DType dtype) {
  if (!IsFloating(t.type().dtype)) return t;
  HostTensor out(TensorType{dtype, t.type().shape});
  for (int64_t i = 0; i < t.type().numel(); ++i) out.SetFromDouble(i, t.GetAsDouble(i));
  return out;
}

// max |a - b| / (1 + max |b|) over elements (a's values read as double; NaN / inf must agree).
double NormalizedError(const HostTensor& a, const HostTensor& b) {
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < b.type().numel(); ++i) {
    double y = b.GetAsDouble(i);
    if (std::isfinite(y)) scale = std::max(scale, std::fabs(y));
  }
  for (int64_t i = 0; i < b.type().numel(); ++i) {
    double x = a.GetAsDouble(i), y = b.GetAsDouble(i);
    if (!std::isfinite(x) || !std::isfinite(y)) {
      if (!(std::isnan(x) && std::isnan(y)) && x != y) return INFINITY;
      continue;
    }
    worst = std::max(worst, std::fabs(x - y));
  }
  return worst / (1.0 + scale);
}

bool HasFloatingInput(const OpSample& s) {
  for (const TensorType& t : s.inputs) {
    if (IsFloating(t.dtype)) return true;
  }
  return false;
}

// Ops with a sample that reads floating operands (the others never see a half value);
// `for_gradients`: differentiable ops with such a sample that the gradient check uses.
std::vector<const OpDef*> FloatingOps(bool for_gradients) {
  std::vector<const OpDef*> ops;
  for (const OpDef* def : OpRegistry::Global().All()) {
    if (for_gradients && def->not_differentiable) continue;
    // fused_elementwise's operand types are its body graph's; its half bodies are tested in
    // tests/unit/fusion_test.cc (HalfChainsKeepPerOpRounding).
    if (def->name == "fused_elementwise") continue;
    bool any = false;
    for (const OpSample& s : def->samples) {
      any = any || (HasFloatingInput(s) && !(for_gradients && s.skip_grad_check));
    }
    if (any) ops.push_back(def);
  }
  return ops;
}

std::string OpName(const ::testing::TestParamInfo<const OpDef*>& info) { return info.param->name; }

// Gradients that are discontinuous in the rounded values: d fmod(a, b) / db = -trunc(a / b),
// and a / b computed in the format may land on the other side of an integer. Not compared.
bool DiscontinuousGradient(const std::string& op, size_t input) {
  return op == "fmod" && input == 1;
}

bool HasDTypeAttr(const OpDef& def) {
  for (const AttrSpec& a : def.attrs) {
    if (a.name == "dtype") return true;
  }
  return false;
}

class OpHalf : public ::testing::TestWithParam<const OpDef*> {};
class OpHalfGradient : public ::testing::TestWithParam<const OpDef*> {};

TEST_P(OpHalf, KernelsMatchF64Reference) {
  const OpDef& def = *GetParam();
  for (DType half : {DType::kF16, DType::kBF16}) {
    for (size_t si = 0; si < def.samples.size(); ++si) {
      const OpSample& sample = def.samples[si];
      if (!HasFloatingInput(sample)) continue;
      SCOPED_TRACE(std::string(DTypeName(half)) + " sample " + std::to_string(si));
      std::mt19937_64 rng(std::hash<std::string>{}(def.name) + si);
      std::vector<HostTensor> h_in, ref_in;
      for (const HostTensor& t : MakeSampleInputs(sample, DType::kF32, rng)) {
        h_in.push_back(Converted(t, half));
        ref_in.push_back(Converted(h_in.back(), DType::kF32));  // the rounded values, exact
      }
      Graph hg, rg;
      Node* hn = nullptr;
      try {
        hn = BuildSingleOpGraph(hg, def.name, h_in, sample.attrs);
      } catch (const Error& e) {
        // Ops that are never widened and take no half operands (all_reduce_start / _done:
        // the done finds its start by its output buffer) refuse them with a clear error.
        ASSERT_TRUE(def.traits.half_native) << e.what();
        EXPECT_NE(std::string(e.what()).find(std::string(DTypeName(half))), std::string::npos)
            << e.what();
        continue;
      }
      Node* rn = BuildSingleOpGraph(rg, def.name, ref_in, sample.attrs);
      std::vector<const HostTensor*> hp, rp;
      for (const HostTensor& t : h_in) hp.push_back(&t);
      for (const HostTensor& t : ref_in) rp.push_back(&t);
      RunContext ctx{1234, 7};
      std::vector<HostTensor> ref = EvaluateNode(*rn, rp, DeviceKind::kReference, ctx);
      for (DeviceKind kind : {DeviceKind::kCpu, DeviceKind::kReference}) {
        std::vector<HostTensor> got = EvaluateNode(*hn, hp, kind, ctx);
        ASSERT_EQ(got.size(), ref.size());
        for (size_t i = 0; i < got.size(); ++i) {
          if (!HasDTypeAttr(def)) {  // (a cast's output dtype is its attribute)
            const DType want = IsFloating(ref[i].type().dtype) ? half : ref[i].type().dtype;
            ASSERT_EQ(got[i].type().dtype, want) << "output " << i;
          }
          // One rounding to the format, plus the f32 kernel's own error.
          double tol = Epsilon(half) + 4 * sample.tolerance;
          EXPECT_LE(NormalizedError(got[i], ref[i]), tol)
              << DeviceKindName(kind) << " output " << i;
        }
      }
    }
  }
}

// The op's gradient built on half values (BuildGradients over the half graph) against the
// same gradient built and evaluated in f64 on the rounded values.
TEST_P(OpHalfGradient, MatchesF64) {
  const OpDef& def = *GetParam();
  for (DType half : {DType::kF16, DType::kBF16}) {
    for (size_t si = 0; si < def.samples.size(); ++si) {
      const OpSample& sample = def.samples[si];
      if (!HasFloatingInput(sample) || sample.skip_grad_check) continue;
      SCOPED_TRACE(std::string(DTypeName(half)) + " sample " + std::to_string(si));
      std::mt19937_64 rng(std::hash<std::string>{}(def.name) + si);
      std::vector<HostTensor> h_in;
      for (const HostTensor& t : MakeSampleInputs(sample, DType::kF32, rng)) {
        h_in.push_back(Converted(t, half));
      }
      std::vector<std::vector<HostTensor>> results;
      for (DType dtype : {half, DType::kF64}) {
        std::vector<HostTensor> in;
        for (const HostTensor& t : h_in) in.push_back(Converted(t, dtype));
        Graph g;
        Builder b(g);
        Node* n = BuildSingleOpGraph(g, def.name, in, sample.attrs);
        std::mt19937_64 wrng(17);
        std::normal_distribution<double> normal(0.0, 1.0);
        Value* loss = nullptr;
        for (Value* out : n->outputs()) {
          if (!IsFloating(out->type().dtype)) continue;
          HostTensor w(out->type());
          for (int64_t k = 0; k < w.type().numel(); ++k) {
            w.SetFromDouble(k, Converted(HostTensor::Scalar(DType::kF32, normal(wrng)), half)
                                   .GetAsDouble(0));
          }
          Value* term = b.Sum(b.Mul(out, g.AddConstant(std::move(w))), {});
          loss = loss ? b.Add(loss, term) : term;
        }
        ASSERT_NE(loss, nullptr);
        std::vector<Value*> wrt;
        for (Value* v : g.inputs()) {
          if (IsFloating(v->type().dtype)) wrt.push_back(v);
        }
        std::vector<Value*> grads = BuildGradients(b, loss, wrt);
        g.mutable_outputs().clear();
        for (Value* gv : grads) g.AddOutput(gv);
        std::map<std::string, HostTensor> feeds;
        for (size_t i = 0; i < in.size(); ++i) feeds["in" + std::to_string(i)] = in[i];
        results.push_back(EvaluateGraph(g, feeds, DeviceKind::kCpu, RunContext{99, 3}).outputs);
      }
      ASSERT_EQ(results[0].size(), results[1].size());
      for (size_t i = 0; i < results[0].size(); ++i) {
        EXPECT_EQ(results[0][i].type().dtype, half) << "gradient " << i;
        if (DiscontinuousGradient(def.name, i)) continue;
        // The backward of one op is a few ops deep, each rounding to the format.
        EXPECT_LE(NormalizedError(results[0][i], results[1][i]), 8 * Epsilon(half))
            << "gradient " << i;
      }
    }
  }
}

// Channel reblocking moves half elements as they are: a bf16 NaN's payload bits come through
// unchanged (widened to f32 and rounded back, as the ops were until session 43, the NaN came
// back quieted, and every call paid two conversions and fresh scratch pages).
TEST(OpHalfNative, ChannelReblocksMoveHalfBitsUnchanged) {
  for (const char* op : {"block_channels", "unblock_channels"}) {
    HostTensor x(TensorType{DType::kBF16, {1, 16, 2, 3}});
    uint16_t* bits = x.as<uint16_t>();
    for (int64_t i = 0; i < x.type().numel(); ++i) bits[i] = static_cast<uint16_t>(0x3f80 + i);
    bits[5] = 0x7f81;  // a signaling NaN: rounding from f32 sets its quiet bit
    Graph g;
    Node* n = testing::BuildSingleOpGraph(g, op, {x}, {});
    for (DeviceKind kind : {DeviceKind::kCpu, DeviceKind::kReference}) {
      std::vector<HostTensor> y = EvaluateNode(*n, {&x}, kind, RunContext{});
      ASSERT_EQ(y[0].type(), x.type());
      std::vector<uint16_t> got(y[0].as<uint16_t>(), y[0].as<uint16_t>() + x.type().numel());
      std::vector<uint16_t> want(bits, bits + x.type().numel());
      std::sort(got.begin(), got.end());
      std::sort(want.begin(), want.end());
      EXPECT_EQ(got, want) << op << " on " << DeviceKindName(kind);  // the same elements
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, OpHalf, ::testing::ValuesIn(FloatingOps(false)), OpName);
INSTANTIATE_TEST_SUITE_P(Registry, OpHalfGradient, ::testing::ValuesIn(FloatingOps(true)),
                         OpName);

}  // namespace
}  // namespace tg
