#include "memory_overlap.h"

#include <ATen/MemoryOverlap.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace posemb::detail {
namespace {

// One unknown of sum_v c_v * stride_v = target: stride > 0, lo <= c_v <= hi.
struct Term {
  int64_t stride, lo, hi;
};

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }
int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// Depth-first over the terms, largest stride first. reach_lo[v] and
// reach_hi[v] bound what terms v.. can still add, so each level tries only
// the c_v that leave a reachable rest.
class Search {
 public:
  explicit Search(std::vector<Term> terms) : terms_(std::move(terms)) {
    // Equal strides are one unknown whose range is the sum of theirs.
    std::sort(terms_.begin(), terms_.end(), [](const Term& a, const Term& b) { return a.stride > b.stride; });
    std::vector<Term> merged;
    for (const Term& t : terms_) {
      if (!merged.empty() && merged.back().stride == t.stride) {
        merged.back().lo += t.lo;
        merged.back().hi += t.hi;
      } else {
        merged.push_back(t);
      }
    }
    terms_ = std::move(merged);
    reach_lo_.assign(terms_.size() + 1, 0);
    reach_hi_.assign(terms_.size() + 1, 0);
    for (size_t v = terms_.size(); v-- > 0;) {
      reach_lo_[v] = reach_lo_[v + 1] + terms_[v].lo * terms_[v].stride;
      reach_hi_[v] = reach_hi_[v + 1] + terms_[v].hi * terms_[v].stride;
    }
  }

  enum Answer { kNo, kYes, kGaveUp };

  // Is there a solution (one with some c_v != 0 when nonzero is asked)?
  Answer solve(int64_t target, bool nonzero) {
    budget_ = 1 << 16;
    return step(0, target, !nonzero);
  }

 private:
  Answer step(size_t v, int64_t rest, bool any_ok) {
    if (--budget_ < 0) return kGaveUp;
    if (v == terms_.size()) return rest == 0 && any_ok ? kYes : kNo;
    const Term& t = terms_[v];
    const int64_t first = std::max(t.lo, ceil_div(rest - reach_hi_[v + 1], t.stride));
    const int64_t last = std::min(t.hi, floor_div(rest - reach_lo_[v + 1], t.stride));
    for (int64_t c = first; c <= last; ++c) {
      const Answer a = step(v + 1, rest - c * t.stride, any_ok || c != 0);
      if (a != kNo) return a;
    }
    return kNo;
  }

  std::vector<Term> terms_;
  std::vector<int64_t> reach_lo_, reach_hi_;
  int64_t budget_ = 0;
};

}  // namespace

bool overlaps_itself(const at::Tensor& t) {
  if (t.numel() <= 1 || t.is_non_overlapping_and_dense()) return false;
  if (at::has_internal_overlap(t) == at::MemOverlap::Yes) return true;
  // Two index tuples i != i' meet when sum_d (i_d - i'_d) * stride_d = 0.
  std::vector<Term> terms;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t n = t.size(d), s = t.stride(d);
    if (n <= 1) continue;
    if (s == 0) return true;
    terms.push_back({s < 0 ? -s : s, -(n - 1), n - 1});
  }
  // Two dimensions of equal stride meet at (+1, -1), which the merged
  // unknown of the search could not tell from (0, 0).
  for (size_t i = 0; i < terms.size(); ++i) {
    for (size_t j = i + 1; j < terms.size(); ++j) {
      if (terms[i].stride == terms[j].stride) return true;
    }
  }
  return Search(std::move(terms)).solve(0, /*nonzero=*/true) != Search::kNo;
}

bool may_share_memory(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  switch (at::get_overlap_status(a, b)) {
    case at::MemOverlapStatus::No:
      return false;
    case at::MemOverlapStatus::Full:
    case at::MemOverlapStatus::Partial:  // both dense, their ranges meet
      return true;
    case at::MemOverlapStatus::TooHard:
      break;
  }
  if (!a.storage().is_alias_of(b.storage())) return false;
  // Element i of a covers bytes [A, A + ia), element j of b [B, B + ib);
  // they meet when A - B = e for some e in [-(ia - 1), ib - 1], i.e.
  // sum_d i_d sa_d - sum_d j_d sb_d - e = (b's start) - (a's start).
  const int64_t ia = static_cast<int64_t>(a.element_size()), ib = static_cast<int64_t>(b.element_size());
  std::vector<Term> terms{{1, -(ib - 1), ia - 1}};
  auto add = [&](const at::Tensor& t, int64_t bytes, int64_t sign) {
    for (int64_t d = 0; d < t.dim(); ++d) {
      const int64_t n = t.size(d), s = t.stride(d) * bytes;
      if (n <= 1 || s == 0) continue;
      // c = sign * index, index in [0, n - 1]; a negative stride flips it.
      const int64_t lo = sign > 0 ? 0 : -(n - 1), hi = sign > 0 ? n - 1 : 0;
      terms.push_back(s > 0 ? Term{s, lo, hi} : Term{-s, -hi, -lo});
    }
  };
  add(a, ia, +1);
  add(b, ib, -1);
  const int64_t target = b.storage_offset() * ib - a.storage_offset() * ia;
  return Search(std::move(terms)).solve(target, /*nonzero=*/false) != Search::kNo;
}

}  // namespace posemb::detail
