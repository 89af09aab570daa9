"""Drop posemb into diffusers models (diffusers 0.36 tested).

``patch(model)`` swaps, in place, the blocks whose code posemb covers and
returns ``{qualified name: the module replaced}``; ``unpatch`` puts them
back. The contract is :mod:`posemb.hf`'s: it warns (``strict=True``: raises
:class:`PatchError`) when nothing matched, builds every replacement before
changing anything (transactional), leaves what it cannot reproduce alone with
a warning saying why, and skips posemb's own modules, so patching twice
replaces nothing the second time.

Known blocks (matched by class name and checked, so diffusers is not imported here):

- ``Timesteps`` (UNets, DiT's and SD3's timestep embedders) ->
  :class:`posemb.nn.Timesteps`: one kernel instead of eight eager ops, exact
  angles (diffusers' fp32 code is off by up to 6e-5 at t = 999). Checked on
  probe timesteps against the module's own output.
- ``PatchEmbed`` with its sin-cos ``pos_embed`` (DiT, PixArt, SD3 with
  ``pos_embed_max_size`` cropping) -> :class:`PatchEmbed`: the same
  convolution (shared, not copied) with the grid computed in the add's
  kernel. ``pos_embed`` stays a buffer, so state_dicts load unchanged; it is
  checked against posemb's grid before the module is replaced.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

from . import ops
from ._patching import PatchError, is_posemb, report, set_submodule
from .nn import Timesteps

__all__ = ["PatchEmbed", "PatchError", "patch", "unpatch"]


class PatchEmbed(nn.Module):
    """diffusers' ``PatchEmbed`` with the sin-cos grid added in one kernel,
    computed on the fly (:func:`posemb.sincos_2d_add`), for any height and
    width: the same positions diffusers computes (its ``base_size``,
    ``interpolation_scale`` and SD3's centre crop of a
    ``pos_embed_max_size`` grid), as float32, with exact angles."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.proj, self.norm = original.proj, original.norm
        for name in ("flatten", "layer_norm", "pos_embed_max_size", "patch_size", "height", "width", "base_size",
                     "interpolation_scale"):
            setattr(self, name, getattr(original, name))
        persistent = "pos_embed" not in original._non_persistent_buffers_set
        self.register_buffer("pos_embed", original.pos_embed, persistent=persistent)  # kept for state_dicts

    def positions(self, height: int, width: int, device=None):
        """(pos_h, pos_w) of a (height, width) grid of patches."""
        if self.pos_embed_max_size:
            size = self.pos_embed_max_size
            if height > size or width > size:
                raise ValueError(f"posemb.diffusers.PatchEmbed: a {height}x{width} patch grid is larger than "
                                 f"pos_embed_max_size = {size}")
            axis = ops.sincos_2d_positions(size, self.base_size, self.interpolation_scale, device=device)
            top, left = (size - height) // 2, (size - width) // 2
            return axis[top:top + height], axis[left:left + width]
        return (ops.sincos_2d_positions(height, self.base_size, self.interpolation_scale, device=device),
                ops.sincos_2d_positions(width, self.base_size, self.interpolation_scale, device=device))

    def forward(self, latent: Tensor) -> Tensor:
        height, width = latent.shape[-2] // self.patch_size, latent.shape[-1] // self.patch_size
        latent = self.proj(latent).flatten(2).transpose(1, 2)  # BCHW -> BNC
        if self.layer_norm:
            latent = self.norm(latent)
        pos_h, pos_w = self.positions(height, width, latent.device)
        return ops.sincos_2d_add(latent, pos_h, pos_w)


def _timesteps_replacement(module: nn.Module):
    new = Timesteps(module.num_channels, module.flip_sin_to_cos, module.downscale_freq_shift, module.scale)
    probe = torch.tensor([0.0, 1.0, 250.5, 999.0])
    with torch.no_grad():
        theirs = module(probe)
        if theirs.shape != (4, module.num_channels) or \
                not torch.allclose(new(probe), theirs.float(), rtol=0, atol=1e-3):
            return None, "its output is not get_timestep_embedding's"
    return new, None


def _patch_embed_replacement(module: nn.Module):
    if getattr(module, "pos_embed", None) is None:
        return None, "it has no pos_embed"
    if not module.flatten:
        return None, "flatten=False"
    if not module.pos_embed_max_size and module.height != module.width:
        return None, "a non-square pos_embed (diffusers adds it only where it is square)"
    new = PatchEmbed(module)
    size = module.pos_embed_max_size or module.height
    pos_h, pos_w = new.positions(size, size, module.pos_embed.device)
    table = ops.sincos_2d_table(pos_h, pos_w, module.pos_embed.shape[-1]).unsqueeze(0)
    if module.pos_embed.shape != table.shape or \
            not torch.allclose(module.pos_embed.float(), table, rtol=0, atol=1e-5):
        return None, "its pos_embed is not the sin-cos grid of its base_size and interpolation_scale"
    return new, None


_KNOWN = {"Timesteps": _timesteps_replacement, "PatchEmbed": _patch_embed_replacement}


def patch(model: nn.Module, *, strict: bool = False) -> Dict[str, nn.Module]:
    """Replaces the model's ``Timesteps`` and sin-cos ``PatchEmbed`` modules
    with posemb's, in place; returns ``{qualified name: the module replaced}``
    (see the module's docstring for the contract)."""
    planned: Dict[str, nn.Module] = {}
    skipped: Dict[str, str] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if is_posemb(module) or kind not in _KNOWN or not type(module).__module__.startswith("diffusers."):
            continue
        new, reason = _KNOWN[kind](module)
        if new is None:
            skipped[name] = f"{kind}: {reason}"
        else:
            planned[name] = new
    nothing = f"{type(model).__name__} (posemb knows diffusers' {sorted(_KNOWN)}; already patched blocks are skipped)"
    if not report("posemb.diffusers.patch", planned, skipped, nothing, strict):
        return {}
    replaced: Dict[str, nn.Module] = {}
    for name, new in planned.items():
        replaced[name] = model.get_submodule(name)
        set_submodule(model, name, new)
    return replaced


def unpatch(model: nn.Module, replaced: Dict[str, nn.Module]) -> None:
    """Puts back the modules that :func:`patch` returned."""
    for name, module in replaced.items():
        set_submodule(model, name, module)
