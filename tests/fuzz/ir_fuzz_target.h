// The fuzz target shared by the randomized gtest (ir_fuzz_test.cc, run by ctest for a bounded
// time) and the libFuzzer driver (libfuzzer_main.cc, built with clang when
// TILEGRAPH_LIBFUZZER=ON): IR text in, every stage a user's file can reach run on it.
//
// The contract under test: whatever the text, each stage either succeeds or throws
// tg::Error. A crash, a hang, or any other exception type is a bug.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tg::fuzz {

struct Outcome {
  std::string stage;    // the stage reached: parse, verify, autodiff, compile, run, done
  bool ok = false;      // every stage ran
  std::string error;    // the tg::Error text when !ok
};

// Parse -> Verify -> (autodiff + SGD step when the graph has a floating scalar output and a
// trainable variable) -> Executable::Compile with the pipeline the graph needs (verifier
// after every pass) -> one step on zero-filled inputs when the program is small. Throws
// whatever is not a tg::Error (the caller reports it as a failure).
Outcome RunIrText(std::string_view text);

// Valid IR texts to mutate: a one-node graph per registered op sample (operands as inputs,
// and again as constants so constant folding evaluates them), and small training graphs
// (an MLP with SGD-momentum, a conv net with Adam).
std::vector<std::string> SeedCorpus();

}  // namespace tg::fuzz
