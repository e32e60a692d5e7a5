#include "runtime/executable.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "passes/verifier.h"
#include "support/error.h"

namespace tg {

const char* OutputModeName(OutputMode mode) {
  switch (mode) {
    case OutputMode::kAll: return "all";
    case OutputMode::kFinal: return "final";
    case OutputMode::kSum: return "sum";
    case OutputMode::kEveryN: return "every-n";
  }
  return "?";
}

std::unique_ptr<Executable> Executable::Compile(const Graph& graph, const CompileOptions& options) {
  auto start = std::chrono::steady_clock::now();
  std::unique_ptr<Executable> exe(new Executable());
  exe->options_ = options;
  exe->seed_ = options.seed;
  exe->device_ = CreateDevice(options.device, DeviceOptions{options.num_threads});
  exe->device_->Activate();
  std::unique_ptr<Graph> g = graph.Clone();
  Verify(*g, &OpRegistry::Global());
  if (options.optimize) {
    PassContext ctx;
    ctx.verify_each = options.verify_each;
    ctx.dump_after = options.dump_after;
    BuildPipeline(options.pipeline).Run(*g, ctx);
    Verify(*g, &OpRegistry::Global());
  }
  LoweringOptions lowering;
  lowering.inplace = options.inplace;
  lowering.device_kinds = {options.device};
  exe->program_ = Lower(std::move(g), lowering);
  const Graph& pg = *exe->program_.graph;
  for (Value* v : pg.inputs()) exe->input_staging_.emplace_back(v->type());
  for (Value* v : pg.hyperparams()) exe->hyperparams_.emplace_back(v->type());
  exe->CheckFitsInMemory();
  for (Value* v : pg.variables()) exe->variables_.emplace_back(v->type());
  // One aligned arena for the whole step, in the device's memory.
  exe->arena_memory_ = exe->device_->Allocate(exe->program_.stats.arena_bytes);
  exe->arena_ = static_cast<uint8_t*>(exe->arena_memory_.data());
  exe->Bind();
  exe->compile_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return exe;
}

// Refuses, before allocating, a program larger than this machine's memory (a shape from a
// crafted file could otherwise be zero-filled until the OOM killer ends the process).
void Executable::CheckFitsInMemory() const {
  const Graph& g = *program_.graph;
  size_t io = 0, vars = 0;
  for (Value* v : g.inputs()) io += v->type().bytes();
  for (Value* v : g.hyperparams()) io += v->type().bytes();
  for (Value* v : g.variables()) vars += v->type().bytes();
  size_t total = program_.stats.arena_bytes + io + vars;
  uint64_t capacity = device_->memory_bytes();
  auto gib = [](double b) { return b / double(1 << 30); };
  TG_CHECK(capacity == 0 || total <= capacity, kRuntime, "the compiled program needs ",
           gib(total), " GiB (arena ", gib(program_.stats.arena_bytes), " GiB, variables ",
           gib(vars), " GiB, inputs ", gib(io), " GiB), more than the ", gib(capacity),
           " GiB of ", device_->name());
}

void* Executable::Resolve(const BufferRef& ref) const {
  switch (ref.space) {
    case BufferSpace::kArena: return arena_ + ref.offset;
    case BufferSpace::kInput: return const_cast<void*>(input_staging_[ref.offset].data());
    case BufferSpace::kHyperParam: return const_cast<void*>(hyperparams_[ref.offset].data());
    case BufferSpace::kVariable: return const_cast<void*>(variables_[ref.offset].data());
    case BufferSpace::kConstant:
      return const_cast<void*>(program_.graph->constants()[ref.offset]->constant().data());
  }
  return nullptr;
}

void Executable::Bind() {
  in_ptrs_.clear();
  out_ptrs_.clear();
  for (const Instruction& inst : program_.instructions) {
    std::vector<const void*> ins;
    for (const BufferRef& r : inst.inputs) ins.push_back(Resolve(r));
    std::vector<void*> outs;
    for (const BufferRef& r : inst.outputs) outs.push_back(Resolve(r));
    in_ptrs_.push_back(std::move(ins));
    out_ptrs_.push_back(std::move(outs));
  }
  instr_seconds_.assign(program_.instructions.size(), 0.0);
  instr_calls_.assign(program_.instructions.size(), 0);
  first_variable_write_ = SIZE_MAX;
  for (size_t i = 0; i < program_.instructions.size() && first_variable_write_ == SIZE_MAX; ++i) {
    for (const BufferRef& r : program_.instructions[i].outputs) {
      if (r.space == BufferSpace::kVariable) first_variable_write_ = i;
    }
  }
}

std::vector<std::string> Executable::VariableNames() const {
  std::vector<std::string> names;
  for (Value* v : program_.graph->variables()) names.push_back(v->name());
  return names;
}

namespace {

template <typename T>
void AddInto(HostTensor& acc, const void* src) {
  T* a = acc.as<T>();
  const T* s = static_cast<const T*>(src);
  for (int64_t k = 0, n = acc.type().numel(); k < n; ++k) a[k] += s[k];
}

}  // namespace

// acc += the step's value, in the output's dtype (output mode Sum). The common dtypes add in
// place; the 16-bit floats and bool go through a converted copy.
void Executable::AccumulateInto(HostTensor& acc, const void* src) {
  switch (acc.type().dtype) {
    case DType::kF32: return AddInto<float>(acc, src);
    case DType::kF64: return AddInto<double>(acc, src);
    case DType::kI64: return AddInto<int64_t>(acc, src);
    case DType::kI32: return AddInto<int32_t>(acc, src);
    default: {
      HostTensor step_value(acc.type(), src);
      for (int64_t k = 0; k < acc.type().numel(); ++k) {
        acc.SetFromDouble(k, acc.GetAsDouble(k) + step_value.GetAsDouble(k));
      }
    }
  }
}

namespace {
size_t IndexOf(const std::vector<Value*>& values, const std::string& name, const char* what) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i]->name() == name) return i;
  }
  Fail(ErrorKind::kInvalidInput, "no ", what, " named '", name, "'");
}
}  // namespace

