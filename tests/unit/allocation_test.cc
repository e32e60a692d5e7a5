// "No allocation in steady state": a call of 20 steps performs exactly as many heap
// allocations (operator new) as a call of 1 step, so the steps themselves allocate nothing.
// The allocations a call does make are its result tensors and bookkeeping.
//
// The model avoids matmul and convolution on purpose: oneDNN's primitive execute() builds a
// small argument map per call (inside the library), which this test would count. Everything
// else — the runtime, fused elementwise kernels, reductions, norms, softmax, losses, the
// optimizer update — is covered.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "autodiff/optimizer.h"
#include "runtime/executable.h"

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace tg {
namespace {

TEST(SteadyState, StepsDoNotAllocate) {
  Graph g;
  Builder b(g);
  Value* x = g.AddInput("x", {DType::kF32, {16, 32}});
  Value* t = g.AddInput("t", {DType::kI64, {16}});
  Value* w = g.AddVariable("w", {DType::kF32, {32}});
  Value* bias = g.AddVariable("b", {DType::kF32, {32}});
  Value* gamma = g.AddVariable("gamma", {DType::kF32, {32}});
  Value* h = b.Op1("gelu", {b.Add(b.Mul(x, w), bias)});
  Value* n = b.Op("layer_norm", {h, gamma, b.ZerosLike(gamma)})[0];
  Value* logp = b.Op1("log_softmax", {n}, {{"axis", int64_t{1}}});
  Value* loss = b.Op1("nll_loss", {logp, t});
  g.AddOutput(loss);
  OptimizerHyperParams hp;
  AddTrainingStep(b, loss, {{{w, bias, gamma}, hp}}, {OptimizerKind::kAdamW});
  auto exe = Executable::Compile(g, {});
  auto run = [&](int64_t steps, OutputMode mode = OutputMode::kFinal) {
    HostTensor xs({DType::kF32, {steps, 16, 32}});
    HostTensor ts({DType::kI64, {steps, 16}});
    long before = g_allocations.load();
    exe->Run({{xs.data(), xs.type()}, {ts.data(), ts.type()}}, steps, mode);
    return g_allocations.load() - before;
  };
  run(2);  // warm-up: lazily created kernel state
  long one = run(1);
  long twenty = run(20);
  EXPECT_EQ(twenty, one) << "steps allocate: " << (twenty - one) / 19.0 << " allocations per step";
  EXPECT_EQ(run(20, OutputMode::kSum), run(1, OutputMode::kSum)) << "output mode Sum allocates";
}

}  // namespace
}  // namespace tg
