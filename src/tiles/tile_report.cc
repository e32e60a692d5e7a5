// TileEstimate's two renderings: the JSON report (read by tilegraph.ipu_report's HTML page
// and by tests; schema in docs/IPU_MODEL.md) and the out-of-memory message a user can act on.
#include <cmath>
#include <cstdio>
#include <sstream>

#include "tiles/tile_estimate.h"

namespace tg::tiles {

namespace {

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string Num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.6g", v);
  }
  return buf;
}

void Array(std::ostringstream& o, const std::vector<double>& values) {
  o << '[';
  for (size_t i = 0; i < values.size(); ++i) o << (i ? "," : "") << Num(std::round(values[i]));
  o << ']';
}

std::string KiB(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f KiB", bytes / 1024);
  return buf;
}

}  // namespace

std::string TileEstimate::ToJson(double samples_per_step) const {
  std::ostringstream o;
  const double seconds = seconds_per_step();
  o << "{\"format\":\"tilegraph-ipu-report\",\"version\":1,\"estimate\":true,";
  o << "\"target\":{\"name\":" << Quote(target.name) << ",\"generation\":"
    << Quote(target.generation) << ",\"tiles_per_ipu\":" << target.tiles_per_ipu
    << ",\"bytes_per_tile\":" << Num(target.bytes_per_tile) << ",\"clock_hz\":"
    << Num(target.clock_hz) << ",\"workers_per_tile\":" << target.workers_per_tile
    << ",\"base_code_bytes\":" << Num(target.base_code_bytes)
    << ",\"sources\":" << Quote(target.sources) << "},";
  o << "\"num_ipus\":" << num_ipus << ",\"replicas\":" << replicas
    << ",\"pipelined\":" << (pipelined ? "true" : "false")
    << ",\"fits\":" << (fits ? "true" : "false") << ",\"total_cycles\":" << Num(step_cycles)
    << ",\"host_io_cycles\":" << Num(host_io_cycles) << ",\"seconds_per_step\":"
    << Num(seconds) << ",\"samples_per_second\":"
    << (samples_per_step > 0 && seconds > 0 ? Num(samples_per_step * replicas / seconds)
                                            : "null")
    << ",";
  o << "\"ipus\":[";
  for (size_t i = 0; i < ipus.size(); ++i) {
    const IpuMemory& m = ipus[i];
    o << (i ? "," : "") << "{\"ipu\":" << i << ",\"max_tile_bytes\":" << Num(m.max_tile_bytes)
      << ",\"max_tile\":" << m.max_tile << ",\"total_bytes\":" << Num(m.total_bytes)
      << ",\"overflowing_tiles\":" << m.overflowing_tiles << ",\"cycles\":" << Num(m.cycles)
      << ",\"control_code_bytes\":" << Num(std::round(m.control_code_bytes)) << "}";
  }
  o << "],\"tile_memory\":[";
  for (size_t i = 0; i < ipus.size(); ++i) {
    const IpuMemory& m = ipus[i];
    o << (i ? "," : "") << "{\"ipu\":" << i << ",\"categories\":{\"variables\":";
    Array(o, m.variables);
    o << ",\"activations\":";
    Array(o, m.activations);
    o << ",\"exchange\":";
    Array(o, m.exchange);
    o << ",\"vertex_state\":";
    Array(o, m.vertex_state);
    o << ",\"code\":";
    Array(o, m.code);
    o << "},\"total\":";
    // The total is the sum of the rounded categories, so that the page's sums match it.
    std::vector<double> total(m.total.size());
    for (size_t t = 0; t < total.size(); ++t) {
      total[t] = std::round(m.variables[t]) + std::round(m.activations[t]) +
                 std::round(m.exchange[t]) + std::round(m.vertex_state[t]) +
                 std::round(m.code[t]);
    }
    Array(o, total);
    o << "}";
  }
  o << "],\"liveness\":[";
  for (size_t i = 0; i < liveness.size(); ++i) {
    const LiveStep& l = liveness[i];
    o << (i ? "," : "") << "{\"step\":" << l.step << ",\"ipu\":" << l.ipu
      << ",\"label\":" << Quote(l.label) << ",\"live_bytes\":" << Num(std::round(l.live_bytes))
      << ",\"activation_bytes\":" << Num(std::round(l.activation_bytes))
      << ",\"max_tile_bytes\":" << Num(std::round(l.max_tile_bytes)) << "}";
  }
  o << "],\"compute_sets\":[";
  for (size_t i = 0; i < compute_sets.size(); ++i) {
    const ComputeSetEstimate& c = compute_sets[i];
    o << (i ? "," : "") << "{\"step\":" << c.instruction << ",\"ipu\":" << c.ipu
      << ",\"name\":" << Quote(c.name) << ",\"op\":" << Quote(c.op) << ",\"kind\":"
      << Quote(c.kind) << ",\"source\":" << Quote(c.source) << ",\"start_cycle\":"
      << Num(std::round(c.start_cycle)) << ",\"sync_cycles\":" << Num(std::round(c.sync_cycles))
      << ",\"exchange_cycles\":" << Num(std::round(c.exchange_cycles))
      << ",\"compute_cycles\":" << Num(std::round(c.compute_cycles))
      << ",\"link_cycles\":" << Num(std::round(c.link_cycles)) << ",\"tiles_used\":"
      << c.tiles_used << "}";
  }
  o << "],\"overflows\":[";
  for (size_t i = 0; i < overflows.size(); ++i) {
    const TileOverflow& v = overflows[i];
    o << (i ? "," : "") << "{\"ipu\":" << v.ipu << ",\"tile\":" << v.tile << ",\"bytes\":"
      << Num(std::round(v.bytes)) << ",\"over_by\":" << Num(std::round(v.over_by)) << "}";
  }
  o << "],\"largest\":[";
  for (size_t i = 0; i < largest.size(); ++i) {
    const TileContributor& c = largest[i];
    o << (i ? "," : "") << "{\"name\":" << Quote(c.name) << ",\"source\":" << Quote(c.source)
      << ",\"kind\":" << Quote(c.kind) << ",\"bytes_on_tile\":"
      << Num(std::round(c.bytes_on_tile)) << ",\"tile\":" << c.tile << ",\"ipu\":" << c.ipu
      << "}";
  }
  o << "]}";
  return o.str();
}

