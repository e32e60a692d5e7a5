// tilegraph._core's ONNX part: the C++ ONNX sessions (src/onnx/session.h) bound for
// tilegraph.onnx. Models come in as bytes; shapes, data flow and optimizer as plain values.
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <set>

#include "_core_arrays.h"
#include "onnx/export.h"
#include "onnx/model_file.h"
#include "onnx/session.h"

namespace nb = nanobind;
using namespace tg;

namespace {

OutputMode ModeOf(const std::string& mode) {
  if (mode == "all") return OutputMode::kAll;
  if (mode == "final") return OutputMode::kFinal;
  if (mode == "sum") return OutputMode::kSum;
  if (mode == "every_n") return OutputMode::kEveryN;
  throw nb::value_error(("unknown output mode '" + mode + "'").c_str());
}

onnx::ModelProto ModelOf(const nb::bytes& model) { return ParseOnnxModel(model.c_str(), model.size()); }

DataFlow FlowOf(int64_t batches_per_step, const std::string& mode, int64_t every_n,
                const std::vector<std::string>& anchors) {
  DataFlow f;
  f.batches_per_step = batches_per_step;
  f.mode = ModeOf(mode);
  f.every_n = every_n;
  f.anchors = anchors;
  return f;
}

SessionOptions OptionsOf(const std::map<std::string, std::vector<int64_t>>& input_shapes,
                         int replicas, uint64_t seed) {
  SessionOptions o;
  for (const auto& [name, shape] : input_shapes) o.import.input_shapes[name] = shape;
  o.replicas = replicas;
  o.seed = seed;
  return o;
}

OptimizerSpec OptimizerOf(const std::string& kind, const std::map<std::string, double>& h) {
  auto get = [&](const char* k, double def) {
    auto it = h.find(k);
    return it == h.end() ? def : it->second;
  };
  if (kind == "sgd") return Sgd(get("lr", 0.01), get("momentum", 0.0), get("weight_decay", 0.0));
  if (kind == "adam" || kind == "adamw")
    return Adam(get("lr", 1e-3), get("beta1", 0.9), get("beta2", 0.999), get("eps", 1e-8),
                get("weight_decay", 0.0), kind == "adamw");
  throw nb::value_error(("unknown optimizer '" + kind + "' (sgd, adam, adamw)").c_str());
}

}  // namespace

// The ONNX model of an inference graph with the executable's current weights (bytes).
nb::bytes ExportOnnxBytes(const Graph& graph, const Executable& exe) {
  std::map<std::string, HostTensor> weights;
  for (const std::string& name : exe.VariableNames()) weights[name] = exe.ReadVariable(name);
  std::string bytes = ExportOnnx(graph, weights).SerializeAsString();
  return nb::bytes(bytes.data(), bytes.size());
}

