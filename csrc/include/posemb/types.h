// Enumerations shared by the public API and the torch-free kernels.
#pragma once

namespace posemb {

/// Where the sin and cos of frequency i go in a row of `dim` channels.
///   Interleaved (tensor2tensor, "Attention is all you need" tutorials):
///     sin at 2i, cos at 2i+1.
///   Half (fairseq, Marian, M2M-100): sin at i, cos at dim/2 + i.
/// For an odd dim the last channel carries no encoding (it is zero).
enum class SinusoidalLayout : int { Interleaved = 0, Half = 1 };

/// How the frequencies w_i, i in [0, dim/2), are defined.
///   Vaswani: w_i = base^(-2i/dim).
///   Fairseq: w_i = exp(-i * ln(base) / (dim/2 - 1)).
enum class SinusoidalFreqs : int { Vaswani = 0, Fairseq = 1 };

}  // namespace posemb
