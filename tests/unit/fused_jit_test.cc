// The fused elementwise JIT (kernels/cpu/fused_jit.h) against the interpreter (RunFused):
// random programs of its operations, at AVX-512 and AVX widths, must give bit-identical
// results (NaN where the interpreter has NaN) on data with infinities, NaNs, signed zeros and
// subnormals, with lengths that end in a partial vector, and with an output sharing its buffer
// with an input (in-place updates). Programs it does not cover return no kernel.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/fused_jit.h"
#include "kernels/cpu/fused_kernel.h"

namespace tg::cpu {
namespace {

void Add(const float* const* in, float* out, int64_t n, const double*) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[0][i] + in[1][i];
}
void Sub(const float* const* in, float* out, int64_t n, const double*) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[0][i] - in[1][i];
}
void Mul(const float* const* in, float* out, int64_t n, const double*) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[0][i] * in[1][i];
}
void Div(const float* const* in, float* out, int64_t n, const double*) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[0][i] / in[1][i];
}
void Neg(const float* const* in, float* out, int64_t n, const double*) {
  for (int64_t i = 0; i < n; ++i) out[i] = -in[0][i];
}
void Sqrt(const float* const* in, float* out, int64_t n, const double*) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::sqrt(in[0][i]);
}
void Where(const float* const* in, float* out, int64_t n, const double*) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[0][i] != 0.0f ? in[1][i] : in[2][i];
}
void Exp(const float* const* in, float* out, int64_t n, const double*) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::exp(in[0][i]);
}

struct OpInfo {
  JitOp op;
  BlockFunction<float> fn;
  int arity;
};
const OpInfo kOps[] = {{JitOp::kAdd, Add, 2},   {JitOp::kSub, Sub, 2},   {JitOp::kMul, Mul, 2},
                       {JitOp::kDiv, Div, 2},   {JitOp::kNeg, Neg, 1},   {JitOp::kSqrt, Sqrt, 1},
                       {JitOp::kWhere, Where, 3}};

// Values with every special case, mostly ordinary.
std::vector<float> Data(int64_t n, std::mt19937& rng) {
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), 1e-40f, -3e-39f, 1.0f};
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> pick(0, 9);
  std::vector<float> v(n);
  for (auto& x : v) {
    int k = pick(rng);
    x = k < 8 && pick(rng) == 0 ? specials[k] : normal(rng);
  }
  return v;
}

bool SameBits(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof(float)) == 0;
}

// A random program: `arrays` array inputs, a f32 scalar, a bool scalar (0 or 1), then
// `steps` random operations on earlier slots; the last two values and one array input are
// stored (the array input unchanged: a stored input).
struct RandomProgram {
  FusedProgram<float> program;
  std::vector<std::vector<float>> arrays;
  float scalar = 0.5f;
  bool flag = false;
};

RandomProgram MakeProgram(int64_t numel, int arrays, int steps, std::mt19937& rng) {
  RandomProgram r;
  auto& p = r.program;
  p.shape = {numel};
  for (int a = 0; a < arrays; ++a) {
    p.loads.push_back({p.num_slots++, a, nullptr, Stored::kCompute, {numel}});
    r.arrays.push_back(Data(numel, rng));
  }
  p.loads.push_back({p.num_slots++, arrays, nullptr, Stored::kCompute, {}});
  p.loads.push_back({p.num_slots++, arrays + 1, nullptr, Stored::kBool, {1}});
  r.scalar = std::normal_distribution<float>()(rng);
  r.flag = rng() % 2 == 0;
  std::uniform_int_distribution<int> op_of(0, 6);
  for (int s = 0; s < steps; ++s) {
    const OpInfo& op = kOps[op_of(rng)];
    FusedProgram<float>::Step step;
    step.fn = op.fn;
    step.jit = op.op;
    for (int k = 0; k < op.arity; ++k) {
      step.in_slots.push_back(std::uniform_int_distribution<int>(0, p.num_slots - 1)(rng));
    }
    step.out_slot = p.num_slots++;
    p.steps.push_back(step);
  }
  p.stores = {{p.num_slots - 1, 0, Stored::kCompute}, {p.num_slots - 2, 1, Stored::kCompute},
              {0, 2, Stored::kCompute}};
  return r;
}

