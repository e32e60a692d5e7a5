// Executable: a compiled training or inference step, the C++ Session API.
//
// It owns the weights and optimizer state ("on device"), a static buffer plan (one arena
// allocated at compile time: no allocation while steps run) and runs `steps` steps per
// call, streaming one slice of each input in per step and returning outputs according to
// the output mode. Hyperparameters are runtime values: changing them never recompiles.
//
// Replication: with CompileOptions::replicas = R (and/or a Communicator spanning several
// processes) the program is SPMD: R replicas in this process, each with its own arena,
// variables and kernels, run concurrently on threads and meet at collective ops
// (runtime/replica_group.h). Feeds and outputs then carry a replica dimension after the
// step dimension; variables are written to every replica and read from replica 0.
//
// Thread safety: every public method may be called from any thread; calls on one
// Executable are serialized by an internal mutex (a second caller waits).
// Failure: a Run that throws (bad data found by a kernel, an interrupt) has applied the
// steps before the failing one; steps_completed_in_last_run() says how many, and the error
// says whether the failing step had already written some variables in place.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/collectives/communicator.h"
#include "devices/device.h"
#include "ir/graph.h"
#include "lowering/program.h"
#include "passes/pass.h"
#include "parallel/pipeline_order.h"
#include "runtime/pipeline.h"
#include "runtime/replica_group.h"
#include "tiles/tile_estimate.h"

namespace tg {

// A non-owning view of host data with its type.
struct TensorView {
  const void* data = nullptr;
  TensorType type;
};

enum class OutputMode { kAll, kFinal, kSum, kEveryN };
const char* OutputModeName(OutputMode mode);

struct CompileOptions {
  PipelineKind pipeline = PipelineKind::kTraining;
  bool optimize = true;        // run the pass pipeline
  bool verify_each = false;    // verifier after every pass
  std::string dump_after;      // dump IR after this pass ("*" for all)
  bool inplace = true;         // in-place buffer reuse and variable updates
  DeviceKind device = DeviceKind::kCpu;  // what runs the program (devices/device.h)
  int num_threads = 0;         // 0: the device's default (CPU: OpenMP's)
  int replicas = 1;            // data-parallel replicas in this process
  // Model parallelism: nodes are placed on `stages` devices of kind `device` (placements
  // 0 .. stages-1; 0: as many as the graph's placements use). They run one after another
  // in program order (sharded execution) unless pipeline_micro_batches is set.
  int stages = 0;
  // Pipelined execution (runtime/pipeline.h): every device runs on its own thread, with its
  // share of the cores, and micro-batches flow through the devices concurrently, one
  // optimizer step (a wave of this many steps: the gradient accumulation count) at a time.
  // Training: a call's steps must be a multiple of it; a program with no updates pipelines
  // a whole call whatever it is set to (> 0). A program that cannot be pipelined (see
  // parallel/pipeline_order.h) runs sharded; pipeline_fallback_reason() says why.
  int pipeline_micro_batches = 0;
  // Pipelined execution with every device in its own process: process p of the
  // communicator runs device p % stages of pipeline p / stages (the pipelines are data-
  // parallel replicas of each other). Needs `communicator` and pipeline_micro_batches.
  bool stages_across_processes = false;
  // The gradient accumulation count the graph was built with (AddTrainingStep); > 1: the
  // nodes that only compute the optimizer step (parallel/optimizer_step.h) run on the last
  // micro-batch of each step only, as the devices' micro-batch counters say. 0: unknown.
  int accumulation_steps = 0;
  // Pipeline recomputation: each device keeps only the values it receives from other devices
  // in the forward and recomputes its other activations in its backward
  // (parallel/stage_copies.h: CheckpointStageInputs).
  bool recompute_stages = false;
  // The processes of a distributed run (null: this process alone).
  std::shared_ptr<Communicator> communicator;
  uint64_t seed = 0;
  bool profile = false;        // time every instruction
  // DeviceKind::kIpuModel: the emulated IPU (tiles/ipu_target.h names the targets), the
  // share of a tile dense ops may use for temporaries per IPU (empty: Poplar's 0.6), and
  // whether a program that does not fit its tiles still compiles (Poplar's
  // debug.allowOutOfMemory) instead of failing with the out-of-memory report.
  std::string ipu_target = "GC200";
  std::vector<double> available_memory_proportion;
  bool ipu_allow_out_of_memory = false;
};

struct OpProfile {
  std::string op;     // for an instruction profile: the node, "%y = matmul(%a, %b)"
  std::string source; // the user's file:line (instruction profile only)
  int64_t calls = 0;
  double seconds = 0;
  double bytes = 0;   // bytes read + written (tensor sizes; a lower bound on traffic)
  double flops = 0;   // floating-point operations, for ops that declare them (matmul, conv)
};

class Executable {
 public:
  // Verifies, optimizes, lowers and prepares kernels. The graph is copied.
  static std::unique_ptr<Executable> Compile(const Graph& graph, const CompileOptions& options);

