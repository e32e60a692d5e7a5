#include "runtime/replica_group.h"

#include <cstring>

#include "support/error.h"

namespace tg {
namespace {

CommDType ToComm(DType d) {
  switch (d) {
    case DType::kF32: return CommDType::kF32;
    case DType::kF64: return CommDType::kF64;
    case DType::kI32: return CommDType::kI32;
    case DType::kI64: return CommDType::kI64;
    default: Fail(ErrorKind::kUnsupported, "collectives on ", DTypeName(d), " tensors");
  }
}

// dst[i] (+)= src[i] in T.
template <typename T>
void Accumulate(T* dst, const T* src, int64_t n, bool first) {
  if (first) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
  }
}

template <typename T>
void Scale(T* p, int64_t n, double s) {
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] * s);
}

}  // namespace

ReplicaGroup::ReplicaGroup(int local_replicas, std::shared_ptr<Communicator> comm)
    : local_(local_replicas),
      comm_(comm ? std::move(comm) : std::make_shared<SingleProcessCommunicator>()),
      ins_(local_replicas, nullptr),
      outs_(local_replicas, nullptr) {
  TG_CHECK(local_ >= 1, kInvalidInput, "replicas must be >= 1, got ", local_);
}

void ReplicaGroup::CheckAborted() const {
  if (aborted_) Fail(ErrorKind::kRuntime, "replica stopped: ", abort_reason_);
}

void ReplicaGroup::Abort(const std::string& why) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!aborted_) {
    aborted_ = true;
    abort_reason_ = why;
  }
  cv_.notify_all();
}

void ReplicaGroup::Reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  // A failed run may have left exchanges in flight: let them land before their buffers are
  // reused (a dead peer makes Wait throw after the deadline; the run is over then anyway).
  for (auto& [buffer, pending] : in_flight_) {
    try {
      pending->Wait();
    } catch (...) {
    }
  }
  in_flight_.clear();
  aborted_ = false;
  abort_reason_.clear();
  arrived_ = 0;
}

void ReplicaGroup::Run(int replica, const CollectiveCall& call) {
  if (call.kind == CollectiveKind::kShard) {  // local: this replica's rows, no meeting
    int64_t global = static_cast<int64_t>(comm_->rank()) * local_ + replica;
    size_t bytes = static_cast<size_t>(call.out_count) * SizeOf(call.dtype);
    std::memcpy(call.out, static_cast<const uint8_t*>(call.in) + global * bytes, bytes);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ins_[replica] = call.in;
    outs_[replica] = call.out;
  }
  Barrier([&] { Combine(call); });
}

void ReplicaGroup::Combine(const CollectiveCall& call) {
  const int rank = comm_->rank(), procs = comm_->size();
  const int64_t group = static_cast<int64_t>(local_) * procs;
  const size_t elem = SizeOf(call.dtype);
  // The scratch holds the process's combined buffer of the widest extent a call needs.
  int64_t extent = call.kind == CollectiveKind::kAllGather ? call.out_count : call.in_count;
  if (scratch_.size() * sizeof(double) < static_cast<size_t>(extent) * elem) {
    scratch_.resize((static_cast<size_t>(extent) * elem + sizeof(double) - 1) / sizeof(double));
  }
  void* scratch = scratch_.data();
  auto dispatch = [&](auto fn) {
    if (call.dtype == DType::kF32) fn(float{});
    else if (call.dtype == DType::kF64) fn(double{});
    else if (call.dtype == DType::kI64) fn(int64_t{});
    else if (call.dtype == DType::kI32) fn(int32_t{});
    else Fail(ErrorKind::kUnsupported, "collectives on ", DTypeName(call.dtype), " tensors");
  };
  switch (call.kind) {
    case CollectiveKind::kAllReduceStart: {
      // The process's sum, in replica 0's output buffer (live until the matching done reads
      // it), sent to the other processes in the background.
      dispatch([&](auto t) {
        using T = decltype(t);
        T* acc = static_cast<T*>(outs_[0]);
        for (int r = 0; r < local_; ++r) {
          Accumulate(acc, static_cast<const T*>(ins_[r]), call.in_count, r == 0);
        }
      });
      in_flight_[outs_[0]] =
          comm_->StartAllReduceSum(outs_[0], call.in_count, ToComm(call.dtype));
      break;
    }
    case CollectiveKind::kAllReduceDone: {
      auto it = in_flight_.find(ins_[0]);
      TG_CHECK(it != in_flight_.end(), kInternal, "all_reduce_done without its start");
      std::shared_ptr<Communicator::Pending> pending = it->second;
      in_flight_.erase(it);
      pending->Wait();
      double scale = call.reduction == Reduction::kMean ? 1.0 / static_cast<double>(group) : 1.0;
      dispatch([&](auto t) {
        using T = decltype(t);
        const T* total = static_cast<const T*>(ins_[0]);
        for (int r = 0; r < local_; ++r) {
          T* out = static_cast<T*>(outs_[r]);
          if (scale == 1.0) {
            if (out != total) std::memcpy(out, total, static_cast<size_t>(call.in_count) * elem);
          } else {
            for (int64_t i = 0; i < call.in_count; ++i) out[i] = static_cast<T>(total[i] * scale);
          }
        }
      });
      break;
    }
    case CollectiveKind::kAllReduce:
    case CollectiveKind::kReduceScatter: {
      dispatch([&](auto t) {
        using T = decltype(t);
        T* acc = static_cast<T*>(scratch);
        for (int r = 0; r < local_; ++r) {
          Accumulate(acc, static_cast<const T*>(ins_[r]), call.in_count, r == 0);
        }
        comm_->AllReduceSum(acc, call.in_count, ToComm(call.dtype));
        if (call.reduction == Reduction::kMean) {
          Scale(acc, call.in_count, 1.0 / static_cast<double>(group));
        }
      });
      for (int r = 0; r < local_; ++r) {
        int64_t offset = call.kind == CollectiveKind::kAllReduce
                             ? 0 : (static_cast<int64_t>(rank) * local_ + r) * call.out_count;
        std::memcpy(outs_[r], static_cast<const uint8_t*>(scratch) + offset * elem,
                    static_cast<size_t>(call.out_count) * elem);
      }
      break;
    }
    case CollectiveKind::kAllGather: {
      // Local replicas' pieces side by side, then every process's block in rank order.
      std::vector<uint8_t> local(static_cast<size_t>(call.in_count) * local_ * elem);
      for (int r = 0; r < local_; ++r) {
        std::memcpy(local.data() + static_cast<size_t>(r) * call.in_count * elem, ins_[r],
                    static_cast<size_t>(call.in_count) * elem);
      }
      comm_->AllGather(local.data(), scratch, call.in_count * local_, ToComm(call.dtype));
      for (int r = 0; r < local_; ++r) {
        std::memcpy(outs_[r], scratch, static_cast<size_t>(call.out_count) * elem);
      }
      break;
    }
    case CollectiveKind::kShard: break;  // handled in Run
    case CollectiveKind::kBroadcast: {
      int root_process = call.root / local_, root_local = call.root % local_;
      if (rank == root_process) {
        std::memcpy(scratch, ins_[root_local], static_cast<size_t>(call.in_count) * elem);
      }
      comm_->Broadcast(scratch, call.in_count, ToComm(call.dtype), root_process);
      for (int r = 0; r < local_; ++r) {
        std::memcpy(outs_[r], scratch, static_cast<size_t>(call.out_count) * elem);
      }
      break;
    }
  }
  (void)group;
}

}  // namespace tg