std::string TileEstimate::OutOfMemoryMessage() const {
  if (fits) return "";
  std::ostringstream o;
  const double capacity = target.bytes_per_tile;
  o << "the program does not fit the emulated " << target.name << " IPU"
    << (num_ipus > 1 ? "s" : "") << " (tile memory estimate):";
  double activations = 0, temporaries = 0, resident = 0, total = 0;
  for (size_t i = 0; i < ipus.size(); ++i) {
    const IpuMemory& m = ipus[i];
    if (m.overflowing_tiles > 0) {
      o << "\n  IPU " << i << ": " << m.overflowing_tiles << " of " << target.tiles_per_ipu
        << " tiles exceed their " << KiB(capacity) << "; tile " << m.max_tile << " needs "
        << KiB(m.max_tile_bytes) << " (over by " << KiB(m.max_tile_bytes - capacity) << ")";
    }
    for (size_t t = 0; t < m.total.size(); ++t) {
      activations += m.activations[t];
      temporaries += m.exchange[t];
      resident += m.variables[t];
      total += m.total[t];
    }
  }
  if (!largest.empty()) {
    o << "\n  largest on IPU " << largest[0].ipu << " tile " << largest[0].tile << ":";
    for (size_t i = 0; i < largest.size() && i < 8 && largest[i].ipu == largest[0].ipu; ++i) {
      const TileContributor& c = largest[i];
      o << "\n    " << KiB(c.bytes_on_tile) << "  " << c.kind << "  " << c.name;
      if (!c.source.empty()) o << "  (" << c.source << ")";
    }
  }
  const double ipu_capacity = capacity * target.tiles_per_ipu;
  const int needed = static_cast<int>(std::ceil(total / ipu_capacity));
  o << "\n  what would help:";
  if (needed > num_ipus) {
    o << "\n    - pipeline the model over " << needed << " or more IPUs (poptorch.BeginBlock / "
      << "tilegraph's auto-partitioner): it needs about " << KiB(total / needed) << " x "
      << needed << " IPUs of memory in all";
  }
  if (total > 0) {
    o << "\n    - a smaller micro-batch: activations are " << std::lround(100 * activations / total)
      << "% of the tile memory used";
    o << "\n    - recomputation (Options().Training / BeginBlock checkpoints) to keep fewer "
         "activations alive";
    o << "\n    - a lower available memory proportion (setAvailableMemoryProportion / "
         "set_available_memory): matmul and convolution temporaries are "
      << std::lround(100 * temporaries / total) << "%";
    o << "\n    - half precision (model.half()): weights and optimizer state are "
      << std::lround(100 * resident / total) << "%";
  }
  return o.str();
}

}  // namespace tg::tiles
