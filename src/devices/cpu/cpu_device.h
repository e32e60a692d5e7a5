// CpuDevice: the host CPU. Memory is host memory (capacity: the machine's physical memory);
// kernels run on an OpenMP thread team of `threads` threads, set when the device is
// activated on the calling thread.
#pragma once

#include "devices/device.h"

namespace tg {

class CpuDevice : public Device {
 public:
  explicit CpuDevice(const DeviceOptions& options);
  DeviceKind kind() const override { return DeviceKind::kCpu; }
  std::string name() const override;
  int threads() const override { return threads_; }
  uint64_t memory_bytes() const override;
  DeviceMemory Allocate(size_t bytes) override;
  void CopyToDevice(void* dst, const void* src, size_t bytes) override;
  void CopyToHost(void* dst, const void* src, size_t bytes) override;
  void Activate() override;
  std::shared_ptr<void> BeginRun() override;

 private:
  int threads_ = 1;
};

}  // namespace tg
