#include "tiles/tile_estimate.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

#include "ops/memory_hint.h"
#include "ops/registry.h"
#include "support/error.h"
#include "tiles/half_regions.h"
#include "tiles/op_work.h"

namespace tg::tiles {

namespace {

constexpr double kDefaultAvailableMemory = 0.6;  // Poplar's default proportion
constexpr size_t kContributorsPerIpu = 12;

// Resident code of one codelet (per distinct op on a tile), by kind of work (assumed sizes).
double CodeletBytes(WorkKind kind) {
  switch (kind) {
    case WorkKind::kGemm: return 3072;
    case WorkKind::kReduction: return 1024;
    case WorkKind::kCollective: return 1024;
    case WorkKind::kElementwise: return 512;
    case WorkKind::kDataMovement: return 512;
    case WorkKind::kIpuTransfer: return 256;
  }
  return 512;
}

// The walk over the program: mappings, liveness and cycles, one IPU state per placement.
class Walker {
 public:
  Walker(const Program& program, const TileOptions& options)
      : program_(program), options_(options), target_(IpuTargetByName(options.target)),
        tiles_(target_.tiles_per_ipu), roots_(ViewRoots(*program.graph)), half_(program, roots_) {
    // A free cast's output is its input's tile memory: an alias, like a view.
    for (const Instruction& inst : program.instructions) {
      if (half_.IsFreeCast(inst)) roots_[inst.node->output(0)] = Root(inst.node->input(0));
    }
  }

  TileEstimate Run();

 private:
  struct IpuState {
    std::vector<double> live, peak_dynamic, peak_live, peak_temp, variables, vertex, scratch;
    std::vector<size_t> peak_step;
    double live_sum = 0;
    int cursor = 0;
    double cycles = 0;
    double program_steps = 0;  // compute sets + exchanges: control code on every tile
    std::map<std::string, std::pair<WorkKind, std::vector<char>>> codelets;
  };
  struct Placed {
    TileSpan span;
    int ipu = 0;
    size_t def = 0;       // the step that defines it
    size_t last_use = 0;  // the last step that reads it
    bool resident = false;  // variables, constants, hyperparameters: always alive
    bool dead = false;      // its last reader has run
    double copies = 1;      // pipelined: micro-batches whose copy is alive at once (stash)
  };

  const Value* Root(const Value* v) const {
    auto it = roots_.find(v);
    return it == roots_.end() ? v : it->second;
  }
  int IpuOf(int placement) const { return std::max(0, placement); }
  // The input whose buffer output `o` of `inst` reuses (lowering's in-place decision), or -1.
  static int InPlaceInput(const Instruction& inst, size_t o) {
    if (o >= inst.outputs.size()) return -1;
    const BufferRef& out = inst.outputs[o];
    for (size_t k = 0; k < inst.inputs.size(); ++k) {
      const BufferRef& in = inst.inputs[k];
      if (in.space == out.space && in.offset == out.offset && in.device == out.device) {
        return static_cast<int>(k);
      }
    }
    return -1;
  }
  IpuState& State(int ipu);
  double StashCopies(size_t def, int ipu, const Value* v) const;
  TileSpan MapNew(int ipu, double bytes, int max_tiles);
  void PlaceResident();
  void FindLastUses();
  void Step(size_t i);
  void Finish(TileEstimate& e);
  void FindContributors(TileEstimate& e) const;
  void AddContributors(TileEstimate& e, int ipu,
                       const std::unordered_map<const Value*, std::string>& source_of) const;

