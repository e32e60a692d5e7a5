// Randomized fuzzing of the IR text path (parser -> verifier -> autodiff -> pass pipeline ->
// lowering -> one step), bounded in time so that it runs in CI: TILEGRAPH_FUZZ_SECONDS
// (default 20) and TILEGRAPH_FUZZ_SEED (default: random, printed) reproduce a run. Mutants
// of valid graphs must either work or throw tg::Error. A crash prints the input that caused
// it before the process dies; any other exception type fails the test with the input.
// For longer, coverage-guided runs see libfuzzer/ (clang, TILEGRAPH_LIBFUZZER=ON).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <map>
#include <random>

#include "fuzz/ir_fuzz_target.h"
#include "fuzz/ir_mutator.h"
#include "support/error.h"

namespace tg::fuzz {
namespace {

std::string g_current;  // the input being run, for the crash handler

void WriteAll(const char* s, size_t n) {
  while (n > 0) {
    ssize_t w = write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void OnCrash(int sig) {
  const char* head = "\n*** fuzz input that crashed the process:\n";
  WriteAll(head, strlen(head));
  WriteAll(g_current.data(), g_current.size());
  WriteAll("\n*** end of input\n", 18);
  signal(sig, SIG_DFL);
  raise(sig);
}

void InstallCrashHandlers() {
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) signal(sig, OnCrash);
}

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : fallback;
}

TEST(IrFuzz, SeedsAreValidGraphs) {
  std::vector<std::string> seeds = SeedCorpus();
  ASSERT_GT(seeds.size(), 100u);
  int done = 0;
  for (const std::string& s : seeds) {
    Outcome o = RunIrText(s);
    // Seeds parse and verify; a few one-op samples fail at run time on zero inputs (their
    // tests fill inputs with valid values), which is an Error, never a crash.
    EXPECT_TRUE(o.ok || o.stage == "run" || o.stage == "compile") << o.error << "\n" << s;
    done += o.ok;
  }
  EXPECT_GT(done, static_cast<int>(seeds.size()) * 9 / 10);
}

TEST(IrFuzz, HugeDimensionIsAParseError) {
  // The reproducer from the reliability issue: the element count overflows int64.
  Outcome o = RunIrText("graph g {\n  input %x : f32[7,7905747460161236407]\n  output %x\n}\n");
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.stage, "parse");
  EXPECT_NE(o.error.find("int64"), std::string::npos) << o.error;
  o = RunIrText("graph g {\n  const %c : f32[1099511627776] = 1.0\n  output %c\n}\n");
  EXPECT_FALSE(o.ok);
  EXPECT_NE(o.error.find("elements"), std::string::npos) << o.error;
}

TEST(IrFuzz, IllTypedGraphIsRejectedBeforeAnyPass) {
  // Constant folding would evaluate this add of mismatched constants; the verifier stops it.
  Outcome o = RunIrText(
      "graph g {\n  const %a : f32[2] = [1.0, 2.0]\n  const %b : f32[3] = [1.0, 2.0, 3.0]\n"
      "  %c = add(%a, %b) : f32[2]\n  output %c\n}\n");
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.stage, "verify");
}

TEST(IrFuzz, AttentionBackwardChecksItsSavedOperands) {
  // A mutant the clean-clone CI's fuzz run crashed on: `out` (input 4) with a zero sequence
  // length, which attention_backward's kernel read as [2, 3, 3].
  Outcome o = RunIrText(
      "graph g {\n  input %q : f32[2,3,5]\n  input %k : f32[2,4,5]\n  input %v : f32[2,4,3]\n"
      "  input %m : f32[1,1,4]\n  input %o : f32[2,0,3]\n  input %l : f32[2,3]\n"
      "  input %go : f32[2,3,3]\n  input %gl : f32[2,3]\n"
      "  %a, %b, %c, %d = attention_backward(%q, %k, %v, %m, %o, %l, %go, %gl) {causal = 1, "
      "dropout_p = 0.0, rng_key = 5, scale = 0.5} : f32[2,3,5], f32[2,4,5], f32[2,4,3], "
      "f32[1,1,4]\n  output %a\n}\n");
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.stage, "verify");
  EXPECT_NE(o.error.find("expected out of shape [2,3,3]"), std::string::npos) << o.error;
}

TEST(IrFuzz, MutantsWorkOrThrowTgErrors) {
  int64_t seconds = EnvInt("TILEGRAPH_FUZZ_SECONDS", 20);
  uint64_t seed = static_cast<uint64_t>(EnvInt("TILEGRAPH_FUZZ_SEED", 0));
  if (seed == 0) seed = std::random_device{}();
  std::printf("fuzzing for %lld s, TILEGRAPH_FUZZ_SEED=%llu\n", static_cast<long long>(seconds),
              static_cast<unsigned long long>(seed));
  InstallCrashHandlers();
  IrMutator mutator(SeedCorpus(), seed);
  std::map<std::string, int64_t> stages;
  int64_t runs = 0;
  auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  while (elapsed() < static_cast<double>(seconds)) {
    g_current = mutator.Next();
    double t0 = elapsed();
    try {
      Outcome o = RunIrText(g_current);
      ++stages[o.ok ? "ok" : "error in " + o.stage];
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a tg::Error: " << e.what() << "\ninput:\n" << g_current;
    } catch (...) {
      ADD_FAILURE() << "unknown exception\ninput:\n" << g_current;
    }
    EXPECT_LT(elapsed() - t0, 10.0) << "one input took over 10 s:\n" << g_current;
    ++runs;
  }
  std::printf("%lld inputs:", static_cast<long long>(runs));
  for (const auto& [stage, count] : stages) {
    std::printf(" %s %lld;", stage.c_str(), static_cast<long long>(count));
  }
  std::printf("\n");
  EXPECT_GT(runs, 0);
}

}  // namespace
}  // namespace tg::fuzz
