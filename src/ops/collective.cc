// Collective op family: all_reduce, reduce_scatter, all_gather, broadcast across the
// replicas of a replicated program (all processes). `group_size` is the number of replicas
// the collective spans (it fixes reduce_scatter's and all_gather's shapes); `reduction` is
// "sum" or "mean". Kernels delegate to the run's CollectiveRuntime (ops/collective.h); for a
// group of one they copy. reduce_scatter and all_gather split / concatenate along axis 0.
// Gradients: all_reduce's is all_reduce of the same reduction, reduce_scatter's is
// all_gather (divided by the group for "mean"), all_gather's is reduce_scatter "sum";
// broadcast has none (it only synchronizes initial values).
#include <cstring>

#include "ops/builder.h"
#include "ops/collective.h"
#include "ops/families.h"
#include "support/checked_math.h"
#include "support/error.h"

namespace tg {
namespace {

Reduction ReductionOf(const AttrMap& attrs, const std::string& op) {
  const std::string& r = GetString(attrs, "reduction");
  TG_CHECK(r == "sum" || r == "mean", kShape, op, ": expected reduction \"sum\" or \"mean\", got \"",
           r, "\"");
  return r == "sum" ? Reduction::kSum : Reduction::kMean;
}

int64_t GroupSize(const AttrMap& attrs, const std::string& op) {
  int64_t g = GetInt(attrs, "group_size");
  TG_CHECK(g >= 1 && g <= (int64_t{1} << 20), kShape, op, ": expected 1 <= group_size <= 2^20, got ",
           g);
  return g;
}

void CheckFloat(const TensorType& t, const std::string& op) {
  TG_CHECK(t.dtype == DType::kF32 || t.dtype == DType::kF64, kShape, op,
           ": expected an f32 or f64 tensor, got ", t.ToString());
}

// x [group_size * k, ...] -> [k, ...]: the rows one replica keeps (reduce_scatter,
// replica_shard).
std::vector<TensorType> OneReplicasRows(const InferContext& c, const std::string& op) {
  const TensorType& x = c.in(0);
  CheckFloat(x, op);
  int64_t g = GroupSize(c.attrs, op);
  TG_CHECK(x.rank() >= 1 && x.shape[0] % g == 0, kShape, op, ": expected a first dimension "
           "divisible by group_size ", g, ", got ", x.ToString());
  Shape out = x.shape;
  out[0] /= g;
  return {{x.dtype, out}};
}

// The kernel of every collective op (the same for every device kind: the data movement is
// the runtime's).
KernelFactory CollectiveFactory(CollectiveKind kind) {
  return [kind](const Node& n) -> Kernel {
    CollectiveCall call;
    call.kind = kind;
    const TensorType& in = n.input(0)->type();
    const TensorType& out = n.output(0)->type();
    call.dtype = in.dtype;
    call.in_count = in.numel();
    call.out_count = out.numel();
    if (kind == CollectiveKind::kAllReduce || kind == CollectiveKind::kReduceScatter ||
        kind == CollectiveKind::kAllReduceStart || kind == CollectiveKind::kAllReduceDone) {
      call.reduction = ReductionOf(n.attrs(), n.op());
    }
    if (kind == CollectiveKind::kBroadcast) call.root = static_cast<int>(GetInt(n.attrs(), "root"));
    size_t out_bytes = out.bytes();
    return [call, out_bytes](const KernelArgs& a) mutable {
      call.in = a.inputs[0];
      call.out = a.outputs[0];
      if (a.ctx != nullptr && a.ctx->collectives != nullptr) {
        a.ctx->collectives->Run(a.ctx->replica, call);
      } else if (out_bytes > 0 && a.outputs[0] != a.inputs[0]) {
        std::memcpy(a.outputs[0], a.inputs[0], out_bytes);  // a group of one
      }
    };
  };
}

OpSample Sample(Shape shape, AttrMap attrs) {
  OpSample s;
  s.inputs = {TensorType{DType::kF32, std::move(shape)}};
  s.attrs = std::move(attrs);
  return s;
}

AttrMap Group(int64_t size, const char* reduction) {
  return {{"group_size", size}, {"reduction", std::string(reduction)}};
}

void RegisterAllReduce(OpRegistry& r) {
  OpDef d;
  d.name = "all_reduce";
  d.attrs = {{"group_size", std::nullopt}, {"reduction", Attr(std::string("sum"))}};
  d.doc = "The sum (or mean) of x over the replicas of the group, on every replica.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    CheckFloat(c.in(0), "all_reduce");
    GroupSize(c.attrs, "all_reduce");
    ReductionOf(c.attrs, "all_reduce");
    return {c.in(0)};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    return {g.b().Op1("all_reduce", {g.GO(0)}, g.attrs())};
  };
  d.traits.side_effects = true;  // every replica must reach it: never removed, never folded
  d.kernels[DeviceKind::kCpu] = CollectiveFactory(CollectiveKind::kAllReduce);
  d.kernels[DeviceKind::kReference] = CollectiveFactory(CollectiveKind::kAllReduce);
  d.samples = {Sample({3, 4}, Group(1, "sum")), Sample({5}, Group(1, "mean"))};
  r.Register(std::move(d));
}

void RegisterReduceScatter(OpRegistry& r) {
  OpDef d;
  d.name = "reduce_scatter";
  d.attrs = {{"group_size", std::nullopt}, {"reduction", Attr(std::string("sum"))}};
  d.doc = "x [group_size * k, ...] reduced over the replicas; replica i keeps rows "
          "[i * k, (i + 1) * k).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    ReductionOf(c.attrs, "reduce_scatter");
    return OneReplicasRows(c, "reduce_scatter");
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    Builder& b = g.b();
    int64_t size = GetInt(g.attrs(), "group_size");
    Value* gathered = b.Op1("all_gather", {g.GO(0)}, {{"group_size", size}});
    if (GetString(g.attrs(), "reduction") == "mean") {
      gathered = b.MulScalar(gathered, 1.0 / static_cast<double>(size));
    }
    return {gathered};
  };
  d.traits.side_effects = true;
  d.kernels[DeviceKind::kCpu] = CollectiveFactory(CollectiveKind::kReduceScatter);
  d.kernels[DeviceKind::kReference] = CollectiveFactory(CollectiveKind::kReduceScatter);
  d.samples = {Sample({4, 3}, Group(1, "sum")), Sample({6}, Group(1, "mean"))};
  r.Register(std::move(d));
}

