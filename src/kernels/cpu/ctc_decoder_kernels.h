// CTC beam-search decoding (PopTorch's ctc_beam_search_decoder): the most likely label
// sequences of log_probs [T, B, C] (time-major, as ctc_loss), sample i reading its first
// lengths[i] frames. Prefix beam search: a beam is a label sequence (repeats merged, blanks
// removed) with two log probabilities, of the frames so far ending in a blank (pb) and in its
// last label (pnb); its score is log(exp(pb) + exp(pnb)), the probability of the sequence
// summed over every alignment the beam kept. Each frame extends every beam by the blank (the
// same sequence), by its last label again (the same sequence, from pnb; from pb it is a new
// repeat) and by every other label, merges extensions that reach the same sequence, and keeps
// the `beam_width` best. With a beam as wide as the number of sequences, the scores are the
// exact sequence probabilities (tests compare them with sums over all alignments).
//
// Order is deterministic: by score, descending, then by sequence (lexicographic, a prefix
// before its extensions); NaN scores order as -inf. Outputs: scores [B, top_paths] (the log
// probabilities, in log_probs' type), lengths [B, top_paths] and paths [B, top_paths, T]
// (int32; a path's labels, then zeros). Where fewer than top_paths sequences exist (an empty
// input has only the empty one), the rest have score -inf and length 0.
//
// Arithmetic is in double; lengths outside [0, T] raise a Runtime error. The *Ref kernel is
// the same search over an ordered map of sequences (the fast one hashes them incrementally).
#pragma once

#include <cstdint>

#include "kernels/cpu/ctc_kernels.h"

namespace tg::cpu {

struct CtcDecodeParams {
  int64_t t = 0, b = 0, c = 0;  // log_probs [t, b, c]
  int64_t blank = 0;
  int64_t beam_width = 1;
  int64_t top_paths = 1;  // <= beam_width
};

template <typename T>
void CtcBeamSearch(const T* log_probs, IntView lengths, T* scores, int32_t* path_lengths,
                   int32_t* paths, const CtcDecodeParams& p);
template <typename T>
void CtcBeamSearchRef(const T* log_probs, IntView lengths, T* scores, int32_t* path_lengths,
                      int32_t* paths, const CtcDecodeParams& p);

}  // namespace tg::cpu
