// Zero-copy I/O (runtime/executable_io.cc): sequential programs read each step's input slice
// from the caller's array and write outputs straight into the results. Checked here: every
// output mode, outputs read again later in the step, outputs that must still be copied (a
// feed returned as is, a view of another output, the same value twice, a value a variable
// is updated from), several steps with distinct data, replicas, and the counts that say
// which outputs and feeds went in place.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/builder.h"
#include "runtime/executable.h"

namespace tg {
namespace {

// Per step, with x of shape [3] and a running variable s (s <- s + sum(x)):
//   0: e = exp(x)            in place (read again by the next two)
//   1: z = e * x             in place
//   2: x                     copied (a feed)
//   3: reshape(e, [3, 1])    copied (a view of output 0: so 0 is copied too)
//   4: t = neg(x)            copied: returned twice (4 and 5)
//   5: t
//   6: s + sum(x)            copied: the variable's update
//   7: q = z * z             in place
std::unique_ptr<Executable> Program(CompileOptions opts = {}) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {3}});
  Value* s = g.AddVariable("s", {DType::kF32, {}}, false);
  Value* e = b.Exp(x);
  Value* z = b.Mul(e, x);
  Value* t = b.Neg(x);
  Value* next = b.Add(s, b.Sum(x, {}));
  g.SetUpdate(s, next);
  for (Value* v : {e, z, x, b.Reshape(e, {3, 1}), t, t, next, b.Mul(z, z)}) g.AddOutput(v);
  return Executable::Compile(g, opts);
}

// The expected outputs of one step on x (and the running sum before the step).
std::vector<std::vector<float>> Expected(const float* x, float s) {
  std::vector<std::vector<float>> out(8);
  float sum = 0;
  for (int i = 0; i < 3; ++i) {
    float e = std::exp(x[i]), z = e * x[i];
    out[0].push_back(e);
    out[1].push_back(z);
    out[2].push_back(x[i]);
    out[3].push_back(e);
    out[4].push_back(-x[i]);
    out[5].push_back(-x[i]);
    out[7].push_back(z * z);
    sum += x[i];
  }
  out[6].push_back(s + sum);
  return out;
}

HostTensor Feed(int64_t rows) {
  HostTensor t({DType::kF32, {rows, 3}});
  for (int64_t i = 0; i < rows * 3; ++i) t.as<float>()[i] = 0.1f * static_cast<float>(i) - 0.5f;
  return t;
}

void ExpectRow(const HostTensor& out, int64_t row, const std::vector<float>& want,
               const std::string& what) {
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(out.as<float>()[row * want.size() + i], want[i], 1e-6f * (1 + std::fabs(want[i])))
        << what << " row " << row << " element " << i;
  }
}

TEST(ZeroCopyIo, OutputsAreRightInEveryModeAndOnlyUnreadOnesGoInPlace) {
  const int64_t steps = 4;
  HostTensor in = Feed(steps);
  const float* x = in.as<float>();
  auto exe = Program();
  EXPECT_EQ(exe->outputs_written_in_place(), 2);  // z and q (e has a view returned too)
  EXPECT_EQ(exe->feeds_read_in_place(), 1);
  float s = 0;  // the variable's value before each step
  for (OutputMode mode : {OutputMode::kAll, OutputMode::kFinal, OutputMode::kEveryN}) {
    auto out = exe->Run({{in.data(), in.type()}}, steps, mode, 2);
    for (int64_t step = 0; step < steps; ++step) {
      auto want = Expected(x + 3 * step, s);
      s = want[6][0];
      int64_t row = mode == OutputMode::kAll ? step
                    : mode == OutputMode::kEveryN ? ((step + 1) % 2 == 0 ? step / 2 : -1)
                    : (step == steps - 1 ? 0 : -1);
      if (row < 0) continue;
      for (size_t o = 0; o < want.size(); ++o) {
        ExpectRow(out[o], row, want[o], std::string(OutputModeName(mode)) + " output " +
                                            std::to_string(o));
      }
    }
  }
  // Sum mode accumulates from the arena: the same program, every output summed over steps.
  auto sum = exe->Run({{in.data(), in.type()}}, steps, OutputMode::kSum);
  std::vector<std::vector<float>> total(8);
  for (int64_t step = 0; step < steps; ++step) {
    auto want = Expected(x + 3 * step, s);
    s = want[6][0];
    for (size_t o = 0; o < want.size(); ++o) {
      total[o].resize(want[o].size(), 0.0f);
      for (size_t i = 0; i < want[o].size(); ++i) total[o][i] += want[o][i];
    }
  }
  for (size_t o = 0; o < total.size(); ++o) ExpectRow(sum[o], 0, total[o], "sum " + std::to_string(o));
}

TEST(ZeroCopyIo, ReplicasReadAndWriteTheirOwnRows) {
  CompileOptions opts;
  opts.replicas = 2;
  auto exe = Program(opts);
  const int64_t steps = 3;
  HostTensor in({DType::kF32, {steps, 2, 3}});
  for (int64_t i = 0; i < steps * 6; ++i) in.as<float>()[i] = 0.05f * static_cast<float>(i * i % 17) - 0.4f;
  auto out = exe->Run({{in.data(), in.type()}}, steps, OutputMode::kAll);
  std::vector<float> s(2, 0.0f);
  for (int64_t step = 0; step < steps; ++step) {
    for (int r = 0; r < 2; ++r) {
      auto want = Expected(in.as<float>() + 3 * (step * 2 + r), s[r]);
      s[r] = want[6][0];
      for (size_t o = 0; o < want.size(); ++o) {
        ExpectRow(out[o], step * 2 + r, want[o], "replica " + std::to_string(r));
      }
    }
  }
}

}  // namespace
}  // namespace tg
