// IrMutator: structure-aware random edits of IR text for the randomized fuzz test. Each
// Mutate() applies one to three edits chosen from: replace a number with an extreme one
// (0, -1, 2^31, 2^62, an int64 overflow, 1e308, nan), replace an op name with another
// registered op, swap a dtype, rename a value reference to another value of the text,
// delete / duplicate / swap lines, splice a line from another seed, and flip, insert or
// delete raw bytes.
#pragma once

#include <random>
#include <string>
#include <vector>

namespace tg::fuzz {

class IrMutator {
 public:
  IrMutator(std::vector<std::string> seeds, uint64_t rng_seed);
  // A mutant of a random seed.
  std::string Next();

 private:
  std::string Mutate(std::string text);
  std::string ReplaceToken(const std::string& text, bool (*is_kind)(const std::string&),
                           const std::vector<std::string>& choices);
  std::vector<std::string> seeds_;
  std::vector<std::string> op_names_;
  std::mt19937_64 rng_;
};

}  // namespace tg::fuzz
