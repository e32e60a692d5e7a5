// Device: one place where a program's instructions run. A device owns the memory of what
// is placed on it (arenas, variables), says how many threads its kernels may use, and
// copies between itself and the host. Kernels are not the device's business: ops register
// a kernel factory per DeviceKind (ops/registry.h) and lowering picks the one for the kind
// of the device each node is placed on.
//
// Implementations live in a folder each: cpu/ (the fast kernels, an OpenMP thread team),
// reference/ (naive kernels on one thread: the ground truth of the conformance tests);
// an emulated IPU and CUDA devices are to follow the same interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "support/device_kind.h"

namespace tg {

// A block of device memory, 64-byte aligned and zero-filled, freed with its owner.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  explicit DeviceMemory(size_t bytes);
  void* data() const { return data_.get(); }
  size_t bytes() const { return bytes_; }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> data_;
  size_t bytes_ = 0;
};

struct DeviceOptions {
  int threads = 0;  // 0: the device's default (CPU: OpenMP's)
};

class Device {
 public:
  virtual ~Device() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;     // e.g. "cpu (2 threads)"
  virtual int threads() const = 0;
  virtual uint64_t memory_bytes() const = 0;  // capacity; 0 if unknown
  // Zero-filled, aligned memory on the device; throws Runtime when it does not fit.
  virtual DeviceMemory Allocate(size_t bytes) = 0;
  // Host <-> device copies (the host-memory devices just copy).
  virtual void CopyToDevice(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual void CopyToHost(void* host_dst, const void* device_src, size_t bytes) = 0;
  // Called on the thread that is about to run this device's kernels (thread team setup).
  virtual void Activate() = 0;
  // Called on that thread around one run of its kernels; what it returns lives for the run
  // (the CPU device pins the run's thread team to distinct CPUs: kernels/cpu/parallel.h).
  virtual std::shared_ptr<void> BeginRun() { return nullptr; }
};

std::unique_ptr<Device> CreateDevice(DeviceKind kind, const DeviceOptions& options = {});

}  // namespace tg
