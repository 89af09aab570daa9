// Sinusoidal positional encodings: the functional C++ API.
//
// Each function calls the registered dispatcher op of the same name
// (torch.ops.posemb.* in Python), so C++ and Python run the same kernels,
// autograd and checks.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <optional>
#include <string>

namespace posemb {

/// y = x * scale + PE(position), with PE computed on the fly (no table).
///
/// x: (batch, seq, dim) or (seq, batch, dim) (choose with seq_dim), or
///    (seq, dim); any strides; float32/float64/float16/bfloat16.
/// Positions, one of:
///   positions: integer tensor broadcastable to (batch, seq), stride 0 allowed;
///   offsets:   integer tensor (batch,): token t of sequence b is at offsets[b] + t;
///   offset:    token t is at offset + t (the default, offset 0).
/// layout: "interleaved" or "half"; freqs: "vaswani" or "fairseq".
/// padding_idx: where given, the encoding of that position is zero (fairseq).
at::Tensor sinusoidal_add(const at::Tensor& x,
                          const std::optional<at::Tensor>& positions = std::nullopt,
                          const std::optional<at::Tensor>& offsets = std::nullopt,
                          int64_t offset = 0, int64_t seq_dim = -2,
                          const std::string& layout = "interleaved",
                          const std::string& freqs = "vaswani", double base = 10000.0,
                          double scale = 1.0, std::optional<int64_t> padding_idx = std::nullopt);

/// In-place sinusoidal_add: x = x * scale + PE(position). Returns x.
at::Tensor& sinusoidal_add_(at::Tensor& x,
                            const std::optional<at::Tensor>& positions = std::nullopt,
                            const std::optional<at::Tensor>& offsets = std::nullopt,
                            int64_t offset = 0, int64_t seq_dim = -2,
                            const std::string& layout = "interleaved",
                            const std::string& freqs = "vaswani", double base = 10000.0,
                            double scale = 1.0,
                            std::optional<int64_t> padding_idx = std::nullopt);

/// Gradient of sinusoidal_add with respect to x: grad * scale.
at::Tensor sinusoidal_add_backward(const at::Tensor& grad, double scale);

/// The encoding of positions offset .. offset + num_positions - 1 as a
/// (num_positions, dim) table, for those who want the table itself.
at::Tensor sinusoidal_table(int64_t num_positions, int64_t dim, int64_t offset = 0,
                            const std::string& layout = "interleaved",
                            const std::string& freqs = "vaswani", double base = 10000.0,
                            std::optional<int64_t> padding_idx = std::nullopt,
                            at::TensorOptions options = {});

/// Padding-aware positions (fairseq's rule): pads keep position padding_idx,
/// other tokens count up from padding_idx + 1 along the last dimension.
at::Tensor make_positions(const at::Tensor& input_ids, int64_t padding_idx);

}  // namespace posemb
