"""Drop posemb into Hugging Face transformers models.

``patch(model)`` swaps each embedding block it knows for a posemb module that
shares the same parameters (nothing is copied; training updates the same
tensors), in place, and returns what it replaced; ``unpatch`` puts it back.

Known blocks (matched by class name, so transformers is not imported here):

- ``BertEmbeddings`` (BERT, and models built on it such as MiniLM
  sentence-transformers) -> :class:`posemb.nn.BertEmbeddings`;
- ``RobertaEmbeddings``, ``XLMRobertaEmbeddings``, ``CamembertEmbeddings``
  (padding-aware positions) -> the same, with ``padding_aware_positions``.

- ``LlamaRotaryEmbedding`` (and the rotary modules of models written like
  Llama: ``MistralRotaryEmbedding``, ``Qwen2RotaryEmbedding``) ->
  posemb's fused rotary, every rope type: the model's rotary module hands
  the positions on instead of cos/sin tables, and the attention layers'
  ``apply_rotary_pos_emb`` runs posemb's kernel on q and k.

BERT and RoBERTa are checked by the tests (real MiniLM weights; a random
RoBERTa with padding); the other RoBERTa copies share RoBERTa's code. Llama
is checked with every rope type (logits and gradients); Mistral and Qwen2
are matched by the same names but not tested.
"""
from __future__ import annotations

import sys
from typing import Dict

from torch import Tensor, nn

from .nn import BertEmbeddings, RotaryEmbedding

__all__ = ["patch", "unpatch"]

_ABSOLUTE = {"BertEmbeddings"}
_PADDING_AWARE = {"RobertaEmbeddings", "XLMRobertaEmbeddings", "CamembertEmbeddings"}
_ROTARY = {"LlamaRotaryEmbedding", "MistralRotaryEmbedding", "Qwen2RotaryEmbedding"}


class RotaryPositions:
    """What posemb's rotary module hands the attention layers instead of
    (cos, sin): the positions, and the module that turns q and k by them."""

    def __init__(self, rope: RotaryEmbedding, positions: Tensor) -> None:
        self.rope, self.positions = rope, positions


class HFRotary(nn.Module):
    """Stands in for a Hugging Face rotary module: returns (positions,
    positions) markers, which the wrapped ``apply_rotary_pos_emb`` turns
    into one posemb rotary call on q and k."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        # q and k are (batch, heads, seq, head_dim) in these models.
        self.rope = RotaryEmbedding.from_config(original.config, seq_dim=2).to(original.inv_freq.device)
        self.config = original.config

    def forward(self, x: Tensor, position_ids: Tensor):
        marker = RotaryPositions(self.rope, position_ids)
        return marker, marker


def _rotary_dispatch(original):
    """apply_rotary_pos_emb that runs posemb for posemb's markers and the
    model's own code otherwise (models left unpatched are unaffected)."""

    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        if isinstance(cos, RotaryPositions):
            return cos.rope(q, k, cos.positions)
        return original(q, k, cos, sin, *args, **kwargs)

    apply_rotary_pos_emb.posemb_original = original
    return apply_rotary_pos_emb


def _wrap_apply_rotary(module_name: str) -> None:
    code = sys.modules.get(module_name)
    fn = getattr(code, "apply_rotary_pos_emb", None)
    if fn is not None and not hasattr(fn, "posemb_original"):
        code.apply_rotary_pos_emb = _rotary_dispatch(fn)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def patch(model: nn.Module) -> Dict[str, nn.Module]:
    """Replaces the model's embedding blocks with posemb's, in place.

    Returns ``{qualified name: the module replaced}``; an empty dict when
    nothing was recognised.
    """
    replaced: Dict[str, nn.Module] = {}
    for name, module in list(model.named_modules()):
        kind = type(module).__name__
        if kind in _ABSOLUTE | _PADDING_AWARE:
            new = BertEmbeddings.from_hf(module, padding_aware_positions=kind in _PADDING_AWARE)
        elif kind in _ROTARY:
            _wrap_apply_rotary(type(module).__module__)
            new = HFRotary(module)
        else:
            continue
        _set_submodule(model, name, new)
        replaced[name] = module
    return replaced


def unpatch(model: nn.Module, replaced: Dict[str, nn.Module]) -> None:
    """Puts back the modules that :func:`patch` returned."""
    for name, module in replaced.items():
        _set_submodule(model, name, module)
