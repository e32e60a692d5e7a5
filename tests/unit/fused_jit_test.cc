// The fused elementwise JIT (kernels/cpu/fused_jit.h) against the interpreter (RunFused):
// random programs of its operations, at AVX-512 and AVX widths, must give bit-identical
// results (NaN where the interpreter has NaN) on data with infinities, NaNs, signed zeros and
// subnormals, with lengths that end in a partial vector, and with an output sharing its buffer
// with an input (in-place updates). Programs it does not cover return no kernel.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/fused_jit.h"
#include "kernels/cpu/cast_kernels.h"
#include "kernels/cpu/fused_kernel.h"
#include "ops/registry.h"

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
void Exp(const float* const* in, float* out, int64_t n, const double*) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::exp(in[0][i]);
}

// The ops the JIT covers, with the block functions and JIT tags the registry gives them (so
// the test compares the JIT with the interpreter's real block functions).
struct OpInfo {
  std::string name;
  std::vector<double> params;
  BlockFunction<float> fn = nullptr;
  JitOp op = JitOp::kNone;
  int arity = 0;
};
// The activations (vector_math.h's functions inside): unary ops, then the backward helpers
// (grad_output, x or y); gelu's two modes, a nonzero threshold.
std::vector<OpInfo> ActivationOps() {
  const std::tuple<const char*, int, std::vector<double>> ops[] = {
      {"exp", 1, {}}, {"sigmoid", 1, {}}, {"tanh", 1, {}}, {"silu", 1, {}}, {"erf", 1, {}},
      {"gelu", 1, {0.0}}, {"gelu", 1, {1.0}}, {"reciprocal", 1, {}}, {"rsqrt", 1, {}},
      {"hardswish", 1, {}}, {"hardsigmoid", 1, {}}, {"threshold_backward", 2, {0.5}},
      {"gelu_backward", 2, {0.0}}, {"gelu_backward", 2, {1.0}}, {"silu_backward", 2, {}},
      {"sigmoid_backward", 2, {}}, {"tanh_backward", 2, {}}, {"hardswish_backward", 2, {}}};
  std::vector<OpInfo> out;
  for (const auto& [name, arity, params] : ops) {
    const ElementwiseDef& def = *OpRegistry::Global().Get(name).elementwise;
    out.push_back({name, params, def.f32, def.jit, arity});
  }
  return out;
}

std::vector<OpInfo> JitOps() {
  const std::pair<const char*, int> ops[] = {
      {"add", 2}, {"sub", 2}, {"mul", 2}, {"div", 2}, {"neg", 1}, {"sqrt", 1}, {"abs", 1},
      {"relu", 1}, {"maximum", 2}, {"minimum", 2}, {"where", 3}, {"eq", 2}, {"ne", 2},
      {"lt", 2}, {"le", 2}, {"gt", 2}, {"ge", 2}, {"cast", 1}};
  std::vector<OpInfo> out;
  for (const auto& [name, arity] : ops) {
    const ElementwiseDef& def = *OpRegistry::Global().Get(name).elementwise;
    out.push_back({name, {}, def.f32, def.jit, arity});
    if (std::string(name) == "cast") {
      out.back().params = {0.0};                              // a copy (f32 -> f32 or half)
      out.push_back({name, {1.0}, def.f32, def.jit, arity});  // to bool: x != 0
    }
  }
  for (OpInfo& op : ActivationOps()) out.push_back(std::move(op));
  return out;
}

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

Stored RandomFormat(std::mt19937& rng, bool half) {
  const Stored formats[] = {Stored::kCompute, Stored::kF16, Stored::kBF16};
  return half ? formats[rng() % 3] : Stored::kCompute;
}

// An array of `n` values in `format` (f32, or the 16-bit bits of f16 / bf16).
std::vector<uint8_t> Encode(const std::vector<float>& v, Stored format) {
  const ElemType type = format == Stored::kF16    ? ElemType::kF16
                        : format == Stored::kBF16 ? ElemType::kBF16
                                                  : ElemType::kF32;
  std::vector<uint8_t> bytes(v.size() * (format == Stored::kCompute ? 4 : 2));
  CastBuffer(v.data(), ElemType::kF32, bytes.data(), type, static_cast<int64_t>(v.size()));
  return bytes;
}

// A random program: `arrays` array inputs, a f32 scalar, a bool scalar (0 or 1), then
// `steps` random operations on earlier slots; the last two values and one array input are
// stored (the array input unchanged: a stored input). With `half`, arrays, step results and
// stores are f16 / bf16 at random.
struct RandomProgram {
  FusedProgram<float> program;
  std::vector<std::vector<uint8_t>> arrays;
  float scalar = 0.5f;
  bool flag = false;
};

