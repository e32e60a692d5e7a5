// The Open MPI communicator (compiled when CMake finds MPI; see communicator.h). Collectives
// are MPI's non-blocking ones, completed by polling MPI_Test against a deadline so that a
// failed or vanished peer becomes an error after timeout_seconds() rather than a hang.
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "devices/collectives/communicator.h"
#include "support/error.h"

#ifdef TILEGRAPH_HAVE_MPI
#include <mpi.h>
#endif

namespace tg {

#ifdef TILEGRAPH_HAVE_MPI
namespace {

MPI_Datatype ToMpi(CommDType dtype) {
  switch (dtype) {
    case CommDType::kF32: return MPI_FLOAT;
    case CommDType::kF64: return MPI_DOUBLE;
    case CommDType::kI32: return MPI_INT32_T;
    case CommDType::kI64: return MPI_INT64_T;
    case CommDType::kU8: return MPI_UINT8_T;
  }
  return MPI_BYTE;
}

void Finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // Runs call MPI from one worker thread at a time: serialized is enough.
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      TG_CHECK(provided >= MPI_THREAD_SERIALIZED, kRuntime,
               "MPI does not support MPI_THREAD_SERIALIZED (got level ", provided, ")");
      std::atexit(Finalize);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    if (const char* t = std::getenv("TILEGRAPH_COLLECTIVE_TIMEOUT")) {
      set_timeout_seconds(std::atof(t));
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override {
    return "mpi rank " + std::to_string(rank_) + " of " + std::to_string(size_);
  }

  void AllReduceSum(void* buf, int64_t count, CommDType dtype) override {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, buf, static_cast<int>(count), ToMpi(dtype), MPI_SUM, comm_, &r);
    Wait(r, "all-reduce");
  }

  void AllGather(const void* in, void* out, int64_t count, CommDType dtype) override {
    MPI_Request r;
    MPI_Iallgather(in, static_cast<int>(count), ToMpi(dtype), out, static_cast<int>(count),
                   ToMpi(dtype), comm_, &r);
    Wait(r, "all-gather");
  }

  void Broadcast(void* buf, int64_t count, CommDType dtype, int root) override {
    MPI_Request r;
    MPI_Ibcast(buf, static_cast<int>(count), ToMpi(dtype), root, comm_, &r);
    Wait(r, "broadcast");
  }

  bool AnyTrue(bool value) override {
    int v = value ? 1 : 0;
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, comm_, &r);
    Wait(r, "agreement");
    return v != 0;
  }

 private:
  // Polls the request until it completes or the deadline passes.
  void Wait(MPI_Request& r, const char* what) {
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration<double>(timeout_seconds());
    int done = 0;
    for (int spin = 0;; ++spin) {
      MPI_Test(&r, &done, MPI_STATUS_IGNORE);
      if (done) return;
      if (std::chrono::steady_clock::now() > deadline) {
        Fail(ErrorKind::kRuntime, name(), ": an MPI ", what, " did not complete within ",
             timeout_seconds(), " s: another process failed, was killed or stopped calling "
             "the model (its own output says why); stopping instead of waiting forever");
      }
      if (spin > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool MpiAvailable() { return true; }

void MpiAbort(int code) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::shared_ptr<Communicator> MpiWorld() {
  static std::mutex mutex;
  static std::shared_ptr<Communicator> world;
  std::lock_guard<std::mutex> lock(mutex);
  if (!world) world = std::make_shared<MpiCommunicator>();
  return world;
}

#else

bool MpiAvailable() { return false; }

void MpiAbort(int code) { std::_Exit(code); }

std::shared_ptr<Communicator> MpiWorld() {
  Fail(ErrorKind::kUnsupported, "this tilegraph was built without MPI (install "
       "libopenmpi-dev and rebuild) and cannot run across processes");
}

#endif

}  // namespace tg
