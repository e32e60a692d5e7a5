// PassManager: runs passes in order, logs whether each changed the graph, optionally runs the
// verifier after each pass (errors get "after pass X" context) and dumps the IR after a named
// pass (or all passes with "*") as parseable IR text preceded by a `//` header line. The
// input graph is always verified first.
#include <cstdlib>
#include <iostream>
#include <set>

#include "ir/printer.h"
#include "passes/pass.h"
#include "passes/passes.h"
#include "passes/verifier.h"
#include "support/error.h"

namespace tg {

void PassManager::Add(std::unique_ptr<Pass> pass, std::string why) {
  TG_ASSERT(pass != nullptr, "null pass");
  entries_.push_back({std::move(pass), std::move(why)});
}

std::vector<std::string> PassManager::PassNames() const {
  std::vector<std::string> names;
  for (const Entry& e : entries_) names.push_back(e.pass->name());
  return names;
}

namespace {

// TILEGRAPH_DISABLE_PASSES=a,b: pipelines skip these passes (to bisect a miscompile or to
// measure what a pass buys); an unknown name is an error, so a typo does not go unnoticed.
std::set<std::string> DisabledPasses() {
  std::set<std::string> names;
  const char* env = std::getenv("TILEGRAPH_DISABLE_PASSES");
  std::string list = env != nullptr ? env : "";
  size_t start = 0;
  while (start < list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string name = list.substr(start, end - start);
    if (!name.empty()) {
      try {
        CreatePass(name);
      } catch (Error& e) {
        e.AddContext("in TILEGRAPH_DISABLE_PASSES");
        throw;
      }
      names.insert(name);
    }
    start = end + 1;
  }
  return names;
}

}  // namespace

bool PassManager::Run(Graph& graph, PassContext& ctx) const {
  // Always, not only under verify_each: passes assume a well-typed graph (constant folding
  // evaluates nodes), so ill-typed input must stop here with an error, not crash a pass.
  try {
    Verify(graph, ctx.registry);
  } catch (Error& e) {
    e.AddContext("before the first pass (the input graph is invalid)");
    throw;
  }
  const std::set<std::string> disabled = DisabledPasses();
  bool any = false;
  for (const Entry& entry : entries_) {
    const std::string name = entry.pass->name();
    if (disabled.count(name)) {
      ctx.log.push_back(name + ": disabled");
      continue;
    }
    bool changed = false;
    try {
      changed = entry.pass->Run(graph, ctx);
    } catch (Error& e) {
      e.AddContext("in pass " + name);
      throw;
    }
    any = any || changed;
    ctx.log.push_back(name + (changed ? ": changed" : ": unchanged"));
    if (ctx.dump_after == "*" || ctx.dump_after == name) {
      std::ostream& os = ctx.dump != nullptr ? *ctx.dump : std::cerr;
      os << "// IR after pass " << name << (changed ? " (changed)" : " (unchanged)") << "\n"
         << PrintGraph(graph);
      os.flush();
    }
    if (ctx.verify_each) {
      try {
        Verify(graph, ctx.registry);
      } catch (Error& e) {
        e.AddContext("after pass " + name);
        throw;
      }
    }
  }
  return any;
}

}  // namespace tg
