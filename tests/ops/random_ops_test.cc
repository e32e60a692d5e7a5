// Random ops: reproducible for one (seed, step, rng_key), different across steps and keys,
// independent of the thread count, and statistically right (dropout keep rate and scaling,
// uniform and normal moments).
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/parallel.h"
#include "ops/builder.h"
#include "ops/evaluate.h"

namespace tg {
namespace {


std::vector<HostTensor> RunRandom(const std::string& op, AttrMap attrs, const HostTensor* x,
                                  uint64_t seed, uint64_t step,
                                  DeviceKind choice = DeviceKind::kCpu) {
  Graph g;
  Builder b(g);
  std::vector<Value*> ins;
  if (x) ins.push_back(g.AddInput("x", x->type()));
  Node* n = b.OpNode(op, ins, attrs);
  std::vector<const HostTensor*> in_ptrs;
  if (x) in_ptrs.push_back(x);
  RunContext ctx{seed, step};
  return EvaluateNode(*n, in_ptrs, choice, ctx);
}

bool Same(const HostTensor& a, const HostTensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

AttrMap Flat(int64_t n, DType d = DType::kF32) { return {{"shape", Shape{n}}, {"dtype", d}}; }

TEST(RandomOps, ReproducibleAndDistinct) {
  for (const char* op : {"uniform", "normal"}) {
    SCOPED_TRACE(op);
    AttrMap a = Flat(1001);
    HostTensor r1 = RunRandom(op, a, nullptr, 7, 3)[0];
    HostTensor r2 = RunRandom(op, a, nullptr, 7, 3)[0];
    EXPECT_TRUE(Same(r1, r2));
    EXPECT_FALSE(Same(r1, RunRandom(op, a, nullptr, 7, 4)[0]));  // another step
    EXPECT_FALSE(Same(r1, RunRandom(op, a, nullptr, 8, 3)[0]));  // another seed
    AttrMap k = a;
    k["rng_key"] = int64_t{5};
    EXPECT_FALSE(Same(r1, RunRandom(op, k, nullptr, 7, 3)[0]));  // another node
    EXPECT_TRUE(Same(r1, RunRandom(op, a, nullptr, 7, 3, DeviceKind::kReference)[0]));
  }
}

TEST(RandomOps, IndependentOfThreadCount) {
  HostTensor x = HostTensor::Full({DType::kF32, {513, 300}}, 1.5);
  int threads = cpu::MaxThreads();
  for (const char* op : {"uniform", "normal", "dropout"}) {
    SCOPED_TRACE(op);
    bool drop = std::string(op) == "dropout";
    AttrMap a = drop ? AttrMap{{"p", 0.3}} : Flat(513 * 300, DType::kF64);
    cpu::SetNumThreads(1);
    std::vector<HostTensor> one = RunRandom(op, a, drop ? &x : nullptr, 11, 2);
    cpu::SetNumThreads(2);
    std::vector<HostTensor> two = RunRandom(op, a, drop ? &x : nullptr, 11, 2);
    cpu::SetNumThreads(threads);
    for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(Same(one[i], two[i]));
  }
}

TEST(RandomOps, DropoutKeepRateAndScaling) {
  const int64_t n = 200000;
  for (DType d : {DType::kF32, DType::kF64}) {
    for (double p : {0.1, 0.5, 0.8}) {
      HostTensor x = HostTensor::Full({d, {n}}, 2.0);
      std::vector<HostTensor> out = RunRandom("dropout", {{"p", p}}, &x, 3, 9);
      int64_t kept = 0;
      for (int64_t i = 0; i < n; ++i) {
        double m = out[1].GetAsDouble(i), y = out[0].GetAsDouble(i);
        ASSERT_TRUE(m == 0 || std::abs(m - 1 / (1 - p)) < 1e-6) << m;
        ASSERT_NEAR(y, 2.0 * m, 1e-5);
        kept += m != 0;
      }
      double rate = double(kept) / n, se = std::sqrt(p * (1 - p) / n);
      EXPECT_NEAR(rate, 1 - p, 5 * se) << "p = " << p;
    }
  }
  HostTensor x = HostTensor::Full({DType::kF32, {100}}, 1.0);
  std::vector<HostTensor> zero = RunRandom("dropout", {{"p", 0.0}}, &x, 1, 1);
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(zero[0].GetAsDouble(i), 1.0);
}

TEST(RandomOps, Moments) {
  const int64_t n = 400000;
  for (DType d : {DType::kF32, DType::kF64}) {
    AttrMap u = Flat(n, d);
    u["low"] = -1.0;
    u["high"] = 3.0;
    HostTensor r = RunRandom("uniform", u, nullptr, 5, 0)[0];
    double sum = 0, sq = 0, lo = 1e9, hi = -1e9;
    for (int64_t i = 0; i < n; ++i) {
      double v = r.GetAsDouble(i);
      sum += v, sq += v * v, lo = std::min(lo, v), hi = std::max(hi, v);
    }
    double mean = sum / n, var = sq / n - mean * mean;
    EXPECT_GE(lo, -1.0);
    EXPECT_LT(hi, 3.0);
    EXPECT_NEAR(mean, 1.0, 5 * std::sqrt(16.0 / 12 / n));
    EXPECT_NEAR(var, 16.0 / 12, 0.02);

    AttrMap nm = Flat(n, d);
    nm["mean"] = 0.5;
    nm["std"] = 2.0;
    r = RunRandom("normal", nm, nullptr, 5, 0)[0];
    sum = sq = 0;
    double q = 0;
    for (int64_t i = 0; i < n; ++i) {
      double v = r.GetAsDouble(i);
      sum += v, sq += v * v;
      q += (std::abs(v - 0.5) < 2.0);
    }
    mean = sum / n, var = sq / n - mean * mean;
    EXPECT_NEAR(mean, 0.5, 5 * 2.0 / std::sqrt(double(n)));
    EXPECT_NEAR(var, 4.0, 5 * 4.0 * std::sqrt(2.0 / n));
    EXPECT_NEAR(q / n, 0.6827, 0.005);  // within one std
  }
}

}  // namespace
}  // namespace tg
