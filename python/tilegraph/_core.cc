// The nanobind module tilegraph._core: a thin binding of the C++ core. Graph building (any
// registered op by name), autodiff + optimizer generation, compilation and execution. No
// compiler logic lives here or in Python; errors map to Python exceptions by kind.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>

#include "autodiff/autodiff.h"
#include "autodiff/optimizer.h"
#include "passes/mixed_precision.h"
#include "ir/printer.h"
#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/cast_kernels.h"
#include "kernels/cpu/machine_limits.h"
#include "kernels/cpu/onednn_kernels.h"
#include "ops/builder.h"
#include "ops/memory_hint.h"
#include "parallel/gradient_all_reduce.h"
#include "runtime/executable.h"
#include "support/error.h"
#include "tiles/auto_partition.h"
#include "_core_arrays.h"

namespace nb = nanobind;
using namespace tg;
using tg::py::Array;
using tg::py::ViewOf;
using tg::py::TensorOf;
using tg::py::ToNumpy;

namespace {

TensorType MakeType(const std::string& dtype, const std::vector<int64_t>& shape) {
  auto d = ParseDType(dtype);
  if (!d) throw nb::value_error(("unknown dtype '" + dtype + "'").c_str());
  return TensorType{*d, shape};
}

// Python attribute values -> Attr (int, float, bool, str, list of int/float, dtype name "dtype:f32").
Attr AttrFromPython(nb::handle h) {
  if (nb::isinstance<nb::bool_>(h)) return nb::cast<bool>(h);
  if (nb::isinstance<nb::int_>(h)) return nb::cast<int64_t>(h);
  if (nb::isinstance<nb::float_>(h)) return nb::cast<double>(h);
  if (nb::isinstance<nb::str>(h)) {
    std::string s = nb::cast<std::string>(h);
    if (s.rfind("dtype:", 0) == 0) {
      auto d = ParseDType(s.substr(6));
      if (!d) throw nb::value_error(("unknown dtype in '" + s + "'").c_str());
      return *d;
    }
    return s;
  }
  if (nb::isinstance<nb::list>(h) || nb::isinstance<nb::tuple>(h)) {
    bool any_float = false;
    for (nb::handle e : h) any_float |= nb::isinstance<nb::float_>(e);
    if (any_float) {
      std::vector<double> v;
      for (nb::handle e : h) v.push_back(nb::cast<double>(e));
      return v;
    }
    std::vector<int64_t> v;
    for (nb::handle e : h) v.push_back(nb::cast<int64_t>(e));
    return v;
  }
  throw nb::type_error("unsupported attribute value");
}

// A Graph plus a Builder over it, owned together on the Python side.
struct PyGraph {
  std::unique_ptr<Graph> graph;
  std::unique_ptr<Builder> builder;
  explicit PyGraph(std::unique_ptr<Graph> g) : graph(std::move(g)), builder(new Builder(*graph)) {}
};

std::vector<std::string> Names(const std::vector<Value*>& values) {
  std::vector<std::string> names;
  for (Value* v : values) names.push_back(v->name());
  return names;
}

Value* Find(PyGraph& g, const std::string& name) {
  Value* v = g.graph->FindValue(name);
  if (v == nullptr) throw nb::value_error(("no value named '" + name + "'").c_str());
  return v;
}

// tilegraph's Python exception class `name` (tilegraph/_system.py), or RuntimeError if the
// package cannot be imported (the module used on its own).
PyObject* TilegraphErrorClass(const char* name) {
  PyObject* module = PyImport_ImportModule("tilegraph._system");
  if (module == nullptr) {
    PyErr_Clear();
    return PyExc_RuntimeError;
  }
  PyObject* cls = PyObject_GetAttrString(module, name);
  Py_DECREF(module);
  if (cls == nullptr) {
    PyErr_Clear();
    return PyExc_RuntimeError;
  }
  Py_DECREF(cls);  // the module keeps the class alive
  return cls;
}

}  // namespace

void BindOnnx(nb::module_& m);                                      // _core_onnx.cc
void BindGuards(nb::module_& m);                                    // _core_guards.cc
nb::bytes ExportOnnxBytes(const Graph& graph, const Executable& exe);  // _core_onnx.cc

#ifndef TILEGRAPH_ISA  // set by CMake for each ISA build of the module (python/tilegraph/_isa.py)
#define TILEGRAPH_ISA "unknown"
#define TILEGRAPH_MARCH "unknown"
#endif