  // --- state ---
  std::vector<std::string> VariableNames() const;
  TensorType VariableType(const std::string& name) const;
  void WriteVariable(const std::string& name, const TensorView& value);
  HostTensor ReadVariable(const std::string& name) const;
  // Copies the variable into `dst`, which must hold its type exactly (one copy, no allocation:
  // how the Python executor refreshes the module's parameters after every training call).
  void ReadVariableInto(const std::string& name, void* dst, const TensorType& type) const;
  // The memory of variable `name` (replica 0's copy): fixed for the executable's lifetime
  // and written in place by every run, so a host tensor may alias it and read the weights a
  // call left without a copy (the Python training executor aliases the module's parameters
  // this way). Writing through it changes what runs read; WriteVariable(name, a view of this
  // memory) is then what recasts the variable's shadows, updates the other replicas and
  // moves the variables version for kernels' derived data.
  void* VariableStorage(const std::string& name);
  // ReadVariableInto for many variables in one call, their bytes split over the CPU threads
  // (one thread's memcpy moved BERT-Base's 440 MB of weights at ~12 GB/s: 75 ms per call).
  void ReadVariablesInto(const std::vector<std::string>& names, const std::vector<void*>& dsts,
                         const std::vector<TensorType>& types) const;
  // The variables the program writes (parameters, optimizer state, running statistics): the
  // others keep what was written to them, so a copy back to the host can skip them. Neither
  // list names the half shadows the compiler adds (ir/graph.h: VariableShadow): writing a
  // variable recasts its shadows.
  std::vector<std::string> WrittenVariableNames() const;
  std::vector<std::string> HyperParamNames() const;
  void SetHyperParam(const std::string& name, const TensorView& value);
  void SetHyperParam(const std::string& name, double value);  // scalars
  // The random stream (dropout, ...) is a function of (seed, step): setting both replays it.
  void SetSeed(uint64_t seed) { seed_ = seed; }
  uint64_t seed() const { return seed_; }
  void SetStep(uint64_t step) { step_ = step; }
  uint64_t step() const { return step_; }

