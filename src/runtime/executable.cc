// Executable: compilation (verify, pass pipeline, lowering, replicas), state (variables,
// hyperparameters) and distributed start-up checks. Running steps: executable_run.cc;
// profile: profile.cc.
#include "runtime/executable.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "ir/printer.h"
#include "kernels/cpu/cast_kernels.h"
#include "kernels/cpu/onednn_kernels.h"
#include "kernels/cpu/parallel.h"
#include "passes/optimizer_step.h"
#include "parallel/stage_copies.h"
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
  TG_CHECK(options.replicas >= 1, kInvalidInput, "replicas must be >= 1, got ", options.replicas);
  std::unique_ptr<Executable> exe(new Executable());
  exe->options_ = options;
  exe->seed_ = options.seed;
  exe->device_ = CreateDevice(options.device, DeviceOptions{options.num_threads});
  exe->device_->Activate();
  std::unique_ptr<Graph> g = graph.Clone();
  Verify(*g, &OpRegistry::Global());
  InsertStageCopies(*g);  // model parallelism: inter-stage traffic as explicit ops
  if (options.recompute_stages) CheckpointStageInputs(*g);
  if (options.optimize) {
    PassContext ctx;
    ctx.verify_each = options.verify_each;
    ctx.dump_after = options.dump_after;
    ctx.native_bf16_convolutions = cpu::NativeBf16Dense();
    BuildPipeline(options.pipeline).Run(*g, ctx);
    Verify(*g, &OpRegistry::Global());
  }
  LoweringOptions lowering;
  lowering.inplace = options.inplace;
  int stages = options.stages;
  if (stages == 0) {
    stages = 1;
    for (const auto& n : g->nodes()) stages = std::max(stages, n->placement() + 1);
  }
  TG_CHECK(stages >= 1, kInvalidInput, "stages must be >= 1, got ", stages);
  lowering.device_kinds.assign(stages, options.device);
  bool distributed = options.communicator != nullptr && options.communicator->size() > 1;
  PipelineSegments segments;
  const bool pipeline = options.pipeline_micro_batches > 0 && stages > 1;
  if (pipeline) {
    segments = OrderForPipeline(*g, stages);
    exe->pipeline_fallback_ = segments.why_not;
  }
  if (pipeline && exe->pipeline_fallback_.empty()) {
    for (const auto& n : g->nodes()) {
      lowering.segment_of_position.push_back(segments.segment.at(n.get()));
    }
  }
  exe->program_ = Lower(std::move(g), lowering);
  if (pipeline && exe->pipeline_fallback_.empty()) exe->PreparePipeline(segments);
  if (options.stages_across_processes) {
    exe->SpreadStagesOverProcesses(segments);
  } else if (options.replicas > 1 || distributed) {
    exe->group_ = std::make_unique<ReplicaGroup>(options.replicas, options.communicator);
    for (int d = 0; exe->pipelined() && d < exe->pipeline_.stages; ++d) {
      // Device d's collectives go over channel d + 1 of the processes' communicator.
      std::shared_ptr<Communicator> channel =
          distributed ? options.communicator->Channel(d + 1) : options.communicator;
      exe->stage_groups_.push_back(std::make_unique<ReplicaGroup>(options.replicas, channel));
    }
  }
  if (options.device == DeviceKind::kIpuModel) exe->EstimateOnIpuTiles();
  exe->FindOptimizerStepWork();
  for (Value* v : exe->program_.graph->hyperparams()) exe->hyperparams_.emplace_back(v->type());
  exe->CheckFitsInMemory();
  const auto& vars = exe->program_.graph->variables();
  auto index = [&](const Value* v) {
    return static_cast<size_t>(std::find(vars.begin(), vars.end(), v) - vars.begin());
  };
  for (const VariableShadow& sh : exe->program_.graph->shadows()) {
    exe->shadows_.emplace_back(index(sh.shadow), index(sh.source));
  }
  for (int r = 0; r < options.replicas; ++r) exe->AddReplica(r == 0);
  exe->FindIoOperands();
  const auto& instrs = exe->program_.instructions;
  exe->instr_seconds_.assign(instrs.size(), 0.0);
  exe->instr_calls_.assign(instrs.size(), 0);
  for (size_t i = 0; i < instrs.size() && exe->first_variable_write_ == SIZE_MAX; ++i) {
    for (const BufferRef& r : instrs[i].outputs) {
      if (r.space == BufferSpace::kVariable) exe->first_variable_write_ = i;
    }
  }
  exe->FindOptimizerCounters();
  exe->compile_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return exe;
}

