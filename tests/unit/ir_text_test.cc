// The IR text format: printing, parsing, exact round trips, and parse errors with positions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "ir/printer.h"
#include "support/error.h"

namespace tg {
namespace {

std::string RoundTrip(const std::string& text) { return PrintGraph(*ParseGraph(text)); }

// A graph with every value kind, every attribute kind, a nested graph, a multi-output node,
// a zero-output node, placement and source locations.
std::unique_ptr<Graph> BuildEverything() {
  auto g = std::make_unique<Graph>("everything");
  Value* x = g->AddInput("x", {DType::kF32, {2, 3}});
  Value* lr = g->AddHyperParam("lr", {DType::kF32, {}});
  Value* w = g->AddVariable("w", {DType::kF32, {2, 3}});
  g->AddVariable("stats", {DType::kF64, {3}}, /*trainable=*/false);
  HostTensor c32({DType::kF32, {5}});
  float f32s[] = {0.1f, -0.0f, 1.0f, std::numeric_limits<float>::denorm_min(), 3.4e38f};
  std::memcpy(c32.data(), f32s, sizeof(f32s));
  Value* c = g->AddConstant(c32, "c");
  HostTensor c64({DType::kF64, {4}});
  double f64s[] = {0.1, 1e300, -std::numeric_limits<double>::infinity(),
                   std::numeric_limits<double>::quiet_NaN()};
  std::memcpy(c64.data(), f64s, sizeof(f64s));
  g->AddConstant(c64, "d");
  HostTensor ci({DType::kI64, {2}});
  ci.as<int64_t>()[0] = std::numeric_limits<int64_t>::max();
  ci.as<int64_t>()[1] = std::numeric_limits<int64_t>::min();
  g->AddConstant(ci, "big");
  HostTensor cb({DType::kBool, {3}});
  cb.as<uint8_t>()[1] = 1;
  g->AddConstant(cb, "mask");
  g->AddConstant(HostTensor::Scalar(DType::kI32, -7), "k");
  g->AddConstant(HostTensor::Scalar(DType::kF16, 0.5), "h16");
  g->AddConstant(HostTensor::Scalar(DType::kBF16, 2), "hb16");
  HostTensor bytes({DType::kU8, {2}});
  bytes.as<uint8_t>()[0] = 255;
  g->AddConstant(bytes, "pixels");
  g->AddConstant(HostTensor::Scalar(DType::kI8, -128), "i8min");

  auto body = std::make_shared<Graph>("body");
  Value* a = body->AddInput("a", {DType::kF32, {2, 3}});
  Node* bn = body->AddNode("neg", {a}, {{DType::kF32, {2, 3}}}, {{"inner", int64_t{1}}});
  body->RenameValue(bn->output(), "na");
  body->AddOutput(bn->output());

  AttrMap attrs;
  attrs["i"] = int64_t{-42};
  attrs["f"] = 1e-05;
  attrs["whole"] = 2.0;
  attrs["inf"] = std::numeric_limits<double>::infinity();
  attrs["b"] = true;
  attrs["s"] = std::string("quote\" back\\ nl\n tab\t ctl\x01 end");
  attrs["ints"] = std::vector<int64_t>{1, -2, 3};
  attrs["floats"] = std::vector<double>{0.5, 1.0, -2.25e-300};
  attrs["dt"] = DType::kBF16;
  attrs["body"] = std::shared_ptr<const Graph>(body);
  Node* n = g->AddNode("fancy", {x, w}, {{DType::kF32, {2, 3}}, {DType::kI64, {3}}}, attrs);
  g->RenameValue(n->output(0), "y");
  g->RenameValue(n->output(1), "idx");
  n->set_placement(2);
  n->set_source("model.py:17");
  Node* m = g->AddNode("mul", {n->output(0), lr}, {{DType::kF32, {2, 3}}});
  g->RenameValue(m->output(), "w.new");
  Node* p = g->AddNode("print", {c}, {});
  p->set_source("odd \"file\".py:1");
  Node* q = g->AddNode("noop", {}, {{DType::kF32, {}}});
  g->RenameValue(q->output(), "weird name!");
  g->AddOutput(n->output(0));
  g->AddOutput(n->output(1));
  g->AddOutput(q->output());
  g->SetUpdate(w, m->output());
  return g;
}

TEST(IrText, RoundTripEverything) {
  auto g = BuildEverything();
  std::string text = PrintGraph(*g);
  auto parsed = ParseGraph(text);
  EXPECT_EQ(PrintGraph(*parsed), text);
  // The parsed graph carries the same semantics, not only the same text.
  ASSERT_EQ(parsed->variables().size(), 2u);
  EXPECT_TRUE(parsed->variables()[0]->trainable());
  EXPECT_FALSE(parsed->variables()[1]->trainable());
  const HostTensor& c = parsed->FindValue("c")->constant();
  EXPECT_EQ(std::memcmp(c.data(), g->FindValue("c")->constant().data(), c.bytes()), 0);
  const HostTensor& d = parsed->FindValue("d")->constant();
  EXPECT_EQ(d.as<double>()[0], 0.1);
  EXPECT_EQ(d.as<double>()[1], 1e300);
  EXPECT_TRUE(std::isinf(d.as<double>()[2]) && d.as<double>()[2] < 0);
  EXPECT_TRUE(std::isnan(d.as<double>()[3]));
  EXPECT_EQ(parsed->FindValue("big")->constant().as<int64_t>()[0],
            std::numeric_limits<int64_t>::max());
  EXPECT_EQ(parsed->FindValue("big")->constant().as<int64_t>()[1],
            std::numeric_limits<int64_t>::min());
  EXPECT_TRUE(std::signbit(parsed->FindValue("c")->constant().as<float>()[1]));
  ASSERT_EQ(parsed->nodes().size(), 4u);
  const Node& n = *parsed->nodes()[0];
  EXPECT_EQ(n.placement(), 2);
  EXPECT_EQ(n.source(), "model.py:17");
  EXPECT_EQ(n.outputs().size(), 2u);
  for (const auto& [name, attr] : g->nodes()[0]->attrs()) {
    ASSERT_TRUE(HasAttr(n.attrs(), name)) << name;
    EXPECT_TRUE(AttrEquals(attr, n.attrs().at(name))) << name;
  }
  EXPECT_EQ(GetString(n.attrs(), "s"), "quote\" back\\ nl\n tab\t ctl\x01 end");
  EXPECT_EQ(GetGraph(n.attrs(), "body").nodes()[0]->op(), "neg");
  EXPECT_TRUE(parsed->nodes()[2]->outputs().empty());
  EXPECT_EQ(parsed->nodes()[2]->source(), "odd \"file\".py:1");
  EXPECT_EQ(parsed->outputs()[2]->name(), "weird name!");
  ASSERT_EQ(parsed->updates().size(), 1u);
  EXPECT_EQ(parsed->updates()[0].variable->name(), "w");
  EXPECT_EQ(parsed->updates()[0].value->name(), "w.new");
}

TEST(IrText, PrintsDocumentedFormat) {
  auto g = BuildEverything();
  std::string text = PrintGraph(*g);
  EXPECT_NE(text.find("graph everything {\n  input %x : f32[2,3]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  hyperparam %lr : f32[]\n"), std::string::npos);
  EXPECT_NE(text.find("  variable %w : f32[2,3]\n"), std::string::npos);
  EXPECT_NE(text.find("  variable(frozen) %stats : f64[3]\n"), std::string::npos);
  EXPECT_NE(text.find("  const %d : f64[4] = [0.1, 1e+300, -inf, nan]\n"), std::string::npos);
  EXPECT_NE(text.find("  const %mask : bool[3] = [false, true, false]\n"), std::string::npos);
  EXPECT_NE(text.find("  const %k : i32[] = -7\n"), std::string::npos);
  EXPECT_NE(text.find("  const %hb16 : bf16[] = 2.0\n"), std::string::npos);
  EXPECT_NE(text.find("  %y, %idx = fancy(%x, %w) {b = true, body = graph body {\n"
                      "    input %a : f32[2,3]\n"
                      "    %na = neg(%a) {inner = 1} : f32[2,3]\n"
                      "    output %na\n"
                      "  }, dt = bf16, f = 1e-05, floats = [0.5, 1.0, -2.25e-300], i = -42, "
                      "inf = inf, ints = [1, -2, 3], s = \"quote\\\" back\\\\ nl\\n tab\\t "
                      "ctl\\x01 end\", whole = 2.0} : f32[2,3], i64[3] @2 loc(\"model.py:17\")\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  () = print(%c) loc(\"odd \\\"file\\\".py:1\")\n"), std::string::npos);
  EXPECT_NE(text.find("  %\"weird name!\" = noop() : f32[]\n"), std::string::npos);
  EXPECT_NE(text.find("  output %y\n  output %idx\n"), std::string::npos);
  EXPECT_NE(text.find("  update %w = %w.new\n}\n"), std::string::npos);
}

TEST(IrText, HandWrittenTextIsCanonical) {
  const std::string text = R"(graph mlp {
  input %x : f32[4,8]
  hyperparam %lr : f32[]
  variable %w : f32[8,16]
  const %c : f32[2] = [0.5, 1.0]
  %h = matmul(%x, %w) {transpose_b = false} : f32[4,16]
  %y, %m = some_op(%h, %c) {axes = [1], dtype = f32, eps = 1e-05} : f32[4,16], f32[4] @1 loc("m.py:3")
  %w_new = sub(%w, %lr) : f32[8,16]
  output %h
  output %m
  update %w = %w_new
}
)";
  EXPECT_EQ(RoundTrip(text), text);
}

