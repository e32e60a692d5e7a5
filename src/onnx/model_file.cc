#include "onnx/model_file.h"

#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "support/checked_math.h"
#include "support/error.h"

namespace tg {

onnx::ModelProto ParseOnnxModel(const void* data, size_t size) {
  TG_CHECK(size <= static_cast<size_t>(std::numeric_limits<int>::max()), kParse,
           "ONNX model of ", size, " bytes: protobuf messages are limited to 2 GiB");
  onnx::ModelProto model;
  bool ok = AsTgError(ErrorKind::kParse, "ONNX protobuf", [&] {
    return model.ParseFromArray(data, static_cast<int>(size));
  });
  TG_CHECK(ok, kParse, "not a valid ONNX model: the ModelProto could not be parsed (",
           size, " bytes; truncated or not an .onnx file)");
  TG_CHECK(model.has_graph(), kParse, "the ONNX model has no graph");
  return model;
}

onnx::ModelProto LoadOnnxModel(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TG_CHECK(in.good(), kInvalidInput, "cannot open ONNX model '", path, "'");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::string s = bytes.str();
  try {
    return ParseOnnxModel(s.data(), s.size());
  } catch (Error& e) {
    e.AddContext("in ONNX file '" + path + "'");
    throw;
  }
}

void SaveOnnxModel(const onnx::ModelProto& model, const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  TG_CHECK(out.good(), kInvalidInput, "cannot write ONNX model '", path, "'");
  TG_CHECK(model.SerializeToOstream(&out), kRuntime, "writing ONNX model '", path, "' failed");
}

std::optional<DType> DTypeFromOnnx(int t) {
  using P = onnx::TensorProto;
  switch (t) {
    case P::FLOAT: return DType::kF32;
    case P::DOUBLE: return DType::kF64;
    case P::FLOAT16: return DType::kF16;
    case P::BFLOAT16: return DType::kBF16;
    case P::INT64: return DType::kI64;
    case P::INT32: case P::INT16: case P::INT8: case P::UINT8: case P::UINT16: return DType::kI32;
    case P::UINT32: return DType::kI64;
    case P::BOOL: return DType::kBool;
    default: return std::nullopt;
  }
}

int OnnxTypeOf(DType dtype) {
  using P = onnx::TensorProto;
  switch (dtype) {
    case DType::kF32: return P::FLOAT;
    case DType::kF64: return P::DOUBLE;
    case DType::kF16: return P::FLOAT16;
    case DType::kBF16: return P::BFLOAT16;
    case DType::kI64: return P::INT64;
    case DType::kI32: return P::INT32;
    case DType::kBool: return P::BOOL;
    case DType::kU8: return P::UINT8;
    case DType::kI8: return P::INT8;
    case DType::kI16: return P::INT16;
  }
  return P::UNDEFINED;
}

std::string OnnxTypeName(int t) {
  return onnx::TensorProto::DataType_IsValid(t)
             ? onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(t))
             : "type " + std::to_string(t);
}

namespace {

// Bytes per element of the ONNX type as stored in raw_data.
size_t RawElementSize(int t) {
  using P = onnx::TensorProto;
  switch (t) {
    case P::DOUBLE: case P::INT64: case P::UINT64: return 8;
    case P::FLOAT: case P::INT32: case P::UINT32: return 4;
    case P::FLOAT16: case P::BFLOAT16: case P::INT16: case P::UINT16: return 2;
    case P::INT8: case P::UINT8: case P::BOOL: return 1;
    default: return 0;
  }
}

// Element i of little-endian raw data of ONNX type t, as double (exact for the types read).
double RawElement(const char* raw, int t, int64_t i) {
  using P = onnx::TensorProto;
  auto load = [&](auto zero) {
    decltype(zero) v;
    std::memcpy(&v, raw + i * sizeof(v), sizeof(v));
    return v;
  };
  switch (t) {
    case P::INT16: return load(int16_t{});
    case P::INT8: return load(int8_t{});
    case P::UINT8: return load(uint8_t{});
    case P::UINT16: return load(uint16_t{});
    case P::UINT32: return load(uint32_t{});
    case P::BOOL: return load(uint8_t{}) != 0;
    default: return 0;
  }
}

}  // namespace