// The optimizer's counters (autodiff/optimizer.cc: its step, each parameter's step, each
// device's micro-batch, the automatic loss scale's state): a failed step puts them back
// (RunReplica), so that it counts for nothing, as a step whose forward raised in eager
// PyTorch never reached optimizer.step().
void Executable::FindOptimizerCounters() {
  static const char* const kCounters[] = {"optimizer.step", "optimizer.micro_step",
                                          "optimizer.loss_scale_log2",
                                          "optimizer.loss_scale_good_steps",
                                          "optimizer.skipped_steps"};
  const auto& vars = program_.graph->variables();
  std::unordered_set<std::string> trained;
  for (const Value* v : vars) {
    if (v->trainable()) trained.insert(v->name() + ".step");
  }
  for (size_t v = 0; v < vars.size(); ++v) {
    const std::string& name = vars[v]->name();
    if (vars[v]->type().bytes() > 16) continue;
    const std::string base = name.substr(0, name.find(".device"));
    bool counter = trained.count(name) > 0;
    for (const char* c : kCounters) counter = counter || base == c;
    if (counter) optimizer_counters_.push_back(v);
  }
}

// Gradient accumulation: which instructions and end-of-step copies only serve the optimizer
// step, and where each device's micro-batch counter is (autodiff/optimizer.cc names them).
void Executable::FindOptimizerStepWork() {
  if (options_.accumulation_steps <= 1) return;
  const Graph& g = *program_.graph;
  const int devices = pipelined() ? pipeline_.stages : 1;
  for (int d = 0; d < devices; ++d) {
    std::string name = "optimizer.micro_step";
    if (d > 0) name += ".device" + std::to_string(d);
    Value* counter = g.FindValue(name);
    if (counter == nullptr && d > 0) {  // a device without parameters: nothing to skip there
      micro_counter_of_device_.push_back(SIZE_MAX);
      continue;
    }
    if (counter == nullptr || counter->kind() != ValueKind::kVariable ||
        counter->type() != TensorType{DType::kF32, {}}) {
      micro_counter_of_device_.clear();
      return;  // not built by AddTrainingStep: run everything every micro-batch
    }
    const auto& vars = g.variables();
    micro_counter_of_device_.push_back(static_cast<size_t>(
        std::find(vars.begin(), vars.end(), counter) - vars.begin()));
  }
  std::unordered_set<const Node*> step_only = OptimizerStepOnlyNodes(g);
  for (const Instruction& inst : program_.instructions) {
    step_only_instr_.push_back(step_only.count(inst.node) ? 1 : 0);
  }
  for (const UpdateCopy& u : program_.update_copies) {
    bool on_step = false;
    for (const VariableUpdate& v : g.updates()) {
      if (v.value == u.value && v.variable == g.variables()[u.variable]) on_step = v.on_optimizer_step;
    }
    step_only_copy_.push_back(on_step ? 1 : 0);
  }
}

