// IpuModelDevice: the emulated IPU ("IPU Model"). It executes a program with the CPU kernels
// on the host's cores, so its numbers are exactly the CPU device's; what makes it an IPU is
// at compile time: src/tiles/ maps every tensor and op onto the target's tiles, checks the
// program fits each tile's memory and estimates its cycles (Executable::tile_estimate()).
// Host memory backs the emulation, so its capacity is the host's.
#pragma once

#include "devices/cpu/cpu_device.h"

namespace tg {

class IpuModelDevice : public CpuDevice {
 public:
  explicit IpuModelDevice(const DeviceOptions& options) : CpuDevice(options) {}
  DeviceKind kind() const override { return DeviceKind::kIpuModel; }
  std::string name() const override { return "ipu_model on " + CpuDevice::name(); }
};

}  // namespace tg
