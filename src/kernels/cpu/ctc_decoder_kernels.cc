// CTC beam-search decoding; see ctc_decoder_kernels.h. The fast kernel runs one sample per
// task over the batch. Its candidates are (parent beam, label) pairs looked up by a hash
// chained along the sequence, so a frame costs O(beams x classes) without copying
// sequences; only the kept beams' sequences are materialized. The reference kernel keeps
// every candidate's sequence in an ordered map.
#include "kernels/cpu/ctc_decoder_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "support/error.h"

namespace tg::cpu {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Scores as the order sees them: NaN is the lowest.
double OrderKey(double score) { return std::isnan(score) ? kNegInf : score; }

void CheckLengths(IntView lengths, const CtcDecodeParams& p) {
  for (int64_t i = 0; i < p.b; ++i) {
    TG_CHECK(lengths[i] >= 0 && lengths[i] <= p.t, kRuntime,
             "ctc_beam_search_decoder: lengths[", i, "] = ", lengths[i], " out of range [0, ",
             p.t, "]");
  }
}

// Writes sample i's outputs from its beams in order (scores and sequences).
template <typename T>
void WriteSample(int64_t i, const std::vector<std::pair<double, std::vector<int32_t>>>& best,
                 T* scores, int32_t* path_lengths, int32_t* paths, const CtcDecodeParams& p) {
  for (int64_t k = 0; k < p.top_paths; ++k) {
    const int64_t row = i * p.top_paths + k;
    int32_t* path = paths + row * p.t;
    std::fill(path, path + p.t, 0);
    if (k < static_cast<int64_t>(best.size())) {
      const std::vector<int32_t>& seq = best[k].second;
      scores[row] = static_cast<T>(best[k].first);
      path_lengths[row] = static_cast<int32_t>(seq.size());
      std::copy(seq.begin(), seq.end(), path);
    } else {
      scores[row] = static_cast<T>(kNegInf);
      path_lengths[row] = 0;
    }
  }
}

// ---- fast kernel ------------------------------------------------------------------------

struct Beam {
  std::vector<int32_t> seq;
  uint64_t hash = 0;
  double pb = 0, pnb = kNegInf;
};

// A candidate sequence: its parent beam's sequence, followed by `label` unless it is -1.
struct Candidate {
  int32_t parent = 0;
  int32_t label = -1;
  uint64_t hash = 0;
  double pb = kNegInf, pnb = kNegInf, score = kNegInf;
};

uint64_t ChainHash(uint64_t h, int32_t label) {
  uint64_t x = h ^ (static_cast<uint64_t>(label) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
  x ^= x >> 31;
  return x * 0xbf58476d1ce4e5b9ULL;
}

class BeamSearch {
 public:
  explicit BeamSearch(const CtcDecodeParams& p) : p_(p) {}

  // Decodes one sample: frames rows[f * row_stride + c] for f < length.
  template <typename T>
  std::vector<std::pair<double, std::vector<int32_t>>> Run(const T* rows, int64_t row_stride,
                                                          int64_t length) {
    beams_.assign(1, Beam{{}, 0x51ed27092f1c3a5bULL, 0.0, kNegInf});
    std::vector<double> lp(static_cast<size_t>(p_.c));
    for (int64_t f = 0; f < length; ++f) {
      for (int64_t c = 0; c < p_.c; ++c) lp[c] = static_cast<double>(rows[f * row_stride + c]);
      Expand(lp);
      Prune();
    }
    std::vector<std::pair<double, std::vector<int32_t>>> out;
    for (Beam& b : beams_) out.emplace_back(LogAdd(b.pb, b.pnb), std::move(b.seq));
    return out;
  }

 private:
  int64_t Length(const Candidate& k) const {
    return static_cast<int64_t>(beams_[k.parent].seq.size()) + (k.label >= 0 ? 1 : 0);
  }
  int32_t At(const Candidate& k, int64_t i) const {
    const std::vector<int32_t>& s = beams_[k.parent].seq;
    return i < static_cast<int64_t>(s.size()) ? s[i] : k.label;
  }
  bool SameSequence(const Candidate& a, const Candidate& b) const {
    const int64_t n = Length(a);
    if (a.hash != b.hash || n != Length(b)) return false;
    for (int64_t i = 0; i < n; ++i) {
      if (At(a, i) != At(b, i)) return false;
    }
    return true;
  }
  bool Before(const Candidate& a, const Candidate& b) const {  // the sequence order
    const int64_t na = Length(a), nb = Length(b);
    for (int64_t i = 0; i < std::min(na, nb); ++i) {
      if (At(a, i) != At(b, i)) return At(a, i) < At(b, i);
    }
    return na < nb;
  }

  // The candidate for (parent, label), created with -inf probabilities when new.
  Candidate& Find(int32_t parent, int32_t label) {
    Candidate key;
    key.parent = parent;
    key.label = label;
    key.hash = label < 0 ? beams_[parent].hash : ChainHash(beams_[parent].hash, label);
    const size_t mask = slots_.size() - 1;
    for (size_t s = key.hash & mask;; s = (s + 1) & mask) {
      if (slots_[s] < 0) {
        slots_[s] = static_cast<int32_t>(cands_.size());
        cands_.push_back(key);
        return cands_.back();
      }
      Candidate& k = cands_[slots_[s]];
      if (SameSequence(k, key)) return k;
    }
  }

  void Expand(const std::vector<double>& lp) {
    cands_.clear();
    cands_.reserve(beams_.size() * static_cast<size_t>(p_.c));
    size_t slots = 16;
    while (slots < 2 * beams_.size() * static_cast<size_t>(p_.c)) slots *= 2;
    slots_.assign(slots, -1);
    for (int32_t j = 0; j < static_cast<int32_t>(beams_.size()); ++j) {
      const Beam& beam = beams_[j];
      const double total = LogAdd(beam.pb, beam.pnb);
      const int32_t last = beam.seq.empty() ? -1 : beam.seq.back();
      Candidate& same = Find(j, -1);
      same.pb = LogAdd(same.pb, total + lp[p_.blank]);
      if (last >= 0) same.pnb = LogAdd(same.pnb, beam.pnb + lp[last]);
      for (int32_t c = 0; c < static_cast<int32_t>(p_.c); ++c) {
        if (c == p_.blank) continue;
        Candidate& ext = Find(j, c);
        ext.pnb = LogAdd(ext.pnb, (c == last ? beam.pb : total) + lp[c]);
      }
    }
  }

  void Prune() {
    order_.resize(cands_.size());
    for (size_t k = 0; k < cands_.size(); ++k) {
      order_[k] = static_cast<int32_t>(k);
      cands_[k].score = OrderKey(LogAdd(cands_[k].pb, cands_[k].pnb));
    }
    const size_t keep = std::min<size_t>(cands_.size(), static_cast<size_t>(p_.beam_width));
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(),
                      [&](int32_t a, int32_t b) {
                        const Candidate &x = cands_[a], &y = cands_[b];
                        if (x.score != y.score) return x.score > y.score;
                        return Before(x, y);
                      });
    next_.resize(keep);
    for (size_t k = 0; k < keep; ++k) {
      const Candidate& cand = cands_[order_[k]];
      Beam& b = next_[k];
      b.seq = beams_[cand.parent].seq;
      if (cand.label >= 0) b.seq.push_back(cand.label);
      b.hash = cand.hash;
      b.pb = cand.pb;
      b.pnb = cand.pnb;
    }
    beams_.swap(next_);
  }

  const CtcDecodeParams& p_;
  std::vector<Beam> beams_, next_;
  std::vector<Candidate> cands_;
  std::vector<int32_t> slots_, order_;
};

// ---- reference kernel -------------------------------------------------------------------

template <typename T>
std::vector<std::pair<double, std::vector<int32_t>>> SearchRef(const T* rows, int64_t stride,
                                                               int64_t length,
                                                               const CtcDecodeParams& p) {
  using Seq = std::vector<int32_t>;
  struct Probs {
    double pb = kNegInf, pnb = kNegInf;
  };
  std::vector<std::pair<Seq, Probs>> beams = {{Seq{}, Probs{0.0, kNegInf}}};
  for (int64_t f = 0; f < length; ++f) {
    auto lp = [&](int64_t c) { return static_cast<double>(rows[f * stride + c]); };
    std::map<Seq, Probs> next;
    for (const auto& [seq, probs] : beams) {
      const double total = LogAdd(probs.pb, probs.pnb);
      Probs& same = next[seq];
      same.pb = LogAdd(same.pb, total + lp(p.blank));
      if (!seq.empty()) same.pnb = LogAdd(same.pnb, probs.pnb + lp(seq.back()));
      for (int64_t c = 0; c < p.c; ++c) {
        if (c == p.blank) continue;
        Seq ext = seq;
        ext.push_back(static_cast<int32_t>(c));
        const bool repeat = !seq.empty() && seq.back() == c;
        Probs& e = next[ext];
        e.pnb = LogAdd(e.pnb, (repeat ? probs.pb : total) + lp(c));
      }
    }
    beams.assign(next.begin(), next.end());
    std::stable_sort(beams.begin(), beams.end(), [](const auto& a, const auto& b) {
      return OrderKey(LogAdd(a.second.pb, a.second.pnb)) >
             OrderKey(LogAdd(b.second.pb, b.second.pnb));
    });
    if (static_cast<int64_t>(beams.size()) > p.beam_width) beams.resize(p.beam_width);
  }
  std::vector<std::pair<double, Seq>> out;
  for (auto& [seq, probs] : beams) out.emplace_back(LogAdd(probs.pb, probs.pnb), seq);
  return out;
}

}  // namespace

