// Broadcasting and its inverse, reduction, over dense row-major tensors.
//
// Broadcast<N> walks an output in flat order as runs along its innermost dim, handing each run
// the element offsets of N inputs that broadcast to it (numpy rules, right-aligned). Dims of
// size 1 are dropped and neighbouring dims merged wherever every operand stays linear, so a
// same-shape op is one run per chunk and a bias add is runs of a row.
//
// Reduction sums a tensor over a set of dims (sum, mean, sum_to, the loss reductions). Its
// result does not depend on the thread count: every output element is summed in an order fixed
// by the shapes alone, and when there are too few outputs to keep threads busy the reduced
// range is cut into chunks fixed by the shapes too, whose partials are added in chunk order.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/cpu_util.h"

namespace edgetune {
namespace cpu {

template <int N>
struct Broadcast {
  int rank = 0;
  int64_t numel = 0;
  int64_t shape[kMaxRank] = {0};
  int64_t stride[N][kMaxRank] = {{0}};  // element strides per input; 0 along broadcast dims

  // False when an input does not broadcast to `out` (numpy rules).
  bool init(const TensorView& out, const TensorView* const* ins) {
    const int r = out.rank;
    numel = out.numel();
    int64_t st[N][kMaxRank];
    for (int k = 0; k < N; ++k) {
      const TensorView& in = *ins[k];
      if (in.rank > r) return false;
      int64_t s = 1;
      for (int d = r - 1; d >= 0; --d) {
        int di = d - (r - in.rank);
        int64_t size = di >= 0 ? in.shape[di] : 1;
        if (size == out.shape[d]) {
          st[k][d] = size == 1 ? 0 : s;
        } else if (size == 1) {
          st[k][d] = 0;
        } else {
          return false;
        }
        s *= size;
      }
    }
    // drop size-1 dims, then merge a dim into the previous one when all operands stay linear
    rank = 0;
    for (int d = 0; d < r; ++d) {
      if (out.shape[d] == 1) continue;
      if (rank > 0) {
        bool merge = true;
        for (int k = 0; k < N; ++k) merge &= stride[k][rank - 1] == st[k][d] * out.shape[d];
        if (merge) {
          shape[rank - 1] *= out.shape[d];
          for (int k = 0; k < N; ++k) stride[k][rank - 1] = st[k][d];
          continue;
        }
      }
      shape[rank] = out.shape[d];
      for (int k = 0; k < N; ++k) stride[k][rank] = st[k][d];
      ++rank;
    }
    if (rank == 0) {  // a scalar (or all-ones) output
      rank = 1;
      shape[0] = numel;
      for (int k = 0; k < N; ++k) stride[k][0] = 0;
    }
    return true;
  }

  int64_t inner_stride(int k) const { return stride[k][rank - 1]; }

  // fn(out_offset, in_offsets[N], len) for each run of [begin, end) along the innermost dim;
  // input k's elements in the run are at in_offsets[k] + i * inner_stride(k).
  template <typename Fn>
  void for_runs(int64_t begin, int64_t end, const Fn& fn) const {
    if (begin >= end) return;
    int64_t idx[kMaxRank];
    int64_t off[N];
    for (int k = 0; k < N; ++k) off[k] = 0;
    int64_t rem = begin;
    for (int d = rank - 1; d >= 0; --d) {
      idx[d] = rem % shape[d];
      rem /= shape[d];
      for (int k = 0; k < N; ++k) off[k] += idx[d] * stride[k][d];
    }
    const int last = rank - 1;
    int64_t pos = begin;
    while (true) {
      int64_t len = std::min(shape[last] - idx[last], end - pos);
      fn(pos, static_cast<const int64_t*>(off), len);
      pos += len;
      if (pos >= end) break;
      // the run ended at the end of the innermost dim: carry into the outer dims
      for (int k = 0; k < N; ++k) off[k] -= idx[last] * stride[k][last];
      idx[last] = 0;
      for (int d = last - 1; d >= 0; --d) {
        for (int k = 0; k < N; ++k) off[k] += stride[k][d];
        if (++idx[d] < shape[d]) break;
        for (int k = 0; k < N; ++k) off[k] -= shape[d] * stride[k][d];
        idx[d] = 0;
      }
    }
  }
};

// ---- reduction ---------------------------------------------------------------------------------
// Accumulator per element type: sums of floats run in double, of integers in int64.
template <typename T>
struct AccOf {
  using type = double;
};
template <>
struct AccOf<int64_t> {
  using type = int64_t;
};
template <>
struct AccOf<int32_t> {
  using type = int64_t;
};

class Reduction {
 public:
  static constexpr int64_t kTile = 256;            // kept-inner columns summed per stack tile
  static constexpr int64_t kChunkElems = 1 << 16;  // input elements per split of the reduced range
  static constexpr int64_t kMaxSplits = 64;

