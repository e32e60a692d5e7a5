// Collectives across replicas, as the kernels of collective ops see them.
//
// A replicated program is SPMD: every replica runs the same instructions on its own data.
// A collective op's kernel hands its operands to the CollectiveRuntime of the run
// (RunContext::collectives), which the runtime implements: it meets the other replicas of
// the process (threads) and, through a Communicator, the other processes (MPI), and returns
// when this replica's output is ready. Without a runtime (one replica, one process) each
// collective is what it is for a group of one: a copy.
#pragma once

#include <cstdint>

#include "ir/dtype.h"

namespace tg {

// kShard is no communication: each replica takes its own rows of a replicated tensor (the
// runtime knows the replica's global index), as sharded optimizer state needs.
// kAllReduceStart / kAllReduceDone split an all-reduce in two so that computation placed
// between them overlaps the exchange between processes: start combines the replicas of the
// process and launches the exchange, done waits for it and delivers the result.
enum class CollectiveKind {
  kAllReduce, kReduceScatter, kAllGather, kBroadcast, kShard, kAllReduceStart, kAllReduceDone
};
enum class Reduction { kSum, kMean };

struct CollectiveCall {
  CollectiveKind kind = CollectiveKind::kAllReduce;
  Reduction reduction = Reduction::kSum;
  int root = 0;             // broadcast: the replica whose value everyone receives
  DType dtype = DType::kF32;
  const void* in = nullptr;
  void* out = nullptr;
  int64_t in_count = 0;     // elements of this replica's input
  int64_t out_count = 0;    // elements of this replica's output
};

class CollectiveRuntime {
 public:
  virtual ~CollectiveRuntime() = default;
  // Runs `call` for replica `replica` (of this process); blocks until its output is ready.
  virtual void Run(int replica, const CollectiveCall& call) = 0;
  // Replicas in the whole group (all processes).
  virtual int group_size() const = 0;
};

}  // namespace tg
