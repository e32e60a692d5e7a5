#include "tiles/op_work.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "ops/registry.h"

namespace tg::tiles {

namespace {

constexpr double kVertexOverheadCycles = 60;  // vertex launch per worker (assumed)

bool IsHalf(const TensorType& t) { return t.dtype == DType::kF16 || t.dtype == DType::kBF16; }

double ElementBytes(const TensorType& t) {
  return t.numel() > 0 ? static_cast<double>(t.bytes()) / static_cast<double>(t.numel()) : 4;
}

// Cycles per element of the floating-point work beyond streaming it: transcendental
// functions take several instructions per element (assumed: 4 per f32 pair).
double ArithmeticCost(const std::string& op) {
  static const std::set<std::string> transcendental = {
      "exp", "expm1", "log", "log1p", "log2", "tanh", "sigmoid", "gelu", "gelu_backward",
      "erf", "silu", "softplus", "pow", "sqrt", "rsqrt", "sin", "cos", "elu", "mish",
      "tanh_backward", "sigmoid_backward", "silu_backward", "softplus_backward", "atan",
      "asin", "acos", "hardswish", "logit", "erfinv", "fused_elementwise"};
  return transcendental.count(op) ? 4.0 : 1.0;
}

double Sum(const std::vector<TileSpan>& spans) {
  double s = 0;
  for (const TileSpan& t : spans) s += t.bytes;
  return s;
}

double ExchangeCycles(const IpuTarget& t, double bytes_per_tile) {
  return bytes_per_tile > 0 ? bytes_per_tile / t.exchange_bytes_per_cycle + t.exchange_setup_cycles
                            : 0;
}

// Bytes a tile of `where` receives so that the inputs are where the op computes: an input
// mapped like `where` needs nothing; a same-sized one mapped elsewhere sends its share; a
// smaller one (broadcast) is sent whole, up to `where`'s share of a tile.
double ExchangeToward(const OpSite& s, const TileSpan& where) {
  double bytes = 0;
  for (const TileSpan& in : s.inputs) {
    if (in.empty() || (in == where && in.bytes == where.bytes)) continue;
    double share = in.bytes / std::max(1, where.count);
    bytes += in.bytes >= where.bytes ? share : std::min(in.bytes, where.bytes_per_tile);
  }
  return bytes;
}

// The type a value had before tilegraph widened it for the CPU kernels (ops/half_widening.h
// casts half operands to f32): the IPU's matrix unit would multiply the half values.
TensorType BeforeWidening(const Value* v) {
  const Node* p = v->producer();
  if (p != nullptr && p->op() == "cast" && IsHalf(p->input(0)->type())) {
    return p->input(0)->type();
  }
  return v->type();
}

OpWork Gemm(const OpSite& s, const GemmShape& shape, int* output_tiles) {
  OpWork w;
  w.kind = WorkKind::kGemm;
  // Half when either operand was half before widening (the other may come out of a fused
  // elementwise chain that also casts).
  TensorType a = BeforeWidening(s.node->input(0));
  if (!IsHalf(a) && s.node->inputs().size() > 1 && IsHalf(BeforeWidening(s.node->input(1)))) {
    a = BeforeWidening(s.node->input(1));
  }
  GemmOperands o;
  o.half = s.half || IsHalf(a);
  o.element_bytes = o.half ? 2 : ElementBytes(a);
  o.b_resident = s.input_resident.size() > 1 && s.input_resident[1];
  GemmPlan plan = PlanGemm(shape, o, *s.target, s.available_bytes_per_tile);
  w.tiles_used = std::max(1, plan.tiles_used);
  w.compute_sets = static_cast<int>(plan.serial) * (plan.pk > 1 ? 2 : 1);
  w.sync_cycles = s.target->sync_cycles * w.compute_sets;
  w.exchange_cycles = plan.exchange_cycles;
  // The reductions' syncs are counted in sync_cycles (one per compute set).
  w.compute_cycles = plan.compute_cycles + (plan.reduce_cycles > 0
                                                ? plan.reduce_cycles -
                                                      plan.serial * s.target->sync_cycles
                                                : 0);
  w.temp_bytes_per_tile = plan.temp_bytes_per_tile;
  w.gemm = plan;
  *output_tiles = w.tiles_used;
  return w;
}

OpWork Elementwise(const OpSite& s) {
  OpWork w;
  w.kind = WorkKind::kElementwise;
  const IpuTarget& t = *s.target;
  w.tiles_used = std::max(1, s.output.count);
  const TensorType& out = s.node->output(0)->type();
  const bool half = s.half || IsHalf(out);
  double elements = s.output.bytes_per_tile / (half ? 2 : ElementBytes(out));
  double lanes = t.vector_f32_per_cycle * (half ? 2 : 1);
  double arithmetic = elements * ArithmeticCost(s.node->op()) / lanes;
  double streamed = (Sum(s.inputs) + s.output.bytes) / w.tiles_used;  // every operand once
  double memory = streamed / t.memory_bytes_per_cycle;
  w.compute_cycles = std::max(arithmetic, memory) + kVertexOverheadCycles;
  double received = ExchangeToward(s, s.output);
  w.exchange_cycles = ExchangeCycles(t, received);
  w.temp_bytes_per_tile = received;
  w.sync_cycles = t.sync_cycles;
  return w;
}

OpWork Reduction(const OpSite& s) {
  OpWork w;
  w.kind = WorkKind::kReduction;
  const IpuTarget& t = *s.target;
  const TileSpan* largest = &s.output;
  for (const TileSpan& in : s.inputs) {
    if (in.bytes > largest->bytes) largest = &in;
  }
  w.tiles_used = std::max({1, largest->count, s.output.count});
  // Stage 1 on the tiles holding the input: two passes (norms: statistics, then scale).
  double in_per_tile = largest->bytes_per_tile;
  w.compute_cycles = 2 * in_per_tile / t.memory_bytes_per_cycle + kVertexOverheadCycles;
  // Stage 2: every output tile gathers the partials of the input tiles that feed it.
  double fan_in = std::max(1.0, static_cast<double>(largest->count) /
                                    std::max(1, s.output.count));
  double partials = std::min(fan_in, largest->bytes / std::max(1.0, s.output.bytes)) *
                    std::min(s.output.bytes_per_tile, 4096.0);
  w.compute_sets = 2;
  // Stage 1 computes where the reduced input lies: only the other operands (a norm's scale
  // and shift) are brought there.
  w.exchange_cycles = ExchangeCycles(t, partials) + ExchangeCycles(t, ExchangeToward(s, *largest));
  w.compute_cycles += partials / (4 * t.vector_f32_per_cycle) + kVertexOverheadCycles;
  // The partials land on the output's tiles; spread over the op's tiles for the estimate.
  w.temp_bytes_per_tile = partials * std::max(1, s.output.count) / w.tiles_used;
  w.sync_cycles = 2 * t.sync_cycles;
  return w;
}

OpWork DataMovement(const OpSite& s) {
  OpWork w;
  w.kind = WorkKind::kDataMovement;
  const IpuTarget& t = *s.target;
  w.tiles_used = std::max(1, s.output.count);
  // A rearrangement: every output byte may come from another tile.
  double received = s.output.bytes_per_tile;
  w.exchange_cycles = ExchangeCycles(t, received);
  w.temp_bytes_per_tile = received;
  w.compute_cycles = received / t.memory_bytes_per_cycle + kVertexOverheadCycles;
  w.sync_cycles = t.sync_cycles;
  return w;
}

// An all-reduce (or its pieces) over `group_size` replicas: a ring moves 2 (R - 1) / R of the
// bytes over the links; replicas beyond one machine go over the gateway.
OpWork Collective(const OpSite& s) {
  OpWork w;
  w.kind = WorkKind::kCollective;
  const IpuTarget& t = *s.target;
  w.tiles_used = std::max(1, s.output.count);
  double group = static_cast<double>(s.node->attrs().count("group_size")
                                          ? GetInt(s.node->attrs(), "group_size")
                                          : 1);
  double bytes = Sum(s.inputs);
  if (group > 1) {
    bool across_machines = group > t.ipus_per_machine && t.gateway_bytes_per_second > 0;
    double bandwidth = across_machines ? t.gateway_bytes_per_second : t.ipu_link_bytes_per_second;
    w.link_cycles = 2 * (group - 1) / group * bytes / bandwidth * t.clock_hz;
    w.sync_cycles = t.external_sync_cycles;
  }
  w.compute_cycles = bytes / w.tiles_used / t.memory_bytes_per_cycle + kVertexOverheadCycles;
  w.temp_bytes_per_tile = s.output.bytes_per_tile;  // the incoming half of the ring
  return w;
}

OpWork IpuTransfer(const OpSite& s) {
  OpWork w;
  w.kind = WorkKind::kIpuTransfer;
  const IpuTarget& t = *s.target;
  w.tiles_used = std::max(1, s.output.count);
  w.link_cycles = Sum(s.inputs) / t.ipu_link_bytes_per_second * t.clock_hz;
  w.sync_cycles = t.external_sync_cycles;
  return w;
}

}  // namespace

const char* WorkKindName(WorkKind kind) {
  switch (kind) {
    case WorkKind::kGemm: return "gemm";
    case WorkKind::kElementwise: return "elementwise";
    case WorkKind::kReduction: return "reduction";
    case WorkKind::kDataMovement: return "data_movement";
    case WorkKind::kCollective: return "collective";
    case WorkKind::kIpuTransfer: return "ipu_transfer";
  }
  return "?";
}

WorkKind ClassifyOp(const Node& node) {
  const OpDef& def = OpRegistry::Global().Get(node.op());
  const std::string& op = node.op();
  if (def.gemm) return WorkKind::kGemm;
  if (op == "stage_copy") return WorkKind::kIpuTransfer;
  if (op.rfind("all_reduce", 0) == 0 || op == "reduce_scatter" || op == "all_gather" ||
      op == "broadcast") {
    return WorkKind::kCollective;
  }
  if (def.traits.elementwise || def.elementwise || op == "fused_elementwise") {
    return WorkKind::kElementwise;
  }
  for (const char* word : {"reduce", "sum", "mean", "norm", "softmax", "loss", "argm", "var",
                           "std", "cumsum", "logsumexp", "max", "min", "prod"}) {
    if (op.find(word) != std::string::npos) return WorkKind::kReduction;
  }
  // Optimizer updates and other ops whose output is the size of their inputs stream like
  // elementwise ops; the rest rearrange data.
  if (!node.outputs().empty() && !node.inputs().empty()) {
    const double out = static_cast<double>(node.output(0)->type().bytes());
    bool same = true;
    for (const Value* in : node.inputs()) same &= static_cast<double>(in->type().bytes()) <= out;
    if (same && op.find("update") != std::string::npos) return WorkKind::kElementwise;
  }
  return WorkKind::kDataMovement;
}

OpWork EstimateOp(const OpSite& s, int* output_tiles) {
  *output_tiles = 0;
  const OpDef& def = OpRegistry::Global().Get(s.node->op());
  OpWork w;
  switch (ClassifyOp(*s.node)) {
    case WorkKind::kGemm: w = Gemm(s, def.gemm(*s.node), output_tiles); break;
    case WorkKind::kElementwise: w = Elementwise(s); break;
    case WorkKind::kReduction: w = Reduction(s); break;
    case WorkKind::kDataMovement: w = DataMovement(s); break;
    case WorkKind::kCollective: w = Collective(s); break;
    case WorkKind::kIpuTransfer: w = IpuTransfer(s); break;
  }
  // Vertices per tile and compute set: the matrix unit's codelets run one vertex per worker;
  // the others are one multi-worker vertex (Poplar's MultiVertex) per tile.
  const double edges = static_cast<double>(s.node->inputs().size() + s.node->outputs().size());
  const double vertices = w.kind == WorkKind::kGemm ? s.target->workers_per_tile : 1;
  w.vertex_bytes_per_tile = vertices * w.compute_sets * (s.target->vertex_bytes + 8 * edges);
  return w;
}

}  // namespace tg::tiles
