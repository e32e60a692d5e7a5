#include "kernels/cpu/parallel.h"

#include <pthread.h>
#include <sched.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace tg::cpu {

int MaxThreads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void SetNumThreads(int n) {
#ifdef _OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

static_assert(sizeof(cpu_set_t) <= 128, "PinnedTeam::saved_ holds a cpu_set_t");

namespace {
// The CPU this thread was pinned to by a PinnedTeam (-1: none), so that a worker that stays
// pinned is not pinned again on every run.
thread_local int pinned_cpu = -1;

bool PinSelf(int cpu) {
  if (pinned_cpu == cpu) return true;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0) return false;
  pinned_cpu = cpu;
  return true;
}
}  // namespace

PinnedTeam::PinnedTeam() {
#ifdef _OPENMP
  const char* env = std::getenv("TILEGRAPH_PIN_THREADS");
  if (env != nullptr && std::string(env) == "0") return;
  const int threads = omp_get_max_threads();
  if (threads < 2 || omp_in_parallel()) return;
  cpu_set_t saved;
  if (pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) != 0) return;
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE && static_cast<int>(cpus.size()) < threads; ++c) {
    if (CPU_ISSET(c, &saved)) cpus.push_back(c);
  }
  if (static_cast<int>(cpus.size()) < threads) return;
  std::memcpy(saved_, &saved, sizeof saved);
  pinned_cpu = -1;  // the calling thread's set is restored after every run
#pragma omp parallel num_threads(threads)
  PinSelf(cpus[omp_get_thread_num()]);
  pinned_ = true;
#endif
}

PinnedTeam::~PinnedTeam() {
  if (!pinned_) return;
  cpu_set_t saved;
  std::memcpy(&saved, saved_, sizeof saved);
  pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
  pinned_cpu = -1;
}

}  // namespace tg::cpu
