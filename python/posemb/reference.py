"""Pure-PyTorch fp64 references for the tests (README: Tests).

Everything is float64: positions, frequencies from their formula, products,
sin and cos. Nothing here is fast; everything here is obvious.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor


def make_positions(input_ids: Tensor, padding_idx: int) -> Tensor:
    """fairseq's rule: pads keep padding_idx, the rest count from padding_idx + 1."""
    mask = input_ids.ne(padding_idx).long()
    return torch.cumsum(mask, dim=-1) * mask + padding_idx


def sinusoidal_frequencies(dim: int, freqs: str = "vaswani", base: float = 10000.0) -> Tensor:
    """The dim // 2 frequencies, float64, straight from their formula."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    if freqs == "vaswani":
        return torch.tensor(float(base), dtype=torch.float64) ** (-2.0 * i / dim)
    if freqs == "fairseq":
        return torch.exp(-i * (math.log(base) / (half - 1)))
    raise ValueError(freqs)


def sinusoidal_encoding(
    positions: Tensor,
    dim: int,
    layout: str = "interleaved",
    freqs: str = "vaswani",
    base: float = 10000.0,
    padding_idx: Optional[int] = None,
) -> Tensor:
    """PE(positions) as float64 of shape positions.shape + (dim,)."""
    w = sinusoidal_frequencies(dim, freqs, base)
    theta = positions.to(torch.float64).unsqueeze(-1) * w
    s, c = torch.sin(theta), torch.cos(theta)
    half = dim // 2
    pe = torch.zeros(*positions.shape, dim, dtype=torch.float64)
    if layout == "interleaved":
        pe[..., 0 : 2 * half : 2] = s
        pe[..., 1 : 2 * half : 2] = c
    elif layout == "half":
        pe[..., :half] = s
        pe[..., half : 2 * half] = c
    else:
        raise ValueError(layout)
    if padding_idx is not None:
        pe[positions == padding_idx] = 0.0
    return pe


def _batch_first(x: Tensor, seq_dim: int) -> Tensor:
    """x as float64 (batch, seq, dim), whatever its layout."""
    xd = x.detach().cpu().to(torch.float64)
    if x.dim() == 2:
        return xd.unsqueeze(0)
    return xd if seq_dim % x.dim() == 1 else xd.transpose(0, 1)


def _restore_layout(yb: Tensor, x: Tensor, seq_dim: int) -> Tensor:
    if x.dim() == 2:
        return yb.squeeze(0)
    return yb if seq_dim % x.dim() == 1 else yb.transpose(0, 1)


def token_positions(
    batch: int,
    seq: int,
    positions: Optional[Tensor] = None,
    offset: Union[int, Tensor] = 0,
    input_ids: Optional[Tensor] = None,
    padding_idx: Optional[int] = None,
) -> Tensor:
    """The int64 (batch, seq) positions that posemb's position arguments mean."""
    if input_ids is not None:
        positions = make_positions(input_ids.cpu(), padding_idx)
    if positions is None:
        off = offset.cpu().long().reshape(-1, 1) if isinstance(offset, Tensor) else torch.tensor([[offset]])
        positions = off + torch.arange(seq).reshape(1, seq)
    positions = positions.cpu().long()
    positions = positions.reshape(1, seq) if positions.dim() == 1 else positions  # (seq,)
    return positions.expand(batch, seq)


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
    """float64 ``x * scale + PE`` with the same arguments as posemb.sinusoidal_add."""
    xb = _batch_first(x, seq_dim)
    pos = token_positions(xb.shape[0], xb.shape[1], positions, offset, input_ids, padding_idx)
    yb = xb * scale + sinusoidal_encoding(pos, x.shape[-1], layout, freqs, base, padding_idx)
    return _restore_layout(yb, x, seq_dim)


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
    """float64 ``x + weight[position]`` with the same arguments as posemb.learned_add."""
    xb = _batch_first(x, seq_dim)
    pos = token_positions(xb.shape[0], xb.shape[1], positions, offset, input_ids, padding_idx)
    yb = xb + weight.detach().cpu().to(torch.float64)[pos]
    return _restore_layout(yb, x, seq_dim)


def learned_add_weight_grad(
    grad: Tensor, num_embeddings: int, positions: Tensor, padding_idx: Optional[int] = None
) -> Tensor:
    """float64 gradient of weight: grad rows summed per position (batch-first grad)."""
    out = torch.zeros(num_embeddings, grad.shape[-1], dtype=torch.float64)
    out.index_add_(0, positions.reshape(-1), grad.detach().cpu().to(torch.float64).reshape(-1, grad.shape[-1]))
    if padding_idx is not None:
        out[padding_idx] = 0
    return out


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
) -> Tensor:
    """float64 LayerNorm(word[ids] + position[pos] + type[types]) (no dropout)."""
    ids = input_ids.cpu().long()
    batch, seq = ids.shape
    pos = token_positions(batch, seq, position_ids, cache_length)
    types = torch.zeros(batch, seq, dtype=torch.long) if token_type_ids is None else (
        token_type_ids.cpu().long().reshape(-1, seq) if token_type_ids.dim() == 1 else token_type_ids.cpu().long()
    ).expand(batch, seq)

    def f64(t):
        return t.detach().cpu().to(torch.float64)

    x = f64(word_weight)[ids] + f64(position_weight)[pos] + f64(type_weight)[types]
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), f64(ln_weight), f64(ln_bias), eps)


