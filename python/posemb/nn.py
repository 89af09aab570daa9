"""``nn.Module``s built on the posemb ops."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from . import ops, rope

__all__ = [
    "BertEmbeddings", "FourierPositionalEmbedding", "LearnedPositionalEmbedding", "RotaryEmbedding",
    "SinusoidalPositionalEmbedding",
    "SinCos2dPositionalEmbedding", "SinCos3dPositionalEmbedding", "Timesteps",
]


def _check_int(module: str, name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{module}: {name} must be an int >= {least}, got {value!r}")


def _check_finite(module: str, name: str, value, positive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise ValueError(f"{module}: {name} must be a finite number{' > 0' if positive else ''}, got {value!r}")


def _check_width(module: str, x: Tensor, width: int, shape: str) -> None:
    if x.dim() < 1 or x.shape[-1] != width:
        raise ValueError(f"{module}: x must be {shape.format(width)}, got shape {tuple(x.shape)}")


def _check_offset(module: str, positions: Optional[Tensor], offset, seq: int) -> None:
    """What the ops check of offset, for a module that builds its positions."""
    if positions is not None:
        if isinstance(offset, Tensor) or offset != 0:
            raise ValueError(f"{module}: pass positions or offset, not both")
        return
    if isinstance(offset, Tensor):
        if offset.is_floating_point() or offset.is_complex() or offset.dtype == torch.bool or offset.dim() > 1:
            raise ValueError(f"{module}: offset must be an int or an integer tensor (batch,), got "
                             f"{offset.dtype} of shape {tuple(offset.shape)}")
        # Host values only, as the ops check them (a device read would sync).
        if (offset.device.type == "cpu" and offset.numel() and seq > 0 and not torch.compiler.is_compiling()
                and int(offset.max()) > 2**63 - seq):
            raise ValueError(f"{module}: offset + seq - 1 must fit in int64, got an offset of "
                             f"{int(offset.max())} and seq={seq}")
    elif isinstance(offset, bool) or not isinstance(offset, (int, torch.SymInt)):
        raise ValueError(f"{module}: offset must be an int or an integer tensor (batch,), got {offset!r}")
    elif not -(2**63) <= offset <= 2**63 - max(seq, 1):
        raise ValueError(f"{module}: offset + seq - 1 must fit in int64, got offset={offset} and seq={seq}")


def _check_choice(module: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{module}: {name} must be one of {choices}, got {value!r}")


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
        name = "SinusoidalPositionalEmbedding"
        _check_int(name, "embedding_dim", embedding_dim, 0)
        _check_choice(name, "layout", layout, ("interleaved", "half"))
        _check_choice(name, "freqs", freqs, ("vaswani", "fairseq"))
        _check_finite(name, "base", base, positive=True)
        if base < 1:
            raise ValueError(f"{name}: base must be >= 1 (frequencies of at most 1 rad per position), got {base!r}")
        _check_finite(name, "scale", scale)
        if padding_idx is not None:
            _check_int(name, "padding_idx", padding_idx, 0)
        if freqs == "fairseq" and embedding_dim // 2 < 2:
            raise ValueError(f"{name}: freqs='fairseq' divides by embedding_dim // 2 - 1 and needs "
                             f"embedding_dim >= 4, got {embedding_dim}")
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
        _check_int("LearnedPositionalEmbedding", "num_embeddings", num_embeddings, 1)
        _check_int("LearnedPositionalEmbedding", "embedding_dim", embedding_dim, 0)
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

    @classmethod
    def from_sinusoidal(
        cls,
        num_embeddings: int,
        embedding_dim: int,
        *,
        layout: str = "interleaved",
        freqs: str = "vaswani",
        base: float = 10000.0,
        noise_std: float = 0.0,
        generator: Optional[torch.Generator] = None,
        padding_idx: Optional[int] = None,
        seq_dim: int = -2,
        device=None,
        dtype=None,
    ) -> "LearnedPositionalEmbedding":
        """A trainable table that starts as the sinusoidal encoding of
        positions ``0 .. num_embeddings - 1`` (exact, rounded once to
        ``dtype``), plus ``N(0, noise_std^2)`` noise when ``noise_std > 0``
        (random plus sinusoid). The table is a parameter of shape
        ``(num_embeddings, embedding_dim)``, trained through ``learned_add``."""
        _check_finite("LearnedPositionalEmbedding", "noise_std", noise_std)
        if noise_std < 0:
            raise ValueError(f"LearnedPositionalEmbedding: noise_std must be >= 0, got {noise_std}")
        module = cls(num_embeddings, embedding_dim, padding_idx=padding_idx, seq_dim=seq_dim, device=device,
                     dtype=dtype)
        table = ops.sinusoidal_table(num_embeddings, embedding_dim, layout=layout, freqs=freqs, base=base,
                                     dtype=torch.float64)
        if noise_std > 0:
            table += noise_std * torch.randn(table.shape, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            if not module.weight.is_meta:
                module.weight.copy_(table)
                if padding_idx is not None:
                    module.weight[padding_idx].zero_()
        return module

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


class FourierPositionalEmbedding(nn.Module):
    """Adds projected Fourier features of each token's position:
    ``x + [sin(α p), cos(α p)] @ weight`` (+ ``bias``), the article's
    ``E(p) = sin(α p) W1 + cos(α p) W2`` with trainable ``W1``, ``W2`` and,
    optionally, trainable frequencies ``α`` (learnable Fourier features).

    The features come from posemb's exact angle core (:func:`posemb.ops.fourier_features`),
    so the encoding and the frequencies' gradient ``p cos(α p)`` keep the
    angle contract (within 2.5e-7 at every position below 2^31). The projection is one GEMM with the add fused into it
    (``baddbmm`` with ``x`` as the added term) when positions differ per
    sequence; with positions shared across the batch it is one ``(seq, 2n) @
    (2n, dim)`` product, added to every sequence.

    Args:
        embedding_dim: size of the last dimension of the embeddings.
        num_frequencies: ``n``, the number of frequencies (``embedding_dim // 2``).
        base: ``α_i = base^(-i / n)`` at initialisation (Vaswani's frequencies).
        learn_frequencies: ``α`` is a parameter (``frequencies``), else a buffer.
        bias: add a trainable bias of size ``embedding_dim``.
        seq_dim: ``-2`` for ``(batch, seq, dim)`` or ``(seq, dim)``, ``0`` for
            ``(seq, batch, dim)``.

    With ``embedding_dim == 2 * num_frequencies`` the weight starts as the
    identity, so the module starts as the fixed sinusoidal encoding in the
    ``"half"`` layout and learns from there; otherwise it starts
    Xavier-uniform. ``frequencies`` stay float32 through every cast.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_frequencies: Optional[int] = None,
        *,
        base: float = 10000.0,
        learn_frequencies: bool = True,
        bias: bool = False,
        seq_dim: int = -2,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = "FourierPositionalEmbedding"
        _check_int(name, "embedding_dim", embedding_dim, 1)
        n = max(1, embedding_dim // 2) if num_frequencies is None else num_frequencies
        _check_int(name, "num_frequencies", n, 1)
        _check_finite(name, "base", base, positive=True)
        _check_choice(name, "seq_dim", seq_dim, (-2, 0))
        self.embedding_dim, self.num_frequencies, self.base = embedding_dim, n, float(base)
        self.seq_dim = seq_dim
        frequencies = torch.empty(n, device=device, dtype=torch.float32)
        if learn_frequencies:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)
        self.weight = nn.Parameter(torch.empty(2 * n, embedding_dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(embedding_dim, device=device, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.is_meta:
            return
        with torch.no_grad():
            n = self.num_frequencies
            exponents = torch.arange(n, dtype=torch.float64) / n
            self.frequencies.copy_((self.base ** -exponents).to(torch.float32))
            if self.embedding_dim == 2 * n:
                self.weight.copy_(torch.eye(2 * n))
            else:
                nn.init.xavier_uniform_(self.weight)
            if self.bias is not None:
                self.bias.zero_()

    def _apply(self, fn, recurse=True):
        # The frequencies are part of the accuracy contract: kept float32,
        # never rounded through the cast and back. They are moved in place,
        # as nn.Module moves parameters, so an optimizer made before a
        # .to(torch.bfloat16) still holds them.
        frequencies = self.frequencies
        table = self._parameters if "frequencies" in self._parameters else self._buffers
        del table["frequencies"]
        try:
            super()._apply(fn, recurse)
        finally:
            table["frequencies"] = frequencies
        # fn on an empty fp32 tensor says where fn sends tensors and whether it casts.
        probe = fn(torch.empty(0, dtype=torch.float32, device=frequencies.device))

        def move(t: Tensor) -> Tensor:
            return fn(t) if probe.dtype == torch.float32 else t.to(probe.device)

        with torch.no_grad():
            moved = move(frequencies.data)
            if not torch._has_compatible_shallow_copy_type(frequencies, moved):
                # Across tensor types (meta to a device: to_empty) a new
                # tensor, as nn.Module makes there too.
                grad = frequencies.grad
                frequencies = nn.Parameter(moved, frequencies.requires_grad) if table is self._parameters else moved
                if grad is not None:
                    frequencies.grad = move(grad)
                table["frequencies"] = frequencies
                return self
            frequencies.data = moved
            if frequencies.grad is not None:
                frequencies.grad.data = move(frequencies.grad.data)
        return self

    def forward(self, x: Tensor, positions: Optional[Tensor] = None, *, offset: Union[int, Tensor] = 0) -> Tensor:
        """``x + E(position)``: positions given (``(seq,)`` or ``(batch, seq)``),
        or ``offset + t`` (``offset`` an int or a per-sequence tensor)."""
        name = "posemb.FourierPositionalEmbedding"
        if x.dim() not in (2, 3) or x.shape[-1] != self.embedding_dim:
            raise ValueError(f"{name}: x must be (batch, seq, {self.embedding_dim}), (seq, batch, "
                             f"{self.embedding_dim}) or (seq, {self.embedding_dim}), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: x must be a floating-point tensor, got {x.dtype}")
        if self.seq_dim == 0 and x.dim() == 3:  # (seq, batch, dim): the same on the batch-first view
            batch_first = x.transpose(0, 1)
        else:
            batch_first = x if x.dim() == 3 else x.unsqueeze(0)
        batch, seq = batch_first.shape[0], batch_first.shape[1]
        _check_offset(name, positions, offset, seq)
        if positions is None:
            steps = torch.arange(seq, device=x.device)
            if isinstance(offset, Tensor):
                positions = offset.to(device=x.device, dtype=torch.int64).reshape(-1, 1) + steps
            else:
                positions = (steps + offset).unsqueeze(0)
        elif positions.dim() == 1:
            positions = positions.unsqueeze(0)
        if positions.dim() != 2 or positions.shape[1] != seq or positions.shape[0] not in (1, batch):
            raise ValueError(f"{name}: positions must be (seq,) or (batch, seq) = ({batch}, {seq}), "
                             f"got shape {tuple(positions.shape)}")
        features = ops.fourier_features(positions, self.frequencies).to(self.weight.dtype)
        if positions.shape[0] == 1:  # shared: one (seq, 2n) @ (2n, dim) product for the batch
            encoding = features[0] @ self.weight
            if self.bias is not None:
                encoding = encoding + self.bias
            y = batch_first + encoding
        else:
            y = torch.baddbmm(batch_first, features, self.weight.expand(batch, *self.weight.shape))
            if self.bias is not None:
                y = y + self.bias
        if x.dim() == 2:
            return y.squeeze(0)
        return y.transpose(0, 1) if self.seq_dim == 0 else y

    def extra_repr(self) -> str:
        return (f"{self.embedding_dim}, num_frequencies={self.num_frequencies}, "
                f"learn_frequencies={isinstance(self.frequencies, nn.Parameter)}, bias={self.bias is not None}")


class BertEmbeddings(nn.Module):
    """Hugging Face's ``BertEmbeddings`` block in one fused op.

    ``dropout(LayerNorm(word_embeddings(ids) + position_embeddings(pos) +
    token_type_embeddings(types)))``, forward and backward each one posemb
    op. Parameter names are Hugging Face's (``word_embeddings.weight``,
    ``position_embeddings.weight``, ``token_type_embeddings.weight``,
    ``LayerNorm.weight``, ``LayerNorm.bias``), so its ``state_dict`` loads
    unchanged, and ``forward`` takes the same arguments.

    Args:
        vocab_size, hidden_size, max_position_embeddings, type_vocab_size,
        pad_token_id, layer_norm_eps, hidden_dropout_prob: as in a BERT config.
        padding_aware_positions: RoBERTa's positions: pads keep
            ``pad_token_id``, other tokens count from ``pad_token_id + 1``
            (and the position table's padding row gets no gradient).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        pad_token_id: Optional[int] = 0,
        layer_norm_eps: float = 1e-12,
        hidden_dropout_prob: float = 0.1,
        padding_aware_positions: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = "BertEmbeddings"
        for arg, value, least in (("vocab_size", vocab_size, 1), ("hidden_size", hidden_size, 1),
                                  ("max_position_embeddings", max_position_embeddings, 1),
                                  ("type_vocab_size", type_vocab_size, 1)):
            _check_int(name, arg, value, least)
        if pad_token_id is not None and not 0 <= pad_token_id < vocab_size:
            raise ValueError(f"{name}: pad_token_id must be None or in [0, {vocab_size}), got {pad_token_id!r}")
        if padding_aware_positions and pad_token_id is None:
            raise ValueError(f"{name}: padding_aware_positions counts positions from pad_token_id + 1 and needs "
                             "a pad_token_id, got None")
        if padding_aware_positions and pad_token_id >= max_position_embeddings:
            raise ValueError(f"{name}: padding_aware_positions needs pad_token_id < max_position_embeddings "
                             f"({max_position_embeddings}), got {pad_token_id}")
        _check_finite(name, "layer_norm_eps", layer_norm_eps, positive=True)
        if not (isinstance(hidden_dropout_prob, (int, float)) and 0.0 <= hidden_dropout_prob <= 1.0):
            raise ValueError(f"{name}: hidden_dropout_prob must be in [0, 1], got {hidden_dropout_prob!r}")
        kw = dict(device=device, dtype=dtype)
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id, **kw)
        self.position_embeddings = nn.Embedding(
            max_position_embeddings, hidden_size, padding_idx=pad_token_id if padding_aware_positions else None, **kw
        )
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size, **kw)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, **kw)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.pad_token_id = pad_token_id
        self.padding_aware_positions = padding_aware_positions

    def reset_parameters(self) -> None:
        """Initialises the tables and the LayerNorm as their torch modules do."""
        for module in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings, self.LayerNorm):
            module.reset_parameters()

    @classmethod
    def from_config(cls, config, padding_aware_positions: bool = False) -> "BertEmbeddings":
        """From a Hugging Face ``BertConfig`` (or any config with its fields)."""
        return cls(
            config.vocab_size, config.hidden_size, config.max_position_embeddings, config.type_vocab_size,
            config.pad_token_id, config.layer_norm_eps, config.hidden_dropout_prob, padding_aware_positions,
        )

    @classmethod
    def from_hf(cls, module: nn.Module, padding_aware_positions: bool = False) -> "BertEmbeddings":
        """Wraps a Hugging Face ``BertEmbeddings``-like module, sharing (not
        copying) its parameters."""
        return cls._sharing(module, ("word_embeddings", "position_embeddings", "token_type_embeddings",
                                     "LayerNorm", "dropout"), padding_aware_positions)

    @classmethod
    def _sharing(cls, module: nn.Module, names, padding_aware_positions: bool):
        """A new module holding `module`'s submodules `names` (the same
        objects), in `module`'s order, so named_parameters() and the
        state_dict keep it (an optimizer's saved state follows that order)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        order = [name for name, _ in module.named_children() if name in names]
        for name in order + [name for name in names if name not in order]:
            setattr(new, name, getattr(module, name))
        new.pad_token_id = module.word_embeddings.padding_idx
        new.padding_aware_positions = padding_aware_positions
        new.train(module.training)
        return new

    def _positions(self, input_ids: Tensor, cache_length: int) -> Tensor:
        mask = input_ids.ne(self.pad_token_id).long()
        return (torch.cumsum(mask, dim=1) + cache_length) * mask + self.pad_token_id

    def forward(
        self,
        input_ids: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        position_ids: Optional[Tensor] = None,
        inputs_embeds: Optional[Tensor] = None,
        cache_length: int = 0,
        past_key_values_length: Optional[int] = None,
    ) -> Tensor:
        # transformers before 5.2x passes the cache length under its older name.
        if past_key_values_length is not None:
            cache_length = past_key_values_length
        if input_ids is None and inputs_embeds is None:
            raise ValueError("posemb.nn.BertEmbeddings: pass input_ids or inputs_embeds")
        if inputs_embeds is not None:  # no ids to gather: the plain computation
            return self._forward_embeds(inputs_embeds, token_type_ids, position_ids, cache_length)
        if position_ids is None and self.padding_aware_positions:
            position_ids = self._positions(input_ids, cache_length)
        return ops.bert_embeddings(
            input_ids, self.word_embeddings.weight, self.position_embeddings.weight,
            self.token_type_embeddings.weight, self.LayerNorm.weight, self.LayerNorm.bias,
            position_ids=position_ids, token_type_ids=token_type_ids,
            cache_length=0 if position_ids is not None else cache_length,
            eps=self.LayerNorm.eps, dropout_p=self.dropout.p, training=self.training,
            word_padding_idx=self.word_embeddings.padding_idx,
            position_padding_idx=self.position_embeddings.padding_idx,
        )

    def _forward_embeds(self, inputs_embeds, token_type_ids, position_ids, cache_length):
        seq = inputs_embeds.shape[1]
        if position_ids is None:
            start = self.pad_token_id + 1 if self.padding_aware_positions else cache_length
            rows = self.position_embeddings.num_embeddings
            if start + seq > rows:
                raise ValueError(f"posemb.nn.BertEmbeddings: positions {start}..{start + seq - 1} of inputs_embeds "
                                 f"do not exist (max_position_embeddings={rows})")
            position_ids = torch.arange(start, start + seq, device=inputs_embeds.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(position_ids)
        x = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding of q and k, one fused op, any rope type.

    The frequencies are a :class:`posemb.rope.FrequencyPlan`: ``inv_freq`` (a
    non-persistent fp32 buffer) and ``attention_scaling``. Nothing else is
    cached: no cos/sin tables, any position works.

    Args:
        head_dim: the attention head size.
        base: ``rope_theta`` when ``rope_parameters`` is not given.
        rope_parameters: a Hugging Face ``rope_parameters`` dict (``rope_type``
            ``default``, ``linear``, ``dynamic``, ``yarn``, ``llama3``,
            ``longrope`` or ``proportional`` with its fields).
        rotary_dim: rotate only the first ``rotary_dim`` channels (even).
        max_position_embeddings: the model's context (``dynamic``,
            ``yarn``/``longrope`` defaults).
        interleaved: GPT-J pairs instead of GPT-NeoX/Llama halves.
        seq_dim: 1 for ``(batch, seq, heads, head_dim)``, 2 for
            ``(batch, heads, seq, head_dim)``, 0 for ``(seq, batch, heads, head_dim)``.

    Positions with axes (multimodal rope, axial 2-D rotary): ``mrope_section``
    and ``mrope_interleaved`` in ``rope_parameters`` (Hugging Face's keys for
    Qwen2-VL and Qwen3-VL) make ``positions`` ``(axes, batch, seq)``; see
    :func:`posemb.rotary`.
    """

    def __init__(
        self,
        head_dim: int,
        *,
        base: float = 10000.0,
        rope_parameters: Optional[dict] = None,
        rotary_dim: Optional[int] = None,
        max_position_embeddings: Optional[int] = None,
        interleaved: bool = False,
        seq_dim: int = 1,
    ) -> None:
        super().__init__()
        params = dict(rope_parameters or {"rope_type": "default", "rope_theta": base})
        if rotary_dim is not None:
            if rotary_dim % 2 or not 2 <= rotary_dim <= head_dim:
                raise ValueError(f"RotaryEmbedding: rotary_dim must be even and in [2, {head_dim}], got {rotary_dim}")
            params["partial_rotary_factor"] = rotary_dim / head_dim
        self.head_dim = head_dim
        self.rope_parameters = params
        self.max_position_embeddings = max_position_embeddings
        self.interleaved = interleaved
        self.seq_dim = seq_dim
        if seq_dim not in (0, 1, 2):
            raise ValueError(f"RotaryEmbedding: seq_dim must be 0, 1 or 2, got {seq_dim!r}")
        section = params.get("mrope_section")
        self.mrope_section = ops.section_sizes("posemb.nn.RotaryEmbedding", section)
        self.mrope_interleaved = bool(params.get("mrope_interleaved", False))
        plan = rope.frequency_plan(params, head_dim, max_position_embeddings=max_position_embeddings)
        # On the default device, as torch's modules are (meta builds included).
        self.register_buffer("inv_freq", plan.inv_freq.to(torch.empty(0).device), persistent=False)
        # longrope's frequencies past the original context, made once, fp32 on
        # the host: a plain attribute (as transformers keeps it), so casts,
        # meta builds and deferred initialisation leave it alone. The forward
        # only chooses between the two, on the device.
        self.long_inv_freq = None
        if params.get("rope_type") == "longrope":
            self.long_inv_freq = rope.long_inv_freq(params, head_dim, max_position_embeddings)
        self.attention_scaling = plan.attention_scaling

    def reset_parameters(self) -> None:
        """Rebuilds ``inv_freq`` from the rope parameters, where it lives (after
        a meta-device build and ``to_empty()``, for instance)."""
        device = self.inv_freq.device
        if device.type == "meta":
            self.inv_freq = torch.empty_like(self.inv_freq, dtype=torch.float32)
            return
        plan = rope.frequency_plan(self.rope_parameters, self.head_dim,
                                   max_position_embeddings=self.max_position_embeddings)
        self.inv_freq = plan.inv_freq.to(device)

    def _apply(self, fn, recurse=True):
        # The frequencies are derived state and part of the accuracy contract:
        # after any move or cast (.half(), .to(bfloat16), to_empty()) they are
        # rebuilt in fp32 on the new device, never rounded to a lower precision.
        super()._apply(fn, recurse)
        self.reset_parameters()
        return self

    @classmethod
    def from_config(cls, config, *, interleaved: bool = False, seq_dim: int = 1) -> "RotaryEmbedding":
        """From a Hugging Face model config (``rope_parameters`` or ``rope_scaling``)."""
        return cls(rope.head_dim_of(config), rope_parameters=rope.rope_parameters_of(config),
                   max_position_embeddings=getattr(config, "max_position_embeddings", None),
                   interleaved=interleaved, seq_dim=seq_dim)

    def _seq_len(self, q: Tensor, positions, offset, cu_seqlens) -> Tensor:
        """The largest position of the call plus one, as transformers takes it
        for dynamic and longrope (over the batch, or over each packed
        sequence): a 0-d int64 tensor on the device, never read on the host."""
        device = self.inv_freq.device
        zero = torch.zeros((), dtype=torch.int64, device=device)
        if positions is not None:
            last = positions.max() if positions.numel() else zero
        else:
            offset = torch.as_tensor(offset, device=device)
            if cu_seqlens is not None:
                lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(device, torch.int64)
                last = (offset + lengths).max() - 1 if lengths.numel() else zero
            else:
                last = (offset.max() if offset.numel() else zero) + q.shape[self.seq_dim] - 1
        return last.to(device, torch.int64) + 1

    def _inv_freq_for(self, seq_len: Tensor) -> Tensor:
        """The frequencies for a call whose largest position is ``seq_len - 1``
        (dynamic and longrope depend on it), on the device."""
        if self.rope_parameters.get("rope_type") not in rope.LENGTH_DEPENDENT:
            return self.inv_freq
        return rope.inv_freq_for_length(self.rope_parameters, self.head_dim, self.max_position_embeddings,
                                        seq_len, self.inv_freq, self.long_inv_freq)

    def _plan_for(self, seq_len: int):
        """``(inv_freq, attention_scaling)`` for a sequence length (an int)."""
        return self._inv_freq_for(torch.tensor(seq_len)), self.attention_scaling

    def forward(
        self,
        q: Tensor,
        k: Optional[Tensor] = None,
        positions: Optional[Tensor] = None,
        *,
        offset: Union[int, Tensor] = 0,
        cu_seqlens: Optional[Tensor] = None,
        inplace: bool = False,
    ):
        """``(q_out, k_out)`` (or ``q_out`` without k): see :func:`posemb.rotary`."""
        inv_freq = self.inv_freq
        if self.rope_parameters.get("rope_type") in rope.LENGTH_DEPENDENT:
            inv_freq = self._inv_freq_for(self._seq_len(q, positions, offset, cu_seqlens))
        return ops.rotary(q, k, inv_freq, positions, offset=offset, cu_seqlens=cu_seqlens,
                          attention_scaling=self.attention_scaling, interleaved=self.interleaved, seq_dim=self.seq_dim,
                          mrope_section=self.mrope_section, mrope_interleaved=self.mrope_interleaved,
                          inplace=inplace)

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, rotary_dim={2 * self.inv_freq.numel()}, "
                f"rope_type={self.rope_parameters.get('rope_type', 'default')!r}, interleaved={self.interleaved}"
                + (f", mrope_section={self.mrope_section}, mrope_interleaved={self.mrope_interleaved}"
                   if self.mrope_section is not None else ""))


class Timesteps(nn.Module):
    """diffusers' ``Timesteps`` (same arguments and attributes): ``forward(timesteps)``
    is :func:`posemb.timestep_embedding`, float32 ``(N, num_channels)``. No
    parameters or buffers."""

    def __init__(self, num_channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float, scale: float = 1,
                 max_period: float = 10000) -> None:
        super().__init__()
        _check_int("posemb.nn.Timesteps", "num_channels", num_channels, 1)
        _check_finite("posemb.nn.Timesteps", "downscale_freq_shift", downscale_freq_shift)
        _check_finite("posemb.nn.Timesteps", "scale", scale)
        _check_finite("posemb.nn.Timesteps", "max_period", max_period, positive=True)
        self.num_channels, self.flip_sin_to_cos = num_channels, bool(flip_sin_to_cos)
        self.downscale_freq_shift, self.scale, self.max_period = downscale_freq_shift, scale, max_period

    def forward(self, timesteps: Tensor) -> Tensor:
        return ops.timestep_embedding(timesteps, self.num_channels, self.flip_sin_to_cos, self.downscale_freq_shift,
                                      self.scale, self.max_period)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, flip_sin_to_cos={self.flip_sin_to_cos}, "
                f"downscale_freq_shift={self.downscale_freq_shift}, scale={self.scale}")


class SinCos2dPositionalEmbedding(nn.Module):
    """Adds the 2-D sin-cos grid to patch embeddings, computed in the kernel:
    ``forward(x, height, width)`` for ``x`` ``(batch, height*width, embed_dim)``
    is :func:`posemb.sincos_2d_add` with each axis' positions from
    :func:`posemb.sincos_2d_positions` (diffusers' ``base_size`` and
    ``interpolation_scale``; ``base_size=None`` for MAE's integer grid). No
    table, no buffer."""

    def __init__(self, embed_dim: int, base_size: Optional[float] = None, interpolation_scale: float = 1.0,
                 base: float = 10000.0) -> None:
        super().__init__()
        _check_int("posemb.nn.SinCos2dPositionalEmbedding", "embed_dim", embed_dim, 4)
        if embed_dim % 4:
            raise ValueError(f"posemb.nn.SinCos2dPositionalEmbedding: embed_dim must be a multiple of 4, "
                             f"got {embed_dim}")
        if base_size is not None:
            _check_finite("posemb.nn.SinCos2dPositionalEmbedding", "base_size", base_size, positive=True)
        _check_finite("posemb.nn.SinCos2dPositionalEmbedding", "interpolation_scale", interpolation_scale,
                      positive=True)
        _check_finite("posemb.nn.SinCos2dPositionalEmbedding", "base", base, positive=True)
        self.embed_dim, self.base_size = embed_dim, base_size
        self.interpolation_scale, self.base = interpolation_scale, base

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        _check_width("posemb.nn.SinCos2dPositionalEmbedding", x, self.embed_dim, "(batch, height*width, {})")
        pos_h = ops.sincos_2d_positions(height, self.base_size, self.interpolation_scale, device=x.device)
        pos_w = ops.sincos_2d_positions(width, self.base_size, self.interpolation_scale, device=x.device)
        return ops.sincos_2d_add(x, pos_h, pos_w, base=self.base)

    def extra_repr(self) -> str:
        return (f"{self.embed_dim}, base_size={self.base_size}, interpolation_scale={self.interpolation_scale}, "
                f"base={self.base}")


class SinCos3dPositionalEmbedding(nn.Module):
    """Adds the 3-D sin-cos grid of video patches to their embeddings,
    computed in the kernel: ``forward(x, frames, height, width)`` for ``x``
    ``(batch, frames*height*width, embed_dim)`` (frames major, then rows,
    then columns) is :func:`posemb.sincos_2d_add` with ``pos_t``, the
    positions of diffusers' ``get_3d_sincos_pos_embed`` (CogVideoX):
    ``arange(n) / spatial_interpolation_scale`` for height and width,
    ``arange(frames) / temporal_interpolation_scale`` for the frames.
    ``embed_dim`` a multiple of 16. No table, no buffer."""

    def __init__(self, embed_dim: int, spatial_interpolation_scale: float = 1.0,
                 temporal_interpolation_scale: float = 1.0, base: float = 10000.0) -> None:
        super().__init__()
        name = "posemb.nn.SinCos3dPositionalEmbedding"
        _check_int(name, "embed_dim", embed_dim, 16)
        if embed_dim % 16:
            raise ValueError(f"{name}: embed_dim must be a multiple of 16, got {embed_dim}")
        _check_finite(name, "spatial_interpolation_scale", spatial_interpolation_scale, positive=True)
        _check_finite(name, "temporal_interpolation_scale", temporal_interpolation_scale, positive=True)
        _check_finite(name, "base", base, positive=True)
        self.embed_dim = embed_dim
        self.spatial_interpolation_scale = spatial_interpolation_scale
        self.temporal_interpolation_scale = temporal_interpolation_scale
        self.base = base

    def forward(self, x: Tensor, frames: int, height: int, width: int) -> Tensor:
        _check_width("posemb.nn.SinCos3dPositionalEmbedding", x, self.embed_dim,
                     "(batch, frames*height*width, {})")
        pos_t = ops.sincos_2d_positions(frames, None, self.temporal_interpolation_scale, device=x.device)
        pos_h = ops.sincos_2d_positions(height, None, self.spatial_interpolation_scale, device=x.device)
        pos_w = ops.sincos_2d_positions(width, None, self.spatial_interpolation_scale, device=x.device)
        return ops.sincos_2d_add(x, pos_h, pos_w, base=self.base, pos_t=pos_t)

    def extra_repr(self) -> str:
        return (f"{self.embed_dim}, spatial_interpolation_scale={self.spatial_interpolation_scale}, "
                f"temporal_interpolation_scale={self.temporal_interpolation_scale}, base={self.base}")
