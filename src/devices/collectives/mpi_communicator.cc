// The Open MPI communicator (compiled when CMake finds MPI; see communicator.h).
//
// Each collective runs as Open MPI's *blocking* call (which gets its tuned, shared-memory-
// aware algorithms; the non-blocking ones we used first measured 2-6x slower here) on one
// communication thread of the process, while the caller waits for it against a deadline:
// a failed or vanished peer becomes an error after timeout_seconds() rather than a hang.
// (The stuck call itself cannot be cancelled; the caller's error ends the process, and
// MPI_Abort the run.) The thread also lets a collective proceed while the caller computes.
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
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

// One thread that runs MPI calls in submission order.
class CommThread {
 public:
  // Never destroyed (see MpiCommunicator): the thread may be inside a collective that will
  // never finish, and at exit it is simply ended with the process.
  CommThread() : thread_([this] { Loop(); }) { thread_.detach(); }

  struct Task {
    std::function<void()> fn;
    bool finished = false;
    std::exception_ptr error;
  };
  // Queues fn; the returned task is waited for with Wait.
  std::shared_ptr<Task> Submit(std::function<void()> fn) {
    auto task = std::make_shared<Task>();
    task->fn = std::move(fn);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(task);
    }
    cv_.notify_all();
    return task;
  }

  // Returns when the task finished (rethrowing its error), or throws after `seconds`.
  void Wait(const std::shared_ptr<Task>& task, double seconds, const std::string& what) {
    std::unique_lock<std::mutex> lock(mutex_);
    bool finished = done_cv_.wait_for(lock, std::chrono::duration<double>(seconds),
                                      [&] { return task->finished; });
    if (!finished) {
      Fail(ErrorKind::kRuntime, what, " did not complete within ", seconds, " s: another "
           "process failed, was killed or stopped calling the model (its own output says "
           "why); stopping instead of waiting forever");
    }
    if (task->error) std::rethrow_exception(task->error);
  }

  // Runs fn on the thread; returns when it finished, or throws after `seconds`.
  void Run(std::function<void()> fn, double seconds, const std::string& what) {
    Wait(Submit(std::move(fn)), seconds, what);
  }

 private:

  void Loop() {
    for (;;) {
      std::shared_ptr<Task> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return !queue_.empty(); });
        task = queue_.front();
        queue_.pop_front();
      }
      try {
        task->fn();
      } catch (...) {
        task->error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        task->finished = true;
      }
      done_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::shared_ptr<Task>> queue_;
  std::thread thread_;
};

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      TG_CHECK(provided >= MPI_THREAD_SERIALIZED, kRuntime,
               "MPI supports only thread level ", provided, "; tilegraph needs "
               "MPI_THREAD_SERIALIZED (its collectives run on a communication thread)");
      std::atexit(Finalize);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    Start();
  }

  // A channel of `parent`: a duplicate of its MPI communicator, made on the parent's
  // communication thread (a process that never asks for it is a timeout, not a hang).
  explicit MpiCommunicator(MpiCommunicator& parent) {
    ScopedTimeout startup(parent, kStartupTimeoutSeconds);
    parent.Run("communicator duplication", [&] { MPI_Comm_dup(parent.comm_, &comm_); });
    Start();
  }

  // A sub-communicator: MPI_Comm_split of `parent`, on the parent's communication thread.
  MpiCommunicator(MpiCommunicator& parent, int color, int key) {
    ScopedTimeout startup(parent, kStartupTimeoutSeconds);
    parent.Run("communicator split", [&] { MPI_Comm_split(parent.comm_, color, key, &comm_); });
    Start();
  }

  std::shared_ptr<Communicator> Split(int color, int key) override {
    return std::make_shared<MpiCommunicator>(*this, color, key);
  }

  // Point to point runs on the calling thread (MPI_THREAD_MULTIPLE), polled against the
  // deadline, so that a device thread's transfers never queue behind collectives.
  std::shared_ptr<Pending> StartSend(const void* buf, int64_t bytes, int peer,
                                     int tag) override {
    CheckThreadMultiple();
    struct InFlight : Pending {
      MpiCommunicator* self;
      MPI_Request request;
      int peer;
      void Wait() override {
        self->Poll(&request, "a send to process " + std::to_string(peer));
      }
    };
    auto pending = std::make_shared<InFlight>();
    pending->self = this;
    pending->peer = peer;
    MPI_Isend(buf, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_, &pending->request);
    return pending;
  }

  void Recv(void* buf, int64_t bytes, int peer, int tag) override {
    CheckThreadMultiple();
    MPI_Request request;
    MPI_Irecv(buf, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_, &request);
    Poll(&request, "a receive from process " + std::to_string(peer));
  }

  std::shared_ptr<Communicator> Channel(int k) override {
    std::lock_guard<std::mutex> lock(channels_mutex_);
    auto it = channels_.find(k);
    if (it == channels_.end()) it = channels_.emplace(k, std::make_shared<MpiCommunicator>(*this)).first;
    return it->second;
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override {
    return "mpi rank " + std::to_string(rank_) + " of " + std::to_string(size_);
  }

  void AllReduceSum(void* buf, int64_t count, CommDType dtype) override {
    Run("all-reduce", [=] {
      MPI_Allreduce(MPI_IN_PLACE, buf, static_cast<int>(count), ToMpi(dtype), MPI_SUM, comm_);
    });
  }

  std::shared_ptr<Pending> StartAllReduceSum(void* buf, int64_t count,
                                             CommDType dtype) override {
    struct InFlight : Pending {
      MpiCommunicator* self;
      std::shared_ptr<CommThread::Task> task;
      void Wait() override {
        self->thread_->Wait(task, self->timeout_seconds(), self->name() + ": an MPI all-reduce");
      }
    };
    auto pending = std::make_shared<InFlight>();
    pending->self = this;
    pending->task = thread_->Submit([=] {
      MPI_Allreduce(MPI_IN_PLACE, buf, static_cast<int>(count), ToMpi(dtype), MPI_SUM, comm_);
    });
    return pending;
  }

  void AllGather(const void* in, void* out, int64_t count, CommDType dtype) override {
    Run("all-gather", [=] {
      MPI_Allgather(in, static_cast<int>(count), ToMpi(dtype), out, static_cast<int>(count),
                    ToMpi(dtype), comm_);
    });
  }

  void Broadcast(void* buf, int64_t count, CommDType dtype, int root) override {
    Run("broadcast", [=] {
      MPI_Bcast(buf, static_cast<int>(count), ToMpi(dtype), root, comm_);
    });
  }

  bool AnyTrue(bool value) override {
    int v = value ? 1 : 0;
    Run("agreement", [&] { MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, comm_); });
    return v != 0;
  }

 private:
  void Run(const char* what, std::function<void()> fn) {
    thread_->Run(std::move(fn), timeout_seconds(), name() + ": an MPI " + what);
  }

  // Waits for `request` (sleeping between tests: the peer may be computing for long),
  // throwing after timeout_seconds().
  void Poll(MPI_Request* request, const std::string& what) {
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(timeout_seconds()));
    int done = 0;
    for (int spins = 0;; ++spins) {
      MPI_Test(request, &done, MPI_STATUS_IGNORE);
      if (done) return;
      if (std::chrono::steady_clock::now() > deadline) {
        Fail(ErrorKind::kRuntime, name(), ": ", what, " did not complete within ",
             timeout_seconds(), " s: another process failed, was killed or stopped calling "
             "the model (its own output says why); stopping instead of waiting forever");
      }
      if (spins > 100) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  static void CheckThreadMultiple() {
    int provided = 0;
    MPI_Query_thread(&provided);
    TG_CHECK(provided >= MPI_THREAD_MULTIPLE, kUnsupported, "this MPI provides thread level ",
             provided, "; pipeline stages in different processes need MPI_THREAD_MULTIPLE");
  }

  void Start() {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    if (const char* t = std::getenv("TILEGRAPH_COLLECTIVE_TIMEOUT")) {
      set_timeout_seconds(std::atof(t));
    }
    thread_ = new CommThread();  // intentionally leaked: see CommThread
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  CommThread* thread_ = nullptr;
  std::mutex channels_mutex_;
  std::map<int, std::shared_ptr<Communicator>> channels_;  // channel k (never freed: see CommThread)
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
