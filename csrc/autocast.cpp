// Autocast rules (AutocastCPU, AutocastCUDA): what each op does when autocast
// has made its inputs' dtypes differ, e.g. the bf16 output of an nn.Linear
// meeting an fp32 position table. The tensors that are added together are
// promoted to the widest floating dtype among them, as `x + embedding(pos)`
// does in eager code; everything else is left as given (rotary's fp32
// inv_freq, index tensors). Ops of one floating input (sinusoidal_add,
// sinusoidal_table) fall through: they run in the input's dtype.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include <initializer_list>
#include <optional>

namespace posemb::detail {
namespace {

template <int... kArgs>
void promote_then_call(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  const size_t base = stack->size() - op.schema().arguments().size();
  std::optional<at::ScalarType> widest;
  for (int i : {kArgs...}) {
    const c10::IValue& v = (*stack)[base + i];
    if (v.isTensor() && v.toTensor().is_floating_point()) {
      const at::ScalarType t = v.toTensor().scalar_type();
      widest = widest ? at::promote_types(*widest, t) : t;
    }
  }
  for (int i : {kArgs...}) {
    c10::IValue& v = (*stack)[base + i];
    if (v.isTensor() && v.toTensor().is_floating_point() && v.toTensor().scalar_type() != *widest) {
      v = v.toTensor().to(*widest);
    }
  }
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  op.callBoxed(stack);
}

void register_rules(torch::Library& m) {
  m.impl("learned_add", torch::CppFunction::makeFromBoxedFunction<&promote_then_call<0, 1>>());
  m.impl("bert_embeddings", torch::CppFunction::makeFromBoxedFunction<&promote_then_call<1, 2, 3, 4, 5>>());
  m.impl("rotary", torch::CppFunction::makeFromBoxedFunction<&promote_then_call<0, 1>>());
}

}  // namespace

TORCH_LIBRARY_IMPL(posemb, AutocastCPU, m) { register_rules(m); }
TORCH_LIBRARY_IMPL(posemb, AutocastCUDA, m) { register_rules(m); }

}  // namespace posemb::detail
