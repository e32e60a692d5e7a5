// The pipelined schedule (runtime/pipeline.h) and Executable's pipelined waves.
#include "runtime/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <thread>

#include "runtime/executable.h"
#include "support/error.h"

namespace tg {

std::vector<SegmentRun> OneForwardOneBackward(int device, int stages, int micro_batches,
                                              bool has_backward) {
  std::vector<SegmentRun> order;
  if (!has_backward) {
    for (int m = 0; m < micro_batches; ++m) order.push_back({false, m});
    return order;
  }
  int warmup = std::min(stages - 1 - device, micro_batches);
  int forwards = 0;
  for (; forwards < warmup; ++forwards) order.push_back({false, forwards});
  for (int m = 0; m < micro_batches; ++m) {
    if (forwards < micro_batches) order.push_back({false, forwards++});
    order.push_back({true, m});
  }
  return order;
}

void WaveProgress::WaitDone(int segment, int micro) {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return failed_ || done_[segment] > micro; });
  if (failed_) ::tg::Fail(ErrorKind::kRuntime, "stopped: ", why_);
}

void WaveProgress::MarkDone(int segment, int micro) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_[segment] = micro + 1;
  }
  cv_.notify_all();
}

void WaveProgress::Fail(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failed_) why_ = why;
    failed_ = true;
  }
  cv_.notify_all();
}

// Splits the lowered program into its segments (instructions are in segment order: the
// nodes were ordered by OrderForPipeline) and assigns every end-of-step variable copy to
// the segment that computes its value.
void Executable::PreparePipeline(const PipelineSegments& segments) {
  const int S = segments.stages;
  const auto& instrs = program_.instructions;
  Pipeline p;
  p.stages = S;
  p.micro_batches = options_.pipeline_micro_batches;
  p.has_backward = !program_.graph->updates().empty();
  std::vector<int> segment_of(instrs.size());
  for (size_t i = 0; i < instrs.size(); ++i) {
    segment_of[i] = segments.segment.at(instrs[i].node);
    TG_ASSERT(i == 0 || segment_of[i] >= segment_of[i - 1],
              "pipelined instructions out of segment order");
  }
  for (int k = 0; k <= 2 * S; ++k) {
    p.segment_begin.push_back(static_cast<size_t>(
        std::lower_bound(segment_of.begin(), segment_of.end(), k) - segment_of.begin()));
  }
  p.copies_after.assign(2 * S, {});
  for (size_t c = 0; c < program_.update_copies.size(); ++c) {
    const Value* v = program_.update_copies[c].value;
    int k = v->producer() ? segments.segment.at(v->producer()) : 2 * S - 1;
    p.copies_after[k].push_back(c);
  }
  pipeline_ = std::move(p);
}