  // `reduced[d]` marks the dims of `in` that are summed away; the output holds the other dims
  // in order (keepdim or not is the same memory layout).
  void init(const TensorView& in, const bool* reduced) {
    rank_ = 0;
    out_numel_ = 1;
    red_numel_ = 1;
    for (int d = 0; d < in.rank; ++d) {
      int64_t s = in.shape[d];
      if (reduced[d]) red_numel_ *= s; else out_numel_ *= s;
      if (s == 1) continue;
      if (rank_ > 0 && red_[rank_ - 1] == reduced[d]) {
        shape_[rank_ - 1] *= s;
        continue;
      }
      shape_[rank_] = s;
      red_[rank_] = reduced[d];
      ++rank_;
    }
    if (rank_ == 0) {
      shape_[0] = 1;
      red_[0] = false;
      rank_ = 1;
    }
    int64_t s = 1;
    for (int d = rank_ - 1; d >= 0; --d) {
      stride_[d] = s;
      s *= shape_[d];
    }
    inner_kept_ = !red_[rank_ - 1];
    // reduced dims (outermost first) walked for each output; with an inner reduced dim, that
    // dim is the contiguous run and is not part of the walk
    nred_ = 0;
    for (int d = 0; d < rank_; ++d)
      if (red_[d] && (inner_kept_ || d != rank_ - 1)) {
        rshape_[nred_] = shape_[d];
        rstride_[nred_] = stride_[d];
        ++nred_;
      }
    nkept_ = 0;
    for (int d = 0; d < rank_; ++d)
      if (!red_[d] && (!inner_kept_ || d != rank_ - 1)) {
        kshape_[nkept_] = shape_[d];
        kstride_[nkept_] = stride_[d];
        ++nkept_;
      }
    inner_ = shape_[rank_ - 1];
    if (out_numel_ == 0 || red_numel_ == 0) {  // run() fills the output with empty sums
      tiles_ = items_ = splits_ = 1;
      return;
    }
    // work items: output rows x column tiles (inner kept) or output elements (inner reduced)
    tiles_ = inner_kept_ ? (inner_ + kTile - 1) / kTile : 1;
    items_ = inner_kept_ ? (out_numel_ / inner_) * tiles_ : out_numel_;
    // too few items to keep threads busy on a big input: split the reduced range (flat
    // positions [0, red_numel_)) into chunks fixed by the shapes
    splits_ = 1;
    int64_t total = out_numel_ * red_numel_;
    if (items_ < 16 && total >= 2 * kChunkElems) splits_ = std::min<int64_t>({kMaxSplits, red_numel_, total / kChunkElems});
  }

  int64_t out_numel() const { return out_numel_; }
  int64_t reduced_numel() const { return red_numel_; }
  // Scratch for the partial sums of split reductions (8-byte accumulators).
  size_t workspace_bytes() const { return splits_ > 1 ? static_cast<size_t>(splits_ * out_numel_) * 8 : 0; }

