// DeviceKind: the kinds of device a kernel can be written for. An op registers one kernel
// factory per kind it supports (OpDef::kernels); lowering picks the factory of the kind of
// the device each node is placed on; src/devices/ implements the devices themselves.
//   kCpu:       the fast CPU kernels (oneDNN, vectorized and OpenMP-parallel loops).
//   kReference: naive kernels, the ground truth that every other kind is tested against
//               (Glow's interpreter backend plays this role).
//   kIpuModel:  the emulated IPU (src/devices/ipu_model/): it executes with the CPU kernels, so
//               its numbers are the CPU's, and adds the tile machine's memory fit and cycle
//               estimates (src/tiles/). It has no kernels of its own: KernelLibraryOf.
#pragma once

#include <optional>
#include <string>

namespace tg {

enum class DeviceKind { kCpu, kReference, kIpuModel };

inline const char* DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kReference: return "reference";
    case DeviceKind::kIpuModel: return "ipu_model";
  }
  return "?";
}

inline std::optional<DeviceKind> ParseDeviceKind(const std::string& name) {
  if (name == "cpu") return DeviceKind::kCpu;
  if (name == "reference") return DeviceKind::kReference;
  if (name == "ipu_model") return DeviceKind::kIpuModel;
  return std::nullopt;
}

// The kind whose kernels a device runs (the IPU Model runs the CPU's).
inline DeviceKind KernelLibraryOf(DeviceKind kind) {
  return kind == DeviceKind::kIpuModel ? DeviceKind::kCpu : kind;
}

}  // namespace tg
