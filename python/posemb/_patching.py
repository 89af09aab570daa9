"""What posemb.hf.patch and posemb.diffusers.patch share: how a replacement
plan is reported (a warning naming what was left alone and why; a warning,
or PatchError with strict=True, when nothing matched) and how a submodule is
swapped."""
from __future__ import annotations

import warnings
from typing import Dict

from torch import nn


class PatchError(RuntimeError):
    """patch(strict=True) recognised nothing it could replace."""


def is_posemb(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "posemb"


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


# The reason a known block passed as the model itself is left alone: it has
# no parent to hold its replacement.
ITSELF = "(the model itself)", "a module cannot replace itself; patch the model that holds it (its parent)"


def report(who: str, planned: Dict[str, nn.Module], skipped: Dict[str, str], nothing: str, strict: bool) -> bool:
    """Warns about the ``skipped`` modules (name: reason); when nothing is
    ``planned``, warns ``nothing`` (or raises it, strict) and returns False."""
    if skipped:
        warnings.warn(f"{who}: left unpatched: " + "; ".join(f"{n} ({r})" for n, r in skipped.items()),
                      stacklevel=3)
    if planned:
        return True
    message = f"{who}: nothing to replace in {nothing}"
    if strict:
        raise PatchError(message)
    warnings.warn(message, stacklevel=3)
    return False
