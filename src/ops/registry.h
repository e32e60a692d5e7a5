// OpRegistry: the one bridge between the compiler and the kernels. Each op is defined once,
// in its family file (elementwise.cc, matmul.cc, ...), by an OpDef that holds:
//   - schema: input count, output count, attributes with defaults;
//   - infer: output types from input types and attributes (throws a Shape error);
//   - grad: the gradient of each input built from ordinary registered ops (or an explicit
//     "not differentiable"), so the backward graph is plain IR;
//   - traits: elementwise, may-run-in-place, random, side effects;
//   - kernels: one factory per device kind (support/device_kind.h): the CPU kernel and the
//     naive reference kernel every other kind is tested against;
//   - samples: example inputs/attributes from which the op tests are generated.
//
// Family files expose `void RegisterXxxOps(OpRegistry&)`, called from RegisterAllOps().
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "kernels/cpu/fused_kernel.h"
#include "support/device_kind.h"

namespace tg {

class Builder;

// ---- kernels ----------------------------------------------------------------------------
class CollectiveRuntime;  // ops/collective.h
// Everything a kernel needs at run time besides its buffers.
struct RunContext {
  uint64_t seed = 0;  // the session's random seed
  uint64_t step = 0;  // global step counter (advances once per executed step)
  // Changes whenever a variable may have changed: a write from the host, and the end of
  // every step of a program that updates variables. While it holds, a kernel may reuse
  // data it derived from a variable or constant input (a weight in a blocked layout).
  uint64_t variables_version = 0;
  // Replicated runs: the runtime that performs collectives (ops/collective.h) and this
  // replica's index in the process. Null: one replica, one process.
  CollectiveRuntime* collectives = nullptr;
  int replica = 0;
};

// A compiled kernel: reads its inputs, writes its outputs. Buffers are contiguous row-major.
struct KernelArgs {
  const void* const* inputs;
  void* const* outputs;
  const RunContext* ctx;
};
using Kernel = std::function<void(const KernelArgs&)>;
// Builds the kernel for one node (its types and attributes are fixed at compile time, so
// factories can prepare oneDNN primitives, strides, etc. once).
using KernelFactory = std::function<Kernel(const Node&)>;

// ---- grad -------------------------------------------------------------------------------
// What a gradient rule sees: I(i) input i, O(i) output i, GO(i) gradient flowing into
// output i (null when no gradient reaches that output; never null for a single-output op,
// which is only visited when its output has a gradient), and a Builder that
// appends ordinary ops to the graph. The rule returns one Value* per input: the gradient
// of that input, or nullptr for "no gradient" (integer inputs, indices, masks).
class GradContext {
 public:
  GradContext(Builder& b, const Node& node, std::vector<Value*> output_grads)
      : b_(b), node_(node), output_grads_(std::move(output_grads)) {}
  Builder& b() const { return b_; }
  const Node& node() const { return node_; }
  Value* I(size_t i) const { return node_.input(i); }
  Value* O(size_t i) const { return node_.output(i); }
  Value* GO(size_t i) const { return output_grads_.at(i); }
  const AttrMap& attrs() const { return node_.attrs(); }

