// Executable's profile: per-instruction times (replica 0) aggregated by op kind, with bytes
// moved and FLOPs, as rows and as a printed report.
#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

#include "runtime/executable.h"

namespace tg {

std::vector<OpProfile> Executable::InstructionProfile() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<OpProfile> result = InstructionEntries();
  std::stable_sort(result.begin(), result.end(),
                   [](const OpProfile& a, const OpProfile& b) { return a.seconds > b.seconds; });
  return result;
}

std::vector<OpProfile> Executable::InstructionEntries() const {
  const OpRegistry& registry = OpRegistry::Global();
  std::vector<OpProfile> result;
  for (size_t i = 0; i < program_.instructions.size(); ++i) {
    const Node* n = program_.instructions[i].node;
    OpProfile p;
    p.op = n->Describe();
    p.source = n->source();
    p.calls = instr_calls_[i];
    p.seconds = instr_seconds_[i];
    double bytes = 0;
    for (Value* v : n->inputs()) bytes += static_cast<double>(v->type().bytes());
    for (Value* v : n->outputs()) bytes += static_cast<double>(v->type().bytes());
    p.bytes = bytes * static_cast<double>(p.calls);
    const OpDef* def = registry.Find(n->op());
    if (def != nullptr && def->flops) p.flops = def->flops(*n) * static_cast<double>(p.calls);
    result.push_back(std::move(p));
  }
  return result;
}

std::vector<OpProfile> Executable::Profile() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::map<std::string, OpProfile> by_op;
  std::vector<OpProfile> entries = InstructionEntries();  // in instruction order
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string& op = program_.instructions[i].node->op();
    OpProfile& p = by_op[op];
    p.op = op;
    p.calls += entries[i].calls;
    p.seconds += entries[i].seconds;
    p.bytes += entries[i].bytes;
    p.flops += entries[i].flops;
  }
  std::vector<OpProfile> result;
  for (auto& [op, p] : by_op) result.push_back(p);
  std::sort(result.begin(), result.end(),
            [](const OpProfile& a, const OpProfile& b) { return a.seconds > b.seconds; });
  return result;
}

void Executable::ResetProfile() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::fill(instr_seconds_.begin(), instr_seconds_.end(), 0.0);
  std::fill(instr_calls_.begin(), instr_calls_.end(), 0);
}

namespace {

void AppendRow(std::ostream& os, const OpProfile& p, double total) {
  char line[256];
  std::snprintf(line, sizeof(line), "%7lld %10.4f %5.1f%% %8.2f %8.2f  ",
                static_cast<long long>(p.calls), p.seconds,
                total > 0 ? 100.0 * p.seconds / total : 0.0,
                p.seconds > 0 ? p.bytes / p.seconds / 1e9 : 0.0,
                p.seconds > 0 && p.flops > 0 ? p.flops / p.seconds / 1e9 : 0.0);
  std::string name = p.op.size() > 110 ? p.op.substr(0, 107) + "..." : p.op;
  os << line << name;
  os << "\n";
}

}  // namespace

std::string Executable::ProfileReport(int top_instructions) const {
  std::vector<OpProfile> ops = Profile();
  double total = 0;
  for (const OpProfile& p : ops) total += p.seconds;
  std::ostringstream os;
  os << "  calls    seconds  share     GB/s  GFLOP/s  op\n";
  for (const OpProfile& p : ops) AppendRow(os, p, total);
  if (top_instructions > 0) {
    os << "slowest instructions:\n";
    std::vector<OpProfile> instrs = InstructionProfile();
    for (int i = 0; i < top_instructions && i < static_cast<int>(instrs.size()); ++i) {
      AppendRow(os, instrs[i], total);
    }
  }
  return os.str();
}

}  // namespace tg
