"""Drop posemb into Hugging Face transformers models.

``patch(model)`` swaps each embedding block it knows for a posemb module that
shares the same parameters (nothing is copied; training updates the same
tensors), in place, and returns what it replaced; ``unpatch`` puts it back.

Known blocks (matched by class name, so transformers is not imported here):

- ``BertEmbeddings`` (BERT, and models built on it such as MiniLM
  sentence-transformers) -> :class:`posemb.nn.BertEmbeddings`;
- ``RobertaEmbeddings``, ``XLMRobertaEmbeddings``, ``CamembertEmbeddings``
  (padding-aware positions) -> the same, with ``padding_aware_positions``.

BERT and RoBERTa are checked by the tests (real MiniLM weights; a random
RoBERTa with padding); the other RoBERTa copies share RoBERTa's code.
"""
from __future__ import annotations

from typing import Dict

from torch import nn

from .nn import BertEmbeddings

__all__ = ["patch", "unpatch"]

_ABSOLUTE = {"BertEmbeddings"}
_PADDING_AWARE = {"RobertaEmbeddings", "XLMRobertaEmbeddings", "CamembertEmbeddings"}


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
        if isinstance(module, BertEmbeddings) or kind not in _ABSOLUTE | _PADDING_AWARE:
            continue
        _set_submodule(model, name, BertEmbeddings.from_hf(module, padding_aware_positions=kind in _PADDING_AWARE))
        replaced[name] = module
    return replaced


def unpatch(model: nn.Module, replaced: Dict[str, nn.Module]) -> None:
    """Puts back the modules that :func:`patch` returned."""
    for name, module in replaced.items():
        _set_submodule(model, name, module)