RandomProgram MakeProgram(int64_t numel, int arrays, int steps, std::mt19937& rng,
                          bool half = false) {
  static const std::vector<OpInfo> ops = JitOps();
  RandomProgram r;
  auto& p = r.program;
  p.shape = {numel};
  for (int a = 0; a < arrays; ++a) {
    Stored format = RandomFormat(rng, half);
    p.loads.push_back({p.num_slots++, a, nullptr, format, {numel}});
    r.arrays.push_back(Encode(Data(numel, rng), format));
  }
  p.loads.push_back({p.num_slots++, arrays, nullptr, Stored::kCompute, {}});
  p.loads.push_back({p.num_slots++, arrays + 1, nullptr, Stored::kBool, {1}});
  r.scalar = std::normal_distribution<float>()(rng);
  r.flag = rng() % 2 == 0;
  std::uniform_int_distribution<size_t> op_of(0, ops.size() - 1);
  for (int s = 0; s < steps; ++s) {
    const OpInfo& op = ops[op_of(rng)];
    FusedProgram<float>::Step step;
    step.fn = op.fn;
    step.jit = op.op;
    step.params = op.params;
    for (int k = 0; k < op.arity; ++k) {
      step.in_slots.push_back(std::uniform_int_distribution<int>(0, p.num_slots - 1)(rng));
    }
    if (rng() % 3 == 0) step.round_to = RandomFormat(rng, half);
    step.out_slot = p.num_slots++;
    p.steps.push_back(step);
  }
  p.stores = {{p.num_slots - 1, 0, RandomFormat(rng, half)},
              {p.num_slots - 2, 1, RandomFormat(rng, half)},
              {0, 2, p.loads[0].stored}};
  return r;
}

// Appends the step op(in...) to `p` (fn: its block function) and returns its result's slot.
int AddStep(FusedProgram<float>& p, BlockFunction<float> fn, JitOp op, std::vector<int> in) {
  FusedProgram<float>::Step s;
  s.fn = fn;
  s.jit = op;
  s.in_slots = std::move(in);
  s.out_slot = p.num_slots++;
  p.steps.push_back(s);
  return s.out_slot;
}

// Runs the program with the interpreter and with the JIT kernel; outputs must match bitwise
// (any NaN for a NaN).
void ExpectSame(const RandomProgram& r, const FusedJitKernel& jit, int64_t numel,
                const std::string& what) {
  std::vector<const void*> in;
  for (const auto& a : r.arrays) in.push_back(a.data());
  in.push_back(&r.scalar);
  in.push_back(&r.flag);
  std::vector<std::vector<uint8_t>> want, got;
  std::vector<void*> want_out, got_out;
  for (const auto& s : r.program.stores) {
    want.emplace_back(numel * (s.stored == Stored::kCompute ? 4 : 2), 0xAB);
    got.emplace_back(want.back().size(), 0xCD);
  }
  for (size_t o = 0; o < want.size(); ++o) {
    want_out.push_back(want[o].data());
    got_out.push_back(got[o].data());
  }
  RunFused(r.program, in.data(), want_out.data());
  jit.Run(in.data(), got_out.data());
  for (size_t o = 0; o < want.size(); ++o) {
    const Stored format = r.program.stores[o].stored;
    std::vector<float> a(numel), b(numel);
    const ElemType type = format == Stored::kF16    ? ElemType::kF16
                          : format == Stored::kBF16 ? ElemType::kBF16
                                                    : ElemType::kF32;
    CastBuffer(want[o].data(), type, a.data(), ElemType::kF32, numel);
    CastBuffer(got[o].data(), type, b.data(), ElemType::kF32, numel);
    for (int64_t i = 0; i < numel; ++i) {
      ASSERT_TRUE(SameBits(a[i], b[i]))
          << what << ": output " << o << " [" << i << "]: interpreter " << a[i] << ", JIT "
          << b[i];
    }
  }
}

// Whether this CPU runs the JIT's code of width `isa` (y = x + x compiles): AVX-512F for the
// 16-lane code, AVX2 + F16C for the 8-lane code (on an AVX-512 machine both run).
bool JitRunsHere(JitIsa isa) {
  FusedProgram<float> probe;
  probe.shape = {16};
  probe.loads = {{0, 0, nullptr, Stored::kCompute, {16}}};
  probe.num_slots = 2;
  FusedProgram<float>::Step add;
  add.fn = Add;
  add.jit = JitOp::kAdd;
  add.in_slots = {0, 0};
  add.out_slot = 1;
  probe.steps = {add};
  probe.stores = {{1, 0, Stored::kCompute}};
  return CompileFusedJit(probe, isa) != nullptr;
}