template <typename T>
void CtcBeamSearch(const T* log_probs, IntView lengths, T* scores, int32_t* path_lengths,
                   int32_t* paths, const CtcDecodeParams& p) {
  CheckLengths(lengths, p);
  ParallelFor(p.b, 1, [&](int64_t begin, int64_t end) {
    BeamSearch search(p);
    for (int64_t i = begin; i < end; ++i) {
      auto best = search.Run(log_probs + i * p.c, p.b * p.c, lengths[i]);
      WriteSample(i, best, scores, path_lengths, paths, p);
    }
  });
}

template <typename T>
void CtcBeamSearchRef(const T* log_probs, IntView lengths, T* scores, int32_t* path_lengths,
                      int32_t* paths, const CtcDecodeParams& p) {
  CheckLengths(lengths, p);
  for (int64_t i = 0; i < p.b; ++i) {
    auto best = SearchRef(log_probs + i * p.c, p.b * p.c, lengths[i], p);
    WriteSample(i, best, scores, path_lengths, paths, p);
  }
}

#define TG_INSTANTIATE(T)                                                                   \
  template void CtcBeamSearch<T>(const T*, IntView, T*, int32_t*, int32_t*,                 \
                                 const CtcDecodeParams&);                                   \
  template void CtcBeamSearchRef<T>(const T*, IntView, T*, int32_t*, int32_t*,              \
                                    const CtcDecodeParams&);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
