// numpy arrays <-> tilegraph tensors for the nanobind module (shared by _core.cc and
// _core_onnx.cc): views without copies on the way in, ownership handed to numpy on the way out.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <vector>

#include "ir/host_tensor.h"
#include "runtime/executable.h"

namespace tg::py {

namespace nb = nanobind;

inline DType DTypeFromNumpy(const nb::dlpack::dtype& dt) {
  using nb::dlpack::dtype_code;
  auto code = static_cast<dtype_code>(dt.code);
  if (code == dtype_code::Float && dt.bits == 32) return DType::kF32;
  if (code == dtype_code::Float && dt.bits == 64) return DType::kF64;
  if (code == dtype_code::Float && dt.bits == 16) return DType::kF16;
  if (code == dtype_code::Bfloat && dt.bits == 16) return DType::kBF16;
  if (code == dtype_code::Int && dt.bits == 64) return DType::kI64;
  if (code == dtype_code::Int && dt.bits == 32) return DType::kI32;
  if (code == dtype_code::Bool) return DType::kBool;
  if (code == dtype_code::UInt && dt.bits == 8) return DType::kU8;
  if (code == dtype_code::Int && dt.bits == 8) return DType::kI8;
  if (code == dtype_code::Int && dt.bits == 16) return DType::kI16;
  // numpy has no bfloat16: bf16 travels as its uint16 bits both ways (see ToNumpy).
  if (code == dtype_code::UInt && dt.bits == 16) return DType::kBF16;
  throw nb::type_error("unsupported array dtype");
}

// Read-only: feeds are only read (numpy arrays over immutable buffers are accepted).
using Array = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;

inline TensorView ViewOf(const Array& a) {
  TensorView v;
  v.data = a.data();
  v.type.dtype = DTypeFromNumpy(a.dtype());
  for (size_t i = 0; i < a.ndim(); ++i) v.type.shape.push_back(static_cast<int64_t>(a.shape(i)));
  return v;
}

inline HostTensor TensorOf(const Array& a) {
  TensorView v = ViewOf(a);
  return HostTensor(v.type, v.data);
}

// numpy's element type for a DType. numpy has no bfloat16: bf16 is shown as its uint16 bits
// (tilegraph._engine_io views them as torch.bfloat16).
inline nb::dlpack::dtype NumpyDTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF32: return nb::dtype<float>();
    case DType::kF64: return nb::dtype<double>();
    case DType::kI64: return nb::dtype<int64_t>();
    case DType::kI32: return nb::dtype<int32_t>();
    case DType::kBool: return nb::dtype<bool>();
    case DType::kU8: return nb::dtype<uint8_t>();
    case DType::kI8: return nb::dtype<int8_t>();
    case DType::kI16: return nb::dtype<int16_t>();
    case DType::kF16: return {static_cast<uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
    case DType::kBF16: return nb::dtype<uint16_t>();
  }
  return nb::dtype<uint8_t>();
}

// Hands a HostTensor to numpy without copying.
inline nb::object ToNumpy(HostTensor t) {
  auto* owned = new HostTensor(std::move(t));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<HostTensor*>(p); });
  std::vector<size_t> shape(owned->type().shape.begin(), owned->type().shape.end());
  nb::ndarray<nb::numpy> arr(owned->data(), shape.size(), shape.data(), owner, nullptr,
                             NumpyDTypeOf(owned->type().dtype));
  return nb::cast(arr);
}

}  // namespace tg::py