void BindOnnx(nb::module_& m) {
  nb::class_<OnnxSession>(m, "OnnxSession")
      .def_prop_ro("input_names", &OnnxSession::input_names)
      .def_prop_ro("anchor_names", &OnnxSession::anchor_names)
      .def_prop_ro("weight_names", &OnnxSession::weight_names)
      .def("input_type", [](const OnnxSession& s, const std::string& name) {
        TensorType t = s.input_type(name);
        return nb::make_tuple(std::string(DTypeName(t.dtype)), t.shape);
      })
      .def("run", [](OnnxSession& s, const std::vector<py::Array>& inputs) {
        std::vector<TensorView> views;
        for (const auto& a : inputs) views.push_back(py::ViewOf(a));
        std::vector<HostTensor> outs;
        {
          nb::gil_scoped_release release;
          outs = s.Run(views);
        }
        nb::list result;
        for (HostTensor& t : outs) result.append(py::ToNumpy(std::move(t)));
        return result;
      })
      .def("read_weight", [](const OnnxSession& s, const std::string& name) {
        return py::ToNumpy(s.ReadWeight(name));
      })
      .def("write_weight", [](OnnxSession& s, const std::string& name, const py::Array& a) {
        s.WriteWeight(name, py::ViewOf(a));
      })
      .def("model_bytes", [](const OnnxSession& s) {
        std::string bytes = s.ModelWithWeights().SerializeAsString();
        return nb::bytes(bytes.data(), bytes.size());
      })
      .def("save_model", &OnnxSession::SaveModel)
      .def("profile_report", [](OnnxSession& s) { return s.executable().ProfileReport(15); });
  nb::class_<InferenceSession, OnnxSession>(m, "OnnxInferenceSession");
  nb::class_<TrainingSession, OnnxSession>(m, "OnnxTrainingSession")
      .def("set_learning_rate", &TrainingSession::SetLearningRate);

  m.def("onnx_inference_session",
        [](const nb::bytes& model, const std::map<std::string, std::vector<int64_t>>& input_shapes,
           int64_t batches_per_step, const std::string& mode, int64_t every_n,
           const std::vector<std::string>& anchors, int replicas, uint64_t seed,
           const std::map<std::string, py::Array>& constant_inputs) {
          SessionOptions options = OptionsOf(input_shapes, replicas, seed);
          for (const auto& [name, a] : constant_inputs)
            options.import.constant_inputs[name] = py::TensorOf(a);
          return std::make_unique<InferenceSession>(
              ModelOf(model), FlowOf(batches_per_step, mode, every_n, anchors), options);
        },
        nb::arg("model"), nb::arg("input_shapes"), nb::arg("batches_per_step") = 1,
        nb::arg("mode") = "all", nb::arg("every_n") = 1,
        nb::arg("anchors") = std::vector<std::string>{}, nb::arg("replicas") = 1,
        nb::arg("seed") = 0, nb::arg("constant_inputs") = std::map<std::string, py::Array>{});
  m.def("onnx_training_session",
        [](const nb::bytes& model, const std::string& loss, const std::string& optimizer,
           const std::map<std::string, double>& hyper,
           const std::map<std::string, std::vector<int64_t>>& input_shapes,
           int64_t batches_per_step, const std::string& mode, int64_t every_n,
           const std::vector<std::string>& anchors, int replicas, uint64_t seed,
           const std::vector<std::string>& trainable) {
          SessionOptions options = OptionsOf(input_shapes, replicas, seed);
          options.trainable = trainable;
          return std::make_unique<TrainingSession>(
              ModelOf(model), loss, OptimizerOf(optimizer, hyper),
              FlowOf(batches_per_step, mode, every_n, anchors), options);
        },
        nb::arg("model"), nb::arg("loss"), nb::arg("optimizer"), nb::arg("hyper"),
        nb::arg("input_shapes"), nb::arg("batches_per_step") = 1, nb::arg("mode") = "all",
        nb::arg("every_n") = 1, nb::arg("anchors") = std::vector<std::string>{},
        nb::arg("replicas") = 1, nb::arg("seed") = 0,
        nb::arg("trainable") = std::vector<std::string>{});
  m.def("onnx_supported_ops", &SupportedOnnxOps);
  // The graph inputs (not initializers) and outputs of a model: (name, ONNX element type,
  // dims with None / the symbol's name for unknown dimensions). Parse errors are ValueErrors.
  m.def("onnx_model_io", [](const nb::bytes& model) {
    onnx::ModelProto proto = ModelOf(model);
    std::set<std::string> initializers;
    for (const auto& init : proto.graph().initializer()) initializers.insert(init.name());
    auto describe = [&](const auto& infos, bool skip_initializers) {
      nb::list out;
      for (const auto& info : infos) {
        if (skip_initializers && initializers.count(info.name())) continue;
        nb::list dims;
        int elem = 0;
        if (info.type().has_tensor_type()) {
          const auto& tt = info.type().tensor_type();
          elem = tt.elem_type();
          for (const auto& d : tt.shape().dim()) {
            if (d.has_dim_value()) dims.append(d.dim_value());
            else if (!d.dim_param().empty()) dims.append(d.dim_param());
            else dims.append(nb::none());
          }
        }
        out.append(nb::make_tuple(info.name(), elem, dims));
      }
      return out;
    };
    return nb::make_tuple(describe(proto.graph().input(), true),
                          describe(proto.graph().output(), false));
  });
}