// A CPU without a width's instructions cannot execute that code at all, so its
// instantiation is skipped, saying which.
class FusedJit : public ::testing::TestWithParam<JitIsa> {
 protected:
  void SetUp() override {
    if (!JitRunsHere(GetParam())) {
      GTEST_SKIP() << (GetParam() == JitIsa::kAvx512
                           ? "this CPU has no AVX-512F: the 16-lane code cannot run here (the "
                             "8-lane AVX2 instantiation checks the generator)"
                           : "this CPU has no AVX2 + F16C (or TILEGRAPH_FUSED_JIT=0): the "
                             "fused kernels run the interpreter here, no JIT code to check");
    }
  }
};

TEST_P(FusedJit, RandomProgramsMatchTheInterpreterBitForBit) {
  // Every op of the JIT's vocabulary, with f16 / bf16 loads, stores and rounded steps.
  std::mt19937 rng(1234);
  const int64_t sizes[] = {1, 7, 8, 15, 16, 17, 100, 1000, 65536 + 5};
  int compiled = 0;
  for (int trial = 0; trial < 180; ++trial) {  // 60 f32 programs, then 120 with halves
    const int64_t numel = sizes[trial % 9];
    RandomProgram r = MakeProgram(numel, 1 + trial % 4, 1 + trial % 12, rng, trial >= 60);
    auto jit = CompileFusedJit(r.program, GetParam());
    if (jit == nullptr) continue;  // out of registers: the interpreter's (counted below)
    ++compiled;
    ExpectSame(r, *jit, numel, "trial " + std::to_string(trial));
  }
  // AVX has 16 registers: some of the longer programs (an activation's temporaries, constants
  // for bf16 rounding, many live values) do not fit and stay with the interpreter.
  if (GetParam() == JitIsa::kAvx512) EXPECT_EQ(compiled, 180);
  else EXPECT_GE(compiled, 120);
}

// Values across every range the activations branch on: magnitudes 1e-45 .. 1e38 in fine
// steps, each of vmath's bounds (tanh 0.625 / 20, erf 1 / 4 / 3.92, exp -87.34 / 88.72,
// hardswish +-3, the threshold 0.5) with its float neighbours, and the special values.
std::vector<float> ActivationGrid() {
  std::vector<float> v;
  for (double m = 1e-45; m < 3e38; m *= 1.07) {
    v.push_back(static_cast<float>(m));
    v.push_back(static_cast<float>(-m));
  }
  const float bounds[] = {0.5f, 0.625f, 1.0f, 3.0f, 3.92f, 4.0f, 6.0f, 20.0f, 40.0f,
                          87.33654f, 88.72283f, 89.0f};
  for (float b : bounds) {
    for (float x : {b, -b}) {
      v.push_back(x);
      v.push_back(std::nextafter(x, 0.0f));
      v.push_back(std::nextafter(x, 2 * x));
    }
  }
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN()};
  v.insert(v.end(), std::begin(specials), std::end(specials));
  return v;
}

TEST_P(FusedJit, EveryActivationMatchesItsBlockFunctionOnEveryRange) {
  // One step per program, x from the grid; a backward helper's grad_output is random,
  // shuffled against x (and the grid itself: y of sigmoid / tanh backward is any value).
  const std::vector<float> grid = ActivationGrid();
  const int64_t n = static_cast<int64_t>(grid.size());
  std::mt19937 rng(99);
  std::vector<float> go = Data(n, rng);
  for (const OpInfo& op : ActivationOps()) {
    FusedProgram<float> p;
    p.shape = {n};
    p.loads = {{0, 0, nullptr, Stored::kCompute, {n}}, {1, 1, nullptr, Stored::kCompute, {n}}};
    p.num_slots = 2;
    FusedProgram<float>::Step step;
    step.fn = op.fn;
    step.jit = op.op;
    step.params = op.params;
    step.in_slots = op.arity == 2 ? std::vector<int>{1, 0} : std::vector<int>{0};
    step.out_slot = p.num_slots++;
    p.steps = {step};
    p.stores = {{step.out_slot, 0, Stored::kCompute}};
    const std::string what = op.name + (op.params.empty() ? "" : "(" + std::to_string(op.params[0]) + ")");
    auto jit = CompileFusedJit(p, GetParam());
    ASSERT_NE(jit, nullptr) << what << ": one step always fits";
    std::vector<float> want(n), got(n);
    const void* in[] = {grid.data(), go.data()};
    void* want_out[] = {want.data()};
    void* got_out[] = {got.data()};
    RunFused(p, in, want_out);
    jit->Run(in, got_out);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(SameBits(want[i], got[i]))
          << what << " at x = " << grid[i] << " (go " << go[i] << "): interpreter " << want[i]
          << ", JIT " << got[i];
    }
  }
}

