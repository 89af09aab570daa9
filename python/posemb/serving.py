"""Rotary for serving stacks: the call shape of vLLM's and SGLang's rotary
kernel, ``(positions, query, key, head_size, cos_sin_cache, is_neox)``,
over flattened tokens and in place, so a serving engine can call posemb
where it calls its own kernel.

posemb computes exact angles from the frequencies instead of reading a
``cos_sin_cache`` table (README: Numerical contract): pass ``inv_freq`` (the
fp32 frequencies the cache was built from, e.g.
``posemb.rope.frequency_plan(...)``) and the cache argument is ignored. So
any position works, not only those below the cache's length.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import ops

__all__ = ["rotary_embedding"]


def _heads_view(name: str, t: Tensor, tokens: int, head_size: int) -> Tensor:
    """(tokens, heads * head_size) or (tokens, heads, head_size) as a
    (1, tokens, heads, head_size) view of the same memory."""
    if t.dim() == 2 and t.shape[0] == tokens and t.shape[1] % head_size == 0:
        return t.view(1, tokens, t.shape[1] // head_size, head_size)
    if t.dim() == 3 and t.shape[0] == tokens and t.shape[2] == head_size:
        return t.unsqueeze(0)
    raise ValueError(f"posemb.serving.rotary_embedding: {name} must be (num_tokens, heads * head_size) or "
                     f"(num_tokens, heads, head_size) with num_tokens={tokens}, head_size={head_size}, "
                     f"got shape {tuple(t.shape)}")


def rotary_embedding(
    positions: Tensor,
    query: Tensor,
    key: Optional[Tensor],
    head_size: int,
    cos_sin_cache: Optional[Tensor] = None,
    is_neox: bool = True,
    *,
    inv_freq: Tensor,
    attention_scaling: float = 1.0,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Rotates ``query`` and ``key`` in place, vLLM's ``rotary_embedding`` op.

    Args:
        positions: integer ``(num_tokens,)``, each token's position.
        query, key: ``(num_tokens, heads * head_size)`` or ``(num_tokens,
            heads, head_size)``; ``key`` may have fewer heads, or be None.
        head_size: the size of one head.
        cos_sin_cache: ignored (posemb forms exact angles from ``inv_freq``);
            accepted so the call matches the serving kernel's.
        is_neox: GPT-NeoX pairs ``(i, i + rotary_dim/2)``; False pairs
            ``(2i, 2i+1)`` (GPT-J).
        inv_freq: float32 ``(rotary_dim / 2,)``; channels past ``rotary_dim``
            pass through (partial rotary).
        attention_scaling: multiplies cos and sin (YaRN's mscale, which vLLM
            folds into its cache).

    Returns ``(query, key)``, the same tensors, rotated.
    """
    del cos_sin_cache  # exact angles instead of the table
    if positions.dim() != 1 or positions.dtype.is_floating_point or positions.dtype == torch.bool:
        raise ValueError(f"posemb.serving.rotary_embedding: positions must be an integer (num_tokens,) tensor, "
                         f"got {positions.dtype} of shape {tuple(positions.shape)}")
    if isinstance(head_size, bool) or not isinstance(head_size, int) or head_size < 1:
        raise ValueError(f"posemb.serving.rotary_embedding: head_size must be an int >= 1, got {head_size!r}")
    tokens = positions.shape[0]
    q = _heads_view("query", query, tokens, head_size)
    k = _heads_view("key", key, tokens, head_size) if key is not None else None
    ops.rotary(q, k, inv_freq, positions.unsqueeze(0), attention_scaling=attention_scaling,
               interleaved=not is_neox, seq_dim=1, inplace=True)
    return query, key