// Runs the program with the interpreter and with the JIT kernel; outputs must match bitwise.
void ExpectSame(const RandomProgram& r, const FusedJitKernel& jit, int64_t numel,
                const std::string& what) {
  std::vector<const void*> in;
  for (const auto& a : r.arrays) in.push_back(a.data());
  in.push_back(&r.scalar);
  in.push_back(&r.flag);
  std::vector<std::vector<float>> want(3, std::vector<float>(numel)), got = want;
  void* want_out[] = {want[0].data(), want[1].data(), want[2].data()};
  void* got_out[] = {got[0].data(), got[1].data(), got[2].data()};
  RunFused(r.program, in.data(), want_out);
  jit.Run(in.data(), got_out);
  for (int o = 0; o < 3; ++o) {
    for (int64_t i = 0; i < numel; ++i) {
      ASSERT_TRUE(SameBits(want[o][i], got[o][i]))
          << what << ": output " << o << " [" << i << "]: interpreter " << want[o][i]
          << ", JIT " << got[o][i];
    }
  }
}

class FusedJit : public ::testing::TestWithParam<JitIsa> {};

TEST_P(FusedJit, RandomProgramsMatchTheInterpreterBitForBit) {
  std::mt19937 rng(1234);
  const int64_t sizes[] = {1, 7, 8, 15, 16, 17, 100, 1000, 65536 + 5};
  int compiled = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const int64_t numel = sizes[trial % 9];
    RandomProgram r = MakeProgram(numel, 1 + trial % 4, 1 + trial % 12, rng);
    auto jit = CompileFusedJit(r.program, GetParam());
    if (jit == nullptr) continue;  // this CPU lacks the ISA (checked below)
    ++compiled;
    ExpectSame(r, *jit, numel, "trial " + std::to_string(trial));
  }
  if (GetParam() == JitIsa::kAvx512 && compiled == 0) {
    GTEST_SKIP() << "this CPU has no AVX-512: only the AVX code was checked";
  }
  EXPECT_EQ(compiled, 60);
}

TEST_P(FusedJit, OutputMayShareItsBufferWithAnInput) {
  // buf = buf * m + g; w = w - lr * buf (SGD momentum, in place: outputs are inputs' buffers).
  std::mt19937 rng(7);
  const int64_t n = 1000 + 3;
  FusedProgram<float> p;
  p.shape = {n};
  p.loads = {{0, 0, nullptr, Stored::kCompute, {n}}, {1, 1, nullptr, Stored::kCompute, {n}},
             {2, 2, nullptr, Stored::kCompute, {n}}, {3, 3, nullptr, Stored::kCompute, {}},
             {4, 4, nullptr, Stored::kCompute, {}}};
  p.num_slots = 5;
  auto step = [&](BlockFunction<float> fn, JitOp op, std::vector<int> in) {
    FusedProgram<float>::Step s;
    s.fn = fn;
    s.jit = op;
    s.in_slots = std::move(in);
    s.out_slot = p.num_slots++;
    p.steps.push_back(s);
    return s.out_slot;
  };
  const int b = step(Add, JitOp::kAdd, {step(Mul, JitOp::kMul, {1, 3}), 2});
  const int w = step(Sub, JitOp::kSub, {0, step(Mul, JitOp::kMul, {4, b})});
  p.stores = {{b, 0, Stored::kCompute}, {w, 1, Stored::kCompute}};
  auto jit = CompileFusedJit(p, GetParam());
  if (jit == nullptr) GTEST_SKIP() << "this CPU lacks the ISA";
  std::vector<float> w0 = Data(n, rng), buf0 = Data(n, rng), g = Data(n, rng);
  float m = 0.9f, lr = 0.01f;
  std::vector<float> want_w = w0, want_buf = buf0, got_w = w0, got_buf = buf0;
  {
    const void* in[] = {want_w.data(), want_buf.data(), g.data(), &m, &lr};
    void* out[] = {want_buf.data(), want_w.data()};
    RunFused(p, in, out);
  }
  {
    const void* in[] = {got_w.data(), got_buf.data(), g.data(), &m, &lr};
    void* out[] = {got_buf.data(), got_w.data()};
    jit->Run(in, out);
  }
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(SameBits(want_w[i], got_w[i])) << i;
    ASSERT_TRUE(SameBits(want_buf[i], got_buf[i])) << i;
  }
  EXPECT_NE(std::memcmp(got_w.data(), w0.data(), n * sizeof(float)), 0);  // it did update
}