  // --- running ---
  // Names/types of the per-step inputs (a call passes [steps, ...type] for each) and outputs.
  const std::vector<Value*>& inputs() const { return program_.graph->inputs(); }
  const std::vector<Value*>& outputs() const { return program_.graph->outputs(); }
  // Runs `steps` steps. `inputs` in graph input order, each of shape [steps, ...] ([steps,
  // replicas, ...] when replicated). Throws InvalidInput ("expected ..., got ...") before
  // running anything when a feed is wrong. Output shapes: All -> [steps, ...], Final ->
  // [...], Sum -> [...], EveryN -> [steps/n, ...], each with [replicas] after the step
  // dimension (or first) when replicated.
  // `interrupted`, when set, is asked between steps; when it returns true the call stops at
  // that step boundary and throws Error(kInterrupted).
  std::vector<HostTensor> Run(const std::vector<TensorView>& inputs, int64_t steps,
                              OutputMode mode = OutputMode::kFinal, int64_t every_n = 1,
                              const std::function<bool()>& interrupted = nullptr);
  // Steps the last Run completed (all of them, unless it threw).
  int64_t steps_completed_in_last_run() const;
  int replicas() const { return static_cast<int>(replicas_.size()); }
  bool replicated() const { return group_ != nullptr; }
  // Replicas of all processes together.
  int group_size() const { return group_ ? group_->group_size() : 1; }
  // Sets every variable of every process to process 0's (distributed runs start identical).
  void BroadcastVariables();
  // A hash of the compiled program (optimized IR, input types): processes of one run must
  // agree; CheckSameProgramEverywhere throws naming the processes that differ.
  uint64_t ProgramHash() const;
  void CheckSameProgramEverywhere() const;

  // --- pipelined execution ---
  bool pipelined() const { return pipeline_.stages > 1; }
  const std::string& pipeline_fallback_reason() const { return pipeline_fallback_; }
  // Busy time of each device and the wall time of the pipelined waves since the last reset.
  PipelineStats pipeline_stats() const;
  void ResetPipelineStats();

  // --- introspection ---
  const MemoryStats& memory_stats() const { return program_.stats; }
  const Graph& optimized_graph() const { return *program_.graph; }
  // Zero-copy I/O (runtime/executable_io.cc): how many outputs are written straight into the
  // results and how many inputs are read straight from the caller's arrays (0 when pipelined).
  int outputs_written_in_place() const;
  int feeds_read_in_place() const;
  size_t num_instructions() const { return program_.instructions.size(); }
  double compile_seconds() const { return compile_seconds_; }
  // The IPU Model's tile mapping, memory fit and cycle estimate (null on other devices).
  const tiles::TileEstimate* tile_estimate() const { return tile_estimate_.get(); }
  const Device& device() const { return *device_; }
  // Needs CompileOptions::profile. Aggregated by op kind, slowest first:
  std::vector<OpProfile> Profile() const;
  // One entry per instruction (node), slowest first.
  std::vector<OpProfile> InstructionProfile() const;
  std::string ProfileReport(int top_instructions = 15) const;  // both, as tables
  void ResetProfile();

 private:
  // One micro-batch's working memory: the arena, the input staging, and the pointers the
  // instructions read and write there. A sequential run uses one; a pipelined run one per
  // micro-batch in flight (runtime/pipeline.h).
  struct Slot {
    DeviceMemory arena_memory;
    uint8_t* arena = nullptr;
    std::vector<HostTensor> staging;
    // Where each input's current step slice is: its staging buffer, or the caller's array
    // (zero-copy feeds, runtime/executable_io.cc). kInput buffer refs resolve here.
    std::vector<const void*> feeds;
    std::vector<std::vector<const void*>> in_ptrs;
    std::vector<std::vector<void*>> out_ptrs;
    // The weight-only instructions' results (lowering/weight_only.h) in this slot's arena
    // were computed from the variables of this version; none yet while not ready.
    bool weight_only_ready = false;
    uint64_t weight_only_version = 0;
  };
  // What each replica owns: its slots, variables and kernels (kernels keep per-call state
  // such as prepacked weights, so replicas running concurrently need their own).
  struct Replica {
    std::vector<Slot> slots;
    std::vector<DeviceMemory> working_memory;  // pipelined: one working arena per device
    std::vector<uint8_t*> working;
    std::vector<HostTensor> variables;
    std::vector<Kernel> kernels;
    uint64_t variables_version = 0;  // see RunContext::variables_version
  };
  // The pipelined schedule's view of the program (CompileOptions::pipeline_micro_batches).
  struct Pipeline {
    int stages = 1;
    int micro_batches = 0;  // per wave (optimizer step); 0: the whole call (inference)
    std::vector<size_t> segment_begin;  // instructions of segment k: [begin[k], begin[k+1])
    std::vector<std::vector<size_t>> copies_after;  // segment -> update_copies it ends with
    bool has_backward = false;
    // Stages in different processes (CompileOptions::stages_across_processes): this
    // process runs device `my_device` only; values another device reads move as messages.
    int my_device = -1;  // -1: every device runs in this process
    struct Transfer {
      BufferRef ref;     // where the value lives (the same in every process's plan)
      size_t bytes = 0;
      int from_device = 0, from_segment = 0, to_device = 0, to_segment = 0;
    };
    std::vector<Transfer> transfers;  // tag = index + 1
    // segment -> the transfers it receives before running / sends after (indices).
    std::vector<std::vector<size_t>> receives_before, sends_after;
    std::vector<int> output_segment;  // per graph output: the segment computing it
    // Variables updated on one device: (index, device). `shared` ones are read by another
    // device too and are sent to the other processes after every optimizer step; all are
    // at the end of a call (so that every process holds the model).
    std::vector<std::pair<size_t, int>> updated_variables, shared_variables;
    std::shared_ptr<Communicator> peers;  // the processes of this pipeline, rank = device
  };

