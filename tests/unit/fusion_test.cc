// fuse-elementwise: before/after IR text for a chain, a diamond, a value escaping the group,
// a broadcast input and a non-elementwise node in the middle; numeric equivalence of the
// graph before and after fusion (f32 and f64), with both the CPU and reference kernels.
#include <gtest/gtest.h>

#include <random>

#include "ir/printer.h"
#include "ops/evaluate.h"
#include "passes/passes.h"
#include "passes/verifier.h"

namespace tg {
namespace {

std::unique_ptr<Graph> Fused(const std::string& text, bool* changed = nullptr) {
  std::unique_ptr<Graph> g = ParseGraph(text);
  PassContext ctx;
  bool c = CreateFuseElementwisePass()->Run(*g, ctx);
  if (changed) *changed = c;
  Verify(*g, &OpRegistry::Global());
  return g;
}

// Number of nodes of each kind after fusion.
int Count(const Graph& g, const std::string& op) {
  int n = 0;
  for (const auto& node : g.nodes()) n += node->op() == op;
  return n;
}

const Graph& BodyOf(const Node& n) { return GetGraph(n.attrs(), "body"); }

HostTensor Random(const TensorType& t, std::mt19937& rng) {
  HostTensor h(t);
  std::normal_distribution<double> normal;
  std::bernoulli_distribution coin;
  for (int64_t i = 0; i < t.numel(); ++i) {
    h.SetFromDouble(i, t.dtype == DType::kBool ? coin(rng) : normal(rng));
  }
  return h;
}

// Evaluates the graph before and after fusion on random inputs; outputs must agree.
void ExpectEquivalent(const std::string& text) {
  std::unique_ptr<Graph> before = ParseGraph(text);
  std::unique_ptr<Graph> after = Fused(text);
  std::mt19937 rng(42);
  std::map<std::string, HostTensor> feeds;
  for (Value* v : before->inputs()) feeds[v->name()] = Random(v->type(), rng);
  for (DeviceKind choice : {DeviceKind::kCpu, DeviceKind::kReference}) {
    EvalResult a = EvaluateGraph(*before, feeds, choice);
    EvalResult b = EvaluateGraph(*after, feeds, choice);
    ASSERT_EQ(a.outputs.size(), b.outputs.size());
    for (size_t i = 0; i < a.outputs.size(); ++i) {
      ASSERT_EQ(a.outputs[i].type(), b.outputs[i].type());
      double tol = a.outputs[i].type().dtype == DType::kF64 ? 1e-12 : 1e-5;
      for (int64_t j = 0; j < a.outputs[i].type().numel(); ++j) {
        double x = a.outputs[i].GetAsDouble(j), y = b.outputs[i].GetAsDouble(j);
        ASSERT_NEAR(x, y, tol * (1 + std::abs(x))) << "output " << i << " element " << j;
      }
    }
  }
}

TEST(FuseElementwise, ChainBecomesOneNode) {
  std::string text = R"(graph g {
  input %x : f32[4,8]
  %a = exp(%x) : f32[4,8]
  %b = neg(%a) : f32[4,8]
  %c = tanh(%b) : f32[4,8]
  output %c
})";
  std::unique_ptr<Graph> g = Fused(text);
  EXPECT_EQ(PrintGraph(*g), R"(graph g {
  input %x : f32[4,8]
  %c = fused_elementwise(%x) {body = graph fused {
    input %x : f32[4,8]
    %a = exp(%x) : f32[4,8]
    %b = neg(%a) : f32[4,8]
    %c = tanh(%b) : f32[4,8]
    output %c
  }} : f32[4,8]
  output %c
}
)");
  ExpectEquivalent(text);
}

TEST(FuseElementwise, Diamond) {
  std::string text = R"(graph g {
  input %x : f64[3,5]
  %a = sigmoid(%x) : f64[3,5]
  %b = exp(%a) : f64[3,5]
  %c = sqrt(%a) : f64[3,5]
  %d = mul(%b, %c) : f64[3,5]
  output %d
})";
  std::unique_ptr<Graph> g = Fused(text);
  ASSERT_EQ(g->nodes().size(), 1u);
  EXPECT_EQ(BodyOf(*g->nodes()[0]).nodes().size(), 4u);
  ExpectEquivalent(text);
}

