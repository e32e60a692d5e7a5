// Reading ONNX files: a ModelProto parsed with the onnx library's protobuf schema (Debian's
// libonnx-dev), and TensorProto <-> HostTensor. A malformed or hostile file is an Error of
// kind kParse, never a crash: sizes are checked before any data is read, tensors whose data
// lives in external files are refused (a model file never makes tilegraph open other paths).
#pragma once

#include <onnx/onnx_pb.h>

#include <optional>
#include <string>

#include "ir/host_tensor.h"

namespace tg {

// Parses a serialized ModelProto (the bytes of a .onnx file).
onnx::ModelProto ParseOnnxModel(const void* data, size_t size);
onnx::ModelProto LoadOnnxModel(const std::string& path);
void SaveOnnxModel(const onnx::ModelProto& model, const std::string& path);

// ONNX element type (TensorProto::DataType) -> tilegraph dtype; nullopt for types tilegraph
// has no dtype for (uint8, int8, string, complex, ...).
std::optional<DType> DTypeFromOnnx(int onnx_type);
int OnnxTypeOf(DType dtype);
// The ONNX type's name ("FLOAT", "UINT8") for messages.
std::string OnnxTypeName(int onnx_type);

// A TensorProto's value. Integer types tilegraph lacks (int8/16, uint8/16/32) widen to i32
// or i64 losslessly; uint64, strings, complex and external data are refused (kParse /
// kUnsupported) naming the tensor.
HostTensor TensorFromProto(const onnx::TensorProto& proto);
onnx::TensorProto TensorToProto(const HostTensor& tensor, const std::string& name);

}  // namespace tg