NB_MODULE(_core, m) {
  // A training executor's module tensors are numpy views that keep their Executable alive
  // (variable_view); a module still alive when the interpreter exits keeps it alive past
  // nanobind's shutdown check, which would then report the executable and every bound
  // function as "leaked" although nothing is: the process is ending with them in use.
  nb::set_leak_warnings(false);
  m.doc() = "tilegraph C++ core";
  m.attr("isa") = TILEGRAPH_ISA;      // which build of the core this is (avx512, avx2, ...)
  m.attr("march") = TILEGRAPH_MARCH;  // the -march it was compiled with
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      switch (e.kind()) {
        case ErrorKind::kInvalidInput:
        case ErrorKind::kShape:
        case ErrorKind::kParse: PyErr_SetString(PyExc_ValueError, e.what()); break;
        case ErrorKind::kUnsupported: PyErr_SetString(PyExc_NotImplementedError, e.what()); break;
        case ErrorKind::kInterrupted: PyErr_SetString(PyExc_KeyboardInterrupt, e.what()); break;
        // Errors while running are PopTorch's RecoverableError (the executor stays usable,
        // RELIABILITY.md), internal ones its Error; both are RuntimeErrors.
        default: PyErr_SetString(TilegraphErrorClass(e.kind() == ErrorKind::kRuntime
                                                         ? "RecoverableError" : "Error"),
                                 e.what());
          break;
      }
    }
  });

  // Values are referred to by name on the Python side (names are unique per graph).
  nb::class_<PyGraph>(m, "Graph")
      .def("__init__", [](PyGraph* self, const std::string& name) {
        new (self) PyGraph(std::make_unique<Graph>(name));
      }, nb::arg("name") = "main")
      .def_static("parse", [](const std::string& text) { return new PyGraph(ParseGraph(text)); })
      .def("__str__", [](PyGraph& g) { return PrintGraph(*g.graph); })
      .def("add_input", [](PyGraph& g, const std::string& name, const std::string& dtype,
                           const std::vector<int64_t>& shape) {
        return g.graph->AddInput(name, MakeType(dtype, shape))->name();
      })
      .def("add_hyperparam", [](PyGraph& g, const std::string& name, const std::string& dtype,
                                const std::vector<int64_t>& shape) {
        return g.graph->AddHyperParam(name, MakeType(dtype, shape))->name();
      })
      .def("add_variable", [](PyGraph& g, const std::string& name, const std::string& dtype,
                              const std::vector<int64_t>& shape, bool trainable) {
        return g.graph->AddVariable(name, MakeType(dtype, shape), trainable)->name();
      }, nb::arg("name"), nb::arg("dtype"), nb::arg("shape"), nb::arg("trainable") = true)
      .def("add_constant", [](PyGraph& g, const Array& data, const std::string& name) {
        return g.graph->AddConstant(TensorOf(data), name)->name();
      }, nb::arg("data"), nb::arg("name") = "")
      .def("op", [](PyGraph& g, const std::string& op, const std::vector<std::string>& inputs,
                    nb::dict attrs, const std::string& source, int placement) {
        std::vector<Value*> ins;
        for (const std::string& n : inputs) ins.push_back(Find(g, n));
        AttrMap am;
        for (auto [k, v] : attrs) am[nb::cast<std::string>(k)] = AttrFromPython(v);
        if (placement < 0) throw nb::value_error("placement must be >= 0");
        g.builder->set_source(source);
        g.builder->set_placement(placement);
        std::vector<Value*> outs;
        try {
          outs = g.builder->Op(op, ins, am);
        } catch (...) {
          g.builder->set_source("");
          g.builder->set_placement(0);
          throw;
        }
        g.builder->set_source("");
        g.builder->set_placement(0);
        return Names(outs);
      }, nb::arg("op"), nb::arg("inputs"), nb::arg("attrs") = nb::dict(), nb::arg("source") = "",
         nb::arg("placement") = 0)
      .def("type_of", [](PyGraph& g, const std::string& name) {
        const TensorType& t = Find(g, name)->type();
        return nb::make_tuple(std::string(DTypeName(t.dtype)), t.shape);
      })
      .def("is_zeros", [](PyGraph& g, const std::string& name) {
        const Node* n = Find(g, name)->producer();
        return n != nullptr && n->op() == "full" && GetFloat(n->attrs(), "value") == 0.0;
      }, "Whether the value is a `full` of zeros (e.g. the gradient of a parameter the loss "
         "does not depend on).")
      .def("add_output", [](PyGraph& g, const std::string& name) { g.graph->AddOutput(Find(g, name)); })
      .def("hint_available_memory", [](PyGraph& g, const std::string& name, double proportion) {
        Node* dense = HintAvailableMemory(Find(g, name), proportion);
        return dense == nullptr ? std::string() : dense->op();
      }, "set_available_memory: the hint on the dense op producing the value "
         "(ops/memory_hint.h); returns that op's name, empty when there is none.")
      .def("to_onnx", [](PyGraph& g, const Executable& exe) { return ExportOnnxBytes(*g.graph, exe); },
           "This inference graph as an ONNX model (bytes) with exe's current weights.")
      .def("set_update", [](PyGraph& g, const std::string& var, const std::string& value) {
        g.graph->SetUpdate(Find(g, var), Find(g, value));
      })
      .def("rename", [](PyGraph& g, const std::string& name, const std::string& new_name) {
        return g.graph->RenameValue(Find(g, name), new_name);
      })
      .def_prop_ro("inputs", [](PyGraph& g) { return Names(g.graph->inputs()); })
      .def_prop_ro("outputs", [](PyGraph& g) { return Names(g.graph->outputs()); })
      .def_prop_ro("variables", [](PyGraph& g) { return Names(g.graph->variables()); })
      .def_prop_ro("hyperparams", [](PyGraph& g) { return Names(g.graph->hyperparams()); })
      .def_prop_ro("num_nodes", [](PyGraph& g) { return g.graph->nodes().size(); })
      .def("apply_mixed_precision", [](PyGraph& g, const std::string& dtype,
                                        std::optional<std::vector<std::string>> ops,
                                        std::optional<int64_t> min_rows,
                                        std::optional<int64_t> min_depth) {
        MixedPrecisionPolicy policy;
        policy.half = MakeType(dtype, {}).dtype;
        if (ops) policy.half_ops = std::set<std::string>(ops->begin(), ops->end());
        if (min_rows) policy.min_rows = *min_rows;
        if (min_depth) policy.min_depth = *min_depth;
        return ApplyMixedPrecision(*g.graph, policy);
      }, nb::arg("dtype"), nb::arg("ops") = nb::none(), nb::arg("min_rows") = nb::none(),
         nb::arg("min_depth") = nb::none())
      .def("gradients", [](PyGraph& g, const std::string& loss, const std::vector<std::string>& wrt) {
        std::vector<Value*> ws;
        for (const std::string& n : wrt) ws.push_back(Find(g, n));
        return Names(BuildGradients(*g.builder, Find(g, loss), ws));
      })
      .def("add_training_step", [](PyGraph& g, const std::string& loss, const std::string& kind,
                                   nb::list groups, bool use_momentum, bool nesterov,
                                   bool centered, bool bias_correction, bool loss_scaling, int accumulation_steps,
                                   bool accumulation_mean, int64_t replicas_total,
                                   bool shard_optimizer_state, const std::string& grad_accum_dtype,
                                   const std::string& first_moment_dtype,
                                   const std::string& second_moment_dtype,
                                   bool stochastic_rounding, bool automatic_loss_scaling,
                                   double growth_factor, double backoff_factor,
                                   int64_t growth_interval, double max_grad_norm,
                                   bool rmsprop_tf_variant, bool amsgrad, bool maximize) {
        OptimizerConfig config;
        config.amsgrad = amsgrad;
        config.maximize = maximize;
        config.max_grad_norm = max_grad_norm;
        config.rmsprop_tf_variant = rmsprop_tf_variant;
        config.automatic_loss_scaling = automatic_loss_scaling;
        config.loss_scale_growth_factor = growth_factor;
        config.loss_scale_backoff_factor = backoff_factor;
        config.loss_scale_growth_interval = growth_interval;
        config.half_grad_accum_dtype = MakeType(grad_accum_dtype, {}).dtype;
        config.half_first_moment_dtype = MakeType(first_moment_dtype, {}).dtype;
        config.half_second_moment_dtype = MakeType(second_moment_dtype, {}).dtype;
        config.stochastic_rounding = stochastic_rounding;
        if (kind == "sgd") config.kind = OptimizerKind::kSGD;
        else if (kind == "adam") config.kind = OptimizerKind::kAdam;
        else if (kind == "adamw") config.kind = OptimizerKind::kAdamW;
        else if (kind == "rmsprop") config.kind = OptimizerKind::kRMSprop;
        else if (kind == "lamb") config.kind = OptimizerKind::kLamb;
        else throw nb::value_error(("unknown optimizer '" + kind + "'").c_str());
        config.use_momentum = use_momentum;
        config.nesterov = nesterov;
        config.centered = centered;
        config.bias_correction = bias_correction;
        config.loss_scaling = loss_scaling;
        config.accumulation_steps = accumulation_steps;
        config.accumulation_mean = accumulation_mean;
        if (replicas_total > 1) {  // data parallelism: gradients all-reduced across replicas
          GradientReduction reduction;
          reduction.group_size = replicas_total;
          reduction.mean = accumulation_mean;  // PopTorch: one reduction type for both
          config.reduce_gradients = GradientAllReduce(reduction);
          if (shard_optimizer_state) {
            config.shard_state_group = replicas_total;
            config.shard_state_mean = accumulation_mean;
          }
        }
        std::vector<ParamGroup> pgs;
        for (nb::handle h : groups) {
          nb::dict d = nb::cast<nb::dict>(h);
          ParamGroup pg;
          for (nb::handle p : nb::cast<nb::list>(d["params"])) {
            pg.params.push_back(Find(g, nb::cast<std::string>(p)));
          }
          auto get = [&](const char* k, double def) {
            return d.contains(k) ? nb::cast<double>(d[k]) : def;
          };
          pg.hyper.lr = get("lr", pg.hyper.lr);
          pg.hyper.momentum = get("momentum", pg.hyper.momentum);
          pg.hyper.dampening = get("dampening", pg.hyper.dampening);
          pg.hyper.weight_decay = get("weight_decay", pg.hyper.weight_decay);
          pg.hyper.beta1 = get("beta1", pg.hyper.beta1);
          pg.hyper.beta2 = get("beta2", pg.hyper.beta2);
          pg.hyper.eps = get("eps", pg.hyper.eps);
          pg.hyper.alpha = get("alpha", pg.hyper.alpha);
          pg.hyper.max_weight_norm = get("max_weight_norm", pg.hyper.max_weight_norm);
          pg.hyper.trust_ratio = get("trust_ratio", pg.hyper.trust_ratio);
          pgs.push_back(std::move(pg));
        }
        TrainingStepInfo info = AddTrainingStep(*g.builder, Find(g, loss), pgs, config);
        nb::dict out;
        out["hyperparams"] = info.hyperparams;
        out["state_variables"] = info.state_variables;
        out["grad_of"] = info.grad_of;
        return out;
      }, nb::arg("loss"), nb::arg("kind"), nb::arg("groups"), nb::arg("use_momentum") = false,
         nb::arg("nesterov") = false, nb::arg("centered") = false,
         nb::arg("bias_correction") = true, nb::arg("loss_scaling") = false,
         nb::arg("accumulation_steps") = 1, nb::arg("accumulation_mean") = true,
         nb::arg("replicas_total") = 1, nb::arg("shard_optimizer_state") = false,
         nb::arg("grad_accum_dtype") = "f32", nb::arg("first_moment_dtype") = "f32",
         nb::arg("second_moment_dtype") = "f32", nb::arg("stochastic_rounding") = false,
         nb::arg("automatic_loss_scaling") = false, nb::arg("growth_factor") = 2.0,
         nb::arg("backoff_factor") = 0.5, nb::arg("growth_interval") = 2000,
         nb::arg("max_grad_norm") = std::numeric_limits<double>::infinity(),
         nb::arg("rmsprop_tf_variant") = false, nb::arg("amsgrad") = false,
         nb::arg("maximize") = false);

  nb::class_<Executable>(m, "Executable")
      .def_static("compile", [](PyGraph& g, bool training, bool optimize, bool verify_each,
                                const std::string& dump_after, int num_threads, uint64_t seed,
                                bool profile, bool inplace, const std::string& device,
                                int replicas, bool distributed, int stages,
                                int pipeline_micro_batches, bool recompute_stages,
                                bool stages_across_processes, int accumulation_steps,
                                const std::string& ipu_target,
                                const std::vector<double>& available_memory_proportion,
                                bool ipu_allow_out_of_memory) {
        CompileOptions o;
        o.ipu_target = ipu_target;
        o.available_memory_proportion = available_memory_proportion;
        o.ipu_allow_out_of_memory = ipu_allow_out_of_memory;
        o.accumulation_steps = accumulation_steps;
        o.stages_across_processes = stages_across_processes;
        o.recompute_stages = recompute_stages;
        o.replicas = replicas;
        o.stages = stages;
        o.pipeline_micro_batches = pipeline_micro_batches;
        if (distributed) o.communicator = MpiWorld();
        std::optional<DeviceKind> kind = ParseDeviceKind(device);
        if (!kind) throw nb::value_error(("unknown device '" + device + "'").c_str());
        o.device = *kind;
        o.pipeline = training ? PipelineKind::kTraining : PipelineKind::kInference;
        o.optimize = optimize;
        o.verify_each = verify_each;
        o.dump_after = dump_after;
        o.num_threads = num_threads;
        o.seed = seed;
        o.profile = profile;
        o.inplace = inplace;
        nb::gil_scoped_release release;
        return Executable::Compile(*g.graph, o).release();
      }, nb::arg("graph"), nb::arg("training") = true, nb::arg("optimize") = true,
         nb::arg("verify_each") = false, nb::arg("dump_after") = "", nb::arg("num_threads") = 0,
         nb::arg("seed") = 0, nb::arg("profile") = false, nb::arg("inplace") = true,
         nb::arg("device") = "cpu", nb::arg("replicas") = 1, nb::arg("distributed") = false,
         nb::arg("stages") = 0, nb::arg("pipeline_micro_batches") = 0,
         nb::arg("recompute_stages") = false, nb::arg("stages_across_processes") = false,
         nb::arg("accumulation_steps") = 0, nb::arg("ipu_target") = "GC200",
         nb::arg("available_memory_proportion") = std::vector<double>{},
         nb::arg("ipu_allow_out_of_memory") = false,
         nb::rv_policy::take_ownership)
      .def("run", [](Executable& exe, const std::vector<Array>& inputs, int64_t steps,
                     const std::string& mode, int64_t every_n) {
        OutputMode om;
        if (mode == "all") om = OutputMode::kAll;
        else if (mode == "final") om = OutputMode::kFinal;
        else if (mode == "sum") om = OutputMode::kSum;
        else if (mode == "every_n") om = OutputMode::kEveryN;
        else throw nb::value_error(("unknown output mode '" + mode + "'").c_str());
        std::vector<TensorView> views;
        for (const Array& a : inputs) views.push_back(ViewOf(a));
        std::vector<HostTensor> outs;
        // Between steps: a pending signal (Ctrl-C) stops the run at that step boundary and
        // its own exception (KeyboardInterrupt, or what the handler raised) propagates.
        bool signalled = false;
        auto interrupted = [&signalled] {
          nb::gil_scoped_acquire acquire;
          signalled = PyErr_CheckSignals() != 0;
          return signalled;
        };
        try {
          nb::gil_scoped_release release;
          outs = exe.Run(views, steps, om, every_n, interrupted);
        } catch (const Error& e) {
          if (signalled && e.kind() == ErrorKind::kInterrupted) throw nb::python_error();
          throw;
        }
        nb::list result;
        for (HostTensor& t : outs) result.append(ToNumpy(std::move(t)));
        return result;
      }, nb::arg("inputs"), nb::arg("steps") = 1, nb::arg("mode") = "final", nb::arg("every_n") = 1)
      // The GIL is released while waiting for the executable's mutex (a run in another
      // thread holds it and needs the GIL between steps).
      .def("read_variable", [](Executable& exe, const std::string& name) {
        HostTensor t;
        {
          nb::gil_scoped_release release;
          t = exe.ReadVariable(name);
        }
        return ToNumpy(std::move(t));
      })
      .def("read_variable_into", [](Executable& exe, const std::string& name,
                                    nb::ndarray<nb::c_contig, nb::device::cpu> out) {
        TensorView v;
        v.type.dtype = py::DTypeFromNumpy(out.dtype());
        for (size_t i = 0; i < out.ndim(); ++i) {
          v.type.shape.push_back(static_cast<int64_t>(out.shape(i)));
        }
        void* dst = out.data();
        nb::gil_scoped_release release;
        exe.ReadVariableInto(name, dst, v.type);
      }, nb::arg("name"), nb::arg("out"),
         "Copies a variable into `out` (a writable C-contiguous array of its exact type).")
      .def("read_variables_into", [](Executable& exe, const std::vector<std::string>& names,
                                     std::vector<nb::ndarray<nb::c_contig, nb::device::cpu>> outs) {
        std::vector<void*> dsts;
        std::vector<TensorType> types;
        for (auto& out : outs) {
          TensorType t;
          t.dtype = py::DTypeFromNumpy(out.dtype());
          for (size_t i = 0; i < out.ndim(); ++i) {
            t.shape.push_back(static_cast<int64_t>(out.shape(i)));
          }
          dsts.push_back(out.data());
          types.push_back(std::move(t));
        }
        nb::gil_scoped_release release;
        exe.ReadVariablesInto(names, dsts, types);
      }, nb::arg("names"), nb::arg("outs"),
         "read_variable_into for many variables at once, the copies spread over the threads.")
      .def("variable_view", [](Executable& exe, const std::string& name) {
        // A writable numpy array over the variable's own memory (VariableStorage), keeping
        // the executable alive while it lives; bf16 as its uint16 bits.
        const TensorType type = exe.VariableType(name);
        void* data = exe.VariableStorage(name);
        std::vector<size_t> shape(type.shape.begin(), type.shape.end());
        nb::object owner = nb::find(&exe);
        return nb::cast(nb::ndarray<nb::numpy>(data, shape.size(), shape.data(), owner,
                                               nullptr, py::NumpyDTypeOf(type.dtype)));
      }, nb::arg("name"),
         "The variable's memory as a numpy array (no copy; runs write it in place).")
      .def_prop_ro("written_variables", &Executable::WrittenVariableNames)
      .def("write_variable", [](Executable& exe, const std::string& name, const Array& a) {
        TensorView v = ViewOf(a);
        nb::gil_scoped_release release;
        exe.WriteVariable(name, v);
      })
      .def_prop_ro("steps_completed_in_last_run", &Executable::steps_completed_in_last_run,
                   nb::call_guard<nb::gil_scoped_release>())
      .def("set_hyperparam", [](Executable& exe, const std::string& name, double v) {
        exe.SetHyperParam(name, v);
      }, nb::call_guard<nb::gil_scoped_release>())
      .def("set_seed", &Executable::SetSeed)
      .def_prop_rw("step", &Executable::step, &Executable::SetStep)
      .def_prop_ro("seed", &Executable::seed)
      .def_prop_ro("variables", &Executable::VariableNames)
      .def_prop_ro("hyperparams", &Executable::HyperParamNames)
      .def_prop_ro("compile_seconds", &Executable::compile_seconds)
      .def_prop_ro("device", [](Executable& exe) { return exe.device().name(); })
      .def_prop_ro("replicas", &Executable::replicas)
      .def_prop_ro("replicated", &Executable::replicated)
      .def_prop_ro("group_size", &Executable::group_size)
      .def("broadcast_variables", &Executable::BroadcastVariables,
           nb::call_guard<nb::gil_scoped_release>(),
           "Sets every variable of every process to process 0's.")
      .def("check_same_program_everywhere", &Executable::CheckSameProgramEverywhere,
           nb::call_guard<nb::gil_scoped_release>())
      .def_prop_ro("num_instructions", &Executable::num_instructions)
      .def_prop_ro("optimized_ir", [](Executable& exe) { return PrintGraph(exe.optimized_graph()); })
      .def_prop_ro("memory_stats", [](Executable& exe) {
        const MemoryStats& s = exe.memory_stats();
        nb::dict d;
        d["arena_bytes"] = s.arena_bytes;
        d["naive_bytes"] = s.naive_bytes;
        d["variable_bytes"] = s.variable_bytes;
        d["num_buffers"] = s.num_buffers;
        d["inplace_reuses"] = s.inplace_reuses;
        d["views"] = s.views;
        d["inplace_variable_updates"] = s.inplace_variable_updates;
        d["device_arena_bytes"] = s.device_arena_bytes;
        d["device_working_bytes"] = s.device_working_bytes;
        return d;
      })
      .def("profile_report", &Executable::ProfileReport, nb::arg("top_instructions") = 15,
           nb::call_guard<nb::gil_scoped_release>())
      .def("profile", [](Executable& exe, bool per_instruction) {
        std::vector<OpProfile> entries;
        {
          nb::gil_scoped_release release;
          entries = per_instruction ? exe.InstructionProfile() : exe.Profile();
        }
        nb::list rows;
        for (const OpProfile& p : entries) {
          nb::dict d;
          d["op"] = p.op;
          if (per_instruction) d["source"] = p.source;
          d["calls"] = p.calls;
          d["seconds"] = p.seconds;
          d["bytes"] = p.bytes;
          d["flops"] = p.flops;
          rows.append(d);
        }
        return rows;
      }, nb::arg("per_instruction") = false)
      .def("reset_profile", &Executable::ResetProfile, nb::call_guard<nb::gil_scoped_release>())
      .def_prop_ro("pipelined", &Executable::pipelined)
      .def_prop_ro("pipeline_fallback_reason", &Executable::pipeline_fallback_reason)
      // The IPU Model's estimate (None on other devices): cycles of one step of one replica,
      // and the whole report as JSON (docs/IPU_MODEL.md).
      .def_prop_ro("ipu_step_cycles", [](const Executable& exe) -> std::optional<double> {
        if (exe.tile_estimate() == nullptr) return std::nullopt;
        return exe.tile_estimate()->step_cycles;
      })
      .def_prop_ro("ipu_num_ipus", [](const Executable& exe) -> std::optional<int> {
        if (exe.tile_estimate() == nullptr) return std::nullopt;
        return exe.tile_estimate()->num_ipus;
      })
      .def("ipu_report_json", [](const Executable& exe, double samples_per_step) -> std::string {
        if (exe.tile_estimate() == nullptr) {
          throw nb::value_error("ipu_report_json: the program was not compiled for the IPU Model");
        }
        return exe.tile_estimate()->ToJson(samples_per_step);
      }, nb::arg("samples_per_step") = 0.0)
      .def("pipeline_stats", [](Executable& exe) {
        PipelineStats s = exe.pipeline_stats();
        nb::dict d;
        d["busy_seconds"] = s.busy_seconds;
        d["wall_seconds"] = s.wall_seconds;
        d["waves"] = s.waves;
        d["micro_batches"] = s.micro_batches;
        return d;
      }, "Busy seconds of each pipeline device and wall seconds of the waves since the reset.")
      .def("reset_pipeline_stats", &Executable::ResetPipelineStats);

  // The auto-partitioner (tiles/auto_partition.h): units as (name, cycles, bytes per tile).
  m.def("auto_partition", [](const std::vector<std::string>& names,
                             const std::vector<double>& cycles,
                             const std::vector<std::vector<double>>& tile_bytes, int ipus,
                             double bytes_per_tile, double base_code_bytes,
                             const std::vector<std::vector<double>>& peak_bytes) {
    if (names.size() != cycles.size() || names.size() != tile_bytes.size() ||
        (!peak_bytes.empty() && peak_bytes.size() != names.size())) {
      throw nb::value_error(
          "auto_partition: names, cycles, tile_bytes (and peak_bytes) differ in length");
    }
    std::vector<tiles::PartitionUnit> units;
    for (size_t i = 0; i < names.size(); ++i) {
      units.push_back({names[i], cycles[i], tile_bytes[i],
                       peak_bytes.empty() ? std::vector<double>{} : peak_bytes[i]});
    }
    tiles::PartitionPlan plan;
    {
      nb::gil_scoped_release release;
      plan = tiles::AutoPartition(units, ipus, bytes_per_tile, base_code_bytes);
    }
    nb::dict out;
    out["fits"] = plan.fits;
    out["first_unit"] = plan.first_unit;
    out["stage_cycles"] = plan.stage_cycles;
    out["stage_max_tile_bytes"] = plan.stage_max_tile_bytes;
    out["balance"] = plan.balance;
    return out;
  }, nb::arg("names"), nb::arg("cycles"), nb::arg("tile_bytes"), nb::arg("ipus"),
     nb::arg("bytes_per_tile"), nb::arg("base_code_bytes"),
     nb::arg("peak_bytes") = std::vector<std::vector<double>>{});
  // A peak probe run without the GIL, as {"gflops", "isa"}.
  auto peak_probe = [](cpu::FmaPeak (*probe)(int, int)) {
    return [probe](int threads) {
      cpu::FmaPeak p;
      {
        nb::gil_scoped_release release;
        p = probe(threads, 5);
      }
      nb::dict d;
      d["gflops"] = p.gflops;
      d["isa"] = p.isa;
      return d;
    };
  };
  m.def("measure_fma_peak", peak_probe(&cpu::MeasureFmaPeak), nb::arg("threads"),
        "FP32 FMA peak of this CPU on `threads` threads (GFLOP/s, isa).");
  m.def("measure_bf16_peak", peak_probe(&cpu::MeasureBf16DotPeak), nb::arg("threads"),
        "bf16 dot-product peak (AVX512_BF16) on `threads` threads (GFLOP/s, isa; 0 and "
        "'none' without it).");
  m.def("native_bf16_dense", &cpu::NativeBf16Dense,
        "Whether bf16 matmuls / convolutions run on native bf16 kernels here (tilegraph's AMX "
        "GEMM or oneDNN's).");
  m.def("measure_triad_bandwidth", [](int threads) {
    nb::gil_scoped_release release;
    return cpu::MeasureTriadBandwidthGbs(threads);
  }, nb::arg("threads"), "DRAM bandwidth of a STREAM-style triad on `threads` threads (GB/s).");

  // The raw-oneDNN reference engine of bench/micro.py: the matmul primitive tilegraph's
  // kernels use, run directly on buffers it owns (no graph, no copies in or out), so that the
  // GEMM benchmark shows what tilegraph adds or loses around the library.
  struct RawOnednnMatmul {
    std::vector<float> a, b, out;  // bf16: the first half of each holds the bf16 bits
    std::unique_ptr<cpu::OnednnMatmul> matmul;
  };
  nb::class_<RawOnednnMatmul>(m, "RawOnednnMatmul",
                              "out[m,n] = a[m,k] @ b[k,n] with oneDNN's matmul primitive alone "
                              "(random operands; bench/micro.py's reference engine).")
      .def("__init__", [](RawOnednnMatmul* self, int64_t m, int64_t k, int64_t n, bool bf16) {
        new (self) RawOnednnMatmul();
        cpu::MatmulParams p;
        p.m = m, p.k = k, p.n = n;
        self->a.resize(static_cast<size_t>(m * k));
        self->b.resize(static_cast<size_t>(k * n));
        self->out.resize(static_cast<size_t>(m * n));
        for (size_t i = 0; i < self->a.size(); ++i) self->a[i] = static_cast<float>(i % 7) - 3;
        for (size_t i = 0; i < self->b.size(); ++i) self->b[i] = static_cast<float>(i % 5) - 2;
        if (bf16) {  // the same small integers, exact in bf16
          auto to_bf16 = [](std::vector<float>& v) {
            std::vector<float> bits(v.size());
            cpu::CastBuffer(v.data(), cpu::ElemType::kF32, bits.data(), cpu::ElemType::kBF16,
                            static_cast<int64_t>(v.size()));
            v = std::move(bits);
          };
          to_bf16(self->a);
          to_bf16(self->b);
        }
        self->matmul = std::make_unique<cpu::OnednnMatmul>(
            p, cpu::MatmulEpilogue{}, cpu::PrepackB::kNo,
            bf16 ? cpu::DenseType::kBF16 : cpu::DenseType::kF32);
      }, nb::arg("m"), nb::arg("k"), nb::arg("n"), nb::arg("bf16") = false)
      .def("run", [](RawOnednnMatmul& self) {
        nb::gil_scoped_release release;
        self.matmul->Run(self.a.data(), self.b.data(), self.out.data());
      }, "One matmul.")
      .def_prop_ro("implementation",
                   [](const RawOnednnMatmul& self) { return self.matmul->implementation(); });

  // tilegraph's AMX bf16 GEMM alone (kernels/cpu/amx_gemm.h), as RawOnednnMatmul runs
  // oneDNN's: buffers it owns, no graph, no copies; bench/mixed_precision.py's kernel figure.
  struct RawAmxGemm {
    // 64-byte aligned, as the engine's arena buffers are (a row-major a is read in place).
    struct Bits {
      uint16_t* data = nullptr;
      size_t count = 0;
      void resize(size_t n) {
        std::free(data);
        data = static_cast<uint16_t*>(std::aligned_alloc(64, (n * 2 + 63) / 64 * 64));
        count = n;
      }
      size_t size() const { return count; }
      ~Bits() { std::free(data); }
    };
    Bits a, b, out;
    std::unique_ptr<cpu::AmxBf16Gemm> gemm;
    uint64_t version = 1;
    bool keep_b = false;
  };
  m.def("amx_gemm_usable", [] { return cpu::AmxBf16GemmUsable(); },
        "Whether bf16 matmuls run on tilegraph's AMX GEMM in this process.");
  nb::class_<RawAmxGemm>(m, "RawAmxGemm",
                         "out[m,n] = a[m,k] @ b[k,n] in bf16 with tilegraph's AMX GEMM alone; "
                         "keep_b: b's packed panels kept across runs (a weight), else packed "
                         "every run.")
      .def("__init__", [](RawAmxGemm* self, int64_t m, int64_t k, int64_t n, bool keep_b) {
        if (!cpu::AmxBf16GemmUsable()) {
          throw std::runtime_error("RawAmxGemm: this CPU or process cannot run AMX tiles");
        }
        new (self) RawAmxGemm();
        cpu::MatmulParams p;
        p.m = m, p.k = k, p.n = n;
        std::vector<float> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n));
        for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 7) - 3;
        for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 5) - 2;
        self->a.resize(a.size());
        self->b.resize(b.size());
        self->out.resize(static_cast<size_t>(m * n));
        cpu::CastBuffer(a.data(), cpu::ElemType::kF32, self->a.data, cpu::ElemType::kBF16,
                        static_cast<int64_t>(a.size()));
        cpu::CastBuffer(b.data(), cpu::ElemType::kF32, self->b.data, cpu::ElemType::kBF16,
                        static_cast<int64_t>(b.size()));
        self->gemm = std::make_unique<cpu::AmxBf16Gemm>(p, false, cpu::Activation::kNone, true);
        self->keep_b = keep_b;
      }, nb::arg("m"), nb::arg("k"), nb::arg("n"), nb::arg("keep_b") = false)
      .def("run", [](RawAmxGemm& self) {
        nb::gil_scoped_release release;
        self.gemm->Run(self.a.data, self.b.data, self.out.data, nullptr,
                       self.keep_b ? &self.version : nullptr);
      }, "One matmul.");

  m.def("mpi_available", &MpiAvailable, "Whether this build can run across processes (MPI).");
  m.def("mpi_world", [] {
    std::shared_ptr<Communicator> w = MpiWorld();
    return nb::make_tuple(w->rank(), w->size());
  }, "(rank, size) of this process in its MPI launch (initializes MPI).");
  m.def("mpi_allreduce_seconds", [](int64_t bytes, int iterations) {
    // Times tilegraph's process all-reduce (the Communicator every replicated run uses) on
    // an f32 buffer: one warm-up, then `iterations` timed calls (bench/collectives.py).
    std::shared_ptr<Communicator> world = MpiWorld();
    std::vector<float> buf(static_cast<size_t>(std::max<int64_t>(1, bytes / 4)), 1.0f);
    std::vector<double> seconds;
    nb::gil_scoped_release release;
    world->AllReduceSum(buf.data(), static_cast<int64_t>(buf.size()), CommDType::kF32);
    for (int i = 0; i < iterations; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      world->AllReduceSum(buf.data(), static_cast<int64_t>(buf.size()), CommDType::kF32);
      seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return seconds;
  }, nb::arg("bytes"), nb::arg("iterations"));
  m.def("mpi_abort", [](int code) { MpiAbort(code); },
        "Ends every process of the MPI launch now (after an uncaught error).");
  BindOnnx(m);
  BindGuards(m);
  m.def("registered_ops", [] {
    std::vector<std::string> names;
    for (const OpDef* d : OpRegistry::Global().All()) names.push_back(d->name);
    return names;
  });
}
