"""Functional API: documented wrappers around ``torch.ops.posemb``."""
from __future__ import annotations

import operator
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "bert_embeddings", "fourier_features", "learned_add", "make_positions", "rotary", "sinusoidal_add",
    "sinusoidal_add_", "sinusoidal_table",
    "sincos_2d_add", "sincos_2d_positions", "sincos_2d_table", "timestep_embedding",
]


def make_positions(input_ids: Tensor, padding_idx: int) -> Tensor:
    """Padding-aware positions, fairseq's rule.

    Pad tokens (``input_ids == padding_idx``) keep position ``padding_idx``;
    the other tokens of each sequence count up from ``padding_idx + 1`` along
    the last dimension. Returns int64 positions shaped like ``input_ids``.
    """
    return torch.ops.posemb.make_positions(input_ids, padding_idx)


def section_sizes(caller: str, mrope_section) -> Optional[List[int]]:
    """mrope_section as a list of ints (numpy ints too); a float is an error,
    never truncated."""
    if mrope_section is None:
        return None
    try:
        return [operator.index(n) for n in mrope_section]
    except TypeError:
        raise ValueError(f"{caller}: mrope_section must be a sequence of ints, got {mrope_section!r}") from None


def _position_args(positions, offset, input_ids, padding_idx):
    """Maps the Python position arguments onto the op's (positions, offsets, offset)."""
    if input_ids is not None:
        if positions is not None:
            raise ValueError("posemb: pass positions or input_ids, not both")
        if padding_idx is None:
            raise ValueError("posemb: input_ids needs padding_idx")
        positions = make_positions(input_ids, padding_idx)
    if isinstance(offset, Tensor):
        return positions, offset, 0
    return positions, None, offset


def _call_sinusoidal(op, x, positions, offset, input_ids, padding_idx, seq_dim, layout, freqs, base, scale):
    # The common call goes straight to the op, the trailing arguments at the
    # schema's defaults left to the dispatcher: mapping the position
    # arguments and converting two strings, two floats and None cost about
    # 0.7 µs a call, an eighth of a small call (README: Performance).
    if (type(offset) is int and input_ids is None and padding_idx is None and layout == "interleaved"
            and freqs == "vaswani" and base == 10000.0 and scale == 1.0):
        return op(x, positions, None, offset, seq_dim)
    positions, offsets, offset = _position_args(positions, offset, input_ids, padding_idx)
    return op(x, positions, offsets, offset, seq_dim, layout, freqs, float(base), float(scale), padding_idx)


def sinusoidal_add(
    x: Tensor,
    positions: Optional[Tensor] = None,
    *,
    offset: Union[int, Tensor] = 0,
    input_ids: Optional[Tensor] = None,
    padding_idx: Optional[int] = None,
    seq_dim: int = -2,
    layout: str = "interleaved",
    freqs: str = "vaswani",
    base: float = 10000.0,
    scale: float = 1.0,
) -> Tensor:
    """Returns ``x * scale + PE(position)`` in one kernel, without a table.

    Args:
        x: embeddings, ``(batch, seq, dim)``, ``(seq, batch, dim)`` (with
            ``seq_dim=0``) or ``(seq, dim)``; float32, float64, float16 or
            bfloat16; any strides.
        positions: integer positions broadcastable to ``(batch, seq)``
            (``(seq,)`` works; stride 0 is fine).
        offset: without ``positions``, token ``t`` is at ``offset + t``;
            ``offset`` is an int or an integer tensor ``(batch,)`` of
            per-sequence offsets (decoding with a KV cache).
        input_ids: token ids ``(batch, seq)``; positions are then made from
            them with :func:`make_positions` (needs ``padding_idx``).
        padding_idx: the encoding of this position is zero (fairseq).
        seq_dim: dimension of ``x`` holding the sequence.
        layout: ``"interleaved"`` (sin at 2i, cos at 2i+1) or ``"half"`` (all
            sines, then all cosines).
        freqs: ``"vaswani"`` (``w_i = base^(-2i/dim)``) or ``"fairseq"``
            (``w_i = exp(-i ln(base) / (dim/2 - 1))``).
        base: base of the frequencies.
        scale: ``x`` is multiplied by it first (``sqrt(dim)`` in many models).

    Angles are exact modulo one turn and the result is rounded once: fp32
    results within 2.5e-7 at every position below 2^31 (README: Numerical
    contract). Differentiable in ``x``.
    """
    return _call_sinusoidal(torch.ops.posemb.sinusoidal_add.default, x, positions, offset, input_ids, padding_idx,
                            seq_dim, layout, freqs, base, scale)


