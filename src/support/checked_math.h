// Overflow-checked int64 arithmetic for shape computations whose operands come from IR text
// or files (dims, strides, paddings): an overflow is a Shape error, never undefined behaviour.
#pragma once

#include <cstdint>

#include "support/error.h"

namespace tg {

inline int64_t MulChecked(int64_t a, int64_t b) {
  int64_t r = 0;
  TG_CHECK(!__builtin_mul_overflow(a, b, &r), kShape, "integer overflow in shape arithmetic: ",
           a, " * ", b);
  return r;
}

inline int64_t AddChecked(int64_t a, int64_t b) {
  int64_t r = 0;
  TG_CHECK(!__builtin_add_overflow(a, b, &r), kShape, "integer overflow in shape arithmetic: ",
           a, " + ", b);
  return r;
}

inline int64_t SubChecked(int64_t a, int64_t b) {
  int64_t r = 0;
  TG_CHECK(!__builtin_sub_overflow(a, b, &r), kShape, "integer overflow in shape arithmetic: ",
           a, " - ", b);
  return r;
}

}  // namespace tg