TEST(IrText, ParserAcceptsLooseSpellings) {
  // Comments, free whitespace, integral float data, +signs, scalar data without brackets,
  // and declarations in any order print back canonically.
  auto g = ParseGraph(R"(  // leading comment
    graph g{ const %c:f64[2]=[1,+2.5e0] %y=neg(%c):f64[2]   output %y
      const %s : bool[] = 1 input %"quoted" : i32[0] })");
  EXPECT_EQ(PrintGraph(*g), R"(graph g {
  input %quoted : i32[0]
  const %c : f64[2] = [1.0, 2.5]
  const %s : bool[] = true
  %y = neg(%c) : f64[2]
  output %y
}
)");
}

TEST(IrText, EightBitConstantsPrintAsNumbersAndCheckTheirRange) {
  auto g = ParseGraph("graph g { const %p : u8[2] = [0, 255] const %q : i8[] = -128 output %p }");
  EXPECT_NE(PrintGraph(*g).find("const %p : u8[2] = [0, 255]"), std::string::npos);
  EXPECT_NE(PrintGraph(*g).find("const %q : i8[] = -128"), std::string::npos);
  for (const char* bad : {"graph g { const %p : u8[] = 256 }", "graph g { const %p : u8[] = -1 }",
                          "graph g { const %p : i8[] = 128 }"}) {
    try {
      ParseGraph(bad);
      ADD_FAILURE() << "parsed: " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
    }
  }
}