// Stages across processes: process p runs device p % S of pipeline p / S. Its collectives
// (the gradient all-reduce of its device's parameters) meet the same device of the other
// pipelines; its transfers go to the other devices of its own pipeline.
void Executable::SpreadStagesOverProcesses(const PipelineSegments& segments) {
  const std::shared_ptr<Communicator>& world = options_.communicator;
  TG_CHECK(world != nullptr && world->size() > 1, kInvalidInput,
           "stages across processes needs a distributed run (several processes)");
  TG_CHECK(options_.pipeline_micro_batches > 0, kInvalidInput,
           "stages across processes run pipelined: set pipeline_micro_batches");
  TG_CHECK(pipelined(), kUnsupported, "the stages of this program cannot run in different "
           "processes because it cannot be pipelined: ", pipeline_fallback_);
  TG_CHECK(options_.replicas == 1, kInvalidInput, "stages across processes: one replica per "
           "process (its device), got replicas = ", options_.replicas);
  const int S = pipeline_.stages;
  TG_CHECK(world->size() % S == 0, kInvalidInput, "stages across processes: the ",
           world->size(), " processes are not a whole number of ", S, "-stage pipelines");
  pipeline_.my_device = world->rank() % S;
  pipeline_.peers = world->Split(world->rank() / S, world->rank() % S);
  std::shared_ptr<Communicator> same_device = world->Split(world->rank() % S, world->rank() / S);
  group_ = std::make_unique<ReplicaGroup>(1, world);  // interrupts, start-up checks
  stage_groups_.resize(S);
  stage_groups_[pipeline_.my_device] = std::make_unique<ReplicaGroup>(1, same_device);
  PrepareRemotePipeline(segments);
}

// The IPU Model: lays the program onto the target's tiles; a program that does not fit
// fails here, at compile, with what overflows and what would help.
void Executable::EstimateOnIpuTiles() {
  tiles::TileOptions t;
  t.target = options_.ipu_target;
  t.available_memory_proportion = options_.available_memory_proportion;
  t.replicas = options_.replicas * (options_.communicator ? options_.communicator->size() : 1);
  t.pipelined = pipelined();
  tile_estimate_ = std::make_unique<tiles::TileEstimate>(tiles::EstimateOnTiles(program_, t));
  TG_CHECK(tile_estimate_->fits || options_.ipu_allow_out_of_memory, kRuntime,
           tile_estimate_->OutOfMemoryMessage());
}

// Refuses, before allocating, a program larger than the device's memory (a shape from a
// crafted file could otherwise be zero-filled until the OOM killer ends the process).
void Executable::CheckFitsInMemory() const {
  const Graph& g = *program_.graph;
  size_t io = 0, vars = 0;
  for (Value* v : g.inputs()) io += v->type().bytes();
  for (Value* v : g.hyperparams()) io += v->type().bytes();
  for (Value* v : g.variables()) vars += v->type().bytes();
  double r = static_cast<double>(options_.replicas);
  double slots = pipelined() ? pipeline_.stages : 1;  // micro-batches in flight
  double working = 0;
  for (size_t b : program_.stats.device_working_bytes) working += static_cast<double>(b);
  double total = r * (slots * static_cast<double>(program_.stats.arena_bytes + io) + working +
                      static_cast<double>(vars));
  uint64_t capacity = device_->memory_bytes();
  auto gib = [](double b) { return b / double(1 << 30); };
  TG_CHECK(capacity == 0 || total <= static_cast<double>(capacity), kRuntime,
           "the compiled program needs ", gib(total), " GiB (", options_.replicas,
           " replica(s) x: arena ", gib(program_.stats.arena_bytes), " GiB, variables ",
           gib(vars), " GiB, inputs ", gib(io), " GiB), more than the ", gib(capacity),
           " GiB of ", device_->name());
}

void Executable::AddReplica(bool first) {
  replicas_.emplace_back();
  Replica& r = replicas_.back();
  const Graph& g = *program_.graph;
  r.slots.resize(pipelined() ? pipeline_.stages : 1);
  for (Slot& slot : r.slots) {
    for (Value* v : g.inputs()) {
      slot.staging.emplace_back(v->type());
      slot.feeds.push_back(slot.staging.back().data());
    }
    slot.arena_memory = device_->Allocate(program_.stats.arena_bytes);
    slot.arena = static_cast<uint8_t*>(slot.arena_memory.data());
  }
  for (size_t d = 0; d < program_.stats.device_working_bytes.size(); ++d) {
    r.working_memory.push_back(device_->Allocate(program_.stats.device_working_bytes[d]));
    r.working.push_back(static_cast<uint8_t*>(r.working_memory.back().data()));
  }
  for (Value* v : g.variables()) r.variables.emplace_back(v->type());
  if (first) {
    for (const Instruction& inst : program_.instructions) r.kernels.push_back(inst.kernel);
  } else {  // kernels keep per-call state: every replica builds its own
    for (const Instruction& inst : program_.instructions) {
      const OpDef& def = OpRegistry::Global().Get(inst.node->op());
      r.kernels.push_back(def.KernelFor(options_.device)(*inst.node));
    }
  }
  Bind(r);
}