def sinusoidal_add_(
    x: Tensor,
    positions: Optional[Tensor] = None,
    *,
    offset: Union[int, Tensor] = 0,
    input_ids: Optional[Tensor] = None,
    padding_idx: Optional[int] = None,
    seq_dim: int = -2,
    layout: str = "interleaved",
    freqs: str = "vaswani",
    base: float = 10000.0,
    scale: float = 1.0,
) -> Tensor:
    """In-place :func:`sinusoidal_add`: ``x = x * scale + PE``; returns ``x``."""
    _call_sinusoidal(torch.ops.posemb.sinusoidal_add_.default, x, positions, offset, input_ids, padding_idx,
                     seq_dim, layout, freqs, base, scale)
    return x


def sinusoidal_table(
    num_positions: int,
    dim: int,
    *,
    offset: int = 0,
    layout: str = "interleaved",
    freqs: str = "vaswani",
    base: float = 10000.0,
    padding_idx: Optional[int] = None,
    dtype: Optional[torch.dtype] = None,
    device: Optional[Union[torch.device, str]] = None,
) -> Tensor:
    """The encoding of positions ``offset .. offset + num_positions - 1`` as a
    ``(num_positions, dim)`` table (float32 unless ``dtype`` says otherwise)."""
    return torch.ops.posemb.sinusoidal_table(
        num_positions, dim, offset, layout, freqs, float(base), padding_idx,
        dtype=dtype, device=torch.device(device) if device is not None else None,
    )


def learned_add(
    x: Tensor,
    weight: Tensor,
    positions: Optional[Tensor] = None,
    *,
    offset: Union[int, Tensor] = 0,
    input_ids: Optional[Tensor] = None,
    padding_idx: Optional[int] = None,
    seq_dim: int = -2,
) -> Tensor:
    """Returns ``x + weight[position]``, gather and add in one kernel.

    Args:
        x: embeddings ``(batch, seq, dim)``, ``(seq, batch, dim)`` (with
            ``seq_dim=0``) or ``(seq, dim)``.
        weight: the position table ``(num_embeddings, dim)``, x's dtype and device.
        positions, offset, input_ids, seq_dim: as in :func:`sinusoidal_add`.
        padding_idx: that row of ``weight`` gets no gradient (``nn.Embedding``'s
            rule); with ``input_ids``, positions count from ``padding_idx + 1``.

    Every position must lie in ``[0, num_embeddings)``; otherwise a clear error
    (checking position tensors costs one min/max, a host sync on CUDA). The
    gradient of ``weight`` is deterministic: each row sums its tokens in one
    fixed order, with no atomics.
    """
    positions, offsets, offset = _position_args(positions, offset, input_ids, padding_idx)
    return torch.ops.posemb.learned_add(x, weight, positions, offsets, offset, seq_dim, padding_idx)


def bert_embeddings(
    input_ids: Tensor,
    word_weight: Tensor,
    position_weight: Tensor,
    type_weight: Tensor,
    ln_weight: Tensor,
    ln_bias: Tensor,
    *,
    position_ids: Optional[Tensor] = None,
    token_type_ids: Optional[Tensor] = None,
    cache_length: int = 0,
    eps: float = 1e-12,
    dropout_p: float = 0.0,
    training: bool = False,
    generator: Optional[torch.Generator] = None,
    word_padding_idx: Optional[int] = None,
    position_padding_idx: Optional[int] = None,
) -> Tensor:
    """``dropout(LayerNorm(word[ids] + position[pos] + type[types]))`` in one
    kernel, forward and backward: Hugging Face's ``BertEmbeddings`` block.

    Args:
        input_ids: ``(batch, seq)`` token ids.
        word_weight, position_weight, type_weight: the three tables
            ``(rows, hidden)``; ``ln_weight``, ``ln_bias``: ``(hidden,)``; one
            float dtype and device for all five.
        position_ids: integer, broadcastable to ``(batch, seq)``; without them
            token ``t`` is at ``cache_length + t``.
        token_type_ids: broadcastable to ``(batch, seq)``; without them type 0.
        eps: the LayerNorm epsilon.
        dropout_p, training, generator: dropout is applied in training with
            ``dropout_p > 0``; its mask is a pure function of a seed drawn from
            ``generator`` (if None, the default generator of ``input_ids``'
            device, as ``nn.Dropout`` draws), so ``torch.manual_seed``
            reproduces it. On CUDA the seed stays on the device and the kernel
            reads it: a captured CUDA graph draws a new mask at each replay.
            A CPU ``generator`` gives CPU and CUDA the same mask.
        word_padding_idx, position_padding_idx: those rows get no gradient.

    Statistics in fp32 (fp64 for fp64 tables); all gradients deterministic.
    """
    seed = None
    if training and dropout_p > 0.0:
        device = generator.device if generator is not None else input_ids.device
        seed = torch.randint(0, 2**62, (), dtype=torch.long, generator=generator, device=device)
    out, _, _ = torch.ops.posemb.bert_embeddings(
        input_ids, word_weight, position_weight, type_weight, ln_weight, ln_bias,
        position_ids, token_type_ids, cache_length, float(eps), float(dropout_p), seed,
        word_padding_idx, position_padding_idx,
    )
    return out


