// narrow-half-dense: a matmul / convolution computed in f32 between casts up from one half
// dtype and a rounding back to it becomes the same op on the half values. Each case is
// evaluated before and after the pass: on the reference device (the half node widened) the
// outputs are bit-identical; on the CPU, where this machine may run oneDNN's native bf16
// kernels, within one bf16 rounding (the f32 sums are added in another order).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <optional>

#include "kernels/cpu/onednn_kernels.h"
#include "passes/passes.h"
#include "passes/verifier.h"
#include "unit/pass_test_util.h"

namespace tg {
namespace {

// One rounding step of `dtype` at magnitude |x| (the spacing of its values there).
double Ulp(double x, DType dtype) {
  const int mantissa_bits = dtype == DType::kBF16 ? 7 : 10;
  const double m = std::max(std::fabs(x), 1e-30);
  return std::ldexp(1.0, static_cast<int>(std::floor(std::log2(m))) - mantissa_bits);
}

// Outputs of `text` (on `text_device`, by default `device`) and of `after` on `device`,
// inputs drawn from one seed, compared to `ulps` roundings of the output dtype (0: bit for
// bit).
void ExpectOutputsWithin(const std::string& text, const Graph& after, DeviceKind device,
                         double ulps, std::optional<DeviceKind> text_device = std::nullopt) {
  std::unique_ptr<Graph> before = ParseGraph(text);
  std::map<std::string, HostTensor> feeds = RandomFeeds(*before, 11);
  EvalResult a = EvaluateGraph(*before, feeds, text_device.value_or(device));
  EvalResult b = EvaluateGraph(after, feeds, device);
  ASSERT_EQ(a.outputs.size(), b.outputs.size());
  for (size_t o = 0; o < a.outputs.size(); ++o) {
    ASSERT_EQ(a.outputs[o].type(), b.outputs[o].type());
    const DType dt = a.outputs[o].type().dtype;
    for (int64_t i = 0; i < a.outputs[o].type().numel(); ++i) {
      const double x = a.outputs[o].GetAsDouble(i), y = b.outputs[o].GetAsDouble(i);
      ASSERT_LE(std::fabs(x - y), ulps * Ulp(x, dt)) << "output " << o << " element " << i;
    }
  }
}

std::unique_ptr<Graph> Narrowed(const std::string& text) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  PassContext ctx;
  CreateNarrowHalfDensePass()->Run(*g, ctx);
  CreateDcePass()->Run(*g, ctx);
  Verify(*g, &OpRegistry::Global());
  ExpectOutputsWithin(text, *g, DeviceKind::kReference, 0.0);
  ExpectOutputsWithin(text, *g, DeviceKind::kCpu, 1.0);
  return g;
}

TEST(NarrowHalfDense, ABf16LinearLayerBecomesOneBf16MatmulEpilogue) {
  // model.bfloat16()'s Linear + ReLU as capture and the epilogue fusion leave it.
  std::unique_ptr<Graph> g = Narrowed(R"(graph g {
  input %x : bf16[8,48]
  input %w : bf16[40,48]
  input %b : bf16[40]
  %x32 = cast(%x) {dtype = f32} : f32[8,48]
  %w32 = cast(%w) {dtype = f32} : f32[40,48]
  %b32 = cast(%b) {dtype = f32} : f32[40]
  %y32 = matmul_epilogue(%x32, %w32, %b32) {transpose_a = false, transpose_b = true, activation = "relu"} : f32[8,40]
  %y = cast(%y32) {dtype = bf16} : bf16[8,40]
  output %y
})");
  EXPECT_EQ(Count(*g, "cast"), 0);
  const Node* mm = Only(*g, "matmul_epilogue");
  ASSERT_NE(mm, nullptr);
  EXPECT_EQ(mm->output()->type().dtype, DType::kBF16);
  EXPECT_EQ(GetString(mm->attrs(), "activation"), "relu");
}

