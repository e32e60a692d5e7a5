// An integer tensor's storage read as int64 (int32 or int64 elements): the lengths, labels and
// batch vectors kernels take in either width.
#pragma once

#include <cstdint>

namespace tg::cpu {

struct IntView {
  const void* data = nullptr;
  bool is64 = true;
  int64_t operator[](int64_t i) const {
    return is64 ? static_cast<const int64_t*>(data)[i]
                : static_cast<int64_t>(static_cast<const int32_t*>(data)[i]);
  }
};

}  // namespace tg::cpu
