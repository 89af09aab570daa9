"""Rotary frequency plans: what every RoPE scaling type reduces to.

A plan is an fp32 ``inv_freq`` of ``rotary_dim // 2`` frequencies and a float
``attention_scaling`` that multiplies cos and sin. Hugging Face's rope types
(``default``, ``linear``, ``dynamic``, ``yarn``, ``llama3``, ``longrope``,
``proportional``) all produce exactly that pair, so one rotary kernel serves
them all with nothing cached. The plan is the kernel's parameter and taken
as exact, so it is computed here in fp32 with the same operations, in the
same order, as transformers does, giving bitwise the same numbers
(``tests/python/test_rope.py``).

Host code, but for :func:`inv_freq_for_length` (``dynamic`` and
``longrope`` choose their frequencies per call, on the device); it needs
torch, not transformers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

__all__ = ["FrequencyPlan", "frequency_plan", "frequency_plan_from_config", "inv_freq_for_length",
           "long_inv_freq", "rope_parameters_of", "LENGTH_DEPENDENT", "ROPE_TYPES"]

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope", "proportional")
# The rope types whose frequencies depend on the call's largest position.
LENGTH_DEPENDENT = ("dynamic", "longrope")


@dataclasses.dataclass(frozen=True)
class FrequencyPlan:
    """``inv_freq`` (fp32, ``rotary_dim // 2``) and ``attention_scaling``."""

    inv_freq: Tensor
    attention_scaling: float

    @property
    def rotary_dim(self) -> int:
        return 2 * self.inv_freq.numel()


def _base_inv_freq(base: float, dim: int) -> Tensor:
    """base^(-2i/dim) for i < dim/2, in fp32 (the exponent formed in fp32)."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(params: Mapping[str, Any], base: float, dim: int, max_positions: Optional[int]):
    original = params["original_max_position_embeddings"]
    factor = params.get("factor")
    if factor is None:  # DeepSeek-V3 style: the context extension ratio
        factor = max_positions / original
    attention = params.get("attention_factor")
    if attention is None:
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention = float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
        else:
            attention = _yarn_mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def dimension_of(rotations: float) -> float:  # where `rotations` turns fit the original context
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = dimension_of(beta_fast), dimension_of(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # a ramp of width zero would divide by zero

    powers = base ** (torch.arange(0, dim, 2).float() / dim)
    extrapolated, interpolated = 1.0 / powers, 1.0 / (factor * powers)
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # 1: high frequencies kept, 0: low frequencies interpolated
    return interpolated * (1 - keep) + extrapolated * keep, attention


def _llama3(params: Mapping[str, Any], base: float, dim: int):
    inv_freq = _base_inv_freq(base, dim)
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    context = params["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelength < context / high) * ~(wavelength > context / low)
    return torch.where(medium, blended, scaled), 1.0


def _longrope(params: Mapping[str, Any], base: float, dim: int, max_positions: Optional[int],
              seq_len: Optional[int]):
    original = params["original_max_position_embeddings"]
    factor = params.get("factor")
    if factor is None:  # Phi-3 style: the context extension ratio
        factor = max_positions / original
    attention = params.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    long = bool(seq_len) and seq_len > original
    for name in ("long_factor", "short_factor"):
        if len(params[name]) != dim // 2:
            raise ValueError(f"posemb.rope: longrope's {name} must hold rotary_dim / 2 = {dim // 2} factors, "
                             f"got {len(params[name])}")
    ext = torch.tensor(params["long_factor" if long else "short_factor"], dtype=torch.float32)
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (ext * base**exponents), attention


def _proportional(params: Mapping[str, Any], base: float, head_dim: int):
    """Gemma 4's: the first ``partial_rotary_factor`` of the head_dim/2
    frequencies with exponents over the whole head, the rest zero (those
    channels are not turned), all divided by ``factor``."""
    angles = int(params.get("partial_rotary_factor", 1.0) * head_dim // 2)
    turned = 1.0 / (base ** (torch.arange(0, 2 * angles, 2, dtype=torch.int64).float() / head_dim))
    inv_freq = torch.cat((turned, torch.zeros(head_dim // 2 - angles, dtype=torch.float32)))
    return inv_freq / params.get("factor", 1.0), 1.0


def frequency_plan(
    rope_parameters: Mapping[str, Any],
    head_dim: int,
    *,
    max_position_embeddings: Optional[int] = None,
    seq_len: Optional[int] = None,
) -> FrequencyPlan:
    """The plan of a Hugging Face ``rope_parameters`` dict.

    Args:
        rope_parameters: ``rope_type`` (default ``"default"``), ``rope_theta``
            and the type's own fields (``factor``, ``original_max_position_embeddings``,
            ``low_freq_factor``, ``beta_fast``, ``long_factor``, ...), and
            optionally ``partial_rotary_factor``.
        head_dim: the attention head size; ``rotary_dim`` is
            ``int(head_dim * partial_rotary_factor)`` (``proportional``: the
            whole head, its frequencies past that fraction zero).
        max_position_embeddings: the model's context length (``dynamic``; the
            default ``factor`` of ``yarn`` and ``longrope``).
        seq_len: the current sequence length (``dynamic`` and ``longrope``
            depend on it).
    """
    rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"posemb.rope: rope_type must be one of {ROPE_TYPES}, got {rope_type!r}")
    base = rope_parameters.get("rope_theta")
    if not _positive(base):
        raise ValueError(f"posemb.rope: rope_theta must be a finite number > 0, got {base!r}")
    for name in ("factor", "partial_rotary_factor", "original_max_position_embeddings", "attention_factor"):
        if rope_parameters.get(name) is not None and not _positive(rope_parameters[name]):
            raise ValueError(f"posemb.rope: {name} must be a finite number > 0, got {rope_parameters[name]!r}")
    if not isinstance(head_dim, int) or head_dim < 2:
        raise ValueError(f"posemb.rope: head_dim must be an int >= 2, got {head_dim!r}")
    dim = int(head_dim * rope_parameters.get("partial_rotary_factor", 1.0))
    if rope_type == "proportional":
        dim = head_dim
    if dim < 2 or dim % 2:
        raise ValueError(f"posemb.rope: rotary_dim must be even and at least 2, got {dim}")

    with torch.device("cpu"):  # host math, whatever the default device (meta builds included)
        inv_freq, attention = _inv_freq(rope_type, rope_parameters, base, dim, max_position_embeddings, seq_len)
    inv_freq = inv_freq.to(torch.float32).contiguous()
    # Zero is a frequency only where it means "not turned" (proportional's tail).
    low = (inv_freq >= 0) if rope_type == "proportional" else (inv_freq > 0)
    if not (torch.isfinite(inv_freq).all() and low.all()) or not _positive(attention):
        raise ValueError(f"posemb.rope: the rope parameters {dict(rope_parameters)} give frequencies that are not "
                         f"all finite and > 0 (or a bad attention scaling {attention!r})")
    return FrequencyPlan(inv_freq, float(attention))


# The fields each rope type cannot do without.
_REQUIRED = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("original_max_position_embeddings",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "longrope": ("original_max_position_embeddings", "long_factor", "short_factor"),
}


def _inv_freq(rope_type: str, rope_parameters: Mapping[str, Any], base: float, dim: int,
              max_position_embeddings: Optional[int], seq_len: Optional[int]):
    missing = [name for name in _REQUIRED.get(rope_type, ()) if rope_parameters.get(name) is None]
    if missing:
        raise ValueError(f"posemb.rope: rope_type {rope_type!r} needs {', '.join(missing)} in its rope parameters")
    if rope_type in ("yarn", "longrope") and rope_parameters.get("factor") is None and max_position_embeddings is None:
        raise ValueError(f"posemb.rope: rope_type {rope_type!r} without a factor needs max_position_embeddings "
                         "(the factor is then max_position_embeddings / original_max_position_embeddings)")
    attention = 1.0
    if rope_type == "default":
        inv_freq = _base_inv_freq(base, dim)
    elif rope_type == "linear":
        inv_freq = _base_inv_freq(base, dim) / rope_parameters["factor"]
    elif rope_type == "dynamic":
        if max_position_embeddings is None:
            raise ValueError("posemb.rope: rope_type 'dynamic' needs max_position_embeddings")
        factor = rope_parameters["factor"]
        length = max(seq_len or 0, max_position_embeddings)
        grown = base * ((factor * length / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
        inv_freq = _base_inv_freq(grown, dim)
    elif rope_type == "yarn":
        inv_freq, attention = _yarn(rope_parameters, base, dim, max_position_embeddings)
    elif rope_type == "llama3":
        inv_freq, attention = _llama3(rope_parameters, base, dim)
    elif rope_type == "proportional":
        inv_freq, attention = _proportional(rope_parameters, base, dim)
    else:
        inv_freq, attention = _longrope(rope_parameters, base, dim, max_position_embeddings, seq_len)
    return inv_freq, attention


def long_inv_freq(rope_parameters: Mapping[str, Any], head_dim: int,
                  max_position_embeddings: Optional[int] = None) -> Tensor:
    """``longrope``'s frequencies past the original context (transformers
    takes them at ``original_max_position_embeddings + 1``)."""
    seq_len = rope_parameters["original_max_position_embeddings"] + 1
    return frequency_plan(rope_parameters, head_dim, max_position_embeddings=max_position_embeddings,
                          seq_len=seq_len).inv_freq


def inv_freq_for_length(rope_parameters: Mapping[str, Any], head_dim: int, max_position_embeddings: Optional[int],
                        seq_len: Tensor, short: Tensor, long: Optional[Tensor] = None) -> Tensor:
    """The frequencies of ``dynamic`` and ``longrope`` for a sequence length
    held in a 0-d integer tensor, chosen on ``short``'s device with no host
    read, so a compiled forward stays one graph.

    ``short`` is the plan without a length (:func:`frequency_plan`). longrope:
    ``long`` (:func:`long_inv_freq`) past ``original_max_position_embeddings``,
    as transformers' ``torch.where``. dynamic: past
    ``max_position_embeddings``, transformers' own fp32 tensor ops of its
    forward (where the length is a tensor too), so bitwise its numbers.
    """
    seq_len = seq_len.to(short.device)
    if rope_parameters.get("rope_type") == "longrope":
        return torch.where(seq_len > rope_parameters["original_max_position_embeddings"], long.to(short.device),
                           short)
    base, factor = rope_parameters["rope_theta"], rope_parameters["factor"]
    dim = int(head_dim * rope_parameters.get("partial_rotary_factor", 1.0))
    length = torch.clamp_min(seq_len, max_position_embeddings)
    grown = base * ((factor * length / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=short.device).float() / dim
    return torch.where(seq_len > max_position_embeddings, 1.0 / (grown ** exponents), short)


def _positive(value) -> bool:
    """A finite real number > 0 (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def rope_parameters_of(config) -> dict:
    """The rope parameters of a Hugging Face model config (``rope_parameters``,
    or the older ``rope_scaling`` + ``rope_theta``), with its
    ``partial_rotary_factor``."""
    params = getattr(config, "rope_parameters", None)
    if not params:
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params = dict(params)
    if "partial_rotary_factor" not in params and getattr(config, "partial_rotary_factor", None) is not None:
        params["partial_rotary_factor"] = config.partial_rotary_factor
    return params


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def frequency_plan_from_config(config, seq_len: Optional[int] = None) -> FrequencyPlan:
    """The plan of a Hugging Face model config."""
    return frequency_plan(rope_parameters_of(config), head_dim_of(config),
                          max_position_embeddings=getattr(config, "max_position_embeddings", None), seq_len=seq_len)
