#include "devices/cpu/cpu_device.h"

#include <cstring>

#include "kernels/cpu/machine_limits.h"
#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg {

namespace {
// OpenMP's thread count when the process started (OMP_NUM_THREADS or the cores): devices
// created later default to it, whatever a replica thread set for itself since.
int DefaultThreads() {
  static const int threads = cpu::MaxThreads();
  return threads;
}
}  // namespace

CpuDevice::CpuDevice(const DeviceOptions& options)
    : threads_(options.threads > 0 ? options.threads : DefaultThreads()) {}

std::string CpuDevice::name() const {
  return "cpu (" + std::to_string(threads_) + " thread" + (threads_ == 1 ? ")" : "s)");
}

uint64_t CpuDevice::memory_bytes() const { return cpu::PhysicalMemoryBytes(); }

DeviceMemory CpuDevice::Allocate(size_t bytes) {
  uint64_t capacity = memory_bytes();
  TG_CHECK(capacity == 0 || bytes <= capacity, kRuntime, "cannot allocate ", bytes,
           " bytes on ", name(), ": the machine has ", capacity);
  return DeviceMemory(bytes);
}

void CpuDevice::CopyToDevice(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}

void CpuDevice::CopyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}

void CpuDevice::Activate() { cpu::SetNumThreads(threads_); }

std::shared_ptr<void> CpuDevice::BeginRun() { return std::make_shared<cpu::PinnedTeam>(); }

}  // namespace tg
