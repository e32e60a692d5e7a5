// Pass and PassManager. A pass rewrites a Graph in place and returns whether it changed
// anything. Pipelines are data: an ordered list of passes, each with a one-line reason
// (pipelines.cc). The PassManager can run the verifier after every pass and dump the IR
// after a named pass.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ops/registry.h"

namespace tg {

struct PassContext {
  const OpRegistry* registry = &OpRegistry::Global();
  bool verify_each = false;      // run the verifier after every pass
  std::string dump_after;        // pass name, or "*" for all
  std::ostream* dump = nullptr;  // where dumps go (stderr when null)
  std::vector<std::string> log;  // "pass-name: changed" lines, for tools and tests
  // Whether the target runs bf16 convolutions natively (oneDNN's AMX / AVX-512 BF16 kernels,
  // which read and write NHWC): block-conv-layout then hands their values over channels
  // last. Executable::Compile sets it from the CPU; elsewhere the convolutions widen to
  // f32, whose kernels prefer nChw16c.
  bool native_bf16_convolutions = true;

  // Whether the target runs matmuls and convolutions natively in half dtype `h`: bf16 where
  // native_bf16_convolutions; f16 nowhere (oneDNN 2.6 has f16 kernels only on AVX512-FP16
  // CPUs). narrow-half-dense narrows dense ops to native dtypes only; widen-half-dense gives
  // the others their f32 kernels between casts.
  bool NativeHalfDense(DType h) const { return h == DType::kBF16 && native_bf16_convolutions; }
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual std::string name() const = 0;
  virtual bool Run(Graph& graph, PassContext& ctx) = 0;
};

class PassManager {
 public:
  void Add(std::unique_ptr<Pass> pass, std::string why);
  // Runs every pass once, in order. Returns whether any changed the graph.
  bool Run(Graph& graph, PassContext& ctx) const;
  std::vector<std::string> PassNames() const;

 private:
  struct Entry {
    std::unique_ptr<Pass> pass;
    std::string why;
  };
  std::vector<Entry> entries_;
};

enum class PipelineKind { kInference, kTraining };
// The declarative pipelines (pipelines.cc).
PassManager BuildPipeline(PipelineKind kind);
// A single pass by name (for tools and tests); throws InvalidInput for unknown names.
std::unique_ptr<Pass> CreatePass(const std::string& name);

}  // namespace tg
