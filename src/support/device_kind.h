// DeviceKind: the kinds of device a kernel can be written for. An op registers one kernel
// factory per kind it supports (OpDef::kernels); lowering picks the factory of the kind of
// the device each node is placed on; src/devices/ implements the devices themselves.
//   kCpu:       the fast CPU kernels (oneDNN, vectorized and OpenMP-parallel loops).
//   kReference: naive kernels, the ground truth that every other kind is tested against
//               (Glow's interpreter backend plays this role).
#pragma once

#include <optional>
#include <string>

namespace tg {

enum class DeviceKind { kCpu, kReference };

inline const char* DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kReference: return "reference";
  }
  return "?";
}

inline std::optional<DeviceKind> ParseDeviceKind(const std::string& name) {
  if (name == "cpu") return DeviceKind::kCpu;
  if (name == "reference") return DeviceKind::kReference;
  return std::nullopt;
}

}  // namespace tg
