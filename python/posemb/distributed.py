"""posemb's ops on DTensors: a sharding rule for every op.

``import posemb.distributed`` registers them with DTensor (importing
``torch.distributed.tensor`` costs about a second, so ``import posemb`` does
not). Each op then runs on the local shards, with no gather, wherever the
result is the unsharded one:

- every op: all inputs replicated;
- ``sinusoidal_add(_)``, ``learned_add``, ``rotary(_)``, ``bert_embeddings``
  and ``make_positions``: sharded on the batch (explicit positions, per-sequence
  offsets and token types sharded with it, or replicated when shared);
- the same ops sharded on the sequence (sequence parallel) only when the
  positions are given as a tensor sharded with it: a shard's tokens then
  carry their global positions (with an ``offset`` alone a shard would count
  from 0, so that is not offered);
- ``rotary(_)`` sharded on the heads (tensor parallel attention), q and k alike;
- the gradients of the tables (``learned_add_backward``, the five of
  ``bert_embeddings_backward``) are sums over the tokens: partial sums
  (``Partial()``) when the tokens are sharded, reduced by DTensor when needed.

Never sharded: the embedding dimension (a channel's encoding depends on its
global index). Dropout in ``bert_embeddings`` sharded on the batch draws each
shard's mask from the same seed and the shard's own token indices, so the
masks differ from a single device's (each is a valid dropout mask).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch.distributed.tensor import Partial, Replicate, Shard
from torch.distributed.tensor.experimental import register_sharding

__all__: List[str] = []

ops = torch.ops.posemb
R = Replicate()


def _rule(op_or_ops):
    """register_sharding with the op's arguments in full: the dispatcher drops
    trailing arguments left at their defaults, the rules take them all."""
    overloads = op_or_ops if isinstance(op_or_ops, list) else [op_or_ops]
    arguments = overloads[0]._schema.arguments

    def wrap(fn):
        def rule(*args, **kwargs):
            full = []
            for i, a in enumerate(arguments):
                if i < len(args):
                    full.append(args[i])
                else:
                    full.append(kwargs.get(a.name, a.default_value if a.has_default_value() else None))
            return fn(*full)

        register_sharding(op_or_ops)(rule)
        return fn

    return wrap


def _rank(spec) -> int:
    return len(spec.shape)


def _position_specs(positions, offsets, batch: int, shard: Optional[str]):
    """Placements of (positions, offsets) when x is replicated (shard None),
    sharded on the batch ("batch") or on the sequence ("seq"); None when the
    scheme cannot follow that sharding."""
    if shard is None:
        return [R if positions is not None else None, R if offsets is not None else None]
    if shard == "batch":
        def per_batch(t):
            if t is None:
                return None
            shared = _rank(t) == 0 or (t.shape[0] == 1 and batch != 1) or (_rank(t) == 1 and positions is t)
            return R if shared else Shard(0)
        return [per_batch(positions), per_batch(offsets)]
    if positions is None:  # seq: the positions must travel with the tokens
        return None
    return [Shard(_rank(positions) - 1), None]


def _x_strategies(x, positions, offsets, seq_dim: int):
    """(x placement, positions/offsets placements) for x of (batch, seq, dim),
    (seq, batch, dim) or (seq, dim)."""
    rank = _rank(x)
    seq = seq_dim % rank
    batch_dim = (1 - seq) if rank == 3 else None
    out = [(R, _position_specs(positions, offsets, 1, None))]
    if batch_dim is not None:
        specs = _position_specs(positions, offsets, x.shape[batch_dim], "batch")
        out.append((Shard(batch_dim), specs))
    specs = _position_specs(positions, offsets, 1, "seq")
    if specs is not None:
        out.append((Shard(seq), specs))
    return out


@_rule(ops.sinusoidal_add.default)
def _sinusoidal(x, positions, offsets, offset, seq_dim, layout, freqs, base, scale, padding_idx):
    return [([p], [p, *pos, *[None] * 6]) for p, pos in _x_strategies(x, positions, offsets, seq_dim)]


@_rule(ops.sinusoidal_add_.default)
def _sinusoidal_inplace(x, positions, offsets, offset, seq_dim, layout, freqs, base, scale, padding_idx):
    return [([], [p, *pos, *[None] * 6]) for p, pos in _x_strategies(x, positions, offsets, seq_dim)]


@_rule(ops.learned_add.default)
def _learned(x, weight, positions, offsets, offset, seq_dim, padding_idx):
    return [([p], [p, R, *pos, None, None, None]) for p, pos in _x_strategies(x, positions, offsets, seq_dim)]


@_rule(ops.learned_add_backward.default)
def _learned_backward(grad, positions, offsets, offset, seq_dim, num_embeddings, padding_idx):
    out = []
    for p, pos in _x_strategies(grad, positions, offsets, seq_dim):
        out.append(([R if p == R else Partial()], [p, *pos, None, None, None, None]))
    return out


def _rotary_dims(q, cu_seqlens, seq_dim: int) -> Tuple[int, Optional[int], int]:
    """(seq, batch or None, heads) dimensions of q."""
    if cu_seqlens is not None:
        return 0, None, 1
    seq = seq_dim
    batch = 1 if seq == 0 else 0
    return seq, batch, 3 - seq - batch


def _axes_position_specs(positions, batch: int, shard: Optional[str]):
    """Placements of positions with axes ((axes, batch, seq) or (axes, seq)):
    the axes dimension is never sharded, the others follow q's tokens."""
    if shard is None:
        return [R, None]
    if shard == "batch":
        shared = _rank(positions) == 2 or (positions.shape[1] == 1 and batch != 1)
        return [R if shared else Shard(1), None]
    return [Shard(_rank(positions) - 1), None]


