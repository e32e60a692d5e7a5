#include "tiles/ipu_target.h"

#include "support/error.h"

namespace tg::tiles {

namespace {

// Colossus Mk2 GC200, as in the IPU-M2000 (4 per machine).
// Published (Graphcore's GC200 / IPU-M2000 product pages and datasheet, 2020): 1,472 tiles,
// 8,832 threads (6 per tile), 900 MB In-Processor-Memory (~624 KiB per tile), 47.5 TB/s
// memory bandwidth, 8 TB/s IPU-Exchange (any pattern), 10 IPU-Links at 320 GB/s in all,
// 250 TFLOPS fp16 (AI compute), 62.5 TFLOPS fp32, IPU-Fabric 2 x 100 Gb/s per machine.
// Derived: the clock from 250 TFLOPS = 1,472 tiles x 64 fp16 MACs x 2 x f  ->  1.33 GHz;
// per-tile rates = chip rate / 1,472 / clock (memory 24 B/cycle, exchange 4 B/cycle).
// Assumed (nothing published): sync 150 cycles on one IPU (order of the GC2 micro-benchmark
// literature), 1,500 across IPUs; 128 GB/s between two neighbouring IPUs (4 of the 10
// links); host streaming at one 100 Gb/s link; 32 KiB base code per tile, 24 bytes of
// control code per program step, 16 bytes of state per vertex plus 8 per operand.
IpuTarget Gc200() {
  IpuTarget t;
  t.name = "GC200";
  t.generation = "ipu2";
  t.tiles_per_ipu = 1472;
  t.bytes_per_tile = 624.0 * 1024;
  t.workers_per_tile = 6;
  t.clock_hz = 1.33e9;
  t.macs_per_cycle_f16 = 64;
  t.macs_per_cycle_f32 = 16;
  t.memory_bytes_per_cycle = 24;
  t.vector_f32_per_cycle = 2;
  t.exchange_bytes_per_cycle = 4;
  t.exchange_setup_cycles = 50;
  t.sync_cycles = 150;
  t.external_sync_cycles = 1500;
  t.ipu_link_bytes_per_second = 128e9;
  t.gateway_bytes_per_second = 25e9;
  t.host_bytes_per_second = 12.5e9;
  t.ipus_per_machine = 4;
  t.base_code_bytes = 32 * 1024;
  t.control_bytes_per_step = 24;
  t.vertex_bytes = 16;
  t.peak_flops_f16 = 250e12;
  t.peak_flops_f32 = 62.5e12;
  t.sources = "Graphcore GC200 / IPU-M2000 published specifications (2020); per-tile rates "
              "derived; sync, link pairing, code and vertex sizes assumed";
  return t;
}

// Colossus Mk1 GC2, as on the C2 PCIe card (2 per card).
// Published (Graphcore's C2 card / GC2 material, 2018-2019): 1,216 tiles, 7,296 threads,
// 304 MB In-Processor-Memory (256 KiB per tile), 45 TB/s memory bandwidth, 125 TFLOPS fp16,
// 31.1 TFLOPS fp32, 8 TB/s exchange, 2.5 Tb/s card-to-card IPU-Links, PCIe Gen4 x16.
// Derived: clock 1.6 GHz (125 TFLOPS = 1,216 x 32 MACs x 2 x f); memory 23 B/cycle per tile.
// Assumed: as for the GC200.
IpuTarget Gc2() {
  IpuTarget t = Gc200();
  t.name = "GC2";
  t.generation = "ipu1";
  t.tiles_per_ipu = 1216;
  t.bytes_per_tile = 256.0 * 1024;
  t.clock_hz = 1.6e9;
  t.macs_per_cycle_f16 = 32;
  t.macs_per_cycle_f32 = 8;
  t.memory_bytes_per_cycle = 23;
  t.ipu_link_bytes_per_second = 64e9;
  t.gateway_bytes_per_second = 0;  // no gateway: cards are joined by IPU-Links and the host
  t.host_bytes_per_second = 31.5e9;
  t.ipus_per_machine = 2;
  t.peak_flops_f16 = 125e12;
  t.peak_flops_f32 = 31.1e12;
  t.sources = "Graphcore GC2 / C2 card published specifications (2018-2019); per-tile "
              "rates derived; sync, link pairing, code and vertex sizes assumed";
  return t;
}

}  // namespace

const IpuTarget& IpuTargetByName(const std::string& name) {
  static const IpuTarget gc200 = Gc200(), gc2 = Gc2();
  if (name == "GC200" || name == "ipu2" || name == "mk2") return gc200;
  if (name == "GC2" || name == "ipu1" || name == "mk1") return gc2;
  Fail(ErrorKind::kInvalidInput, "unknown IPU target '", name,
       "': expected GC200 (ipu2) or GC2 (ipu1)");
}

std::vector<std::string> IpuTargetNames() { return {"GC200", "GC2"}; }

}  // namespace tg::tiles
