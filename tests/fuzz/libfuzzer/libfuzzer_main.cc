// libFuzzer driver for the IR text path (coverage-guided, for long runs by developers):
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DTILEGRAPH_LIBFUZZER=ON
//   cmake --build build-fuzz --target tg_ir_libfuzzer
//   mkdir -p /tmp/corpus && build-fuzz/tg_ir_libfuzzer -seed_corpus_dir... (see below)
// On start it writes the seed corpus (the same seeds as ir_fuzz_test.cc) to $TG_FUZZ_SEEDS
// if that is set, so `tg_ir_libfuzzer /tmp/corpus` after one run with TG_FUZZ_SEEDS=/tmp/corpus
// starts from valid graphs. Anything but success or tg::Error aborts (libFuzzer reports it).
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>

#include "fuzz/ir_fuzz_target.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("TG_FUZZ_SEEDS")) {
    int i = 0;
    for (const std::string& s : tg::fuzz::SeedCorpus()) {
      std::ofstream(std::string(dir) + "/seed" + std::to_string(i++) + ".tgir") << s;
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    tg::fuzz::RunIrText(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "not a tg::Error: %s\n", e.what());
    std::abort();
  }
  return 0;
}