void* Executable::Resolve(const Replica& r, const Slot& s, const BufferRef& ref) const {
  switch (ref.space) {
    case BufferSpace::kArena: return s.arena + ref.offset;
    case BufferSpace::kInput: return const_cast<void*>(s.feeds[ref.offset]);
    case BufferSpace::kHyperParam: return const_cast<void*>(hyperparams_[ref.offset].data());
    case BufferSpace::kVariable: return const_cast<void*>(r.variables[ref.offset].data());
    case BufferSpace::kConstant:
      return const_cast<void*>(program_.graph->constants()[ref.offset]->constant().data());
    case BufferSpace::kWorking: return r.working[ref.device] + ref.offset;
  }
  return nullptr;
}

void Executable::Bind(Replica& r) {
  for (Slot& s : r.slots) {
    s.in_ptrs.clear();
    s.out_ptrs.clear();
    for (const Instruction& inst : program_.instructions) {
      std::vector<const void*> ins;
      for (const BufferRef& ref : inst.inputs) ins.push_back(Resolve(r, s, ref));
      std::vector<void*> outs;
      for (const BufferRef& ref : inst.outputs) outs.push_back(Resolve(r, s, ref));
      s.in_ptrs.push_back(std::move(ins));
      s.out_ptrs.push_back(std::move(outs));
    }
  }
}

bool Executable::IsShadow(size_t variable) const {
  for (const auto& [shadow, source] : shadows_) {
    if (shadow == variable) return true;
  }
  return false;
}

void Executable::RecastShadows(Replica& r, size_t source) {
  for (const auto& [shadow, from] : shadows_) {
    if (source != SIZE_MAX && from != source) continue;
    const HostTensor& src = r.variables[from];
    HostTensor& dst = r.variables[shadow];
    cpu::CastBuffer(src.data(), static_cast<cpu::ElemType>(src.type().dtype), dst.data(),
                    static_cast<cpu::ElemType>(dst.type().dtype), src.type().numel());
  }
}

std::vector<std::string> Executable::VariableNames() const {
  std::vector<std::string> names;
  const auto& vars = program_.graph->variables();
  for (size_t i = 0; i < vars.size(); ++i) {
    if (!IsShadow(i)) names.push_back(vars[i]->name());
  }
  return names;
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
  return replicas_[0].variables[IndexOf(program_.graph->variables(), name, "variable")].type();
}

void Executable::WriteVariable(const std::string& name, const TensorView& value) {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t index = IndexOf(program_.graph->variables(), name, "variable");
  const TensorType& type = replicas_[0].variables[index].type();
  TG_CHECK(!IsShadow(index), kInvalidInput, "variable '", name,
           "' is a half copy the compiler keeps of another variable: write that one");
  TG_CHECK(value.type == type, kInvalidInput, "variable '", name, "': expected ",
           type.ToString(), ", got ", value.type.ToString());
  for (Replica& r : replicas_) {
    // The value may be the variable's own memory (a host tensor aliasing it: VariableStorage).
    void* dst = r.variables[index].data();
    if (type.bytes() > 0 && dst != value.data) std::memcpy(dst, value.data, type.bytes());
    RecastShadows(r, index);
    ++r.variables_version;
  }
}

void* Executable::VariableStorage(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  return replicas_[0].variables[IndexOf(program_.graph->variables(), name, "variable")].data();
}