void RegisterAllGather(OpRegistry& r) {
  OpDef d;
  d.name = "all_gather";
  d.attrs = {{"group_size", std::nullopt}};
  d.doc = "The replicas' x [k, ...] concatenated in replica order: [group_size * k, ...].";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    const TensorType& x = c.in(0);
    CheckFloat(x, "all_gather");
    int64_t g = GroupSize(c.attrs, "all_gather");
    TG_CHECK(x.rank() >= 1, kShape, "all_gather: expected rank >= 1, got ", x.ToString());
    Shape out = x.shape;
    out[0] = MulChecked(out[0], g);
    return {{x.dtype, out}};
  };
  d.grad = [](const GradContext& g) -> std::vector<Value*> {
    return {g.b().Op1("reduce_scatter", {g.GO(0)},
                      {{"group_size", GetInt(g.attrs(), "group_size")},
                       {"reduction", std::string("sum")}})};
  };
  d.traits.side_effects = true;
  d.kernels[DeviceKind::kCpu] = CollectiveFactory(CollectiveKind::kAllGather);
  d.kernels[DeviceKind::kReference] = CollectiveFactory(CollectiveKind::kAllGather);
  d.samples = {Sample({2, 3}, {{"group_size", int64_t{1}}})};
  r.Register(std::move(d));
}

