// ReferenceDevice: host memory and the naive reference kernels on one thread. It exists so
// that a whole program, not only one op, can be run on the ground-truth kernels and compared
// with another device (the conformance tests; debugging a suspected fast-kernel bug).
#pragma once

#include <cstring>

#include "devices/device.h"

namespace tg {

class ReferenceDevice : public Device {
 public:
  DeviceKind kind() const override { return DeviceKind::kReference; }
  std::string name() const override { return "reference (1 thread)"; }
  int threads() const override { return 1; }
  uint64_t memory_bytes() const override { return 0; }
  DeviceMemory Allocate(size_t bytes) override { return DeviceMemory(bytes); }
  void CopyToDevice(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  void CopyToHost(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  void Activate() override {}
};

}  // namespace tg
