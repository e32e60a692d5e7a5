// IpuTarget: a tile machine described as data: the figures the tile planner and the cost
// model (src/tiles/) read, one struct per IPU generation. Every figure names its source in
// ipu_target.cc: Graphcore's published specifications where they exist, derived from them
// (per tile, per cycle) where the datasheet gives a chip total, and stated assumptions where
// nothing is published (sync cost, code and vertex state sizes).
#pragma once

#include <string>
#include <vector>

namespace tg::tiles {

struct IpuTarget {
  std::string name;            // "GC200"
  std::string generation;      // "ipu2" (PopTorch's POPTORCH_IPU_MODEL_VERSION spelling)
  int tiles_per_ipu = 0;
  double bytes_per_tile = 0;   // In-Processor-Memory of one tile
  int workers_per_tile = 0;    // hardware worker threads of a tile
  double clock_hz = 0;
  // Multiply-accumulates per cycle per tile of the matrix unit (AMP), by operand type.
  double macs_per_cycle_f32 = 0;
  double macs_per_cycle_f16 = 0;
  // Tile memory bandwidth (bytes per cycle per tile): what an elementwise vertex can stream.
  double memory_bytes_per_cycle = 0;
  // Vector width of the floating-point unit: f32 lanes per cycle (f16: twice as many).
  double vector_f32_per_cycle = 0;
  // Exchange: bytes a tile can receive per cycle, and the fixed cost of one exchange.
  double exchange_bytes_per_cycle = 0;
  double exchange_setup_cycles = 0;
  double sync_cycles = 0;           // a sync of all tiles of one IPU
  double external_sync_cycles = 0;  // a sync across IPUs
  // Between IPUs: one neighbour pair over IPU-Links, and machines over the gateway.
  double ipu_link_bytes_per_second = 0;
  double gateway_bytes_per_second = 0;
  double host_bytes_per_second = 0;  // host <-> IPU streaming (inputs, outputs)
  int ipus_per_machine = 0;          // IPUs joined by IPU-Links (an IPU-M2000 has 4)
  // Assumed code and vertex-state sizes (Poplar keeps both resident on every tile).
  double base_code_bytes = 0;          // runtime, supervisor and exchange code per tile
  double control_bytes_per_step = 0;   // control program per compute set / exchange, every tile
  double vertex_bytes = 0;             // state of one vertex (plus 8 per operand edge)
  // Published reference points (for the estimate's report): the chip's peak.
  double peak_flops_f16 = 0;
  double peak_flops_f32 = 0;
  std::string sources;  // where the figures come from
};

// "GC200" / "ipu2" (Mk2, IPU-M2000) or "GC2" / "ipu1" (Mk1, C2 card); throws InvalidInput
// naming the known targets otherwise.
const IpuTarget& IpuTargetByName(const std::string& name);
std::vector<std::string> IpuTargetNames();

}  // namespace tg::tiles