TEST(NarrowHalfDense, ConvolutionsAndTheirGradientsNarrow) {
  std::unique_ptr<Graph> g = Narrowed(R"(graph g {
  input %x : bf16[2,16,9,9]
  input %w : bf16[32,16,3,3]
  input %dy : bf16[2,32,9,9]
  %x32 = cast(%x) {dtype = f32} : f32[2,16,9,9]
  %w32 = cast(%w) {dtype = f32} : f32[32,16,3,3]
  %dy32 = cast(%dy) {dtype = f32} : f32[2,32,9,9]
  %y32 = conv2d(%x32, %w32) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1} : f32[2,32,9,9]
  %y = cast(%y32) {dtype = bf16} : bf16[2,32,9,9]
  %dx32 = conv2d_backward_input(%dy32, %w32) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1, input_shape = [2, 16, 9, 9]} : f32[2,16,9,9]
  %dx = cast(%dx32) {dtype = bf16} : bf16[2,16,9,9]
  %dw32 = conv2d_backward_weight(%dy32, %x32) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1, weight_shape = [32, 16, 3, 3]} : f32[32,16,3,3]
  %dw = cast(%dw32) {dtype = bf16} : bf16[32,16,3,3]
  output %y
  output %dx
  output %dw
})");
  EXPECT_EQ(Count(*g, "cast"), 0);
  for (const char* op : {"conv2d", "conv2d_backward_input", "conv2d_backward_weight"}) {
    const Node* n = Only(*g, op);
    ASSERT_NE(n, nullptr) << op;
    EXPECT_EQ(n->output()->type().dtype, DType::kBF16) << op;
  }
}

TEST(NarrowHalfDense, AConvolutionWithItsBiasAndActivationNarrows) {
  // A bf16 Conv2d with bias and ReLU after fuse-conv-epilogue: one bf16 conv2d_epilogue
  // (oneDNN's bf16 convolution with bias and post-op where the CPU has bf16 instructions).
  std::unique_ptr<Graph> g = Narrowed(R"(graph g {
  input %x : bf16[2,8,7,7]
  input %w : bf16[16,8,3,3]
  input %b : bf16[16]
  %x32 = cast(%x) {dtype = f32} : f32[2,8,7,7]
  %w32 = cast(%w) {dtype = f32} : f32[16,8,3,3]
  %b32 = cast(%b) {dtype = f32} : f32[16]
  %y32 = conv2d_epilogue(%x32, %w32, %b32) {stride = [1, 1], padding = [1, 1], dilation = [1, 1], groups = 1, bias = true, batch_norm = false, eps = 0.00001, activation = "relu", src_blocked = false, dst_blocked = false} : f32[2,16,7,7]
  %y = cast(%y32) {dtype = bf16} : bf16[2,16,7,7]
  output %y
})");
  EXPECT_EQ(Count(*g, "cast"), 0);
  const Node* conv = Only(*g, "conv2d_epilogue");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(conv->output()->type().dtype, DType::kBF16);
}

TEST(NarrowHalfDense, AnOperandExactInTheHalfDtypeIsRoundedToItWithoutChange) {
  // After fold-exact-casts, a relu between two half layers is an f32 value exact in bf16 (no
  // cast of its own): the narrowed matmul reads it rounded to bf16, which changes nothing.
  std::unique_ptr<Graph> g = Narrowed(R"(graph g {
  input %x : bf16[6,8]
  input %w : bf16[8,5]
  %x32 = cast(%x) {dtype = f32} : f32[6,8]
  %r = relu(%x32) : f32[6,8]
  %w32 = cast(%w) {dtype = f32} : f32[8,5]
  %y32 = matmul(%r, %w32) {transpose_a = false, transpose_b = false} : f32[6,5]
  %y = cast(%y32) {dtype = bf16} : bf16[6,5]
  output %y
  output %r
})");
  const Node* mm = Only(*g, "matmul");
  ASSERT_NE(mm, nullptr);
  EXPECT_EQ(mm->output()->type().dtype, DType::kBF16);
  ASSERT_NE(mm->input(0)->producer(), nullptr);
  EXPECT_EQ(mm->input(0)->producer()->op(), "cast");  // relu's value rounded, exactly
  EXPECT_EQ(mm->input(1)->producer(), nullptr);        // the weight itself
}

