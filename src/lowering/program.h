// Program: the lowered form of a graph for one device. A straight-line list of kernel
// launches over statically planned buffers. Every buffer lives in one of five spaces:
// the arena (planned, reused), the host-input staging area, hyperparameters, variables
// (persistent across steps and calls) and constants. Nothing is allocated while it runs.
#pragma once

#include <cstddef>
#include <memory>
#include <unordered_map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/registry.h"

namespace tg {

// kWorking (pipelined programs only): a device's working arena, for buffers that live
// within one segment of one micro-batch (parallel/pipeline_order.h); the device's
// micro-batches share it, since a device runs one segment at a time.
enum class BufferSpace { kArena, kInput, kHyperParam, kVariable, kConstant, kWorking };

struct BufferRef {
  BufferSpace space = BufferSpace::kArena;
  size_t offset = 0;  // kArena, kWorking: byte offset; other spaces: index into that space's list
  int device = 0;     // kWorking: whose working arena
};

struct Instruction {
  const Node* node = nullptr;  // owned by Program::graph
  int device = 0;              // index into the program's devices (the node's placement)
  Kernel kernel;
  std::vector<BufferRef> inputs;
  std::vector<BufferRef> outputs;
  // Computed from weights alone (lowering/weight_only.h), in a program that updates no
  // variable: its results are kept, and it runs again only after a variable changed.
  bool weight_only = false;
};

// Copies `from` into variable `variable` at the end of each step (updates not done in place).
struct UpdateCopy {
  size_t variable;
  BufferRef from;
  size_t bytes;
  const Value* value = nullptr;  // the update's value (owned by Program::graph)
};

struct MemoryStats {
  size_t arena_bytes = 0;        // planned peak of the arena
  size_t naive_bytes = 0;        // sum of all arena buffers without reuse
  size_t variable_bytes = 0;     // weights, optimizer state, running statistics
  int num_buffers = 0;           // arena buffers planned
  int inplace_reuses = 0;        // outputs written over a dying input
  int views = 0;                 // outputs that alias their input (no kernel)
  int inplace_variable_updates = 0;  // updates written straight into the variable
  size_t kept_weight_only_bytes = 0;  // weight-only results kept between calls (arena)
  // Model parallelism: the planned peak of each device's buffers on their own (index =
  // placement). The program still uses one arena; this is what a device would need.
  std::vector<size_t> device_arena_bytes;
  // Pipelined programs: arena_bytes is the memory of one micro-batch in flight (the values a
  // segment hands to a later one: activations kept for the backward, inter-device values,
  // outputs), and each device also has a working arena of this size, shared by its
  // micro-batches, for the values that live within one segment. Empty otherwise.
  std::vector<size_t> device_working_bytes;
};

struct Program {
  std::unique_ptr<Graph> graph;  // the optimized graph the instructions point into
  std::vector<Instruction> instructions;
  std::vector<BufferRef> outputs;  // one per graph output
  std::vector<UpdateCopy> update_copies;
  MemoryStats stats;
};

struct LoweringOptions {
  bool inplace = true;  // allow in-place reuse of dying inputs and in-place variable updates
  // The kind of each device of the program, indexed by node placement.
  std::vector<DeviceKind> device_kinds = {DeviceKind::kCpu};
  // Pipelined programs: the segment of each node position (parallel/pipeline_order.h);
  // buffers used within one segment go to their device's working arena. Empty: one arena.
  std::vector<int> segment_of_position;
  // Keep weight-only results between calls in programs that update no variable
  // (lowering/weight_only.h). Not with segments: pipelined slots have arenas of their own.
  bool keep_weight_only = true;
};

// View outputs (reshape: no kernel) alias their input: each view mapped to the value that owns
// its bytes (values missing from the map own theirs).
std::unordered_map<const Value*, const Value*> ViewRoots(const Graph& graph);

// Lowers an (optimized, verified) graph: plans memory, picks each node's kernel for the kind
// of the device it is placed on.
Program Lower(std::unique_ptr<Graph> graph, const LoweringOptions& options = {});

}  // namespace tg