  const Program& program_;
  const TileOptions& options_;
  const IpuTarget& target_;
  const int tiles_;
  std::unordered_map<const Value*, const Value*> roots_;
  HalfRegions half_;
  std::vector<IpuState> ipus_;
  std::unordered_map<const Value*, Placed> placed_;
  std::unordered_map<const Value*, size_t> last_use_;  // root -> last step reading it
  std::vector<int> device_changes_;  // per step: how often the device changed before it
  int stages_ = 1;                   // IPUs of the program (pipeline stages)
  TileEstimate estimate_;
  double clock_ = 0;  // sharded execution: one clock for all IPUs
};

Walker::IpuState& Walker::State(int ipu) {
  while (static_cast<int>(ipus_.size()) <= ipu) {
    IpuState s;
    for (auto* v : {&s.live, &s.peak_dynamic, &s.peak_live, &s.peak_temp, &s.variables,
                    &s.vertex, &s.scratch}) {
      v->assign(tiles_, 0.0);
    }
    s.peak_step.assign(tiles_, 0);
    ipus_.push_back(std::move(s));
  }
  return ipus_[ipu];
}

TileSpan Walker::MapNew(int ipu, double bytes, int max_tiles) {
  IpuState& s = State(ipu);
  TileSpan span = MapLinearly(bytes, std::min(max_tiles, tiles_), s.cursor);
  s.cursor = (s.cursor + std::max(1, span.count)) % tiles_;
  return span;
}

// Pipelined execution (runtime/pipeline.h, 1F1B): IPU d of S has up to S - d micro-batches
// in flight, so a value its forward keeps for its backward (defined and last read on d, with
// other IPUs' work in between: the micro-batch left and came back) is alive S - d times over:
// the stash. Recomputation shrinks it to the stage's checkpoints.
double Walker::StashCopies(size_t def, int ipu, const Value* v) const {
  if (!options_.pipelined) return 1;
  auto lu = last_use_.find(v);
  if (lu == last_use_.end() || lu->second >= program_.instructions.size()) return 1;
  const Instruction& reader = program_.instructions[lu->second];
  if (IpuOf(reader.device) != ipu || device_changes_[lu->second] == device_changes_[def]) return 1;
  return std::max(1, stages_ - ipu);
}

// Weights, optimizer state, constants and hyperparameters live on the IPU of their first
// reader for the whole program, spread linearly; streamed inputs from the start of the step
// (stashed like activations when the IPU's backward reads them).
void Walker::PlaceResident() {
  std::unordered_map<const Value*, int> first_reader_ipu;
  std::unordered_map<const Value*, size_t> first_reader_step;
  for (size_t i = 0; i < program_.instructions.size(); ++i) {
    const Instruction& inst = program_.instructions[i];
    for (const Value* in : inst.node->inputs()) {
      first_reader_ipu.emplace(Root(in), inst.device);
      first_reader_step.emplace(Root(in), i);
    }
  }
  const Graph& g = *program_.graph;
  std::unordered_set<const Value*> updated;
  for (const VariableUpdate& u : g.updates()) updated.insert(u.variable);
  for (const auto* list : {&g.variables(), &g.constants(), &g.hyperparams()}) {
    for (const Value* v : *list) {
      auto it = first_reader_ipu.find(v);
      // Nothing reads or writes it (e.g. the second name of a tied weight): not on a tile.
      if (it == first_reader_ipu.end() && !updated.count(v)) continue;
      int ipu = it == first_reader_ipu.end() ? 0 : IpuOf(it->second);
      Placed p;
      p.ipu = ipu;
      p.resident = true;
      p.span = MapNew(ipu, half_.Bytes(v), tiles_);
      AddSpan(State(ipu).variables, p.span);
      placed_[v] = p;
    }
  }
  // Streamed inputs: alive from the start of the step to their last use.
  for (const Value* v : g.inputs()) {
    auto it = first_reader_ipu.find(v);
    int ipu = it == first_reader_ipu.end() ? 0 : IpuOf(it->second);
    Placed p;
    p.ipu = ipu;
    p.span = MapNew(ipu, half_.Bytes(v), tiles_);
    auto first = first_reader_step.find(v);
    if (first != first_reader_step.end()) p.copies = StashCopies(first->second, ipu, v);
    IpuState& s = State(ipu);
    AddSpan(s.live, p.span, p.copies);
    s.live_sum += p.span.bytes * p.copies;
    placed_[v] = p;
  }
}

void Walker::FindLastUses() {
  const size_t n = program_.instructions.size();
  std::unordered_map<const Value*, size_t> last;
  for (size_t i = 0; i < n; ++i) {
    for (const Value* in : program_.instructions[i].node->inputs()) last[Root(in)] = i;
  }
  for (const Value* out : program_.graph->outputs()) last[Root(out)] = n;
  for (const UpdateCopy& u : program_.update_copies) {
    if (u.value != nullptr) last[Root(u.value)] = n;
  }
  last_use_ = std::move(last);
  device_changes_.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const int device = IpuOf(program_.instructions[i].device);
    stages_ = std::max(stages_, device + 1);
    if (i > 0) {
      const bool changed = device != IpuOf(program_.instructions[i - 1].device);
      device_changes_[i] = device_changes_[i - 1] + (changed ? 1 : 0);
    }
  }
}

// One instruction: its outputs are mapped and become alive, its temporaries are alive
// while it runs (the per-tile peak is taken then), and the values it reads last die.
void Walker::Step(size_t i) {
  const Instruction& inst = program_.instructions[i];
  if (half_.IsFreeCast(inst)) return;  // nothing to do on an IPU (an alias of its input)
  const Node& node = *inst.node;
  const int ipu = IpuOf(inst.device);
  IpuState& s = State(ipu);
  OpSite site;
  site.node = &node;
  site.target = &target_;
  double proportion = ipu < static_cast<int>(options_.available_memory_proportion.size())
                          ? options_.available_memory_proportion[ipu]
                          : kDefaultAvailableMemory;
  if (HasAttr(node.attrs(), kAvailableMemoryAttr)) {  // set_available_memory on this op
    proportion = GetFloat(node.attrs(), kAvailableMemoryAttr);
  }
  site.available_bytes_per_tile = proportion * target_.bytes_per_tile;
  site.half = !node.outputs().empty() && half_.IsHalf(node.output(0));
  for (const Value* in : node.inputs()) {
    auto it = placed_.find(Root(in));
    bool here = it != placed_.end() && it->second.ipu == ipu;
    site.inputs.push_back(here ? it->second.span : TileSpan{});
    site.input_resident.push_back(here && it->second.resident);
  }
  // Outputs that get new tile memory (not views, not updates written into a variable), and
  // for each the input whose buffer lowering let it reuse in place (-1: none).
  std::vector<const Value*> fresh;
  std::vector<int> reuses;
  std::vector<bool> crosses_segments;  // pipelined: in the slot arena (see StashCopies)
  for (size_t o = 0; o < node.outputs().size(); ++o) {
    BufferSpace space = o < inst.outputs.size() ? inst.outputs[o].space : BufferSpace::kArena;
    if (space == BufferSpace::kArena || space == BufferSpace::kWorking) {
      fresh.push_back(node.output(o));
      reuses.push_back(InPlaceInput(inst, o));
      crosses_segments.push_back(space == BufferSpace::kArena);
    }
  }
  const WorkKind kind = ClassifyOp(node);
  auto map_output = [&](const Value* v, int max_tiles) {
    double bytes = half_.Bytes(v);
    if (kind == WorkKind::kElementwise) {  // computed where a same-sized operand lies
      for (const TileSpan& in : site.inputs) {
        if (!in.empty() && in.bytes == bytes) return in;
      }
    }
    return MapNew(ipu, bytes, max_tiles);
  };
  if (kind != WorkKind::kGemm && !node.outputs().empty()) {
    site.output = map_output(node.output(0), tiles_);
  }
  int gemm_tiles = 0;
  OpWork work = EstimateOp(site, &gemm_tiles);
  if (kind == WorkKind::kGemm) site.output = map_output(node.output(0), gemm_tiles);
  for (size_t o = 0; o < fresh.size(); ++o) {
    Placed p;
    p.ipu = ipu;
    p.def = i;
    // Written in place over a dying input: that input's tile memory, handed over.
    auto reused = reuses[o] < 0 ? placed_.end() : placed_.find(Root(node.input(reuses[o])));
    if (reused != placed_.end() && reused->second.ipu == ipu && !reused->second.resident &&
        !reused->second.dead && reused->second.span.bytes == half_.Bytes(fresh[o])) {
      p.span = reused->second.span;
      p.copies = crosses_segments[o] ? StashCopies(i, ipu, fresh[o]) : 1;
      // A stashed output over a value of one micro-batch: its other micro-batches' copies.
      AddSpan(s.live, p.span, p.copies - reused->second.copies);
      s.live_sum += p.span.bytes * (p.copies - reused->second.copies);
      reused->second.dead = true;  // its bytes now belong to the output
      reused->second.last_use = i;
      if (fresh[o] == node.output(0)) site.output = p.span;
    } else {
      p.span = fresh[o] == node.output(0) ? site.output : map_output(fresh[o], tiles_);
      if (crosses_segments[o]) p.copies = StashCopies(i, ipu, fresh[o]);
      AddSpan(s.live, p.span, p.copies);
      s.live_sum += p.span.bytes * p.copies;
    }
    placed_[fresh[o]] = p;
  }
  // The op's temporaries and resident vertex state, on the tiles it uses.
  TileSpan op_tiles;
  op_tiles.first = site.output.empty() ? s.cursor : site.output.first;
  op_tiles.count = std::min(tiles_, std::max(1, work.tiles_used));
  op_tiles.bytes_per_tile = work.temp_bytes_per_tile;
  op_tiles.bytes = work.temp_bytes_per_tile * op_tiles.count;
  AddSpan(s.scratch, op_tiles);
  double step_max = 0;
  for (int t = 0; t < tiles_; ++t) {
    double now = s.live[t] + s.scratch[t];
    step_max = std::max(step_max, now);
    if (now > s.peak_dynamic[t]) {
      s.peak_dynamic[t] = now;
      s.peak_live[t] = s.live[t];
      s.peak_temp[t] = s.scratch[t];
      s.peak_step[t] = i;
    }
  }
  AddSpan(s.scratch, op_tiles, -1.0);
  TileSpan vertex_tiles = op_tiles;
  vertex_tiles.bytes_per_tile = work.vertex_bytes_per_tile;
  vertex_tiles.bytes = work.vertex_bytes_per_tile * vertex_tiles.count;
  AddSpan(s.vertex, vertex_tiles);
  auto& codelet = s.codelets[node.op()];
  codelet.first = kind;
  if (codelet.second.empty()) codelet.second.assign(tiles_, 0);
  for (int k = 0; k < op_tiles.count; ++k) codelet.second[(op_tiles.first + k) % tiles_] = 1;
  s.program_steps += 2.0 * work.compute_sets;  // each compute set with its exchange

  ComputeSetEstimate cs;
  cs.instruction = i;
  cs.ipu = ipu;
  cs.name = node.Describe();
  cs.op = node.op();
  cs.source = node.source();
  cs.kind = WorkKindName(kind);
  cs.sync_cycles = work.sync_cycles;
  cs.exchange_cycles = work.exchange_cycles;
  cs.compute_cycles = work.compute_cycles;
  cs.link_cycles = work.link_cycles;
  cs.tiles_used = op_tiles.count;
  cs.start_cycle = options_.pipelined ? s.cycles : clock_;
  s.cycles += cs.cycles();
  clock_ += cs.cycles();
  estimate_.compute_sets.push_back(std::move(cs));
  estimate_.liveness.push_back(
      {i, ipu, node.op(), s.live_sum + op_tiles.bytes, step_max, s.live_sum});

  // Values read for the last time here (and outputs nobody reads) die.
  auto kill = [&](const Value* v) {
    auto it = placed_.find(v);
    if (it == placed_.end() || it->second.resident || it->second.dead) return;
    IpuState& owner = State(it->second.ipu);
    AddSpan(owner.live, it->second.span, -it->second.copies);
    owner.live_sum -= it->second.span.bytes * it->second.copies;
    it->second.dead = true;
    it->second.last_use = i;
  };
  for (const Value* in : node.inputs()) {
    const Value* r = Root(in);
    auto lu = last_use_.find(r);
    if (lu != last_use_.end() && lu->second == i) kill(r);
  }
  for (const Value* out : fresh) {
    if (!last_use_.count(out)) kill(out);
  }
}

void Walker::Finish(TileEstimate& e) {
  const double capacity = target_.bytes_per_tile;
  for (size_t ipu = 0; ipu < ipus_.size(); ++ipu) {
    IpuState& s = ipus_[ipu];
    IpuMemory m;
    m.variables = s.variables;
    m.activations = s.peak_live;
    m.exchange = s.peak_temp;
    m.vertex_state = s.vertex;
    m.control_code_bytes = target_.control_bytes_per_step * s.program_steps;
    m.code.assign(tiles_, target_.base_code_bytes + m.control_code_bytes);
    for (const auto& [op, codelet] : s.codelets) {
      for (int t = 0; t < tiles_; ++t) m.code[t] += codelet.second[t] ? CodeletBytes(codelet.first) : 0;
    }
    m.total.assign(tiles_, 0);
    for (int t = 0; t < tiles_; ++t) {
      m.total[t] = m.variables[t] + m.activations[t] + m.exchange[t] + m.vertex_state[t] + m.code[t];
      m.total_bytes += m.total[t];
      if (m.total[t] > m.max_tile_bytes) {
        m.max_tile_bytes = m.total[t];
        m.max_tile = t;
      }
      if (m.total[t] > capacity) {
        ++m.overflowing_tiles;
        e.overflows.push_back({static_cast<int>(ipu), t, m.total[t], m.total[t] - capacity});
      }
    }
    m.cycles = s.cycles;
    e.fits &= m.overflowing_tiles == 0;
    e.ipus.push_back(std::move(m));
  }
  std::sort(e.overflows.begin(), e.overflows.end(),
            [](const TileOverflow& a, const TileOverflow& b) {
              if (a.over_by != b.over_by) return a.over_by > b.over_by;
              return std::make_pair(a.ipu, a.tile) < std::make_pair(b.ipu, b.tile);
            });
  if (e.overflows.size() > 32) e.overflows.resize(32);
}

// What fills each IPU's fullest tile at its peak (the worst IPU first): resident values,
// the values alive at its peak step and that step's temporaries, vertex state and code.
void Walker::FindContributors(TileEstimate& e) const {
  std::vector<int> order(e.ipus.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return e.ipus[a].max_tile_bytes > e.ipus[b].max_tile_bytes;
  });
  std::unordered_map<const Value*, std::string> source_of;  // a variable: its first reader's
  for (const Instruction& inst : program_.instructions) {
    for (const Value* in : inst.node->inputs()) source_of.emplace(Root(in), inst.node->source());
  }
  for (int ipu : order) AddContributors(e, ipu, source_of);
}