TEST(NarrowHalfDense, AResultReadInF32OrOperandsOfTwoDtypesStayWidened) {
  // %p: its f32 result is also added in f32 (no single rounding to narrow into);
  // %q: one operand is f16, the other bf16; %r: an f32 operand not exact in bf16.
  std::unique_ptr<Graph> g = Narrowed(R"(graph g {
  input %a : bf16[4,8]
  input %b : bf16[8,4]
  input %c : f16[8,4]
  input %d : f32[8,4]
  %a32 = cast(%a) {dtype = f32} : f32[4,8]
  %b32 = cast(%b) {dtype = f32} : f32[8,4]
  %c32 = cast(%c) {dtype = f32} : f32[8,4]
  %p32 = matmul(%a32, %b32) {transpose_a = false, transpose_b = false} : f32[4,4]
  %p = cast(%p32) {dtype = bf16} : bf16[4,4]
  %p2 = add(%p32, %p32) : f32[4,4]
  %q32 = matmul(%a32, %c32) {transpose_a = false, transpose_b = false} : f32[4,4]
  %q = cast(%q32) {dtype = bf16} : bf16[4,4]
  %r32 = matmul(%a32, %d) {transpose_a = false, transpose_b = false} : f32[4,4]
  %r = cast(%r32) {dtype = bf16} : bf16[4,4]
  output %p
  output %p2
  output %q
  output %r
})");
  EXPECT_EQ(Count(*g, "matmul"), 3);
  for (const auto& n : g->nodes()) {
    if (n->op() == "matmul") EXPECT_EQ(n->output()->type().dtype, DType::kF32);
  }
}

TEST(NarrowHalfDense, Bf16KernelsAreNativeExactlyWhereTheCpuHasBf16Instructions) {
  // The detection agrees with the CPU's own flags (AMX machines have AVX512_BF16 too), and
  // where it says native, oneDNN's bf16 matmul is an optimized kernel of a bf16 ISA, not its
  // reference loops. TILEGRAPH_NATIVE_HALF=0 turns native kernels off.
  const char* env = std::getenv("TILEGRAPH_NATIVE_HALF");
  const bool off = env != nullptr && std::string(env) == "0";
  EXPECT_EQ(cpu::NativeBf16Dense(), __builtin_cpu_supports("avx512bf16") && !off);
  if (!cpu::NativeBf16Dense()) return;
  cpu::MatmulParams p;
  p.m = 64, p.n = 64, p.k = 64;
  cpu::OnednnMatmul mm(p, {}, cpu::PrepackB::kNo, cpu::DenseType::kBF16);
  EXPECT_FALSE(cpu::IsReferenceImplementation(mm.implementation())) << mm.implementation();
  EXPECT_TRUE(mm.implementation().find("bf16") != std::string::npos ||
              mm.implementation().find("amx") != std::string::npos)
      << mm.implementation();
}