INSTANTIATE_TEST_SUITE_P(Isa, FusedJit, ::testing::Values(JitIsa::kAvx512, JitIsa::kAvx),
                         [](const auto& info) {
                           return info.param == JitIsa::kAvx512 ? "avx512" : "avx";
                         });

TEST(FusedJitCoverage, ProgramsOutsideItsVocabularyGetNoKernel) {
  std::mt19937 rng(3);
  // A step without a JIT form (exp).
  RandomProgram r = MakeProgram(64, 2, 3, rng);
  r.program.steps[1].fn = Exp;
  r.program.steps[1].jit = JitOp::kNone;
  r.program.steps[1].in_slots = {0};
  EXPECT_EQ(CompileFusedJit(r.program), nullptr);
  // A broadcast load (a bias of shape [8] into [8, 8]).
  FusedProgram<float> p;
  p.shape = {8, 8};
  p.loads = {{0, 0, nullptr, Stored::kCompute, {8, 8}}, {1, 1, nullptr, Stored::kCompute, {8}}};
  p.num_slots = 2;
  FusedProgram<float>::Step add;
  add.fn = Add;
  add.jit = JitOp::kAdd;
  add.in_slots = {0, 1};
  add.out_slot = p.num_slots++;
  p.steps.push_back(add);
  p.stores = {{2, 0, Stored::kCompute}};
  EXPECT_EQ(CompileFusedJit(p), nullptr);
  // A half-precision store, and a step rounded to half.
  p.loads[1].shape = {8, 8};
  EXPECT_NE(CompileFusedJit(p), nullptr);  // the same program with both operands full
  p.stores[0].stored = Stored::kBF16;
  EXPECT_EQ(CompileFusedJit(p), nullptr);
  p.stores[0].stored = Stored::kCompute;
  p.steps[0].round_to = Stored::kF16;
  EXPECT_EQ(CompileFusedJit(p), nullptr);
}

TEST(FusedJitCoverage, MoreLiveValuesThanRegistersFallsBackOrMatches) {
  // 40 array inputs all live until one sum at the end: more than 16 / 32 registers at once.
  std::mt19937 rng(5);
  const int64_t n = 40;
  FusedProgram<float> p;
  p.shape = {n};
  std::vector<std::vector<float>> data;
  for (int a = 0; a < 40; ++a) {
    p.loads.push_back({p.num_slots++, a, nullptr, Stored::kCompute, {n}});
    data.push_back(Data(n, rng));
  }
  // Products of pairs (0*1, 2*3, ...) first, then their sum: 20 products live at once.
  std::vector<int> products;
  for (int a = 0; a < 40; a += 2) {
    FusedProgram<float>::Step s;
    s.fn = Mul;
    s.jit = JitOp::kMul;
    s.in_slots = {a, a + 1};
    s.out_slot = p.num_slots++;
    p.steps.push_back(s);
    products.push_back(s.out_slot);
  }
  int acc = products[0];
  for (size_t k = 1; k < products.size(); ++k) {
    FusedProgram<float>::Step s;
    s.fn = Add;
    s.jit = JitOp::kAdd;
    s.in_slots = {acc, products[k]};
    s.out_slot = p.num_slots++;
    p.steps.push_back(s);
    acc = s.out_slot;
  }
  p.stores = {{acc, 0, Stored::kCompute}};
  for (JitIsa isa : {JitIsa::kAvx512, JitIsa::kAvx}) {
    auto jit = CompileFusedJit(p, isa);
    if (jit == nullptr) continue;  // out of registers (AVX: 16) or no such ISA: interpreter
    std::vector<const void*> in;
    for (const auto& d : data) in.push_back(d.data());
    std::vector<float> want(n), got(n);
    void* want_out[] = {want.data()};
    void* got_out[] = {got.data()};
    RunFused(p, in.data(), want_out);
    jit->Run(in.data(), got_out);
    for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(SameBits(want[i], got[i])) << i;
  }
  EXPECT_EQ(CompileFusedJit(p, JitIsa::kAvx), nullptr);  // 20 live products > 16 registers
}

}  // namespace
}  // namespace tg::cpu