void Walker::AddContributors(TileEstimate& e, int ipu,
                             const std::unordered_map<const Value*, std::string>& source_of) const {
  const IpuMemory& m = e.ipus[ipu];
  const int tile = m.max_tile;
  const size_t peak = ipus_[ipu].peak_step[tile];
  std::vector<TileContributor> found;
  for (const auto& [v, p] : placed_) {
    if (p.ipu != ipu) continue;
    bool resident = v->kind() != ValueKind::kNodeOutput && v->kind() != ValueKind::kInput;
    size_t last = p.last_use;
    auto lu = last_use_.find(v);
    if (lu != last_use_.end()) last = lu->second;
    if (!resident && (p.def > peak || last < peak)) continue;
    double bytes = BytesOnTile(p.span, tile, tiles_) * p.copies;
    if (bytes <= 0) continue;
    TileContributor c;
    c.name = v->producer() ? v->producer()->Describe() : "%" + v->name();
    if (p.copies > 1) {
      c.name += " (x" + std::to_string(static_cast<int>(p.copies)) + ": micro-batches in flight)";
    }
    c.source = v->producer() ? v->producer()->source() : "";
    if (c.source.empty() && source_of.count(v)) c.source = source_of.at(v);
    c.kind = resident ? ValueKindName(v->kind()) : "activation";
    c.bytes_on_tile = bytes;
    c.ipu = ipu;
    c.tile = tile;
    found.push_back(std::move(c));
  }
  if (peak < program_.instructions.size() && m.exchange[tile] > 0) {
    const Node& n = *program_.instructions[peak].node;
    found.push_back({n.Describe() + " (received operands, partial sums)", n.source(),
                     "exchange", m.exchange[tile], ipu, tile});
  }
  found.push_back({"vertex state (all compute sets on this tile)", "", "vertex_state",
                   m.vertex_state[tile], ipu, tile});
  found.push_back({"code (runtime, control program, codelets)", "", "code", m.code[tile], ipu,
                   tile});
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.bytes_on_tile > b.bytes_on_tile;
  });
  if (found.size() > kContributorsPerIpu) found.resize(kContributorsPerIpu);
  e.largest.insert(e.largest.end(), found.begin(), found.end());
}

