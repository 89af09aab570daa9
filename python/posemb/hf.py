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

import gc
import sys
import warnings
import weakref
from typing import Dict

from torch import Tensor, nn

from .nn import BertEmbeddings, RotaryEmbedding

__all__ = ["PatchError", "patch", "restore_functions", "unpatch"]

_ABSOLUTE = {"BertEmbeddings"}
_PADDING_AWARE = {"RobertaEmbeddings", "XLMRobertaEmbeddings", "CamembertEmbeddings"}
_ROTARY = {"LlamaRotaryEmbedding", "MistralRotaryEmbedding", "Qwen2RotaryEmbedding"}


# posemb rotary modules alive in any model: the wrapped apply_rotary_pos_emb
# functions are restored once there are none.
_LIVE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


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
        _LIVE.add(self)
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


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _is_posemb(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "posemb"


class PatchError(RuntimeError):
    """patch(strict=True) recognised nothing it could replace."""


def patch(model: nn.Module, *, strict: bool = False) -> Dict[str, nn.Module]:
    """Replaces the model's embedding blocks with posemb's, in place.

    Returns ``{qualified name: the module replaced}``. When it recognises
    nothing, it warns (or, with ``strict=True``, raises :class:`PatchError`)
    and changes nothing. It is transactional: every replacement is built
    before anything is changed, so a failure leaves the model and the
    process as they were. posemb's own modules are never wrapped again, so
    calling it twice replaces nothing the second time.
    """
    planned: Dict[str, nn.Module] = {}
    wrap_modules = []
    for name, module in model.named_modules():
        if _is_posemb(module) or any(name.startswith(done + ".") for done in planned):
            continue
        kind = type(module).__name__
        if kind in _ABSOLUTE | _PADDING_AWARE:
            planned[name] = BertEmbeddings.from_hf(module, padding_aware_positions=kind in _PADDING_AWARE)
        elif kind in _ROTARY:
            planned[name] = HFRotary(module)
            wrap_modules.append(type(module).__module__)
    if not planned:
        message = (f"posemb.hf.patch: nothing to replace in {type(model).__name__} (posemb knows "
                   f"{sorted(_ABSOLUTE | _PADDING_AWARE | _ROTARY)}; already patched blocks are skipped)")
        if strict:
            raise PatchError(message)
        warnings.warn(message, stacklevel=2)
        return {}
    # Everything is built: now change the model, and the modules' code.
    replaced: Dict[str, nn.Module] = {}
    for name, new in planned.items():
        replaced[name] = model.get_submodule(name)
        _set_submodule(model, name, new)
    for module_name in wrap_modules:
        code = sys.modules.get(module_name)
        fn = getattr(code, "apply_rotary_pos_emb", None)
        if fn is not None and not hasattr(fn, "posemb_original"):
            code.apply_rotary_pos_emb = _rotary_dispatch(fn)
            _WRAPPED[module_name] = fn
    return replaced


# Module-level functions patch() replaced, by module, with their originals.
_WRAPPED: Dict[str, object] = {}


def unpatch(model: nn.Module, replaced: Dict[str, nn.Module]) -> None:
    """Puts back the modules that :func:`patch` returned. Once no posemb
    rotary module is alive anywhere, the modules' ``apply_rotary_pos_emb``
    are restored too (until then the wrapper forwards every call that is not
    posemb's to the original, unchanged)."""
    for name, module in replaced.items():
        _set_submodule(model, name, module)
    gc.collect()  # the replaced posemb modules, unless something else holds them
    if not _LIVE:
        restore_functions()


def restore_functions() -> None:
    """Restores every module-level function patch() wrapped. Models still
    patched then fall back to nothing: call it only when none are in use."""
    for module_name, original in list(_WRAPPED.items()):
        code = sys.modules.get(module_name)
        if code is not None and hasattr(getattr(code, "apply_rotary_pos_emb", None), "posemb_original"):
            code.apply_rotary_pos_emb = original
        del _WRAPPED[module_name]
