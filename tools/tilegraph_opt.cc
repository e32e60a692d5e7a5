// tilegraph-opt: runs passes on an IR text file and prints the resulting IR.
//   tilegraph-opt FILE.tgir [--passes=dce,cse,...|--pipeline=inference|training]
//                 [--verify-each] [--dump-after=NAME|*] [--log]
// FILE may be "-" for stdin. The result goes to stdout; dumps, the pass log (--log) and
// errors go to stderr. Exit code 1 on any error.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "ir/printer.h"
#include "passes/pass.h"
#include "passes/verifier.h"
#include "support/error.h"

namespace {

constexpr const char* kUsage =
    "usage: tilegraph-opt FILE.tgir [--passes=dce,cse,...|--pipeline=inference|training]\n"
    "                     [--verify-each] [--dump-after=NAME|*] [--log]\n";

std::string ReadInput(const std::string& path) {
  std::ostringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  TG_CHECK(in.good(), kInvalidInput, "cannot open '", path, "'");
  ss << in.rdbuf();
  return ss.str();
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

int Main(int argc, char** argv) {
  std::string file, passes, pipeline;
  bool have_passes = false, print_log = false;
  tg::PassContext ctx;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (StartsWith(arg, "--passes=")) {
      passes = arg.substr(9);
      have_passes = true;
    } else if (StartsWith(arg, "--pipeline=")) {
      pipeline = arg.substr(11);
    } else if (arg == "--verify-each") {
      ctx.verify_each = true;
    } else if (StartsWith(arg, "--dump-after=")) {
      ctx.dump_after = arg.substr(13);
    } else if (arg == "--log") {
      print_log = true;
    } else if (arg != "-" && StartsWith(arg, "-")) {
      tg::Fail(tg::ErrorKind::kInvalidInput, "unknown option '", arg, "'\n", kUsage);
    } else {
      TG_CHECK(file.empty(), kInvalidInput, "more than one input file\n", kUsage);
      file = arg;
    }
  }
  TG_CHECK(!file.empty(), kInvalidInput, "no input file\n", kUsage);
  TG_CHECK(!(have_passes && !pipeline.empty()), kInvalidInput,
           "--passes and --pipeline are exclusive");

  tg::PassManager pm;
  if (pipeline == "inference") {
    pm = tg::BuildPipeline(tg::PipelineKind::kInference);
  } else if (pipeline == "training") {
    pm = tg::BuildPipeline(tg::PipelineKind::kTraining);
  } else if (!pipeline.empty()) {
    tg::Fail(tg::ErrorKind::kInvalidInput, "unknown pipeline '", pipeline,
             "'; known: inference, training");
  }
  std::stringstream list(passes);
  for (std::string name; std::getline(list, name, ',');) {
    if (!name.empty()) pm.Add(tg::CreatePass(name), "requested on the command line");
  }

  std::unique_ptr<tg::Graph> graph = tg::ParseGraph(ReadInput(file));
  tg::VerifyStructure(*graph);
  pm.Run(*graph, ctx);
  if (print_log) {
    for (const std::string& line : ctx.log) std::cerr << line << "\n";
  }
  std::cout << tg::PrintGraph(*graph);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const tg::Error& e) {
    std::cerr << "tilegraph-opt: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tilegraph-opt: " << e.what() << "\n";
    return 1;
  }
}
