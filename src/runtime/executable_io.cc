// Zero-copy feeds and outputs of sequential programs: instead of copying each step's input
// slice into staging and each output out of the arena, the instructions that read a feed or
// write / read an output value are pointed at the caller's arrays before the step (see
// Executable::FindIoOperands in executable.h). Inputs are never written by a program (the
// buffer assignment reuses arena buffers only), so reading the caller's memory in place is
// safe; feeds must stay alive and unchanged during Run, which is synchronous.
#include <unordered_map>

#include "runtime/executable.h"

namespace tg {

void Executable::FindIoOperands() {
  const Graph& g = *program_.graph;
  feed_uses_.assign(g.inputs().size(), {});
  output_uses_.assign(g.outputs().size(), {});
  output_in_place_.assign(replicas_.size(), std::vector<char>(g.outputs().size(), 0));
  if (pipelined()) return;  // micro-batches in flight keep their own staging copies
  const auto& instrs = program_.instructions;
  for (size_t i = 0; i < instrs.size(); ++i) {
    for (size_t k = 0; k < instrs[i].inputs.size(); ++k) {
      const BufferRef& ref = instrs[i].inputs[k];
      if (ref.space == BufferSpace::kInput) feed_uses_[ref.offset].push_back({i, k, false});
    }
  }
  // An output is written in place when its value owns an arena buffer (not a view, feed,
  // variable or constant) and nothing else reads that buffer after the step: no other output
  // (the same value twice, a view of it) and no end-of-step variable update. Every operand
  // of its value (the producer's output, the readers' inputs, through views) then points at
  // the results.
  const std::unordered_map<const Value*, const Value*> roots = ViewRoots(g);
  auto root = [&](const Value* v) {
    auto it = roots.find(v);
    return it == roots.end() ? v : it->second;
  };
  std::unordered_map<const Value*, int> read_after_step;
  for (const UpdateCopy& u : program_.update_copies) ++read_after_step[root(u.value)];
  for (const Value* v : g.outputs()) ++read_after_step[root(v)];
  for (size_t o = 0; o < g.outputs().size(); ++o) {
    const Value* v = g.outputs()[o];
    if (program_.outputs[o].space != BufferSpace::kArena || root(v) != v ||
        v->kind() != ValueKind::kNodeOutput || v->type().bytes() == 0 ||
        read_after_step[v] != 1) {
      continue;
    }
    for (size_t i = 0; i < instrs.size(); ++i) {
      const Node& node = *instrs[i].node;
      for (size_t k = 0; k < node.outputs().size(); ++k) {
        if (node.output(k) == v) output_uses_[o].push_back({i, k, true});
      }
      for (size_t k = 0; k < node.inputs().size(); ++k) {
        if (root(node.input(k)) == v) output_uses_[o].push_back({i, k, false});
      }
    }
  }
}

int Executable::outputs_written_in_place() const {
  int n = 0;
  for (const auto& uses : output_uses_) n += !uses.empty();
  return n;
}

int Executable::feeds_read_in_place() const {
  int n = 0;
  for (const auto& uses : feed_uses_) n += !uses.empty();
  return n;
}

void Executable::PointOperands(Slot& slot, const std::vector<OperandUse>& uses, const void* p) {
  for (const OperandUse& u : uses) {
    if (u.is_output) {
      slot.out_ptrs[u.instr][u.operand] = const_cast<void*>(p);
    } else {
      slot.in_ptrs[u.instr][u.operand] = p;
    }
  }
}

const std::vector<char>& Executable::BindStep(int r, int64_t step, int64_t steps,
                                              OutputMode mode, int64_t every_n,
                                              const std::vector<TensorView>& inputs,
                                              std::vector<HostTensor>& results) {
  Replica& rep = replicas_[r];
  Slot& slot = rep.slots[0];
  const size_t n = static_cast<size_t>(replicas());
  const size_t row = static_cast<size_t>(step) * n + static_cast<size_t>(r);  // [steps, replicas]
  for (size_t i = 0; i < inputs.size(); ++i) {
    const size_t bytes = slot.staging[i].bytes();
    if (bytes == 0) continue;  // an empty input (null data pointers)
    slot.feeds[i] = static_cast<const uint8_t*>(inputs[i].data) + row * bytes;
    PointOperands(slot, feed_uses_[i], slot.feeds[i]);
  }
  std::vector<char>& in_place = output_in_place_[r];
  const auto& outs = program_.graph->outputs();
  for (size_t o = 0; o < outs.size(); ++o) {
    if (output_uses_[o].empty()) continue;
    const size_t bytes = outs[o]->type().bytes();
    uint8_t* dst = static_cast<uint8_t*>(results[o].data()) + static_cast<size_t>(r) * bytes;
    uint8_t* p = nullptr;  // this step's row of the results, if the mode keeps it
    switch (mode) {
      case OutputMode::kAll: p = dst + static_cast<size_t>(step) * n * bytes; break;
      case OutputMode::kFinal: p = step == steps - 1 ? dst : nullptr; break;
      case OutputMode::kEveryN:
        if ((step + 1) % every_n == 0) {
          p = dst + static_cast<size_t>((step + 1) / every_n - 1) * n * bytes;
        }
        break;
      case OutputMode::kSum: break;  // accumulated from the arena
    }
    in_place[o] = p != nullptr;
    PointOperands(slot, output_uses_[o], p ? p : Resolve(rep, slot, program_.outputs[o]));
  }
  return in_place;
}

}  // namespace tg