def _heads_dim(q: Tensor, seq_dim: int, packed: bool) -> int:
    if packed:
        return 1
    s = seq_dim % 4
    batch = 1 if s == 0 else 0
    return 3 - s - batch


def rotary(
    q: Tensor,
    k: Optional[Tensor],
    inv_freq: Tensor,
    positions: Optional[Tensor] = None,
    *,
    offset: Union[int, Tensor] = 0,
    cu_seqlens: Optional[Tensor] = None,
    attention_scaling: float = 1.0,
    interleaved: bool = False,
    seq_dim: int = 1,
    mrope_section: Optional[Sequence[int]] = None,
    mrope_interleaved: bool = False,
    inplace: bool = False,
):
    """Rotary position embedding of q and k in one launch.

    Args:
        q, k: ``(batch, seq, heads, head_dim)``; ``seq_dim=2`` for
            ``(batch, heads, seq, head_dim)``, ``0`` for ``(seq, batch, heads,
            head_dim)``; any strides with ``head_dim`` innermost (views of a
            fused qkv projection work). ``k`` may have fewer heads than ``q``
            (grouped-query attention), or be None. With ``cu_seqlens``: packed
            ``(tokens, heads, head_dim)``.
        inv_freq: float32 ``(rotary_dim / 2,)``, taken as exact; build it for
            any Hugging Face rope type with :mod:`posemb.rope`. Channels past
            ``rotary_dim`` pass through.
        positions, offset: as in :func:`sinusoidal_add` (``offset`` an int or
            per-sequence tensor); packed sequences restart at their start.
        cu_seqlens: int ``(sequences + 1,)``, where each packed sequence starts.
        attention_scaling: multiplies cos and sin (YaRN, LongRoPE).
        interleaved: pairs ``(2i, 2i+1)`` (GPT-J) instead of ``(i, i + rotary_dim/2)``
            (GPT-NeoX, Llama).
        mrope_section: positions with axes: multimodal rope (Qwen2-VL's
            ``(t, h, w)``) or axial 2-D/3-D rotary (``(h, w)`` of image patches).
            ``positions`` is then ``(axes, batch, seq)`` (or ``(axes, seq)``,
            ``(axes, tokens)`` when packed; axes may be 1 to share them), and
            the frequencies are cut into runs of these sizes (summing to
            ``rotary_dim / 2``), run ``a`` turning by axis ``a``'s positions.
        mrope_interleaved: Qwen3-VL's layout instead: frequency ``i`` turns by
            axis ``a = i % axes`` when ``a > 0`` and ``i < axes * mrope_section[a]``,
            else by axis 0.
        inplace: overwrite q and k instead of returning new tensors.

    Returns ``(q_out, k_out)``, or ``q_out`` when ``k`` is None. Angles are
    exact modulo one turn (README: Numerical contract): fp32 results within
    2.5e-7 at every position below 2^31.
    Differentiable in q and k.
    """
    no_k = k is None
    if no_k:
        heads = _heads_dim(q, seq_dim, cu_seqlens is not None)
        k = q.new_empty([0 if d == heads else n for d, n in enumerate(q.shape)])
    positions, offsets, offset = _position_args(positions, offset, None, None)
    sections = section_sizes("posemb.rotary", mrope_section)
    args = (q, k, inv_freq, positions, offsets, offset, cu_seqlens, float(attention_scaling), interleaved, seq_dim,
            sections, bool(mrope_interleaved))
    if inplace:
        torch.ops.posemb.rotary_(*args)
        out = (q, k)
    else:
        out = torch.ops.posemb.rotary(*args)
    return out[0] if no_k else out


def fourier_features(positions: Tensor, frequencies: Tensor) -> Tensor:
    """``[sin(α_i p), cos(α_i p)]`` for integer ``positions`` ``(batch, seq)``
    and float32 ``frequencies`` ``(n,)``: a float32 ``(batch, seq, 2n)``
    tensor. Angles keep the angle contract (README: Numerical contract:
    within 2.5e-7 at every position below 2^31); differentiable in
    ``frequencies``, with the gradient ``p cos(α p)`` (and ``-p sin(α p)``) formed from those same exact values
    (the op ``fourier_features_backward``, p and the sum in fp64)."""
    return torch.ops.posemb.fourier_features(positions, frequencies)