  Executable() = default;
  void AddReplica(bool first);
  void Bind(Replica& r);                                   // resolves buffer pointers (once)
  void* Resolve(const Replica& r, const Slot& s, const BufferRef& ref) const;
  void ValidateFeeds(const std::vector<TensorView>& inputs, int64_t steps,
                     OutputMode mode, int64_t every_n) const;
  std::vector<HostTensor> MakeResults(int64_t steps, OutputMode mode, int64_t every_n) const;
  // Runs replica r's part of a call: its input slices, steps, outputs; *completed counts the
  // steps it finished (also when it throws).
  void RunReplica(int r, const std::vector<TensorView>& inputs, int64_t steps, OutputMode mode,
                  int64_t every_n, std::vector<HostTensor>& results,
                  const std::function<bool()>& interrupted, int64_t* completed);
  bool StopAtStepBoundary(int r, const std::function<bool()>& interrupted);
  void RunOneStep(int r, uint64_t step);
  // Runs instructions [begin, end) of replica r on slot s with `ctx` (errors name the node).
  // `applying` false: skips the instructions that only compute the optimizer step.
  void RunInstructions(int r, int s, size_t begin, size_t end, const RunContext& ctx,
                       bool applying = true);
  void FindOptimizerStepWork();
  // Whether device d's next micro-batch applies the optimizer step (its counter says so).
  bool Applying(int r, int device) const;
  // `segment` >= 0: only the outputs that segment computes (stages across processes).
  // `in_place`: per output, already written by this step (skipped); null: none.
  void CopyOutputs(int r, int s, int64_t step, int64_t steps, OutputMode mode, int64_t every_n,
                   std::vector<HostTensor>& results, int segment = -1,
                   const std::vector<char>* in_place = nullptr);
  void PrepareRemotePipeline(const PipelineSegments& segments);
  void SpreadStagesOverProcesses(const PipelineSegments& segments);
  // Stages across processes: variables from their device's process, outputs from theirs.
  void ShareVariables(const std::vector<std::pair<size_t, int>>& which);
  void ShareOutputs(std::vector<HostTensor>& results);
  void StageInputs(int r, int s, int64_t step, const std::vector<TensorView>& inputs);
  // Zero-copy I/O of sequential programs (runtime/executable_io.cc): the instruction operands
  // that read each feed or write / read each output value, found once at compile time, and
  // pointed at the caller's arrays (this step's input slice, this step's row of the results)
  // before each step, instead of copying into staging and out of the arena. Returns, per
  // output, whether this step writes it in place (CopyOutputs skips it).
  struct OperandUse {
    size_t instr = 0, operand = 0;
    bool is_output = false;
  };
  void FindIoOperands();
  const std::vector<char>& BindStep(int r, int64_t step, int64_t steps, OutputMode mode,
                                    int64_t every_n, const std::vector<TensorView>& inputs,
                                    std::vector<HostTensor>& results);
  void PointOperands(Slot& slot, const std::vector<OperandUse>& uses, const void* p);
  RunContext ContextFor(int r, uint64_t step) const;
  // Pipelined (runtime/pipeline.cc): `waves` of micro-batches through the stages, steps in
  // [first, first + count) of the call.
  void PreparePipeline(const PipelineSegments& segments);
  void DiscardOptimizerStepInProgress(int r);
  void FindOptimizerCounters();
  // Replica r's optimizer counters, saved into / restored from `saved` (RunReplica).
  void SaveOptimizerCounters(int r, std::vector<uint8_t>& saved) const;
  void RestoreOptimizerCounters(int r, const std::vector<uint8_t>& saved);
  void RunWave(int r, int64_t first, int64_t count, int64_t steps,
               const std::vector<TensorView>& inputs, OutputMode mode, int64_t every_n,
               std::vector<HostTensor>& results);
  std::vector<OpProfile> InstructionEntries() const;  // instruction order
  static void AccumulateInto(void* acc, const TensorType& type, const void* src);
  void CheckFitsInMemory() const;
  void EstimateOnIpuTiles();
  // Half shadows (ir/graph.h: VariableShadow): recasts replica r's shadows of the variable
  // with this index (SIZE_MAX: of every variable) from their sources.
  void RecastShadows(Replica& r, size_t source = SIZE_MAX);
  bool IsShadow(size_t variable) const;  // by variable index