TEST(FuseElementwise, EscapingValueBecomesAnOutput) {
  std::string text = R"(graph g {
  input %x : f32[2,3]
  %a = exp(%x) : f32[2,3]
  %b = relu(%a) : f32[2,3]
  %s = sum(%a) {axes = [1], keepdim = false} : f32[2]
  output %b
  output %s
})";
  std::unique_ptr<Graph> g = Fused(text);
  EXPECT_EQ(PrintGraph(*g), R"(graph g {
  input %x : f32[2,3]
  %a, %b = fused_elementwise(%x) {body = graph fused {
    input %x : f32[2,3]
    %a = exp(%x) : f32[2,3]
    %b = relu(%a) : f32[2,3]
    output %a
    output %b
  }} : f32[2,3], f32[2,3]
  %s = sum(%a) {axes = [1], keepdim = false} : f32[2]
  output %b
  output %s
}
)");
  ExpectEquivalent(text);
}

TEST(FuseElementwise, BroadcastAndBoolInputs) {
  std::string text = R"(graph g {
  input %x : f32[4,6]
  input %bias : f32[6]
  input %m : bool[4,1]
  const %s : f32[] = 0.5
  %a = add(%x, %bias) : f32[4,6]
  %b = mul(%a, %s) : f32[4,6]
  %c = gt(%b, %bias) : bool[4,6]
  %d = logical_and(%c, %m) : bool[4,6]
  %e = where(%d, %b, %x) : f32[4,6]
  output %e
  output %d
})";
  std::unique_ptr<Graph> g = Fused(text);
  ASSERT_EQ(Count(*g, "fused_elementwise"), 1);
  EXPECT_EQ(g->nodes().size(), 1u);
  EXPECT_EQ(g->nodes()[0]->outputs().size(), 2u);
  ExpectEquivalent(text);
}

TEST(FuseElementwise, NonElementwiseNodeInTheMiddle) {
  // %m (a matmul) separates the two chains: %c needs %m, which runs after the first group
  // started, so it forms a second group after %m.
  std::string text = R"(graph g {
  input %x : f32[4,4]
  %a = exp(%x) : f32[4,4]
  %b = neg(%a) : f32[4,4]
  %m = matmul(%b, %x) {transpose_a = false, transpose_b = false} : f32[4,4]
  %c = add(%m, %a) : f32[4,4]
  %d = relu(%c) : f32[4,4]
  output %d
})";
  std::unique_ptr<Graph> g = Fused(text);
  ASSERT_EQ(g->nodes().size(), 3u);
  EXPECT_EQ(g->nodes()[0]->op(), "fused_elementwise");
  EXPECT_EQ(g->nodes()[1]->op(), "matmul");
  EXPECT_EQ(g->nodes()[2]->op(), "fused_elementwise");
  ExpectEquivalent(text);
}

TEST(FuseElementwise, UserBetweenMembersStaysAfterTheFusedNode) {
  // %s uses %a before %c joins the group; the fused node is placed at %a, before %s.
  std::string text = R"(graph g {
  input %x : f32[8,3]
  %a = exp(%x) : f32[8,3]
  %s = sum(%a) {axes = [0], keepdim = true} : f32[1,3]
  %b = log(%a) : f32[8,3]
  %c = add(%b, %s) : f32[8,3]
  output %c
})";
  std::unique_ptr<Graph> g = Fused(text);
  ASSERT_EQ(g->nodes().size(), 3u);
  EXPECT_EQ(g->nodes()[0]->op(), "fused_elementwise");
  EXPECT_EQ(g->nodes()[1]->op(), "sum");
  EXPECT_EQ(g->nodes()[2]->op(), "add");  // %s comes after the group started: not fused in
  ExpectEquivalent(text);
}

TEST(FuseElementwise, SingletonsAndOtherShapesStayUnfused) {
  std::string text = R"(graph g {
  input %x : f32[4,4]
  input %y : f32[4]
  %a = exp(%y) : f32[4]
  %b = add(%x, %a) : f32[4,4]
  %i = cast(%b) {dtype = i64} : i64[4,4]
  output %i
})";
  bool changed = true;
  std::unique_ptr<Graph> g = Fused(text, &changed);
  EXPECT_FALSE(changed);
  EXPECT_EQ(Count(*g, "fused_elementwise"), 0);
}