void Executable::RunWave(int r, int64_t first, int64_t count, int64_t steps,
                         const std::vector<TensorView>& inputs, OutputMode mode,
                         int64_t every_n, std::vector<HostTensor>& results) {
  const int S = pipeline_.stages;
  const int micro_batches = static_cast<int>(count);
  const int slots = static_cast<int>(replicas_[r].slots.size());
  const int last_segment = pipeline_.has_backward ? 2 * S - 1 : S - 1;
  const uint64_t version = replicas_[r].variables_version;
  WaveProgress progress(2 * S);
  std::vector<std::exception_ptr> errors(S);
  std::vector<int> failed_order;
  std::mutex failed_mutex;
  std::vector<double> busy(S, 0.0);
  const bool remote = pipeline_.my_device >= 0;  // the other devices are other processes
  const int local_devices = remote ? 1 : S;
  const int share = std::max(1, device_->threads() / (replicas() * local_devices));
  // Stages across processes: sends still in flight, by slot (waited before it is reused).
  std::vector<std::vector<std::shared_ptr<Communicator::Pending>>> sending(slots);
  auto receive = [&](int k, int slot) {
    Replica& rep = replicas_[r];
    for (size_t t : pipeline_.receives_before[k]) {
      const Pipeline::Transfer& x = pipeline_.transfers[t];
      pipeline_.peers->Recv(Resolve(rep, rep.slots[slot], x.ref), static_cast<int64_t>(x.bytes),
                            x.from_device, static_cast<int>(t) + 1);
    }
  };
  auto send = [&](int k, int slot) {
    Replica& rep = replicas_[r];
    for (size_t t : pipeline_.sends_after[k]) {
      const Pipeline::Transfer& x = pipeline_.transfers[t];
      sending[slot].push_back(pipeline_.peers->StartSend(
          Resolve(rep, rep.slots[slot], x.ref), static_cast<int64_t>(x.bytes), x.to_device,
          static_cast<int>(t) + 1));
    }
  };
  auto finish_sends = [&](int slot) {
    for (auto& pending : sending[slot]) pending->Wait();
    sending[slot].clear();
  };
  auto device_work = [&](int d) {
    CreateDevice(device_->kind(), DeviceOptions{share})->Activate();
    try {
      for (const SegmentRun& run : OneForwardOneBackward(d, S, micro_batches,
                                                         pipeline_.has_backward)) {
        const int k = run.backward ? 2 * S - 1 - d : d;
        const int slot = run.micro % slots;
        const int64_t step = first + run.micro;
        if (remote) {
          finish_sends(slot);  // the segment may write over what this slot still sends
          if (k == d) StageInputs(r, slot, step, inputs);  // the device's first segment
          receive(k, slot);  // the other devices' values this segment reads
        } else if (k == 0) {
          if (run.micro >= slots) progress.WaitDone(last_segment, run.micro - slots);
          StageInputs(r, slot, step, inputs);
        } else {
          progress.WaitDone(k - 1, run.micro);
        }
        auto t0 = std::chrono::steady_clock::now();
        RunContext ctx = ContextFor(r, step_ + static_cast<uint64_t>(step));
        ctx.variables_version = version + static_cast<uint64_t>(run.micro);
        if (!stage_groups_.empty()) ctx.collectives = stage_groups_[d].get();
        // Read before the segment updates it: the device's micro-batch counter.
        const bool applying = !run.backward || Applying(r, d);
        try {
          RunInstructions(r, slot, pipeline_.segment_begin[k], pipeline_.segment_begin[k + 1],
                          ctx, applying);
        } catch (Error& e) {
          e.AddContext("in micro-batch " + std::to_string(run.micro) + " of the optimizer step, " +
                       std::string(run.backward ? "backward" : "forward") + " of device " +
                       std::to_string(d));
          throw;
        }
        Replica& rep = replicas_[r];
        for (size_t c : pipeline_.copies_after[k]) {
          if (!applying && !step_only_copy_.empty() && step_only_copy_[c]) continue;
          const UpdateCopy& u = program_.update_copies[c];
          if (u.bytes > 0) {
            std::memmove(rep.variables[u.variable].data(), Resolve(rep, rep.slots[slot], u.from),
                         u.bytes);
          }
        }
        if (remote) {
          send(k, slot);
          CopyOutputs(r, slot, step, steps, mode, every_n, results, k);
        } else if (k == last_segment) {
          CopyOutputs(r, slot, step, steps, mode, every_n, results);
        }
        busy[d] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        progress.MarkDone(k, run.micro);
      }
    } catch (...) {
      errors[d] = std::current_exception();
      {
        std::lock_guard<std::mutex> g(failed_mutex);
        failed_order.push_back(d);
      }
      progress.Fail("device " + std::to_string(d) + " of the pipeline failed");
      for (auto& group : stage_groups_) {
        if (group) group->Abort("another pipeline stage failed");
      }
    }
  };
  auto t0 = std::chrono::steady_clock::now();
  if (remote) {
    device_work(pipeline_.my_device);
    busy[0] = busy[pipeline_.my_device];  // this process's device
    if (failed_order.empty()) {
      for (int slot = 0; slot < slots; ++slot) finish_sends(slot);
      ShareVariables(pipeline_.shared_variables);  // read on other devices next step
    }
  } else {
    std::vector<std::thread> threads;
    for (int d = 1; d < S; ++d) threads.emplace_back(device_work, d);
    device_work(0);
    for (std::thread& t : threads) t.join();
  }
  CreateDevice(device_->kind(),
               DeviceOptions{replicated() ? std::max(1, device_->threads() / replicas())
                                          : device_->threads()})->Activate();
  if (!program_.graph->updates().empty()) {
    replicas_[r].variables_version += static_cast<uint64_t>(micro_batches);
  }
  if (r == 0) {
    std::lock_guard<std::mutex> g(stats_mutex_);
    pipeline_stats_.busy_seconds.resize(local_devices, 0.0);
    for (int d = 0; d < local_devices; ++d) pipeline_stats_.busy_seconds[d] += busy[d];
    pipeline_stats_.wall_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    pipeline_stats_.waves += 1;
    pipeline_stats_.micro_batches += micro_batches;
  }
  if (!failed_order.empty()) std::rethrow_exception(errors[failed_order.front()]);
}