TensorType Executable::VariableType(const std::string& name) const {
  return variables_[IndexOf(program_.graph->variables(), name, "variable")].type();
}

void Executable::WriteVariable(const std::string& name, const TensorView& value) {
  std::lock_guard<std::mutex> lock(mutex_);
  HostTensor& var = variables_[IndexOf(program_.graph->variables(), name, "variable")];
  TG_CHECK(value.type == var.type(), kInvalidInput, "variable '", name, "': expected ",
           var.type().ToString(), ", got ", value.type.ToString());
  if (var.bytes() > 0) std::memcpy(var.data(), value.data, var.bytes());
  ++variables_version_;
}

HostTensor Executable::ReadVariable(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return variables_[IndexOf(program_.graph->variables(), name, "variable")];
}

std::vector<std::string> Executable::HyperParamNames() const {
  std::vector<std::string> names;
  for (Value* v : program_.graph->hyperparams()) names.push_back(v->name());
  return names;
}

void Executable::SetHyperParam(const std::string& name, const TensorView& value) {
  std::lock_guard<std::mutex> lock(mutex_);
  HostTensor& h = hyperparams_[IndexOf(program_.graph->hyperparams(), name, "hyperparameter")];
  TG_CHECK(value.type == h.type(), kInvalidInput, "hyperparameter '", name, "': expected ",
           h.type().ToString(), ", got ", value.type.ToString());
  if (h.bytes() > 0) std::memcpy(h.data(), value.data, h.bytes());
}

void Executable::SetHyperParam(const std::string& name, double value) {
  std::lock_guard<std::mutex> lock(mutex_);
  HostTensor& h = hyperparams_[IndexOf(program_.graph->hyperparams(), name, "hyperparameter")];
  TG_CHECK(h.type().numel() == 1, kInvalidInput, "hyperparameter '", name, "' is ",
           h.type().ToString(), ", not a scalar");
  h.SetFromDouble(0, value);
}

void Executable::ValidateFeeds(const std::vector<TensorView>& inputs, int64_t steps,
                               OutputMode mode, int64_t every_n) const {
  TG_CHECK(steps >= 1, kInvalidInput, "steps must be >= 1, got ", steps);
  if (mode == OutputMode::kEveryN) {
    TG_CHECK(every_n >= 1 && steps % every_n == 0, kInvalidInput,
             "output mode every-n: steps (", steps, ") must be a multiple of n (", every_n, ")");
  }
  const auto& expected = program_.graph->inputs();
  TG_CHECK(inputs.size() == expected.size(), kInvalidInput, "expected ", expected.size(),
           " inputs, got ", inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    TensorType want = expected[i]->type();
    want.shape.insert(want.shape.begin(), steps);
    TG_CHECK(inputs[i].type.dtype == want.dtype, kInvalidInput, "input '", expected[i]->name(),
             "': expected dtype ", DTypeName(want.dtype), ", got ", DTypeName(inputs[i].type.dtype));
    TG_CHECK(inputs[i].type.shape == want.shape, kInvalidInput, "input '", expected[i]->name(),
             "': expected shape ", ShapeToString(want.shape), " (steps=", steps, " x ",
             ShapeToString(expected[i]->type().shape), "), got ", ShapeToString(inputs[i].type.shape));
  }
}