TEST(IrText, ListAttrKinds) {
  auto g = ParseGraph(
      "graph g { %a = f() {e = [], i = [1, 2], m = [1, 2.5], n = [nan, -inf]} : f32[] }");
  const AttrMap& attrs = g->nodes()[0]->attrs();
  EXPECT_EQ(KindOf(attrs.at("e")), AttrKind::kInts);
  EXPECT_EQ(KindOf(attrs.at("i")), AttrKind::kInts);
  EXPECT_EQ(KindOf(attrs.at("m")), AttrKind::kFloats);
  EXPECT_EQ(GetFloats(attrs, "m"), (std::vector<double>{1.0, 2.5}));
  EXPECT_TRUE(std::isnan(GetFloats(attrs, "n")[0]));
  EXPECT_EQ(PrintAttr(attrs.at("m")), "[1.0, 2.5]");
  EXPECT_EQ(PrintAttr(Attr{3.0}), "3.0");
  EXPECT_EQ(PrintAttr(Attr{-0.0}), "-0.0");
  EXPECT_EQ(PrintAttr(Attr{int64_t{3}}), "3");
  EXPECT_EQ(PrintAttr(Attr{DType::kBool}), "bool");
}

TEST(IrText, FloatsRoundTripBitExactly) {
  Graph g("floats");
  std::vector<double> values = {0.1, 1.0 / 3, 1e-310, 5e-324, 1.7976931348623157e308, -0.0,
                                123456789.0, 2.5e-8};
  Node* n = g.AddNode("f", {}, {{DType::kF32, {}}}, {{"v", values}});
  auto key = [](size_t i) {
    std::string k = "s";
    k += std::to_string(i);
    return k;
  };
  for (size_t i = 0; i < values.size(); ++i) {
    n->mutable_attrs()[key(i)] = values[i];
  }
  auto parsed = ParseGraph(PrintGraph(g));
  std::vector<double> back = GetFloats(parsed->nodes()[0]->attrs(), "v");
  ASSERT_EQ(back.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(std::memcmp(&back[i], &values[i], sizeof(double)), 0) << values[i];
    double s = GetFloat(parsed->nodes()[0]->attrs(), key(i));
    EXPECT_EQ(std::memcmp(&s, &values[i], sizeof(double)), 0) << values[i];
    EXPECT_EQ(KindOf(parsed->nodes()[0]->attrs().at(key(i))), AttrKind::kFloat);
  }
}