HostTensor TensorFromProto(const onnx::TensorProto& p) {
  const std::string name = p.name().empty() ? "(unnamed)" : "'" + p.name() + "'";
  TG_CHECK(p.data_location() != onnx::TensorProto::EXTERNAL && p.external_data_size() == 0,
           kUnsupported, "ONNX tensor ", name, " keeps its data in an external file; tilegraph "
           "reads only self-contained models (save with onnx.save(model, path, "
           "save_as_external_data=False))");
  std::optional<DType> dtype = DTypeFromOnnx(p.data_type());
  TG_CHECK(dtype.has_value(), kUnsupported, "ONNX tensor ", name, " has element type ",
           OnnxTypeName(p.data_type()), ", which tilegraph has no dtype for");
  Shape shape;
  for (int64_t d : p.dims()) {
    TG_CHECK(d >= 0, kParse, "ONNX tensor ", name, " has a negative dimension ", d);
    shape.push_back(d);
  }
  TensorType type{*dtype, shape};
  AsTgError(ErrorKind::kParse, "ONNX tensor size", [&] { type.CheckSize(); });
  const int64_t n = type.numel();
  HostTensor t(type);
  const int onnx_type = p.data_type();
  if (p.has_raw_data()) {
    const std::string& raw = p.raw_data();
    size_t elem = RawElementSize(onnx_type);
    TG_CHECK(raw.size() == elem * static_cast<size_t>(n), kParse, "ONNX tensor ", name, " (",
             type.ToString(), ") has ", raw.size(), " bytes of raw data, expected ",
             elem * static_cast<size_t>(n));
    if (elem == SizeOf(*dtype) && onnx_type != onnx::TensorProto::BOOL) {
      if (n > 0) std::memcpy(t.data(), raw.data(), raw.size());
    } else {
      for (int64_t i = 0; i < n; ++i) t.SetFromDouble(i, RawElement(raw.data(), onnx_type, i));
    }
    return t;
  }
  // Typed fields: float_data (FLOAT), double_data, int64_data, int32_data (everything of 32
  // bits or less, float16 / bfloat16 as their bits).
  using P = onnx::TensorProto;
  auto expect = [&](int64_t have) {
    TG_CHECK(have == n, kParse, "ONNX tensor ", name, " (", type.ToString(), ") holds ", have,
             " values, expected ", n);
  };
  switch (onnx_type) {
    case P::FLOAT:
      expect(p.float_data_size());
      for (int64_t i = 0; i < n; ++i) t.as<float>()[i] = p.float_data(static_cast<int>(i));
      break;
    case P::DOUBLE:
      expect(p.double_data_size());
      for (int64_t i = 0; i < n; ++i) t.as<double>()[i] = p.double_data(static_cast<int>(i));
      break;
    case P::INT64:
      expect(p.int64_data_size());
      for (int64_t i = 0; i < n; ++i) t.as<int64_t>()[i] = p.int64_data(static_cast<int>(i));
      break;
    case P::UINT32:
      expect(p.uint64_data_size());
      for (int64_t i = 0; i < n; ++i) t.as<int64_t>()[i] = static_cast<int64_t>(p.uint64_data(static_cast<int>(i)));
      break;
    case P::FLOAT16: case P::BFLOAT16:
      expect(p.int32_data_size());
      for (int64_t i = 0; i < n; ++i)
        t.as<uint16_t>()[i] = static_cast<uint16_t>(p.int32_data(static_cast<int>(i)));
      break;
    default:  // int32 and narrower, bool: int32_data
      expect(p.int32_data_size());
      for (int64_t i = 0; i < n; ++i) t.SetFromDouble(i, p.int32_data(static_cast<int>(i)));
      break;
  }
  return t;
}

onnx::TensorProto TensorToProto(const HostTensor& tensor, const std::string& name) {
  onnx::TensorProto p;
  p.set_name(name);
  p.set_data_type(OnnxTypeOf(tensor.type().dtype));
  for (int64_t d : tensor.type().shape) p.add_dims(d);
  p.set_raw_data(tensor.data(), tensor.bytes());
  return p;
}

}  // namespace tg
