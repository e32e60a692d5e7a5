#include "devices/device.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "devices/cpu/cpu_device.h"
#include "devices/ipu_model/ipu_model_device.h"
#include "devices/reference/reference_device.h"
#include "support/error.h"
#include "support/host_memory.h"

namespace tg {

DeviceMemory::DeviceMemory(size_t bytes) : bytes_(bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = nullptr;
  try {
    p = AllocateHostMemory(rounded == 0 ? 64 : rounded);
  } catch (const std::bad_alloc&) {
    Fail(ErrorKind::kRuntime, "out of memory allocating ", bytes, " bytes");
  }
  std::memset(p, 0, rounded == 0 ? 64 : rounded);
  data_.reset(p);
}

void DeviceMemory::Free::operator()(void* p) const { FreeHostMemory(p); }

std::unique_ptr<Device> CreateDevice(DeviceKind kind, const DeviceOptions& options) {
  switch (kind) {
    case DeviceKind::kCpu: return std::make_unique<CpuDevice>(options);
    case DeviceKind::kReference: return std::make_unique<ReferenceDevice>();
    case DeviceKind::kIpuModel: return std::make_unique<IpuModelDevice>(options);
  }
  Fail(ErrorKind::kUnsupported, "no device of kind ", DeviceKindName(kind));
}

}  // namespace tg