TEST(IrText, NestedGraphsNestTwice) {
  const std::string text = R"(graph outer {
  input %x : f32[2]
  %y = fused(%x) {body = graph mid {
    input %a : f32[2]
    %b = fused(%a) {body = graph inner {
      input %p : f32[2]
      %q = exp(%p) : f32[2]
      output %q
    }} : f32[2]
    output %b
  }} : f32[2]
  output %y
}
)";
  EXPECT_EQ(RoundTrip(text), text);
}

// ---- parse errors -------------------------------------------------------------------------

struct BadInput {
  const char* text;
  const char* position;  // expected "line:col: " prefix
  const char* words;     // expected somewhere in the message
};

class ParseErrorTest : public testing::TestWithParam<BadInput> {};

TEST_P(ParseErrorTest, FailsWithKindAndPosition) {
  const BadInput& bad = GetParam();
  try {
    ParseGraph(bad.text);
    FAIL() << "parsed: " << bad.text;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kParse) << e.what();
    EXPECT_EQ(e.message().rfind(bad.position, 0), 0u) << e.message();
    EXPECT_NE(e.message().find(bad.words), std::string::npos) << e.message();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, ParseErrorTest,
    testing::Values(
        BadInput{"", "1:1: ", "empty input"},
        BadInput{"  \n // only a comment\n", "3:1: ", "empty input"},
        BadInput{"graph g {\n  %y = neg(%x) : f32[2]\n}", "2:12: ", "unknown value %x"},
        BadInput{"graph g {\n  input %x : f32[2]\n  input %x : f32[3]\n}", "3:9: ",
                 "defined twice"},
        BadInput{"graph g {\n  input %x : f33[2]\n}", "2:14: ", "unknown dtype 'f33'"},
        BadInput{"graph g {\n  %y = f() {s = \"abc} : f32[]\n}", "2:17: ", "unterminated string"},
        BadInput{"graph g {\n  %y = f() {s = [1, 2 : f32[]\n}", "2:23: ", "expected ','"},
        BadInput{"graph g {\n  const %c : f32[2] = [1.0, 2.0\n", "3:1: ", "unterminated list"},
        BadInput{"graph g {\n  input %x : f32[2]\n", "3:1: ", "missing '}'"},
        BadInput{"graph g\n  input %x : f32[2]\n}", "2:3: ", "expected '{'"},
        BadInput{"graph g { } trailing", "1:13: ", "after graph"},
        BadInput{"grph g { }", "1:1: ", "expected 'graph'"},
        BadInput{"graph g { ??? }", "1:11: ", "unexpected character"},
        BadInput{"graph g {\n  const %c : f32[3] = [1.0, 2.0]\n}", "2:32: ",
                 "expected 3 elements"},
        BadInput{"graph g {\n  const %c : f32[1] = [1.0, 2.0]\n}", "2:29: ", "too many"},
        BadInput{"graph g {\n  const %c : i64[] = 1.5\n}", "2:22: ", "bad integer"},
        BadInput{"graph g {\n  const %c : i32[] = 3000000000\n}", "2:22: ", "out of range"},
        BadInput{"graph g {\n  const %c : i64[] = 99999999999999999999\n}", "2:22: ",
                 "out of range"},
        BadInput{"graph g {\n  const %c : f32[] = 1e99\n}", "2:22: ", "out of range"},
        BadInput{"graph g {\n  input %x : f32[2,-1]\n}", "2:20: ", "negative dimension"},
        BadInput{"graph g {\n  %a, %b = f() : f32[]\n}", "2:16: ", "2 outputs but 1 types"},
        BadInput{"graph g {\n  %a, %a = f() : f32[], f32[]\n}", "2:7: ", "defined twice"},
        BadInput{"graph g {\n  %a = f() {k = 1, k = 2} : f32[]\n}", "2:20: ", "given twice"},
        BadInput{"graph g {\n  %a = f() {k = bogus} : f32[]\n}", "2:17: ",
                 "expected an attribute value"},
        BadInput{"graph g {\n  input %x : f32[]\n  update %x = %x\n}", "3:10: ",
                 "not a variable"},
        BadInput{"graph g {\n  %a = f() {s = \"\\q\"} : f32[]\n}", "2:18: ", "unknown escape"},
        BadInput{"graph g {\n  %a = f() : f32[] loc(42)\n}", "2:24: ", "expected a string"},
        BadInput{"graph g {\n  %a = f() : f32[] @x\n}", "2:21: ", "expected an integer"},
        BadInput{"graph g {\n  % = f() : f32[]\n}", "2:3: ", "value name"},
        BadInput{"graph g {\n  %a = f() {g = graph h { input %x : f32[] } : f32[]\n}", "2:46: ",
                 "expected ','"},
        BadInput{"graph g {\n  %a = f()\n}", "3:1: ", "expected ':'"},
        BadInput{"graph g {\n  output\n}", "3:1: ", "expected a value"},
        BadInput{"graph g {\n  variable(thawed) %v : f32[]\n}", "2:12: ", "expected 'frozen'"}));

