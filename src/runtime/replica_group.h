// ReplicaGroup: the collectives of a replicated program (ops/collective.h), for the R
// replicas of this process (threads of one Executable::Run) and, through a Communicator,
// the replicas of the other processes. Hierarchical: the replicas of a process meet at a
// barrier, the last to arrive combines their buffers (in replica order: deterministic) and
// exchanges the process's contribution with the other processes, and all leave together.
//
// Global replica index = process rank * R + local replica. A replica that fails calls
// Abort(): every replica waiting in the group wakes up with an error instead of waiting
// for a partner that will never come.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/collectives/communicator.h"
#include "ops/collective.h"

namespace tg {

class ReplicaGroup : public CollectiveRuntime {
 public:
  ReplicaGroup(int local_replicas, std::shared_ptr<Communicator> comm);

  void Run(int replica, const CollectiveCall& call) override;
  int group_size() const override { return local_ * comm_->size(); }

  // Every replica of the process waits here; `leader_work` runs once (on the last replica
  // to arrive) while the others wait. Rethrows Abort()'s error.
  template <typename Fn>
  void Barrier(Fn&& leader_work);
  void Abort(const std::string& why);  // wakes every waiter with an error
  void Reset();                        // clears an abort before the next run
  Communicator& comm() { return *comm_; }
  int local_replicas() const { return local_; }

 private:
  void Combine(const CollectiveCall& call);  // leader: the collective over all buffers
  void CheckAborted() const;

  int local_;
  std::shared_ptr<Communicator> comm_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  std::string abort_reason_;
  std::vector<const void*> ins_;  // per local replica, for the current collective
  std::vector<void*> outs_;
  std::vector<double> scratch_;   // the process's combined value (grows, never shrinks)
  // Started all-reduces, by the buffer they run in (replica 0's all_reduce_start output).
  std::map<const void*, std::shared_ptr<Communicator::Pending>> in_flight_;
};

template <typename Fn>
void ReplicaGroup::Barrier(Fn&& leader_work) {
  std::unique_lock<std::mutex> lock(mutex_);
  CheckAborted();
  uint64_t gen = generation_;
  if (++arrived_ == local_) {
    try {
      leader_work();
    } catch (...) {
      arrived_ = 0;
      ++generation_;
      aborted_ = true;
      abort_reason_ = "another replica's collective failed";
      cv_.notify_all();
      throw;
    }
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return;
  }
  cv_.wait(lock, [&] { return generation_ != gen || aborted_; });
  CheckAborted();
}

}  // namespace tg
