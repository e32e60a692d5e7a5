// The verifier: one test per rule, each with a graph that breaks exactly that rule, plus
// valid graphs that pass. Op checks use a local registry so they do not depend on op families.
#include <gtest/gtest.h>

#include "ir/printer.h"
#include "passes/verifier.h"
#include "support/error.h"

namespace tg {
namespace {

const TensorType kF2{DType::kF32, {2}};

// "ew" (one input, same type out, attr "alpha" defaulting to 1.0), "pair" (two outputs,
// required attr "k") and "wrap" (like ew, with a required nested graph "body").
OpRegistry& TestRegistry() {
  static OpRegistry* r = [] {
    auto* reg = new OpRegistry();
    auto kernel = [](const Node&) { return Kernel([](const KernelArgs&) {}); };
    OpDef ew;
    ew.name = "ew";
    ew.num_inputs = 1;
    ew.attrs = {{"alpha", Attr{1.0}}};
    ew.infer = [](const InferContext& c) { return std::vector<TensorType>{c.in(0)}; };
    ew.not_differentiable = true;
    ew.kernels[DeviceKind::kCpu] = ew.kernels[DeviceKind::kReference] = kernel;
    reg->Register(ew);
    OpDef pair = ew;
    pair.name = "pair";
    pair.num_outputs = 2;
    pair.attrs = {{"k", std::nullopt}};
    pair.infer = [](const InferContext& c) {
      return std::vector<TensorType>{c.in(0), {DType::kI64, c.in(0).shape}};
    };
    reg->Register(pair);
    OpDef wrap = ew;
    wrap.name = "wrap";
    wrap.attrs = {{"body", std::nullopt}};
    reg->Register(wrap);
    return reg;
  }();
  return *r;
}

// Expects Verify to throw an Internal error mentioning `words`.
void ExpectBroken(const Graph& g, const std::string& words, bool ops = false) {
  try {
    Verify(g, ops ? &TestRegistry() : nullptr);
    FAIL() << "verified:\n" << PrintGraph(g);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInternal) << e.what();
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

// x -> ew -> y, with variable w updated by y.
struct Valid {
  Graph g{"valid"};
  Value* x = g.AddInput("x", kF2);
  Value* w = g.AddVariable("w", kF2);
  Node* n = g.AddNode("ew", {x}, {kF2});
  Valid() {
    g.AddOutput(n->output());
    g.SetUpdate(w, n->output());
  }
};

TEST(Verifier, ValidGraphPasses) {
  Valid v;
  Value* c = v.g.AddConstant(HostTensor::Full(kF2, 1.0), "c");
  Node* p = v.g.AddNode("pair", {c}, {kF2, {DType::kI64, {2}}}, {{"k", int64_t{1}}});
  v.g.AddOutput(p->output(1));
  auto body = std::make_shared<Graph>("body");
  Node* bn = body->AddNode("ew", {body->AddInput("a", kF2)}, {kF2});
  body->AddOutput(bn->output());
  Node* wrap = v.g.AddNode("wrap", {v.x}, {kF2}, {{"body", std::shared_ptr<const Graph>(body)}});
  wrap->set_placement(1);
  v.g.AddOutput(wrap->output());
  v.g.AddNode("ew", {p->output(0)}, {kF2}, {{"alpha", 2.0}});
  EXPECT_NO_THROW(Verify(v.g));
  EXPECT_NO_THROW(Verify(v.g, &TestRegistry()));
}

TEST(Verifier, InputUsedBeforeDefinition) {
  Valid v;
  // A node inserted before the node that produces its input.
  v.g.AddNode("ew", {v.n->output()}, {kF2}, {}, /*before=*/v.n);
  ExpectBroken(v.g, "used before its definition");
}

TEST(Verifier, InputFromAnotherGraph) {
  Valid v;
  Graph other;
  Value* foreign = other.AddInput("x", kF2);
  v.g.AddNode("ew", {foreign}, {kF2});
  ExpectBroken(v.g, "not defined in this graph");
}

TEST(Verifier, InputFromRemovedNode) {
  Valid v;
  Node* a = v.g.AddNode("ew", {v.x}, {kF2});
  v.g.AddNode("ew", {a->output()}, {kF2});
  v.g.RemoveNodesIf([&](const Node& n) { return &n == a; });
  ExpectBroken(v.g, "not defined in this graph");
}

TEST(Verifier, ErrorNamesTheNode) {
  Valid v;
  Graph other;
  Node* bad = v.g.AddNode("ew", {other.AddInput("stranger", kF2)}, {kF2});
  v.g.RenameValue(bad->output(), "culprit");
  ExpectBroken(v.g, "in node %culprit = ew(%stranger)");
}

TEST(Verifier, NullInput) {
  Valid v;
  v.n->set_input(0, nullptr);
  ExpectBroken(v.g, "input 0 is null");
}

TEST(Verifier, GraphOutputNotDefined) {
  Valid v;
  Graph other;
  v.g.AddOutput(other.AddInput("y", kF2));
  ExpectBroken(v.g, "graph output %y is not defined");
}

TEST(Verifier, UpdateValueNotDefined) {
  Valid v;
  Graph other;
  v.g.mutable_updates()[0].value = other.AddInput("y", kF2);
  ExpectBroken(v.g, "update value %y");
}

TEST(Verifier, UpdateTargetNotAVariable) {
  Valid v;
  v.g.mutable_updates().push_back({v.x, v.n->output()});
  ExpectBroken(v.g, "is a input, not a variable");
}

TEST(Verifier, UpdateTargetFromAnotherGraph) {
  Valid v;
  Graph other;
  v.g.mutable_updates()[0].variable = other.AddVariable("w2", kF2);
  ExpectBroken(v.g, "not a variable of this graph");
}

TEST(Verifier, UpdateTypeMismatch) {
  Valid v;
  Value* wide = v.g.AddNode("ew", {v.g.AddInput("z", {DType::kF32, {3}})}, {{DType::kF32, {3}}})
                    ->output();
  v.g.mutable_updates()[0].value = wide;
  ExpectBroken(v.g, "update of variable %w : f32[2] with %");
}

TEST(Verifier, VariableUpdatedTwice) {
  Valid v;
  v.g.mutable_updates().push_back({v.w, v.x});
  ExpectBroken(v.g, "updated more than once");
}

TEST(Verifier, ConstantDataTypeMismatch) {
  Valid v;
  Value* c = v.g.AddConstant(HostTensor::Full(kF2, 1.0), "c");
  c->set_type({DType::kF64, {2}});
  ExpectBroken(v.g, "constant %c holds data of type f32[2] but has type f64[2]");
}

TEST(Verifier, NegativePlacement) {
  Valid v;
  v.n->set_placement(-1);
  ExpectBroken(v.g, "negative placement -1");
}

TEST(Verifier, NestedGraphIsVerified) {
  Valid v;
  auto body = std::make_shared<Graph>("body");
  Node* bn = body->AddNode("ew", {body->AddInput("a", kF2)}, {kF2});
  bn->set_placement(-3);
  v.g.AddNode("wrap", {v.x}, {kF2}, {{"body", std::shared_ptr<const Graph>(body)}});
  ExpectBroken(v.g, "negative placement -3");
  ExpectBroken(v.g, "in graph attribute 'body'");
}

TEST(Verifier, NestedGraphOpsAreVerified) {
  Valid v;
  auto body = std::make_shared<Graph>("body");
  body->AddNode("mystery", {body->AddInput("a", kF2)}, {kF2});
  v.g.AddNode("wrap", {v.x}, {kF2}, {{"body", std::shared_ptr<const Graph>(body)}});
  EXPECT_NO_THROW(Verify(v.g));
  ExpectBroken(v.g, "op 'mystery' is not registered", /*ops=*/true);
}

TEST(Verifier, NullGraphAttribute) {
  Valid v;
  v.n->mutable_attrs()["body"] = std::shared_ptr<const Graph>();
  ExpectBroken(v.g, "graph attribute 'body' is null");
}

TEST(Verifier, OpNotRegistered) {
  Valid v;
  v.g.AddNode("mystery", {v.x}, {kF2});
  EXPECT_NO_THROW(Verify(v.g));  // structure alone does not look at ops
  ExpectBroken(v.g, "op 'mystery' is not registered", true);
}

TEST(Verifier, WrongInputCount) {
  Valid v;
  v.g.AddNode("ew", {v.x, v.x}, {kF2});
  ExpectBroken(v.g, "takes 1 inputs, the node has 2", true);
}

TEST(Verifier, WrongOutputCount) {
  Valid v;
  v.g.AddNode("pair", {v.x}, {kF2}, {{"k", int64_t{1}}});
  ExpectBroken(v.g, "has 2 outputs, the node has 1", true);
}

TEST(Verifier, AttributeNotInSchema) {
  Valid v;
  v.n->mutable_attrs()["beta"] = 2.0;
  ExpectBroken(v.g, "attribute 'beta' is not in the schema of op ew", true);
}

TEST(Verifier, RequiredAttributeMissing) {
  Valid v;
  v.g.AddNode("pair", {v.x}, {kF2, {DType::kI64, {2}}});
  ExpectBroken(v.g, "requires attribute 'k'", true);
}

TEST(Verifier, InferredTypeMismatch) {
  Valid v;
  Node* n = v.g.AddNode("pair", {v.x}, {kF2, {DType::kI32, {2}}}, {{"k", int64_t{0}}});
  v.g.RenameValue(n->output(0), "p0");
  ExpectBroken(v.g, "output types f32[2], i32[2] differ from the inferred f32[2], i64[2]", true);
  ExpectBroken(v.g, "in node %p0, %", true);
}

}  // namespace
}  // namespace tg