// SGD momentum over inputs (w, buf, g, momentum, lr): buf' = buf * momentum + g and
// w' = w - lr * buf' (slots b and w; the caller chooses the stores). g is stored as `grad`.
struct SgdProgram {
  FusedProgram<float> p;
  int b = 0, w = 0;
};
SgdProgram SgdMomentum(int64_t n, Stored grad) {
  SgdProgram s;
  FusedProgram<float>& p = s.p;
  p.shape = {n};
  p.loads = {{0, 0, nullptr, Stored::kCompute, {n}}, {1, 1, nullptr, Stored::kCompute, {n}},
             {2, 2, nullptr, grad, {n}}, {3, 3, nullptr, Stored::kCompute, {}},
             {4, 4, nullptr, Stored::kCompute, {}}};
  p.num_slots = 5;
  s.b = AddStep(p, Add, JitOp::kAdd, {AddStep(p, Mul, JitOp::kMul, {1, 3}), 2});
  s.w = AddStep(p, Sub, JitOp::kSub, {0, AddStep(p, Mul, JitOp::kMul, {4, s.b})});
  return s;
}

TEST_P(FusedJit, OutputMayShareItsBufferWithAnInput) {
  // buf = buf * m + g; w = w - lr * buf (SGD momentum, in place: outputs are inputs' buffers).
  std::mt19937 rng(7);
  const int64_t n = 1000 + 3;
  SgdProgram sgd = SgdMomentum(n, Stored::kCompute);
  FusedProgram<float>& p = sgd.p;
  p.stores = {{sgd.b, 0, Stored::kCompute}, {sgd.w, 1, Stored::kCompute}};
  auto jit = CompileFusedJit(p, GetParam());
  ASSERT_NE(jit, nullptr);
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

TEST_P(FusedJit, StreamingStoresWriteTheSameValuesAndOnlyWhereTheyMay) {
  // SGD momentum in place (w, buf) with fresh outputs in all three stored formats (a bf16
  // shadow of w, an f16 and an f32 copy), the fresh ones marked streaming: the values must
  // be the interpreter's with streaming stores (64-byte aligned outputs, lengths with and
  // without a partial last vector) and with the plain loop it falls back to (an output not
  // aligned, an output sharing an input's buffer).
  std::mt19937 rng(11);
  for (const int64_t n : {int64_t{4096}, int64_t{65536 + 5}, int64_t{1000 + 3}}) {
    SgdProgram sgd = SgdMomentum(n, Stored::kBF16);
    FusedProgram<float>& p = sgd.p;
    const int b = sgd.b, w = sgd.w;
    p.stores = {{b, 0, Stored::kCompute}, {w, 1, Stored::kCompute}, {w, 2, Stored::kBF16},
                {w, 3, Stored::kF16}, {b, 4, Stored::kCompute}};
    auto jit = CompileFusedJit(p, GetParam(), {false, false, true, true, true});
    ASSERT_NE(jit, nullptr);
    std::vector<float> w0 = Data(n, rng), buf0 = Data(n, rng);
    std::vector<uint16_t> g(n);
    CastBuffer(Data(n, rng).data(), ElemType::kF32, g.data(), ElemType::kBF16, n);
    float m = 0.9f, lr = 0.01f;
    // 64-byte aligned storage, offset by `shift` bytes.
    struct Out {
      std::vector<uint8_t> storage;
      void* at(int64_t bytes, size_t shift) {
        storage.assign(bytes + 128, 0xCD);
        const auto base = reinterpret_cast<uintptr_t>(storage.data());
        return storage.data() + ((64 - base % 64) % 64) + shift;
      }
    };
    auto run = [&](bool interpreter, size_t shift, bool shadow_in_place, bool expect_stream) {
      std::vector<float> wv = w0, bv = buf0;
      Out s16, h16, f32;
      void* shadow = s16.at(n * 2, shift);
      void* outs[] = {bv.data(), wv.data(), shadow, h16.at(n * 2, 0), f32.at(n * 4, 0)};
      const void* in[] = {wv.data(), bv.data(), g.data(), &m, &lr};
      if (shadow_in_place) {  // the bf16 output written over the bf16 input's buffer
        std::memcpy(shadow, g.data(), n * 2);
        in[2] = shadow;
      }
      if (interpreter) {
        RunFused(p, in, outs);
      } else {
        EXPECT_EQ(jit->Streams(in, outs), expect_stream) << "n " << n << " shift " << shift;
        jit->Run(in, outs);
      }
      std::vector<uint8_t> all;
      for (const auto& [ptr, bytes] : {std::pair<const void*, int64_t>{wv.data(), n * 4},
                                      {bv.data(), n * 4}, {shadow, n * 2},
                                      {outs[3], n * 2}, {outs[4], n * 4}}) {
        const auto* c = static_cast<const uint8_t*>(ptr);
        all.insert(all.end(), c, c + bytes);
      }
      return all;
    };
    const std::vector<uint8_t> want = run(true, 0, false, false);
    EXPECT_EQ(run(false, 0, false, true), want) << "streaming, n " << n;
    EXPECT_EQ(run(false, 32, false, false), want) << "shadow not 64-byte aligned, n " << n;
    EXPECT_EQ(run(true, 0, true, false), run(false, 0, true, false))
        << "shadow over an input, n " << n;
  }
}

TEST_P(FusedJit, RowBroadcastOperandsMatchTheInterpreterBitForBit) {
  // y = sigmoid(x * s[n, c] + b[c]) * m[n] over [N, C, H, W] (squeeze-excite's scale, a
  // per-channel bias): operands constant along rows of H * W (or W * H * C) elements run as
  // per-row scalars; half loads and stores included.
  std::mt19937 rng(11);
  const int64_t N = 3, C = 5, H = 4, W = 16, n = N * C * H * W;
  for (Stored half : {Stored::kCompute, Stored::kBF16, Stored::kF16}) {
    FusedProgram<float> p;
    p.shape = {N, C, H, W};
    p.loads = {{0, 0, nullptr, half, {N, C, H, W}}, {1, 1, nullptr, half, {N, C, 1, 1}},
               {2, 2, nullptr, Stored::kCompute, {C, 1, 1}},
               {3, 3, nullptr, Stored::kCompute, {N, 1, 1, 1}}};
    p.num_slots = 4;
    auto step = [&](BlockFunction<float> fn, JitOp op, std::vector<int> in) {
      return AddStep(p, fn, op, std::move(in));
    };
    const ElementwiseDef& sigmoid = *OpRegistry::Global().Get("sigmoid").elementwise;
    const int z = step(Add, JitOp::kAdd, {step(Mul, JitOp::kMul, {0, 1}), 2});
    const int y = step(Mul, JitOp::kMul, {step(sigmoid.f32, sigmoid.jit, {z}), 3});
    p.stores = {{y, 0, half}};
    auto jit = CompileFusedJit(p, GetParam());
    ASSERT_NE(jit, nullptr);
    auto stored = [&](std::vector<float> v) {
      if (half == Stored::kCompute) return v;
      std::vector<float> packed((v.size() + 1) / 2);
      CastBuffer(v.data(), ElemType::kF32, packed.data(),
                 half == Stored::kBF16 ? ElemType::kBF16 : ElemType::kF16,
                 static_cast<int64_t>(v.size()));
      return packed;
    };
    std::vector<float> x = stored(Data(n, rng)), s = stored(Data(N * C, rng)), b = Data(C, rng),
                       m = Data(N, rng);
    std::vector<float> want(n), got(n);
    const void* in[] = {x.data(), s.data(), b.data(), m.data()};
    void* want_out[] = {want.data()};
    void* got_out[] = {got.data()};
    RunFused(p, in, want_out);
    jit->Run(in, got_out);
    ASSERT_EQ(std::memcmp(want.data(), got.data(), n * (half == Stored::kCompute ? 4 : 2)), 0);
  }
  // Rows shorter than four vectors stay with the interpreter.
  FusedProgram<float> p;
  p.shape = {N, C, 2, 2};
  p.loads = {{0, 0, nullptr, Stored::kCompute, {N, C, 2, 2}},
             {1, 1, nullptr, Stored::kCompute, {N, C, 1, 1}}};
  p.num_slots = 2;
  p.stores = {{AddStep(p, Mul, JitOp::kMul, {0, 1}), 0, Stored::kCompute}};
  EXPECT_EQ(CompileFusedJit(p, GetParam()), nullptr);
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
  // Bool arrays: a stored bool, a loaded bool array.
  p.loads[1].shape = {8, 8};
  if (JitRunsHere(JitIsa::kAuto)) {
    EXPECT_NE(CompileFusedJit(p), nullptr);  // the same program with both operands full
  }
  p.stores[0].stored = Stored::kBool;
  EXPECT_EQ(CompileFusedJit(p), nullptr);
  p.stores[0].stored = Stored::kCompute;
  p.loads[1].stored = Stored::kBool;
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