TileEstimate Walker::Run() {
  estimate_.target = target_;
  estimate_.replicas = std::max(1, options_.replicas);
  estimate_.pipelined = options_.pipelined;
  FindLastUses();
  PlaceResident();
  for (size_t i = 0; i < program_.instructions.size(); ++i) Step(i);
  State(0);
  // Streaming the step's inputs in and outputs out over the host link (not overlapped).
  const Graph& g = *program_.graph;
  double io = 0;
  for (const Value* v : g.inputs()) io += static_cast<double>(v->type().bytes());
  for (const Value* v : g.outputs()) io += static_cast<double>(v->type().bytes());
  estimate_.host_io_cycles = io / target_.host_bytes_per_second * target_.clock_hz;
  double compute = 0;
  for (const IpuState& s : ipus_) {
    compute = options_.pipelined ? std::max(compute, s.cycles) : compute + s.cycles;
  }
  estimate_.step_cycles = compute + estimate_.host_io_cycles;
  estimate_.num_ipus = static_cast<int>(ipus_.size());
  Finish(estimate_);
  FindContributors(estimate_);
  return std::move(estimate_);
}

}  // namespace

TileEstimate EstimateOnTiles(const Program& program, const TileOptions& options) {
  return Walker(program, options).Run();
}

}  // namespace tg::tiles