HostTensor Executable::ReadVariable(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return replicas_[0].variables[IndexOf(program_.graph->variables(), name, "variable")];
}

void Executable::ReadVariableInto(const std::string& name, void* dst,
                                  const TensorType& type) const {
  ReadVariablesInto({name}, {dst}, {type});
}

void Executable::ReadVariablesInto(const std::vector<std::string>& names,
                                   const std::vector<void*>& dsts,
                                   const std::vector<TensorType>& types) const {
  TG_CHECK(names.size() == dsts.size() && names.size() == types.size(), kInvalidInput,
           "ReadVariablesInto: ", names.size(), " names, ", dsts.size(), " destinations, ",
           types.size(), " types");
  std::lock_guard<std::mutex> lock(mutex_);
  struct Chunk {
    const char* src;
    char* dst;
    size_t bytes;
  };
  constexpr size_t kChunkBytes = size_t{1} << 20;
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < names.size(); ++i) {
    const HostTensor& v =
        replicas_[0].variables[IndexOf(program_.graph->variables(), names[i], "variable")];
    TG_CHECK(types[i] == v.type(), kInvalidInput, "variable '", names[i],
             "': expected a destination of ", v.type().ToString(), ", got ",
             types[i].ToString());
    const char* src = static_cast<const char*>(v.data());
    char* dst = static_cast<char*>(dsts[i]);
    for (size_t at = 0; at < v.bytes(); at += kChunkBytes) {
      chunks.push_back({src + at, dst + at, std::min(kChunkBytes, v.bytes() - at)});
    }
  }
  cpu::ParallelFor(static_cast<int64_t>(chunks.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) std::memcpy(chunks[c].dst, chunks[c].src, chunks[c].bytes);
  });
}

std::vector<std::string> Executable::WrittenVariableNames() const {
  std::vector<std::string> names;
  std::unordered_set<const Value*> seen, shadows;
  for (const VariableShadow& sh : program_.graph->shadows()) shadows.insert(sh.shadow);
  for (const VariableUpdate& u : program_.graph->updates()) {
    if (!shadows.count(u.variable) && seen.insert(u.variable).second) {
      names.push_back(u.variable->name());
    }
  }
  return names;
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

int64_t Executable::steps_completed_in_last_run() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return steps_completed_;
}

void Executable::BroadcastVariables() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!group_) return;
  ScopedTimeout startup(group_->comm(), Communicator::kStartupTimeoutSeconds);
  for (size_t v = 0; v < replicas_[0].variables.size(); ++v) {
    HostTensor& mine = replicas_[0].variables[v];
    if (mine.bytes() == 0) continue;
    group_->comm().Broadcast(mine.data(), static_cast<int64_t>(mine.bytes()), CommDType::kU8, 0);
    for (size_t r = 1; r < replicas_.size(); ++r) {
      std::memcpy(replicas_[r].variables[v].data(), mine.data(), mine.bytes());
    }
  }
  for (Replica& r : replicas_) ++r.variables_version;
}

uint64_t Executable::ProgramHash() const {
  // FNV-1a over the optimized IR, the feed types and the replica count.
  std::string text = PrintGraph(*program_.graph) + "|replicas=" + std::to_string(replicas());
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return h;
}

void Executable::CheckSameProgramEverywhere() const {
  if (!group_ || group_->comm().size() == 1) return;
  Communicator& comm = const_cast<ReplicaGroup&>(*group_).comm();
  ScopedTimeout startup(comm, Communicator::kStartupTimeoutSeconds);
  int64_t mine = static_cast<int64_t>(ProgramHash());
  std::vector<int64_t> all(comm.size());
  comm.AllGather(&mine, all.data(), 1, CommDType::kI64);
  std::string differ;
  for (int p = 0; p < comm.size(); ++p) {
    if (all[p] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(p);
  }
  TG_CHECK(differ.empty(), kInvalidInput, comm.name(), ": process(es) ", differ,
           " compiled a different program than process 0 (options, model or input types "
           "differ between processes); every process of a run must compile the same one");
}

}  // namespace tg
