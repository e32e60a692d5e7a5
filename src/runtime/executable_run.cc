// Executable::Run: `steps` steps per call. One replica runs on the calling thread; a
// replicated program runs replica 0 there and the others on threads of their own, each with
// an equal share of the device's threads. Replicas meet at collectives and at every step
// boundary, where the caller's interrupt check (and, across processes, the agreement on
// it) decides whether to go on.
#include <algorithm>
#include <cstring>
#include <thread>

#include "runtime/executable.h"
#include "support/error.h"

namespace tg {
namespace {

template <typename T>
void AddInto(void* acc, const void* src, int64_t n) {
  T* a = static_cast<T*>(acc);
  const T* s = static_cast<const T*>(src);
  for (int64_t k = 0; k < n; ++k) a[k] += s[k];
}

}  // namespace

// acc += the step's value, in the output's dtype (output mode Sum). The common dtypes add in
// place; the 16-bit floats and bool go through converted copies.
void Executable::AccumulateInto(void* acc, const TensorType& type, const void* src) {
  int64_t n = type.numel();
  switch (type.dtype) {
    case DType::kF32: return AddInto<float>(acc, src, n);
    case DType::kF64: return AddInto<double>(acc, src, n);
    case DType::kI64: return AddInto<int64_t>(acc, src, n);
    case DType::kI32: return AddInto<int32_t>(acc, src, n);
    default: {
      HostTensor total(type, acc), step_value(type, src);
      for (int64_t k = 0; k < n; ++k) {
        total.SetFromDouble(k, total.GetAsDouble(k) + step_value.GetAsDouble(k));
      }
      std::memcpy(acc, total.data(), total.bytes());
    }
  }
}

void Executable::ValidateFeeds(const std::vector<TensorView>& inputs, int64_t steps,
                               OutputMode mode, int64_t every_n) const {
  TG_CHECK(steps >= 1, kInvalidInput, "steps must be >= 1, got ", steps);
  if (pipelined() && pipeline_.has_backward && pipeline_.micro_batches > 0) {
    TG_CHECK(steps % pipeline_.micro_batches == 0, kInvalidInput, "a pipelined training "
             "program runs whole optimizer steps: steps (", steps, ") must be a multiple of ",
             "the micro-batches per step (", pipeline_.micro_batches, ")");
  }
  if (mode == OutputMode::kEveryN) {
    TG_CHECK(every_n >= 1 && steps % every_n == 0, kInvalidInput,
             "output mode every-n: steps (", steps, ") must be a multiple of n (", every_n, ")");
  }
  const auto& expected = program_.graph->inputs();
  TG_CHECK(inputs.size() == expected.size(), kInvalidInput, "expected ", expected.size(),
           " inputs, got ", inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    TensorType want = expected[i]->type();
    std::string lead = "steps=" + std::to_string(steps);
    if (replicated()) {
      want.shape.insert(want.shape.begin(), replicas());
      lead += " x replicas=" + std::to_string(replicas());
    }
    want.shape.insert(want.shape.begin(), steps);
    TG_CHECK(inputs[i].type.dtype == want.dtype, kInvalidInput, "input '", expected[i]->name(),
             "': expected dtype ", DTypeName(want.dtype), ", got ", DTypeName(inputs[i].type.dtype));
    TG_CHECK(inputs[i].type.shape == want.shape, kInvalidInput, "input '", expected[i]->name(),
             "': expected shape ", ShapeToString(want.shape), " (", lead, " x ",
             ShapeToString(expected[i]->type().shape), "), got ", ShapeToString(inputs[i].type.shape));
  }
}

std::vector<HostTensor> Executable::MakeResults(int64_t steps, OutputMode mode,
                                                int64_t every_n) const {
  int64_t rows = mode == OutputMode::kAll ? steps : mode == OutputMode::kEveryN ? steps / every_n : 0;
  std::vector<HostTensor> results;
  for (Value* v : program_.graph->outputs()) {
    TensorType t = v->type();
    if (replicated()) t.shape.insert(t.shape.begin(), replicas());
    if (rows > 0) t.shape.insert(t.shape.begin(), rows);
    // Every element is written by the run (each step's row, or the last step's) except when
    // steps add into it; pipelined programs stage and broadcast, and start from zeros.
    const bool written = mode != OutputMode::kSum && !pipelined();
    results.push_back(written ? HostTensor::Uninitialized(t) : HostTensor(t));
  }
  return results;
}

std::vector<HostTensor> Executable::Run(const std::vector<TensorView>& inputs, int64_t steps,
                                        OutputMode mode, int64_t every_n,
                                        const std::function<bool()>& interrupted) {
  std::lock_guard<std::mutex> lock(mutex_);
  steps_completed_ = 0;
  ValidateFeeds(inputs, steps, mode, every_n);
  for (auto& group : stage_groups_) {
    if (group) group->Reset();
  }
  std::vector<HostTensor> results = MakeResults(steps, mode, every_n);
  const int n = replicas();
  if (!replicated()) {
    device_->Activate();
    std::shared_ptr<void> run_scope = device_->BeginRun();  // CPU: threads on distinct CPUs
    try {
      RunReplica(0, inputs, steps, mode, every_n, results, interrupted, &steps_completed_);
    } catch (...) {
      step_ += static_cast<uint64_t>(steps_completed_);
      throw;
    }
    step_ += static_cast<uint64_t>(steps);
    return results;
  }
  group_->Reset();
  stop_requested_ = false;
  std::vector<int64_t> done(n, 0);
  std::vector<std::exception_ptr> errors(n);
  std::vector<int> order;  // replicas in the order they failed: the first is the cause
  std::mutex order_mutex;
  auto work = [&](int r) {
    DeviceOptions share{std::max(1, device_->threads() / n)};
    CreateDevice(device_->kind(), share)->Activate();  // this thread's share of the device
    try {
      RunReplica(r, inputs, steps, mode, every_n, results, interrupted, &done[r]);
    } catch (...) {
      errors[r] = std::current_exception();
      {
        std::lock_guard<std::mutex> g(order_mutex);
        order.push_back(r);
      }
      group_->Abort("replica " + std::to_string(r) + " of this process failed");
    }
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < n; ++r) threads.emplace_back(work, r);
  work(0);
  for (std::thread& t : threads) t.join();
  device_->Activate();
  steps_completed_ = *std::min_element(done.begin(), done.end());
  step_ += static_cast<uint64_t>(steps_completed_);
  if (!order.empty()) std::rethrow_exception(errors[order.front()]);
  if (stop_requested_) {
    Fail(ErrorKind::kInterrupted, "interrupted after ", steps_completed_, " of ", steps,
         " steps (a step boundary: those steps were applied in full, on every replica)");
  }
  return results;
}

// Whether the run stops before the next step. Replicated: replica 0 asks `interrupted`
// (and the other processes) once, at a barrier all replicas of the process attend.
bool Executable::StopAtStepBoundary(int r, const std::function<bool()>& interrupted) {
  if (!replicated()) {
    if (interrupted && interrupted()) {
      Fail(ErrorKind::kInterrupted, "interrupted after ", steps_completed_, " steps (a step "
           "boundary: those steps were applied in full)");
    }
    return false;
  }
  (void)r;
  group_->Barrier([&] {
    bool stop = interrupted && interrupted();
    if (group_->comm().size() > 1) stop = group_->comm().AnyTrue(stop);
    stop_requested_ = stop;
  });
  return stop_requested_;
}

// Copies step `step`'s slice of every input into slot s's staging.
void Executable::StageInputs(int r, int s, int64_t step, const std::vector<TensorView>& inputs) {
  Slot& slot = replicas_[r].slots[s];
  const int n = replicas();
  for (size_t i = 0; i < inputs.size(); ++i) {
    size_t bytes = slot.staging[i].bytes();
    if (bytes == 0) continue;  // an empty input (null data pointers)
    size_t row = static_cast<size_t>(step) * n + r;  // [steps, replicas, ...] row-major
    std::memcpy(slot.staging[i].data(), static_cast<const uint8_t*>(inputs[i].data) + row * bytes,
                bytes);
  }
}

// Writes step `step`'s outputs (in slot s) into the results, as the output mode says.
void Executable::CopyOutputs(int r, int s, int64_t step, int64_t steps, OutputMode mode,
                             int64_t every_n, std::vector<HostTensor>& results, int segment,
                             const std::vector<char>* in_place) {
  const Replica& rep = replicas_[r];
  const int n = replicas();
  const auto& outs = program_.graph->outputs();
  for (size_t o = 0; o < outs.size(); ++o) {
    if (segment >= 0 && pipeline_.output_segment[o] != segment) continue;
    if (in_place && (*in_place)[o]) continue;  // the step wrote it into the results
    const TensorType& type = outs[o]->type();
    size_t bytes = type.bytes();
    if (bytes == 0) continue;  // empty outputs: nothing to copy (and no pointers to pass)
    const void* src = Resolve(rep, rep.slots[s], program_.outputs[o]);
    uint8_t* dst = static_cast<uint8_t*>(results[o].data());
    size_t r_off = static_cast<size_t>(r) * bytes;  // the replica's row (0 when not replicated)
    switch (mode) {
      case OutputMode::kAll: std::memcpy(dst + (step * n) * bytes + r_off, src, bytes); break;
      case OutputMode::kFinal:
        if (step == steps - 1) std::memcpy(dst + r_off, src, bytes);
        break;
      case OutputMode::kEveryN:
        if ((step + 1) % every_n == 0) {
          std::memcpy(dst + ((step + 1) / every_n - 1) * n * bytes + r_off, src, bytes);
        }
        break;
      case OutputMode::kSum: AccumulateInto(dst + r_off, type, src); break;
    }
  }
}

void Executable::RunReplica(int r, const std::vector<TensorView>& inputs, int64_t steps,
                            OutputMode mode, int64_t every_n, std::vector<HostTensor>& results,
                            const std::function<bool()>& interrupted, int64_t* completed) {
  // Sequential: waves of one step. Pipelined: one wave per optimizer step (or the whole call).
  const int64_t wave = !pipelined() ? 1
                       : pipeline_.micro_batches > 0 && pipeline_.has_backward
                           ? pipeline_.micro_batches
                           : steps;
  const bool remote = pipeline_.my_device >= 0;
  std::vector<uint8_t> counters;  // the optimizer's counters when the wave started
  for (int64_t s = 0; s < steps; s += wave) {
    if (s > 0 && StopAtStepBoundary(r, interrupted)) break;
    SaveOptimizerCounters(r, counters);
    try {
      if (pipelined()) {
        RunWave(r, s, wave, steps, inputs, mode, every_n, results);
      } else {
        const std::vector<char>& in_place = BindStep(r, s, steps, mode, every_n, inputs, results);
        RunOneStep(r, step_ + static_cast<uint64_t>(s));
        CopyOutputs(r, 0, s, steps, mode, every_n, results, -1, &in_place);
      }
    } catch (Error& e) {
      RecastShadows(replicas_[r]);  // the failed step may have updated a weight, not its shadow
      RestoreOptimizerCounters(r, counters);
      if (options_.accumulation_steps > 1 || (pipelined() && pipeline_.has_backward)) {
        DiscardOptimizerStepInProgress(r);
        e.AddContext("the optimizer step in progress was discarded: its gradient accumulators "
                     "and micro-batch counters were reset (running statistics its finished "
                     "micro-batches updated were kept)");
      }
      std::string what = pipelined() ? "in the optimizer step of steps " + std::to_string(s) +
                                           ".." + std::to_string(s + wave - 1)
                                     : "in step " + std::to_string(s);
      e.AddContext(what + " of " + std::to_string(steps) + " (" + std::to_string(s) +
                   " earlier steps of this call were applied)");
      if (replicated()) e.AddContext("in replica " + std::to_string(r));
      throw;
    }
    *completed = s + wave;
  }
  if (remote) {  // every process of the pipeline ends the call with the whole model and outputs
    ShareVariables(pipeline_.updated_variables);
    ShareOutputs(results);
  }
}

// Gradient accumulators and micro-batch counters (autodiff/optimizer.cc names them) are zero
// at every optimizer-step boundary; a wave that failed half-way leaves them zeroed again, so
// the next call starts a whole step, on every device alike.
void Executable::DiscardOptimizerStepInProgress(int r) {
  const auto& vars = program_.graph->variables();
  Replica& rep = replicas_[r];
  for (size_t v = 0; v < vars.size(); ++v) {
    const std::string& name = vars[v]->name();
    bool accumulator = name.size() > 11 && name.compare(name.size() - 11, 11, ".grad_accum") == 0;
    bool counter = name.rfind("optimizer.micro_step", 0) == 0;
    if ((accumulator || counter) && rep.variables[v].bytes() > 0) {
      std::memset(rep.variables[v].data(), 0, rep.variables[v].bytes());
    }
  }
  ++rep.variables_version;
}

void Executable::SaveOptimizerCounters(int r, std::vector<uint8_t>& saved) const {
  saved.clear();
  for (size_t v : optimizer_counters_) {
    const auto& var = replicas_[r].variables[v];
    const auto* bytes = static_cast<const uint8_t*>(var.data());
    saved.insert(saved.end(), bytes, bytes + var.bytes());
  }
}

void Executable::RestoreOptimizerCounters(int r, const std::vector<uint8_t>& saved) {
  size_t at = 0;
  for (size_t v : optimizer_counters_) {
    auto& var = replicas_[r].variables[v];
    if (at + var.bytes() > saved.size()) return;  // not saved (cannot happen)
    std::memcpy(var.data(), saved.data() + at, var.bytes());
    at += var.bytes();
  }
}

RunContext Executable::ContextFor(int r, uint64_t step) const {
  RunContext ctx;
  ctx.seed = seed_;
  // Random ops draw from (seed, step, element): each replica gets a stream of its own.
  ctx.step = replicated() ? step * static_cast<uint64_t>(group_size()) +
                                static_cast<uint64_t>(group_->comm().rank() * replicas() + r)
                          : step;
  ctx.variables_version = replicas_[r].variables_version;
  ctx.collectives = group_.get();
  ctx.replica = r;
  return ctx;
}

void Executable::RunInstructions(int r, int s, size_t begin, size_t end, const RunContext& ctx,
                                 bool applying) {
  Replica& rep = replicas_[r];
  Slot& slot = rep.slots[s];
  const auto& instrs = program_.instructions;
  const bool profile = options_.profile && r == 0;
  const bool skip = !applying && !step_only_instr_.empty();
  // Weight-only results still in the arena from an earlier call with the same variables.
  const bool weights_computed =
      slot.weight_only_ready && slot.weight_only_version == ctx.variables_version;
  for (size_t i = begin; i < end; ++i) {
    if (skip && step_only_instr_[i]) continue;  // this micro-batch does not apply the step
    if (weights_computed && instrs[i].weight_only) continue;
    KernelArgs args{slot.in_ptrs[i].data(), slot.out_ptrs[i].data(), &ctx};
    try {
      if (profile) {
        auto t0 = std::chrono::steady_clock::now();
        rep.kernels[i](args);
        instr_seconds_[i] +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++instr_calls_[i];
      } else {
        rep.kernels[i](args);
      }
    } catch (Error& e) {
      e.AddContext("in node " + instrs[i].node->Describe());  // names the user's file:line
      if (i > first_variable_write_) {
        ++rep.variables_version;  // kernels must not reuse data derived from the old values
        e.AddContext("this step had already updated some variables in place before it failed");
      }
      throw;
    } catch (const std::exception& library) {  // not a tg::Error: e.g. oneDNN's dnnl::error
      Error e(ErrorKind::kRuntime, std::string("kernel failed: ") + library.what());
      e.AddContext("in node " + instrs[i].node->Describe());
      throw e;
    }
  }
}

bool Executable::Applying(int r, int device) const {
  if (micro_counter_of_device_.empty()) return true;
  size_t counter = micro_counter_of_device_[std::min<size_t>(device,
                                                             micro_counter_of_device_.size() - 1)];
  if (counter == SIZE_MAX) return true;  // the device has no optimizer work of its own
  float micro = replicas_[r].variables[counter].as<float>()[0];
  return micro == static_cast<float>(options_.accumulation_steps - 1);
}

void Executable::RunOneStep(int r, uint64_t step) {
  Replica& rep = replicas_[r];
  const bool applying = Applying(r, 0);  // every device's counter agrees here
  const RunContext ctx = ContextFor(r, step);
  RunInstructions(r, 0, 0, program_.instructions.size(), ctx, applying);
  rep.slots[0].weight_only_ready = true;  // the whole program ran: weight-only results too
  rep.slots[0].weight_only_version = ctx.variables_version;
  for (size_t c = 0; c < program_.update_copies.size(); ++c) {
    const UpdateCopy& u = program_.update_copies[c];
    if (!applying && !step_only_copy_.empty() && step_only_copy_[c]) continue;
    if (u.bytes > 0) {
      std::memmove(rep.variables[u.variable].data(), Resolve(rep, rep.slots[0], u.from), u.bytes);
    }
  }
  if (!program_.graph->updates().empty()) ++rep.variables_version;  // updated in place or copied
}

}  // namespace tg