// all_reduce split in two (see ops/collective.h): all_reduce_done(all_reduce_start(x)) is
// all_reduce(x); what is scheduled between them overlaps the exchange between processes.
void RegisterAllReduceHalves(OpRegistry& r) {
  for (const char* name : {"all_reduce_start", "all_reduce_done"}) {
    bool start = std::string(name) == "all_reduce_start";
    OpDef d;
    d.name = name;
    d.attrs = {{"group_size", std::nullopt}, {"reduction", Attr(std::string("sum"))}};
    d.doc = start ? "Starts all_reduce(x): x combined over this process's replicas, the "
                    "exchange with the other processes launched; the output is in flight."
                  : "Waits for the all_reduce that all_reduce_start began; its result.";
    d.infer = [name](const InferContext& c) -> std::vector<TensorType> {
      CheckFloat(c.in(0), name);
      GroupSize(c.attrs, name);
      ReductionOf(c.attrs, name);
      return {c.in(0)};
    };
    d.not_differentiable = true;  // built after autodiff, for gradients
    d.traits.side_effects = true;
    // Never widened from half: the done finds its start by the start's output buffer, and a
    // widened kernel's buffers are scratch copies. Half gradients are reduced as f32
    // (parallel/gradient_all_reduce.cc); a half operand is refused at verification.
    d.traits.half_native = true;
    CollectiveKind kind = start ? CollectiveKind::kAllReduceStart : CollectiveKind::kAllReduceDone;
    d.kernels[DeviceKind::kCpu] = CollectiveFactory(kind);
    d.kernels[DeviceKind::kReference] = CollectiveFactory(kind);
    d.samples = {Sample({3, 2}, Group(1, "mean"))};
    r.Register(std::move(d));
  }
}

void RegisterReplicaShard(OpRegistry& r) {
  OpDef d;
  d.name = "replica_shard";
  d.attrs = {{"group_size", std::nullopt}};
  d.doc = "Replica i's rows [i * k, (i + 1) * k) of x [group_size * k, ...] (no communication).";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    return OneReplicasRows(c, "replica_shard");
  };
  d.not_differentiable = true;  // used after autodiff, on parameters
  d.traits.side_effects = true;  // its value depends on the replica: never folded or merged
  d.kernels[DeviceKind::kCpu] = CollectiveFactory(CollectiveKind::kShard);
  d.kernels[DeviceKind::kReference] = CollectiveFactory(CollectiveKind::kShard);
  d.samples = {Sample({4, 2}, {{"group_size", int64_t{1}}})};
  r.Register(std::move(d));
}

void RegisterBroadcast(OpRegistry& r) {
  OpDef d;
  d.name = "broadcast";
  d.attrs = {{"group_size", std::nullopt}, {"root", Attr(int64_t{0})}};
  d.doc = "Replica `root`'s x, on every replica.";
  d.infer = [](const InferContext& c) -> std::vector<TensorType> {
    CheckFloat(c.in(0), "broadcast");
    int64_t g = GroupSize(c.attrs, "broadcast"), root = GetInt(c.attrs, "root");
    TG_CHECK(root >= 0 && root < g, kShape, "broadcast: expected 0 <= root < ", g, ", got ", root);
    return {c.in(0)};
  };
  d.not_differentiable = true;
  d.traits.side_effects = true;
  d.kernels[DeviceKind::kCpu] = CollectiveFactory(CollectiveKind::kBroadcast);
  d.kernels[DeviceKind::kReference] = CollectiveFactory(CollectiveKind::kBroadcast);
  d.samples = {Sample({3}, {{"group_size", int64_t{1}}, {"root", int64_t{0}}})};
  r.Register(std::move(d));
}

}  // namespace

void RegisterCollectiveOps(OpRegistry& r) {
  RegisterAllReduce(r);
  RegisterReduceScatter(r);
  RegisterAllGather(r);
  RegisterBroadcast(r);
  RegisterReplicaShard(r);
  RegisterAllReduceHalves(r);
}

}  // namespace tg
