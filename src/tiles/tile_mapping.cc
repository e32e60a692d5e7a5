#include "tiles/tile_mapping.h"

#include <algorithm>
#include <cmath>

namespace tg::tiles {

TileSpan MapLinearly(double bytes, int tiles, int first, double grain_bytes,
                     double min_bytes_per_tile) {
  TileSpan s;
  s.bytes = bytes;
  if (bytes <= 0 || tiles <= 0) return s;
  double wanted = std::ceil(bytes / std::max(min_bytes_per_tile, grain_bytes));
  s.count = static_cast<int>(std::clamp(wanted, 1.0, static_cast<double>(tiles)));
  s.first = ((first % tiles) + tiles) % tiles;
  s.bytes_per_tile = std::ceil(bytes / s.count / grain_bytes) * grain_bytes;
  s.bytes_per_tile = std::min(s.bytes_per_tile, bytes);
  // Whole grains per tile can leave the last tiles empty: the span ends at the last byte.
  s.count = static_cast<int>(std::ceil(bytes / s.bytes_per_tile));
  return s;
}

namespace {
// The bytes on the i-th tile of the span: full tiles, then what is left on the last one.
double PieceBytes(const TileSpan& s, int i) {
  double before = s.bytes_per_tile * i;
  return std::clamp(s.bytes - before, 0.0, s.bytes_per_tile);
}
}  // namespace

void AddSpan(std::vector<double>& per_tile, const TileSpan& span, double sign) {
  const int tiles = static_cast<int>(per_tile.size());
  for (int i = 0; i < span.count; ++i) {
    per_tile[(span.first + i) % tiles] += sign * PieceBytes(span, i);
  }
}

double BytesOnTile(const TileSpan& span, int tile, int tiles) {
  if (span.count == 0) return 0;
  int i = ((tile - span.first) % tiles + tiles) % tiles;
  return i < span.count ? PieceBytes(span, i) : 0;
}

}  // namespace tg::tiles