void Executable::RunOneStep() {
  RunContext ctx{seed_, step_, variables_version_};
  const auto& instrs = program_.instructions;
  for (size_t i = 0; i < instrs.size(); ++i) {
    KernelArgs args{in_ptrs_[i].data(), out_ptrs_[i].data(), &ctx};
    try {
      if (options_.profile) {
        auto t0 = std::chrono::steady_clock::now();
        instrs[i].kernel(args);
        instr_seconds_[i] +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++instr_calls_[i];
      } else {
        instrs[i].kernel(args);
      }
    } catch (Error& e) {
      e.AddContext("in node " + instrs[i].node->Describe());  // names the user's file:line
      if (i > first_variable_write_) {
        ++variables_version_;  // kernels must not reuse data derived from the old values
        e.AddContext("this step had already updated some variables in place before it failed");
      }
      throw;
    } catch (const std::exception& library) {  // not a tg::Error: e.g. oneDNN's dnnl::error
      Error e(ErrorKind::kRuntime, std::string("kernel failed: ") + library.what());
      e.AddContext("in node " + instrs[i].node->Describe());
      throw e;
    }
  }
  for (const UpdateCopy& u : program_.update_copies) {
    if (u.bytes > 0) std::memmove(variables_[u.variable].data(), Resolve(u.from), u.bytes);
  }
  if (!program_.graph->updates().empty()) ++variables_version_;  // updated in place or copied
  ++step_;
}

int64_t Executable::steps_completed_in_last_run() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return steps_completed_;
}

std::vector<HostTensor> Executable::Run(const std::vector<TensorView>& inputs, int64_t steps,
                                        OutputMode mode, int64_t every_n,
                                        const std::function<bool()>& interrupted) {
  std::lock_guard<std::mutex> lock(mutex_);
  steps_completed_ = 0;
  ValidateFeeds(inputs, steps, mode, every_n);
  device_->Activate();
  const auto& outs = program_.graph->outputs();
  std::vector<HostTensor> results;
  int64_t rows = mode == OutputMode::kAll ? steps : mode == OutputMode::kEveryN ? steps / every_n : 0;
  for (Value* v : outs) {
    TensorType t = v->type();
    if (rows > 0) t.shape.insert(t.shape.begin(), rows);
    results.emplace_back(t);
  }
  for (int64_t s = 0; s < steps; ++s) {
    if (s > 0 && interrupted && interrupted()) {
      Fail(ErrorKind::kInterrupted, "interrupted after ", s, " of ", steps,
           " steps (a step boundary: those steps were applied in full)");
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      size_t bytes = input_staging_[i].bytes();
      if (bytes == 0) continue;  // an empty input (null data pointers)
      std::memcpy(input_staging_[i].data(), static_cast<const uint8_t*>(inputs[i].data) + s * bytes,
                  bytes);
    }
    try {
      RunOneStep();
    } catch (Error& e) {
      e.AddContext("in step " + std::to_string(s) + " of " + std::to_string(steps) + " (" +
                   std::to_string(s) + " earlier steps of this call were applied)");
      throw;
    }
    steps_completed_ = s + 1;
    for (size_t o = 0; o < outs.size(); ++o) {
      const void* src = Resolve(program_.outputs[o]);
      size_t bytes = outs[o]->type().bytes();
      if (bytes == 0) continue;  // empty outputs: nothing to copy (and no pointers to pass)
      uint8_t* dst = static_cast<uint8_t*>(results[o].data());
      switch (mode) {
        case OutputMode::kAll: std::memcpy(dst + s * bytes, src, bytes); break;
        case OutputMode::kFinal:
          if (s == steps - 1) std::memcpy(dst, src, bytes);
          break;
        case OutputMode::kEveryN:
          if ((s + 1) % every_n == 0) std::memcpy(dst + ((s + 1) / every_n - 1) * bytes, src, bytes);
          break;
        case OutputMode::kSum: AccumulateInto(results[o], src); break;
      }
    }
  }
  return results;
}

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