  // out[o] = finish(sum of in over the reduced dims), finish(acc) -> U (the output element).
  template <typename T, typename U, typename Finish>
  void run(const KernelArgs& a, const T* in, U* out, void* workspace, const Finish& finish) const {
    using Acc = typename AccOf<T>::type;
    if (red_numel_ == 0 || out_numel_ == 0) {  // empty sums
      parallel_for(a, out_numel_, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) out[o] = finish(Acc(0));
      });
      return;
    }
    int64_t per_item = std::max<int64_t>(1, red_numel_ * (inner_kept_ ? std::min(inner_, kTile) : 1));
    int64_t grain = std::max<int64_t>(1, kGrain / per_item);
    if (splits_ == 1) {
      parallel_for(a, items_, grain, [&](int64_t b, int64_t e) {
        for (int64_t it = b; it < e; ++it) item<T>(in, it, 0, red_numel_, [&](int64_t o, Acc v) { out[o] = finish(v); });
      });
      return;
    }
    Acc* part = static_cast<Acc*>(workspace);
    parallel_for(a, splits_ * items_, 1, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        int64_t s = j / items_, it = j % items_;
        int64_t p0 = red_numel_ * s / splits_, p1 = red_numel_ * (s + 1) / splits_;
        Acc* dst = part + s * out_numel_;
        item<T>(in, it, p0, p1, [&](int64_t o, Acc v) { dst[o] = v; });
      }
    });
    parallel_for(a, out_numel_, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        Acc acc = 0;
        for (int64_t s = 0; s < splits_; ++s) acc += part[s * out_numel_ + o];
        out[o] = finish(acc);
      }
    });
  }

 private:
  // Input offset of output row/element `o` (kept dims other than a kept inner dim).
  int64_t kept_offset(int64_t o) const {
    int64_t off = 0;
    for (int i = nkept_ - 1; i >= 0; --i) {
      off += (o % kshape_[i]) * kstride_[i];
      o /= kshape_[i];
    }
    return off;
  }

  // Calls visit(offset) for walk positions [w0, w1) of the reduced dims, in order.
  template <typename Visit>
  void walk(int64_t w0, int64_t w1, const Visit& visit) const {
    if (nred_ == 0) {
      if (w0 < w1) visit(int64_t{0});
      return;
    }
    int64_t idx[kMaxRank], off = 0, rem = w0;
    for (int i = nred_ - 1; i >= 0; --i) {
      idx[i] = rem % rshape_[i];
      rem /= rshape_[i];
      off += idx[i] * rstride_[i];
    }
    for (int64_t w = w0; w < w1; ++w) {
      visit(off);
      for (int i = nred_ - 1; i >= 0; --i) {
        off += rstride_[i];
        if (++idx[i] < rshape_[i]) break;
        off -= rshape_[i] * rstride_[i];
        idx[i] = 0;
      }
    }
  }

  // One work item over the flat reduced positions [p0, p1); emit(o, acc) per output element.
  template <typename T, typename Emit>
  void item(const T* in, int64_t it, int64_t p0, int64_t p1, const Emit& emit) const {
    using Acc = typename AccOf<T>::type;
    if (inner_kept_) {
      int64_t row = it / tiles_, c0 = (it % tiles_) * kTile;
      int64_t n = std::min(kTile, inner_ - c0);
      const T* base = in + kept_offset(row) + c0;
      Acc acc[kTile];
      for (int64_t j = 0; j < n; ++j) acc[j] = 0;
      walk(p0, p1, [&](int64_t off) {
        const T* src = base + off;
        for (int64_t j = 0; j < n; ++j) acc[j] += static_cast<Acc>(src[j]);
      });
      for (int64_t j = 0; j < n; ++j) emit(row * inner_ + c0 + j, acc[j]);
    } else {
      // positions run over (walk, inner); a split may start or end inside an inner run
      const T* base = in + kept_offset(it);
      const int64_t len = inner_;
      int64_t pos = p0;
      // four partial sums: independent adds pipeline, and the order is still fixed by shape
      Acc s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      walk(p0 / len, (p1 + len - 1) / len, [&](int64_t off) {
        int64_t j0 = pos % len, j1 = std::min(len, j0 + (p1 - pos));
        pos += j1 - j0;
        const T* src = base + off;
        int64_t j = j0;
        for (; j + 4 <= j1; j += 4) {
          s0 += static_cast<Acc>(src[j]);
          s1 += static_cast<Acc>(src[j + 1]);
          s2 += static_cast<Acc>(src[j + 2]);
          s3 += static_cast<Acc>(src[j + 3]);
        }
        for (; j < j1; ++j) s0 += static_cast<Acc>(src[j]);
      });
      emit(it, (s0 + s1) + (s2 + s3));
    }
  }

  int rank_ = 0;
  int64_t shape_[kMaxRank] = {0}, stride_[kMaxRank] = {0};
  bool red_[kMaxRank] = {false};
  bool inner_kept_ = true;
  int nred_ = 0, nkept_ = 0;
  int64_t rshape_[kMaxRank] = {0}, rstride_[kMaxRank] = {0};
  int64_t kshape_[kMaxRank] = {0}, kstride_[kMaxRank] = {0};
  int64_t inner_ = 1, tiles_ = 1, items_ = 1, splits_ = 1;
  int64_t out_numel_ = 1, red_numel_ = 1;
};

}  // namespace cpu
}  // namespace edgetune