TEST(FuseElementwise, LargeF32AndF64Equivalence) {
  for (const char* dt : {"f32", "f64"}) {
    std::string t = std::string(dt) + "[64,1000]";
    std::string b = std::string(dt) + "[1000]";
    std::string text = "graph g {\n  input %x : " + t + "\n  input %y : " + b +
                       "\n  %a = mul(%x, %y) : " + t +
                       "\n  %b = gelu(%a) {approximate = \"tanh\"} : " +
                       t + "\n  %c = silu(%b) : " + t + "\n  %d = sub(%c, %x) : " + t +
                       "\n  output %d\n}";
    std::unique_ptr<Graph> g = Fused(text);
    EXPECT_EQ(g->nodes().size(), 1u) << dt;
    ExpectEquivalent(text);
  }
}

// Half chains fuse into one f32-computing pass that rounds every op's result to the format,
// as the unfused (widened) ops do: the same values, up to the rare last-bit difference of
// an f32 result that sits on a rounding boundary of the format.
TEST(FuseElementwise, HalfChainsKeepPerOpRounding) {
  for (const char* dt : {"f16", "bf16"}) {
    std::string t = std::string(dt) + "[64,1000]";
    std::string text = "graph g {\n  input %x : " + t + "\n  input %y : " + dt + "[1000]" +
                       "\n  %a = mul(%x, %y) : " + t +
                       "\n  %b = gelu(%a) {approximate = \"tanh\"} : " + t +
                       "\n  %c = silu(%b) : " + t + "\n  %d = sub(%c, %x) : " + t +
                       "\n  output %d\n  output %b\n}";
    std::unique_ptr<Graph> before = ParseGraph(text);
    std::unique_ptr<Graph> after = Fused(text);
    ASSERT_EQ(after->nodes().size(), 1u) << dt;
    EXPECT_EQ(after->nodes()[0]->op(), "fused_elementwise");
    std::mt19937 rng(7);
    std::map<std::string, HostTensor> feeds;
    for (Value* v : before->inputs()) feeds[v->name()] = Random(v->type(), rng);
    EvalResult a = EvaluateGraph(*before, feeds, DeviceKind::kCpu);
    EvalResult b = EvaluateGraph(*after, feeds, DeviceKind::kCpu);
    const double ulp = std::string(dt) == "f16" ? 0x1p-10 : 0x1p-7;
    for (size_t i = 0; i < a.outputs.size(); ++i) {
      ASSERT_EQ(a.outputs[i].type(), b.outputs[i].type());
      int64_t n = a.outputs[i].type().numel(), differ = 0;
      for (int64_t j = 0; j < n; ++j) {
        double x = a.outputs[i].GetAsDouble(j), y = b.outputs[i].GetAsDouble(j);
        if (x == y) continue;
        ++differ;
        ASSERT_LE(std::abs(x - y), 2 * ulp * std::abs(x)) << dt << " element " << j;
      }
      EXPECT_LE(differ, n / 1000) << dt << " output " << i;  // nearly all bit-identical
    }
  }
}

TEST(FuseElementwise, ChainsJoinedByALaterNodeMerge) {
  // SGD with momentum: the decayed gradient and the momentum chain start as separate groups
  // (neither reads the other); `where` reads both, and the two groups become one pass.
  std::string text = R"(graph g {
  input %g : f32[64]
  input %w : f32[64]
  input %buf : f32[64]
  input %first : bool[]
  input %wd : f32[]
  input %mom : f32[]
  %decay = mul(%w, %wd) : f32[64]
  %d = add(%g, %decay) : f32[64]
  %m = mul(%buf, %mom) : f32[64]
  %nb = add(%m, %d) : f32[64]
  %sel = where(%first, %d, %nb) : f32[64]
  %nw = sub(%w, %sel) : f32[64]
  output %sel
  output %nw
})";
  std::unique_ptr<Graph> g = Fused(text);
  EXPECT_EQ(g->nodes().size(), 1u) << PrintGraph(*g);
  ExpectEquivalent(text);
}

TEST(FuseElementwise, NoMergeAcrossANonElementwiseNode) {
  // %s (a reduction of group A's value) feeds group B; merging A and B would make the
  // fused node read %s before it is computed, so they stay two nodes.
  std::string text = R"(graph g {
  input %x : f32[8]
  %a = exp(%x) : f32[8]
  %b = neg(%a) : f32[8]
  %s = sum(%b) {axes = [0], keepdim = true} : f32[1]
  %c = mul(%x, %s) : f32[8]
  %d = tanh(%c) : f32[8]
  %e = add(%d, %b) : f32[8]
  output %e
})";
  std::unique_ptr<Graph> g = Fused(text);
  EXPECT_EQ(Count(*g, "fused_elementwise"), 2) << PrintGraph(*g);
  ExpectEquivalent(text);
}