TEST(IrText, DeepNestingIsAnErrorNotACrash) {
  std::string text;
  for (int i = 0; i < 10000; ++i) text += "graph g { %a = f() {b = ";
  try {
    ParseGraph(text);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kParse);
    EXPECT_NE(e.message().find("nested too deeply"), std::string::npos) << e.message();
  }
}

TEST(IrText, TruncatedTextNeverCrashes) {
  // Every prefix of a valid text either parses or fails with a positioned parse error.
  std::string text = PrintGraph(*BuildEverything());
  for (size_t len = 0; len + 1 < text.size(); ++len) {
    try {
      ParseGraph(text.substr(0, len));
      ADD_FAILURE() << "prefix of length " << len << " parsed";
    } catch (const Error& e) {
      ASSERT_EQ(e.kind(), ErrorKind::kParse) << e.what();
      ASSERT_TRUE(std::isdigit(static_cast<unsigned char>(e.message()[0]))) << e.message();
    }
  }
}

TEST(IrText, MutatedTextParsesOrFailsCleanly) {
  // Random byte edits: each result either fails with a positioned parse error, or parses and
  // then round-trips. Catches crashes, hangs and non-canonical printing.
  const std::string text = PrintGraph(*BuildEverything());
  const std::string alphabet = "%@{}()[],:=\"\\ \n.-+e0123456789abcgrphinputfx";
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string t = text;
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits; ++k) {
      size_t pos = rng() % t.size();
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0: t[pos] = c; break;
        case 1: t.erase(pos, 1); break;
        default: t.insert(t.begin() + pos, c); break;
      }
    }
    try {
      std::string once = PrintGraph(*ParseGraph(t));
      ASSERT_EQ(PrintGraph(*ParseGraph(once)), once) << t;
      ++parsed;
    } catch (const Error& e) {
      ASSERT_EQ(e.kind(), ErrorKind::kParse) << e.what();
      ASSERT_TRUE(std::isdigit(static_cast<unsigned char>(e.message()[0]))) << e.message();
    }
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace tg
