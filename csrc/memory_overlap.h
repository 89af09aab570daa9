// Internal: exact overlap tests for the in-place ops, on any strides.
//
// ATen's own tests (at::has_internal_overlap, at::get_overlap_status) answer
// "too hard" for every tensor that is not dense: a q sliced from a fused qkv
// projection, an as_strided view. The in-place ops need a yes or a no there,
// since an element written twice is turned (or added to) twice. Whether two
// strided element sets meet is whether sum_d c_d * stride_d = delta has a
// solution with each c_d in its index range: a small search over the
// dimensions from the largest stride down, each step bounded by what the
// smaller strides can still reach, which for the layouts real programs make
// (slices and permutations of a dense tensor) walks one or two candidates per
// dimension. A search that would take too long answers "may overlap".
#pragma once

#include <ATen/core/Tensor.h>

namespace posemb::detail {

/// True when two different index tuples of t address the same element (an
/// expanded or as_strided view), or when that cannot be ruled out.
bool overlaps_itself(const at::Tensor& t);

/// True when a and b share a byte of memory (the same storage, some element
/// of one meeting some element of the other), or when that cannot be ruled
/// out. Tensors in different storages never do.
bool may_share_memory(const at::Tensor& a, const at::Tensor& b);

}  // namespace posemb::detail