 private:
  Builder& b_;
  const Node& node_;
  std::vector<Value*> output_grads_;
};
using GradFn = std::function<std::vector<Value*>(const GradContext&)>;

// ---- infer ------------------------------------------------------------------------------
struct InferContext {
  const std::vector<TensorType>& inputs;
  const AttrMap& attrs;
  const TensorType& in(size_t i) const { return inputs.at(i); }
};
using InferFn = std::function<std::vector<TensorType>(const InferContext&)>;
// Floating-point operations one execution of a node performs (profiling only; dense ops).
using FlopsFn = std::function<double(const Node&)>;
// The matrix products a dense op amounts to: `groups` independent [m, k] x [k, n] products
// (a convolution as its implicit GEMM). Cost models split them over compute units (the
// emulated IPU's tile planner, src/tiles/gemm_plan.h).
struct GemmShape {
  double groups = 1, m = 0, n = 0, k = 0;
  double macs() const { return groups * m * n * k; }
};
using GemmShapeFn = std::function<GemmShape(const Node&)>;

// ---- elementwise ------------------------------------------------------------------------
// Elementwise ops also expose a block function so that fused kernels can evaluate a chain
// of them block by block (one pass over memory). All operands of a block are of the
// compute type T (f32 or f64); bool operands are 0/1 in T. `params` holds the op's numeric
// parameters as produced by ElementwiseDef::params from the node's attributes.
template <typename T>
using BlockFn = void (*)(const T* const* in, T* out, int64_t n, const double* params);
struct ElementwiseDef {
  BlockFn<float> f32 = nullptr;
  BlockFn<double> f64 = nullptr;
  // Numeric parameters from attributes (e.g. gelu's approximate -> {0 or 1}); may be empty.
  std::function<std::vector<double>(const AttrMap&)> params;
  // The op as one vector instruction of the fused JIT (kernels/cpu/fused_jit.h), if it is one.
  cpu::JitOp jit = cpu::JitOp::kNone;
};

// ---- test samples -----------------------------------------------------------------------
// How a test fills an input: normal(0,1) floats, positive floats in [lo, hi], integers in
// [lo, hi), random bools, or explicit values (row-major, one per element; e.g. the lengths
// of ctc_loss, which must be mutually consistent).
struct InputInit {
  enum Kind { kNormal, kUniform, kIntRange, kBool, kValues } kind = kNormal;
  double lo = 0, hi = 1;
  std::vector<double> values;  // kValues only
  static InputInit Normal() { return {}; }
  static InputInit Uniform(double lo, double hi) { return {kUniform, lo, hi, {}}; }
  static InputInit Ints(double lo, double hi) { return {kIntRange, lo, hi, {}}; }
  static InputInit Bools() { return {kBool, 0, 1, {}}; }
  static InputInit Values(std::vector<double> v) { return {kValues, 0, 0, std::move(v)}; }
};
struct OpSample {
  std::vector<TensorType> inputs;  // f32 types; the gradient check converts floats to f64
  AttrMap attrs;
  std::vector<InputInit> init;     // per input; missing entries mean Normal
  // Gradient check skips this sample (e.g. max at ties); the kernel check still runs.
  bool skip_grad_check = false;
  // Relative tolerance of the f32 CPU kernel against the reference (f64 ref for accuracy).
  double tolerance = 1e-5;
};

// ---- the definition ---------------------------------------------------------------------
struct AttrSpec {
  std::string name;
  std::optional<Attr> default_value;  // nullopt: required
};

struct OpTraits {
  bool elementwise = false;   // out[i] depends on in[i] only (after broadcasting)
  int inplace_input = -1;     // output 0 may reuse this input's buffer when it dies here
  bool random = false;        // reads the RNG (keyed by its int attribute "rng_key", which the
                              // Builder assigns); never CSE'd or constant-folded
  bool side_effects = false;  // never removed by DCE
  bool view = false;          // output 0 is input 0's buffer reinterpreted (reshape)
  // Its kernels compute f16 / bf16 themselves (data movement, casts); other ops run half
  // values widened to f32 (ops/half_widening.h).
  bool half_native = false;
};

struct OpDef {
  std::string name;
  int num_inputs = 1;  // -1: variadic (at least min_inputs)
  int min_inputs = 0;
  int num_outputs = 1;  // -1: variable (the infer function decides)
  std::vector<AttrSpec> attrs;
  InferFn infer;
  GradFn grad;                 // required unless not_differentiable
  bool not_differentiable = false;
  // Its gradient is zero by definition (stop_gradient: torch's detach), not what finite
  // differences see: the gradient-conformance samples skip it.
  bool stops_gradient = false;
  OpTraits traits;
  std::optional<ElementwiseDef> elementwise;
  std::map<DeviceKind, KernelFactory> kernels;  // at least kCpu and kReference
  // Optional native f16 / bf16 kernels of an op that is not half_native (matmul and
  // convolution on CPUs with bf16 instructions): called for half nodes first; an empty
  // Kernel (no native kernel for this node's dtype, shape or CPU) leaves the node widened.
  std::map<DeviceKind, KernelFactory> half_kernels;
  FlopsFn flops;               // optional: lets the profile report GFLOP/s
  GemmShapeFn gemm;            // optional (dense ops): the products it computes, for cost models
  std::vector<OpSample> samples;
  std::string doc;  // one line: what the op computes

  // The kernel factory for `kind`; throws Unsupported naming the op and the device kind.
  const KernelFactory& KernelFor(DeviceKind kind) const;
};

class OpRegistry {
 public:
  // The process-wide registry with every op (built on first use by RegisterAllOps).
  static const OpRegistry& Global();

  void Register(OpDef def);  // throws Internal on duplicates or missing parts
  const OpDef* Find(const std::string& name) const;
  const OpDef& Get(const std::string& name) const;  // throws Unsupported when absent
  std::vector<const OpDef*> All() const;             // sorted by name

 private:
  std::map<std::string, std::unique_ptr<OpDef>> ops_;
};

void RegisterAllOps(OpRegistry& registry);

// Fills defaults for missing attributes and checks that required ones are present.
AttrMap CompleteAttrs(const OpDef& def, const AttrMap& attrs);
// Runs the op's infer function with node context on errors.
std::vector<TensorType> InferTypes(const OpDef& def, const std::vector<TensorType>& inputs,
                                   const AttrMap& attrs);

}  // namespace tg
