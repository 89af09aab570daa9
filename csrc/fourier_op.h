// Internal: the op handles of fourier_features and its backward.
#pragma once

#include <ATen/core/Tensor.h>

#include "op.h"

namespace posemb::detail {

using FourierFeaturesOp = Op<"posemb::fourier_features", at::Tensor(const at::Tensor&, const at::Tensor&)>;
using FourierFeaturesBackwardOp =
    Op<"posemb::fourier_features_backward", at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>;

}  // namespace posemb::detail
