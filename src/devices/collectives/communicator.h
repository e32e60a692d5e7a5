// Communicator: collectives between the processes of a distributed run (one per process;
// the replicas inside a process are combined by the runtime first, see
// runtime/replica_group.h). Implementations: a group of one process (no communication) and
// Open MPI (mpi_communicator.cc, built when MPI is found), over MPI_COMM_WORLD.
//
// Every operation is bounded in time: when the other processes do not all arrive within
// timeout_seconds() (one of them failed, was killed or is stuck), it throws a Runtime error
// naming this process and the operation, instead of hanging. The default, 45 s (or
// TILEGRAPH_COLLECTIVE_TIMEOUT), bounds the collectives of a step; start-up checks, which
// wait for the slowest process to compile, allow kStartupTimeoutSeconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tg {

enum class CommDType { kF32, kF64, kI32, kI64, kU8 };
size_t CommDTypeSize(CommDType dtype);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "mpi rank 1 of 4", "single process"
  // buf (count elements) <- its sum over the processes.
  virtual void AllReduceSum(void* buf, int64_t count, CommDType dtype) = 0;
  // The same, started now and completed by Wait() on the returned handle (buf must stay
  // untouched until then): computation proceeds while the processes exchange it.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void Wait() = 0;  // throws like the blocking call (deadline included)
  };
  virtual std::shared_ptr<Pending> StartAllReduceSum(void* buf, int64_t count, CommDType dtype);
  // out (size() * count elements) <- every process's `in` (count elements), in rank order.
  virtual void AllGather(const void* in, void* out, int64_t count, CommDType dtype) = 0;
  // buf <- process `root`'s buf.
  virtual void Broadcast(void* buf, int64_t count, CommDType dtype, int root) = 0;
  // Whether any process passed true (e.g. an interrupt seen by one process stops all).
  virtual bool AnyTrue(bool value) = 0;
  // Channel k (k >= 1): a communicator over the same processes whose collectives never mix
  // with this one's or another channel's, so that independent threads (the devices of a
  // pipelined program) can run collectives at the same time. Created the first time it is
  // asked for, collectively (every process asks for the same channels in the same order),
  // then reused. The default serves a group of one process.
  virtual std::shared_ptr<Communicator> Channel(int k);
  // The processes that pass the same `color`, ranked by `key` (collective over this one).
  virtual std::shared_ptr<Communicator> Split(int color, int key);
  // Point to point (pipeline stages in different processes): bytes to / from process
  // `peer` of this communicator. Messages with one (peer, tag) arrive in the order sent.
  // The send proceeds in the background (buf untouched until Wait); Recv returns when the
  // bytes arrived, or throws after timeout_seconds(). They may be called from any thread.
  virtual std::shared_ptr<Pending> StartSend(const void* buf, int64_t bytes, int peer, int tag);
  virtual void Recv(void* buf, int64_t bytes, int peer, int tag);

  static constexpr double kStartupTimeoutSeconds = 600.0;
  double timeout_seconds() const { return timeout_seconds_; }
  void set_timeout_seconds(double s) { timeout_seconds_ = s; }

 private:
  double timeout_seconds_ = 45.0;
};

// Sets a communicator's timeout for a scope (start-up collectives).
class ScopedTimeout {
 public:
  ScopedTimeout(Communicator& comm, double seconds) : comm_(comm), saved_(comm.timeout_seconds()) {
    comm_.set_timeout_seconds(seconds);
  }
  ~ScopedTimeout() { comm_.set_timeout_seconds(saved_); }

 private:
  Communicator& comm_;
  double saved_;
};

// One process: every collective is the identity.
class SingleProcessCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single process"; }
  void AllReduceSum(void*, int64_t, CommDType) override {}
  void AllGather(const void* in, void* out, int64_t count, CommDType dtype) override;
  void Broadcast(void*, int64_t, CommDType, int) override {}
  bool AnyTrue(bool value) override { return value; }
};

// Whether this build has MPI.
bool MpiAvailable();
// The process group of an MPI launch (MPI_COMM_WORLD; MPI is initialized on first use and
// finalized at exit). Throws Unsupported when the build has no MPI.
std::shared_ptr<Communicator> MpiWorld();
// Ends every process of the MPI launch at once (MPI_Abort on MPI_COMM_WORLD): what a process
// that cannot go on does, so that the others stop now instead of at their next timeout.
[[noreturn]] void MpiAbort(int code);

}  // namespace tg