def rotary(
    x: Tensor,
    inv_freq: Tensor,
    positions: Tensor,
    *,
    attention_scaling: float = 1.0,
    interleaved: bool = False,
    mrope_section=None,
    mrope_interleaved: bool = False,
) -> Tensor:
    """float64 rotary embedding of x (..., seq, heads, head_dim) at integer
    positions (seq,) or (batch, seq): pairs (i, i + rotary_dim/2) ("half",
    NeoX/Llama) or (2i, 2i + 1) ("interleaved", GPT-J) turned by
    position * inv_freq[i], times attention_scaling; channels past
    rotary_dim = 2 * len(inv_freq) pass through. With mrope_section,
    positions are (axes, ...) and each frequency takes its axis' position
    (mrope_axes)."""
    xd = x.detach().cpu().to(torch.float64)
    w = inv_freq.detach().cpu().to(torch.float64)  # the given fp32 values, exactly
    p = positions.cpu().to(torch.float64)
    if mrope_section is None:
        theta = p.unsqueeze(-1) * w  # (..., seq, rotary_dim/2)
    else:
        axes = torch.tensor(mrope_axes(mrope_section, mrope_interleaved))
        p = p.expand(len(mrope_section), *p.shape[1:])
        theta = p.movedim(0, -1)[..., axes] * w
    cos = (torch.cos(theta) * attention_scaling).unsqueeze(-2)  # broadcast over heads
    sin = (torch.sin(theta) * attention_scaling).unsqueeze(-2)
    half = w.numel()
    rot, rest = xd[..., : 2 * half], xd[..., 2 * half :]
    if interleaved:
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    else:
        a, b = rot[..., :half], rot[..., half:]
        out = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    return torch.cat([out, rest], dim=-1)


def mrope_axes(mrope_section, interleaved: bool = False):
    """The position axis of each frequency, as Hugging Face's multimodal rope
    lays them out: runs of the section sizes (Qwen2-VL), or (interleaved,
    Qwen3-VL) axis a >= 1 on frequencies a, a + axes, ... for mrope_section[a]
    of them and axis 0 on the rest."""
    axes = len(mrope_section)
    if not interleaved:
        return [a for a, n in enumerate(mrope_section) for _ in range(n)]
    owner = [0] * sum(mrope_section)
    for a in range(1, axes):
        for j in range(mrope_section[a]):
            owner[a + axes * j] = a
    return owner


def timestep_embedding(timesteps: Tensor, embedding_dim: int, flip_sin_to_cos: bool = False,
                       downscale_freq_shift: float = 1.0, scale: float = 1.0, max_period: float = 10000.0) -> Tensor:
    """diffusers' get_timestep_embedding in float64, for timesteps taken as
    float32 (float64 ones as they are): (N..., embedding_dim)."""
    t = timesteps.double() if timesteps.dtype == torch.float64 else timesteps.float().double()
    half = embedding_dim // 2
    w = torch.exp(torch.arange(half, dtype=torch.float64) * (-math.log(max_period) / (half - downscale_freq_shift)))
    angle = t.unsqueeze(-1) * (w * scale)
    sin, cos = torch.sin(angle), torch.cos(angle)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if embedding_dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def timestep_embedding_mp(timesteps: Tensor, embedding_dim: int, flip_sin_to_cos: bool = False,
                          downscale_freq_shift: float = 1.0, scale: float = 1.0, max_period: float = 10000.0) -> Tensor:
    """The same with mpmath at 40 digits (fp64 angles lose 1e-16 * |angle|:
    3e-6 rad at 3e10 rad), rounded to float64. A 1-D tensor of timesteps."""
    import mpmath

    with mpmath.workdps(40):
        half = embedding_dim // 2
        t = timesteps.double() if timesteps.dtype == torch.float64 else timesteps.float().double()
        w = [mpmath.mpf(scale) * mpmath.exp(-mpmath.log(max_period) * i / (half - mpmath.mpf(downscale_freq_shift)))
             for i in range(half)]
        rows = []
        for v in t.tolist():
            sin = [float(mpmath.sin(mpmath.mpf(v) * wi)) for wi in w]
            cos = [float(mpmath.cos(mpmath.mpf(v) * wi)) for wi in w]
            rows.append((cos + sin if flip_sin_to_cos else sin + cos) + [0.0] * (embedding_dim % 2))
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), embedding_dim)


def sincos_2d_table(pos_h: Tensor, pos_w: Tensor, dim: int, base: float = 10000.0,
                    pos_t: Optional[Tensor] = None) -> Tensor:
    """The 2-D sin-cos grid (H*W, dim) in float64 for float positions: [w axis,
    h axis], each [sin, cos] of pos * base^(-k / (dim/4)). With pos_t the 3-D
    grid (T*H*W, dim): [t axis of dim/4 channels, [sin, cos] of pos_t *
    base^(-k / (dim/8)); the 2-D grid of 3*dim/4 channels], frames major."""
    if pos_t is not None:
        t_dim = dim // 4
        qt = t_dim // 2
        nu = torch.tensor(float(base), dtype=torch.float64) ** (-torch.arange(qt, dtype=torch.float64) / qt)
        a = pos_t.double().unsqueeze(-1) * nu
        frames = torch.cat([torch.sin(a), torch.cos(a)], dim=-1)
        cells = pos_h.shape[0] * pos_w.shape[0]
        spatial = sincos_2d_table(pos_h, pos_w, dim - t_dim, base).repeat(pos_t.shape[0], 1)
        return torch.cat([frames.repeat_interleave(cells, 0), spatial], dim=-1)
    q = dim // 4
    omega = torch.tensor(float(base), dtype=torch.float64) ** (-torch.arange(q, dtype=torch.float64) / q)

    def axis(pos):
        a = pos.double().unsqueeze(-1) * omega
        return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)

    h, w = pos_h.shape[0], pos_w.shape[0]
    ew = axis(pos_w).repeat(h, 1)             # token t: column t % W
    eh = axis(pos_h).repeat_interleave(w, 0)  # token t: row t // W
    return torch.cat([ew, eh], dim=-1)
