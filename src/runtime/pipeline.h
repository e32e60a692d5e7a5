// The pipelined schedule: one thread per device (pipeline stage), micro-batches flowing
// through the devices concurrently.
//
// A wave is one optimizer step: M micro-batches (the gradient accumulation count), each
// crossing the 2S segments of parallel/pipeline_order.h in order. Device d runs its
// segments in 1F1B order (PipeDream-Flush): S-1-d warm-up forwards, then one forward and
// one backward alternately, then the remaining backwards. We chose 1F1B over GPipe's "all
// forwards, then all backwards" because it has the same bubble, (S-1)/(M+S-1), but keeps
// at most S micro-batches in flight instead of M, so activation memory does not grow with
// the accumulation count. The wave ends with a flush: the optimizer update, on the last
// micro-batch, sees every gradient, and the next wave starts from updated weights.
//
// Micro-batch m works in slot m % S (its own arena and input staging): micro-batch m + S
// starts on device 0 only after m's last segment, which is device 0's backward. A program
// with no backward (inference) has its segments flow forward only; there micro-batch
// m + S explicitly waits for m to finish.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace tg {

// One segment run of a device's schedule.
struct SegmentRun {
  bool backward = false;
  int micro = 0;
};

// Device `device`'s 1F1B order for one wave of `micro_batches` over `stages` devices.
std::vector<SegmentRun> OneForwardOneBackward(int device, int stages, int micro_batches,
                                              bool has_backward);

struct PipelineStats {
  std::vector<double> busy_seconds;  // per device: time spent running its segments
  double wall_seconds = 0;           // time of the waves (flushes included)
  int64_t waves = 0;
  int64_t micro_batches = 0;
};

// Completion of the segments of the micro-batches of one wave (of one replica), and the
// error that ends it: a device waits for the segment before its own, and gives up when
// another device failed.
class WaveProgress {
 public:
  explicit WaveProgress(int segments) : done_(segments, 0) {}
  // Waits until segment `segment` has finished micro-batch `micro` (segments finish their
  // micro-batches in order). Throws when the wave failed.
  void WaitDone(int segment, int micro);
  void MarkDone(int segment, int micro);
  void Fail(const std::string& why);  // wakes every waiter

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<int> done_;  // segment -> micro-batches finished
  bool failed_ = false;
  std::string why_;
};

}  // namespace tg
