// TileSpan: where one tensor lies on one IPU. The tile machine has no shared memory: every
// tensor is cut into pieces, each in one tile's memory. A span spreads a tensor's bytes
// evenly, in whole grains, over `count` consecutive tiles from `first` (wrapping around the
// IPU), which is Poplar's linear mapping (poputil::mapTensorLinearly) with one difference:
// successive tensors start where the previous one ended (a rotating cursor), so small
// tensors do not all pile onto tile 0.
#pragma once

#include <vector>

namespace tg::tiles {

struct TileSpan {
  int first = 0;
  int count = 0;
  double bytes = 0;          // the tensor's bytes on this IPU
  double bytes_per_tile = 0; // on each tile of the span (the last one may hold less)

  bool empty() const { return count == 0; }
  bool operator==(const TileSpan& o) const { return first == o.first && count == o.count; }
};

// Spreads `bytes` over at most `tiles` tiles from `first`, at least `min_bytes_per_tile` per
// tile (small tensors use few tiles), in multiples of `grain_bytes`.
TileSpan MapLinearly(double bytes, int tiles, int first, double grain_bytes = 8,
                     double min_bytes_per_tile = 256);

// Adds `sign * bytes on tile` for every tile of the span into `per_tile` (one entry per tile
// of the IPU).
void AddSpan(std::vector<double>& per_tile, const TileSpan& span, double sign = 1.0);

// The bytes of `span` on tile `tile` (0 when the tile is outside it).
double BytesOnTile(const TileSpan& span, int tile, int tiles);

}  // namespace tg::tiles
