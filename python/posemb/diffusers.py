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
- ``CogVideoXPatchEmbed`` with its 3-D sin-cos ``pos_embedding`` (CogVideoX
  2b/5b, ``use_positional_embeddings=True``) -> :class:`CogVideoXPatchEmbed`:
  the same projections (shared), the 3-D grid added to the video tokens in
  one kernel (:func:`posemb.sincos_2d_add` with ``pos_t``) for any frame
  count and resolution, instead of the buffer (or, at a new size, the grid
  rebuilt in fp64). Learned positional embeddings (CogVideoX-5b-I2V's) and
  rotary-only models are left alone; ``pos_embedding`` is checked against
  posemb's grid before the module is replaced.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

from . import ops
from ._patching import ITSELF, PatchError, is_posemb, report, set_submodule
from .nn import Timesteps

__all__ = ["CogVideoXPatchEmbed", "PatchEmbed", "PatchError", "patch", "unpatch"]


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


class CogVideoXPatchEmbed(nn.Module):
    """diffusers' ``CogVideoXPatchEmbed`` (sin-cos positional embeddings, not
    learned ones) with the 3-D grid of ``get_3d_sincos_pos_embed`` added to
    the video tokens in one kernel, computed on the fly for any number of
    latent frames and any resolution: the same positions (``arange(n) /
    spatial_interpolation_scale`` for height and width, ``arange(frames) /
    temporal_interpolation_scale``), float32, exact angles. The text tokens
    get nothing added, as diffusers' zero rows give them."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.proj, self.text_proj = original.proj, original.text_proj
        for name in ("patch_size", "patch_size_t", "embed_dim", "sample_height", "sample_width", "sample_frames",
                     "temporal_compression_ratio", "max_text_seq_length", "spatial_interpolation_scale",
                     "temporal_interpolation_scale", "use_positional_embeddings",
                     "use_learned_positional_embeddings"):
            setattr(self, name, getattr(original, name))
        persistent = "pos_embedding" not in original._non_persistent_buffers_set
        self.register_buffer("pos_embedding", original.pos_embedding, persistent=persistent)  # kept as diffusers has it

    def positions(self, frames: int, height: int, width: int, device=None):
        """(pos_t, pos_h, pos_w) of a frames x height x width grid of latent patches."""
        spatial, temporal = self.spatial_interpolation_scale, self.temporal_interpolation_scale
        return (ops.sincos_2d_positions(frames, None, temporal, device=device),
                ops.sincos_2d_positions(height, None, spatial, device=device),
                ops.sincos_2d_positions(width, None, spatial, device=device))

    def forward(self, text_embeds: Tensor, image_embeds: Tensor) -> Tensor:
        if text_embeds.shape[1] != self.max_text_seq_length:
            # diffusers' joint table has max_text_seq_length zero rows before the video's.
            raise ValueError(f"posemb.diffusers.CogVideoXPatchEmbed: text_embeds has {text_embeds.shape[1]} tokens; "
                             f"the positional embedding is laid out for max_text_seq_length = "
                             f"{self.max_text_seq_length}")
        text_embeds = self.text_proj(text_embeds)
        batch_size, num_frames, channels, height, width = image_embeds.shape
        if self.patch_size_t is None:
            image_embeds = image_embeds.reshape(-1, channels, height, width)
            image_embeds = self.proj(image_embeds)
            image_embeds = image_embeds.view(batch_size, num_frames, *image_embeds.shape[1:])
            image_embeds = image_embeds.flatten(3).transpose(2, 3)  # [batch, frames, height x width, channels]
            image_embeds = image_embeds.flatten(1, 2)  # [batch, frames x height x width, channels]
        else:
            p, p_t = self.patch_size, self.patch_size_t
            image_embeds = image_embeds.permute(0, 1, 3, 4, 2)
            image_embeds = image_embeds.reshape(batch_size, num_frames // p_t, p_t, height // p, p, width // p, p,
                                                channels)
            image_embeds = image_embeds.permute(0, 1, 3, 5, 7, 2, 4, 6).flatten(4, 7).flatten(1, 3)
            image_embeds = self.proj(image_embeds)
        # diffusers' grid has (((frames - 1) * ratio + 1) - 1) // ratio + 1 = frames frames.
        pos_t, pos_h, pos_w = self.positions(num_frames, height // self.patch_size, width // self.patch_size,
                                             image_embeds.device)
        image_embeds = ops.sincos_2d_add(image_embeds, pos_h, pos_w, pos_t=pos_t)
        return torch.cat([text_embeds, image_embeds], dim=1).contiguous()


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


def _cogvideox_patch_embed_replacement(module: nn.Module):
    if module.use_learned_positional_embeddings:
        return None, "its positional embedding is learned (a trained table, not the sin-cos grid)"
    if not module.use_positional_embeddings or getattr(module, "pos_embedding", None) is None:
        return None, "it has no sin-cos positional embedding (rotary positions)"
    new = CogVideoXPatchEmbed(module)
    frames = (module.sample_frames - 1) // module.temporal_compression_ratio + 1
    height, width = module.sample_height // module.patch_size, module.sample_width // module.patch_size
    pos_t, pos_h, pos_w = new.positions(frames, height, width, module.pos_embedding.device)
    grid = ops.sincos_2d_table(pos_h, pos_w, module.embed_dim, pos_t=pos_t)
    text = torch.zeros(module.max_text_seq_length, module.embed_dim, device=grid.device)
    table = torch.cat([text, grid]).unsqueeze(0)
    if module.pos_embedding.shape != table.shape or \
            not torch.allclose(module.pos_embedding.float(), table, rtol=0, atol=1e-5):
        return None, "its pos_embedding is not the 3-D sin-cos grid of its interpolation scales"
    return new, None


_KNOWN = {"Timesteps": _timesteps_replacement, "PatchEmbed": _patch_embed_replacement,
          "CogVideoXPatchEmbed": _cogvideox_patch_embed_replacement}


def patch(model: nn.Module, *, strict: bool = False) -> Dict[str, nn.Module]:
    """Replaces the model's ``Timesteps``, sin-cos ``PatchEmbed`` and sin-cos
    ``CogVideoXPatchEmbed`` modules with posemb's, in place; returns ``{qualified name: the module replaced}``
    (see the module's docstring for the contract)."""
    planned: Dict[str, nn.Module] = {}
    skipped: Dict[str, str] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if is_posemb(module) or kind not in _KNOWN or not type(module).__module__.startswith("diffusers."):
            continue
        if name == "":
            skipped[ITSELF[0]] = f"{kind}: {ITSELF[1]}"
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