def timestep_embedding(
    timesteps: Tensor,
    embedding_dim: int,
    flip_sin_to_cos: bool = False,
    downscale_freq_shift: float = 1.0,
    scale: float = 1.0,
    max_period: float = 10000.0,
    *,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """diffusers' ``get_timestep_embedding``, in one kernel.

    Returns ``timesteps.shape + (embedding_dim,)``: ``[sin(t w_i), cos(t w_i)]``
    (``[cos, sin]`` with ``flip_sin_to_cos``), ``w_i = scale *
    max_period^(-i / (embedding_dim // 2 - downscale_freq_shift))``, and a zero
    last column for an odd ``embedding_dim``. DiT's ``TimestepEmbedder`` is
    ``flip_sin_to_cos=True, downscale_freq_shift=0``.

    Timesteps (any real dtype) are taken as the float32 values they become, as
    diffusers' ``.float()`` does (float64 ones as they are); the angle of that
    float is exact to about 1e-14 rad, ``scale`` folded into the frequency in
    extended precision (README: "Timestep embeddings and 2-D sin-cos grids").
    Output dtype ``dtype``, default float32. Differentiable in floating timesteps.
    """
    return torch.ops.posemb.timestep_embedding(
        timesteps, embedding_dim, flip_sin_to_cos, float(downscale_freq_shift), float(scale), float(max_period),
        dtype=dtype)


def sincos_2d_positions(
    size: int,
    base_size: Optional[float] = None,
    interpolation_scale: float = 1.0,
    *,
    device: Optional[Union[torch.device, str]] = None,
) -> Tensor:
    """The float32 positions of one grid axis of ``size`` patches, as diffusers'
    ``get_2d_sincos_pos_embed`` computes them (``arange(size) / (size /
    base_size) / interpolation_scale``, the same float32 operations, so the
    same bits); ``base_size=None`` gives MAE's ``arange(size)``
    (``/ interpolation_scale``), which is also each axis of diffusers'
    ``get_3d_sincos_pos_embed``: ``sincos_2d_positions(n, None,
    spatial_interpolation_scale)`` for height and width,
    ``sincos_2d_positions(frames, None, temporal_interpolation_scale)`` for
    ``pos_t``."""
    if isinstance(size, bool) or not isinstance(size, (int, torch.SymInt)) or size < 0:
        raise ValueError(f"posemb.sincos_2d_positions: size must be an int >= 0, got {size!r}")
    pos = torch.arange(size, device=device, dtype=torch.float32)
    if base_size is not None:
        pos = pos / (size / base_size)
    return pos / interpolation_scale if interpolation_scale != 1.0 else pos


def sincos_2d_add(x: Tensor, pos_h: Tensor, pos_w: Tensor, *, base: float = 10000.0,
                  pos_t: Optional[Tensor] = None) -> Tensor:
    """Returns ``x + PE2d`` for patch embeddings ``x`` of shape ``(batch, H*W,
    dim)`` (row-major patches, ``dim`` a multiple of 4), in one kernel.

    Channels ``[0, dim/2)`` hold ``[sin(pos_w ω_k), cos(pos_w ω_k)]`` of the
    patch's column, ``[dim/2, dim)`` the same of its row's ``pos_h``, ``ω_k =
    base^(-k / (dim/4))``: diffusers' ``get_2d_sincos_pos_embed`` (and MAE's)
    order. ``pos_h`` ``(H,)`` and ``pos_w`` ``(W,)`` are float32 positions
    (:func:`sincos_2d_positions`); their angles are exact for those floats.
    Differentiable in ``x``.

    With ``pos_t`` ``(T,)`` (float32 frame positions), ``x + PE3d`` for video
    patch embeddings ``x`` ``(batch, T*H*W, dim)`` (frames major, then rows,
    then columns; ``dim`` a multiple of 16): channels ``[0, dim/4)`` hold
    ``[sin(pos_t ν_k), cos(pos_t ν_k)]`` of the patch's frame, ``ν_k =
    base^(-k / (dim/8))``, and ``[dim/4, dim)`` the 2-D grid above of
    ``3*dim/4`` channels: diffusers' ``get_3d_sincos_pos_embed`` (CogVideoX).
    """
    return torch.ops.posemb.sincos_2d_add(x, pos_h, pos_w, float(base), pos_t=pos_t)


def sincos_2d_table(pos_h: Tensor, pos_w: Tensor, dim: int, *, base: float = 10000.0,
                    dtype: Optional[torch.dtype] = None, pos_t: Optional[Tensor] = None) -> Tensor:
    """The grid of :func:`sincos_2d_add` alone, ``(H*W, dim)`` (with ``pos_t``
    ``(T*H*W, dim)``), float32 unless ``dtype`` says otherwise, on the
    positions' device."""
    return torch.ops.posemb.sincos_2d_table(pos_h, pos_w, dim, float(base), dtype=dtype, pos_t=pos_t)