// The forward's use of a widened weight: %c0 = cast(%w), tanh, a matmul %m0, then `gap`
// more matmuls (%m1 .. %m<gap>) standing for the rest of the step. `extra_inputs`: more
// input lines.
std::string WidenedWeightThenMatmuls(int gap, const std::string& extra_inputs = "") {
  std::string text = "graph g {\n  input %w : f16[4,4]\n  input %x : f32[4,4]\n" + extra_inputs +
                     R"(  %c0 = cast(%w) {dtype = f32} : f32[4,4]
  %t0 = tanh(%c0) : f32[4,4]
  %m0 = matmul(%x, %t0) {transpose_a = false, transpose_b = false} : f32[4,4]
)";
  for (int i = 1; i <= gap; ++i) {
    text += "  %m" + std::to_string(i) + " = matmul(%m" + std::to_string(i - 1) +
            ", %x) {transpose_a = false, transpose_b = false} : f32[4,4]\n";
  }
  return text;
}

// Two casts of %w with `gap` matmuls between them (a forward and a recomputed backward use
// of a widened weight).
std::string SiblingCasts(int gap) {
  std::string text = WidenedWeightThenMatmuls(gap);
  text += "  %c1 = cast(%w) {dtype = f32} : f32[4,4]\n";
  text += "  %y = matmul(%m" + std::to_string(gap) + ", %c1) {transpose_a = false, "
          "transpose_b = false} : f32[4,4]\n  output %y\n}";
  return text;
}

TEST(FuseElementwise, ASiblingFarBackInTheScheduleIsNotJoined) {
  // Near: the second cast joins the first's group (one read of %w). Far: it stays where it
  // is, so its result is not alive across the 40 matmuls in between.
  std::unique_ptr<Graph> near = Fused(SiblingCasts(2));
  EXPECT_EQ(Count(*near, "fused_elementwise"), 1) << PrintGraph(*near);
  EXPECT_EQ(Count(*near, "cast"), 0);
  ExpectEquivalent(SiblingCasts(2));
  std::unique_ptr<Graph> far = Fused(SiblingCasts(40));
  EXPECT_EQ(Count(*far, "fused_elementwise"), 1) << PrintGraph(*far);
  EXPECT_EQ(Count(*far, "cast"), 1);
  const Node& last_cast = *far->nodes()[far->nodes().size() - 2];
  EXPECT_EQ(last_cast.op(), "cast");  // still right before its reader
  ExpectEquivalent(SiblingCasts(40));
}


// The forward widens %w; `gap` matmuls later the update reads the widened value twice:
// w * wd (a consumer of the cast's group) and w + step.
std::string FarConsumer(int gap) {
  std::string text = WidenedWeightThenMatmuls(gap, "  input %wd : f32[]\n");
  text += "  %d = mul(%c0, %wd) : f32[4,4]\n";
  text += "  %g = add(%m" + std::to_string(gap) + ", %d) : f32[4,4]\n";
  text += "  %u = add(%c0, %g) : f32[4,4]\n  output %u\n}";
  return text;
}

TEST(FuseElementwise, AFarConsumerOfAValueReadLaterStaysWhereItIs) {
  // Near: w * wd joins the cast's group. Far: it stays with the update (joining would hoist
  // it into the forward, where its result would live beside %c0 until the update).
  std::unique_ptr<Graph> near = Fused(FarConsumer(2));
  EXPECT_EQ(Count(*near, "mul"), 0) << PrintGraph(*near);
  ExpectEquivalent(FarConsumer(2));
  std::unique_ptr<Graph> far = Fused(FarConsumer(40));
  const Node& first = *far->nodes()[0];
  ASSERT_EQ(first.op(), "fused_elementwise") << PrintGraph(*far);
  EXPECT_EQ(first.outputs().size(), 2u) << "cast and tanh only: " << PrintGraph(*far);
  const Node& last = *far->nodes().back();
  ASSERT_EQ(last.op(), "fused_elementwise") << PrintGraph(*far);
  EXPECT_EQ(Count(BodyOf(last), "mul"), 1) << "w * wd is fused with the update";
  ExpectEquivalent(FarConsumer(40));
}

}  // namespace
}  // namespace tg
