"""``nn.Module``s built on the posemb ops."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from . import ops

__all__ = ["LearnedPositionalEmbedding", "SinusoidalPositionalEmbedding"]


class SinusoidalPositionalEmbedding(nn.Module):
    """Adds sinusoidal position encodings to embeddings: ``x * scale + PE``.

    The encoding is computed on the fly inside the kernel: the module holds no
    table, no buffer and no parameter, so its ``state_dict`` is empty and any
    position, however large, works.

    Args:
        embedding_dim: size of the last dimension of the embeddings.
        layout: ``"interleaved"`` (tensor2tensor) or ``"half"`` (fairseq).
        freqs: ``"vaswani"`` or ``"fairseq"`` (see :func:`posemb.sinusoidal_add`).
        base: base of the frequencies.
        padding_idx: the encoding of this position is zero, and ``input_ids``
            give positions counting from ``padding_idx + 1`` (fairseq).
        scale: embeddings are multiplied by it before the add.
        seq_dim: dimension of the input holding the sequence (``-2`` for
            ``(batch, seq, dim)``, ``0`` for ``(seq, batch, dim)``).

    Example::

        pe = posemb.nn.SinusoidalPositionalEmbedding(512, layout="half", freqs="fairseq",
                                                     padding_idx=1, scale=512 ** 0.5)
        y = pe(token_embeddings, input_ids=tokens)
    """

    def __init__(
        self,
        embedding_dim: int,
        *,
        layout: str = "interleaved",
        freqs: str = "vaswani",
        base: float = 10000.0,
        padding_idx: Optional[int] = None,
        scale: float = 1.0,
        seq_dim: int = -2,
    ) -> None:
        super().__init__()
        if embedding_dim < 0:
            raise ValueError(f"SinusoidalPositionalEmbedding: embedding_dim must be >= 0, got {embedding_dim}")
        self.embedding_dim = embedding_dim
        self.layout = layout
        self.freqs = freqs
        self.base = float(base)
        self.padding_idx = padding_idx
        self.scale = float(scale)
        self.seq_dim = seq_dim

    def forward(
        self,
        x: Tensor,
        positions: Optional[Tensor] = None,
        *,
        offset: Union[int, Tensor] = 0,
        input_ids: Optional[Tensor] = None,
    ) -> Tensor:
        """``x * scale + PE``: positions given, or ``offset + t`` (int or per
        sequence), or made from ``input_ids`` (padding-aware)."""
        if x.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"SinusoidalPositionalEmbedding: x must end in embedding_dim={self.embedding_dim}, "
                f"got shape {tuple(x.shape)}"
            )
        return ops.sinusoidal_add(
            x, positions, offset=offset, input_ids=input_ids, padding_idx=self.padding_idx,
            seq_dim=self.seq_dim, layout=self.layout, freqs=self.freqs, base=self.base, scale=self.scale,
        )

    def extra_repr(self) -> str:
        s = f"{self.embedding_dim}, layout={self.layout!r}, freqs={self.freqs!r}, base={self.base:g}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.scale != 1.0:
            s += f", scale={self.scale:g}"
        return s


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned embedding of each token's position: ``x + weight[position]``.

    The parameter is ``weight`` ``(num_embeddings, embedding_dim)``, initialised
    as ``nn.Embedding`` does (``N(0, 1)``, the ``padding_idx`` row zero), so a
    ``state_dict`` of an ``nn.Embedding`` position table loads unchanged.

    Args:
        num_embeddings: number of positions in the table.
        embedding_dim: size of each position's embedding.
        padding_idx: that row gets no gradient; ``input_ids`` give positions
            counting from ``padding_idx + 1`` (fairseq, RoBERTa).
        seq_dim: dimension of the input holding the sequence.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        padding_idx: Optional[int] = None,
        seq_dim: int = -2,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if padding_idx is not None and not 0 <= padding_idx < num_embeddings:
            raise ValueError(
                f"LearnedPositionalEmbedding: padding_idx must be in [0, {num_embeddings}), got {padding_idx}"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.seq_dim = seq_dim
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        if self.padding_idx is not None:
            with torch.no_grad():
                self.weight[self.padding_idx].zero_()

    def forward(
        self,
        x: Tensor,
        positions: Optional[Tensor] = None,
        *,
        offset: Union[int, Tensor] = 0,
        input_ids: Optional[Tensor] = None,
    ) -> Tensor:
        """``x + weight[position]``: positions given, or ``offset + t``, or made
        from ``input_ids`` (padding-aware)."""
        return ops.learned_add(
            x, self.weight, positions, offset=offset, input_ids=input_ids,
            padding_idx=self.padding_idx, seq_dim=self.seq_dim,
        )

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s
