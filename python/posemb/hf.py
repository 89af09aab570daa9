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
  :class:`HFRotaryEmbedding`, every rope type. It keeps Hugging Face's
  contract: ``rotary_emb(x, position_ids)`` returns real ``(cos, sin)``
  tensors, ``(batch, seq, rotary_dim)`` in ``x.dtype`` with
  ``attention_scaling`` applied, computed by posemb's kernel from posemb's
  fp32 frequencies. The model's ``apply_rotary_pos_emb`` is wrapped: given
  the cos and sin posemb made, it runs posemb's fused rotary on q and k with
  the positions they were made for; given anything else, the model's own
  code.

BERT and RoBERTa are checked by the tests (real MiniLM weights; a random
RoBERTa with padding); the other RoBERTa copies share RoBERTa's code. Llama,
Mistral and Qwen2 are checked with every rope type (``(cos, sin)`` against
Hugging Face's module, logits and gradients, ``torch.compile``, deferred
initialisation, casts).
"""
from __future__ import annotations

import gc
import inspect
import sys
import warnings
import weakref
from typing import Dict

import torch
from torch import Tensor, nn

from . import ops, rope
from .nn import BertEmbeddings, RotaryEmbedding

__all__ = ["HFRotaryEmbedding", "PatchError", "patch", "restore_functions", "unpatch"]

_ABSOLUTE = {"BertEmbeddings"}
_PADDING_AWARE = {"RobertaEmbeddings", "XLMRobertaEmbeddings", "CamembertEmbeddings"}
_ROTARY = {"LlamaRotaryEmbedding", "MistralRotaryEmbedding", "Qwen2RotaryEmbedding"}


# posemb rotary modules alive in any model: the wrapped apply_rotary_pos_emb
# functions are restored once there are none.
_LIVE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


class _Made:
    """What posemb's cos and sin carry (as the attribute ``_posemb_rotary``,
    one object shared by the pair): the positions and the frequency plan they
    were computed from, so the wrapped ``apply_rotary_pos_emb`` can run the
    fused kernel on q and k instead of the eager cos/sin math. The versions
    (eager only) catch a cos or sin written in place after it was made."""

    __slots__ = ("positions", "inv_freq", "attention_scaling", "cos_version", "sin_version")

    def __init__(self, positions: Tensor, inv_freq: Tensor, attention_scaling: float) -> None:
        self.positions, self.inv_freq, self.attention_scaling = positions, inv_freq, attention_scaling
        self.cos_version = self.sin_version = None


_MADE = "_posemb_rotary"


def _version(t: Tensor):
    """The in-place version counter, where there is one to read (eager, not
    an inference tensor); None otherwise."""
    if torch.compiler.is_compiling() or t.is_inference():
        return None
    return t._version


class HFRotaryEmbedding(RotaryEmbedding):
    """Stands in for a Hugging Face rotary module (``LlamaRotaryEmbedding``
    and those written like it) and keeps its contract: a
    :class:`posemb.nn.RotaryEmbedding` whose ``forward`` is Hugging Face's.

    ``forward(x, position_ids)`` returns ``(cos, sin)``, each ``(batch, seq,
    rotary_dim)`` in ``x.dtype`` (``x`` gives only the dtype and device), with
    ``attention_scaling`` applied, as Hugging Face's module does, for every
    rope type. They are computed by posemb's kernel with exact angles from
    posemb's fp32 frequencies: :func:`posemb.rotary` of a row whose first half
    is ones and second half zeros is ``(cos, sin) * attention_scaling`` of
    each frequency. ``dynamic`` and ``longrope`` take their plan from the
    call's largest position (a host read), with no state kept between calls.

    The cos and sin it returns carry the positions and plan they were made
    from; the wrapped ``apply_rotary_pos_emb`` of the model recognises them
    and runs posemb's fused rotary on q and k. Anything else passed to it
    (cos and sin made by other code, or posemb's written in place, sliced or
    copied) runs the model's own code.

    ``inv_freq`` and ``original_inv_freq`` are non-persistent fp32 buffers
    (Hugging Face's names), kept fp32 through every cast and rebuilt after
    every move (``to_empty()`` included). With ``rope_type``, ``config`` and
    ``compute_default_rope_parameters`` they let transformers' deferred
    initialisation (meta device, buffers materialised uninitialised, then
    ``_init_weights``) rebuild them as it rebuilds its own modules'.
    """

    def __init__(self, config, device=None) -> None:
        # q and k are (batch, heads, seq, head_dim) in these models.
        super().__init__(rope.head_dim_of(config), rope_parameters=rope.rope_parameters_of(config),
                         max_position_embeddings=getattr(config, "max_position_embeddings", None), seq_dim=2)
        _LIVE.add(self)
        self.config = config
        self.rope_type = self.rope_parameters.get("rope_type", self.rope_parameters.get("type", "default"))
        self.max_seq_len_cached = self.original_max_seq_len = self.max_position_embeddings
        self.register_buffer("original_inv_freq", self.inv_freq.clone(), persistent=False)
        if device is not None:
            self.to(device)

    @classmethod
    def from_hf(cls, original: nn.Module) -> "HFRotaryEmbedding":
        """The replacement of a Hugging Face rotary module, on its device."""
        return cls(original.config, device=original.inv_freq.device)

    def reset_parameters(self) -> None:
        """Rebuilds both buffers in fp32 from the rope parameters, where they live."""
        super().reset_parameters()
        self.original_inv_freq = self.inv_freq.clone()

    @staticmethod
    def compute_default_rope_parameters(config, device=None, seq_len=None, **kwargs):
        """posemb's plan as ``(inv_freq, attention_scaling)`` (what Hugging
        Face's ``_init_weights`` calls for ``rope_type="default"``)."""
        plan = rope.frequency_plan_from_config(config, seq_len=seq_len)
        return plan.inv_freq.to(device) if device is not None else plan.inv_freq, plan.attention_scaling

    def forward(self, x: Tensor, position_ids: Tensor):
        if self.rope_type in ("dynamic", "longrope"):
            inv_freq, scaling = self._plan_for(self._last_position(x, position_ids, 0, None) + 1)
        else:
            inv_freq, scaling = self.inv_freq, self.attention_scaling
        device = x.device
        inv_freq, positions = inv_freq.to(device), position_ids.to(device)
        half = inv_freq.numel()
        shape = positions.shape
        rows = positions.reshape(-1, shape[-1] if len(shape) else 1)
        # One row of (1..1, 0..0) turned by each position: the first half of
        # the result is cos * scaling, the second sin * scaling.
        unit = (torch.arange(2 * half, device=device) < half).to(torch.float32)
        table = ops.rotary(unit.expand(rows.shape[0], rows.shape[1], 1, 2 * half), None, inv_freq, rows,
                           attention_scaling=scaling, seq_dim=1)
        table = table.to(x.dtype).reshape(*shape, 2 * half)
        c, s = table[..., :half], table[..., half:]
        cos, sin = torch.cat((c, c), dim=-1), torch.cat((s, s), dim=-1)
        made = _Made(positions, inv_freq, scaling)
        made.cos_version, made.sin_version = _version(cos), _version(sin)
        setattr(cos, _MADE, made)
        setattr(sin, _MADE, made)
        return cos, sin


# The name patch() used before: the same class.
HFRotary = HFRotaryEmbedding


def _extra_parameters(original):
    """The parameters of ``apply_rotary_pos_emb`` after (q, k, cos, sin),
    with their defaults (older transformers had ``position_ids`` there)."""
    try:
        params = list(inspect.signature(original).parameters.values())[4:]
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return None
    return [(p.name, p.default) for p in params]


def _fused_seq_dim(extra, args, kwargs):
    """Where q and k hold the sequence when the call can be fused: 2 for
    ``unsqueeze_dim=1`` ((batch, heads, seq, head_dim), Llama's), 1 for
    ``unsqueeze_dim=2``; None for anything else (other arguments given)."""
    unsqueeze_dim = 1
    if args or kwargs:
        if extra is None or len(args) > len(extra):
            return None
        values = {name: default for name, default in extra}
        values.update(zip((name for name, _ in extra), args))
        for name, value in kwargs.items():
            if name not in values:
                return None
            values[name] = value
        unsqueeze_dim = values.pop("unsqueeze_dim", 1)
        if any(value is not None for value in values.values()):
            return None
    if not isinstance(unsqueeze_dim, int):
        return None
    return {1: 2, -3: 2, 2: 1, -2: 1}.get(unsqueeze_dim)


def _fusable(made: _Made, q, k, cos, sin, seq_dim: int) -> bool:
    """posemb's kernel computes what the eager code would with these cos and
    sin (up to their rounding to x.dtype)."""
    if not torch.compiler.is_compiling():
        if made.cos_version is not None and (cos._version != made.cos_version or sin._version != made.sin_version):
            return False  # written in place since posemb made them
    if cos.requires_grad or sin.requires_grad or cos.dim() != 3 or not isinstance(q, Tensor) \
            or not isinstance(k, Tensor) or q.dim() != 4 or k.dim() != 4:
        return False
    width = 2 * made.inv_freq.numel()
    return (q.shape[-1] == k.shape[-1] == cos.shape[-1] == width and cos.shape == sin.shape
            and q.shape[seq_dim] == k.shape[seq_dim] == cos.shape[1])


def _rotary_dispatch(original):
    """apply_rotary_pos_emb that runs posemb's fused rotary for cos and sin
    that posemb made, and the model's own code otherwise (models left
    unpatched are unaffected)."""
    extra = _extra_parameters(original)

    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        made = getattr(cos, _MADE, None)
        if made is not None and getattr(sin, _MADE, None) is made:
            seq_dim = _fused_seq_dim(extra, args, kwargs)
            if seq_dim is not None and _fusable(made, q, k, cos, sin, seq_dim):
                # The eager code's result dtype (q * cos promotes).
                dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), cos.dtype)
                return ops.rotary(q.to(dtype), k.to(dtype), made.inv_freq, made.positions,
                                  attention_scaling=made.attention_scaling, seq_dim=seq_dim)
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
            planned[name] = HFRotaryEmbedding.from_hf(module)
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
    patched keep working: their rotary modules return real (cos, sin), which
    the model's own code then applies (without posemb's fused kernel, until
    they are patched again)."""
    for module_name, original in list(_WRAPPED.items()):
        code = sys.modules.get(module_name)
        if code is not None and hasattr(getattr(code, "apply_rotary_pos_emb", None), "posemb_original"):
            code.apply_rotary_pos_emb = original
        del _WRAPPED[module_name]
