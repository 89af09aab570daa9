// Internal: what the op glue of every family shares (each family's own is in
// csrc/X_op.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <cstddef>
#include <optional>

namespace posemb::detail {

/// An op's name as a template argument.
template <std::size_t N>
struct OpName {
  char value[N];
  // Implicit, so that Op<"posemb::x", Sig> takes the literal.
  constexpr OpName(const char (&name)[N]) { std::copy_n(name, N, value); }  // NOLINT
};

/// A posemb op as C++ calls it: its name and signature, declared once per op
/// in its family's X_op.h (`using RotaryOp = Op<"posemb::rotary", ...>`).
template <OpName name, typename Sig>
struct Op {
  /// The typed dispatcher handle, found at first use (every schema is
  /// registered by then) and kept.
  static const c10::TypedOperatorHandle<Sig>& handle() {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(name.value, "").template typed<Sig>();
    return op;
  }
};

/// An undefined tensor (the modules' "not given", autograd's saved "none") as
/// the ops' std::nullopt.
inline std::optional<at::Tensor> optional_tensor(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

/// The accumulation dtype of a table or activation dtype: fp64 for fp64,
/// fp32 otherwise (the kernels' acc_t).
inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

/// True while t's device's current stream records a CUDA graph. The checks
/// that read device values on the host (index ranges, cu_seqlens) would
/// sync, which capture forbids, so they are skipped then; the kernels never
/// read or write outside a table on their own (an index out of range gives
/// NaN in the output and no gradient), and eager calls keep the clear error.
inline bool stream_is_capturing(const at::Tensor& t) {
  const c10::Device device = t.device();
  if (device.is_cpu() || device.is_meta() || !c10::impl::hasDeviceGuardImpl(device.type())) {
    return false;
  }
  return c10::impl::getDeviceGuardImpl(device.type())->getStream(device).is_capturing();
}

}  // namespace posemb::detail