// bf16 backward-weight passes on the CPU (the GEMM over columns for 1x1 convolutions and small
// maps, oneDNN's kernel otherwise; widened where the CPU lacks bf16) against the reference
// device's widened loops: within one bf16 rounding of the f32 sum.
TEST(NarrowHalfDense, Bf16BackwardWeightMatchesTheWidenedReferenceOnEveryPath) {
  struct Case {
    const char* x;
    const char* dy;
    const char* w;
    int k, stride, pad;
  };
  const Case cases[] = {
      {"2,32,16,16", "2,24,16,16", "24,32,1,1", 1, 1, 0},  // 1x1: columns are the planes
      {"2,32,9,9", "2,16,5,5", "16,32,1,1", 1, 2, 0},      // 1x1 strided: gathered columns
      {"2,16,4,4", "2,32,4,4", "32,16,3,3", 3, 1, 1},      // 3x3, 32 positions: GEMM
      {"2,16,16,16", "2,16,8,8", "16,16,3,3", 3, 2, 1},    // 3x3, 128 positions: GEMM
      {"2,16,24,24", "2,16,24,24", "16,16,3,3", 3, 1, 1},  // 3x3, 1,152 positions: oneDNN
  };
  for (const Case& c : cases) {
    const std::string s = std::to_string(c.stride), pd = std::to_string(c.pad);
    const std::string text = std::string("graph g {\n  input %dy : bf16[") + c.dy +
        "]\n  input %x : bf16[" + c.x + "]\n  %dw = conv2d_backward_weight(%dy, %x) {stride = [" +
        s + ", " + s + "], padding = [" + pd + ", " + pd +
        "], dilation = [1, 1], groups = 1, weight_shape = [" + c.w + "]} : bf16[" + c.w +
        "]\n  output %dw\n}";
    SCOPED_TRACE(text);
    std::unique_ptr<Graph> g = ParseGraph(text);
    ExpectOutputsWithin(text, *g, DeviceKind::kCpu, 1.0, DeviceKind::kReference);
  }
}

// bf16 forward and 1x1 backward-input convolutions (on the CPU: one batched GEMM on the NCHW
// buffers for 1x1 on planes >= 64, one GEMM over gathered columns for smaller planes and
// small 3x3 maps, oneDNN's convolution otherwise) against the widened reference.
TEST(NarrowHalfDense, Bf16ForwardAndBackwardInputMatchTheWidenedReferenceOnEveryPath) {
  struct Case {
    int size, k, stride, pad, dil;
  };
  const Case cases[] = {
      {10, 1, 1, 0, 1},  // 1x1, 100 positions per plane: batched GEMM
      {4, 1, 1, 0, 1},   // 1x1, 16 per plane: gathered GEMM
      {10, 1, 2, 0, 1},  // 1x1 strided: oneDNN
      {4, 3, 1, 1, 1},   // 3x3, 48 positions in the batch: GEMM over columns
      {5, 3, 1, 2, 2},   // 3x3 dilated 2, 75 positions: GEMM over columns (forward)
      {9, 3, 2, 1, 1},   // 3x3 strided, 75 positions: GEMM over columns (forward)
      {20, 3, 1, 1, 1},  // 3x3, 1,200 positions: oneDNN
  };
  for (const Case& c : cases) {
    const int out = (c.size + 2 * c.pad - c.dil * (c.k - 1) - 1) / c.stride + 1;
    const std::string n = std::to_string(c.size), o = std::to_string(out),
                      k = std::to_string(c.k), s = std::to_string(c.stride),
                      pd = std::to_string(c.pad), d = std::to_string(c.dil);
    const std::string x = "3,40," + n + "," + n, y = "3,24," + o + "," + o,
                      attrs = "stride = [" + s + ", " + s + "], padding = [" + pd + ", " + pd +
                              "], dilation = [" + d + ", " + d + "], groups = 1";
    const std::string text = "graph g {\n  input %x : bf16[" + x + "]\n  input %w : bf16[24,40," +
        k + "," + k + "]\n  input %dy : bf16[" + y + "]\n  %y = conv2d(%x, %w) {" + attrs +
        "} : bf16[" + y + "]\n  %dx = conv2d_backward_input(%dy, %w) {" + attrs +
        ", input_shape = [3, 40, " + n + ", " + n + "]} : bf16[" + x +
        "]\n  output %y\n  output %dx\n}";
    SCOPED_TRACE(text);
    std::unique_ptr<Graph> g = ParseGraph(text);
    ExpectOutputsWithin(text, *g, DeviceKind::kCpu, 1.0, DeviceKind::kReference);
  }
}

}  // namespace
}  // namespace tg