// Stages across processes: what moves between the devices' processes. Every process holds
// the same program and plan, so a value received lands where its own copy of the producing
// segment would have written it, and the stage_copy reading it runs unchanged.
void Executable::PrepareRemotePipeline(const PipelineSegments& segments) {
  Pipeline& p = pipeline_;
  auto device_of = [&](int k) { return k < p.stages ? k : 2 * p.stages - 1 - k; };
  std::map<std::pair<const Value*, int>, bool> seen;  // (value, to_device)
  for (const Instruction& inst : program_.instructions) {
    int to_segment = segments.segment.at(inst.node);
    for (size_t i = 0; i < inst.node->inputs().size(); ++i) {
      const Value* v = inst.node->input(i);
      if (!v->producer()) continue;
      int from_segment = segments.segment.at(v->producer());
      if (device_of(from_segment) == device_of(to_segment)) continue;
      if (!seen.emplace(std::make_pair(v, device_of(to_segment)), true).second) continue;
      TG_CHECK(inst.inputs[i].space == BufferSpace::kArena, kInternal, "value %", v->name(),
               " crosses devices but does not live in the micro-batch arena");
      p.transfers.push_back({inst.inputs[i], v->type().bytes(), device_of(from_segment),
                             from_segment, device_of(to_segment), to_segment});
    }
  }
  p.receives_before.assign(2 * p.stages, {});
  p.sends_after.assign(2 * p.stages, {});
  for (size_t t = 0; t < p.transfers.size(); ++t) {
    if (p.transfers[t].bytes == 0) continue;
    p.receives_before[p.transfers[t].to_segment].push_back(t);
    p.sends_after[p.transfers[t].from_segment].push_back(t);
  }
  const Graph& g = *program_.graph;
  for (Value* out : g.outputs()) {
    p.output_segment.push_back(out->producer() ? segments.segment.at(out->producer())
                                               : p.has_backward ? 2 * p.stages - 1 : 0);
  }
  std::map<const Value*, std::vector<int>> reader_devices;
  for (const auto& n : g.nodes()) {
    for (Value* in : n->inputs()) {
      if (in->kind() == ValueKind::kVariable) {
        reader_devices[in].push_back(device_of(segments.segment.at(n.get())));
      }
    }
  }
  for (size_t v = 0; v < g.variables().size(); ++v) {
    for (const VariableUpdate& u : g.updates()) {
      if (u.variable != g.variables()[v]) continue;
      int owner = u.value->producer() ? device_of(segments.segment.at(u.value->producer())) : 0;
      p.updated_variables.emplace_back(v, owner);
      for (int d : reader_devices[u.variable]) {
        if (d != owner) {
          p.shared_variables.emplace_back(v, owner);
          break;
        }
      }
    }
  }
}

void Executable::ShareVariables(const std::vector<std::pair<size_t, int>>& which) {
  for (const auto& [v, owner] : which) {
    HostTensor& value = replicas_[0].variables[v];
    if (value.bytes() == 0) continue;
    pipeline_.peers->Broadcast(value.data(), static_cast<int64_t>(value.bytes()), CommDType::kU8,
                               owner);
  }
  if (!which.empty()) ++replicas_[0].variables_version;
}

void Executable::ShareOutputs(std::vector<HostTensor>& results) {
  for (size_t o = 0; o < results.size(); ++o) {
    int k = pipeline_.output_segment[o];
    int owner = k < pipeline_.stages ? k : 2 * pipeline_.stages - 1 - k;
    if (results[o].bytes() == 0) continue;
    pipeline_.peers->Broadcast(results[o].data(), static_cast<int64_t>(results[o].bytes()),
                               CommDType::kU8, owner);
  }
}

PipelineStats Executable::pipeline_stats() const {
  std::lock_guard<std::mutex> g(stats_mutex_);
  return pipeline_stats_;
}

void Executable::ResetPipelineStats() {
  std::lock_guard<std::mutex> g(stats_mutex_);
  pipeline_stats_ = PipelineStats{};
}

}  // namespace tg
