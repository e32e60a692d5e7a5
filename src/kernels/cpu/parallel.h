// Intra-op parallelism for hand-written CPU kernels: OpenMP underneath (the same runtime
// oneDNN uses here, so the two share one thread pool). Work below `grain` elements runs
// inline on the calling thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tg::cpu {

int MaxThreads();
void SetNumThreads(int n);

// Pins the calling thread's OpenMP team while it lives: team thread t runs on the t-th CPU
// the calling thread may run on; the calling thread's own CPU set comes back at the end (the
// team's worker threads stay pinned: they run OpenMP work only). Nothing happens with one
// thread, with fewer allowed CPUs than threads, inside a parallel region, or with
// TILEGRAPH_PIN_THREADS=0. Why: on the 2-vCPU VMs we run on, Linux at times keeps both
// threads of a team on one CPU for seconds; every barrier then waits for a time slice
// (Wav2Vec2 inference: 3.3 ms calls took 13.4 ms, with CPU time equal to wall time and
// involuntary switches in every call); pinned, every call ran at 3.2-3.5 ms.
class PinnedTeam {
 public:
  PinnedTeam();
  ~PinnedTeam();
  PinnedTeam(const PinnedTeam&) = delete;
  PinnedTeam& operator=(const PinnedTeam&) = delete;

 private:
  bool pinned_ = false;
  unsigned char saved_[128] = {};  // the calling thread's cpu_set_t
};

// Calls fn(begin, end) over disjoint chunks covering [0, n). An exception thrown by fn (a
// kernel's bad-index check) is rethrown on the calling thread after the parallel region
// (one escaping an OpenMP region would terminate the process).
template <typename Fn>
void ParallelFor(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
#ifdef _OPENMP
  int threads = static_cast<int>(std::min<int64_t>(MaxThreads(), (n + grain - 1) / grain));
  if (threads > 1 && !omp_in_parallel()) {
    std::exception_ptr error;
#pragma omp parallel num_threads(threads)
    {
      int t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t chunk = (n + nt - 1) / nt;
      int64_t b = std::min<int64_t>(n, t * chunk), e = std::min<int64_t>(n, b + chunk);
      try {
        if (b < e) fn(b, e);
      } catch (...) {
#pragma omp critical(tg_parallel_for_error)
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
#endif
  fn(int64_t{0}, n);
}

}  // namespace tg::cpu