  mutable std::mutex mutex_;  // serializes calls (see the class comment)
  CompileOptions options_;
  Program program_;
  std::unique_ptr<Device> device_;
  std::vector<Replica> replicas_;
  std::unique_ptr<ReplicaGroup> group_;  // replicated runs only
  std::vector<HostTensor> hyperparams_;  // shared by the replicas
  std::vector<double> instr_seconds_;    // profile (replica 0)
  std::vector<int64_t> instr_calls_;
  Pipeline pipeline_;                    // stages == 1: sequential
  std::string pipeline_fallback_;        // why a requested pipeline runs sequentially
  PipelineStats pipeline_stats_;
  mutable std::mutex stats_mutex_;
  // Pipelined replicated runs: the collectives of device d's segments meet in group d (the
  // devices' threads of one replica run concurrently and would mix their calls in one group).
  std::vector<std::unique_ptr<ReplicaGroup>> stage_groups_;
  size_t first_variable_write_ = SIZE_MAX;
  // (shadow, source) variable indices of the program's half shadows.
  std::vector<std::pair<size_t, size_t>> shadows_;
  // Zero-copy I/O (FindIoOperands): per graph input / output; an output with no uses is copied.
  std::vector<std::vector<OperandUse>> feed_uses_, output_uses_;
  std::vector<std::vector<char>> output_in_place_;  // per replica: BindStep's answer
  // Gradient accumulation (CompileOptions::accumulation_steps): per instruction / update
  // copy, whether it only serves the optimizer step; each device's micro-batch counter.
  std::vector<char> step_only_instr_, step_only_copy_;
  std::vector<size_t> optimizer_counters_;  // variables: FindOptimizerCounters
  std::vector<size_t> micro_counter_of_device_;  // first instruction writing a variable in place
  bool stop_requested_ = false;             // set at a step boundary (replicated runs)
  int64_t steps_completed_ = 0;
  uint64_t seed_ = 0;
  uint64_t step_ = 0;
  double compile_seconds_ = 0;
  std::unique_ptr<tiles::TileEstimate> tile_estimate_;
};

}  // namespace tg