def _rotary_strategies(q, k, positions, offsets, cu_seqlens, seq_dim, mrope_section):
    seq, batch, heads = _rotary_dims(q, cu_seqlens, seq_dim)
    cu = R if cu_seqlens is not None else None

    def specs(n, shard):
        if mrope_section is not None and positions is not None:
            return _axes_position_specs(positions, n, shard)
        return _position_specs(positions, offsets, n, shard)

    out = [(R, specs(1, None), cu), (Shard(heads), specs(1, None), cu)]
    if cu_seqlens is None:
        out.append((Shard(batch), specs(q.shape[batch], "batch"), None))
        along_seq = specs(1, "seq")
        if along_seq is not None:
            out.append((Shard(seq), along_seq, None))
    return out


@_rule([ops.rotary.default, ops.rotary_backward.default])
def _rotary(q, k, inv_freq, positions, offsets, offset, cu_seqlens, attention_scaling, interleaved, seq_dim,
            mrope_section, mrope_interleaved):
    return [([p, p], [p, p, R, *pos, None, cu, None, None, None, None, None])
            for p, pos, cu in _rotary_strategies(q, k, positions, offsets, cu_seqlens, seq_dim, mrope_section)]


@_rule(ops.rotary_.default)
def _rotary_inplace(q, k, inv_freq, positions, offsets, offset, cu_seqlens, attention_scaling, interleaved,
                    seq_dim, mrope_section, mrope_interleaved):
    return [([], [p, p, R, *pos, None, cu, None, None, None, None, None])
            for p, pos, cu in _rotary_strategies(q, k, positions, offsets, cu_seqlens, seq_dim, mrope_section)]


def _bert_token_specs(input_ids, position_ids, token_type_ids) -> Sequence[tuple]:
    """(ids placement, position_ids, token_type_ids) placements: replicated,
    or sharded on the batch (2-D ids broadcast from (1, seq) stay replicated)."""
    def follow(t):
        if t is None:
            return None
        return R if _rank(t) == 1 or t.shape[0] == 1 else Shard(0)
    batch = input_ids.shape[0]
    both = [(R, R if position_ids is not None else None, R if token_type_ids is not None else None)]
    if batch > 1:
        both.append((Shard(0), follow(position_ids), follow(token_type_ids)))
    return both


@_rule(ops.bert_embeddings.default)
def _bert(input_ids, word_weight, position_weight, type_weight, ln_weight, ln_bias, position_ids, token_type_ids,
          cache_length, eps, dropout_p, dropout_seed, word_padding_idx, position_padding_idx):
    seed = R if dropout_seed is not None else None
    return [([p, p, p], [p, R, R, R, R, R, pos, types, None, None, None, seed, None, None])
            for p, pos, types in _bert_token_specs(input_ids, position_ids, token_type_ids)]


@_rule(ops.bert_embeddings_backward.default)
def _bert_backward(grad, input_ids, word_weight, position_weight, type_weight, ln_weight, mean, rstd, position_ids,
                   token_type_ids, cache_length, dropout_p, dropout_seed, word_padding_idx, position_padding_idx):
    seed = R if dropout_seed is not None else None
    out = []
    for p, pos, types in _bert_token_specs(input_ids, position_ids, token_type_ids):
        grads = [R if p == R else Partial()] * 5
        out.append((grads, [p, p, R, R, R, R, p, p, pos, types, None, None, seed, None, None]))
    return out


@_rule(ops.make_positions.default)
def _make_positions(input_ids, padding_idx):
    # Counts along the last dimension: any other may be sharded.
    return [([R], [R, None])] + [([Shard(d)], [Shard(d), None]) for d in range(_rank(input_ids) - 1)]
